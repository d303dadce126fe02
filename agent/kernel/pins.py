"""Pinned state under /sys/fs/bpf/manul: what outlives the agent, and adopting it.

Layout, one directory per object instance (`name` is the object's name,
plus a suffix when one object is attached to several targets):

    /sys/fs/bpf/manul/<name>/maps/<map>       every map of the object
    /sys/fs/bpf/manul/<name>/links/<program>  every attachment

`attach_pinned()` is what the agent calls at start: maps are reused from
their pins (libbpf checks they are compatible), and for each program a
pinned link is adopted when it runs the same program (same tag) or
replaced make-before-break when the program changed. A killed agent thus
leaves programs and maps in force, and a restarted one takes them over
without a gap.
"""

from __future__ import annotations

import logging
import shutil
from dataclasses import dataclass, field
from pathlib import Path

from agent.errors import KernelError
from agent.kernel.fs import PIN_ROOT, ensure_bpffs
from agent.kernel.links import Link, prog_tag
from agent.kernel.obj import BpfObject

log = logging.getLogger(__name__)


@dataclass
class Adoption:
    """What `attach_pinned` did, per program: `adopted`, `replaced` or `attached`."""

    actions: dict[str, str] = field(default_factory=dict)
    links: list[Link] = field(default_factory=list)


def pin_dir(name: str, root: Path = PIN_ROOT) -> Path:
    return root / name


def pinned_names(root: Path = PIN_ROOT) -> list[str]:
    ensure_bpffs()
    if not root.is_dir():
        return []
    return sorted(p.name for p in root.iterdir() if p.is_dir())


def attach_pinned(obj: BpfObject, name: str | None = None, *,
                  cgroup: str | Path | None = None,
                  uprobes: dict[str, tuple[str, str]] | None = None,
                  root: Path = PIN_ROOT) -> Adoption:
    """Load `obj` over its pinned maps and attach (or adopt) each program, pinned.

    Call after configuring and before loading; this loads. On failure,
    anything attached by this call is detached and pinned state is unchanged.
    """
    ensure_bpffs()
    base = pin_dir(name or obj.name, root)
    obj.pin_maps(base / "maps")
    obj.load()
    result = Adoption()
    made: list[tuple[Link, Link | None]] = []  # (new link, old pinned link it replaces)
    try:
        for prog in obj.programs.values():
            if not prog.autoload:
                continue
            if prog.section.startswith(("uprobe", "uretprobe")) and ":" not in prog.section \
                    and not (uprobes and prog.name in uprobes):
                continue
            pin = base / "links" / prog.name
            old: Link | None = None
            if pin.exists():
                old = Link.open_pinned(pin, prog.name, obj.name)
                if old.prog_tag() == prog_tag(prog.fd):
                    result.actions[prog.name] = "adopted"
                    result.links.append(old)
                    continue
            if uprobes and prog.name in uprobes:
                binary, func = uprobes[prog.name]
                new = prog.attach(binary=binary, func=func)
            else:
                new = prog.attach(cgroup=cgroup)
            made.append((new, old))
    except KernelError:
        for new, old in made:
            new.destroy()
            if old is not None:
                old.destroy()
        for link in result.links:
            link.destroy()
        raise
    # Every new link is attached: now swap the pins (old ones stay attached
    # through our handle until the new pin is in place).
    for new, old in made:
        pin = base / "links" / new.program
        if old is not None:
            pin.unlink()
        new.pin(pin)
        if old is not None:
            old.pin_path = None
            old.destroy()
            result.actions[new.program] = "replaced"
        else:
            result.actions[new.program] = "attached"
        result.links.append(new)
    log.info("pinned %s: %s", base, result.actions)
    return result


def remove_pinned(name: str, root: Path = PIN_ROOT) -> bool:
    """Unpin everything of `name`: its programs detach and its maps go when unused."""
    base = pin_dir(name, root)
    if not base.exists():
        return False
    shutil.rmtree(base)
    return True
