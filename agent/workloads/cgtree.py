"""One walk of the cgroup v2 tree: every cgroup's id (its inode) and root-relative path.

Called by the resolver, on a cache miss (rate-limited) and on `refresh()`.
It costs one `readdir` per cgroup that has children and one `stat` per
cgroup: the id comes from the directory entry (`d_ino`), and kernfs keeps a
directory's link count at 2 + its number of subdirectories, so leaf cgroups
(most of them: container scopes, services) are never listed, and a listing
stops once it has found all the subdirectories the link count announced.
Cgroups created or removed during the walk may be missed or listed; the
next walk settles them.
"""

from __future__ import annotations

import os
from pathlib import Path


def walk(root: Path) -> list[tuple[int, str]]:
    """(cgroup id, path relative to `root` starting with `/`) for `root` and every descendant."""
    top = os.stat(root)
    out = [(top.st_ino, "/")]
    stack: list[tuple[str, str, int]] = [(str(root), "", _subdirs(top.st_nlink))]
    while stack:
        path, rel, expect = stack.pop()
        if expect == 0:
            continue
        found = 0
        try:
            with os.scandir(path) as it:
                for e in it:
                    if not e.is_dir(follow_symlinks=False):
                        continue
                    try:
                        nlink = e.stat(follow_symlinks=False).st_nlink
                    except FileNotFoundError:
                        continue  # removed since the listing
                    child = f"{rel}/{e.name}"
                    out.append((e.inode(), child))
                    stack.append((e.path, child, _subdirs(nlink)))
                    found += 1
                    if found == expect:
                        break
        except (FileNotFoundError, NotADirectoryError):
            continue  # removed since its parent was listed
    return out


def _subdirs(nlink: int) -> int:
    """Subdirectories a kernfs directory has; -1 (unknown: list it all) elsewhere."""
    return nlink - 2 if nlink >= 2 else -1
