"""OpenTelemetry tracing: the tracer provider, and W3C trace context from headers.

The decision point parents its span on the checked request's
`traceparent`/`tracestate`, so the decision shows up inside the gateway's
own trace. `make_provider` builds an SDK provider with whichever exporter
the caller passes (tests pass the SDK's in-memory exporter; `manul authz
serve --trace-file` a JSON-lines file exporter); `provider_from_env` builds
the OTLP/gRPC one the OpenTelemetry environment variables ask for (`manul
run`, `manul authz serve`). Without an exporter, spans are not recorded:
they carry the caller's trace id and cost little.
"""

from __future__ import annotations

import json
import os
import re
import threading
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import IO

from opentelemetry import context as otel_context
from opentelemetry import trace
from opentelemetry.sdk.resources import Resource
from opentelemetry.sdk.trace import ReadableSpan, TracerProvider
from opentelemetry.sdk.trace.export import (
    BatchSpanProcessor,
    SimpleSpanProcessor,
    SpanExporter,
    SpanExportResult,
)
from opentelemetry.sdk.trace.sampling import ALWAYS_OFF
from opentelemetry.trace.propagation.tracecontext import TraceContextTextMapPropagator

from agent.errors import ConfigError

_PROPAGATOR = TraceContextTextMapPropagator()
TRACE_HEADERS = ("traceparent", "tracestate")


def make_provider(service: str = "manul", exporter: SpanExporter | None = None,
                  *, batch: bool = True) -> TracerProvider:
    """A fresh SDK provider (not installed globally), exporting to `exporter` if given.

    Without an exporter nothing would ever read a recorded span, so none is
    recorded (ALWAYS_OFF): spans still carry the caller's trace id, and
    building their attributes is skipped (`Span.is_recording()`)."""
    resource = Resource.create({"service.name": service})
    if exporter is None:
        return TracerProvider(resource=resource, sampler=ALWAYS_OFF)
    provider = TracerProvider(resource=resource)  # the SDK's sampler (parent-based)
    proc = BatchSpanProcessor(exporter) if batch else SimpleSpanProcessor(exporter)
    provider.add_span_processor(proc)
    return provider


def provider_from_env(service: str = "manul") -> TracerProvider | None:
    """An SDK provider exporting over OTLP/gRPC when the OpenTelemetry environment
    asks for one, else None (spans stay unrecorded).

    Follows the OpenTelemetry conventions: `OTEL_TRACES_EXPORTER=none` turns
    it off; `OTEL_EXPORTER_OTLP_TRACES_ENDPOINT` or `OTEL_EXPORTER_OTLP_ENDPOINT`
    turns it on (the exporter reads the rest itself: `..._HEADERS`,
    `..._INSECURE`, `..._CERTIFICATE`, `..._COMPRESSION`, `..._TIMEOUT`);
    `OTEL_SERVICE_NAME` names the service. Only the `grpc` protocol is built
    in: asking for `http/protobuf` is a `ConfigError` that says so.
    """
    env = os.environ
    exporters = env.get("OTEL_TRACES_EXPORTER", "otlp").strip().lower()
    endpoint = env.get("OTEL_EXPORTER_OTLP_TRACES_ENDPOINT") or env.get(
        "OTEL_EXPORTER_OTLP_ENDPOINT")
    if exporters == "none" or not endpoint:
        return None
    if "otlp" not in {e.strip() for e in exporters.split(",")}:
        raise ConfigError(f"OTEL_TRACES_EXPORTER=`{exporters}`: Manul exports traces with "
                          "`otlp` (or `none`)")
    protocol = (env.get("OTEL_EXPORTER_OTLP_TRACES_PROTOCOL")
                or env.get("OTEL_EXPORTER_OTLP_PROTOCOL") or "grpc").strip()
    if protocol != "grpc":
        raise ConfigError(f"OTLP protocol `{protocol}`: Manul exports over `grpc`; set "
                          "OTEL_EXPORTER_OTLP_PROTOCOL=grpc and point the endpoint at the "
                          "collector's gRPC port (4317)")
    from opentelemetry.exporter.otlp.proto.grpc.trace_exporter import OTLPSpanExporter

    return make_provider(env.get("OTEL_SERVICE_NAME") or service, OTLPSpanExporter())


def records(provider: TracerProvider | None) -> bool:
    """Whether spans of `provider` can ever be recorded (an exporter reads them)."""
    return provider is not None and provider.sampler is not ALWAYS_OFF


_TRACEPARENT = re.compile(r"^([0-9a-f]{2})-([0-9a-f]{32})-([0-9a-f]{16})-([0-9a-f]{2})(-.*)?$")


def trace_id_of(headers: Mapping[str, str]) -> str:
    """The trace id a valid W3C `traceparent` carries, else "" (no span needed):
    the rules of the W3C propagator (lower-case hex, version ff invalid, no
    all-zero ids, nothing after the flags in version 00)."""
    m = _TRACEPARENT.match(headers.get("traceparent", "").strip())
    if m is None:
        return ""
    version, tid, parent, _, rest = m.groups()
    if version == "ff" or tid == "0" * 32 or parent == "0" * 16 or (version == "00" and rest):
        return ""
    return tid


def parent_context(headers: Mapping[str, str]) -> otel_context.Context:
    """The W3C trace context carried by `headers` (lower-case names); empty if none or invalid."""
    carrier = {k: headers[k] for k in TRACE_HEADERS if k in headers}
    if not carrier:
        return otel_context.Context()
    return _PROPAGATOR.extract(carrier)


def inject(headers: dict[str, str], ctx: otel_context.Context | None = None) -> None:
    """Write the current (or given) span's context into `headers`."""
    _PROPAGATOR.inject(headers, context=ctx)


def tracer(provider: TracerProvider | None, name: str = "manul") -> trace.Tracer:
    return (provider or trace.get_tracer_provider()).get_tracer(name)


class JsonLinesExporter(SpanExporter):
    """One JSON object per finished span, appended to a file (or a stream)."""

    def __init__(self, out: str | Path | IO[str]) -> None:
        self._lock = threading.Lock()
        if isinstance(out, str | Path):
            self._stream: IO[str] = open(out, "a", buffering=1)  # noqa: SIM115
            self._own = True
        else:
            self._stream, self._own = out, False

    def export(self, spans: Sequence[ReadableSpan]) -> SpanExportResult:
        lines = []
        for s in spans:
            ctx = s.get_span_context()
            lines.append(json.dumps({
                "name": s.name,
                "trace_id": f"{ctx.trace_id:032x}" if ctx else "",
                "span_id": f"{ctx.span_id:016x}" if ctx else "",
                "parent_span_id": f"{s.parent.span_id:016x}" if s.parent else "",
                "start": s.start_time, "end": s.end_time,
                "status": s.status.status_code.name,
                "attributes": dict(s.attributes or {}),
            }, default=str))
        with self._lock:
            try:
                self._stream.write("".join(line + "\n" for line in lines))
            except OSError:
                return SpanExportResult.FAILURE
        return SpanExportResult.SUCCESS

    def shutdown(self) -> None:
        if self._own:
            self._stream.close()
