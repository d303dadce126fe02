"""The schema, the Python mirror of its actions, and the entities/contexts we build."""

from __future__ import annotations

import json
import re
from pathlib import Path

import cedarpy
import pytest

from agent.decision.entities import EntityGraph, registry_entities
from agent.decision.errors import PolicyLoadError
from agent.decision.evaluate import CedarRequest
from agent.decision.local import LocalDecider
from agent.decision.policies import load_policy_dir, parse_policies
from agent.decision.schema import ACTION_GROUPS, Action, schema, schema_text
from agent.registry import load_directory
from tests.unit.decision.authz_helpers import ANALYST, EXAMPLE_POLICIES, FINANCE_MCP, ROOT


def test_actions_mirror_the_schema() -> None:
    declared = set()
    for m in re.finditer(r"^action ([\w, ]+?)(?: in \[(\w+)\])?\s*(?:;|$)", schema_text(),
                         re.M):
        for name in m.group(1).split(","):
            declared.add((name.strip(), m.group(2)))
    names = {n for n, _ in declared}
    assert {a.value for a in Action} | {"callAgent"} == names
    for name, group in declared:
        assert ACTION_GROUPS.get(name, frozenset()) == (frozenset({group}) if group
                                                        else frozenset()), name


@pytest.mark.parametrize("folder", [ROOT / "examples" / "registry"])
def test_registry_entities_validate(folder: Path, folders: tuple[Path, Path]) -> None:
    for reg in (load_directory(folder), load_directory(folders[0])):
        cedarpy.Entities.from_json_str(json.dumps(registry_entities(reg)), schema())


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
    index = load_policy_dir(EXAMPLE_POLICIES)
    assert "finance-agents-invoke-finance-tools" in index.policies
    assert len(index) >= 8


@pytest.mark.parametrize(("text", "message"), [
    ('permit(principal, action == Action::"fly", resource);', "does not validate"),
    ("permit(principal, action, resource) when { context.nope };", "does not validate"),
    ("permit(principal, action", "does not parse"),
    ('permit(principal == ?principal, action, resource);', "templates"),
])
def test_bad_policies_are_reported(text: str, message: str) -> None:
    with pytest.raises(PolicyLoadError, match=message):
        parse_policies([("bad.cedar", text)])


def test_duplicate_ids_are_refused() -> None:
    text = '@id("x") permit(principal, action, resource);'
    with pytest.raises(PolicyLoadError, match="`x` is already used"):
        parse_policies([("a.cedar", text), ("b.cedar", text)])


def test_unnamed_policies_get_file_ids() -> None:
    idx = parse_policies([("a.cedar", "permit(principal, action, resource);")])
    assert list(idx.policies) == ["a.cedar#0"]
    graph = EntityGraph.from_json([])
    assert graph.ancestors(("Agent", "x")) == frozenset()
