"""SandboxService: what the daemon runs to enforce registry sandboxes.

    svc = SandboxService(daemon.registry, daemon.resolver, daemon.audit,
                         policies=daemon.policy_set)
    svc.start()            # load or adopt the pinned programs and state
    while running:
        svc.poll(0.5)      # reconcile (every `interval`), drain the audit trail
    svc.close()            # stop managing; enforcement stays pinned

`reconcile` compares what the registry wants (`assign.assignments`: every
sandboxed Agent's workloads, compiled from the node's one policy set) with
what is pinned, and for each agent whose inputs changed (policies, entities,
the agent's registry attributes, mode, resolved host addresses, or its set
of cgroups) applies a new generation (`apply.apply_sandbox`); cgroups
no longer the agent's are unbound. Only bindings this service made (target
`agent:<key>`) are touched: `manul sandbox apply` bindings stay. A bad
policy or a full map leaves that agent's previous generation in force and
is reported in `errors` and the log; so is a policy set that cannot be
read, which leaves every agent's generation in force. Host names are
re-resolved when their
TTL expires (`hosts.HostCache`); new addresses mean a new digest and so a
new generation.

Once a second `poll` also exports the kernel's exact decision counts
(`counters.KernelCounters`) and reports what each workload's kernel event
budget (`event_rate`/`event_burst`, set at `start`) held back.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

from agent.errors import ManulError
from agent.kernel.fs import PIN_ROOT
from agent.registry import Registry
from agent.registry.policyset import PolicySetSource
from agent.sandbox import maps as M
from agent.sandbox.apply import (
    Applied,
    apply_sandbox,
    compile_all,
    drop_stale,
    remove_cgroups,
    retire_unused,
    select,
)
from agent.sandbox.assign import Assignment, assignments
from agent.sandbox.counters import (
    DEFAULT_EVENT_BURST,
    DEFAULT_EVENT_RATE,
    DEFAULT_NODE_RATE,
    KernelCounters,
    set_budget,
)
from agent.sandbox.errors import SandboxError
from agent.sandbox.events import AuditTrail, Decision
from agent.sandbox.hosts import HostCache, Resolver, system_resolver
from agent.sandbox.kernel import SandboxMaps, ensure_loaded, locked
from agent.sandbox.state import Status, status_of
from agent.telemetry.audit import AuditLog
from agent.workloads import WorkloadResolver

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class Change:
    target: str
    what: str  # applied | rebound | unbound | failed
    detail: str
    digest_before: str | None = None  # the inputs digest of the generation replaced
    digest_after: str | None = None  # ... and of the one now in force


class SandboxService:
    def __init__(self, registry: Callable[[], Registry], resolver: WorkloadResolver,
                 audit: AuditLog | None = None, *, policies: PolicySetSource,
                 root: Path = PIN_ROOT,
                 host_resolver: Resolver = system_resolver, lsm: bool | None = None,
                 interval: float = 2.0,
                 on_decision: Callable[[Decision], None] | None = None,
                 clock: Callable[[], float] = time.monotonic,
                 event_rate: int = DEFAULT_EVENT_RATE,
                 event_burst: int = DEFAULT_EVENT_BURST,
                 event_node_rate: int = DEFAULT_NODE_RATE) -> None:
        """`event_rate`, `event_burst`: each bound cgroup's kernel event budget
        (events a second per CPU; rate 0: no limit); `event_node_rate`: the node's
        in all (0: none). Counts stay exact either way."""
        self.registry = registry
        self.policies = policies
        self.resolver = resolver
        self.audit = audit
        self.root = root
        self.hosts = HostCache(host_resolver, clock=clock)
        self.lsm = lsm
        self.interval = interval
        self.on_decision = on_decision
        self.event_rate = event_rate
        self.event_burst = event_burst
        self.event_node_rate = event_node_rate
        self.maps: SandboxMaps | None = None
        self.trail: AuditTrail | None = None
        self.counters: KernelCounters | None = None
        self._next_export = 0.0
        self.errors: dict[str, str] = {}  # target -> why its new inputs are not enforced
        self._reported: dict[str, str] = {}  # failures audited, until they change
        self._next = 0.0
        self._hosts_of: dict[str, tuple[str, ...]] = {}  # sources digest -> host names

    def start(self) -> Status:
        """Load or adopt the pinned programs and state; returns what is in force."""
        with locked(self.root):
            self.lsm, actions = ensure_loaded(self.root, lsm=self.lsm)
            self.maps = SandboxMaps.open(self.root)
            drop_stale(self.maps)
            retire_unused(self.maps)
            set_budget(self.maps, self.event_rate, self.event_burst, self.event_node_rate)
            st = status_of(self.maps)
        log.info("sandbox programs: %s; %d cgroups bound (generation %d)", actions,
                 len(st.bindings), st.generation)
        self.trail = AuditTrail(self.maps, audit=self.audit, resolver=self.resolver,
                                on_decision=self.on_decision)
        self.trail.refresh()
        trail = self.trail
        self.counters = KernelCounters(self.maps, workload_of=trail.budget_of)
        self.export()
        return st

    def export(self) -> None:
        """The kernel's counts as metrics; the budgets' holds into the audit log."""
        if self.counters is None or self.trail is None:
            return
        self._next_export = time.monotonic() + 1.0
        try:
            bindings = M.read_bindings(self.counters.maps)  # read once for both
            self.counters.export(bindings)
            self.trail.tick(bindings)
        except ManulError as e:
            log.error("sandbox counters: %s", e)

    def status(self) -> Status:
        return status_of(self._maps())

    def _maps(self) -> SandboxMaps:
        if self.maps is None:
            raise SandboxError("the sandbox service is not started")
        return self.maps

    def poll(self, timeout: float = 0.0) -> list[Decision]:
        """Reconcile when due, then hand over the decisions the kernel reported."""
        if time.monotonic() >= self._next:
            self._next = time.monotonic() + self.interval
            try:
                self.reconcile()
            except ManulError as e:  # a kernel or workload error: retried next interval
                log.error("sandbox reconcile: %s", e)
        if self.trail is None:
            return []
        out = self.trail.poll(timeout) if timeout else self.trail.drain()
        if time.monotonic() >= self._next_export:
            self.export()
        return out

    def reconcile(self) -> list[Change]:
        maps = self._maps()
        try:
            policy_set = self.policies.load()
        except ManulError as e:  # unreadable: every generation in force stays
            self.errors = {"policies": str(e)}
            log.error("sandbox: the policy set cannot be read, nothing changes: %s", e)
            return [Change("policies", "failed", str(e))]
        want, problems = assignments(self.registry(), self.resolver, policy_set)
        changes = [Change(t, "failed", why) for t, why in problems.items()]
        self.errors = dict(problems)
        with locked(self.root):
            drop_stale(maps)
            bindings = M.read_bindings(maps)
            meta = M.read_meta(maps)
            wanted_targets = set()
            for a in want:
                wanted_targets.add(a.target)
                try:
                    ch = self._converge(maps, a, bindings, meta)
                except SandboxError as e:
                    self.errors[a.target] = str(e)
                    log.error("sandbox for `%s` not updated (previous generation stays): %s",
                              a.target, e)
                    ch = Change(a.target, "failed", str(e))
                if ch is not None:
                    changes.append(ch)
            # Bindings this service made whose agent or workload is gone.
            wanted = {(a.target, r.id) for a in want for r in a.cgroups}
            stale = [b.cgroup_id for b in M.read_bindings(maps).values()
                     if b.target.startswith("agent:") and (b.target, b.cgroup_id) not in wanted
                     and b.target not in self.errors]
            if stale:
                remove_cgroups(maps, stale)
                changes.append(Change("", "unbound", f"{len(stale)} cgroups"))
        for c in changes:
            if c.what != "failed":
                log.info("sandbox %s: %s %s", c.target, c.what, c.detail)
            if self.audit is not None and (c.what != "failed" or
                                           self._reported.get(c.target) != c.detail):
                self.audit.write("sandbox-change", target=c.target, change=c.what,
                                 detail=c.detail, digest_before=c.digest_before,
                                 digest_after=c.digest_after)
        # a failure is audited once, until it changes or the target recovers
        self._reported = {c.target: c.detail for c in changes if c.what == "failed"}
        return changes

    def _converge(self, maps: SandboxMaps, a: Assignment, bindings: dict[int, M.Binding],
                  meta: dict[int, M.Meta]) -> Change | None:
        src_key = a.inputs.digest(a.principal)
        hosts = self._hosts_of.get(src_key)
        if hosts is None:  # the names these policies need: compile once to learn them
            hosts = compile_all(a.inputs, only={a.principal}).hosts
            if len(self._hosts_of) > 1024:  # old inputs' names: forget them all
                self._hosts_of.clear()
            self._hosts_of[src_key] = hosts
        # Expired names are re-resolved here; new addresses give a new digest.
        inputs = a.inputs.with_hosts(self.hosts.resolve(hosts))
        digest = inputs.digest(f"{a.principal}|{a.mode}")
        mine = {cg: b for cg, b in bindings.items() if b.target == a.target}
        current = {b.sandbox_id for b in mine.values()}
        refs = {r.id: r for r in a.cgroups}
        if len(current) == 1:
            sid = next(iter(current))
            m = meta.get(sid)
            if m is not None and m.digest == digest:
                new = [r for cg, r in refs.items() if cg not in mine]
                if not new:
                    return None  # in force as wanted
                flags = next(iter(mine.values())).flags
                stamp = time.time_ns()
                for r in new:
                    M.bind(maps, M.Binding(r.id, sid, flags, r.level, r.path, a.target, stamp))
                return Change(a.target, "rebound",
                              f"{len(new)} new cgroups on generation {m.generation}",
                              digest, digest)
        sandbox = select(compile_all(inputs, only={a.principal}), a.principal)
        res: Applied = apply_sandbox(maps, sandbox, target=a.target, cgroups=a.cgroups,
                                     mode=a.mode, digest=digest)
        self.errors.pop(a.target, None)
        before = meta[next(iter(current))].digest if len(current) == 1 and \
            next(iter(current)) in meta else None
        return Change(a.target, "applied",
                      f"generation {res.generation} ({res.npaths} path, {res.nnet} network "
                      f"entries) on {len(res.cgroups)} cgroups", before, digest)

    def close(self) -> None:
        """Stop managing; everything pinned stays in force."""
        if self.trail is not None:
            self.trail.drain()
            self.export()
            self.trail.close()
            self.trail = None
        self.counters = None
        if self.maps is not None:
            self.maps.close()
            self.maps = None
