"""The kernel side of the baseline: load bpf/baseline.bpf.c, say whom to watch, read novelties.

`BehaviourSensor` is a context manager like discovery's `TlsSensor`:
entering loads the object and attaches its tracepoints and its cgroup
hooks (at the cgroup v2 root, observe only); leaving detaches them.
Nothing is pinned: the kernel's copy of a baseline is seeded again from
the stored profiles after a restart (`seed`).

User space says who is watched (`watch`: a cgroup -> a scope; `never`: a
cgroup that is not, such as the agent's own), and what each scope already
knows (`seed`: exact items, `generalise`: directories). The kernel sends
only what is novel for the scope; `stats()` says how much it kept back.
"""

from __future__ import annotations

import ctypes
import logging
from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path

from agent.baseline.errors import BaselineError
from agent.baseline.events import Activity, Item, Kind, decode, prefix_key
from agent.kernel import BpfObject, RingBuffer, abi
from agent.kernel.probe import trampolines
from agent.kernel.sensor import Sensor

log = logging.getLogger(__name__)

_KIND_NAMES = {abi.BL_EXEC: "exec", abi.BL_READ: "read", abi.BL_WRITE: "write",
               abi.BL_CONNECT: "connect", abi.BL_LISTEN: "listen", abi.BL_UNIX: "unix"}


def ephemeral_ports(path: Path = Path("/proc/sys/net/ipv4/ip_local_port_range")
                    ) -> tuple[int, int]:
    """The kernel's local port range (listening ports in it are not novelty)."""
    try:
        lo, hi = (int(x) for x in path.read_text().split())
        return lo, hi
    except (OSError, ValueError):
        return 32768, 60999


@dataclass(frozen=True, slots=True)
class KindStats:
    seen: int  # events of watched scopes
    sent: int  # novel: sent to user space
    known: int  # in the baseline: counted in the kernel, not sent
    lost: int  # novel, but the ring buffer was full


