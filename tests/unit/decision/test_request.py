"""CheckRequest -> Cedar action and resource, per protocol, and the explicit refusals."""

from __future__ import annotations

import json
from typing import Any

import pytest

from agent.decision.checkrequest import BodyState, Incoming, body_state
from agent.decision.client import build_check_request
from agent.decision.destination import Destinations, Protocol
from agent.decision.errors import RequestError
from agent.decision.request import map_request
from agent.registry import load_directory
from tests.unit.decision.authz_helpers import FINANCE_MCP


@pytest.fixture
def dests(folders: tuple[Any, Any]) -> Destinations:
    return Destinations(load_directory(folders[0]))


def _inc(url: str, body: Any = None, method: str = "POST", **extra: Any) -> Incoming:
    spec = {"url": url, "method": method, **extra}
    if body is not None:
        spec["body"] = body
    return Incoming.from_proto(build_check_request(spec))


def _rpc(method: str, **params: Any) -> dict[str, Any]:
    return {"jsonrpc": "2.0", "id": 7, "method": method, "params": params}


@pytest.mark.parametrize(("body", "action", "resource", "ctx"), [
    (_rpc("tools/call", name="get_balance"), "invokeTool",
     ("Tool", "finance/finance-tools/get_balance"), {"tool": "get_balance"}),
    (_rpc("tools/list"), "listTools", ("MCPServer", "finance/finance-tools"), {}),
    (_rpc("resources/read", uri="file:///ledger.csv"), "readResource",
     ("MCPServer", "finance/finance-tools"), {"uri": "file:///ledger.csv"}),
    (_rpc("prompts/get", name="summary"), "getPrompt",
     ("MCPServer", "finance/finance-tools"), {"prompt": "summary"}),
    (_rpc("initialize"), "connectMCP", ("MCPServer", "finance/finance-tools"), {}),
    ({"jsonrpc": "2.0", "method": "notifications/initialized"}, "connectMCP",
     ("MCPServer", "finance/finance-tools"), {}),
    ({"jsonrpc": "2.0", "id": 3, "result": {}}, "connectMCP",
     ("MCPServer", "finance/finance-tools"), {}),
])
def test_mcp(dests: Destinations, body: Any, action: str, resource: tuple[str, str],
             ctx: dict[str, str]) -> None:
    inc = _inc(FINANCE_MCP, body)
    dest = dests.resolve(inc)
    assert dest.protocol is Protocol.MCP
    m = map_request(inc, dest)
    assert (m.action.value, m.resource) == (action, resource)
    for k, v in ctx.items():
        assert m.context[k] == v


def test_unlisted_tool_brings_its_own_entity(dests: Destinations) -> None:
    inc = _inc(FINANCE_MCP, _rpc("tools/call", name="shred"))
    m = map_request(inc, dests.resolve(inc))
    (uid, ent), = m.extra.items()
    assert uid == ("Tool", "finance/finance-tools/shred")
    assert ent["attrs"]["registered"] is False


@pytest.mark.parametrize(("url", "method", "body", "action"), [
    ("http://a2.a2a.svc:9000/a2a", "POST", _rpc("message/send"), "sendMessage"),
    ("http://a2.a2a.svc:9000/a2a", "POST", _rpc("message/stream"), "sendMessage"),
    ("http://a2.a2a.svc:9000/a2a", "POST", _rpc("tasks/get", id="t1"), "manageTask"),
    ("http://a2.a2a.svc:9000/a2a", "POST", _rpc("tasks/cancel", id="t1"), "manageTask"),
    ("http://a2.a2a.svc:9000/a2a/.well-known/agent-card.json", "GET", None, "getAgentCard"),
])
def test_a2a(dests: Destinations, url: str, method: str, body: Any, action: str) -> None:
    inc = _inc(url, body, method)
    m = map_request(inc, dests.resolve(inc))
    assert m.action.value == action and m.resource == ("Agent", "a2a/a2")


@pytest.mark.parametrize(("url", "body", "api", "limit"), [
    ("https://llm.ml.internal/v1/chat/completions",
     {"model": "llama-3.3-70b", "messages": [], "max_completion_tokens": 50}, "openai.chat", 50),
    ("https://api.openai.com/v1/responses", {"model": "gpt-4o", "input": "hi",
                                             "max_output_tokens": 9}, "openai.responses", 9),
    ("https://api.openai.com/v1/messages", {"model": "claude", "max_tokens": 64,
                                            "stream": True, "messages": []},
     "anthropic.messages", 64),
])
def test_llm(dests: Destinations, url: str, body: Any, api: str, limit: int) -> None:
    inc = _inc(url, body)
    m = map_request(inc, dests.resolve(inc))
    assert m.action.value == "callLLM"
    assert m.context["model"] == body["model"] and m.context["api"] == api
    assert m.context["max_tokens"] == limit
    assert m.context["stream"] is body.get("stream", False)


