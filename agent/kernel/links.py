"""Attached programs (BPF links): pin, adopt, replace, destroy.

A link keeps one program attached to one hook. Pinned under bpffs, it
outlives the agent: that is how enforcement survives `kill -9`. At start,
the agent adopts what is pinned: if the pinned link runs the same program
(same kernel tag) it is kept as it is; if the program changed, the new one
is attached first and the old one detached after, so the hook is never
uncovered (make before break).
"""

from __future__ import annotations

import contextlib
import ctypes
import os
from pathlib import Path

from agent.errors import KernelError
from agent.kernel import libbpf as L


class _Info(ctypes.Structure):
    # bpf_prog_info / bpf_link_info share their first fields' shapes: we read
    # type, id, then (prog) tag[8] or (link) prog_id.
    _fields_ = (("type", ctypes.c_uint32), ("id", ctypes.c_uint32),
                ("word2", ctypes.c_uint8 * 8), ("_rest", ctypes.c_uint8 * 240))


def _info(fd: int, what: str) -> _Info:
    info = _Info()
    n = ctypes.c_uint32(ctypes.sizeof(info))
    L.check_rc(L.lib.bpf_obj_get_info_by_fd(fd, ctypes.byref(info), ctypes.byref(n)),
               f"cannot read {what} info")
    return info


def prog_tag(prog_fd: int) -> bytes:
    """The kernel's tag (hash of the instructions) of a loaded program."""
    return bytes(_info(prog_fd, "program").word2)


def prog_id(prog_fd: int) -> int:
    return int(_info(prog_fd, "program").id)


BPF_CGROUP_INET4_CONNECT = 10  # enum bpf_attach_type (uapi/linux/bpf.h)


def cgroup_programs(cgroup: str | Path, attach_type: int) -> list[int]:
    """Ids of the programs attached to `cgroup` at `attach_type` (BPF_PROG_QUERY):
    what `bpftool cgroup show` lists, for tests and `manul doctor`."""
    fd = os.open(cgroup, os.O_RDONLY | os.O_DIRECTORY)
    try:
        ids = (ctypes.c_uint32 * 64)()
        count = ctypes.c_uint32(64)
        flags = ctypes.c_uint32(0)
        L.check_rc(L.lib.bpf_prog_query(fd, attach_type, 0, ctypes.byref(flags), ids,
                                        ctypes.byref(count)),
                   f"cannot query the programs attached to `{cgroup}`")
        return [int(ids[i]) for i in range(count.value)]
    finally:
        os.close(fd)


class Link:
    """One attachment. `destroy()` detaches it unless it is pinned."""

    def __init__(self, ptr: int, program: str, target: str, obj: str = "") -> None:
        self._ptr = ptr
        self.program = program
        self.target = target
        self.obj = obj
        self.pin_path: Path | None = None

    @property
    def fd(self) -> int:
        return int(L.lib.bpf_link__fd(self._ptr))

    @property
    def alive(self) -> bool:
        return bool(self._ptr)

    def link_id(self) -> int:
        return int(_info(self.fd, "link").id)

    def prog_id(self) -> int:
        return int.from_bytes(bytes(_info(self.fd, "link").word2)[:4], "little")

    def prog_tag(self) -> bytes:
        fd = int(L.lib.bpf_prog_get_fd_by_id(self.prog_id()))
        L.check_rc(fd, "cannot open the program of a pinned link", obj=self.obj,
                   program=self.program)
        try:
            return prog_tag(fd)
        finally:
            os.close(fd)

    def pin(self, path: str | Path) -> None:
        p = Path(path)
        p.parent.mkdir(parents=True, exist_ok=True)
        rc = L.lib.bpf_link__pin(self._ptr, str(p).encode())
        L.check_rc(rc, f"cannot pin link at `{p}`", obj=self.obj, program=self.program)
        self.pin_path = p

    def unpin(self) -> None:
        if self.pin_path is not None and self._ptr:
            L.check_rc(L.lib.bpf_link__unpin(self._ptr), "cannot unpin link",
                       obj=self.obj, program=self.program)
            self.pin_path = None

    def destroy(self) -> None:
        """Close our handle. The attachment ends unless a pin still holds it."""
        if self._ptr:
            L.lib.bpf_link__destroy(self._ptr)
            self._ptr = 0

    def detach(self) -> None:
        """Remove the pin (if any) and end the attachment."""
        if self.pin_path is None and self._ptr:
            self.destroy()
            return
        if self.pin_path is not None:
            with contextlib.suppress(FileNotFoundError):
                os.unlink(self.pin_path)
            self.pin_path = None
        self.destroy()

    @classmethod
    def open_pinned(cls, path: str | Path, program: str = "", obj: str = "") -> Link:
        ptr = L.lib.bpf_link__open(str(path).encode())
        if not ptr:
            raise KernelError(f"cannot open pinned link `{path}`", errno=L.errno_now(),
                              obj=obj, program=program)
        link = cls(ptr, program or Path(path).name, "pinned", obj)
        link.pin_path = Path(path)
        return link

    def __repr__(self) -> str:
        pinned = f", pinned at {self.pin_path}" if self.pin_path else ""
        return f"Link({self.obj}/{self.program} -> {self.target}{pinned})"
