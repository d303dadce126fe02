"""`trace_id_of`: the trace id of a W3C traceparent, by the propagator's own rules."""

from __future__ import annotations

from hypothesis import given
from hypothesis import strategies as st

from agent.telemetry.tracing import parent_context, trace_id_of

TID, PARENT = "4bf92f3577b34da6a3ce929d0e0e4736", "00f067aa0ba902b7"


def _propagator(value: str) -> str:
    """What OpenTelemetry's W3C propagator reads from the same header."""
    from opentelemetry import trace

    ctx = trace.get_current_span(parent_context({"traceparent": value})).get_span_context()
    return f"{ctx.trace_id:032x}" if ctx.is_valid else ""


def test_valid_and_invalid_traceparents() -> None:
    assert trace_id_of({"traceparent": f"00-{TID}-{PARENT}-01"}) == TID
    assert trace_id_of({"traceparent": f" 00-{TID}-{PARENT}-00 "}) == TID
    assert trace_id_of({"traceparent": f"01-{TID}-{PARENT}-01-later"}) == TID
    for bad in ("", "junk", f"00-{TID}-{PARENT}-01-extra", f"ff-{TID}-{PARENT}-01",
                f"00-{'0' * 32}-{PARENT}-01", f"00-{TID}-{'0' * 16}-01",
                f"00-{TID.upper()}-{PARENT}-01", f"00-{TID[:-2]}_1-{PARENT}-01",
                f"00-+{TID[1:]}-{PARENT}-01", f"00- {TID[1:]}-{PARENT}-01"):
        assert trace_id_of({"traceparent": bad}) == "", bad
    assert trace_id_of({}) == ""


@given(st.text(alphabet="0123456789abcdefABCDEF-_+ x", max_size=70))
def test_agrees_with_the_w3c_propagator(value: str) -> None:
    assert trace_id_of({"traceparent": value}) == _propagator(value)


@given(st.from_regex(r"\A[0-9a-f]{2}-[0-9a-f]{32}-[0-9a-f]{16}-[0-9a-f]{2}\Z"))
def test_agrees_on_well_formed_headers(value: str) -> None:
    assert trace_id_of({"traceparent": value}) == _propagator(value)
