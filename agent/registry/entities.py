"""Registry records as Cedar entities: the one builder both layers use.

Every Agent, ServiceIdentity, MCPServer (with its ToolSets and Tools) and
LLMProvider becomes Cedar entity JSON under the id conventions of the one
schema (`compiler/schema.cedarschema.json`): `Agent::"<namespace>/<name>"`
(or `"<name>"`), `Tool::"<server key>/<tool>"` in `ToolSet::"<server
key>/<set>"` and its MCPServer, `LLMProvider::"<name>"`; an agent's classes
and groups are its parents. The decision point slices these entities per
request (`agent/decision/entities.py`); the kernel compiler folds an agent's
attributes into its sandbox (`principal.team == "finance"`). The policy
set's `entities.json` (path and destination sets, class nesting) is merged
over these by `compiler.entities.merge_entities`, for both layers.
"""

from __future__ import annotations

from collections.abc import Iterable
from typing import Any

from agent.registry.model import RISK_LEVELS, Agent, LLMProvider, MCPServer, ServiceIdentity
from agent.registry.registry import Registry

Uid = tuple[str, str]  # (entity type, id)
EntityJson = dict[str, Any]


def risk_score(level: str) -> int:
    """1-based rank of a risk level; an unknown level counts as the riskiest."""
    return RISK_LEVELS.index(level) + 1 if level in RISK_LEVELS else len(RISK_LEVELS)


def ref(uid: Uid) -> dict[str, Any]:
    """An entity reference inside an attribute value."""
    return {"__entity": {"type": uid[0], "id": uid[1]}}


def entity(uid: Uid, attrs: dict[str, Any], parents: Iterable[Uid] = ()) -> EntityJson:
    return {"uid": {"type": uid[0], "id": uid[1]}, "attrs": attrs,
            "parents": [{"type": p[0], "id": p[1]} for p in parents]}


def _labels(labels: tuple[tuple[str, str], ...]) -> list[str]:
    return [f"{k}={v}" for k, v in labels]


def agent_uid(a: Agent) -> Uid:
    return ("Agent", a.meta.key)


def caller_uid(c: Agent | ServiceIdentity) -> Uid:
    return (c.kind, c.meta.key)


def tool_uid(server_key: str, tool: str) -> Uid:
    return ("Tool", f"{server_key}/{tool}")


def unregistered_tool(server_key: str, tool: str) -> EntityJson:
    """A tool the server's record does not list: only `in` its server."""
    server: Uid = ("MCPServer", server_key)
    return entity(tool_uid(server_key, tool),
                  {"name": tool, "server": ref(server), "registered": False}, [server])


def agent_entity(a: Agent) -> EntityJson:
    parents = [("AgentClass", c) for c in a.classes] + [("Group", g) for g in a.groups]
    return entity(agent_uid(a), {
        "name": a.meta.name, "namespace": a.meta.namespace, "owner": a.owner,
        "team": a.team, "risk_level": a.risk_level, "risk_score": risk_score(a.risk_level),
        "capabilities": list(a.capabilities), "labels": _labels(a.meta.labels),
        "url": a.url}, parents)


def registry_entities(reg: Registry) -> list[EntityJson]:
    """Every record of `reg` as Cedar entities (no Action entities)."""
    out: list[EntityJson] = []
    groups: set[str] = set()
    classes: set[str] = set()
    for a in reg.agents:
        groups.update(a.groups)
        classes.update(a.classes)
        out.append(agent_entity(a))
    for s in reg.services:
        groups.update(s.groups)
        out.append(entity(caller_uid(s), {
            "name": s.meta.name, "namespace": s.meta.namespace, "owner": s.owner,
            "team": s.team, "labels": _labels(s.meta.labels)},
            [("Group", g) for g in s.groups]))
    out.extend(entity(("Group", g), {}) for g in sorted(groups))
    out.extend(entity(("AgentClass", c), {}) for c in sorted(classes))
    for m in reg.mcp_servers:
        out.extend(mcp_entities(m))
    for p in reg.providers:
        out.append(provider_entity(p))
    return out


def mcp_entities(m: MCPServer) -> list[EntityJson]:
    key = m.meta.key
    server: Uid = ("MCPServer", key)
    out = [entity(server, {
        "name": m.meta.name, "namespace": m.meta.namespace, "owner": m.owner,
        "risk_level": m.risk_level, "risk_score": risk_score(m.risk_level), "url": m.url,
        "labels": _labels(m.meta.labels)})]
    in_sets: dict[str, list[Uid]] = {t: [] for t in m.tools}
    for set_name, tools in m.tool_sets:
        set_uid: Uid = ("ToolSet", f"{key}/{set_name}")
        out.append(entity(set_uid, {"name": set_name, "server": ref(server)}, [server]))
        for t in tools:
            in_sets.setdefault(t, []).append(set_uid)
    for tool, sets in in_sets.items():
        out.append(entity(tool_uid(key, tool),
                          {"name": tool, "server": ref(server), "registered": True},
                          [*sets, server]))
    return out


def provider_entity(p: LLMProvider) -> EntityJson:
    return entity(("LLMProvider", p.meta.key), {
        "name": p.meta.name, "gateway": p.gateway, "models": list(p.models),
        "hosts": list(p.hosts)})
