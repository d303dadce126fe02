"""A malformed CheckRequest is denied, never crashes: fuzzed with hypothesis.

Three layers: arbitrary bytes as the gRPC message (through the real socket;
the protobuf parser rejects or accepts them), structurally valid
CheckRequests with arbitrary field values, and well-formed requests whose
JSON bodies are mutated. Every answer must be a denial or a justified
allow, and the server must keep answering.
"""

from __future__ import annotations

import json
from typing import Any

import grpc
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from agent.decision.client import build_check_request
from agent.decision.local import LocalDecider
from tests.unit.decision.authz_helpers import ANALYST, FINANCE_MCP, Running, mcp_call

TEXT = st.text(max_size=40)
JSON = st.recursive(
    st.none() | st.booleans() | st.integers() | st.floats(allow_nan=False) | TEXT,
    lambda kids: st.lists(kids, max_size=4) | st.dictionaries(TEXT, kids, max_size=4),
    max_leaves=12)
SPEC = st.fixed_dictionaries({}, optional={
    "spiffe": st.sampled_from([ANALYST, "spiffe://x", "not-spiffe", ""]) | TEXT,
    "bearer": TEXT | st.just("a.b.c") | st.just("eyJhbGciOiJub25lIn0.e30."),
    "jwt_payload": JSON,
    "delegation": TEXT,
    "url": st.sampled_from([FINANCE_MCP, "https://llm.ml.internal/v1/chat/completions",
                            "http://a2.a2a.svc:9000/a2a", "http://x"]),
    "method": st.sampled_from(["GET", "POST", "DELETE", "PATCH", "", "BREW"]),
    "headers": st.dictionaries(st.sampled_from(["content-length", "traceparent",
                                                "x-envoy-auth-partial-body", "authorization",
                                                "tracestate", "host"]), TEXT, max_size=4),
    "body": JSON | TEXT,
    "destination": TEXT | st.just("MCPServer/finance/finance-tools"),
    "truncated": st.booleans(),
    "certificate": TEXT,
})


@settings(max_examples=120, deadline=None, suppress_health_check=list(HealthCheck))
@given(SPEC)
def test_random_requests_never_crash(local: LocalDecider, spec: dict[str, Any]) -> None:
    spec.setdefault("url", FINANCE_MCP)
    try:
        req = build_check_request(spec)
    except (ValueError, TypeError):
        return  # the description itself is not representable (e.g. a float header)
    out = local.point.check_proto(req)
    assert out.status in (200, 401, 403)
    if out.allowed:
        assert out.token and out.caller == "finance/analyst" and out.policies


@settings(max_examples=80, deadline=None, suppress_health_check=list(HealthCheck))
@given(JSON)
def test_mutated_mcp_bodies(local: LocalDecider, params: Any) -> None:
    body = {"jsonrpc": "2.0", "id": 1, "method": "tools/call", "params": params}
    out = local.point.check_proto(build_check_request(
        {"spiffe": ANALYST, "url": FINANCE_MCP, "body": body}))
    if out.allowed:
        assert isinstance(params, dict) and params.get("name") in ("get_balance",
                                                                   "list_transactions")


@settings(max_examples=60, deadline=None, suppress_health_check=list(HealthCheck))
@given(st.binary(max_size=300))
def test_random_bytes_on_the_socket(running: Running, data: bytes) -> None:
    with grpc.insecure_channel(f"unix:{running.socket}") as ch:
        call = ch.unary_unary("/envoy.service.auth.v3.Authorization/Check",
                              request_serializer=lambda b: b,
                              response_deserializer=lambda b: b)
        try:
            raw = call(data, timeout=5)
        except grpc.RpcError as e:
            assert e.code() in (grpc.StatusCode.INTERNAL, grpc.StatusCode.INVALID_ARGUMENT,
                                grpc.StatusCode.UNKNOWN), e
        else:
            from envoy.service.auth.v3 import external_auth_pb2
            resp = external_auth_pb2.CheckResponse.FromString(raw)
            assert resp.HasField("denied_response")
    assert running.ask(mcp_call("get_balance"))["allowed"]


def test_deeply_nested_body_is_denied(local: LocalDecider) -> None:
    body = "[" * 100000 + "]" * 100000
    out = local.point.check_proto(build_check_request(
        {"spiffe": ANALYST, "url": FINANCE_MCP, "body": body}))
    assert not out.allowed and "not valid JSON" in out.reason
    assert json.loads(json.dumps(out.reason))
