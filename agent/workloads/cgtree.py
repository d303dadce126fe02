"""One walk of the cgroup v2 tree: every cgroup's id (its inode) and root-relative path.

Called by the resolver, on a cache miss (rate-limited) and on `refresh()`.
The cost is kept to a few system calls per cgroup that HAS children; leaves
(most cgroups: container scopes, services) are usually free:

- a cgroup's id is the directory entry's `d_ino`, so listing a parent gives
  its children's ids without a `stat`;
- kernfs keeps a directory's link count at 2 + its number of subdirectories,
  so a listing stops once it has found them all, and a child whose link
  count is 2 is never listed;
- `cgroup.stat` gives `nr_descendants`: when it equals the number of
  children, every child is a leaf and none of them is even `stat`ed (worth
  its three system calls only for parents with several children).

Cgroups created or removed during the walk may be missed or listed; the
next walk settles them. Iterative; trees deeper than MAX_DEPTH levels are cut
there (a process in such a cgroup is still found through its pid).
"""

from __future__ import annotations

import os
import stat
from collections.abc import Iterator
from pathlib import Path

_CRUN = "container"
_DIR_FLAGS = os.O_RDONLY | os.O_DIRECTORY | os.O_CLOEXEC
_LEAF_CHECK = 4  # read cgroup.stat from this many children on
MAX_DEPTH = 128  # deeper cgroups are not walked (each level holds one open descriptor)


def walk(root: Path) -> list[tuple[int, str]]:
    """(cgroup id, path relative to `root` starting with `/`) for `root` and every descendant."""
    fd = os.open(root, _DIR_FLAGS)
    out = [(os.fstat(fd).st_ino, "/")]
    # Depth-first; each frame holds its directory open so children are opened and
    # stat'ed relative to it (no repeated path lookups through the tree).
    frames: list[tuple[int, str, Iterator[tuple[str, int]]]] = []
    try:
        frames.append((fd, "", iter(_children(fd, "", _subdirs(os.fstat(fd).st_nlink), out))))
        while frames:
            fd, rel, todo = frames[-1]
            nxt = next(todo, None)
            if nxt is None:
                os.close(fd)
                frames.pop()
                continue
            name, sub = nxt
            if len(frames) >= MAX_DEPTH:
                continue
            if sub == 1 and _only_child(fd, rel, name, out):
                continue
            try:
                cfd = os.open(name, _DIR_FLAGS, dir_fd=fd)
            except (FileNotFoundError, NotADirectoryError):
                continue  # removed since it was listed
            crel = f"{rel}/{name}"
            frames.append((cfd, crel, iter(_children(cfd, crel, sub, out))))
    finally:
        for frame in frames:
            os.close(frame[0])
    return out


def _children(fd: int, rel: str, expect: int, out: list[tuple[int, str]]) -> list[tuple[str, int]]:
    """List directory `fd` into `out`; return the children that have children themselves."""
    if expect == 0:
        return []
    names: list[str] = []
    try:
        with os.scandir(fd) as it:
            for e in it:
                if e.is_dir(follow_symlinks=False):
                    names.append(e.name)
                    out.append((e.inode(), f"{rel}/{e.name}"))
                    if len(names) == expect:
                        break
    except (FileNotFoundError, NotADirectoryError):
        return []  # removed while being listed
    if len(names) >= _LEAF_CHECK and _descendants(fd) == len(names):
        return []  # all leaves
    inner = []
    for name in names:
        try:
            sub = _subdirs(os.stat(name, dir_fd=fd, follow_symlinks=False).st_nlink)
        except FileNotFoundError:
            continue
        if sub != 0:
            inner.append((name, sub))
    return inner


def _only_child(fd: int, rel: str, name: str, out: list[tuple[int, str]]) -> bool:
    """A cgroup whose one child is a leaf named `container` (crun's sub-cgroup under
    every container scope): one `stat` instead of open + list + close. False: list it."""
    try:
        st = os.stat(f"{name}/{_CRUN}", dir_fd=fd, follow_symlinks=False)
    except (FileNotFoundError, NotADirectoryError):
        return False
    if not stat.S_ISDIR(st.st_mode) or _subdirs(st.st_nlink) != 0:
        return False
    out.append((st.st_ino, f"{rel}/{name}/{_CRUN}"))
    return True


def _subdirs(nlink: int) -> int:
    """Subdirectories a kernfs directory has; -1 (unknown: list it all) elsewhere."""
    return nlink - 2 if nlink >= 2 else -1


def _descendants(fd: int) -> int:
    """`nr_descendants` from the cgroup.stat in directory `fd`; -1 if unreadable."""
    try:
        sfd = os.open("cgroup.stat", os.O_RDONLY | os.O_CLOEXEC, dir_fd=fd)
    except OSError:
        return -1
    try:
        data = os.read(sfd, 4096)
    except OSError:
        return -1
    finally:
        os.close(sfd)
    for line in data.split(b"\n"):
        if line.startswith(b"nr_descendants "):
            try:
                return int(line[15:])
            except ValueError:
                return -1
    return -1
