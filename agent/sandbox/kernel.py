"""Load (or adopt) bpf/sandbox.bpf.c pinned, and open its pinned maps.

One object, two program sets, chosen by what the kernel can load
(`LSM_PROGRAMS`, `FALLBACK_PROGRAMS`; `mechanisms()` says what each set
decides, and bpf/sandbox.bpf.c's header comment how):

    lsm       BPF LSM hooks for every file, exec, mapping, network, raw-socket
              and confinement operation, and cgroup/sendmsg4/6 for UDP
    fallback  cgroup/connect4/6 + sendmsg4/6 + sock_create (network and raw
              IP sockets, enforced) and the sys_exit_open* /
              sched_process_exec tracepoints (files and exec, reported only)

Everything is pinned under `/sys/fs/bpf/manul/sandbox/` (`maps/<map>`,
`links/<program>@<fingerprint>`, see `agent.kernel.pins`), so killing the
agent leaves enforcement in force and a restarted one adopts it. Readers
(`manul sandbox status`) open the pinned maps without loading anything.
Callers: `apply.py`, `state.py`, `service.py`, the CLI.
"""

from __future__ import annotations

import contextlib
import fcntl
import os
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

from agent.errors import KernelError
from agent.kernel import BpfObject, Map, RingBuffer, attach_pinned, remove_pinned
from agent.kernel.btf import Btf
from agent.kernel.fs import PIN_ROOT, cgroup2_root, ensure_bpffs
from agent.kernel.pins import pinned_links
from agent.kernel.probe import SANDBOX_MECHANISMS, probe_lsm
from agent.sandbox.errors import StateError

VMLINUX_BTF = "/sys/kernel/btf/vmlinux"
PIN_NAME = "sandbox"
OBJECT = "sandbox"

LSM_PROGRAMS = (
    # files: opens, and every operation that changes what a path names
    "manul_sbx_file_open", "manul_sbx_path_mknod", "manul_sbx_path_mkdir",
    "manul_sbx_path_unlink", "manul_sbx_path_rmdir", "manul_sbx_path_symlink",
    "manul_sbx_path_truncate", "manul_sbx_path_chmod", "manul_sbx_path_chown",
    "manul_sbx_path_link", "manul_sbx_path_rename", "manul_sbx_inode_setxattr",
    "manul_sbx_inode_removexattr", "manul_sbx_inode_setattr", "manul_sbx_file_ioctl",
    # exec and executable mappings
    "manul_sbx_bprm_check", "manul_sbx_exec_done", "manul_sbx_mmap_file",
    "manul_sbx_file_mprotect",
    # network
    "manul_sbx_socket_connect", "manul_sbx_socket_sendmsg", "manul_sbx_socket_create",
    "manul_sbx_sendmsg4", "manul_sbx_sendmsg6",
    # confinement
    "manul_sbx_ptrace", "manul_sbx_sb_mount", "manul_sbx_move_mount", "manul_sbx_sb_pivotroot",
    "manul_sbx_path_chroot", "manul_sbx_userns_create",
)
FALLBACK_PROGRAMS = (
    "manul_sbx_connect4", "manul_sbx_connect6", "manul_sbx_sendmsg4", "manul_sbx_sendmsg6",
    "manul_sbx_sock_create",
    "manul_sbx_tp_openat", "manul_sbx_tp_open", "manul_sbx_tp_openat2", "manul_sbx_tp_creat",
    "manul_sbx_tp_open_by_handle", "manul_sbx_tp_exec",
)
MAPS = (
    "sandbox_cgroups", "sandbox_paths", "sandbox_net", "sandbox_sockets", "sandbox_config",
    "sandbox_meta",
    "sandbox_rules", "sandbox_bound", "sandbox_events", "manul_errors",
    "sandbox_counts", "sandbox_totals", "sandbox_budget", "sandbox_budget_config",
    "sandbox_reported",
)
PER_CPU_ARRAYS = ("manul_errors", "sandbox_totals")  # sized by libbpf (one slot per CPU)


@dataclass(frozen=True, slots=True)
class Mechanism:
    """How one sandbox action is decided on this node."""

    action: str  # a Cedar kernel action, or "confinement" (Manul's built-in rules)
    mechanism: str
    enforced: bool  # False: reported only (degraded)


def mechanisms(lsm: bool) -> tuple[Mechanism, ...]:
    """What decides each action (and Manul's built-in confinement) with this set
    (the table is `agent.kernel.probe.SANDBOX_MECHANISMS`, which doctor reads too)."""
    return tuple(Mechanism(a, m, e) for a, m, e in SANDBOX_MECHANISMS[lsm])


def mechanisms_from_programs(programs: set[str]) -> tuple[Mechanism, ...] | None:
    """What the pinned programs enforce; None when nothing is pinned."""
    if not programs:
        return None
    return mechanisms("manul_sbx_file_open" in programs)