class BehaviourSensor(Sensor):
    OBJECT = "baseline"
    RINGBUF = "bl_events"

    # one set or the other is loaded: trampolines where they load, else the
    # system-call tracepoints (agent/kernel/probe.py: BEHAVIOUR_MECHANISMS)
    TRAMPOLINE_PROGRAMS = ("manul_bl_fopen", "manul_bl_funix")
    SYSCALL_PROGRAMS = ("manul_bl_openat", "manul_bl_openat2", "manul_bl_open", "manul_bl_creat",
                        "manul_bl_open_by_handle", "manul_bl_connect_enter",
                        "manul_bl_connect_exit")

    def __init__(self, observe_all: bool = False, cgroup: str | Path | None = None,
                 ringbuf_bytes: int = 1 << 22, seen_entries: int = 1 << 14,
                 trampolines: bool | None = None, attach: bool = True) -> None:
        """`trampolines`: use fentry/fexit (None: probe this kernel); `attach`: on
        entering (else when the first workload is watched: `attach()`)."""
        super().__init__(cgroup, ringbuf_bytes, attach)
        self.observe_all = observe_all
        self.seen_entries = seen_entries
        self.trampolines = trampolines
        self._alerts: RingBuffer | None = None  # credential reads (bl_alerts)

    def configure(self, obj: BpfObject) -> None:
        if self.trampolines is None:
            self.trampolines = trampolines()
        off = self.SYSCALL_PROGRAMS if self.trampolines else self.TRAMPOLINE_PROGRAMS
        for name in off:
            obj.programs[name].autoload = False
        lo, hi = ephemeral_ports()
        obj.set_rodata(observe_all=int(self.observe_all), ephemeral_lo=lo, ephemeral_hi=hi)
        obj.set_max_entries("bl_seen", self.seen_entries)

    def __enter__(self) -> BehaviourSensor:
        super().__enter__()
        try:
            self._alerts = RingBuffer(self.obj.map("bl_alerts"))
        except BaseException:
            super().__exit__(None, None, None)
            raise
        return self

    def __exit__(self, *exc: object) -> None:
        if self._alerts is not None:
            self._alerts.close()
            self._alerts = None
        super().__exit__(*exc)

    def secrets(self, files: Iterable[tuple[int, int]]) -> int:
        """Exactly these (kernel dev, inode) are catalogued credentials now."""
        m = self.obj.map("bl_secrets")
        want = set()
        for dev, ino in files:
            k = abi.manul_bl_inode()
            k.ino, k.dev = ino, dev
            want.add(bytes(k))
        have = set(m.keys())
        m.delete_batch(have - want)
        m.update_batch([(k, bytes(ctypes.c_uint32(1))) for k in want - have])
        return len(want)

    # -- whom to watch ----------------------------------------------------------

    def watch(self, cgroup_id: int, scope: int) -> None:
        """Processes in `cgroup_id` (and below, unless listed) are in `scope`."""
        if scope <= 0:
            raise BaselineError(f"scope {scope} is not a scope (0 means never)")
        self.obj.map("bl_watch").update(bytes(ctypes.c_uint64(cgroup_id)),
                                        bytes(ctypes.c_uint64(scope)))

    def never(self, cgroup_id: int) -> None:
        """Processes in `cgroup_id` (and below, unless listed) are never watched."""
        self.obj.map("bl_watch").update(bytes(ctypes.c_uint64(cgroup_id)),
                                        bytes(ctypes.c_uint64(0)))

    def unwatch(self, cgroup_id: int) -> None:
        self.obj.map("bl_watch").delete(bytes(ctypes.c_uint64(cgroup_id)))

    def watched(self) -> dict[int, int]:
        return {int.from_bytes(k, "little"): int.from_bytes(v, "little")
                for k, v in self.obj.map("bl_watch").items()}

    # -- what a scope already knows ----------------------------------------------

    def seed(self, scope: int, items: Iterable[Item]) -> int:
        """Put exact items into the kernel's baseline of `scope`."""
        pairs = []
        for item in items:
            try:
                pairs.append((item.key(scope), bytes(ctypes.c_uint64(0))))
            except BaselineError as e:
                log.debug("not seeding %s: %s", item, e)
        return self.obj.map("bl_seen").update_batch(pairs) if pairs else 0

    def generalise(self, scope: int, kind: Kind, directory: str) -> None:
        """Every `kind` event for a file directly in `directory` is known for `scope`."""
        key = prefix_key(kind, scope, directory)
        length = len(directory.rstrip("/").encode("utf-8", "surrogateescape")) + 1
        self.obj.map("bl_prefix").update(key, bytes(ctypes.c_uint64(length)))

    def forget(self, scope: int) -> int:
        """Drop everything the kernel knows for `scope` (a reset baseline)."""
        n = 0
        seen = self.obj.map("bl_seen")
        dead = [k for k in seen if int.from_bytes(k[:8], "little") == scope]
        n += seen.delete_batch(dead)
        prefixes = self.obj.map("bl_prefix")
        dead = [k for k in prefixes if int.from_bytes(k[4:12], "little") == scope]
        n += prefixes.delete_batch(dead)
        files = self.obj.map("bl_files")  # files judged for the scope (scope first)
        n += files.delete_batch([k for k in files if int.from_bytes(k[:8], "little") == scope])
        return n

    # -- what happened ----------------------------------------------------------

    def poll(self, timeout: float = 0.1) -> list[Activity]:
        """Novel events: credential reads first (their own ring buffer), then the rest."""
        out = []
        alerts = self._alerts.drain() if self._alerts is not None else []
        for rec in alerts + self.ringbuf.poll(0 if alerts else timeout):
            if abi.event_type(rec) != abi.EV_BEHAVIOUR:
                continue
            try:
                out.append(decode(rec))
            except BaselineError as e:
                log.warning("%s", e)
        return out

    def stats(self) -> dict[str, KindStats]:
        """Per kind, summed over CPUs: seen, sent, known (kept in the kernel), lost."""
        m = self.obj.map("bl_stats")
        out: dict[str, KindStats] = {}
        for kind, name in _KIND_NAMES.items():
            per_cpu = m.lookup(bytes(ctypes.c_uint32(kind))) or []
            counts = [abi.manul_bl_counts.from_buffer_copy(v) for v in per_cpu]
            out[name] = KindStats(*(sum(getattr(c, f) for c in counts)
                                    for f in ("seen", "sent", "known", "lost")))
        return out

