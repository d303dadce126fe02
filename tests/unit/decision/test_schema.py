"""The one schema at the gateway: its actions, and the entities/contexts we build."""

from __future__ import annotations

import json
from pathlib import Path

import cedarpy
import pytest

from agent.decision.entities import EntityGraph, action_entities
from agent.decision.errors import PolicyLoadError
from agent.decision.evaluate import CedarRequest
from agent.decision.local import LocalDecider
from agent.decision.policies import parse_policies
from agent.decision.schema import GATEWAY_ACTIONS, Action, groups_of, schema
from agent.registry import load_directory
from agent.registry.entities import registry_entities
from agent.registry.policyset import PolicyFolder
from compiler import load_schema
from tests.unit.decision.authz_helpers import ANALYST, EXAMPLE_POLICIES, FINANCE_MCP, ROOT


def test_actions_are_the_schemas_gateway_actions() -> None:
    one = load_schema()
    assert {a.value for a in Action} == GATEWAY_ACTIONS == one.expand("gatewayAccess")
    assert groups_of("sendMessage") == {"callAgent", "gatewayAccess"}
    assert groups_of("invokeTool") == {"mcpAccess", "gatewayAccess"}
    assert groups_of("callLLM") == {"gatewayAccess"}
    # every action and group is an entity, with its groups as parents
    by_id = {e["uid"]["id"]: {p["id"] for p in e["parents"]} for e in action_entities()}
    assert set(by_id) == set(one.actions) | set(one.groups)
    assert by_id["callAgent"] == {"gatewayAccess"} and by_id["readFile"] == {
        "fileAccess", "kernelAccess"}


@pytest.mark.parametrize("folder", [ROOT / "examples" / "registry"])
def test_registry_entities_validate(folder: Path, folders: tuple[Path, Path]) -> None:
    for reg in (load_directory(folder), load_directory(folders[0])):
        cedarpy.Entities.from_json_str(json.dumps([*action_entities(), *registry_entities(reg)]),
                                       schema())


def test_built_requests_validate_against_the_schema(local: LocalDecider) -> None:
    """Every context the pipeline builds has exactly the schema's shape."""
    specs = [
        {"spiffe": ANALYST, "url": FINANCE_MCP, "body": {
            "jsonrpc": "2.0", "id": 1, "method": "tools/call", "params": {"name": "get_balance"}}},
        {"spiffe": ANALYST, "url": FINANCE_MCP, "method": "GET"},
        {"spiffe": ANALYST, "url": "http://a2.a2a.svc:9000/a2a", "body": {
            "jsonrpc": "2.0", "id": 1, "method": "message/send", "params": {}}},
        {"spiffe": ANALYST, "url": "https://llm.ml.internal/v1/chat/completions",
         "body": {"model": "m", "messages": []}},
    ]
    snap = local.sources.snapshot
    assert snap.evaluator is not None
    for spec in specs:
        out = local.explain(spec).outcome
        assert out.cedar, out.reason
        c = out.cedar
        req = CedarRequest((c["principal"]["type"], c["principal"]["id"]), c["action"]["id"],
                           (c["resource"]["type"], c["resource"]["id"]), dict(c["context"]))
        result = cedarpy.is_authorized(req.as_cedar(), snap.evaluator.index.policy_set(),
                                       cedarpy.Entities.from_json_str(snap.graph.all_json()),
                                       schema())
        assert not result.diagnostics.errors, result.diagnostics.errors
        assert result.allowed == out.allowed or not out.token


def test_example_policies_load() -> None:
    """The one folder, kernel and gateway policies alike, under the compiler's ids."""
    ps = PolicyFolder(EXAMPLE_POLICIES).load()
    index = parse_policies([(s.name, s.text) for s in ps.sources])
    assert "finance-agents-invoke-finance-tools" in index.policies
    assert "analyst-files" in index.policies  # a kernel policy: loaded, never matches here
    assert not index.candidates("invokeTool", ("Agent", "finance/analyst"), frozenset(),
                                ("Tool", "x"), frozenset()).__contains__("analyst-files")
    assert len(index) >= 25


@pytest.mark.parametrize(("text", "message"), [
    ('permit(principal, action == Action::"fly", resource);',
     r"does not validate against the schema: bad.cedar:1:\d+: policy `bad.cedar:1`: "
     "unrecognized action"),
    ("permit(principal, action, resource) when { context.nope };", "does not validate"),
    ("permit(principal, action", "does not parse: bad.cedar:1"),
    ('permit(principal == ?principal, action, resource);', "templates"),
])
def test_bad_policies_are_reported(text: str, message: str) -> None:
    with pytest.raises(PolicyLoadError, match=message):
        parse_policies([("bad.cedar", text)])


def test_duplicate_ids_are_refused() -> None:
    text = '@id("x") permit(principal, action, resource);'
    with pytest.raises(PolicyLoadError, match=r"duplicate policy id `x`: first used at a\.cedar"):
        parse_policies([("a.cedar", text), ("b.cedar", text)])


def test_unnamed_policies_get_file_ids() -> None:
    """One id rule at both layers: `@id`, else `<file>:<line>`."""
    idx = parse_policies([("a.cedar", "\npermit(principal, action, resource);")])
    assert list(idx.policies) == ["a.cedar:2"]
    assert idx.policies["a.cedar:2"].source == "a.cedar:2:1"
    graph = EntityGraph.from_json([])
    assert graph.ancestors(("Agent", "x")) == frozenset()
