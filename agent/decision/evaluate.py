"""Cedar evaluation with pre-parsed, sliced policy sets.

For a request (principal, action, resource), only policies whose scope
holds can be satisfied: Cedar evaluates a policy as scope && conditions and
short-circuits, so a policy with a false scope neither permits, forbids nor
errors. `Evaluator` therefore evaluates the slice of policies the
`PolicyIndex` admits. The slice is parsed once per distinct (action,
principal, resource) and kept in a bounded cache. The entities are parsed
once per snapshot into one cedarpy handle that every request shares (Cedar
looks entities up by uid, so a request costs the same against ten entities
or a hundred thousand); a request that brings entities (an unlisted tool)
gets only the closure its slice can reach, parsed for it (adding to the
shared handle would copy all of it). tests/unit/decision/test_slicing.py
checks, on generated policies and graphs, that the sliced decision and its
determining policies always equal the full set's.

Default deny: no applicable permit, an error, or no policy at all denies.
"""

from __future__ import annotations

import dataclasses
import threading
from collections import OrderedDict
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

import cedarpy

from agent.decision.entities import EntityGraph, EntityJson, Uid, uid_str
from agent.decision.policies import PolicyIndex
from agent.decision.schema import schema


@dataclass(frozen=True)
class CedarRequest:
    principal: Uid
    action: str
    resource: Uid
    context: dict[str, Any]
    # entities the request brings that the registry lacks (an unlisted tool)
    extra: Mapping[Uid, EntityJson] = field(default_factory=dict)

    def as_cedar(self) -> dict[str, Any]:
        return {"principal": {"type": self.principal[0], "id": self.principal[1]},
                "action": {"type": "Action", "id": self.action},
                "resource": {"type": self.resource[0], "id": self.resource[1]},
                "context": self.context}

    def describe(self) -> str:
        # str(): the action may be a StrEnum, whose repr is not Cedar
        return (f"{uid_str(self.principal)} -> {uid_str(('Action', str(self.action)))} -> "
                f"{uid_str(self.resource)}")


@dataclass(frozen=True)
class Verdict:
    allowed: bool
    policies: tuple[str, ...]  # the determining policies' ids
    reason: str
    errors: tuple[str, ...] = ()
    evaluated: int = 0  # policies in the slice


@dataclass(frozen=True)
class _Slice:
    ids: tuple[str, ...]
    policy_set: cedarpy.PolicySet | None
    # the context attributes the slice's policies read (None: all): Cedar
    # parses only these, and the others cannot change the decision
    context_keys: frozenset[str] | None = None


