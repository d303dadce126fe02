"""Registry records as Cedar entities, and the graph the evaluator slices.

`EntityGraph.build(registry)` turns every Agent, ServiceIdentity, MCPServer
(with its ToolSets and Tools) and LLMProvider into Cedar entity JSON, using
the id conventions of schema.cedarschema. The graph knows, per entity, its
parents and the entities its attributes point at, so `closure()` can cut
out exactly the entities an evaluation can touch (see evaluate.py).
"""

from __future__ import annotations

import json
import threading
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from typing import Any

from agent.decision.schema import ACTION_GROUPS, Action
from agent.registry import RISK_LEVELS, Agent, LLMProvider, MCPServer, Registry, ServiceIdentity

Uid = tuple[str, str]  # (entity type, id)
EntityJson = dict[str, Any]


def uid_str(uid: Uid) -> str:
    return f"{uid[0]}::{json.dumps(uid[1])}"


def ref(uid: Uid) -> dict[str, Any]:
    """An entity reference inside an attribute value."""
    return {"__entity": {"type": uid[0], "id": uid[1]}}


def risk_score(level: str) -> int:
    """1-based rank of a risk level; an unknown level counts as the riskiest."""
    return RISK_LEVELS.index(level) + 1 if level in RISK_LEVELS else len(RISK_LEVELS)


def _labels(labels: tuple[tuple[str, str], ...]) -> list[str]:
    return [f"{k}={v}" for k, v in labels]


def _entity(uid: Uid, attrs: dict[str, Any], parents: Iterable[Uid] = ()) -> EntityJson:
    return {"uid": {"type": uid[0], "id": uid[1]}, "attrs": attrs,
            "parents": [{"type": p[0], "id": p[1]} for p in parents]}


def agent_uid(a: Agent) -> Uid:
    return ("Agent", a.meta.key)


def caller_uid(c: Agent | ServiceIdentity) -> Uid:
    return (c.kind, c.meta.key)


def tool_uid(server_key: str, tool: str) -> Uid:
    return ("Tool", f"{server_key}/{tool}")


def unregistered_tool(server_key: str, tool: str) -> EntityJson:
    """A tool the server's record does not list: only `in` its server."""
    server: Uid = ("MCPServer", server_key)
    return _entity(tool_uid(server_key, tool),
                   {"name": tool, "server": ref(server), "registered": False}, [server])


@dataclass
class EntityGraph:
    """All entities of one registry snapshot; immutable once built."""

    entities: dict[Uid, EntityJson]
    parents: dict[Uid, tuple[Uid, ...]]
    refs: dict[Uid, tuple[Uid, ...]]
    _ancestors: dict[Uid, frozenset[Uid]] = field(default_factory=dict, repr=False)
    _lock: threading.Lock = field(default_factory=threading.Lock, repr=False)

    @classmethod
    def from_json(cls, items: Iterable[EntityJson]) -> EntityGraph:
        entities: dict[Uid, EntityJson] = {}
        for e in items:
            uid = (e["uid"]["type"], e["uid"]["id"])
            entities[uid] = e
        parents = {u: tuple((p["type"], p["id"]) for p in e["parents"])
                   for u, e in entities.items()}
        refs = {u: tuple(_refs_in(e["attrs"])) for u, e in entities.items()}
        return cls(entities, parents, refs)

    @classmethod
    def build(cls, registry: Registry) -> EntityGraph:
        return cls.from_json(registry_entities(registry))

    def ancestors(self, uid: Uid) -> frozenset[Uid]:
        """Every entity `uid` is transitively `in` (not itself)."""
        found = self._ancestors.get(uid)
        if found is not None:
            return found
        seen: set[Uid] = set()
        stack = list(self.parents.get(uid, ()))
        while stack:
            p = stack.pop()
            if p not in seen:
                seen.add(p)
                stack.extend(self.parents.get(p, ()))
        result = frozenset(seen)
        with self._lock:
            self._ancestors[uid] = result
        return result

    def closure(self, roots: Iterable[Uid], extra: Mapping[Uid, EntityJson] = {}) -> set[Uid]:
        """The entities reachable from `roots` through parents and attribute references.

        # INVARIANT: an evaluation that starts from `roots` (principal,
        # action, resource, and the literals of the policies it runs) can
        # only read entities in this set: attribute access, `in`, `is` and
        # `has` never reach anything else.
        """
        seen: set[Uid] = set()
        stack = list(roots)
        while stack:
            u = stack.pop()
            if u in seen:
                continue
            seen.add(u)
            e = extra.get(u)
            if e is not None:
                stack.extend((p["type"], p["id"]) for p in e["parents"])
                stack.extend(_refs_in(e["attrs"]))
                continue
            stack.extend(self.parents.get(u, ()))
            stack.extend(self.refs.get(u, ()))
        return seen

    def to_json(self, uids: Iterable[Uid], extra: Mapping[Uid, EntityJson] = {}) -> str:
        out = []
        for u in uids:
            e = extra.get(u) or self.entities.get(u)
            if e is not None:
                out.append(e)
        return json.dumps(out)

    def all_json(self) -> str:
        return json.dumps(list(self.entities.values()))


