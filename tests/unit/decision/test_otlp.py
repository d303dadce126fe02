"""Spans over OTLP: the decision point's span reaches a collector.

The collector is a gRPC server built from the published OpenTelemetry
protos (`opentelemetry.proto.collector.trace.v1`) on loopback; the
exporter is configured only by the standard environment variables, as a
DaemonSet would set them."""

from __future__ import annotations

from collections.abc import Iterator
from concurrent import futures
from pathlib import Path
from typing import Any

import grpc
import pytest
from opentelemetry.proto.collector.trace.v1 import trace_service_pb2, trace_service_pb2_grpc

from agent.decision.client import ask, build_check_request, response_summary
from agent.decision.server import DecisionServer, ServerConfig
from agent.errors import ConfigError
from agent.telemetry.tracing import provider_from_env
from tests.unit.decision.authz_helpers import mcp_call


class Collector(trace_service_pb2_grpc.TraceServiceServicer):  # type: ignore[misc]
    def __init__(self) -> None:
        self.requests: list[Any] = []

    def Export(self, request: Any, context: Any) -> Any:
        self.requests.append(request)
        return trace_service_pb2.ExportTraceServiceResponse()


@pytest.fixture
def collector() -> Iterator[tuple[Collector, int]]:
    c = Collector()
    server = grpc.server(futures.ThreadPoolExecutor(max_workers=2))
    trace_service_pb2_grpc.add_TraceServiceServicer_to_server(c, server)
    port = server.add_insecure_port("127.0.0.1:0")
    server.start()
    yield c, port
    server.stop(0)


def test_the_decision_span_reaches_the_collector(
        collector: tuple[Collector, int], folders: tuple[Path, Path], tmp_path: Path,
        monkeypatch: pytest.MonkeyPatch) -> None:
    received, port = collector
    monkeypatch.setenv("OTEL_EXPORTER_OTLP_ENDPOINT", f"http://127.0.0.1:{port}")
    monkeypatch.setenv("OTEL_EXPORTER_OTLP_INSECURE", "true")
    monkeypatch.setenv("OTEL_SERVICE_NAME", "manul-test")
    provider = provider_from_env()
    assert provider is not None
    reg, pol = folders
    server = DecisionServer(ServerConfig(registry=reg, policies=pol, http="",
                                         socket=tmp_path / "run" / "authz.sock"),
                            tracer_provider=provider).start()
    trace_id = "4bf92f3577b34da6a3ce929d0e0e4736"
    try:
        r = response_summary(ask(str(server.config.socket), build_check_request(mcp_call(
            "get_balance", headers={"traceparent": f"00-{trace_id}-00f067aa0ba902b7-01"}))))
        assert r["metadata"]["trace_id"] == trace_id
    finally:
        server.stop()
        provider.shutdown()  # flushes the batch
    spans = [(rs, s) for req in received.requests for rs in req.resource_spans
             for ss in rs.scope_spans for s in ss.spans if s.name == "manul.authz.check"]
    assert len(spans) == 1, received.requests
    rs, span = spans[0]
    service = {a.key: a.value.string_value for a in rs.resource.attributes}["service.name"]
    assert service == "manul-test"
    assert span.trace_id.hex() == trace_id
    attrs = {a.key: a.value for a in span.attributes}
    assert attrs["manul.decision"].string_value == "allow"
    assert attrs["manul.caller"].string_value == "finance/analyst"


@pytest.mark.parametrize(("env", "message"), [
    ({"OTEL_EXPORTER_OTLP_PROTOCOL": "http/protobuf"}, "exports over `grpc`"),
    ({"OTEL_TRACES_EXPORTER": "zipkin"}, "with `otlp`"),
])
def test_what_is_not_built_in_is_a_clear_error(env: dict[str, str],
                                               message: str,
                                               monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("OTEL_EXPORTER_OTLP_ENDPOINT", "http://127.0.0.1:4317")
    for k, v in env.items():
        monkeypatch.setenv(k, v)
    with pytest.raises(ConfigError, match=message):
        provider_from_env()


def test_no_endpoint_or_none_means_no_export(monkeypatch: pytest.MonkeyPatch) -> None:
    for k in ("OTEL_EXPORTER_OTLP_ENDPOINT", "OTEL_EXPORTER_OTLP_TRACES_ENDPOINT"):
        monkeypatch.delenv(k, raising=False)
    assert provider_from_env() is None
    monkeypatch.setenv("OTEL_EXPORTER_OTLP_ENDPOINT", "http://127.0.0.1:4317")
    monkeypatch.setenv("OTEL_TRACES_EXPORTER", "none")
    assert provider_from_env() is None
