"""What a program needs loaded to run: its ELF interpreter, a script's `#!` line.

`interpreters_for` reads the files behind a baseline's programs and scripts
(under a root: a container's files are at `/proc/<pid>/root` on the node)
for `suggest.suggest(..., interpreters=...)`, which does no I/O itself.
The readers never raise on what they find: a missing, unreadable, special
or malformed file is None. Called by the CLI (`manul suggest`).
"""

from __future__ import annotations

import errno
import os
import stat
import struct

from agent.baseline.events import Item, Kind
from agent.baseline.profile import Profile

_PT_INTERP = 3
_PN_XNUM = 0xFFFF
_READ_MAX = 4096  # an interpreter path longer than this is not one


def _open_regular(path: str) -> int | None:
    """A descriptor on `path` if it is a regular file (never blocks on a FIFO)."""
    try:
        fd = os.open(path, os.O_RDONLY | os.O_NONBLOCK | os.O_NOCTTY | os.O_CLOEXEC)
    except (OSError, ValueError):
        return None
    try:
        if stat.S_ISREG(os.fstat(fd).st_mode):
            return fd
    except OSError:
        pass
    os.close(fd)
    return None


def _elf_interp(fd: int) -> bytes | None:
    ident = os.pread(fd, 64, 0)
    if len(ident) < 52 or ident[:4] != b"\x7fELF" or ident[4] not in (1, 2) \
            or ident[5] not in (1, 2):
        return None
    wide, end = ident[4] == 2, "<" if ident[5] == 1 else ">"
    if wide:
        phoff, shoff = struct.unpack_from(end + "QQ", ident, 32)
        phentsize, phnum, shentsize = struct.unpack_from(end + "HHH", ident, 54)
        ph_fmt, ph_size, sh_info_at = end + "I4xQ16xQ", 40, 44
    else:
        phoff, shoff = struct.unpack_from(end + "II", ident, 28)
        phentsize, phnum, shentsize = struct.unpack_from(end + "HHH", ident, 42)
        ph_fmt, ph_size, sh_info_at = end + "II8xI", 20, 28
    if phnum == _PN_XNUM:  # the real count is in section 0's sh_info
        if shentsize < sh_info_at + 4:
            return None
        raw = os.pread(fd, 4, shoff + sh_info_at)
        if len(raw) < 4:
            return None
        (phnum,) = struct.unpack(end + "I", raw)
    if phentsize < ph_size or phnum == 0:
        return None
    table = os.pread(fd, min(phentsize * phnum, 1 << 22), phoff)
    for n in range(len(table) // phentsize):
        p_type, p_offset, p_filesz = struct.unpack_from(ph_fmt, table, n * phentsize)
        if p_type == _PT_INTERP:
            raw = os.pread(fd, min(p_filesz, _READ_MAX), p_offset)
            interp = raw.split(b"\0", 1)[0]
            return interp or None
    return None


def elf_interpreter(path: str) -> str | None:
    """The PT_INTERP path of the ELF file at `path` (32- or 64-bit, either
    byte order), as written in it; None for a static program, a script,
    anything that is not ELF, or a file that cannot be read. Never raises."""
    fd = _open_regular(path)
    if fd is None:
        return None
    try:
        raw = _elf_interp(fd)
    except (OSError, ValueError, OverflowError, struct.error):
        raw = None
    finally:
        os.close(fd)
    return raw.decode("utf-8", "surrogateescape") if raw else None


def script_interpreter(path: str) -> str | None:
    """The interpreter on a `#!` script's first line (what the kernel runs,
    within its 256-byte buffer), or None. Never raises."""
    fd = _open_regular(path)
    if fd is None:
        return None
    try:
        head = os.pread(fd, 256, 0)
    except OSError:
        return None
    finally:
        os.close(fd)
    if not head.startswith(b"#!"):
        return None
    line = head[2:].split(b"\n", 1)[0].lstrip(b" \t")
    interp = line.split(None, 1)[0] if line.strip() else b""
    return interp.decode("utf-8", "surrogateescape") if interp else None


def _resolve(root: str, path: str) -> str | None:
    """`path` with symlinks resolved as a process whose root is `root` sees
    it (absolute links stay inside `root`); None when it does not exist."""
    todo = [p for p in path.split("/") if p][::-1]
    done: list[str] = []
    links = 0
    while todo:
        part = todo.pop()
        if part == ".":
            continue
        if part == "..":
            if done:
                done.pop()
            continue
        here = os.path.join(root, *done, part)
        try:
            target = os.readlink(here)
        except OSError as e:
            if e.errno != errno.EINVAL:
                return None
            done.append(part)
            continue
        except ValueError:
            return None
        links += 1
        if links > 40:
            return None
        if target.startswith("/"):
            done = []
        todo.extend([p for p in target.split("/") if p][::-1])
    return "/" + "/".join(done)


def interpreters_for(profile: Profile, *, root: str = "/") -> dict[str, str]:
    """For `suggest(..., interpreters=...)`: each program of `profile` that
    has an ELF interpreter, mapped to it, and each `#!` script the baseline
    saw read whose interpreter the baseline saw run, mapped to that
    interpreter (then the interpreter to its own ELF interpreter). Paths are
    resolved as the workload sees them: give `root` as the workload's root
    (`/proc/<pid>/root` for a container) when it is not the host's. Reads
    files; never raises on what it finds."""

    def host(p: str) -> str:
        return os.path.join(root, p.lstrip("/"))

    out: dict[str, str] = {}

    def loader(program: str) -> None:
        interp = elf_interpreter(host(program))
        if interp and interp.startswith("/"):
            out[program] = _resolve(root, interp) or interp

    programs = sorted(i.path for i in profile.items if i.kind is Kind.EXEC)
    for p in programs:
        loader(p)
    for item in sorted(profile.items):
        if item.kind is not Kind.READ:
            continue
        interp = script_interpreter(host(item.path))
        resolved = _resolve(root, interp) if interp and interp.startswith("/") else None
        if resolved and profile.covers(Item(Kind.EXEC, path=resolved)):
            out[item.path] = resolved
            if resolved not in out:
                loader(resolved)
    return dict(sorted(out.items()))