@pytest.mark.parametrize(("inc_kwargs", "message"), [
    ({"body": _rpc("tools/call", name="x"), "truncated": True}, "truncated the body"),
    ({"headers": {"content-length": "120"}}, "did not send the body"),
    ({"body": "{not json"}, "not valid JSON"),
    ({"body": '{"jsonrpc":"2.0","method":"tools/list","method":"tools/call"}'},
     "repeats the key `method`"),
    ({"body": [_rpc("tools/list")]}, "batches are not supported"),
    ({"body": {"method": "tools/list"}}, "not a JSON-RPC 2.0 message"),
    ({"body": _rpc("sampling/hack")}, "method `sampling/hack` is not one"),
    ({"body": _rpc("tools/call")}, "`params.name` must be"),
    ({"body": _rpc("tools/call", name="a\nb")}, "control characters"),
    # `<server>/<tool>` is the id: `b/c` on server `a` would be server `a/b`'s `c`
    ({"body": _rpc("tools/call", name="reports/get_balance")}, "would name another server"),
    ({"method": "PUT", "body": {}}, "not part of the MCP transport"),
])
def test_mcp_refusals(dests: Destinations, inc_kwargs: dict[str, Any], message: str) -> None:
    method = inc_kwargs.pop("method", "POST")
    inc = _inc(FINANCE_MCP, method=method, **inc_kwargs)
    with pytest.raises(RequestError, match=message.replace("`", ".").replace("(", ".")):
        map_request(inc, dests.resolve(inc))


@pytest.mark.parametrize(("url", "body", "message"), [
    ("https://llm.ml.internal/v1/models", None, "is not a chat/completions"),
    ("https://llm.ml.internal/v1/chat/completions", {"messages": []}, "model. must be"),
    ("https://llm.ml.internal/v1/chat/completions", {"model": "m", "max_tokens": -1},
     "non-negative integer"),
    ("https://llm.ml.internal/v1/chat/completions", {"model": "m", "stream": "yes"},
     "true or false"),
])
def test_llm_refusals(dests: Destinations, url: str, body: Any, message: str) -> None:
    inc = _inc(url, body, "GET" if body is None else "POST")
    with pytest.raises(RequestError, match=message):
        map_request(inc, dests.resolve(inc))


def test_destination_by_route_context_extension(dests: Destinations) -> None:
    inc = _inc("http://gateway.ai.internal/anything", _rpc("tools/list"),
               destination="MCPServer/finance/finance-tools")
    assert dests.resolve(inc).key == "finance/finance-tools"
    with pytest.raises(RequestError, match="not in the registry"):
        dests.resolve(_inc("http://x/", destination="MCPServer/nope"))
    with pytest.raises(RequestError, match="not a registered"):
        dests.resolve(_inc("http://unknown.example.com/mcp"))


def test_destination_path_prefix_and_port(dests: Destinations) -> None:
    assert dests.resolve(_inc("http://finance-tools.finance.svc:8080/mcp/sub")).key
    with pytest.raises(RequestError):
        dests.resolve(_inc("http://finance-tools.finance.svc:9999/mcp"))
    with pytest.raises(RequestError):
        dests.resolve(_inc("http://finance-tools.finance.svc:8080/mcpx"))


@pytest.mark.parametrize(("headers", "body", "method", "state"), [
    ({}, b"", "GET", BodyState.EMPTY),
    ({"content-length": "0"}, b"", "POST", BodyState.EMPTY),
    ({}, b"", "POST", BodyState.ABSENT),
    ({"transfer-encoding": "chunked"}, b"", "POST", BodyState.ABSENT),
    ({"content-length": "10"}, b"12345", "POST", BodyState.TRUNCATED),
    ({"x-envoy-auth-partial-body": "true"}, b"12345", "POST", BodyState.TRUNCATED),
    ({"content-length": "5"}, b"12345", "POST", BodyState.COMPLETE),
])
def test_body_state(headers: dict[str, str], body: bytes, method: str,
                    state: BodyState) -> None:
    assert body_state(headers, body, method, 0) is state


def test_header_map_and_raw_body_are_read() -> None:
    req = build_check_request({"url": FINANCE_MCP, "body": _rpc("tools/list")})
    http = req.attributes.request.http
    h = http.header_map.headers.add()
    h.key, h.raw_value = "X-Extra", b"v"
    inc = Incoming.from_proto(req)
    assert inc.header("x-extra") == "v"
    assert json.loads(inc.body)["method"] == "tools/list"
