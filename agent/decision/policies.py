"""The decision point's policies: the one loader's result, indexed by scope.

Policies are loaded by the compiler's loader (`compiler.load_policies`), the
one both enforcement points use: the same schema, the same per-action
validation, the same ids (`@id("...")`, unique, else `<file>:<line>`). Any
error rejects the whole new set (the caller keeps the previous one). The
result, a `PolicyIndex`, groups policy ids by the gateway actions their
scope admits and by the entity their principal and resource scopes anchor
on, so the evaluator can find the few policies that can apply to a request.
Kernel-only policies are loaded too (one set) and simply never match.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Iterable
from dataclasses import dataclass, field

import cedarpy
from cedarpy import pst

from agent.decision.entities import Uid
from agent.decision.errors import PolicyLoadError
from agent.decision.schema import Action, groups_of
from compiler import CompileError, PolicySource, load_policies
from compiler.errors import LimitError, ParseError, SchemaError, UnsupportedError
from compiler.parse import ParsedPolicy

Constraint = pst.PrincipalOrResourceConstraint


@dataclass(frozen=True)
class LoadedPolicy:
    id: str
    source: str  # `file.cedar:line:col`
    template: pst.Template
    literals: frozenset[Uid]  # entities the policy names anywhere
    # the context attributes its conditions read; None: it uses the context whole
    context_reads: frozenset[str] | None = None

    @property
    def effect(self) -> str:
        return self.template.effect


def _uid(u: pst.EntityUid) -> Uid:
    return (str(u.type), u.id)


def _anchor(c: Constraint) -> Uid | None:
    """The entity a scope constraint is `==` or `in`; None for `any` / `is T`."""
    if isinstance(c, (pst.ScopeEq, pst.ScopeIn, pst.ScopeIsIn)) and isinstance(
            c.entity, pst.EntityUid):
        return _uid(c.entity)
    return None


def scope_admits(c: Constraint, uid: Uid, ancestors: frozenset[Uid]) -> bool:
    """Whether a principal/resource scope constraint holds for `uid`."""
    if isinstance(c, pst.ScopeAny):
        return True
    if isinstance(c, pst.ScopeIs):
        return str(c.entity_type) == uid[0]
    anchor = _anchor(c)
    if isinstance(c, pst.ScopeEq):
        return anchor == uid
    if isinstance(c, pst.ScopeIn):
        return anchor == uid or anchor in ancestors
    if isinstance(c, pst.ScopeIsIn):
        return str(c.entity_type) == uid[0] and (anchor == uid or anchor in ancestors)
    return True  # unknown constraint kinds never drop a policy


def action_admits(c: pst.ActionConstraint, action: str) -> bool:
    if isinstance(c, pst.ActionEq):
        return c.entity.id == action
    if isinstance(c, pst.ActionIn):
        ids = {e.id for e in c.entities}
        return action in ids or bool(ids & groups_of(action))
    return True


@dataclass(frozen=True)
class _Bucket:
    """The policies one action admits, keyed by scope anchor (None = any)."""

    by_principal: dict[Uid | None, tuple[str, ...]]
    by_resource: dict[Uid | None, tuple[str, ...]]


@dataclass(frozen=True)
class PolicyIndex:
    policies: dict[str, LoadedPolicy]
    buckets: dict[str, _Bucket]
    files: tuple[str, ...]
    order: dict[str, int]  # load position, so slices keep the source order
    # (action, side, entity, its ancestors) -> the policies whose scope on that side holds for
    # it: a principal or resource meets many of the other, so each side is
    # worked out once (bounded: one entry per agent or resource and action)
    _sides: dict[tuple[str, str, Uid, frozenset[Uid]], frozenset[str]] = field(
        default_factory=dict, compare=False, repr=False)

    def __len__(self) -> int:
        return len(self.policies)

    def pst_for(self, ids: Iterable[str]) -> pst.PolicySet:
        return pst.PolicySet(
            templates={},
            static_policies={i: self.policies[i].template for i in ids},
            template_links=())

    def policy_set(self, ids: Iterable[str] | None = None) -> cedarpy.PolicySet:
        return cedarpy.PolicySet.from_pst(self.pst_for(self.policies if ids is None else ids))

    def candidates(self, action: str, principal: Uid, p_anc: frozenset[Uid],
                   resource: Uid, r_anc: frozenset[Uid]) -> tuple[str, ...]:
        """Ids of every policy whose scope holds for this request, in load order."""
        bucket = self.buckets.get(action)
        if bucket is None:
            return ()
        pick = (self._side(action, "principal", bucket.by_principal, principal, p_anc)
                & self._side(action, "resource", bucket.by_resource, resource, r_anc))
        return tuple(sorted(pick, key=self.order.__getitem__))

    def _side(self, action: str, side: str, index: dict[Uid | None, tuple[str, ...]],
              uid: Uid, ancestors: frozenset[Uid]) -> frozenset[str]:
        key = (action, side, uid, ancestors)
        found = self._sides.get(key)
        if found is None:
            found = frozenset(
                pid for pid in _gather(index, uid, ancestors)
                if scope_admits(getattr(self.policies[pid].template, side), uid, ancestors))
            if len(self._sides) < _MAX_SIDES:
                self._sides[key] = found  # a dict store is atomic under the GIL
        return found


_MAX_SIDES = 1 << 16


def _gather(index: dict[Uid | None, tuple[str, ...]], uid: Uid,
            ancestors: frozenset[Uid]) -> set[str]:
    out: set[str] = set(index.get(None, ()))
    for key in (uid, *ancestors):
        out.update(index.get(key, ()))
    return out


def parse_policies(sources: Iterable[tuple[str, str]], *, validate: bool = True) -> PolicyIndex:
    """Build an index from (source name, Cedar text) pairs; raise PolicyLoadError.

    `validate=False` skips the schema check (tests feed ill-typed policies on purpose).
    """
    sources = list(sources)
    try:
        loaded = load_policies([PolicySource(n, t) for n, t in sources], validate=validate)
    except CompileError as e:
        raise PolicyLoadError(_diagnostics(e)) from e
    by_source: dict[str, dict[int, ParsedPolicy]] = {}
    reads: dict[str, frozenset[str] | None] = {}
    for p, ir in zip(loaded.sources, loaded.policies, strict=True):
        by_source.setdefault(p.source.name, {})[p.local_index] = p
        reads[p.pid] = ir.context_reads()
    policies: dict[str, LoadedPolicy] = {}
    for name, text in sources:
        ids = by_source.get(name, {})
        if not ids:
            continue
        tree = cedarpy.policies_to_pst(text)
        for key, parsed_t in tree.static_policies.items():
            p = ids[int(key.removeprefix("policy"))]
            t = dataclasses.replace(parsed_t, id=p.pid)
            literals = frozenset(_uid(u) for u in pst.entity_uids(t))
            policies[p.pid] = LoadedPolicy(id=p.pid, source=str(p.location), template=t,
                                           literals=literals, context_reads=reads[p.pid])
    return _index(policies, tuple(name for name, _ in sources))


_WHY = {ParseError: "does not parse", SchemaError: "does not validate against the schema",
        UnsupportedError: "is not supported", LimitError: "exceeds a kernel limit"}


def _diagnostics(e: CompileError, most: int = 3) -> str:
    """The first diagnostics of a refused set, each naming its file, line and policy."""
    why = next((w for cls, w in _WHY.items() if isinstance(e, cls)), "is refused")
    shown = [str(d) for d in e.diagnostics[:most]]
    more = len(e.diagnostics) - most
    return (f"the policy set {why}: " + "; ".join(shown)
            + (f" (and {more} more)" if more > 0 else ""))


def _index(policies: dict[str, LoadedPolicy], files: tuple[str, ...]) -> PolicyIndex:
    buckets: dict[str, _Bucket] = {}
    for action in Action:
        by_p: dict[Uid | None, list[str]] = {}
        by_r: dict[Uid | None, list[str]] = {}
        for pid, p in policies.items():
            if not action_admits(p.template.action, action):
                continue
            by_p.setdefault(_anchor(p.template.principal), []).append(pid)
            by_r.setdefault(_anchor(p.template.resource), []).append(pid)
        buckets[action] = _Bucket({k: tuple(v) for k, v in by_p.items()},
                                  {k: tuple(v) for k, v in by_r.items()})
    return PolicyIndex(policies=policies, buckets=buckets, files=files,
                       order={pid: i for i, pid in enumerate(policies)})
