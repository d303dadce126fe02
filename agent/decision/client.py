"""Build a CheckRequest from a short description, and ask a decision point.

Used by `manul check`, the tests and the benchmark, so all three speak to
the server exactly as a gateway does. A request description is a dict
(or a JSON file) like

    {"spiffe": "spiffe://cluster.local/ns/finance/sa/analyst",
     "method": "POST", "url": "http://finance-tools.finance.svc:8080/mcp",
     "body": {"jsonrpc": "2.0", "id": 1, "method": "tools/call",
              "params": {"name": "get_balance"}},
     "headers": {"traceparent": "00-...-...-01"}}

with, instead of `spiffe`, `bearer` (a JWT) or `jwt_payload` (what the
proxy's jwt_authn verified), and optionally `delegation` (the per-hop token
the caller received), `destination` (`MCPServer/<key>`, sets the route's
context extension), `certificate` (PEM) and `truncated: true`. A file that
holds an Envoy CheckRequest in protobuf JSON (it has `attributes`) is sent
as it is.
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from typing import Any
from urllib.parse import quote, urlsplit

import grpc
from envoy.service.auth.v3 import external_auth_pb2, external_auth_pb2_grpc
from google.protobuf import json_format  # type: ignore[import-untyped]

from agent.decision.checkrequest import JWT_AUTHN_FILTER, PARTIAL_BODY_HEADER
from agent.decision.delegation import DELEGATION_HEADER
from agent.decision.destination import DESTINATION_KEY
from agent.decision.errors import RequestError


def build_check_request(spec: Mapping[str, Any], *,
                        jwt_metadata_key: str = "jwt_payload") -> Any:
    """An `envoy.service.auth.v3.CheckRequest` for the described call."""
    if "attributes" in spec:
        try:
            return json_format.ParseDict(dict(spec), external_auth_pb2.CheckRequest())
        except json_format.ParseError as e:
            raise RequestError(f"not an Envoy CheckRequest: {e}") from e
    req = external_auth_pb2.CheckRequest()
    attrs = req.attributes
    http = attrs.request.http
    url = urlsplit(str(spec.get("url", "")))
    http.method = str(spec.get("method", "POST")).upper()
    http.host = str(spec.get("host") or url.netloc)
    http.path = str(spec.get("path") or (url.path + (f"?{url.query}" if url.query else "")) or "/")
    http.scheme = url.scheme or "http"
    headers = {str(k).lower(): str(v) for k, v in dict(spec.get("headers", {})).items()}
    if spec.get("bearer"):
        headers["authorization"] = f"Bearer {spec['bearer']}"
    if spec.get("delegation"):
        headers[DELEGATION_HEADER] = str(spec["delegation"])
    body = spec.get("body")
    if body is not None:
        raw = body if isinstance(body, str) else json.dumps(body)
        data = raw.encode()
        headers.setdefault("content-type", "application/json")
        headers.setdefault("content-length", str(len(data)))
        if spec.get("truncated"):
            data = data[: max(1, len(data) // 2)]
            headers[PARTIAL_BODY_HEADER] = "true"
        http.raw_body = data
        http.size = int(headers["content-length"])
    elif http.method in ("POST", "PUT", "PATCH"):
        headers.setdefault("content-length", "0")
    for k, v in headers.items():
        http.headers[k] = v
    if spec.get("request_id"):
        http.id = str(spec["request_id"])
    if spec.get("spiffe"):
        attrs.source.principal = str(spec["spiffe"])
    if spec.get("certificate"):
        attrs.source.certificate = quote(str(spec["certificate"]))
    if spec.get("jwt_payload") is not None:
        attrs.metadata_context.filter_metadata[JWT_AUTHN_FILTER].update(
            {jwt_metadata_key: spec["jwt_payload"]})
    if spec.get("destination"):
        attrs.context_extensions[DESTINATION_KEY] = str(spec["destination"])
    return req


def ask(socket_path: str, request: Any, timeout: float = 5.0) -> Any:
    """Send one Check over the Unix socket; grpc.RpcError when unreachable."""
    with grpc.insecure_channel(f"unix:{socket_path}") as ch:
        stub = external_auth_pb2_grpc.AuthorizationStub(ch)
        return stub.Check(request, timeout=timeout)


def response_summary(resp: Any) -> dict[str, Any]:
    """The decision, headers, body and dynamic metadata of a CheckResponse, as plain data."""
    md = json_format.MessageToDict(resp.dynamic_metadata) if resp.HasField(
        "dynamic_metadata") else {}
    if resp.HasField("ok_response"):
        headers = {h.header.key: h.header.value for h in resp.ok_response.headers}
        return {"allowed": True, "status": 200, "headers": headers,
                "headers_to_remove": list(resp.ok_response.headers_to_remove), "metadata": md}
    denied = resp.denied_response
    headers = {h.header.key: h.header.value for h in denied.headers}
    try:
        body = json.loads(denied.body) if denied.body else {}
    except ValueError:
        body = {"raw": denied.body}
    return {"allowed": False, "status": int(denied.status.code) or 403, "headers": headers,
            "body": body, "metadata": md, "grpc_status": resp.status.code}
