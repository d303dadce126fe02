"""Which cgroups get which Agent's sandbox: the registry meets the workloads.

An `Agent` record with `spec.sandbox: {policies, mode}` is sandboxed
wherever its workloads run. Every cgroup of the node is resolved to a
workload (`WorkloadResolver`: a pod in a cluster, a unit / container /
cgroup on a host) and matched to a registry record by the workload's
identities (`Registry.match_any`: service account or SPIFFE ID in a
cluster, cgroup path or systemd unit on a host): one code path for both
modes. Only the topmost matching cgroup of a subtree is bound: the hooks
look up ancestors, so the cgroups below (containers of a pod, a unit's
children) are covered, including ones created later.

The principal is `Agent::"<namespace/name>"` (the decision point's), a
member of the record's classes; its entity is added to the entities the
policies bring, so class-scoped policies apply. Callers: `service.py`, the
CLI (`--workload`).
"""

from __future__ import annotations

import json
import logging
from collections.abc import Iterable
from dataclasses import dataclass
from typing import Any

from agent.errors import WorkloadError
from agent.registry import Agent, Registry
from agent.sandbox.apply import CgroupRef
from agent.sandbox.errors import PolicyError, SandboxError, TargetError
from agent.workloads import WorkloadResolver
from agent.workloads.cgtree import walk
from compiler import EntitiesSource, PolicySource

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class Assignment:
    """One sandboxed agent and the cgroups its workloads run in now."""

    target: str  # `agent:<namespace/name>`
    agent: Agent
    principal: str
    mode: str
    sources: tuple[PolicySource, ...]
    entities: EntitiesSource
    cgroups: tuple[CgroupRef, ...]


def principal_of(agent: Agent) -> str:
    return f"Agent::{json.dumps(agent.meta.key)}"


def target_of(agent: Agent) -> str:
    return f"agent:{agent.meta.key}"


def policy_sources(registry: Registry, agent: Agent) -> tuple[tuple[PolicySource, ...],
                                                              EntitiesSource]:
    """The Cedar sources an agent's sandbox names, and their entities plus the agent's own."""
    if agent.sandbox is None:
        raise PolicyError(f"Agent `{agent.meta.key}` has no `spec.sandbox`")
    sources: list[PolicySource] = []
    entities: list[Any] = []
    for name in agent.sandbox.policies:
        p = registry.policy(name)
        if p is None:
            raise PolicyError(f"Agent `{agent.meta.key}`: Policy `{name}` is not in the registry")
        sources.append(PolicySource(p.meta.source or p.meta.key, p.cedar))
        if p.entities.strip():
            try:
                more = json.loads(p.entities)
            except ValueError as e:
                raise PolicyError(f"Policy `{name}`: `entities` is not JSON: {e}") from e
            if not isinstance(more, list):
                raise PolicyError(f"Policy `{name}`: `entities` must be a JSON array")
            entities.extend(more)
    return tuple(sources), EntitiesSource(f"agent:{agent.meta.key}",
                                          json.dumps(with_agent(entities, agent)))


def with_agent(entities: list[Any], agent: Agent) -> list[Any]:
    """`entities` plus the agent's entity (a member of its classes) and those classes."""
    uid = {"type": "Agent", "id": agent.meta.key}
    have = {(e["uid"]["type"], e["uid"]["id"]) for e in entities
            if isinstance(e, dict) and isinstance(e.get("uid"), dict)}
    out = list(entities)
    for c in agent.classes:
        if ("AgentClass", c) not in have:
            out.append({"uid": {"type": "AgentClass", "id": c}, "attrs": {}, "parents": []})
    if ("Agent", agent.meta.key) not in have:
        out.append({"uid": uid, "attrs": {},
                    "parents": [{"type": "AgentClass", "id": c} for c in agent.classes]})
    return out


def agent_cgroups(registry: Registry, resolver: WorkloadResolver,
                  cgroups: Iterable[tuple[int, str]] | None = None, *,
                  sandboxed_only: bool = True) -> dict[str, list[CgroupRef]]:
    """Agent key -> the topmost cgroups whose workloads are that agent (by default
    only agents with `spec.sandbox`)."""
    listed = list(cgroups) if cgroups is not None else walk(resolver.root)
    owner: dict[str, str] = {}  # cgroup path -> agent key
    for cg_id, path in listed:
        if path == "/":
            continue
        w = resolver.resolve(cg_id)
        if w is None:
            continue
        rec = registry.match_any(w.identities())
        if isinstance(rec, Agent) and (rec.sandbox is not None or not sandboxed_only):
            owner[path.strip("/")] = rec.meta.key
    out: dict[str, list[CgroupRef]] = {}
    for path, key in sorted(owner.items()):
        parent = path.rpartition("/")[0]
        covered = False
        while parent:
            if owner.get(parent) == key:
                covered = True
                break
            parent = parent.rpartition("/")[0]
        if covered:
            continue
        try:
            out.setdefault(key, []).append(CgroupRef.resolve(path))
        except (TargetError, WorkloadError) as e:
            log.warning("not sandboxing `/%s` for Agent `%s`: %s", path, key, e)
    return out


def assignments(registry: Registry, resolver: WorkloadResolver,
                cgroups: Iterable[tuple[int, str]] | None = None) -> tuple[list[Assignment],
                                                                           dict[str, str]]:
    """What should be enforced now, and per agent why it cannot be (bad policy refs)."""
    found = agent_cgroups(registry, resolver, cgroups)
    out: list[Assignment] = []
    problems: dict[str, str] = {}
    for agent in registry.agents:
        refs = found.get(agent.meta.key)
        if agent.sandbox is None or not refs:
            continue
        try:
            sources, entities = policy_sources(registry, agent)
        except SandboxError as e:
            problems[target_of(agent)] = str(e)
            continue
        out.append(Assignment(target_of(agent), agent, principal_of(agent),
                              agent.sandbox.mode.value, sources, entities, tuple(refs)))
    return out, problems
