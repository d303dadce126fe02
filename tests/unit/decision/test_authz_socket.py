"""The decision point through its real Unix socket with the real Envoy protos.

Each test sends `envoy.service.auth.v3.CheckRequest`s over the socket the
gateway would use and reads the `CheckResponse` a gateway would act on.
"""

from __future__ import annotations

import json
import os
import stat
import time
from pathlib import Path

import grpc
from envoy.service.auth.v3 import external_auth_pb2
from grpc_health.v1 import health_pb2, health_pb2_grpc

from agent.decision.client import ask, build_check_request
from agent.telemetry.metrics import REGISTRY
from tests.unit.decision.authz_helpers import (
    ANALYST,
    FINANCE_MCP,
    PAYER,
    Running,
    mcp_call,
    start_server,
)


def test_mcp_tool_allowed_by_attribute_policy(running: Running) -> None:
    r = running.ask(mcp_call("get_balance"))
    assert r["allowed"] and r["status"] == 200
    assert r["headers"]["x-manul-decision"] == "allow"
    assert r["headers"]["x-manul-policy"] == "finance-agents-invoke-finance-tools"
    assert r["headers"]["authorization"].startswith("Bearer ey")
    assert r["headers_to_remove"] == ["x-manul-delegation"]
    md = r["metadata"]
    assert md["caller"] == "finance/analyst"
    assert md["action"] == "invokeTool"
    assert md["resource"] == 'Tool::"finance/finance-tools/get_balance"'


def test_mcp_tool_denied_by_risk_level(running: Running) -> None:
    # `risky` is in finance-agents, but its risk level is high: no permit applies, and
    # the folder's `high-risk-no-risky-tools` (a high-risk server) forbids it outright
    r = running.ask(mcp_call("get_balance", spiffe="spiffe://cluster.local/ns/finance/sa/risky"))
    assert not r["allowed"] and r["status"] == 403
    assert r["headers"]["content-type"] == "application/json"
    assert r["body"]["decision"] == "deny"
    assert r["body"]["policies"] == ["high-risk-no-risky-tools"]
    assert "forbidden by `high-risk-no-risky-tools`" in r["body"]["reason"]
    assert r["grpc_status"] == grpc.StatusCode.PERMISSION_DENIED.value[0]
    # a medium-risk agent outside finance-agents: nothing permits it, nothing forbids it
    r = running.ask(mcp_call("get_balance", spiffe="spiffe://cluster.local/ns/a2a/sa/a1"))
    assert not r["allowed"] and "no policy permits" in r["body"]["reason"]
    # the request in Cedar's own syntax, not Python's representation of it
    assert ('Agent::"a2a/a1" -> Action::"invokeTool" -> '
            'Tool::"finance/finance-tools/get_balance"') in r["body"]["reason"], r["body"]


def test_payments_need_low_risk(running: Running) -> None:
    denied = running.ask(mcp_call("transfer_funds"))
    assert not denied["allowed"]
    assert denied["headers"]["x-manul-policy"] == "payments-need-low-risk"
    assert denied["body"]["policies"] == ["payments-need-low-risk"]
    allowed = running.ask(mcp_call("transfer_funds", spiffe=PAYER))
    assert allowed["allowed"]


def test_unlisted_tool_is_denied(running: Running) -> None:
    r = running.ask(mcp_call("drop_tables"))
    assert not r["allowed"]
    assert "only-registered-tools" in r["body"]["policies"]


def test_mcp_session_plumbing_and_listing(running: Running) -> None:
    for method in ("initialize", "notifications/initialized", "tools/list"):
        r = running.ask({"spiffe": ANALYST, "url": FINANCE_MCP,
                         "body": {"jsonrpc": "2.0", "id": 1, "method": method}})
        assert r["allowed"], (method, r)
    r = running.ask({"spiffe": ANALYST, "url": FINANCE_MCP, "method": "GET"})
    assert r["allowed"] and r["metadata"]["action"] == "connectMCP"


