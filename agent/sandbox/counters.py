"""Exact sandbox counts from the kernel, and each workload's kernel event budget.

bpf/sandbox.bpf.c counts every deny and would-deny before it reserves the
event (manul.h, "sandbox_counts"): `sandbox_totals` by (action, verdict,
mode), exact whatever happens to the event; `sandbox_counts` per (bound
cgroup, generation, rule, action, verdict, mode, mechanism), exact until the
table is full (then `untracked`). Events themselves are sent up only within
the bound cgroup's budget and the node's (`sandbox_budget_config`,
`agent.kernel.budget`, `bpf/lib/ratelimit.h`); what the budgets held back is
counted in the totals (`held`) and in each cgroup's bucket.

`KernelCounters.export()` turns them into Prometheus counters (deltas since
the last export: the kernel's counts survive an agent restart, so the first
export carries everything counted while no agent ran):

    manul_sandbox_decisions_total{action,verdict,mode}        sandbox_totals
    manul_sandbox_rule_decisions_total{sandbox,workload,...}  sandbox_counts
    manul_sandbox_events_held_total, manul_sandbox_untracked_total

and forgets (once exported) the counts of cgroups no longer bound and of
generations retired, so the table holds only what is in force; the series of
a workload gone are dropped from /metrics `FORGET_AFTER` seconds later.
Callers: `service.py`, `manul sandbox status`.
"""

from __future__ import annotations

import contextlib
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass

from prometheus_client import Counter

from agent.errors import KernelError
from agent.kernel import abi
from agent.kernel.budget import Budget, read_budget, write_budget
from agent.sandbox import maps as M
from agent.sandbox.events import ACTIONS
from agent.sandbox.kernel import SandboxMaps
from agent.telemetry import metrics

DEFAULT_EVENT_RATE = 50  # events a second per bound cgroup and CPU
DEFAULT_EVENT_BURST = 100
DEFAULT_NODE_RATE = 5000  # events a second the node's sandboxes send up in all
FORGET_AFTER = 600.0  # seconds a gone workload's series stay on /metrics


@dataclass(frozen=True, slots=True)
class CountKey:
    bound_cgroup_id: int
    generation: int
    sandbox_id: int
    rule_id: int
    action: str
    verdict: str  # deny | would-deny
    mode: str  # enforce | audit
    mechanism: int


@dataclass(frozen=True, slots=True)
class Totals:
    decisions: dict[tuple[str, str, str], int]  # (action, verdict, mode) -> count
    held: int  # not sent: a workload's event budget was spent
    untracked: int  # not in sandbox_counts: it was full

    @property
    def total(self) -> int:
        return sum(self.decisions.values())

    def to_json(self) -> dict[str, object]:
        return {"decisions": {f"{a}/{v}/{m}": n for (a, v, m), n in
                              sorted(self.decisions.items())},
                "held": self.held, "untracked": self.untracked}


def _action(i: int) -> str:
    return ACTIONS[i] if i < len(ACTIONS) else f"action-{i}"


def _verdict(v: int) -> str:
    return "deny" if v == abi.SBX_DENIED else "would-deny"


def read_totals(maps: SandboxMaps) -> Totals:
    """`sandbox_totals`, summed over the CPUs."""
    raw = maps.totals.lookup(0) or []
    out: dict[tuple[str, str, str], int] = {}
    held = untracked = 0
    for per_cpu in raw:
        t = abi.manul_sbx_totals.from_buffer_copy(per_cpu)
        held += t.held
        untracked += t.untracked
        for slot, n in enumerate(t.decisions):
            if n:
                action, rest = divmod(slot, 4)
                verdict = "deny" if rest < 2 else "would-deny"
                key = (_action(action), verdict, "enforce" if rest & 1 else "audit")
                out[key] = out.get(key, 0) + n
    return Totals(out, held, untracked)


def read_counts(maps: SandboxMaps) -> dict[CountKey, int]:
    """`sandbox_counts`, summed over the CPUs."""
    out: dict[CountKey, int] = {}
    for kb, per_cpu in maps.counts.items():
        k = abi.manul_sbx_count_key.from_buffer_copy(kb)
        n = sum(int.from_bytes(v[:8], "little") for v in per_cpu)
        out[CountKey(k.bound_cgroup_id, k.generation, k.sandbox_id, k.rule_id,
                     _action(k.action), _verdict(k.verdict),
                     "enforce" if k.enforce else "audit", k.mechanism)] = n
    return out


def _count_key(k: CountKey) -> bytes:
    c = abi.manul_sbx_count_key(
        bound_cgroup_id=k.bound_cgroup_id, generation=k.generation, sandbox_id=k.sandbox_id,
        rule_id=k.rule_id, action=ACTIONS.index(k.action),
        verdict=abi.SBX_DENIED if k.verdict == "deny" else abi.SBX_WOULD_DENY,
        enforce=int(k.mode == "enforce"), mechanism=k.mechanism)
    return bytes(c)


