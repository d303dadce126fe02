"""From parsed EST to `ir.Policy`: scopes, concrete actions, one condition.

Called by the pipeline right after `parse`. Action scopes are expanded
through the schema's action groups and narrowed to the actions whose
principal and resource types the scopes admit, so later stages can ask "does
this policy apply to `readFile`?" with a set lookup. `when` and `unless`
clauses fold into a single expression with Cedar's left-to-right semantics.
"""

from __future__ import annotations

from typing import Any

from compiler.errors import Diagnostic, ParseError
from compiler.expr import Binary, EntityUid, Expr, Is, Lit, Unary, Var, from_est
from compiler.ir import Policy, Scope
from compiler.parse import ParsedPolicy
from compiler.schema import Schema


def build_policy(p: ParsedPolicy, schema: Schema) -> Policy:
    try:
        principal = _scope(p.est["principal"])
        resource = _scope(p.est["resource"])
        actions, action_text = _actions(p.est["action"], schema)
        condition: Expr | None = None
        for clause in p.est.get("conditions", []):
            body = from_est(clause["body"])
            if clause["kind"] == "unless":
                body = Unary("!", body)
            condition = body if condition is None else Binary("&&", condition, body)
    except (KeyError, ValueError, TypeError) as e:
        raise ParseError(Diagnostic(f"unexpected policy structure: {e}", p.location, p.pid)) from e
    actions = frozenset(
        a
        for a in actions
        if _admits(principal, schema.actions[a].principals, schema)
        and _admits(resource, schema.actions[a].resources, schema)
    )
    return Policy(
        pid=p.pid,
        cedar_id=p.cedar_id,
        effect="permit" if p.est["effect"] == "permit" else "forbid",
        principal=principal,
        actions=actions,
        action_text=action_text,
        resource=resource,
        condition=condition if condition is not None else Lit(True),
        location=p.location,
        statement=p.statement,
    )


def scope_expr(var: str, scope: Scope) -> Expr:
    """The scope constraint as an expression over `var` (Lit(True) for `all`)."""
    if scope.op == "all":
        return Lit(True)
    if scope.op == "is":
        assert scope.entity_type is not None
        in_ = Lit(scope.entity) if scope.entity is not None else None
        return Is(Var(var), scope.entity_type, in_)
    assert scope.entity is not None
    return Binary(scope.op, Var(var), Lit(scope.entity))


def _scope(est: dict[str, Any]) -> Scope:
    op = est["op"]
    if "slot" in est:
        raise ValueError("templates are not supported")
    if op == "All":
        return Scope("all")
    if op in ("==", "in"):
        return Scope(op, EntityUid.from_json(est["entity"]))
    if op == "is":
        in_ = est.get("in")
        entity = EntityUid.from_json(in_["entity"]) if in_ else None
        return Scope("is", entity, est["entity_type"])
    raise ValueError(f"unknown scope operator `{op}`")


def _actions(est: dict[str, Any], schema: Schema) -> tuple[frozenset[str], str]:
    op = est["op"]
    if op == "All":
        return frozenset(schema.actions), "action"
    if op == "==":
        uid = EntityUid.from_json(est["entity"])
        acts = frozenset({uid.id}) if uid.id in schema.actions else frozenset()
        return acts, f"action == {uid}"
    if op == "in":
        uids = [EntityUid.from_json(e) for e in est.get("entities", [])]
        if "entity" in est:
            uids = [EntityUid.from_json(est["entity"])]
            text = f"action in {uids[0]}"
        else:
            text = "action in [" + ", ".join(str(u) for u in uids) + "]"
        out: frozenset[str] = frozenset()
        for u in uids:
            out |= schema.expand(u.id)
        return out, text
    raise ValueError(f"unknown action scope operator `{op}`")


def _admits(scope: Scope, types: frozenset[str], schema: Schema) -> bool:
    """Whether some entity of one of `types` can satisfy `scope`."""
    if scope.op == "all":
        return True
    for t in types:
        if scope.op == "is" and t != scope.entity_type:
            continue
        if scope.entity is None:
            return True
        target = scope.entity.type
        if scope.op == "==" and t == target:
            return True
        if scope.op in ("in", "is") and (t == target or target in schema.ancestor_types(t)):
            return True
    return False