def _a2a(spiffe: str, to: str, delegation: str = "") -> dict[str, object]:
    spec: dict[str, object] = {
        "spiffe": spiffe, "url": f"http://{to}.a2a.svc:9000/a2a",
        "body": {"jsonrpc": "2.0", "id": 1, "method": "message/send",
                 "params": {"message": {"role": "user", "parts": [{"text": "hi"}]}}}}
    if delegation:
        spec["delegation"] = delegation
    return spec


def test_a2a_delegation_three_hops_deep_is_refused(running: Running) -> None:
    token = ""
    depths = []
    for hop in range(1, 5):  # a1 -> a2 -> a3 -> a4 -> a5
        caller = f"spiffe://cluster.local/ns/a2a/sa/a{hop}"
        r = running.ask(_a2a(caller, f"a{hop + 1}", token))
        depths.append(int(r["metadata"]["delegation_depth"]))
        if hop < 4:
            assert r["allowed"], r
            token = r["headers"]["authorization"].removeprefix("Bearer ")
        else:
            assert not r["allowed"]
            assert r["body"]["policies"] == ["delegation-depth-limit"]
            assert r["metadata"]["on_behalf_of"] == "a2a/a1"
            assert r["metadata"]["chain"] == ["a2a/a1", "a2a/a2", "a2a/a3", "a2a/a4"]
    assert depths == [0, 1, 2, 3]


def test_delegation_token_only_works_for_its_audience(running: Running) -> None:
    r = running.ask(_a2a("spiffe://cluster.local/ns/a2a/sa/a1", "a2"))
    token = r["headers"]["authorization"].removeprefix("Bearer ")
    # minted for a2; a3 presenting it is refused
    stolen = running.ask(_a2a("spiffe://cluster.local/ns/a2a/sa/a3", "a4", token))
    assert not stolen["allowed"]
    assert "not for the caller" in stolen["body"]["reason"]


def test_llm_model_the_policy_forbids_is_refused(running: Running) -> None:
    spec = {"spiffe": ANALYST, "url": "https://llm.ml.internal/v1/chat/completions",
            "body": {"model": "llama-3.3-70b", "messages": []}}
    assert running.ask(spec)["allowed"]
    spec["body"] = {"model": "gpt-5", "messages": []}
    r = running.ask(spec)
    assert not r["allowed"] and r["metadata"]["action"] == "callLLM"
    anthropic = {"spiffe": ANALYST, "url": "https://llm.ml.internal/v1/messages",
                 "body": {"model": "claude-opus", "max_tokens": 10, "messages": []}}
    assert not running.ask(anthropic)["allowed"]


def test_spiffe_mechanism(running: Running) -> None:
    assert running.ask(mcp_call("get_balance"))["allowed"]
    unknown = running.ask(mcp_call("get_balance", spiffe="spiffe://cluster.local/ns/x/sa/y"))
    assert unknown["status"] == 401 and "not registered" in unknown["body"]["reason"]
    # registered, but its registration says oidc: the SPIFFE ID alone is not accepted
    other = running.ask(mcp_call(
        "get_balance", spiffe="spiffe://cluster.local/ns/ops/sa/spiffe-but-oidc"))
    assert other["status"] == 401
    assert "authenticates with `oidc`" in other["body"]["reason"]
    assert other["headers"]["www-authenticate"].startswith("Bearer")


def test_service_identity_is_governed_like_an_agent(running: Running) -> None:
    # nightly is a ServiceIdentity in finance-agents; the policy wants `principal is Agent`
    r = running.ask(mcp_call("get_balance", spiffe="spiffe://cluster.local/ns/finance/sa/nightly"))
    assert r["status"] == 403 and r["metadata"]["caller"] == "finance/nightly"


def test_socket_is_0660_in_a_created_directory(running: Running) -> None:
    st = os.stat(running.socket)
    assert stat.S_ISSOCK(st.st_mode)
    assert stat.S_IMODE(st.st_mode) == 0o660
    assert not st.st_mode & stat.S_IWOTH


