"""The compiler's reading of the schema agrees with Cedar's."""

from __future__ import annotations

import json

import cedarpy
import pytest

from compiler import load_schema
from compiler.schema import GATEWAY_REASONS, KERNEL_ACTIONS, PATH_ACTIONS

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
    "Tool": {"name": "t"},
    "LLMModel": {"provider": "p", "model": "m"},
    "Agent": {},
}


def test_kernel_and_gateway_actions() -> None:
    assert SCHEMA.kernel_actions == set(KERNEL_ACTIONS)
    assert SCHEMA.gateway_actions == set(GATEWAY_REASONS)
    assert set(PATH_ACTIONS) == {a for a, f in KERNEL_ACTIONS.items() if f == "path"}
    for a in KERNEL_ACTIONS:
        info = SCHEMA.actions[a]
        assert info.context_empty, a  # what makes kernel requests complete
        assert len(info.resources) == 1
        assert info.principals == {"Agent"}
    for a in GATEWAY_REASONS:
        assert not SCHEMA.actions[a].context_empty


@pytest.mark.parametrize("group", sorted(SCHEMA.groups))
def test_groups_expand_like_cedar(group: str) -> None:
    policy = f'permit(principal, action in Action::"{group}", resource);'
    for action, info in SCHEMA.actions.items():
        (rtype,) = info.resources
        request = {
            "principal": {"type": "Agent", "id": "a"},
            "action": {"type": "Action", "id": action},
            "resource": {"type": rtype, "id": "r"},
            "context": {} if info.context_empty else {"delegation_depth": 0},
        }
        entities = [{"uid": {"type": rtype, "id": "r"}, "attrs": RESOURCES[rtype], "parents": []}]
        result = cedarpy.is_authorized(request, policy, json.dumps(entities), schema=SCHEMA.text)
        assert result.diagnostics.errors == []
        assert result.allowed == (action in SCHEMA.expand(group)), (group, action)


def test_entity_types() -> None:
    assert SCHEMA.entity_types["NetworkDestination"].optional_attrs == {"host"}
    assert SCHEMA.ancestor_types("FilePath") == {"PathSet"}
    assert SCHEMA.ancestor_types("Agent") == {"AgentClass"}
