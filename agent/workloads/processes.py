"""Process details through psutil, cached so a process that exited is still described.

The resolver owns one `ProcessCache`; discovery asks it for the pid of every
handshake. Entries are keyed by (pid, start time) so a reused pid never
inherits another process's details; when the pid is gone, the last process
seen with that pid answers. The cache is a bounded LRU and thread-safe.
"""

from __future__ import annotations

import threading
from collections import OrderedDict
from collections.abc import Callable
from pathlib import Path
from typing import TypeVar

import psutil  # type: ignore[import-untyped]  # no stubs pinned in the dev extras

from agent.workloads.model import ProcessInfo

T = TypeVar("T")

CMDLINE_ARGS = 32
CMDLINE_ARG_CHARS = 512


class ProcessCache:
    """pid -> `ProcessInfo`, read through psutil once per process lifetime."""

    def __init__(self, max_entries: int = 16384) -> None:
        self._max = max_entries
        self._by_pid: OrderedDict[int, ProcessInfo] = OrderedDict()
        self._lock = threading.Lock()

    def __len__(self) -> int:
        return len(self._by_pid)

    def get(self, pid: int) -> ProcessInfo | None:
        """Details of `pid` (a process or thread id); None if it was never seen alive."""
        try:
            start = psutil.Process(pid).create_time()
        except psutil.Error:
            start = None
        with self._lock:
            cached = self._by_pid.get(pid)
            if cached is not None and (start is None or cached.start_time == start):
                self._by_pid.move_to_end(pid)
                return cached
        if start is None:
            return None
        info = read_process(pid)
        if info is None:
            return cached  # exited between the two reads; the older entry is all there is
        with self._lock:
            self._by_pid[pid] = info
            self._by_pid.move_to_end(pid)
            while len(self._by_pid) > self._max:
                self._by_pid.popitem(last=False)
        return info


def read_process(pid: int) -> ProcessInfo | None:
    """Read one process now; None if it does not exist. Unreadable fields stay empty."""
    try:
        p = psutil.Process(pid)
        with p.oneshot():
            start = p.create_time()
            ppid = p.ppid()
            comm = _comm(pid) or p.name()
            uid = p.uids().real
            username = _field(p.username, str(uid))
            exe = _field(p.exe, "")
            argv: list[str] = _field(p.cmdline, [])
    except psutil.NoSuchProcess:
        return None
    except psutil.AccessDenied:
        return None
    args = tuple(a[:CMDLINE_ARG_CHARS] for a in argv[:CMDLINE_ARGS])
    truncated = len(argv) > CMDLINE_ARGS or any(len(a) > CMDLINE_ARG_CHARS for a in argv)
    return ProcessInfo(pid=pid, tgid=_tgid(pid), ppid=ppid, comm=comm, exe=exe, cmdline=args,
                       username=username, uid=uid, start_time=start,
                       cmdline_truncated=truncated)


def _field(read: Callable[[], T], default: T) -> T:
    """One psutil accessor; a zombie or a permission refusal gives `default`."""
    try:
        return read()
    except (psutil.ZombieProcess, psutil.AccessDenied):
        return default


def _comm(pid: int) -> str:
    """The kernel's comm (at most 15 bytes), as BPF events report it."""
    try:
        with open(f"/proc/{pid}/comm", "rb") as f:
            return f.read().rstrip(b"\n").decode(errors="replace")
    except OSError:
        return ""


def _tgid(pid: int) -> int:
    try:
        with open(f"/proc/{pid}/status") as f:
            for line in f:
                if line.startswith("Tgid:"):
                    return int(line.split()[1])
    except (OSError, ValueError):
        pass
    return pid


def process_cgroup(pid: int) -> str | None:
    """The cgroup v2 path (relative to the root) of a process, None if it is gone.

    A cgroup removed while the process is a zombie reads `/x (deleted)`; the
    suffix is dropped.
    """
    try:
        text = Path(f"/proc/{pid}/cgroup").read_text()
    except OSError:
        return None
    for line in text.splitlines():
        if line.startswith("0::"):
            path = line[3:]
            return path.removesuffix(" (deleted)")
    return None
