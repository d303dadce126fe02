"""What is enforced where, read back from the pinned state alone.

`read_status` needs no running agent and loads nothing: it opens the pinned
maps and links under /sys/fs/bpf/manul/sandbox and reports every bound
cgroup, the sandbox generation deciding for it, the mechanism per action,
and the counters (every decision, counted in the kernel; what the event
budget held back; ring-buffer drops). A restarted agent calls it to adopt what is in force
(the same answer as before the restart: everything it needs is pinned).
Callers: `manul sandbox status`, `service.py`, the tests.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any

from agent.kernel.budget import Budget
from agent.kernel.fs import PIN_ROOT
from agent.kernel.ringbuf import error_counts
from agent.sandbox import maps as M
from agent.sandbox.apply import CgroupRef
from agent.sandbox.counters import Totals, budget_of, read_totals
from agent.sandbox.errors import StateError
from agent.sandbox.kernel import Mechanism, SandboxMaps, mechanisms_from_programs


@dataclass(frozen=True)
class BoundCgroup:
    cgroup_id: int
    path: str
    target: str
    sandbox_id: int
    generation: int
    sandbox: str
    mode: str
    bound_ns: int
    alive: bool

    def to_json(self) -> dict[str, Any]:
        return {"cgroup": "/" + self.path, "cgroup_id": self.cgroup_id, "target": self.target,
                "sandbox": self.sandbox, "sandbox_id": self.sandbox_id,
                "generation": self.generation, "mode": self.mode,
                "bound_ns": self.bound_ns, "alive": self.alive}


@dataclass(frozen=True)
class Status:
    loaded: bool
    programs: tuple[str, ...]
    mechanisms: tuple[Mechanism, ...]
    generation: int  # the last generation applied on this node
    bindings: tuple[BoundCgroup, ...]
    sandboxes: tuple[M.Meta, ...]
    entries: dict[int, tuple[int, int]]  # sandbox id -> (path, network) entries in the maps
    ringbuf_drops: int
    errors: dict[str, int]
    counts: Totals  # every decision, counted in the kernel (counters.py)
    event_budget: Budget  # per bound cgroup and CPU, and the node's; rate 0: none

    @property
    def degraded(self) -> tuple[str, ...]:
        return tuple(m.action for m in self.mechanisms if not m.enforced)

    def to_json(self) -> dict[str, Any]:
        return {
            "loaded": self.loaded,
            "programs": list(self.programs),
            "mechanisms": [{"action": m.action, "mechanism": m.mechanism,
                            "enforced": m.enforced} for m in self.mechanisms],
            "degraded": list(self.degraded),
            "generation": self.generation,
            "bindings": [b.to_json() for b in self.bindings],
            "sandboxes": [
                {"sandbox_id": s.sandbox_id, "generation": s.generation, "name": s.name,
                 "target": s.target, "applied_ns": s.applied_ns,
                 "mode": "enforce" if s.flags & 1 else "audit",
                 "entries": {"paths": s.npaths, "net": s.nnet}, "rules": s.nrules,
                 "digest": s.digest,
                 "in_maps": dict(zip(("paths", "net"),
                                     self.entries.get(s.sandbox_id, (0, 0)), strict=True))}
                for s in self.sandboxes],
            "ringbuf_drops": self.ringbuf_drops,
            "bpf_errors": self.errors,
            "counts": self.counts.to_json(),
            "event_budget": self.event_budget.to_json(),
        }


def _errors(maps: SandboxMaps) -> dict[str, int]:
    return {k: v for k, v in error_counts(maps.errors).items() if v}


def status_of(maps: SandboxMaps) -> Status:
    meta = M.read_meta(maps)
    bindings = []
    for b in sorted(M.read_bindings(maps).values(), key=lambda b: (b.path, b.cgroup_id)):
        m = meta.get(b.sandbox_id)
        bindings.append(BoundCgroup(
            b.cgroup_id, b.path, b.target, b.sandbox_id, m.generation if m else 0,
            m.name if m else "?", "enforce" if b.enforce else "audit", b.bound_ns,
            CgroupRef(b.path, b.cgroup_id, b.level).alive()))
    programs = maps.programs()
    mech = mechanisms_from_programs(programs) or ()
    errors = _errors(maps)
    return Status(
        loaded=bool(programs), programs=tuple(sorted(programs)), mechanisms=mech,
        generation=int(M.read_config(maps).generation), bindings=tuple(bindings),
        sandboxes=tuple(meta[s] for s in sorted(meta)), entries=M.count_entries(maps),
        ringbuf_drops=errors.get("ringbuf_full", 0), errors=errors, counts=read_totals(maps),
        event_budget=budget_of(maps))


def read_status(root: Path = PIN_ROOT) -> Status | None:
    """The pinned state, or None when nothing was ever applied on this node."""
    try:
        with SandboxMaps.open(root) as maps:
            return status_of(maps)
    except StateError:
        return None
