"""An `Outcome` as the Envoy `CheckResponse` the gateway acts on.

Allow: gRPC status OK, and for the upstream request `authorization:
Bearer <per-hop token>` (overwriting the caller's credential),
`x-manul-decision: allow` and `x-manul-policy: <ids>`; `x-manul-delegation`
is removed. Deny: PERMISSION_DENIED (UNAUTHENTICATED for a 401) and a
`DeniedHttpResponse` with status 403 (401), the same two `x-manul-*`
headers and a JSON body a person can read. Both carry `dynamic_metadata`
(under the ext_authz filter's namespace) with the decision, reason,
policies, caller, on-behalf-of, action and resource, for access logs and
later filters.
"""

from __future__ import annotations

import json

from envoy.config.core.v3 import base_pb2
from envoy.service.auth.v3 import external_auth_pb2
from envoy.type.v3 import http_status_pb2
from google.protobuf import struct_pb2  # type: ignore[import-untyped]
from google.rpc import code_pb2, status_pb2

from agent.decision.decide import Outcome
from agent.decision.delegation import DELEGATION_HEADER

DECISION_HEADER = "x-manul-decision"
POLICY_HEADER = "x-manul-policy"
_OVERWRITE = base_pb2.HeaderValueOption.OVERWRITE_IF_EXISTS_OR_ADD


def _header(key: str, value: str) -> base_pb2.HeaderValueOption:
    return base_pb2.HeaderValueOption(header=base_pb2.HeaderValue(key=key, value=value),
                                      append_action=_OVERWRITE)


def metadata(o: Outcome) -> struct_pb2.Struct:
    s = struct_pb2.Struct()
    s.update({
        "decision": o.decision, "reason": o.reason, "policies": list(o.policies),
        "caller": o.caller, "on_behalf_of": o.on_behalf_of, "chain": list(o.chain),
        "delegation_depth": o.delegation_depth, "action": o.action,
        "resource": o.resource, "status": o.status, "trace_id": o.trace_id,
        "token_jti": str(o.token_claims.get("jti", ""))})
    return s


def error_body(o: Outcome) -> str:
    # one line: json's C encoder (an indent takes its Python one, 5x slower)
    return json.dumps({
        "error": "unauthenticated" if o.status == 401 else "forbidden",
        "decision": "deny", "reason": o.reason, "policies": list(o.policies),
        "caller": o.caller, "action": o.action, "resource": o.resource,
        "request_id": o.request_id, "trace_id": o.trace_id}) + "\n"


def to_check_response(o: Outcome) -> external_auth_pb2.CheckResponse:
    common = [_header(DECISION_HEADER, o.decision)]
    if o.policies:
        common.append(_header(POLICY_HEADER, ",".join(o.policies)))
    if o.allowed:
        ok = external_auth_pb2.OkHttpResponse(
            headers=[_header("authorization", f"Bearer {o.token}"), *common],
            headers_to_remove=[DELEGATION_HEADER])
        return external_auth_pb2.CheckResponse(
            status=status_pb2.Status(code=code_pb2.OK), ok_response=ok,
            dynamic_metadata=metadata(o))
    unauth = o.status == 401
    headers = [_header("content-type", "application/json"), *common]
    if unauth:
        headers.append(_header("www-authenticate", 'Bearer error="invalid_token"'))
    denied = external_auth_pb2.DeniedHttpResponse(
        status=http_status_pb2.HttpStatus(
            code=http_status_pb2.Unauthorized if unauth else http_status_pb2.Forbidden),
        headers=headers, body=error_body(o))
    code = code_pb2.UNAUTHENTICATED if unauth else code_pb2.PERMISSION_DENIED
    return external_auth_pb2.CheckResponse(
        status=status_pb2.Status(code=code, message=o.reason[:1024]), denied_response=denied,
        dynamic_metadata=metadata(o))
