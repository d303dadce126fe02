"""A checked HTTP request as a Cedar action on a resource, by protocol.

- MCP (JSON-RPC over HTTP): `tools/call` -> `invokeTool` on
  `Tool::"<server>/<tool>"`; `tools/list` -> `listTools`, `resources/read`
  -> `readResource`, `resources/list` -> `listResources`, `prompts/get` ->
  `getPrompt`, `prompts/list` -> `listPrompts`, and the session plumbing
  (`initialize`, `ping`, `notifications/*`, the SSE GET, DELETE, replies to
  server requests) -> `connectMCP`; all on `MCPServer::"<key>"` but the call.
- A2A: `message/send`, `message/stream` -> `sendMessage`; `tasks/*` ->
  `manageTask`; the agent card -> `getAgentCard`; on `Agent::"<key>"`.
- LLM: POST `.../chat/completions`, `.../responses` (OpenAI-compatible) and
  `.../v1/messages` (Anthropic) -> `callLLM` on `LLMProvider::"<name>"`,
  with `model`, `stream` and `max_tokens` from the body.

A body the decision depends on must be complete: a truncated or withheld
body is a `RequestError` that names the proxy setting to fix, never a
guess. So are invalid JSON, duplicate JSON keys (two parsers could read two
different requests), JSON-RPC batches, and methods this module does not know.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from typing import Any

from agent.decision.checkrequest import BodyState, Incoming
from agent.decision.destination import Destination, Protocol
from agent.decision.entities import EntityJson, Uid, tool_uid, unregistered_tool
from agent.decision.errors import RequestError
from agent.decision.schema import Action
from agent.registry import MCPServer

MAX_NAME = 256


@dataclass(frozen=True)
class Mapped:
    action: Action
    resource: Uid
    context: dict[str, Any]  # the protocol's own context fields
    extra: dict[Uid, EntityJson] = field(default_factory=dict)
    summary: str = ""  # `tools/call get_balance`, for logs and spans


def _no_duplicates(pairs: list[tuple[str, Any]]) -> dict[str, Any]:
    out: dict[str, Any] = {}
    for k, v in pairs:
        if k in out:
            raise RequestError(f"the JSON body repeats the key `{k[:MAX_NAME]}`")
        out[k] = v
    return out


def _json_body(inc: Incoming, what: str) -> Any:
    if inc.body_state is BodyState.TRUNCATED:
        raise RequestError(f"{what}: the proxy truncated the body at {len(inc.body)} bytes; "
                           "raise `with_request_body.max_request_bytes` (and keep "
                           "`allow_partial_message: false`)")
    if inc.body_state is BodyState.ABSENT:
        raise RequestError(f"{what}: the proxy did not send the body; configure the "
                           "ext_authz filter `with_request_body`")
    if inc.body_state is BodyState.EMPTY:
        raise RequestError(f"{what}: the request has no body")
    try:
        return json.loads(inc.body, object_pairs_hook=_no_duplicates)
    except RequestError:
        raise
    except (ValueError, RecursionError) as e:
        raise RequestError(f"{what}: the body is not valid JSON: {e}") from e


def _name(value: Any, what: str) -> str:
    if not isinstance(value, str) or not value or len(value) > MAX_NAME:
        raise RequestError(f"{what} must be a non-empty string of at most {MAX_NAME} "
                           "characters")
    if any(ord(c) < 0x20 for c in value):
        raise RequestError(f"{what} contains control characters")
    return value


def map_request(inc: Incoming, dest: Destination) -> Mapped:
    if dest.protocol is Protocol.MCP:
        assert isinstance(dest.record, MCPServer)
        return _mcp(inc, dest.record)
    if dest.protocol is Protocol.A2A:
        return _a2a(inc, dest)
    return _llm(inc, dest)


# -- MCP ---------------------------------------------------------------------

_MCP_PLUMBING = {"initialize", "ping", "logging/setLevel", "completion/complete",
                 "resources/subscribe", "resources/unsubscribe"}
_MCP_ACTIONS = {
    "tools/list": Action.LIST_TOOLS,
    "resources/list": Action.LIST_RESOURCES,
    "resources/templates/list": Action.LIST_RESOURCES,
    "resources/read": Action.READ_RESOURCE,
    "prompts/list": Action.LIST_PROMPTS,
    "prompts/get": Action.GET_PROMPT,
}


def _mcp_context(method: str, tool: str = "", uri: str = "", prompt: str = "") -> dict[str, Any]:
    return {"method": method, "tool": tool, "uri": uri, "prompt": prompt}


def _jsonrpc(inc: Incoming, what: str) -> dict[str, Any]:
    msg = _json_body(inc, what)
    if isinstance(msg, list):
        raise RequestError(f"{what}: JSON-RPC batches are not supported; send one message "
                           "per request")
    if not isinstance(msg, dict) or msg.get("jsonrpc") != "2.0":
        raise RequestError(f"{what}: the body is not a JSON-RPC 2.0 message")
    return msg


def _mcp(inc: Incoming, server: MCPServer) -> Mapped:
    key = server.meta.key
    res: Uid = ("MCPServer", key)
    if inc.method in ("GET", "DELETE"):
        return Mapped(Action.CONNECT_MCP, res, _mcp_context(""), summary=f"{inc.method} stream")
    if inc.method != "POST":
        raise RequestError(f"mcp: HTTP method `{inc.method}` is not part of the MCP transport")
    msg = _jsonrpc(inc, "mcp")
    method = msg.get("method")
    if method is None and ("result" in msg or "error" in msg):
        return Mapped(Action.CONNECT_MCP, res, _mcp_context(""), summary="response")
    method = _name(method, "mcp: `method`")
    params = msg.get("params", {})
    if not isinstance(params, dict):
        raise RequestError(f"mcp: `{method}`: `params` must be an object")
    if method == "tools/call":
        tool = _name(params.get("name"), "mcp: tools/call: `params.name`")
        if "/" in tool:
            # `<server>/<tool>` is the tool's id: `b/c` on server `a` would be tool
            # `c` of server `a/b` (the registry refuses such names too)
            raise RequestError(f"mcp: tools/call: tool name `{tool}` contains `/`, which "
                               "would name another server's tool")
        uid = tool_uid(key, tool)
        known = tool in server.tools or any(tool in ts for _, ts in server.tool_sets)
        extra = {} if known else {uid: unregistered_tool(key, tool)}
        return Mapped(Action.INVOKE_TOOL, uid, _mcp_context(method, tool=tool), extra,
                      summary=f"tools/call {tool}")
    if method == "resources/read":
        uri = _name(params.get("uri"), "mcp: resources/read: `params.uri`")
        return Mapped(Action.READ_RESOURCE, res, _mcp_context(method, uri=uri),
                      summary=f"resources/read {uri}")
    if method == "prompts/get":
        prompt = _name(params.get("name"), "mcp: prompts/get: `params.name`")
        return Mapped(Action.GET_PROMPT, res, _mcp_context(method, prompt=prompt),
                      summary=f"prompts/get {prompt}")
    action = _MCP_ACTIONS.get(method)
    if action is not None:
        return Mapped(action, res, _mcp_context(method), summary=method)
    if method in _MCP_PLUMBING or method.startswith("notifications/"):
        return Mapped(Action.CONNECT_MCP, res, _mcp_context(method), summary=method)
    raise RequestError(f"mcp: method `{method}` is not one the decision point maps")


# -- A2A ---------------------------------------------------------------------

_AGENT_CARD_PATHS = ("/.well-known/agent.json", "/.well-known/agent-card.json")


def _a2a(inc: Incoming, dest: Destination) -> Mapped:
    res: Uid = ("Agent", dest.key)
    if inc.method == "GET" and inc.path.endswith(_AGENT_CARD_PATHS):
        return Mapped(Action.GET_AGENT_CARD, res, {"method": ""}, summary="agent card")
    if inc.method != "POST":
        raise RequestError(f"a2a: `{inc.method} {inc.path}` is not an A2A JSON-RPC call")
    msg = _jsonrpc(inc, "a2a")
    method = _name(msg.get("method"), "a2a: `method`")
    if method in ("message/send", "message/stream"):
        action = Action.SEND_MESSAGE
    elif method.startswith("tasks/"):
        action = Action.MANAGE_TASK
    elif method == "agent/getAuthenticatedExtendedCard":
        action = Action.GET_AGENT_CARD
    else:
        raise RequestError(f"a2a: method `{method}` is not one the decision point maps")
    return Mapped(action, res, {"method": method}, summary=method)


# -- LLM ---------------------------------------------------------------------

_LLM_APIS = (("/chat/completions", "openai.chat"), ("/responses", "openai.responses"),
             ("/v1/messages", "anthropic.messages"))
_LIMIT_KEYS = ("max_tokens", "max_completion_tokens", "max_output_tokens")


def _llm(inc: Incoming, dest: Destination) -> Mapped:
    api = next((name for suffix, name in _LLM_APIS if inc.path.endswith(suffix)), None)
    if api is None or inc.method != "POST":
        raise RequestError(f"llm: `{inc.method} {inc.path}` on `{dest.key}` is not a "
                           "chat/completions, responses or messages call")
    body = _json_body(inc, f"llm: {api}")
    if not isinstance(body, dict):
        raise RequestError(f"llm: {api}: the body must be a JSON object")
    model = _name(body.get("model"), f"llm: {api}: `model`")
    stream = body.get("stream", False)
    if not isinstance(stream, bool):
        raise RequestError(f"llm: {api}: `stream` must be true or false")
    limit = 0
    for k in _LIMIT_KEYS:
        v = body.get(k)
        if v is None:
            continue
        if not isinstance(v, int) or isinstance(v, bool) or v < 0 or v >= 2**63:
            raise RequestError(f"llm: {api}: `{k}` must be a non-negative integer")
        limit = v
        break
    return Mapped(Action.CALL_LLM, ("LLMProvider", dest.key),
                  {"model": model, "api": api, "stream": stream, "max_tokens": limit},
                  summary=f"{api} {model}")
