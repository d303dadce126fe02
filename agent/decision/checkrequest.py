"""An Envoy `CheckRequest` reduced to the plain facts the decision needs.

`Incoming.from_proto` reads the request attributes once (headers from
either `headers` or `header_map`, the body from `body` or `raw_body`, the
source principal and certificate, the `envoy.filters.http.jwt_authn`
payload, the route's `context_extensions`) and says explicitly whether the
body is complete, truncated by the proxy, absent although the request has
one, or empty. Nothing here decides; `request.py` and `identity.py` do.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from enum import StrEnum
from typing import Any

from google.protobuf import json_format  # type: ignore[import-untyped]

from agent.decision.errors import RequestError
from agent.decision.paths import normalize_path

JWT_AUTHN_FILTER = "envoy.filters.http.jwt_authn"
PARTIAL_BODY_HEADER = "x-envoy-auth-partial-body"
MAX_HEADERS = 256


class BodyState(StrEnum):
    COMPLETE = "complete"
    EMPTY = "empty"  # the request has no body
    TRUNCATED = "truncated"  # the proxy sent only the first max_request_bytes
    ABSENT = "absent"  # the request has a body but the proxy did not send it


@dataclass(frozen=True)
class Incoming:
    method: str = "GET"
    host: str = ""
    path: str = "/"
    headers: Mapping[str, str] = field(default_factory=dict)
    body: bytes = b""
    body_state: BodyState = BodyState.EMPTY
    source_principal: str = ""
    source_certificate: str = ""
    jwt_payloads: Mapping[str, Any] = field(default_factory=dict)  # jwt_authn metadata
    context_extensions: Mapping[str, str] = field(default_factory=dict)
    request_id: str = ""

    def header(self, name: str) -> str:
        return self.headers.get(name, "")

    @classmethod
    def from_proto(cls, req: Any) -> Incoming:
        """Read an `envoy.service.auth.v3.CheckRequest`; RequestError if it has no HTTP request."""
        attrs = req.attributes
        if not attrs.HasField("request") or not attrs.request.HasField("http"):
            raise RequestError("the CheckRequest carries no HTTP request attributes")
        http = attrs.request.http
        headers: dict[str, str] = {}
        for k, v in http.headers.items():
            headers[k.lower()] = v
        if http.HasField("header_map"):
            for hv in http.header_map.headers:
                value = hv.value or hv.raw_value.decode("utf-8", "replace")
                key = hv.key.lower()
                headers[key] = f"{headers[key]},{value}" if key in headers else value
        if len(headers) > MAX_HEADERS:
            raise RequestError(f"the request has {len(headers)} headers; at most {MAX_HEADERS}")
        method = (http.method or headers.get(":method", "")).upper()
        if not method:
            raise RequestError("the request has no HTTP method")
        host = (http.host or headers.get(":authority", "") or headers.get("host", "")).lower()
        raw_path = http.path or headers.get(":path", "/")
        path = normalize_path(raw_path.split("?", 1)[0] or "/")  # docs/decision.md, "Paths"
        body = http.raw_body or http.body.encode("utf-8")
        jwt: dict[str, Any] = {}
        md = attrs.metadata_context.filter_metadata
        if JWT_AUTHN_FILTER in md:
            jwt = json_format.MessageToDict(md[JWT_AUTHN_FILTER])
        return cls(
            method=method, host=host, path=path, headers=headers, body=body,
            body_state=body_state(headers, body, method, int(http.size)),
            source_principal=attrs.source.principal,
            source_certificate=attrs.source.certificate,
            jwt_payloads=jwt,
            context_extensions=dict(attrs.context_extensions),
            request_id=http.id or headers.get("x-request-id", ""),
        )


def body_state(headers: Mapping[str, str], body: bytes, method: str, size: int) -> BodyState:
    declared = _content_length(headers, size)
    if headers.get(PARTIAL_BODY_HEADER, "").lower() == "true":
        return BodyState.TRUNCATED
    if body:
        if declared is not None and declared > len(body):
            return BodyState.TRUNCATED
        return BodyState.COMPLETE
    if (declared or 0) > 0 or "chunked" in headers.get("transfer-encoding", "").lower():
        return BodyState.ABSENT
    if declared is None and method in ("POST", "PUT", "PATCH"):
        # HTTP/2 without content-length: a body may follow that we never saw
        return BodyState.ABSENT
    return BodyState.EMPTY


def _content_length(headers: Mapping[str, str], size: int) -> int | None:
    raw = headers.get("content-length", "")
    if raw.strip().isdigit():
        return int(raw)
    return size if size > 0 else None
