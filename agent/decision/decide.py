"""One decision, start to end, with no gRPC in sight.

`DecisionPoint.check(incoming)` runs: authenticate the caller (identity.py)
-> find the destination and map the request to a Cedar action and resource
(destination.py, request.py) -> verify the delegation chain (delegation.py)
-> build the context with what the node knows (facts.py) -> evaluate
(evaluate.py) -> on allow, mint the per-hop token (tokens.py). It never
raises: every failure is a denial with a reason a person can act on (401
when the caller is not authenticated, 403 otherwise), and an unexpected
exception is logged and denied. Each decision gets one OpenTelemetry span
parented on the request's `traceparent` (none when nothing records spans), a
metric sample and an audit record. Inside `jwks.no_fetch()` (the gRPC event
loop) a decision that must fetch an issuer's keys raises `FetchNeeded`
instead, and is decided again on a thread (`front.py`).
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import Any, Protocol

from opentelemetry import trace
from opentelemetry.trace import SpanKind

from agent.decision.checkrequest import Incoming
from agent.decision.delegation import DELEGATION_HEADER, Chain, DelegationVerifier, direct
from agent.decision.destination import audience_of
from agent.decision.entities import caller_uid, uid_str
from agent.decision.errors import (
    DecisionError,
    DelegationError,
    IdentityError,
    RequestError,
    TokenError,
)
from agent.decision.evaluate import CedarRequest
from agent.decision.facts import NodeFacts
from agent.decision.identity import Authenticator
from agent.decision.jwks import FetchNeeded
from agent.decision.request import map_request
from agent.decision.sources import Snapshot
from agent.decision.tokens import TokenMinter
from agent.registry import Agent
from agent.telemetry.metrics import AUTHZ_DECISIONS, AUTHZ_LATENCY
from agent.telemetry.tracing import parent_context, trace_id_of

log = logging.getLogger(__name__)


class AuditSink(Protocol):
    """Where decision records go: the agent's `AuditLog`, or a worker's relay to it."""

    def write(self, kind: str, /, **fields: Any) -> Any: ...


def observe_metrics(decision: str, seconds: float) -> None:
    """The decision counter and latency histogram of this process."""
    AUTHZ_DECISIONS.labels(decision=decision).inc()
    AUTHZ_LATENCY.observe(seconds)


def observe_batch(counts: dict[str, int], latencies: list[float]) -> None:
    """A decision worker's batch, into the same metrics (`agent.decision.pool`)."""
    for decision, n in counts.items():
        AUTHZ_DECISIONS.labels(decision=decision).inc(n)
    for seconds in latencies:
        AUTHZ_LATENCY.observe(seconds)


@dataclass(frozen=True)
class Outcome:
    allowed: bool
    status: int  # 200, or the HTTP status of the denial (401, 403)
    reason: str
    policies: tuple[str, ...] = ()
    caller: str = ""  # registry key
    principal: str = ""  # Cedar uid
    mechanism: str = ""
    on_behalf_of: str = ""
    chain: tuple[str, ...] = ()
    delegation_depth: int = 0
    action: str = ""
    resource: str = ""
    summary: str = ""
    token: str = ""
    token_claims: Mapping[str, Any] = field(default_factory=dict)
    request_id: str = ""
    evaluated: int = 0
    trace_id: str = ""
    cedar: Mapping[str, Any] = field(default_factory=dict)  # the Cedar request, for explain

    @property
    def decision(self) -> str:
        return "allow" if self.allowed else "deny"


def cedar_datetime(t: float) -> dict[str, Any]:
    return {"__extn": {"fn": "datetime", "arg": time.strftime("%Y-%m-%dT%H:%M:%SZ",
                                                              time.gmtime(t))}}