def test_health_service(running: Running) -> None:
    with grpc.insecure_channel(f"unix:{running.socket}") as ch:
        stub = health_pb2_grpc.HealthStub(ch)
        for svc in ("", "envoy.service.auth.v3.Authorization"):
            resp = stub.Check(health_pb2.HealthCheckRequest(service=svc), timeout=5)
            assert resp.status == health_pb2.HealthCheckResponse.SERVING


def test_span_is_parented_on_the_incoming_trace(running: Running) -> None:
    trace_id, parent = "4bf92f3577b34da6a3ce929d0e0e4736", "00f067aa0ba902b7"
    spec = mcp_call("get_balance", headers={"traceparent": f"00-{trace_id}-{parent}-01"})
    r = running.ask(spec)
    spans = [s for s in running.spans.get_finished_spans() if s.name == "manul.authz.check"]
    assert len(spans) == 1
    span = spans[0]
    assert span.parent is not None
    assert f"{span.parent.span_id:016x}" == parent
    assert f"{span.context.trace_id:032x}" == trace_id
    attrs = dict(span.attributes or {})
    assert attrs["manul.caller"] == "finance/analyst"
    assert attrs["manul.decision"] == "allow"
    assert attrs["manul.policies"] == ("finance-agents-invoke-finance-tools",)
    assert attrs["manul.resource"] == 'Tool::"finance/finance-tools/get_balance"'
    assert r["metadata"]["trace_id"] == trace_id


def test_audit_record_and_metrics_per_decision(running: Running) -> None:
    def count(decision: str) -> float:
        return REGISTRY.get_sample_value("manul_authz_decisions_total",
                                         {"decision": decision}) or 0.0

    allow0, deny0 = count("allow"), count("deny")
    lat0 = REGISTRY.get_sample_value("manul_authz_decision_seconds_count") or 0.0
    running.ask(mcp_call("get_balance"))
    running.ask(mcp_call("transfer_funds"))
    assert count("allow") == allow0 + 1 and count("deny") == deny0 + 1
    assert REGISTRY.get_sample_value("manul_authz_decision_seconds_count") == lat0 + 2
    lines = [json.loads(x) for x in running.audit.read_text().splitlines()]
    authz = [x for x in lines if x["kind"] == "authz"]
    assert [x["decision"] for x in authz[-2:]] == ["allow", "deny"]
    assert authz[-1]["policies"] == ["payments-need-low-risk"]
    assert authz[-1]["caller"] == "finance/analyst"
    assert authz[-2]["token_jti"]


def test_node_facts_quarantine_and_anomaly(running: Running) -> None:
    running.facts.set_quarantined("finance/analyst")
    r = running.ask(mcp_call("get_balance"))
    assert not r["allowed"] and r["body"]["policies"] == ["quarantined-callers"]
    running.facts.set_quarantined("finance/analyst", False)
    assert running.ask(mcp_call("get_balance"))["allowed"]
    running.facts.set_anomaly_level("finance/payer", 2)
    r = running.ask(mcp_call("transfer_funds", spiffe=PAYER))
    assert r["body"]["policies"] == ["anomalous-callers-no-payments"]


def test_malformed_check_request_is_denied(running: Running) -> None:
    resp = ask(running.socket, external_auth_pb2.CheckRequest())
    assert resp.HasField("denied_response")
    assert "malformed CheckRequest" in json.loads(resp.denied_response.body)["reason"]
    # the server still answers afterwards
    assert running.ask(mcp_call("get_balance"))["allowed"]


def test_truncated_and_withheld_bodies_are_explicit(running: Running) -> None:
    r = running.ask(mcp_call("get_balance", truncated=True))
    assert not r["allowed"] and "truncated the body" in r["body"]["reason"]
    spec = {"spiffe": ANALYST, "url": FINANCE_MCP, "headers": {"content-length": "80"}}
    r = running.ask(spec)
    assert not r["allowed"] and "did not send the body" in r["body"]["reason"]


