"""The one schema: Manul's structural reading of it agrees with Cedar's."""

from __future__ import annotations

import json

import cedarpy
import pytest

from compiler import load_schema
from compiler.errors import SchemaError
from compiler.schema import KERNEL_ACTIONS, PATH_ACTIONS, parse_schema

SCHEMA = load_schema()
RESOURCES = {
    "FilePath": {"path": "/x"},
    "Executable": {"path": "/x"},
    "SocketKind": {},
    "NetworkDestination": {
        "ip": {"__extn": {"fn": "ip", "arg": "10.0.0.1"}},
        "port": 1,
        "protocol": "tcp",
    },
}
CALLER = {"time": {"__extn": {"fn": "datetime", "arg": "2026-01-01"}}, "authn": "spiffe",
          "on_behalf_of": "", "chain": [], "delegation_depth": 0, "quarantined": False,
          "anomaly_level": 0}


def test_kernel_and_gateway_actions() -> None:
    assert set(SCHEMA.kernel_actions) == set(KERNEL_ACTIONS)
    assert SCHEMA.expand("kernelAccess") == set(KERNEL_ACTIONS)
    assert SCHEMA.expand("gatewayAccess") == SCHEMA.gateway_actions
    assert SCHEMA.gateway_actions == set(SCHEMA.actions) - set(KERNEL_ACTIONS)
    assert set(PATH_ACTIONS) == {a for a, f in KERNEL_ACTIONS.items() if f == "path"}
    for a in KERNEL_ACTIONS:
        info = SCHEMA.actions[a]
        assert info.context_empty, a  # what makes kernel requests complete
        assert len(info.resources) == 1
        assert info.principals == {"Agent"}
    for a in SCHEMA.gateway_actions:
        assert not SCHEMA.actions[a].context_empty
        assert {"quarantined", "anomaly_level"} <= {c.name for c in SCHEMA.actions[a].context}
        assert SCHEMA.gateway_reason(a).startswith("the kernel does not see ")
        assert "this action" not in SCHEMA.gateway_reason(a), a  # every one is documented


def test_agent_carries_the_registry_attributes() -> None:
    agent = SCHEMA.entity_types["Agent"]
    assert {"name", "namespace", "owner", "team", "risk_level", "risk_score", "capabilities",
            "labels", "url"} == agent.attrs
    assert agent.optional_attrs == frozenset()
    assert agent.parents == {"AgentClass", "Group"}


def _request(action: str) -> tuple[dict[str, object], list[dict[str, object]]]:
    info = SCHEMA.actions[action]
    rtype = sorted(info.resources)[0]
    context: dict[str, object] = {}
    if not info.context_empty:
        context = {c.name: CALLER.get(c.name, "" if c.type == "String" else
                                      (0 if c.type == "Long" else False))
                   for c in info.context}
    request = {
        "principal": {"type": "Agent", "id": "a"},
        "action": {"type": "Action", "id": action},
        "resource": {"type": rtype, "id": "r"},
        "context": context,
    }
    entities = ([{"uid": {"type": rtype, "id": "r"}, "attrs": RESOURCES[rtype], "parents": []}]
                if rtype in RESOURCES else [])
    return request, entities


@pytest.mark.parametrize("group", sorted(SCHEMA.groups))
def test_groups_expand_like_cedar(group: str) -> None:
    policy = f'permit(principal, action in Action::"{group}", resource);'
    for action in SCHEMA.actions:
        request, entities = _request(action)
        result = cedarpy.is_authorized(request, policy, json.dumps(entities), schema=SCHEMA.cedar)
        assert result.diagnostics.errors == []
        assert result.allowed == (action in SCHEMA.expand(group)), (group, action)
        assert (group in SCHEMA.action_groups(action)) == result.allowed


def test_entity_types() -> None:
    assert SCHEMA.entity_types["NetworkDestination"].optional_attrs == {"host"}
    assert SCHEMA.ancestor_types("FilePath") == {"PathSet"}
    assert SCHEMA.ancestor_types("Agent") == {"AgentClass", "Group"}
    assert SCHEMA.ancestor_types("Tool") == {"ToolSet", "MCPServer"}


def test_the_human_form_is_the_same_schema() -> None:
    again = cedarpy.Schema.from_str(SCHEMA.text)
    assert str(again).replace("__cedar::", "") == SCHEMA.text


@pytest.mark.parametrize(("edit", "message"), [
    (lambda s: s[""]["actions"]["readFile"]["appliesTo"].update(context={"type": "MCPContext"}),
     "must have an empty context"),
    (lambda s: s[""]["actions"]["exec"]["appliesTo"].update(resourceTypes=["Tool"]),
     "must apply to one of"),
    (lambda s: s[""]["actions"].pop("loadLibrary"), "path actions"),
])
def test_a_schema_the_kernel_cannot_use_is_refused(edit: object, message: str) -> None:
    raw = json.loads(SCHEMA.json)
    edit(raw)  # type: ignore[operator]
    with pytest.raises(SchemaError, match=message):
        parse_schema(json.dumps(raw))


def test_a_broken_schema_is_refused_with_cedars_reason() -> None:
    with pytest.raises(SchemaError, match="invalid Cedar schema"):
        parse_schema('{"": {"entityTypes": {"A": {"memberOfTypes": ["Nope"]}}, "actions": {}}}')
