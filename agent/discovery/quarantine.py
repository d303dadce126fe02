"""Quarantine: deny a shadow agent's egress except to the AI gateway.

Uses bpf/quarantine.bpf.c, attached at the cgroup v2 root and pinned under
/sys/fs/bpf/manul/quarantine, so a quarantine outlives an agent restart.
The allow-list holds the gateway's addresses (its registry host names,
resolved) plus whatever the operator adds; everything else a quarantined
cgroup connects to is refused with EPERM and reported. When the sandbox's
own network enforcement is in force for a workload, quarantine is the
coarser, earlier tool: it needs no policy.

The pinned `quarantined` map is the one record of who is quarantined:
discovery adds shadow agents to it, `manul quarantine add|release` edits it
(the daemon need not run), and the daemon reads it back
(`pinned_cgroups`) to tell the decision point which callers are
quarantined (`context.quarantined`). A start that fails leaves nothing
attached: what this start pinned is unpinned again.

Every refusal is counted in the kernel per cgroup (`counts`, exported as
`manul_quarantine_refused_total`); only `event_rate` refusal events a second
per cgroup and CPU are sent up (`bpf/lib/ratelimit.h`), the rest are counted
as held and reported as `suppressed` in the audit log.
"""

from __future__ import annotations

import ipaddress
import logging
import socket
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from pathlib import Path

from agent.errors import ConfigError, KernelError
from agent.kernel import BpfObject, Map, RingBuffer, abi, attach_pinned
from agent.kernel.budget import Budget, HeldReporter, write_budget
from agent.kernel.fs import PIN_ROOT, cgroup2_root
from agent.kernel.pins import pin_dir, remove_pinned
from agent.telemetry import metrics
from agent.telemetry.audit import AuditLog

log = logging.getLogger(__name__)
PIN_NAME = "quarantine"


@dataclass(frozen=True, slots=True)
class Refusal:
    """One connection a quarantined workload was refused."""

    cgroup_id: int
    pid: int
    comm: str
    dst: str
    dport: int


def addr_key(network: str) -> bytes:
    """An LPM key (manul_addr_key) for an address or CIDR; IPv4 as ::ffff:a.b.c.d/96+n."""
    try:
        net = ipaddress.ip_network(network, strict=False)
    except ValueError as e:
        raise ConfigError(f"`{network}` is not an IP address or CIDR") from e
    if isinstance(net, ipaddress.IPv4Network):
        raw = bytes(10) + b"\xff\xff" + net.network_address.packed
        plen = 96 + net.prefixlen
    else:
        raw = net.network_address.packed
        plen = net.prefixlen
    key = abi.manul_addr_key(prefixlen=plen)
    key.addr[:] = raw
    return bytes(key)


def resolve_hosts(hosts: Iterable[str]) -> list[str]:
    """Addresses of literal host names (wildcards are skipped: they cannot be resolved)."""
    out: set[str] = set()
    for h in hosts:
        if "*" in h:
            continue
        try:
            for info in socket.getaddrinfo(h, None, proto=socket.IPPROTO_TCP):
                out.add(str(info[4][0]))
        except OSError as e:
            log.warning("cannot resolve gateway host %s: %s", h, e)
    return sorted(out)


DEFAULT_EVENT_RATE = 50  # refusal events a second per quarantined cgroup and CPU
DEFAULT_EVENT_BURST = 100
DEFAULT_NODE_RATE = 5000  # ... and in all, for the node