def test_no_policy_denies_with_the_reason(tmp_path: Path,
                                          folders: tuple[Path, Path]) -> None:
    reg, _ = folders
    empty = tmp_path / "empty"
    empty.mkdir()
    r = start_server(tmp_path, reg, empty)
    try:
        out = r.ask(mcp_call("get_balance"))
        assert not out["allowed"] and "no policy loaded" in out["body"]["reason"]
        with grpc.insecure_channel(f"unix:{r.socket}") as ch:
            resp = health_pb2_grpc.HealthStub(ch).Check(health_pb2.HealthCheckRequest(),
                                                        timeout=5)
        assert resp.status == health_pb2.HealthCheckResponse.NOT_SERVING
    finally:
        r.server.stop()


def _wait(pred: object, timeout: float = 5.0) -> None:
    end = time.monotonic() + timeout
    while time.monotonic() < end:
        if pred():  # type: ignore[operator]
            return
        time.sleep(0.02)
    raise AssertionError("condition not reached")


def test_invalid_policy_keeps_the_previous_set(running: Running,
                                               folders: tuple[Path, Path]) -> None:
    _, pol = folders
    v0 = running.server.sources.snapshot.version
    (pol / "broken.cedar").write_text('permit(principal, action == Action::"fly", resource);')
    _wait(lambda: running.server.sources.snapshot.version > v0)
    snap = running.server.sources.snapshot
    assert "broken.cedar" in snap.policy_error
    assert running.ask(mcp_call("get_balance"))["allowed"]  # previous set still in force
    (pol / "broken.cedar").write_text(
        '@id("deny-all-tools") forbid(principal, action == Action::"invokeTool", resource);')
    _wait(lambda: running.server.sources.snapshot.policy_error == "")
    r = running.ask(mcp_call("get_balance"))
    assert not r["allowed"] and r["body"]["policies"] == ["deny-all-tools"]


def test_registry_change_applies(running: Running, folders: tuple[Path, Path]) -> None:
    reg, _ = folders
    text = (reg / "all.yaml").read_text().replace("name: analyst, namespace: finance",
                                                  "name: analyst2, namespace: finance")
    v0 = running.server.sources.snapshot.version
    (reg / "all.yaml").write_text(text)
    _wait(lambda: running.server.sources.snapshot.version > v0)
    r = running.ask(mcp_call("get_balance"))
    assert r["allowed"] and r["metadata"]["caller"] == "finance/analyst2"


def test_request_file_round_trip(running: Running, tmp_path: Path) -> None:
    spec = mcp_call("get_balance")
    req = build_check_request(spec)
    from google.protobuf import json_format  # type: ignore[import-untyped]
    again = build_check_request(json.loads(json_format.MessageToJson(req)))
    assert again == req
    assert running.ask(json.loads(json_format.MessageToJson(req)))["allowed"]


def test_a_registry_that_turns_binary_keeps_the_previous_one_and_says_so(
        running: Running) -> None:
    folder = Path(running.server.config.registry)
    victim = sorted(folder.glob("*.yaml"))[0]
    good = victim.read_bytes()
    victim.write_bytes(b"\x7fELF\x02\x01\x01\x00\xff\xfe")
    try:
        deadline = time.monotonic() + 10
        while time.monotonic() < deadline:
            ok, detail = running.server.health_detail()
            if detail["registry_error"]:
                break
            time.sleep(0.05)
        assert "is not UTF-8 text" in detail["registry_error"], detail
        assert ok  # the previous registry stays in force
        assert running.ask(mcp_call("get_balance"))["allowed"]
    finally:
        victim.write_bytes(good)
        os.utime(victim)
    deadline = time.monotonic() + 10
    while running.server.health_detail()[1]["registry_error"] and time.monotonic() < deadline:
        time.sleep(0.05)
    assert running.server.health_detail()[1]["registry_error"] is None
