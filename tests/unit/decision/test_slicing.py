"""Slicing never changes a decision: sliced evaluation equals the full set's.

Hypothesis generates entity graphs (nested groups, classes, tool sets,
attribute references) and policy sets (every scope form, action groups,
conditions that read attributes of the principal, the resource, entities
named by literal, and that error at run time), then every schema-valid
request is decided twice: on the slice the index picks, and on the whole
policy set with every entity. Decision, determining policies and errors
must be identical.
"""

from __future__ import annotations

import json
from typing import Any

from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from agent.decision.entities import EntityGraph, action_entities
from agent.decision.evaluate import CedarRequest, Evaluator
from agent.decision.policies import parse_policies
from agent.decision.schema import Action

AGENTS = [f"a{i}" for i in range(4)]
GROUPS = [f"g{i}" for i in range(3)]
CLASSES = ["c0", "c1"]
SERVERS = ["ns/s0", "ns/s1"]
TOOLS = [f"{s}/t{i}" for s in SERVERS for i in range(3)]
SETS = [f"{s}/set{i}" for s in SERVERS for i in range(2)]
PROVIDERS = ["p0", "p1"]
CTX_BASE = {"time": {"__extn": {"fn": "datetime", "arg": "2026-01-01T12:00:00Z"}},
            "authn": "spiffe", "on_behalf_of": "a0", "chain": ["a0"], "quarantined": False,
            "anomaly_level": 0}


def _ent(t: str, i: str, attrs: dict[str, Any], parents: list[tuple[str, str]]) -> dict[str, Any]:
    return {"uid": {"type": t, "id": i}, "attrs": attrs,
            "parents": [{"type": pt, "id": pi} for pt, pi in parents]}


@st.composite
def graphs(draw: st.DrawFn) -> list[dict[str, Any]]:
    out = action_entities()
    for i, g in enumerate(GROUPS):
        parents = [("Group", p) for p in GROUPS[:i] if draw(st.booleans())]
        out.append(_ent("Group", g, {}, parents))
    out += [_ent("AgentClass", c, {}, []) for c in CLASSES]
    for a in AGENTS:
        parents = ([("Group", g) for g in GROUPS if draw(st.booleans())]
                   + [("AgentClass", c) for c in CLASSES if draw(st.booleans())])
        out.append(_ent("Agent", a, {
            "name": a, "namespace": "ns", "owner": "o", "team": draw(st.sampled_from("xy")),
            "risk_level": "low", "risk_score": draw(st.integers(1, 4)), "capabilities": [],
            "labels": [], "url": ""}, parents))
    out.append(_ent("ServiceIdentity", "svc", {"name": "svc", "namespace": "ns", "owner": "o",
                                               "team": "x", "labels": []},
                    [("Group", g) for g in GROUPS if draw(st.booleans())]))
    for s in SERVERS:
        out.append(_ent("MCPServer", s, {
            "name": s, "namespace": draw(st.sampled_from(["finance", "ops"])), "owner": "o",
            "risk_level": "high", "risk_score": draw(st.integers(1, 4)), "url": "",
            "labels": []}, []))
    server = {"__entity": {"type": "MCPServer", "id": ""}}
    for ts in SETS:
        srv = ts.rsplit("/", 1)[0]
        out.append(_ent("ToolSet", ts, {"name": ts, "server": {
            "__entity": {"type": "MCPServer", "id": srv}}}, [("MCPServer", srv)]))
    for t in TOOLS:
        srv = t.rsplit("/", 1)[0]
        sets = [("ToolSet", x) for x in SETS if x.startswith(srv + "/") and draw(st.booleans())]
        ref = dict(server, __entity={"type": "MCPServer", "id": srv})
        out.append(_ent("Tool", t, {"name": t, "server": ref, "registered": draw(st.booleans())},
                        [*sets, ("MCPServer", srv)]))
    for p in PROVIDERS:
        out.append(_ent("LLMProvider", p, {
            "name": p, "gateway": False, "models": draw(st.sampled_from([[], ["m1"]])),
            "hosts": []}, []))
    return out


def _uid(t: str, i: str) -> str:
    return f'{t}::{json.dumps(i)}'


PRINCIPAL_SCOPES = st.sampled_from(
    ["principal"] + [f"principal == {_uid('Agent', a)}" for a in AGENTS[:2]]
    + [f"principal in {_uid('Group', g)}" for g in GROUPS]
    + [f"principal in {_uid('AgentClass', c)}" for c in CLASSES]
    + ["principal is Agent", f"principal is Agent in {_uid('Group', 'g1')}",
       "principal is ServiceIdentity", f"principal == {_uid('ServiceIdentity', 'svc')}"])
ACTION_SCOPES = st.sampled_from(
    ["action"] + [f'action == Action::"{a.value}"' for a in Action]
    + ['action in Action::"callAgent"',
       'action in [Action::"invokeTool", Action::"listTools"]'])
RESOURCE_SCOPES = st.sampled_from(
    ["resource"] + [f"resource == {_uid('Tool', t)}" for t in TOOLS[:2]]
    + [f"resource in {_uid('ToolSet', s)}" for s in SETS]
    + [f"resource in {_uid('MCPServer', s)}" for s in SERVERS]
    + ["resource is Tool", "resource is Agent", f"resource is Tool in {_uid('MCPServer', 'ns/s1')}",
       f"resource == {_uid('Agent', 'a2')}", f"resource == {_uid('LLMProvider', 'p1')}"])
