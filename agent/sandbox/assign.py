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
import threading
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
from compiler import CompileError, load_policies, load_schema
from compiler.entities import merge_entities, parse_entities

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


def kernel_entities(registry: Registry, agent: Agent,
                    policies: PolicySet) -> tuple[dict[str, Any], ...]:
    """The registry entities `agent`'s sandbox can read: the agent itself and
    every entity the policies name (from the parsed policies, so spelling
    and escapes do not matter), with what those reach through parents and
    attribute references, followed over the registry merged with the set's
    entities file (whose entities may refer to registry entities). Exact for
    the kernel: a policy reaches an entity only from the principal or a literal.
    The whole registry is checked with the file first, as the decision point
    checks it (a cut could hide two records of one id); a set or registry that
    does not load gets every registry entity, so its compilation reports the
    error."""
    view = _view(registry, policies)
    if view.graph is None:
        return view.base  # as built: the compile refuses it as the decision point does
    todo = [("Agent", agent.meta.key), *view.roots]
    seen: set[tuple[str, str]] = set()
    while todo:
        uid = todo.pop()
        if uid in seen or uid not in view.graph:
            continue
        seen.add(uid)
        e = view.graph[uid]
        todo.extend((p["type"], p["id"]) for p in e.get("parents", ()))
        todo.extend(_refs(e.get("attrs", {})))
    return tuple(view.every[u] for u in sorted(seen & view.every.keys()))


@dataclass(frozen=True)
class _View:
    """What every agent's cut of one (registry, policy set) starts from."""

    base: tuple[dict[str, Any], ...]  # the registry's entities, as built
    every: dict[tuple[str, str], dict[str, Any]]
    graph: dict[tuple[str, str], dict[str, Any]] | None  # None: refused
    roots: tuple[tuple[str, str], ...]  # named by the policies or the file


_views: dict[tuple[int, int], tuple[Registry, PolicySet, _View]] = {}
_views_lock = threading.Lock()


def _view(registry: Registry, policies: PolicySet) -> _View:
    """Built once per (registry snapshot, policy set) pair, not once per agent:
    both are immutable and the agent shares them while they are in force."""
    key = (id(registry), id(policies))
    with _views_lock:
        hit = _views.get(key)
    if hit is not None and hit[0] is registry and hit[1] is policies:
        return hit[2]
    base = tuple(registry_entities(registry))
    every = {_uid(e): e for e in base}
    roots: list[tuple[str, str]] = []
    graph: dict[tuple[str, str], dict[str, Any]] | None
    try:
        merged: list[dict[str, Any]] = list(base)
        if policies.entities is not None:
            merged = merge_entities(base, policies.entities.name, policies.entities.text)
            # a registry record the file gives parents to must be in the cut,
            # or the file would read as declaring a new entity (no attributes)
            roots.extend(_uid(e) for e in json.loads(policies.entities.text or "[]"))
        # the decision point's check of the whole registry with the file
        name, text = ((policies.entities.name, policies.entities.text)
                      if policies.entities is not None else ("registry", "[]"))
        parse_entities(name, text, load_schema(), base)
        for pol in load_policies(policies.sources).policies:
            roots.extend((u.type, u.id) for u in pol.named_entities())
        graph = {_uid(e): e for e in merged}
    except (CompileError, KeyError, TypeError, ValueError):
        graph = None
    view = _View(base, every, graph, tuple(roots))
    with _views_lock:
        _views.clear()  # the previous pair is no longer in force
        _views[key] = (registry, policies, view)
    return view


def _uid(e: dict[str, Any]) -> tuple[str, str]:
    return (e["uid"]["type"], e["uid"]["id"])


def _refs(value: Any) -> list[tuple[str, str]]:
    """Entity references anywhere in an attribute value (records and sets too);
    the entities reader refuses any other form of a reference."""
    if isinstance(value, list):
        return [r for v in value for r in _refs(v)]
    if not isinstance(value, dict):
        return []
    ref = value.get("__entity")
    if isinstance(ref, dict):
        return [(str(ref.get("type")), str(ref.get("id")))]
    return [r for v in value.values() for r in _refs(v)]


def agent_inputs(registry: Registry, agent: Agent, policies: PolicySet) -> PolicyInput:
    """What the compiler gets for `agent`'s sandbox (no host addresses yet)."""
    if not len(policies):
        raise PolicyError(f"Agent `{agent.meta.key}`: the {policies.origin} holds no policies, "
                          "and a sandbox without policies denies everything")
    return PolicyInput(policies.sources, policies.entities, {},
                       kernel_entities(registry, agent, policies))


def agent_topmost(registry: Registry, resolver: WorkloadResolver,
                  cgroups: Iterable[tuple[int, str]] | None = None, *,
                  sandboxed_only: bool = True) -> dict[str, list[tuple[int, str]]]:
    """Agent key -> (id, path) of the topmost cgroups whose workloads are that
    agent (by default only agents with `spec.sandbox`); paths relative to the root."""
    listed = list(cgroups) if cgroups is not None else walk(resolver.root)
    owner: dict[str, tuple[int, str]] = {}  # cgroup path -> (id, agent key)
    for cg_id, path in listed:
        if path == "/":
            continue
        w = resolver.resolve(cg_id)
        if w is None:
            continue
        rec = registry.match_any(w.identities())
        if isinstance(rec, Agent) and (rec.sandbox is not None or not sandboxed_only):
            owner[path.strip("/")] = (cg_id, rec.meta.key)
    out: dict[str, list[tuple[int, str]]] = {}
    for path, (cg_id, key) in sorted(owner.items()):
        parent = path.rpartition("/")[0]
        covered = False
        while parent:
            if parent in owner and owner[parent][1] == key:
                covered = True
                break
            parent = parent.rpartition("/")[0]
        if not covered:
            out.setdefault(key, []).append((cg_id, path))
    return out


def agent_cgroups(registry: Registry, resolver: WorkloadResolver,
                  cgroups: Iterable[tuple[int, str]] | None = None, *,
                  sandboxed_only: bool = True) -> dict[str, list[CgroupRef]]:
    """Agent key -> the topmost cgroups whose workloads are that agent (by default
    only agents with `spec.sandbox`), checked safe to sandbox."""
    out: dict[str, list[CgroupRef]] = {}
    for key, found in agent_topmost(registry, resolver, cgroups,
                                    sandboxed_only=sandboxed_only).items():
        for _, path in found:
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