class SandboxMaps:
    """The pinned maps, opened by path. Close them (or use `with`)."""

    def __init__(self, maps: dict[str, Map], base: Path) -> None:
        self._maps = maps
        self.base = base
        self.cgroups = maps["sandbox_cgroups"]
        self.paths = maps["sandbox_paths"]
        self.net = maps["sandbox_net"]
        self.sockets = maps["sandbox_sockets"]
        self.config = maps["sandbox_config"]
        self.meta = maps["sandbox_meta"]
        self.rules = maps["sandbox_rules"]
        self.bound = maps["sandbox_bound"]
        self.events = maps["sandbox_events"]
        self.errors = maps["manul_errors"]
        self.counts = maps["sandbox_counts"]  # exact decision counts (counters.py)
        self.totals = maps["sandbox_totals"]
        self.budget = maps["sandbox_budget"]  # each bound cgroup's event budget
        self.budget_config = maps["sandbox_budget_config"]
        self.reported = maps["sandbox_reported"]  # held events the agent reported

    @classmethod
    def open(cls, root: Path = PIN_ROOT) -> SandboxMaps:
        """Open every pinned map; StateError when no sandbox state is pinned."""
        ensure_bpffs()
        base = root / PIN_NAME
        opened: dict[str, Map] = {}
        try:
            for name in MAPS:
                p = base / "maps" / name
                if not p.exists():
                    raise StateError(f"no pinned sandbox state at `{base}` (missing `{name}`): "
                                     "nothing was applied on this node")
                opened[name] = Map.from_pin(p)
        except (KernelError, StateError):
            for m in opened.values():
                m.close()
            raise
        return cls(opened, base)

    def programs(self) -> set[str]:
        return set(pinned_links(PIN_NAME, self.base.parent))

    def ring(self) -> RingBuffer:
        return RingBuffer(self.events, self.errors)

    def close(self) -> None:
        for m in self._maps.values():
            m.close()

    def __enter__(self) -> SandboxMaps:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


def choose_lsm() -> bool:
    """Whether BPF LSM programs load here (the probe loads one: the honest test)."""
    return probe_lsm().available


def ensure_loaded(root: Path = PIN_ROOT, *, lsm: bool | None = None,
                  max_entries: dict[str, int] | None = None) -> tuple[bool, dict[str, str]]:
    """Load and attach the sandbox programs pinned, or adopt what is pinned.

    Returns (lsm, what happened per program). Pinned maps are reused as they
    are, so bindings and policies in force survive; `max_entries` only
    applies to maps created now (tests use it to make small maps).
    """
    use_lsm = choose_lsm() if lsm is None else lsm
    obj = BpfObject.open(OBJECT)
    try:
        obj.only(*(lsm_programs() if use_lsm else FALLBACK_PROGRAMS))
        sizes = dict(max_entries or {})
        sizes.update(_pinned_sizes(root / PIN_NAME / "maps"))  # what is pinned wins
        for name, n in sizes.items():
            obj.set_max_entries(name, n)
        adoption = attach_pinned(obj, PIN_NAME, cgroup=cgroup2_root()[0], root=root)
    finally:
        obj.close()  # pinned links and maps stay; our handles go
    return use_lsm, adoption.actions


def lsm_programs() -> tuple[str, ...]:
    """LSM_PROGRAMS with the inode_setattr program whose arguments match this kernel."""
    if not _setattr_takes_idmap():
        return LSM_PROGRAMS
    return tuple(p + "_idmap" if p == "manul_sbx_inode_setattr" else p for p in LSM_PROGRAMS)


def _setattr_takes_idmap() -> bool:
    """Whether this kernel's inode_setattr LSM hook passes an idmap first (newer
    kernels) or the dentry (6.1)."""
    try:
        with Btf.from_file(VMLINUX_BTF) as btf:
            params = btf.func_params("bpf_lsm_inode_setattr")
    except (KernelError, KeyError):
        return False  # no BTF or no BPF LSM: the program is not loaded
    return bool(params) and params[0] != "dentry"


def _pinned_sizes(d: Path) -> dict[str, int]:
    out = {}
    for name in MAPS:
        if name in PER_CPU_ARRAYS or not (d / name).exists():
            continue  # per-CPU arrays are sized by libbpf; the rest as pinned
        m = Map.from_pin(d / name)
        try:
            out[name] = m.max_entries
        finally:
            m.close()
    return out


def unload(root: Path = PIN_ROOT) -> bool:
    """Unpin every program and map: enforcement ends everywhere."""
    return remove_pinned(PIN_NAME, root)


@contextlib.contextmanager
def locked(root: Path = PIN_ROOT) -> Iterator[None]:
    """Serialise writers (agent, CLI) on the pinned state: flock on its directory."""
    ensure_bpffs()
    base = root / PIN_NAME
    base.mkdir(parents=True, exist_ok=True)
    fd = os.open(base, os.O_RDONLY | os.O_DIRECTORY)
    try:
        fcntl.flock(fd, fcntl.LOCK_EX)
        yield
    finally:
        os.close(fd)  # releases the lock
