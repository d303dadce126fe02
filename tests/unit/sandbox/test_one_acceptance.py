"""Both enforcement points accept the same policy sets.

A set one layer takes and the other refuses splits the node: the kernel
would enforce the new set while the decision point keeps the old one (or
the reverse). Each bad set below must be refused by the decision point's
snapshot and by the kernel compile of an agent's sandbox (which sees only
its cut of the registry), each with an error naming the file; the good set
is the positive control, taken by both."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest

from agent.decision.policies import parse_policies
from agent.decision.sources import Snapshot
from agent.errors import ManulError
from agent.registry import load_directory
from agent.registry.policyset import PolicySet
from agent.sandbox.apply import compile_all
from agent.sandbox.assign import agent_inputs
from compiler import CompileError, EntitiesSource, PolicySource

REGISTRY = load_directory(Path(__file__).parents[3] / "examples" / "registry")
ME = "finance/analyst"
ALLOW = '@id("all") permit (principal, action, resource);\n'
SUPPORT = {"name": "support-bot", "namespace": "support", "owner": "bob@example.com",
           "team": "finance", "risk_level": "low", "risk_score": 1, "capabilities": [],
           "labels": [], "url": ""}


def _e(t: str, i: str, attrs: dict[str, Any] | None = None,
       *parents: tuple[str, str]) -> dict[str, Any]:
    return {"uid": {"type": t, "id": i}, "attrs": attrs or {},
            "parents": [{"type": a, "id": b} for a, b in parents]}


# name -> (sources, entities file or None, what the error names)
BAD: dict[str, tuple[list[tuple[str, str]], list[Any] | None, str]] = {
    "reserved agent id in a policy": (
        [("p.cedar", ALLOW + 'forbid (principal == Agent::"manul:x", action, resource);')],
        None, "p.cedar:2"),
    "two sources of one name": (
        [("p.cedar", ALLOW), ("p.cedar", 'forbid (principal, action, resource);')],
        None, "p.cedar"),
    "relative path entity": (
        [("p.cedar", ALLOW)], [_e("FilePath", "etc/shadow", None, ("PathSet", "s"))],
        "entities.json:"),
    "attribute the schema lacks": (
        [("p.cedar", ALLOW)], [_e("MCPServer", "x/y", {"bogus": 1})], "entities.json:"),
    "attributes for a registry agent outside the sandbox's cut": (
        [("p.cedar", ALLOW)], [_e("Agent", "support/support-bot", SUPPORT)], "entities.json:"),
    "an entity reference without __entity": (
        [("p.cedar", ALLOW)],
        [_e("ToolSet", "finance/finance-tools/extra",
            {"name": "extra", "server": {"type": "MCPServer", "id": "finance/finance-tools"}},
            ("MCPServer", "finance/finance-tools"))],
        "entities.json:"),
    "an Action entity": (
        [("p.cedar", ALLOW + 'forbid (principal, action in Action::"mcpAccess", resource);')],
        [_e("Action", "invokeTool")], "entities.json:"),
    # what reaches `resource.path` through an `if` is checked like the direct form
    "an over-long path through if": (
        [("p.cedar", ALLOW + 'permit (principal, action == Action::"readFile", resource) '
          f'when {{ resource.path == (if true then "/{"a" * 300}" else "") }};')],
        None, "p.cedar:2"),
    "a NUL in a prefix through if": (
        [("p.cedar", ALLOW + 'permit (principal, action == Action::"readFile", resource) '
          'when { (if true then resource.path else "") like "/etc/shadow\\0*" };')],
        None, "p.cedar:2"),
    "an inner star in a forbid through if": (
        [("p.cedar", ALLOW + 'forbid (principal, action == Action::"readFile", resource) '
          'when { (if true then resource.path else "") like "/a/*/b" };')],
        None, "p.cedar:2"),
    "a reserved agent in the entities file": (
        [("p.cedar", ALLOW)], [_e("AgentClass", "c"), _e("Agent", "manul:x")], "entities.json:"),
}
GOOD: dict[str, tuple[list[tuple[str, str]], list[Any] | None]] = {
    "an explicit reference": (
        [("p.cedar", ALLOW)],
        [_e("ToolSet", "finance/finance-tools/extra",
            {"name": "extra",
             "server": {"__entity": {"type": "MCPServer", "id": "finance/finance-tools"}}},
            ("MCPServer", "finance/finance-tools"))]),
    # a long path the literal rule cannot see (through a set): approximated by
    # the kernel (reported), not refused, so both layers take it
    "an over-long path through a set": (
        [("p.cedar", ALLOW + 'forbid (principal, action == Action::"readFile", resource) '
          f'when {{ (if true then ["/{"a" * 300}"] else ["/b"]).contains(resource.path) }};')],
        None),
    # the file nests a registry agent outside the analyst's cut into a class
    "parents for another registry agent": (
        [("p.cedar", ALLOW)],
        [_e("AgentClass", "vip"), _e("Agent", "support/support-bot", None, ("AgentClass", "vip"))]),
}


def _gateway(sources: list[tuple[str, str]], entities: list[Any] | None) -> None:
    efs = (("entities.json", json.dumps(entities, indent=1)),) if entities is not None else ()
    Snapshot.build(REGISTRY, parse_policies(sources), entities=efs)


def _kernel(sources: list[tuple[str, str]], entities: list[Any] | None) -> None:
    efile = (EntitiesSource("entities.json", json.dumps(entities, indent=1))
             if entities is not None else None)
    ps = PolicySet("test", tuple(PolicySource(n, t) for n, t in sources), efile)
    me = next(a for a in REGISTRY.agents if a.meta.key == ME)
    compile_all(agent_inputs(REGISTRY, me, ps), only={f"Agent::{json.dumps(ME)}"})


@pytest.mark.parametrize("name", sorted(GOOD))
def test_a_good_set_is_taken_by_both(name: str) -> None:
    _gateway(*GOOD[name])
    _kernel(*GOOD[name])


@pytest.mark.parametrize("name", sorted(BAD))
def test_a_bad_set_is_refused_by_both(name: str) -> None:
    sources, entities, where = BAD[name]
    with pytest.raises((CompileError, ManulError)) as gw:
        _gateway(sources, entities)
    assert where in str(gw.value), str(gw.value)
    with pytest.raises(ManulError) as k:
        _kernel(sources, entities)
    assert where in str(k.value) + " ".join(getattr(k.value, "details", ())), str(k.value)


# Registry records the whole registry refuses, though the sandbox's cut of it
# (another agent's records left out) would not show them. (Two servers that
# built one tool id, `a` + `b/c` and `a/b` + `c`, are refused when the registry
# loads: a tool name may not hold `/`, tests/unit/registry/test_registry.py.)
REGISTRY_BAD = {
    "a reserved agent name": """
