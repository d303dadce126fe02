"""Process details through psutil, cached so a process that exited is still described.

The resolver owns one `ProcessCache`; discovery asks it for the pid of every
handshake. Entries are keyed by (pid, start time from /proc/<pid>/stat) so a
reused pid never inherits another process's details; when the pid is gone, the last process
seen with that pid answers. The cache is a bounded LRU and thread-safe.
"""

from __future__ import annotations

import os
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
        # pid -> (start time in clock ticks since boot, details)
        self._by_pid: OrderedDict[int, tuple[int, ProcessInfo]] = OrderedDict()
        self._lock = threading.Lock()

    def __len__(self) -> int:
        return len(self._by_pid)

    def get(self, pid: int) -> ProcessInfo | None:
        """Details of `pid` (a process or thread id); None if it was never seen alive."""
        start = start_ticks(pid)  # one read of /proc/<pid>/stat tells a reused pid apart
        with self._lock:
            cached = self._by_pid.get(pid)
            if cached is not None and (start is None or cached[0] == start):
                self._by_pid.move_to_end(pid)
                return cached[1]
        if start is None:
            return None
        info = read_process(pid)
        if info is None or start_ticks(pid) != start:  # exited (or replaced) meanwhile
            return cached[1] if cached is not None else None
        with self._lock:
            self._by_pid[pid] = (start, info)
            self._by_pid.move_to_end(pid)
            while len(self._by_pid) > self._max:
                self._by_pid.popitem(last=False)
        return info


def start_ticks(pid: int) -> int | None:
    """A process's start time (clock ticks after boot, /proc/<pid>/stat field 22); None if gone."""
    try:  # os.open/os.read: a third of the cost of a buffered open() on this hot path
        fd = os.open(f"/proc/{pid}/stat", os.O_RDONLY | os.O_CLOEXEC)
    except OSError:
        return None
    try:
        data = os.read(fd, 4096)
    except OSError:
        return None
    finally:
        os.close(fd)
    try:  # the comm (field 2) may hold spaces and parentheses: split after the last `)`
        return int(data[data.rindex(b")") + 2:].split()[19])
    except (ValueError, IndexError):
        return None


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
