"""What this kernel can do, found by loading and attaching tiny programs.

A kernel can list `bpf` among its LSMs and still refuse an LSM program
(lockdown, a missing trampoline), so every program-type probe here loads a
real program from `bpf/probe.bpf.c` and attaches it, then detaches. The
result feeds `manul doctor`, `/healthz`, the `manul_mechanism_info` metric,
and the choice of mechanism per concern (`choose_mechanisms`).
"""

from __future__ import annotations

import contextlib
import os
from collections.abc import Iterator
from dataclasses import asdict, dataclass
from pathlib import Path

from agent.errors import KernelError, ManulError
from agent.kernel import fs
from agent.kernel.btf import Btf
from agent.kernel.obj import BpfObject


@dataclass(frozen=True, slots=True)
class Feature:
    key: str
    title: str
    available: bool
    detail: str
    fallback: str = ""  # what Manul uses instead when this is unavailable

    def to_dict(self) -> dict[str, object]:
        return asdict(self)


@dataclass(frozen=True, slots=True)
class Mechanism:
    concern: str
    mechanism: str
    degraded: bool
    note: str = ""


@contextlib.contextmanager
def _scratch_cgroup() -> Iterator[Path]:
    root, _ = fs.cgroup2_root()
    path = root / f"manul-probe-{os.getpid()}"
    path.mkdir(exist_ok=True)
    try:
        yield path
    finally:
        with contextlib.suppress(OSError):
            path.rmdir()


def _libc_path() -> str:
    with open("/proc/self/maps") as f:
        for line in f:
            parts = line.split()
            if len(parts) >= 6 and "/libc.so" in parts[5]:
                return parts[5]
    return "/lib/x86_64-linux-gnu/libc.so.6"


def _try(program: str, **attach: object) -> tuple[bool, str, int]:
    """Load and attach one probe program; (ok, what happened, errno)."""
    section = program
    try:
        with BpfObject.open("probe") as obj:
            obj.only(program)
            prog = obj.programs[program]
            section = prog.section
            obj.load()
            if "cgroup" in attach:
                with _scratch_cgroup() as cg:
                    prog.attach(cgroup=cg).destroy()
            else:
                prog.attach(**attach).destroy()  # type: ignore[arg-type]
            return True, f"loaded and attached `{prog.section}`", 0
    except KernelError as e:
        err = f": {e.errname} ({os.strerror(e.errno)})" if e.errno else ""
        step = "load" if "load" in e.message else "attach"
        return False, f"the kernel refused to {step} `{section}`{err}", e.errno


def trampolines() -> bool:
    """Do fentry/fexit programs load and attach here (BPF trampolines)?"""
    return _try("probe_fentry")[0]


# The behaviour concern's two program sets (agent/baseline/sensor.py loads one).
BEHAVIOUR_MECHANISMS = {
    True: ("fexit:security_file_open+fentry:security_unix_stream_connect+"
           "tracepoints:sched_process_exec/inet_sock_set_state+cgroup:connect4/6+sendmsg4/6",
           ""),
    False: ("tracepoints:sys_exit_open*/connect+sched_process_exec/inet_sock_set_state+"
            "cgroup:connect4/6+sendmsg4/6",
            "no BPF trampolines: opens and Unix connects are seen at the system calls, "
            "so 32-bit system calls (int $0x80) and io_uring's are not"),
}


def probe_btf() -> Feature:
    p = Path("/sys/kernel/btf/vmlinux")
    fb = "none: Manul's objects are CO-RE and need kernel BTF (CONFIG_DEBUG_INFO_BTF=y)"
    if not p.exists():
        return Feature("btf", "Kernel BTF", False, f"`{p}` is missing", fb)
    try:
        with Btf.from_file(p) as btf:
            if not btf.has_struct("task_struct"):
                return Feature("btf", "Kernel BTF", False, f"`{p}` has no `task_struct`", fb)
    except KernelError as e:
        return Feature("btf", "Kernel BTF", False, f"cannot read `{p}`: {e.reason}", fb)
    return Feature("btf", "Kernel BTF", True, f"`{p}` parsed")