class DecisionPoint:
    def __init__(self, snapshot: Callable[[], Snapshot], *, authenticator: Authenticator,
                 delegation: DelegationVerifier, minter: TokenMinter,
                 facts: NodeFacts | None = None, audit: AuditSink | None = None,
                 tracer: trace.Tracer | None = None,
                 clock: Callable[[], float] = time.time,
                 observe: Callable[[str, float], None] = observe_metrics,
                 spans: bool = True) -> None:
        """`observe(decision, seconds)`: counts each decision (a worker process
        passes it on to the agent's metrics). `spans=False`: nothing records
        spans (no exporter), so none is made; the trace id is read from the
        request's `traceparent`."""
        self.snapshot = snapshot
        self.authenticator = authenticator
        self.delegation = delegation
        self.minter = minter
        self.facts = facts or NodeFacts()
        self.audit = audit
        self.tracer = tracer or trace.get_tracer("manul.decision")
        self.clock = clock
        self.observe = observe
        self.spans = spans

    # -- entry points ------------------------------------------------------

    def check_proto(self, req: Any) -> Outcome:
        """Decide an `envoy.service.auth.v3.CheckRequest`."""
        start = time.perf_counter()
        try:
            inc = Incoming.from_proto(req)
        except RequestError as e:
            return self._finish(None, _deny(403, f"malformed CheckRequest: {e}"), start)
        except Exception as e:
            log.exception("cannot read a CheckRequest")
            return self._finish(None, _deny(403, f"malformed CheckRequest: {type(e).__name__}"),
                                start)
        return self.check(inc, start)

    def check(self, inc: Incoming, start: float | None = None) -> Outcome:
        start = time.perf_counter() if start is None else start
        if not self.spans:
            outcome = _with(self._decide_safely(inc), trace_id=trace_id_of(inc.headers),
                            request_id=inc.request_id)
            return self._finish(inc, outcome, start)
        span = self.tracer.start_span("manul.authz.check", context=parent_context(inc.headers),
                                      kind=SpanKind.SERVER)
        try:
            outcome = self._decide_safely(inc)
        except FetchNeeded:
            span.end()  # not decided here: the caller decides again where it may wait
            raise
        ctx = span.get_span_context()
        outcome = _with(outcome, trace_id=f"{ctx.trace_id:032x}" if ctx.is_valid else "",
                        request_id=inc.request_id)
        _annotate(span, outcome)
        span.end()
        return self._finish(inc, outcome, start)

    def _decide_safely(self, inc: Incoming) -> Outcome:
        try:
            return self._decide(inc)
        except FetchNeeded:
            raise
        except Exception as e:
            log.exception("decision failed")
            return _deny(403, f"internal error: {type(e).__name__}: the request is "
                              "denied (fail closed)")

    # -- the pipeline ------------------------------------------------------

    def _decide(self, inc: Incoming) -> Outcome:
        snap = self.snapshot()
        try:
            auth = self.authenticator.authenticate(inc, snap.callers)
        except IdentityError as e:
            return _deny(401, f"unauthenticated: {e}")
        caller = auth.caller
        key = caller.meta.key
        principal = uid_str(caller_uid(caller))
        mech = auth.mechanism.value
        if snap.evaluator is None:
            return Outcome(False, 403, snap.policy_error or "no policy loaded", caller=key,
                           principal=principal, mechanism=mech)
        try:
            dest = snap.destinations.resolve(inc)
            mapped = map_request(inc, dest)
            chain = self._chain(inc, caller, key)
        except (RequestError, DelegationError) as e:
            return Outcome(False, 403, str(e), caller=key, principal=principal, mechanism=mech)
        facts = self.facts.get(key)
        members = chain.members
        context = {
            "time": cedar_datetime(self.clock()), "authn": mech,
            "on_behalf_of": chain.subject, "chain": members,
            "delegation_depth": chain.depth, "quarantined": facts.quarantined,
            "anomaly_level": facts.anomaly_level, **mapped.context}
        req = CedarRequest(caller_uid(caller), mapped.action, mapped.resource, context,
                           mapped.extra)
        verdict = snap.evaluator.decide(req)
        resource = uid_str(mapped.resource)
        token, reason = "", verdict.reason
        claims: dict[str, Any] = {}
        if verdict.allowed:
            try:
                token, claims = self.minter.mint(
                    subject=chain.subject, audience=dest.audience, actors=chain.next_actors(),
                    action=mapped.action.value, resource=resource)
            except TokenError as e:
                reason = f"allowed, but no token could be minted: {e}"
        allowed = verdict.allowed and bool(token)
        return Outcome(
            allowed, 200 if allowed else 403, reason, policies=verdict.policies, caller=key,
            principal=principal, mechanism=mech, on_behalf_of=chain.subject,
            chain=tuple(members), delegation_depth=chain.depth, action=mapped.action.value,
            resource=resource, summary=mapped.summary, token=token, token_claims=claims,
            evaluated=verdict.evaluated, cedar=req.as_cedar())

    def _chain(self, inc: Incoming, caller: Any, key: str) -> Chain:
        token = inc.header(DELEGATION_HEADER).strip()
        if not token:
            return direct(key)
        aud = audience_of(caller) if isinstance(caller, Agent) else f"manul:{caller.kind}/{key}"
        return self.delegation.chain(token, key, aud)

    # -- reporting ---------------------------------------------------------

    def _finish(self, inc: Incoming | None, outcome: Outcome, start: float) -> Outcome:
        elapsed = time.perf_counter() - start
        self.observe(outcome.decision, elapsed)
        if self.audit is not None:
            self.audit.write(
                "authz", time=time.time(), decision=outcome.decision, status=outcome.status,
                reason=outcome.reason, caller=outcome.caller, mechanism=outcome.mechanism,
                on_behalf_of=outcome.on_behalf_of, chain=list(outcome.chain),
                action=outcome.action, resource=outcome.resource, summary=outcome.summary,
                policies=list(outcome.policies), request_id=outcome.request_id,
                trace_id=outcome.trace_id, token_jti=outcome.token_claims.get("jti", ""),
                host=inc.host if inc else "", path=inc.path if inc else "",
                latency_ms=round(elapsed * 1000, 3))
        return outcome


def _deny(status: int, reason: str) -> Outcome:
    return Outcome(False, status, reason)


def _with(o: Outcome, **kw: Any) -> Outcome:
    return Outcome(**{**o.__dict__, **kw})  # dataclasses.replace, at a third of the cost


def _annotate(span: trace.Span, o: Outcome) -> None:
    if not span.is_recording():
        return  # not sampled, or nothing exports spans: skip building the attributes
    span.set_attributes({
        "manul.decision": o.decision, "manul.reason": o.reason[:512],
        "manul.caller": o.caller, "manul.on_behalf_of": o.on_behalf_of,
        "manul.delegation_depth": o.delegation_depth, "manul.action": o.action,
        "manul.resource": o.resource, "manul.policies": list(o.policies),
        "http.response.status_code": o.status})


__all__ = ["DecisionError", "DecisionPoint", "Outcome"]