def set_budget(maps: SandboxMaps, rate: int, burst: int,
               node_rate: int = DEFAULT_NODE_RATE) -> None:
    """Each bound cgroup may send `rate` events a second per CPU, `burst` at once,
    and the node `node_rate` in all (0: no limit). Counts stay exact either way."""
    write_budget(maps.budget_config, Budget(rate, burst, node_rate))


def budget_of(maps: SandboxMaps) -> Budget:
    return read_budget(maps.budget_config)


class KernelCounters:
    """Exports the kernel's counts as metrics; see the module docstring."""

    def __init__(self, maps: SandboxMaps,
                 workload_of: Callable[[int], str] = lambda cg: f"cgroup:{cg}",
                 clock: Callable[[], float] = time.monotonic) -> None:
        self.maps = maps
        self.workload_of = workload_of
        self.clock = clock
        self._seen: dict[object, int] = {}  # what was exported, per kernel key
        self._labels: dict[CountKey, tuple[str, ...]] = {}  # per kernel key
        self._live: dict[tuple[str, ...], set[CountKey]] = {}  # series -> its keys
        self._drop: dict[tuple[str, ...], float] = {}  # series -> when to remove it
        self._rules: dict[tuple[int, int], str] = {}
        self._names: dict[int, str] = {}  # generation -> sandbox name
        self.totals = Totals({}, 0, 0)

    def export(self, bindings: Mapping[int, M.Binding] | None = None) -> Totals:
        """`bindings`: what is bound now, when the caller has read it already."""
        t = read_totals(self.maps)
        for (action, verdict, mode), n in t.decisions.items():
            self._inc(("t", action, verdict, mode), n,
                      metrics.SANDBOX_DECISIONS.labels(action, verdict, mode))
        self._inc("held", t.held, metrics.SANDBOX_EVENTS_HELD)
        self._inc("untracked", t.untracked, metrics.SANDBOX_UNTRACKED)
        self.totals = t
        counts = read_counts(self.maps)
        bound = set(M.read_bindings(self.maps) if bindings is None else bindings)
        meta = M.read_meta(self.maps)
        live = {m.generation for m in meta.values()}
        for m in meta.values():
            self._names.setdefault(m.generation, m.name)
        gone = []
        for k, n in counts.items():
            labels = self._labels.get(k)
            if labels is None:
                labels = self._labels[k] = (
                    self._names.get(k.generation, "?"), self.workload_of(k.bound_cgroup_id),
                    k.action, k.verdict, self._policies(k))
                self._live.setdefault(labels, set()).add(k)
                self._drop.pop(labels, None)
            self._inc(k, n, metrics.SANDBOX_RULE_DECISIONS.labels(*labels))
            if k.bound_cgroup_id not in bound or k.generation not in live:
                gone.append(k)
        for k in gone:  # exported: the kernel forgets it, and so do we
            try:
                self.maps.counts.delete(_count_key(k))
            except KernelError:
                continue
            self._forget(k)
        self._sweep(live)
        return t

    def _forget(self, k: CountKey) -> None:
        self._seen.pop(k, None)
        labels = self._labels.pop(k)
        keys = self._live.get(labels, set())
        keys.discard(k)
        if not keys:  # the series stays a while, for the last scrape
            self._live.pop(labels, None)
            self._drop[labels] = self.clock() + FORGET_AFTER

    def _sweep(self, live: set[int]) -> None:
        now = self.clock()
        for labels in [x for x, when in self._drop.items() if when <= now]:
            del self._drop[labels]
            with contextlib.suppress(KeyError):
                metrics.SANDBOX_RULE_DECISIONS.remove(*labels)
        referenced = {k.generation for k in self._labels} | live
        for g in [g for g in self._names if g not in referenced]:
            del self._names[g]
        for rk in [rk for rk in self._rules if rk[0] not in referenced]:
            del self._rules[rk]

    def _inc(self, key: object, value: int, counter: Counter) -> None:
        last = self._seen.get(key, 0)
        if value > last:
            counter.inc(value - last)
        self._seen[key] = value

    def _policies(self, k: CountKey) -> str:
        if k.action == "confinement":
            return "manul:confinement"
        if not k.rule_id:
            return "default-deny"
        key = (k.generation, k.rule_id)
        if key not in self._rules:
            for rk, (_, ids) in M.read_rules(self.maps, k.generation).items():
                self._rules[rk] = ",".join(ids)
            # a retired generation's rules are gone: remember the miss too
            self._rules.setdefault(key, f"rule {k.rule_id} (retired)")
        return self._rules[key]