def probe_cgroup2() -> Feature:
    try:
        root, layout = fs.cgroup2_root()
    except KernelError as e:
        return Feature("cgroup_v2", "cgroup v2", False, e.reason,
                       "none: attribution and cgroup programs need cgroup v2")
    return Feature("cgroup_v2", "cgroup v2", True, f"mounted at `{root}` ({layout} layout)")


def probe_lsm() -> Feature:
    title = "BPF LSM"
    fb = ("network: cgroup connect4/6 + sendmsg4/6 hooks (enforced), raw IP sockets: "
          "cgroup sock_create (refused); files and exec: tracepoints (audit only); links, "
          "renames, metadata changes, executable mappings, packet sockets, ptrace and mounts: "
          "not decided")
    try:
        lsms = fs.active_lsms()
    except KernelError as e:
        return Feature("bpf_lsm", title, False, e.reason, fb)
    if "bpf" not in lsms:
        return Feature("bpf_lsm", title, False,
                       f"`bpf` is not in the active LSM list ({','.join(lsms)}); "
                       "boot with `lsm=" + ",".join([*lsms, "bpf"]) + "`", fb)
    ok, detail, err = _try("probe_lsm")
    if not ok:
        detail = f"`bpf` is an active LSM, but {detail}"
        if err == 1:
            detail += " (the kernel refuses LSM programs here, e.g. lockdown or no trampolines)"
    return Feature("bpf_lsm", title, ok, detail, "" if ok else fb)


def probe_overlay() -> Feature:
    """Whether the sandbox can tell overlayfs' own work on its layers (copy-up)
    from a caller's: it reads `struct ovl_fs` from the overlay module's BTF
    (or vmlinux's, when built in) when its programs load."""
    title = "overlayfs BTF (container copy-ups)"
    fb = ("inner calls of overlayfs are decided like the caller's: inside a sandbox, "
          "changing an image file (copy-up) is refused; load `overlay` before the agent")
    if Path("/sys/kernel/btf/overlay").exists():
        return Feature("overlay_btf", title, True, "`/sys/kernel/btf/overlay` is loaded")
    try:
        with Btf.from_file(Path("/sys/kernel/btf/vmlinux")) as btf:
            if btf.has_struct("ovl_fs"):
                return Feature("overlay_btf", title, True, "overlayfs is built in")
    except KernelError as e:
        return Feature("overlay_btf", title, False, f"cannot read kernel BTF: {e.reason}", fb)
    return Feature("overlay_btf", title, False,
                   "the `overlay` module is not loaded (no `/sys/kernel/btf/overlay`)", fb)


def probe_all() -> list[Feature]:
    """Probe every mechanism Manul may use, in doctor's order."""
    fs.ensure_bpffs()
    with contextlib.suppress(KernelError):
        fs.ensure_tracefs()
    out = [probe_btf(), probe_cgroup2(), probe_lsm(), probe_overlay()]
    rows: list[tuple[str, str, str, str]] = [
        ("fentry", "BPF trampolines (fentry)", "probe_fentry",
         "tracepoints and raw tracepoints"),
        ("ringbuf", "Ring buffer", "probe_ringbuf", "none: events need BPF_MAP_TYPE_RINGBUF"),
        ("tracepoint", "Tracepoints", "probe_tracepoint", "raw tracepoints"),
        ("raw_tracepoint", "Raw tracepoints", "probe_raw_tracepoint", "tracepoints"),
        ("tp_btf", "BTF tracepoints (tp_btf)", "probe_tp_btf", "raw tracepoints"),
        ("cgroup_skb", "cgroup_skb (TLS capture)", "probe_cgroup_skb",
         "none: discovery needs cgroup_skb/egress"),
        ("sock_addr", "cgroup sock_addr (connect hooks)", "probe_sock_addr",
         "none: without it and without BPF LSM, egress is observed, not enforced"),
        ("uprobe", "uprobes", "probe_uprobe", "none (optional)"),
    ]
    attach_args: dict[str, dict[str, object]] = {
        "probe_cgroup_skb": {"cgroup": True},
        "probe_sock_addr": {"cgroup": True},
        "probe_uprobe": {"binary": _libc_path(), "func": "getpid"},
    }
    for key, title, prog, fallback in rows:
        ok, detail, err = _try(prog, **attach_args.get(prog, {}))
        if not ok and key == "fentry" and err == 1:
            detail += " (no BPF trampolines on this kernel)"
        out.append(Feature(key, title, ok, detail, "" if ok else fallback))
    return out


