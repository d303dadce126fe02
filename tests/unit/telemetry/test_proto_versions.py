"""Two installed packages own the OpenTelemetry protos: xds-protos (an old copy,
for Envoy's configs) and opentelemetry-proto (the current one, which the OTLP
exporter needs). scripts/install-deps installs the current one last; if it did
not, the exporter would fail to import on a fresh machine (pip's order is not
fixed). This test fails then, here and in CI."""

from __future__ import annotations


def test_the_otlp_exporter_and_the_envoy_protos_load_together() -> None:
    from envoy.service.auth.v3 import external_auth_pb2  # the decision point's API
    from opentelemetry.exporter.otlp.proto.grpc.trace_exporter import OTLPSpanExporter
    from opentelemetry.proto.common.v1 import common_pb2

    assert hasattr(common_pb2, "InstrumentationScope")
    assert external_auth_pb2.CheckRequest.DESCRIPTOR.full_name.startswith("envoy.")
    assert OTLPSpanExporter is not None
