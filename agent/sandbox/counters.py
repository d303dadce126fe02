"""Exact sandbox counts from the kernel, and each workload's kernel event budget.

bpf/sandbox.bpf.c counts every deny and would-deny before it reserves the
event (manul.h, "sandbox_counts"): `sandbox_totals` by (action, verdict,
mode), exact whatever happens to the event; `sandbox_counts` per (bound
cgroup, generation, rule, action, verdict, mode, mechanism), exact until the
table is full (then `untracked`). Events themselves are sent up only within
the bound cgroup's budget (`sandbox_config.event_rate`/`event_burst`, per
CPU, `bpf/lib/ratelimit.h`); what the budget held back is counted in the
totals (`held`) and in each cgroup's bucket.

`KernelCounters.export()` turns them into Prometheus counters (deltas since
the last export: the kernel's counts survive an agent restart, so the first
export carries everything counted while no agent ran):

    manul_sandbox_decisions_total{action,verdict,mode}        sandbox_totals
    manul_sandbox_rule_decisions_total{sandbox,workload,...}  sandbox_counts
    manul_sandbox_events_held_total, manul_sandbox_untracked_total

and forgets the counts of cgroups no longer bound (exported first), so the
table holds only what is bound. Callers: `service.py`, `manul sandbox status`.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

from prometheus_client import Counter

from agent.errors import ConfigError, KernelError
from agent.kernel import abi
from agent.sandbox import maps as M
from agent.sandbox.events import ACTIONS
from agent.sandbox.kernel import SandboxMaps
from agent.telemetry import metrics

DEFAULT_EVENT_RATE = 50  # events a second per bound cgroup and CPU
DEFAULT_EVENT_BURST = 100
RATE_MAX = 1_000_000  # bpf/lib/ratelimit.h's MANUL_RATE_MAX


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


def held_by(maps: SandboxMaps, bound_cgroup_id: int) -> int:
    """Events of `bound_cgroup_id` its budget held back so far (all CPUs)."""
    raw = maps.budget.lookup(bound_cgroup_id.to_bytes(8, "little"))
    if raw is None:
        return 0
    return sum(abi.manul_rate_bucket.from_buffer_copy(v).held for v in raw)


def set_budget(maps: SandboxMaps, rate: int, burst: int) -> None:
    """Each bound cgroup may send `rate` events a second per CPU, `burst` at once
    (0: no limit). Counts stay exact either way."""
    if not 0 <= rate <= RATE_MAX or not 1 <= burst <= RATE_MAX:
        raise ConfigError(f"an event budget needs 0 <= rate <= {RATE_MAX} and "
                         f"1 <= burst <= {RATE_MAX}")
    cfg = M.read_config(maps)
    cfg.event_rate, cfg.event_burst = rate, burst
    M.write_config(maps, cfg)


class KernelCounters:
    """Exports the kernel's counts as metrics; see the module docstring."""

    def __init__(self, maps: SandboxMaps,
                 workload_of: Callable[[int], str] = lambda cg: f"cgroup:{cg}") -> None:
        self.maps = maps
        self.workload_of = workload_of
        self._seen: dict[object, int] = {}  # what was exported, per series
        self._rules: dict[tuple[int, int], str] = {}
        self._names: dict[int, str] = {}  # generation -> sandbox name
        self.totals = Totals({}, 0, 0)

    def export(self) -> Totals:
        t = read_totals(self.maps)
        for (action, verdict, mode), n in t.decisions.items():
            self._inc(("t", action, verdict, mode), n,
                      metrics.SANDBOX_DECISIONS.labels(action, verdict, mode))
        self._inc("held", t.held, metrics.SANDBOX_EVENTS_HELD)
        self._inc("untracked", t.untracked, metrics.SANDBOX_UNTRACKED)
        self.totals = t
        counts = read_counts(self.maps)
        bound = set(M.read_bindings(self.maps))
        gone = []
        for k, n in counts.items():
            self._inc(k, n, metrics.SANDBOX_RULE_DECISIONS.labels(
                self._sandbox(k.generation), self.workload_of(k.bound_cgroup_id),
                k.action, k.verdict, self._policies(k)))
            if k.bound_cgroup_id not in bound:
                gone.append(k)
        for k in gone:  # exported: the kernel forgets it, and so do we
            try:
                self.maps.counts.delete(_count_key(k))
            except KernelError:
                continue
            self._seen.pop(k, None)
        return t

    def _inc(self, key: object, value: int, counter: Counter) -> None:
        last = self._seen.get(key, 0)
        if value > last:
            counter.inc(value - last)
        self._seen[key] = value

    def _sandbox(self, generation: int) -> str:
        if generation not in self._names:
            for m in M.read_meta(self.maps).values():
                self._names[m.generation] = m.name
        return self._names.get(generation, "?")

    def _policies(self, k: CountKey) -> str:
        if k.action == "confinement":
            return "manul:confinement"
        if not k.rule_id:
            return "default-deny"
        key = (k.generation, k.rule_id)
        if key not in self._rules:
            for rk, (_, ids) in M.read_rules(self.maps, k.generation).items():
                self._rules[rk] = ",".join(ids)
        return self._rules.get(key, f"rule {k.rule_id} (retired)")
