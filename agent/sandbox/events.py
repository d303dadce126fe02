"""The audit trail: every deny and would-deny the kernel reported, named.

`sandbox_events` (a pinned ring buffer, so events raised while no agent
runs wait for the next one) carries one `manul_sandbox_event` per deny or
would-deny. `AuditTrail` drains it and turns each into a `Decision`: the
Cedar action, the resource (`/path`, or `addr:port/proto`), the verdict and
mode, and the policy @ids behind the rule id, from the rule table pinned
for that event's generation. Each decision then becomes an audit record
(`sandbox-deny` / `sandbox-would-deny`, docs/metrics.md) through
`AuditLog.event`: repeats are aggregated and each bound workload has a record
budget, whose unit is the bound cgroup, as for the kernel's event budget;
what that budget held back in the kernel is reported as `suppressed` (`tick`).
Then the `on_decision` callbacks run (the event stream other parts use).
The metrics do not come from here: the kernel counts every decision
(`counters.py`), delivered or not.
Callers: `service.py`, the tests.
"""

from __future__ import annotations

import functools
import ipaddress
import logging
import time
from collections.abc import Callable, Mapping
from dataclasses import asdict, dataclass
from typing import Any

from agent.kernel import RingBuffer, abi
from agent.kernel.budget import HeldReporter
from agent.sandbox import maps as M
from agent.sandbox.kernel import SandboxMaps
from agent.telemetry.audit import AuditLog
from agent.workloads import WorkloadResolver

log = logging.getLogger(__name__)

ACTIONS = ("readFile", "writeFile", "exec", "loadLibrary", "connectNetwork", "openRawSocket",
           "confinement")
CONFINEMENT = ("a sandboxed process may not ptrace an outsider, mount, chroot or create "
               "a user namespace (Manul's built-in confinement)")
MECHANISMS = {abi.SBX_M_LSM: "lsm", abi.SBX_M_CGROUP: "cgroup",
              abi.SBX_M_TRACEPOINT: "tracepoint"}
PROTOCOLS = {1: "tcp", 2: "udp"}


@dataclass(frozen=True, slots=True)
class Decision:
    """One deny or would-deny, as the kernel saw it, with its policies."""

    time: float  # Unix seconds (from the event's monotonic stamp)
    cgroup_id: int
    bound_cgroup_id: int
    pid: int
    tgid: int
    ppid: int
    uid: int
    comm: str
    action: str  # a Cedar action (readFile ... openRawSocket), or `confinement` (built in)
    resource: str  # `/resolved/path`, `addr:port/proto` (IPv6 as [addr]), `SocketKind::"raw"`
    verdict: str  # deny | would-deny
    mode: str  # enforce | audit (the binding's)
    mechanism: str  # lsm | cgroup | tracepoint
    degraded: bool  # enforce was asked, but this mechanism only reports
    sandbox_id: int
    generation: int
    rule_id: int
    effect: str  # forbid (a policy forbade), permit (never: a permit allows), or "" (default deny)
    policies: tuple[str, ...]  # Cedar @ids; empty: nothing permitted it (default deny)
    sandbox: str  # the compiled sandbox's name
    target: str  # what the sandbox was applied to
    truncated: bool = False  # the path was longer than the event's buffer
    unresolved: bool = False  # the path could not be resolved (denied)
    operation: str = ""  # the syscall class that asked: open, rename, mmap, connect, ...
    refer: bool = False  # link/rename refused: the new name would grant `action` on this path
    subtree: bool = False  # a directory rename refused (EXDEV): rights below it differ

    @property
    def kind(self) -> str:
        return "sandbox-deny" if self.verdict == "deny" else "sandbox-would-deny"


def _resource(ev: abi.manul_sandbox_event) -> str:
    if ev.action == abi.SBX_RAW_SOCKET:
        return 'SocketKind::"packet"' if ev.addr[0] == abi.SBX_SOCK_PACKET else 'SocketKind::"raw"'
    if ev.action == abi.SBX_CONFINE:
        return abi.SBX_OPS[ev.op] if ev.op < len(abi.SBX_OPS) else f"op-{ev.op}"
    if ev.action != abi.SBX_CONNECT:
        if ev.flags & abi.SBX_EV_NO_PATH:
            return "?"
        return str(ev.path.decode("utf-8", "surrogateescape"))
    raw = bytes(ev.addr)
    proto = PROTOCOLS.get(ev.proto, "other")
    if ev.family == 2:
        return f"{ipaddress.IPv4Address(raw[:4])}:{ev.port}/{proto}"
    return f"[{ipaddress.IPv6Address(raw)}]:{ev.port}/{proto}"