class Evaluator:
    """Decides Cedar requests for one (registry, policies) snapshot. Thread-safe."""

    def __init__(self, index: PolicyIndex, graph: EntityGraph, cache_size: int = 4096,
                 *, validate_requests: bool = False) -> None:
        self.index = index
        self.validate_requests = validate_requests
        self.graph = graph
        self._cache: OrderedDict[tuple[Any, ...], _Slice] = OrderedDict()
        self._sets: dict[tuple[str, ...], cedarpy.PolicySet] = {}
        self._cache_size = cache_size
        self._lock = threading.Lock()
        self._entities: cedarpy.Entities | None = None
        self._full: cedarpy.PolicySet | None = None

    def _own(self, req: CedarRequest) -> CedarRequest:
        """The request with only the entities it brings that the snapshot lacks:
        a tool the entities file declares is the file's, with its tool sets."""
        if req.extra and any(u in self.graph.entities for u in req.extra):
            return dataclasses.replace(req, extra={
                u: e for u, e in req.extra.items() if u not in self.graph.entities})
        return req

    def decide(self, req: CedarRequest) -> Verdict:
        req = self._own(req)
        sl = self._slice(req)
        if sl.policy_set is None:
            return Verdict(False, (), f"no policy applies to {req.describe()}")
        # Requests are built by request.py/decide.py in the schema's shape (tested in
        # test_schema.py), so the hot path skips Cedar's per-request schema check.
        cedar = req.as_cedar()
        if sl.context_keys is not None and not self.validate_requests:
            cedar["context"] = {k: v for k, v in req.context.items() if k in sl.context_keys}
        result = cedarpy.is_authorized(cedar, sl.policy_set, self._entities_for(req, sl.ids),
                                       schema() if self.validate_requests else None)
        return _verdict(result, req, len(sl.ids), self.index.order)

    def decide_full(self, req: CedarRequest) -> Verdict:
        """The same decision on the whole policy set (no slicing), checked by the schema."""
        req = self._own(req)
        if self._full is None:
            self._full = self.index.policy_set()
        result = cedarpy.is_authorized(req.as_cedar(), self._full,
                                       self._entities_for(req, tuple(self.index.policies)),
                                       schema())
        return _verdict(result, req, len(self.index), self.index.order)

    def _entities_for(self, req: CedarRequest, ids: tuple[str, ...]) -> cedarpy.Entities:
        """Every entity of the snapshot; for a request that brings its own (an
        unlisted tool), only the entities policies `ids` can reach from it.

        Adding to the shared handle would copy all of it (10 ms at 10,000
        entities): one unlisted tool call per request would be a way to stall
        the decision point. The closure is the few entities the evaluation can
        read (`EntityGraph.closure`), parsed for this request."""
        entities = self._entities
        if entities is None:
            parsed = cedarpy.Entities.from_json_str(self.graph.all_json())
            with self._lock:
                if self._entities is None:
                    self._entities = parsed
                entities = self._entities
        if not req.extra:
            return entities
        roots: set[Uid] = {req.principal, req.resource, ("Action", req.action), *req.extra}
        for pid in ids:
            roots |= self.index.policies[pid].literals
        uids = self.graph.closure(roots, req.extra)
        return cedarpy.Entities.from_json_str(self.graph.to_json(sorted(uids), req.extra))

    def slice_ids(self, req: CedarRequest) -> tuple[str, ...]:
        return self._slice(self._own(req)).ids

    def _slice(self, req: CedarRequest) -> _Slice:
        key = (req.action, req.principal, req.resource,
               tuple(sorted(req.extra)) if req.extra else ())
        with self._lock:
            hit = self._cache.get(key)
            if hit is not None:
                self._cache.move_to_end(key)
                return hit
        sl = self._build(req)
        with self._lock:
            self._cache[key] = sl
            if len(self._cache) > self._cache_size:
                self._cache.popitem(last=False)
        return sl

    def _ancestors(self, uid: Uid, extra: Mapping[Uid, EntityJson]) -> frozenset[Uid]:
        e = extra.get(uid)
        if e is None:
            return self.graph.ancestors(uid)
        direct = [(p["type"], p["id"]) for p in e["parents"]]
        out = set(direct)
        for p in direct:
            out |= self.graph.ancestors(p)
        return frozenset(out)

    def _build(self, req: CedarRequest) -> _Slice:
        p_anc = self._ancestors(req.principal, req.extra)
        r_anc = self._ancestors(req.resource, req.extra)
        ids = self.index.candidates(req.action, req.principal, p_anc, req.resource, r_anc)
        if not ids:
            return _Slice(ids, None)
        with self._lock:
            ps = self._sets.get(ids)
        if ps is None:
            ps = self.index.policy_set(ids)
            with self._lock:
                if len(self._sets) < self._cache_size:
                    self._sets[ids] = ps
        keys: set[str] | None = set()
        for pid in ids:
            reads = self.index.policies[pid].context_reads
            if reads is None or keys is None:
                keys = None
            else:
                keys |= reads
        return _Slice(ids, ps, None if keys is None else frozenset(keys))


def _verdict(result: cedarpy.AuthzResult, req: CedarRequest, evaluated: int,
             order: Mapping[str, int]) -> Verdict:
    # Cedar reports determining policies in no particular order; use load order
    reasons = tuple(sorted(result.diagnostics.reasons, key=lambda r: order.get(r, len(order))))
    errors = tuple(result.diagnostics.errors)
    if result.decision is cedarpy.Decision.Allow:
        why = "permitted by " + ", ".join(f"`{r}`" for r in reasons)
        return Verdict(True, reasons, why, errors, evaluated)
    if reasons:
        why = "forbidden by " + ", ".join(f"`{r}`" for r in reasons)
    elif errors and result.decision is not cedarpy.Decision.Deny:
        why = f"the request could not be evaluated: {errors[0]}"
    else:
        why = f"no policy permits {req.describe()}"
    if errors:
        why += f" ({len(errors)} policy error(s): {errors[0]})"
    return Verdict(False, reasons, why, errors, evaluated)
