"""The gateway half of "compiled means equivalent", on the one policy set.

The decision point decides on a slice of the index the one loader built (the
policies whose scope holds, the entities they can reach). For the shipped
folder (kernel and gateway policies together, with the example registry)
and for the compiler corpus' sets that have gateway policies (principal
attributes included), hypothesis draws gateway requests over every caller,
gateway action and resource, with varied node facts and request fields; the
sliced decision must equal cedarpy's on the whole set, every entity and the
one schema: the decision and the deciding policies' ids (`@id`, else
`<file>:<line>`, as the compiler names them).
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import cedarpy
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from agent.decision.entities import action_entities, unregistered_tool
from agent.decision.evaluate import CedarRequest, Evaluator
from agent.decision.policies import parse_policies
from agent.decision.sources import Snapshot, entity_list
from agent.registry import load_directory
from agent.registry.policyset import PolicyFolder
from compiler import PolicySource, load_schema
from compiler.parse import parse_sources

ROOT = Path(__file__).parents[3]
EXAMPLES = ROOT / "examples" / "policies"
CORPUS = ROOT / "tests" / "unit" / "compiler" / "corpus"
SCHEMA = load_schema()
REGISTRY = load_directory(ROOT / "examples" / "registry")
MODELS = ["gpt-4o-mini", "gpt-4o", "llama-3.1-8b-instruct", "claude-3-5-haiku", ""]


@dataclass
class Case:
    name: str
    sources: list[PolicySource]
    entities: str  # the set's entities file, merged over the registry's entities


def _corpus(name: str, extra: list[dict[str, Any]]) -> Case:
    return Case(name, [PolicySource(f"{name}.cedar", (CORPUS / f"{name}.cedar").read_text())],
                json.dumps(extra))


def _agent(ident: str, team: str, risk: str, *parents: tuple[str, str]) -> dict[str, Any]:
    levels = ["low", "medium", "high", "critical"]
    return {"uid": {"type": "Agent", "id": ident},
            "attrs": {"name": ident, "namespace": "", "owner": "", "team": team,
                      "risk_level": risk, "risk_score": levels.index(risk) + 1,
                      "capabilities": ["deploy"] if team == "platform" else [], "labels": [],
                      "url": ""},
            "parents": [{"type": t, "id": i} for t, i in parents]}


PEOPLE = [_agent("fin-lo", "finance", "low", ("AgentClass", "data-analyst")),
          _agent("fin-hi", "finance", "critical", ("AgentClass", "data-analyst")),
          _agent("ops", "platform", "high", ("AgentClass", "coder")),
          _agent("sam", "", "medium"),
          {"uid": {"type": "AgentClass", "id": "all-agents"}, "attrs": {}, "parents": []}]


def _cases() -> list[Case]:
    folder = PolicyFolder(EXAMPLES).load()
    assert folder.entities is not None
    return [
        Case("examples", list(folder.sources), folder.entities.text),
        _corpus("gateway-and-partial", PEOPLE),
        _corpus("principal-attributes", PEOPLE),
    ]


class Reference:
    """cedarpy on the whole set: every policy, every entity, the one schema."""

    def __init__(self, case: Case) -> None:
        parsed = parse_sources(case.sources)
        self.ids = {p.cedar_id: p.pid for p in parsed.policies}
        self.policies = cedarpy.PolicySet.from_str(parsed.text)
        self.entities = [*action_entities(),
                         *entity_list(REGISTRY, (("e.json", case.entities),))]

    def decide(self, req: CedarRequest) -> tuple[bool, frozenset[str]]:
        ents = self.entities + [e for e in req.extra.values()]
        r = cedarpy.is_authorized(req.as_cedar(), self.policies, json.dumps(ents),
                                  schema=SCHEMA.cedar)
        assert r.decision.value != "NoDecision", r.diagnostics.errors
        return r.allowed, frozenset(self.ids.get(x, x) for x in r.diagnostics.reasons)


def _requests(snap: Snapshot) -> st.SearchStrategy[CedarRequest]:
    g = snap.graph.entities
    by_type: dict[str, list[str]] = {}
    for t, i in g:
        by_type.setdefault(t, []).append(i)
    callers = [("Agent", a) for a in by_type.get("Agent", [])] + [
        ("ServiceIdentity", s) for s in by_type.get("ServiceIdentity", [])]
    servers = by_type.get("MCPServer", [])

    @st.composite
    def build(draw: st.DrawFn) -> CedarRequest:
        action = draw(st.one_of(st.just("invokeTool"),  # the richest policies: weighted
                                st.sampled_from(sorted(SCHEMA.gateway_actions))))
        info = SCHEMA.actions[action]
        rtype = next(iter(info.resources))
        extra: dict[Any, Any] = {}
        if rtype == "Tool" and draw(st.booleans()) and servers:
            server = draw(st.sampled_from(servers))
            tool = unregistered_tool(server, draw(st.sampled_from(["drop_tables", "x"])))
            uid = (tool["uid"]["type"], tool["uid"]["id"])
            extra = {uid: tool}
            resource = uid
        else:
            resource = (rtype, draw(st.sampled_from(by_type.get(rtype, ["nobody"]))))
        depth = draw(st.integers(0, 4))
        context: dict[str, Any] = {
            "time": {"__extn": {"fn": "datetime", "arg": "2026-12-03T10:00:00Z"}},
            "authn": draw(st.sampled_from(["spiffe", "oidc", "jwtMetadata"])),
            "on_behalf_of": "", "chain": [], "delegation_depth": depth,
            "quarantined": draw(st.booleans()), "anomaly_level": draw(st.integers(0, 3))}
        names = {c.name for c in info.context}
        for k, v in (("method", draw(st.sampled_from(["tools/call", "message/send", ""]))),
                     ("tool", resource[1].rsplit("/", 1)[-1]), ("uri", ""), ("prompt", ""),
                     ("model", draw(st.sampled_from(MODELS))),
                     ("api", "openai.chat"), ("stream", draw(st.booleans())),
                     ("max_tokens", draw(st.integers(0, 4096)))):
            if k in names:
                context[k] = v
        assert set(context) == names, (action, set(context) ^ names)
        return CedarRequest(draw(st.sampled_from(callers)), action, resource, context, extra)

    return build()


@pytest.mark.parametrize("case", _cases(), ids=lambda c: c.name)
def test_gateway_slices_equal_cedar_on_the_one_set(case: Case) -> None:
    from agent.decision.policies import parse_policies

    index = parse_policies([(s.name, s.text) for s in case.sources])
    snap = Snapshot.build(REGISTRY, index, entities=(("e.json", case.entities),))
    evaluator = snap.evaluator
    assert isinstance(evaluator, Evaluator)
    ref = Reference(case)
    seen = {"allow": 0, "deny": 0, "policies": set()}

    @settings(max_examples=300, deadline=None, database=None,
              suppress_health_check=[HealthCheck.too_slow])
    @given(_requests(snap))
    def check(req: CedarRequest) -> None:
        got = evaluator.decide(req)
        want = ref.decide(req)
        assert (got.allowed, frozenset(got.policies)) == want, (req, got)
        seen["allow" if got.allowed else "deny"] += 1
        seen["policies"] |= set(got.policies)  # type: ignore[operator]

    check()
    assert seen["allow"] and seen["deny"], seen  # both outcomes reached
    # the node fact, and a policy on the principal's attributes, decided something
    want = {"examples": {"quarantined-callers", "payments-need-low-risk"},
            "principal-attributes": {"quarantine", "team-tools"}}.get(case.name, set())
    assert want <= seen["policies"], seen


def test_a_tool_the_entities_file_declares_is_the_files() -> None:
    """A tool the registry does not list arrives with a stand-in entity (its
    server as only parent); when the set's entities file declares that tool,
    the file's entity, with its tool sets, is the one Cedar sees."""
    server = "finance/finance-tools"
    danger = {"uid": {"type": "ToolSet", "id": f"{server}/danger"},
              "attrs": {"name": "danger",
                        "server": {"__entity": {"type": "MCPServer", "id": server}}},
              "parents": [{"type": "MCPServer", "id": server}]}
    secret = {"uid": {"type": "Tool", "id": f"{server}/secret"},
              "attrs": {"name": "secret",
                        "server": {"__entity": {"type": "MCPServer", "id": server}},
                        "registered": True},
              "parents": [{"type": "ToolSet", "id": f"{server}/danger"},
                          {"type": "MCPServer", "id": server}]}
    text = ('@id("all") permit (principal, action, resource);\n'
            '@id("f") forbid (principal, action == Action::"invokeTool", '
            f'resource in ToolSet::"{server}/danger");\n')
    uid = ("Tool", f"{server}/secret")
    ctx = {"time": {"__extn": {"fn": "datetime", "arg": "2026-12-03T10:00:00Z"}},
           "authn": "spiffe", "on_behalf_of": "finance/analyst", "chain": ["finance/analyst"],
           "delegation_depth": 0, "quarantined": False, "anomaly_level": 0,
           "method": "tools/call", "tool": "secret", "prompt": "", "uri": ""}
    req = CedarRequest(("Agent", "finance/analyst"), "invokeTool", uid, ctx,
                       {uid: unregistered_tool(server, "secret")})
    for declared, want in ((True, (False, ("f",))), (False, (True, ("all",)))):
        ents = [danger, secret] if declared else [danger]
        snap = Snapshot.build(REGISTRY, parse_policies([("p.cedar", text)]),
                              entities=(("entities.json", json.dumps(ents)),))
        assert snap.evaluator is not None
        got = snap.evaluator.decide(req)
        full = snap.evaluator.decide_full(req)
        assert (got.allowed, got.policies) == want
        assert (full.allowed, full.policies) == want
