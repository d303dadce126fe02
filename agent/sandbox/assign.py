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

The policies are the node's one policy set (`agent.registry.policyset`),
compiled for principal `Agent::"<namespace/name>"` (the decision point's).
The registry's entities (the one builder) come along, cut to what the
agent's sandbox can reach: the agent with its attributes and classes, and
every entity the policies name (`kernel_entities`), so a registry change
elsewhere does not recompile every sandbox. Callers: `service.py`, the CLI
(`--workload`).
"""

from __future__ import annotations

import json
import logging
import re
from collections.abc import Iterable
from dataclasses import dataclass
from typing import Any

from agent.errors import WorkloadError
from agent.registry import Agent, Registry
from agent.registry.entities import registry_entities
from agent.registry.policyset import PolicySet
from agent.sandbox.apply import CgroupRef, PolicyInput
from agent.sandbox.errors import PolicyError, SandboxError, TargetError
from agent.workloads import WorkloadResolver
from agent.workloads.cgtree import walk

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class Assignment:
    """One sandboxed agent and the cgroups its workloads run in now."""

    target: str  # `agent:<namespace/name>`
    agent: Agent
    principal: str
    mode: str
    inputs: PolicyInput
    cgroups: tuple[CgroupRef, ...]


def principal_of(agent: Agent) -> str:
    return f"Agent::{json.dumps(agent.meta.key)}"


def target_of(agent: Agent) -> str:
    return f"agent:{agent.meta.key}"


_LITERAL = re.compile(r'\b([A-Z]\w*)::"((?:[^"\\]|\\.)*)"')


def kernel_entities(registry: Registry, agent: Agent,
                    policies: PolicySet) -> tuple[dict[str, Any], ...]:
    """The registry entities `agent`'s sandbox can read: the agent itself and
    every entity the policies name, with what those reach through parents
    and attribute references. Exact for the kernel: a policy can only reach
    an entity from the principal or from a literal."""
    every = {(e["uid"]["type"], e["uid"]["id"]): e for e in registry_entities(registry)}
    roots: list[tuple[str, str]] = [("Agent", agent.meta.key)]
    for s in policies.sources:
        for m in _LITERAL.finditer(s.text):
            try:
                roots.append((m.group(1), json.loads(f'"{m.group(2)}"')))
            except ValueError:
                continue
    seen: dict[tuple[str, str], dict[str, Any]] = {}
    todo = [r for r in roots if r in every]
    while todo:
        uid = todo.pop()
        if uid in seen:
            continue
        e = seen[uid] = every[uid]
        for p in e["parents"]:
            todo.append((p["type"], p["id"]))
        for v in e["attrs"].values():
            ref = v.get("__entity") if isinstance(v, dict) else None
            if isinstance(ref, dict):
                todo.append((ref["type"], ref["id"]))
        todo = [u for u in todo if u in every]
    return tuple(seen[u] for u in sorted(seen))


def agent_inputs(registry: Registry, agent: Agent, policies: PolicySet) -> PolicyInput:
    """What the compiler gets for `agent`'s sandbox (no host addresses yet)."""
    if not len(policies):
        raise PolicyError(f"Agent `{agent.meta.key}`: the {policies.origin} holds no policies, "
                          "and a sandbox without policies denies everything")
    return PolicyInput(policies.sources, policies.entities, {},
                       kernel_entities(registry, agent, policies))


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


def assignments(registry: Registry, resolver: WorkloadResolver, policies: PolicySet,
                cgroups: Iterable[tuple[int, str]] | None = None) -> tuple[list[Assignment],
                                                                           dict[str, str]]:
    """What should be enforced now, and per agent why it cannot be."""
    found = agent_cgroups(registry, resolver, cgroups)
    out: list[Assignment] = []
    problems: dict[str, str] = {}
    for agent in registry.agents:
        refs = found.get(agent.meta.key)
        if agent.sandbox is None or not refs:
            continue
        try:
            inputs = agent_inputs(registry, agent, policies)
        except SandboxError as e:
            problems[target_of(agent)] = str(e)
            continue
        out.append(Assignment(target_of(agent), agent, principal_of(agent),
                              agent.sandbox.mode.value, inputs, tuple(refs)))
    return out, problems
