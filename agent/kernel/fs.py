"""The kernel file systems Manul needs, mounted when missing, and cgroup paths.

bpffs (`/sys/fs/bpf`) holds pinned maps and links; securityfs tells the
active LSMs; tracefs is where tracepoints live. cgroup v2 is found in the
unified (`/sys/fs/cgroup`) or hybrid (`/sys/fs/cgroup/unified`) layout.
A cgroup v2 id is the inode number of its directory.
"""

from __future__ import annotations

import ctypes
import ctypes.util
import os
from pathlib import Path

from agent.errors import KernelError, WorkloadError

BPFFS = Path("/sys/fs/bpf")
SECURITYFS = Path("/sys/kernel/security")
TRACEFS = Path("/sys/kernel/tracing")
PIN_ROOT = BPFFS / "manul"

_libc = ctypes.CDLL(ctypes.util.find_library("c"), use_errno=True)
_libc.mount.argtypes = (ctypes.c_char_p,) * 3 + (ctypes.c_ulong, ctypes.c_void_p)


def _mounts() -> list[tuple[str, str]]:
    """(mount point, fs type) of every mount, in /proc/self/mounts order."""
    out = []
    with open("/proc/self/mounts") as f:
        for line in f:
            parts = line.split()
            if len(parts) >= 3:
                out.append((parts[1].replace("\\040", " "), parts[2]))
    return out


def is_mounted(path: Path, fstype: str) -> bool:
    return any(mp == str(path) and t == fstype for mp, t in _mounts())


def ensure_mounted(path: Path, fstype: str) -> None:
    """Mount `fstype` at `path` unless it already is; KernelError on failure."""
    if is_mounted(path, fstype):
        return
    path.mkdir(parents=True, exist_ok=True)
    if _libc.mount(fstype.encode(), str(path).encode(), fstype.encode(), 0, None) != 0:
        err = ctypes.get_errno()
        raise KernelError(f"cannot mount {fstype} at `{path}`", errno=err)


def ensure_bpffs() -> Path:
    ensure_mounted(BPFFS, "bpf")
    return BPFFS


def ensure_securityfs() -> Path:
    ensure_mounted(SECURITYFS, "securityfs")
    return SECURITYFS


def ensure_tracefs() -> Path:
    if not (TRACEFS / "events").is_dir() and not Path("/sys/kernel/debug/tracing/events").is_dir():
        ensure_mounted(TRACEFS, "tracefs")
    return TRACEFS


def active_lsms() -> list[str]:
    ensure_securityfs()
    try:
        return (SECURITYFS / "lsm").read_text().strip().split(",")
    except OSError as e:
        raise KernelError("cannot read the active LSM list", errno=e.errno or 0) from e


def cgroup2_root() -> tuple[Path, str]:
    """The cgroup v2 mount point and the layout: `unified` or `hybrid`."""
    mounts = _mounts()
    v2 = [mp for mp, t in mounts if t == "cgroup2"]
    if not v2:
        raise KernelError("no cgroup v2 hierarchy is mounted; Manul needs cgroup v2 "
                          "(mount it, or boot with systemd.unified_cgroup_hierarchy=1)")
    has_v1 = any(t == "cgroup" for _, t in mounts)
    return Path(v2[0]), ("hybrid" if has_v1 else "unified")


def cgroup_id(path: str | Path) -> int:
    """The cgroup v2 id of a cgroup directory (its inode number)."""
    try:
        return os.stat(path).st_ino
    except OSError as e:
        raise WorkloadError(f"cgroup `{path}` does not exist") from e


def resolve_cgroup(path: str | Path) -> Path:
    """An absolute cgroup v2 directory from an absolute or root-relative path."""
    root, _ = cgroup2_root()
    p = Path(path)
    if not p.is_absolute() or not str(p).startswith(str(root)):
        p = root / str(path).lstrip("/")
    if not p.is_dir():
        raise WorkloadError(f"cgroup `{path}` does not exist under `{root}`")
    return p


def cgroup_of_pid(pid: int) -> str:
    """The cgroup v2 path (relative to the v2 root) of a process."""
    try:
        text = Path(f"/proc/{pid}/cgroup").read_text()
    except OSError as e:
        raise WorkloadError(f"process {pid} is gone") from e
    for line in text.splitlines():
        if line.startswith("0::"):
            return line[3:]
    raise WorkloadError(f"process {pid} is in no cgroup v2")