def _refs_in(value: Any) -> Iterable[Uid]:
    if isinstance(value, dict):
        ent = value.get("__entity")
        if isinstance(ent, dict) and len(value) == 1:
            yield (ent["type"], ent["id"])
            return
        for v in value.values():
            yield from _refs_in(v)
    elif isinstance(value, list):
        for v in value:
            yield from _refs_in(v)


def action_entities() -> list[EntityJson]:
    """Actions and their groups: pre-parsed entity handles do not get them from the schema."""
    groups = sorted({g for gs in ACTION_GROUPS.values() for g in gs})
    out = [_entity(("Action", g), {}) for g in groups]
    for a in Action:
        out.append(_entity(("Action", a.value), {},
                           [("Action", g) for g in sorted(ACTION_GROUPS.get(a, ()))]))
    return out


def registry_entities(reg: Registry) -> list[EntityJson]:
    out: list[EntityJson] = action_entities()
    groups: set[str] = set()
    classes: set[str] = set()
    for a in reg.agents:
        groups.update(a.groups)
        classes.update(a.classes)
        parents = [("AgentClass", c) for c in a.classes] + [("Group", g) for g in a.groups]
        out.append(_entity(agent_uid(a), {
            "name": a.meta.name, "namespace": a.meta.namespace, "owner": a.owner,
            "team": a.team, "risk_level": a.risk_level, "risk_score": risk_score(a.risk_level),
            "capabilities": list(a.capabilities), "labels": _labels(a.meta.labels),
            "url": a.url}, parents))
    for s in reg.services:
        groups.update(s.groups)
        out.append(_entity(caller_uid(s), {
            "name": s.meta.name, "namespace": s.meta.namespace, "owner": s.owner,
            "team": s.team, "labels": _labels(s.meta.labels)},
            [("Group", g) for g in s.groups]))
    out.extend(_entity(("Group", g), {}) for g in sorted(groups))
    out.extend(_entity(("AgentClass", c), {}) for c in sorted(classes))
    for m in reg.mcp_servers:
        out.extend(mcp_entities(m))
    for p in reg.providers:
        out.append(provider_entity(p))
    return out


def mcp_entities(m: MCPServer) -> list[EntityJson]:
    key = m.meta.key
    server: Uid = ("MCPServer", key)
    out = [_entity(server, {
        "name": m.meta.name, "namespace": m.meta.namespace, "owner": m.owner,
        "risk_level": m.risk_level, "risk_score": risk_score(m.risk_level), "url": m.url,
        "labels": _labels(m.meta.labels)})]
    in_sets: dict[str, list[Uid]] = {t: [] for t in m.tools}
    for set_name, tools in m.tool_sets:
        set_uid: Uid = ("ToolSet", f"{key}/{set_name}")
        out.append(_entity(set_uid, {"name": set_name, "server": ref(server)}, [server]))
        for t in tools:
            in_sets.setdefault(t, []).append(set_uid)
    for tool, sets in in_sets.items():
        out.append(_entity(tool_uid(key, tool),
                           {"name": tool, "server": ref(server), "registered": True},
                           [*sets, server]))
    return out


def provider_entity(p: LLMProvider) -> EntityJson:
    return _entity(("LLMProvider", p.meta.key), {
        "name": p.meta.name, "gateway": p.gateway, "models": list(p.models),
        "hosts": list(p.hosts)})