class Quarantine:
    def __init__(self, root: Path = PIN_ROOT, *, event_rate: int = DEFAULT_EVENT_RATE,
                 event_burst: int = DEFAULT_EVENT_BURST,
                 node_rate: int = DEFAULT_NODE_RATE) -> None:
        """`event_rate`, `event_burst`: how many refusal events each quarantined
        cgroup may send up (per CPU; 0: no limit); refusals are all counted."""
        self._root = root
        self._obj: BpfObject | None = None
        self._rb: RingBuffer | None = None
        self.budget = Budget(event_rate, event_burst, node_rate)
        self.held: HeldReporter | None = None
        self._exported: dict[int, int] = {}  # cgroup -> refusals exported as metrics

    def start(self) -> dict[str, str]:
        """Load (or adopt) the pinned programs; on any failure nothing this call
        pinned stays attached, and a quarantine already in force is untouched."""
        existed = pin_dir(PIN_NAME, self._root).exists()
        obj = BpfObject.open("quarantine")
        try:
            result = attach_pinned(obj, PIN_NAME, cgroup=cgroup2_root()[0], root=self._root)
            self._rb = RingBuffer(obj.map("quarantine_events"), obj.map("manul_errors"))
            write_budget(obj.map("quarantine_budget_config"), self.budget)
            self.held = HeldReporter(obj.map("quarantine_budget"),
                                     obj.map("quarantine_reported"))
        except BaseException:
            if self._rb is not None:
                self._rb.close()
                self._rb = None
            obj.close()
            if not existed:
                remove_pinned(PIN_NAME, self._root)  # detaches what attach_pinned pinned
            raise
        self._obj = obj
        return result.actions

    @property
    def ring(self) -> RingBuffer | None:
        """The refusal ring buffer, while started (its counters are exported)."""
        return self._rb

    def close(self) -> None:
        """Stop managing; the pinned quarantine stays in force."""
        if self._rb is not None:
            self._rb.close()
            self._rb = None
        self.held = None
        if self._obj is not None:
            self._obj.close()
            self._obj = None

    def _map(self, name: str) -> Map:
        if self._obj is None:
            raise RuntimeError("quarantine is not started")
        return self._obj.map(name)

    def set_allowed(self, networks: Iterable[str]) -> None:
        """Replace the allow-list (addresses or CIDRs) in one pass: add new, then drop old."""
        m = self._map("quarantine_allow")
        want = {addr_key(n) for n in networks}
        for k in want:
            m.update(k, 1)
        for k in list(m.keys()):
            if k not in want:
                m.delete(k)

    def allowed(self) -> list[str]:
        return _describe(self._map("quarantine_allow"))

    def add(self, cgroup_id: int) -> None:
        self._map("quarantined").update(cgroup_id.to_bytes(8, "little"), 1)

    def remove(self, cgroup_id: int) -> bool:
        return self._map("quarantined").delete(cgroup_id.to_bytes(8, "little"))

    def cgroups(self) -> list[int]:
        keys = self._map("quarantined").keys()
        return sorted(int.from_bytes(k, "little") for k in keys)

    def counts(self) -> dict[int, int]:
        """Refusals per quarantined cgroup (since it was last forgotten), counted in
        the kernel, summed over the CPUs. What the budgets held back: `held`."""
        return {int.from_bytes(k, "little"): sum(int.from_bytes(v[:8], "little")
                                                 for v in per_cpu)
                for k, per_cpu in self._map("quarantine_counts").items()}

    def forget(self, cgroup_ids: Iterable[int]) -> None:
        """Drop what is counted of cgroups no longer quarantined (once exported and
        reported): their counts, budgets and what was reported of them."""
        for cg in cgroup_ids:
            self._map("quarantine_counts").delete(cg.to_bytes(8, "little"))
            if self.held is not None:
                self.held.forget(cg)

    def export(self, name_of: Callable[[int], str], audit: AuditLog | None) -> None:
        """Once a second: the refusals counted in the kernel as
        `manul_quarantine_refused_total{workload}`; the refusal events the budgets
        held back since the last report (by this agent or the one before) into the
        audit log as the workload's `suppressed`; then what is counted of cgroups no
        longer quarantined is dropped."""
        counts = self.counts()
        for cg, refused in counts.items():
            last = self._exported.get(cg, 0)
            if refused > last:
                metrics.QUARANTINE_REFUSED.labels(workload=name_of(cg)).inc(refused - last)
            self._exported[cg] = refused
        if audit is not None and self.held is not None:
            for cg, n in self.held.due().items():
                audit.suppressed("quarantine-refused", name_of(cg), n)
                self.held.mark(cg, n)
        gone = set(counts) - set(self.cgroups())
        self.forget(gone)
        for cg in gone:
            self._exported.pop(cg, None)

    def refusals(self, timeout: float = 0.0,
                 on: Callable[[Refusal], None] | None = None) -> list[Refusal]:
        if self._rb is None:
            return []
        out = []
        for rec in self._rb.poll(timeout) if timeout else self._rb.drain():
            if abi.event_type(rec) != abi.EV_QUARANTINE:
                continue
            ev = abi.decode(abi.manul_quarantine_event, rec)
            raw = bytes(ev.daddr)
            dst = (str(ipaddress.IPv4Address(raw[12:])) if ev.family == socket.AF_INET
                   else str(ipaddress.IPv6Address(raw)))
            r = Refusal(ev.cgroup_id, ev.pid, ev.comm.decode(errors="replace"), dst, ev.dport)
            out.append(r)
            if on:
                on(r)
        return out


def pinned_cgroups(root: Path = PIN_ROOT) -> list[int] | None:
    """The quarantined cgroup ids as pinned, without loading anything; None
    when no quarantine was ever started on this node."""
    path = pin_dir(PIN_NAME, root) / "maps" / "quarantined"
    if not path.exists():
        return None
    try:
        m = Map.from_pin(path)
    except KernelError as e:
        log.warning("cannot read the pinned quarantine: %s", e)
        return None
    try:
        return sorted(int.from_bytes(k, "little") for k in m.keys())  # noqa: SIM118 - a BPF map
    finally:
        m.close()


def describe_allowed(path: Path) -> list[str]:
    """The pinned allow-list (`quarantine_allow` at `path`) as CIDRs."""
    if not path.exists():
        return []
    m = Map.from_pin(path)
    try:
        return _describe(m)
    finally:
        m.close()


def _describe(m: Map) -> list[str]:
    out = []
    for k in m.keys():  # noqa: SIM118 - a BPF map
        key = abi.manul_addr_key.from_buffer_copy(k)
        raw = bytes(key.addr)
        if raw[:12] == bytes(10) + b"\xff\xff":
            out.append(f"{ipaddress.IPv4Address(raw[12:])}/{key.prefixlen - 96}")
        else:
            out.append(f"{ipaddress.IPv6Address(raw)}/{key.prefixlen}")
    return sorted(out)
