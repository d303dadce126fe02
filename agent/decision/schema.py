"""The decision point's view of the one schema.

The schema is the compiler's (`compiler/schema.cedarschema.json`, read
structurally by `compiler.schema`): its gateway actions are the ones outside
`Action::"kernelAccess"`, and action groups come from it. `Action` names
the actions the request mapper (request.py) produces; it is checked against
the schema when this module is imported, so a renamed or removed action
fails at start, not at the first request.
"""

from __future__ import annotations

from enum import StrEnum

import cedarpy

from compiler import load_schema


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


GATEWAY_ACTIONS: frozenset[str] = load_schema().gateway_actions
if {a.value for a in Action} != GATEWAY_ACTIONS:  # pragma: no cover - a packaging error
    raise ImportError(
        "the request mapper's actions differ from the schema's gateway actions: "
        f"{sorted(GATEWAY_ACTIONS ^ {a.value for a in Action})}")


def groups_of(action: str) -> frozenset[str]:
    """The action groups `action` is transitively in, from the schema."""
    return load_schema().action_groups(action)


def schema() -> cedarpy.Schema:
    """The parsed schema, shared by every evaluation (it is immutable)."""
    return load_schema().cedar