CONDITIONS = st.sampled_from([
    "true", "principal.risk_score <= 2", "principal.team == \"x\"",
    "context.delegation_depth < 2", "resource.server.namespace == \"finance\"",
    "resource.registered", "resource.risk_score > principal.risk_score",
    f"{_uid('Agent', 'a3')}.risk_score > 2", f"{_uid('Agent', 'a1')} in {_uid('Group', 'g0')}",
    f"principal in {_uid('Group', 'g2')}", f"resource in {_uid('ToolSet', SETS[1])}",
    f"resource.server in {_uid('MCPServer', 'ns/s0')}", "context.model == \"m1\"",
    "resource.models.contains(context.model)", "context.tool like \"t*\"",
    f"{_uid('Tool', TOOLS[4])}.server.risk_score >= 3", "context.chain.contains(\"a0\")",
])


@st.composite
def policies(draw: st.DrawFn) -> str:
    out = []
    for i in range(draw(st.integers(1, 12))):
        effect = draw(st.sampled_from(["permit", "permit", "forbid"]))
        cond = draw(CONDITIONS)
        clause = draw(st.sampled_from(["when", "unless"]))
        out.append(f'@id("p{i}") {effect}({draw(PRINCIPAL_SCOPES)}, {draw(ACTION_SCOPES)}, '
                   f"{draw(RESOURCE_SCOPES)}) {clause} {{ {cond} }};")
    return "\n".join(out)


def requests() -> list[CedarRequest]:
    mcp = {**CTX_BASE, "delegation_depth": 1, "method": "m", "tool": "t1", "uri": "",
           "prompt": ""}
    a2a = {**CTX_BASE, "delegation_depth": 2, "method": "message/send"}
    llm = {**CTX_BASE, "delegation_depth": 0, "model": "m1", "api": "openai.chat",
           "stream": False, "max_tokens": 0}
    out = []
    for p in [("Agent", a) for a in AGENTS] + [("ServiceIdentity", "svc")]:
        for t in TOOLS:
            out.append(CedarRequest(p, "invokeTool", ("Tool", t), mcp))
        for s in SERVERS:
            out.append(CedarRequest(p, "listTools", ("MCPServer", s), mcp))
        out.append(CedarRequest(p, "sendMessage", ("Agent", "a2"), a2a))
        out.append(CedarRequest(p, "manageTask", ("Agent", "a0"), a2a))
        for pr in PROVIDERS:
            out.append(CedarRequest(p, "callLLM", ("LLMProvider", pr), llm))
    return out


REQUESTS = requests()


@settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(graphs(), policies())
def test_sliced_decisions_equal_full_decisions(entities: list[dict[str, Any]],
                                               text: str) -> None:
    ev = Evaluator(parse_policies([("gen.cedar", text)], validate=False),
                   EntityGraph.from_json(entities))
    for req in REQUESTS:
        full, sliced = ev.decide_full(req), ev.decide(req)
        assert (sliced.allowed, set(sliced.policies)) == (full.allowed, set(full.policies)), (
            req, text)
        assert len(sliced.errors) == len(full.errors), (req, text, sliced.errors, full.errors)
        assert sliced.evaluated <= full.evaluated


def test_slices_hold_only_the_policies_whose_scope_matches() -> None:
    # policy i: agent a{i % 4} on tool set SETS[(i // 4) % 4]; a0 calling a tool of
    # ns/s0/set0 can only meet i = 0, 16, 32, ...
    text = "\n".join(
        f'@id("p{i}") permit(principal == Agent::"a{i % 4}", action == Action::"invokeTool", '
        f'resource in ToolSet::"{SETS[(i // 4) % 4]}") when {{ context.delegation_depth < 3 }};'
        for i in range(400))
    ev = Evaluator(parse_policies([("gen.cedar", text)]), EntityGraph.from_json(_fixed_graph()))
    req = REQUESTS[0]  # a0 -> invokeTool -> ns/s0/t0 (in ns/s0/set0)
    assert ev.slice_ids(req) == tuple(f"p{i}" for i in range(0, 400, 16))
    sliced, full = ev.decide(req), ev.decide_full(req)
    assert sliced.allowed and full.allowed and sliced.policies == full.policies
    assert (sliced.evaluated, full.evaluated) == (25, 400)


def _fixed_graph() -> list[dict[str, Any]]:
    out = action_entities()
    out += [_ent("Group", g, {}, []) for g in GROUPS]
    for a in AGENTS:
        out.append(_ent("Agent", a, {"name": a, "namespace": "", "owner": "", "team": "",
                                     "risk_level": "low", "risk_score": 1,
                                     "capabilities": [], "labels": [], "url": ""}, []))
    for s in SERVERS:
        out.append(_ent("MCPServer", s, {"name": s, "namespace": "", "owner": "",
                                         "risk_level": "low", "risk_score": 1, "url": "",
                                         "labels": []}, []))
    for ts in SETS:
        srv = ts.rsplit("/", 1)[0]
        out.append(_ent("ToolSet", ts, {"name": ts, "server": {
            "__entity": {"type": "MCPServer", "id": srv}}}, [("MCPServer", srv)]))
    for t in TOOLS:
        srv = t.rsplit("/", 1)[0]
        out.append(_ent("Tool", t, {"name": t, "server": {"__entity": {
            "type": "MCPServer", "id": srv}}, "registered": True},
            [("ToolSet", f"{srv}/set0"), ("MCPServer", srv)]))
    return out