class AuditTrail:
    """Drains `sandbox_events`; see the module docstring."""

    def __init__(self, maps: SandboxMaps, *, audit: AuditLog | None = None,
                 resolver: WorkloadResolver | None = None,
                 on_decision: Callable[[Decision], None] | None = None) -> None:
        self.maps = maps
        self.audit = audit
        self.resolver = resolver
        self.callbacks: list[Callable[[Decision], None]] = [on_decision] if on_decision else []
        self.ring: RingBuffer = maps.ring()
        self._rules: dict[tuple[int, int], tuple[str, tuple[str, ...]]] = {}
        self._names: dict[int, tuple[str, str]] = {}  # generation -> (sandbox, target)
        self._budgets: dict[int, str] = {}  # bound cgroup -> its workload's name
        self.held = HeldReporter(maps.budget, maps.reported)
        self.decisions = 0
        self._refreshed = False

    def close(self) -> None:
        self.ring.close()

    def drops(self) -> int:
        return self.ring.drops()

    def drain(self) -> list[Decision]:
        return self._handle(self.ring.drain())

    def poll(self, timeout: float) -> list[Decision]:
        return self._handle(self.ring.poll(timeout))

    def refresh(self) -> None:
        """Cache the rule tables and names of every generation pinned now."""
        self._rules.update(M.read_rules(self.maps))
        for m in M.read_meta(self.maps).values():
            self._names[m.generation] = (m.name, m.target)

    def _handle(self, records: list[bytes]) -> list[Decision]:
        out = []
        offset = time.time() - time.monotonic()
        self._refreshed = False  # read the pinned tables at most once per batch
        for rec in records:
            if abi.event_type(rec) != abi.EV_SANDBOX:
                continue
            d = self.decode(abi.decode(abi.manul_sandbox_event, rec), offset)
            out.append(d)
            if self.audit is not None:
                self.audit.event(d.kind, budget=self.budget_of(d.bound_cgroup_id),
                                 key=(d.cgroup_id, d.action, d.resource, d.verdict, d.mode,
                                      d.policies, d.operation),
                                 build=functools.partial(self.record, d))
            for cb in self.callbacks:
                cb(d)
        self.decisions += len(out)
        return out

    def budget_of(self, bound_cgroup_id: int) -> str:
        """The name a bound cgroup's record budget goes by: its workload's (a cgroup
        the resolver does not know yet goes by its id, and is asked again)."""
        name = self._budgets.get(bound_cgroup_id)
        if name is None:
            w = self.resolver.resolve(bound_cgroup_id) if self.resolver is not None else None
            if w is None:
                return f"cgroup:{bound_cgroup_id}"
            name = w.name
            if len(self._budgets) > 8192:
                self._budgets.clear()
            self._budgets[bound_cgroup_id] = name
        return name

    def tick(self, bindings: Mapping[int, M.Binding] | None = None) -> None:
        """Report what each bound cgroup's kernel budget held back since it was last
        reported (by this agent or the one before) as `suppressed` records of its
        workload (AuditLog.suppressed); forget what unbound cgroups held.
        `bindings`: what is bound now, when the caller has read it already."""
        if self.audit is None:
            return
        if bindings is None:
            bindings = M.read_bindings(self.maps)
        for cg, n in self.held.due().items():
            b = bindings.get(cg)
            kind = "sandbox-would-deny" if b is not None and not b.enforce else "sandbox-deny"
            self.audit.suppressed(kind, self.budget_of(cg), n)
            self.held.mark(cg, n)
        for cg in self.held.keys - set(bindings):  # (the buckets due() just read)
            self.held.forget(cg)

    def decode(self, ev: abi.manul_sandbox_event, offset: float) -> Decision:
        key = (int(ev.generation), int(ev.rule_id))
        missing = (ev.rule_id and key not in self._rules) or ev.generation not in self._names
        if missing and not self._refreshed:
            self.refresh()
            self._refreshed = True
        effect, policies = self._rules.get(key, ("", ())) if ev.rule_id else ("", ())
        if ev.action == abi.SBX_CONFINE:
            effect, policies = "forbid", ("manul:confinement",)
        if ev.rule_id and key not in self._rules:
            policies = (f"rule {ev.rule_id} of generation {ev.generation} (retired)",)
        sandbox, target = self._names.get(ev.generation, ("?", "?"))
        return Decision(
            time=offset + ev.hdr.ktime_ns / 1e9, cgroup_id=ev.cgroup_id,
            bound_cgroup_id=ev.bound_cgroup_id, pid=ev.pid, tgid=ev.tgid, ppid=ev.ppid,
            uid=ev.uid, comm=ev.comm.decode(errors="replace"),
            action=ACTIONS[ev.action] if ev.action < len(ACTIONS) else f"action-{ev.action}",
            resource=_resource(ev),
            verdict="deny" if ev.verdict == abi.SBX_DENIED else "would-deny",
            mode="enforce" if ev.enforce else "audit",
            mechanism=MECHANISMS.get(ev.mechanism, str(ev.mechanism)),
            degraded=bool(ev.flags & abi.SBX_EV_DEGRADED), sandbox_id=ev.sandbox_id,
            generation=ev.generation, rule_id=ev.rule_id, effect=effect, policies=policies,
            sandbox=sandbox, target=target, truncated=bool(ev.flags & abi.SBX_EV_TRUNCATED),
            unresolved=bool(ev.flags & abi.SBX_EV_NO_PATH),
            operation=abi.SBX_OPS[ev.op] if ev.op < len(abi.SBX_OPS) else f"op-{ev.op}",
            refer=bool(ev.flags & abi.SBX_EV_REFER), subtree=bool(ev.flags & abi.SBX_EV_SUBTREE))

    def record(self, d: Decision) -> dict[str, Any]:
        """The audit record's fields (docs/metrics.md, `sandbox-deny`)."""
        rec = asdict(d)
        rec["event_time"] = rec.pop("time")
        rec["policies"] = list(d.policies)
        rec["process"] = rec.pop("comm")
        rec["agent"] = d.target.partition(":")[2] if d.target.startswith("agent:") else ""
        if self.resolver is not None:
            w = self.resolver.resolve(d.cgroup_id, d.tgid)
            if w is not None:
                rec.update(workload=w.name, workload_kind=w.kind, namespace=w.namespace,
                           pod=w.pod, unit=w.unit, cgroup=w.cgroup_path)
            p = self.resolver.process(d.tgid)
            if p is not None:
                rec.update(exe=p.exe, cmdline=list(p.cmdline))
            parent = self.resolver.process(d.ppid) if d.ppid else None
            if parent is not None:
                rec.update(parent=parent.comm, parent_exe=parent.exe)
        return rec