apiVersion: manul.dev/v1alpha1
kind: Agent
metadata: {name: "manul:default"}
spec: {owner: x, identities: [{systemdUnit: m.service}]}
""",
}
ME_YAML = """
apiVersion: manul.dev/v1alpha1
kind: Agent
metadata: {name: a, namespace: ns}
spec: {owner: x, identities: [{systemdUnit: a.service}], sandbox: {mode: enforce}}
---
"""


@pytest.mark.parametrize("name", sorted(REGISTRY_BAD))
def test_a_registry_the_whole_refuses_is_refused_by_both(name: str, tmp_path: Path) -> None:
    (tmp_path / "r.yaml").write_text(ME_YAML + REGISTRY_BAD[name])
    registry = load_directory(tmp_path)
    ps = PolicySet("test", (PolicySource("p.cedar", ALLOW),), None)
    with pytest.raises(CompileError, match="registry"):
        Snapshot.build(registry, parse_policies([("p.cedar", ALLOW)]))
    me = next(a for a in registry.agents if a.meta.key == "ns/a")
    with pytest.raises(ManulError, match="registry"):
        compile_all(agent_inputs(registry, me, ps), only={'Agent::"ns/a"'})
    # positive control: without the bad records, both take it
    (tmp_path / "r.yaml").write_text(ME_YAML)
    good = load_directory(tmp_path)
    Snapshot.build(good, parse_policies([("p.cedar", ALLOW)]))
    compile_all(agent_inputs(good, next(iter(good.agents)), ps), only={'Agent::"ns/a"'})
