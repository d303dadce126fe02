"""Pinned state under /sys/fs/bpf/manul: what outlives the agent, and adopting it.

Layout, one directory per object instance (`name` is the object's name, or
a caller-chosen name when one object is attached to several targets):

    /sys/fs/bpf/manul/<name>/maps/<map>                 every map of the object
    /sys/fs/bpf/manul/<name>/links/<program>@<fingerprint>  every attachment

The fingerprint hashes the object file and its settings (`.rodata`, map
sizes). `attach_pinned()` is what the agent calls at start: maps are reused
from their pins (libbpf checks they are compatible); a pinned link with the
same fingerprint is adopted as it is; one with another fingerprint (new
code or new settings) is replaced make-before-break: the new program is
attached first, the old link detached after, so the hook is never
uncovered. A killed agent thus leaves programs and maps in force, and a
restarted one takes them over without a gap.
"""

from __future__ import annotations

import logging
import shutil
from dataclasses import dataclass, field
from pathlib import Path

from agent.errors import KernelError
from agent.kernel.fs import PIN_ROOT, ensure_bpffs
from agent.kernel.links import Link
from agent.kernel.obj import BpfObject

log = logging.getLogger(__name__)


@dataclass
class Adoption:
    """What `attach_pinned` did per program: `adopted`, `replaced`, `attached`, `removed`."""

    fingerprint: str = ""
    actions: dict[str, str] = field(default_factory=dict)
    links: list[Link] = field(default_factory=list)


def pin_dir(name: str, root: Path = PIN_ROOT) -> Path:
    return root / name


def pinned_names(root: Path = PIN_ROOT) -> list[str]:
    ensure_bpffs()
    if not root.is_dir():
        return []
    return sorted(p.name for p in root.iterdir() if p.is_dir())


def pinned_links(name: str, root: Path = PIN_ROOT) -> dict[str, tuple[str, Path]]:
    """program -> (fingerprint, pin path) of what is pinned for `name`."""
    d = pin_dir(name, root) / "links"
    out: dict[str, tuple[str, Path]] = {}
    if d.is_dir():
        for p in d.iterdir():
            prog, _, fp = p.name.partition("@")
            out[prog] = (fp, p)
    return out


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
    fp = obj.fingerprint()
    obj.pin_maps(base / "maps")
    obj.load()
    existing = pinned_links(name or obj.name, root)
    result = Adoption(fingerprint=fp)
    made: list[tuple[Link, Path | None]] = []  # (new link, old pin it replaces)
    try:
        for prog in obj.programs.values():
            if not prog.autoload:
                continue
            if prog.section.startswith(("uprobe", "uretprobe")) and ":" not in prog.section \
                    and not (uprobes and prog.name in uprobes):
                continue
            old_fp, old_pin = existing.get(prog.name, ("", None))
            if old_pin is not None and old_fp == fp:
                result.actions[prog.name] = "adopted"
                adopted = Link.open_pinned(old_pin, prog.name, obj.name)
                obj.own(adopted)  # closed with the object; the pin keeps it attached
                result.links.append(adopted)
                continue
            if uprobes and prog.name in uprobes:
                binary, func = uprobes[prog.name]
                new = prog.attach(binary=binary, func=func)
            else:
                new = prog.attach(cgroup=cgroup)
            made.append((new, old_pin))
    except KernelError:
        for new, _ in made:
            new.destroy()
        for link in result.links:
            link.destroy()
        raise
    # Every new link is attached: now pin it, then drop the old pin, which
    # detaches the old program (make before break).
    for new, old_pin in made:
        new.pin(base / "links" / f"{new.program}@{fp}")
        if old_pin is not None:
            old_pin.unlink(missing_ok=True)
            result.actions[new.program] = "replaced"
        else:
            result.actions[new.program] = "attached"
        result.links.append(new)
    # Programs the object no longer has (or no longer loads) stop here.
    for prog_name, (_, pin) in existing.items():
        if prog_name not in result.actions:
            pin.unlink(missing_ok=True)
            result.actions[prog_name] = "removed"
    log.info("pinned state %s (%s): %s", base, fp, result.actions)
    return result


def remove_pinned(name: str, root: Path = PIN_ROOT) -> bool:
    """Unpin everything of `name`: its programs detach and its maps go when unused."""
    base = pin_dir(name, root)
    if not base.exists():
        return False
    shutil.rmtree(base)
    return True