# The sandbox's program sets (agent/sandbox/kernel.py loads them): per Cedar
# action (and Manul's built-in confinement), what decides it and whether it
# is enforced. Indexed by "BPF LSM loads here". The one table: `manul sandbox
# status`, `manul doctor` and the mechanism metric all read it.
SANDBOX_MECHANISMS: dict[bool, tuple[tuple[str, str, bool], ...]] = {
    True: (
        ("readFile", "lsm:file_open", True),
        ("writeFile", "lsm:file_open+path_mknod/mkdir/unlink/rmdir/symlink/truncate/"
         "chmod/chown/link/rename+inode_setattr/setxattr/removexattr+file_ioctl", True),
        ("exec", "lsm:bprm_check_security+mmap_file/file_mprotect", True),
        ("loadLibrary", "lsm:mmap_file/file_mprotect", True),
        ("connectNetwork", "lsm:socket_connect/socket_sendmsg+cgroup:sendmsg4/6", True),
        ("openRawSocket", "lsm:socket_create", True),
        ("confinement", "lsm:ptrace_access_check/sb_mount/move_mount/sb_pivotroot/"
         "path_chroot/userns_create", True),
    ),
    False: (
        ("readFile", "tracepoint:sys_exit_open* (audit only)", False),
        ("writeFile", "tracepoint:sys_exit_open* (audit only; links, renames, unlinks, "
         "metadata and xattr changes are not seen)", False),
        ("exec", "tp_btf:sched_process_exec (audit only)", False),
        ("loadLibrary", "none (executable mappings are not seen)", False),
        ("connectNetwork", "cgroup:connect4/6+sendmsg4/6 (TCP Fast Open included; "
         "ICMP echo sockets are not seen)", True),
        ("openRawSocket", "cgroup:sock_create (raw IP sockets; packet sockets are not seen)",
         False),
        ("confinement", "none (ptrace, mount, chroot and user namespaces are not refused)",
         False),
    ),
}
# doctor's concerns, by the sandbox action that states each one's mechanism
_SANDBOX_CONCERNS = (("file", "writeFile"), ("exec", "exec"), ("network", "connectNetwork"),
                     ("raw-sockets", "openRawSocket"), ("confinement", "confinement"))


def choose_mechanisms(features: list[Feature]) -> list[Mechanism]:
    """The strongest mechanism available per concern (DESIGN.md's table)."""
    have = {f.key: f.available for f in features}
    lsm = have.get("bpf_lsm", False)
    table = {a: (m, e) for a, m, e in SANDBOX_MECHANISMS[lsm]}
    out = []
    for concern, action in _SANDBOX_CONCERNS:
        mech, enforced = table[action]
        if concern == "network" and not lsm and not have.get("sock_addr"):
            out.append(Mechanism(concern, "none", True, "no LSM and no cgroup sock_addr hooks"))
            continue
        note = "" if lsm else ("fallback for BPF LSM; same maps, same answers" if enforced
                               else f"BPF LSM unavailable: {concern} rules are reported or "
                               "not decided, not enforced")
        out.append(Mechanism(concern, mech, not enforced, note))
    out.append(Mechanism("tls", "cgroup_skb/egress", False) if have.get("cgroup_skb") else
               Mechanism("tls", "none", True, "discovery cannot see handshakes"))
    mech, note = BEHAVIOUR_MECHANISMS[bool(have.get("fentry"))]
    if not have.get("tracepoint", False):
        out.append(Mechanism("behaviour", "none", True, "tracepoints do not load"))
    else:
        out.append(Mechanism("behaviour", mech, bool(note), note))
    return out


def safe_probe_all() -> tuple[list[Feature], str | None]:
    """probe_all, but a failure of the probe itself becomes a message, not a crash."""
    try:
        return probe_all(), None
    except ManulError as e:
        return [], str(e)
