"""The gateway-layer Cedar schema and the actions it declares.

`schema.cedarschema` beside this module is the source of truth; this module
loads it once and names its actions for the Python side (`Action`, and which
action groups each belongs to). tests/unit/decision/test_schema.py checks the
two agree.
"""

from __future__ import annotations

import functools
from enum import StrEnum
from pathlib import Path

import cedarpy

SCHEMA_PATH = Path(__file__).with_name("schema.cedarschema")


class Action(StrEnum):
    """Every action a gateway request maps to (`Action::"<value>"`)."""

    CONNECT_MCP = "connectMCP"
    LIST_TOOLS = "listTools"
    INVOKE_TOOL = "invokeTool"
    LIST_RESOURCES = "listResources"
    READ_RESOURCE = "readResource"
    LIST_PROMPTS = "listPrompts"
    GET_PROMPT = "getPrompt"
    SEND_MESSAGE = "sendMessage"
    MANAGE_TASK = "manageTask"
    GET_AGENT_CARD = "getAgentCard"
    CALL_LLM = "callLLM"


# action -> the action groups it is `in` (transitively); mirrors the schema.
ACTION_GROUPS: dict[str, frozenset[str]] = {
    Action.SEND_MESSAGE: frozenset({"callAgent"}),
    Action.MANAGE_TASK: frozenset({"callAgent"}),
    Action.GET_AGENT_CARD: frozenset({"callAgent"}),
}


def groups_of(action: str) -> frozenset[str]:
    return ACTION_GROUPS.get(action, frozenset())


@functools.cache
def schema_text() -> str:
    return SCHEMA_PATH.read_text()


@functools.cache
def schema() -> cedarpy.Schema:
    """The parsed schema, shared by every evaluation (it is immutable)."""
    return cedarpy.Schema.from_str(schema_text())
