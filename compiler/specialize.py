"""Partial evaluation: a policy, a sandbox and an action to a kernel `Formula`.

For one sandbox the principal is a known entity and, per kernel action, the
action and the resource's entity type are known too; the context of a
kernel action is empty. So everything in a condition except the resource is
a constant, and this module folds it away with Cedar's own semantics
(`values`), leaving a formula over the resource atoms of `ir`.

Anything that depends on the resource in a way the kernel cannot test
(arithmetic on a port, a `like` with an inner `*` on a path, comparing two
resource attributes, ...) becomes `Unknown` with a reason; `lower` then
approximates by polarity and reports it. The abstract values live in
`avalue`, what comparisons on the resource mean in `resource`. Called by the
pipeline for every sandbox, kernel action and applicable policy.
"""

from __future__ import annotations

from compiler import resource as R
from compiler import values as V
from compiler.avalue import Attr, AValue, Context, Err, Opaque, Res, Static, Sym, to_formula
from compiler.expr import (
    Binary,
    Call,
    EntityUid,
    Expr,
    GetAttr,
    HasAttr,
    If,
    Is,
    Like,
    Lit,
    RecordLit,
    SetLit,
    Slot,
    Unary,
    Var,
    render,
)
from compiler.ir import PROTOCOLS, Const, Formula, HasHost, HostLike, Ite, ProtoIn, conj, disj, neg


def specialize(expr: Expr, ctx: Context) -> Formula:
    """The formula over the resource that `expr` is for this principal and action."""
    return to_formula(_ev(expr, ctx))


def _ev(e: Expr, ctx: Context) -> AValue:
    match e:
        case Lit(value=v):
            return Static(v)
        case Var(name="principal"):
            return Static(ctx.principal)
        case Var(name="action"):
            return Static(EntityUid("Action", ctx.action))
        case Var(name="resource"):
            return Res()
        case Var(name="context"):
            return Static(V.RecordVal(()))
        case Var() | Slot():
            return Err(f"unbound `{render(e)}`")
        case Binary(op="&&" | "||" as op, left=lhs, right=rhs):
            return _logic(op, lhs, rhs, ctx)
        case Unary(op=op, arg=a):
            return _unary(op, _ev(a, ctx), e)
        case Binary(op=op, left=lhs, right=rhs):
            left = _ev(lhs, ctx)
            if isinstance(left, Err):
                return left
            right = _ev(rhs, ctx)
            if isinstance(right, Err):
                return right
            return _binary(op, left, right, e, ctx)
        case GetAttr(arg=a, attr=attr):
            return _getattr(_ev(a, ctx), attr, e, ctx)
        case HasAttr(arg=a, attr=attr):
            return _has(_ev(a, ctx), attr, e, ctx)
        case Like(arg=a, pattern=p):
            return _like(_ev(a, ctx), p, e)
        case Is(arg=a, entity_type=t, in_=i):
            return _is(a, t, i, ctx)
        case If(cond=c, then=t, else_=f):
            return _if(c, t, f, ctx)
        case SetLit(elems=es):
            return _set(es, ctx)
        case RecordLit(items=items):
            vals: list[tuple[str, V.Value]] = []
            for k, x in items:
                item = _ev(x, ctx)
                if not isinstance(item, Static):
                    return item if isinstance(item, Err) else Opaque(f"record `{render(e)}`")
                vals.append((k, item.value))
            return Static(V.RecordVal(tuple(sorted(vals, key=lambda kv: kv[0]))))
        case Call(fn=fn, args=args):
            evaluated: list[AValue] = []
            for arg in args:
                av = _ev(arg, ctx)
                if isinstance(av, Err):
                    return av
                evaluated.append(av)
            return R.call(fn, evaluated, e)
    return Opaque(f"`{render(e)}`")


def _logic(op: str, lhs: Expr, rhs: Expr, ctx: Context) -> AValue:
    left = _ev(lhs, ctx)
    if isinstance(left, Static):
        if not isinstance(left.value, bool):
            return Err("type error: expected a boolean")
        if left.value == (op == "||"):
            return left  # short circuit: the right side is not evaluated
        right = _ev(rhs, ctx)
        if isinstance(right, Static) and not isinstance(right.value, bool):
            return Err("type error: expected a boolean")
        return right if isinstance(right, Static | Sym | Err) else Sym(to_formula(right))
    if isinstance(left, Err):
        return left
    lf = to_formula(left)
    rf = to_formula(_ev(rhs, ctx))
    return Sym(conj(lf, rf) if op == "&&" else disj(lf, rf))


def _unary(op: str, a: AValue, e: Expr) -> AValue:
    if isinstance(a, Err):
        return a
    try:
        if isinstance(a, Static):
            if op == "!":
                return Static(not V.as_bool(a.value))
            if op == "neg":
                return Static(V.checked(-V.as_long(a.value)))
            return Static(len(V.as_set(a.value).items) == 0)
    except V.CedarError as err:
        return Err(str(err))
    if op == "!" and isinstance(a, Sym | Opaque):
        return Sym(neg(to_formula(a)))
    return Opaque(f"`{render(e)}`")


def _binary(op: str, a: AValue, b: AValue, e: Expr, ctx: Context) -> AValue:
    if op == "in" and isinstance(a, Static) and isinstance(a.value, EntityUid) \
            and isinstance(b, Static):
        return _entity_in(a.value, b.value, ctx)
    if isinstance(a, Static) and isinstance(b, Static):
        try:
            return Static(_static_binary(op, a.value, b.value, ctx))
        except V.CedarError as err:
            return Err(str(err))
    if op in ("==", "!="):
        f = R.equals(a, b, e, ctx)
        return Sym(neg(f) if op == "!=" else f)
    if op in ("<", "<=", ">", ">="):
        return R.compare(op, a, b, e)
    if op == "in" and isinstance(a, Res) and isinstance(b, Static):
        return Sym(R.res_in(b.value, ctx))
    if op == "contains" and isinstance(a, Static) and isinstance(a.value, V.SetVal):
        out: Formula = Const(False)
        for item in a.value.items:
            out = disj(out, R.equals(b, Static(item), e, ctx))
        return Sym(out)
    if op in ("hasTag", "getTag") and isinstance(b, Static) and not isinstance(b.value, str):
        return Err(f"`{op}` needs a string tag")
    if op in ("hasTag", "getTag") and isinstance(a, Static) and not isinstance(a.value, EntityUid):
        return Err(f"`{op}` needs an entity")
    if op == "hasTag" and isinstance(a, Res) and isinstance(b, Static):
        return Static(False)
    if op == "getTag" and isinstance(a, Res) and isinstance(b, Static):
        return Err("the resource has no tags")
    return Opaque(f"`{render(e)}`")


def _static_binary(op: str, a: V.Value, b: V.Value, ctx: Context) -> V.Value:
    if op == "==":
        return V.equal(a, b)
    if op == "!=":
        return not V.equal(a, b)
    if op in ("<", "<=", ">", ">="):
        x, y = V.as_long(a), V.as_long(b)
        return {"<": x < y, "<=": x <= y, ">": x > y, ">=": x >= y}[op]
    if op in ("+", "-", "*"):
        x, y = V.as_long(a), V.as_long(b)
        return V.checked(x + y if op == "+" else x - y if op == "-" else x * y)
    if op == "in":
        if not isinstance(a, EntityUid):
            raise V.CedarError("`in` needs an entity on the left")
        targets = b.items if isinstance(b, V.SetVal) else (b,)
        if not all(isinstance(t, EntityUid) for t in targets):
            # Cedar checks the whole set before it looks for a match
            raise V.CedarError("`in` needs entities on the right")
        anc = _ancestors(a, ctx)
        return any(t == a or t in anc for t in targets)
    if op == "contains":
        return V.contains(V.as_set(a), b)
    if op == "containsAll":
        return all(V.contains(V.as_set(a), x) for x in V.as_set(b).items)
    if op == "containsAny":
        return any(V.contains(V.as_set(a), x) for x in V.as_set(b).items)
    if op in ("hasTag", "getTag"):
        if not isinstance(a, EntityUid):
            raise V.CedarError(f"`{op}` needs an entity")
        if not isinstance(b, str):
            raise V.CedarError(f"`{op}` needs a string tag")
        if op == "getTag":  # no entity type of the schema has tags
            raise V.CedarError(f"`{a}` has no tag `{b}`")
        return False
    raise V.CedarError(f"`{op}` is not defined here")


def _entity_in(uid: EntityUid, target: V.Value, ctx: Context) -> AValue:
    """`uid in target` for a literal (or principal) entity.

    A literal of the resource's own type (`NetworkDestination::"10.0.0.1:80/tcp"`)
    is the request's resource when the request is to it, and then has the
    resource's ancestors; a destination-set member is otherwise no entity
    at all in Cedar's eyes (only equal to itself)."""
    try:
        static = _static_binary("in", uid, target, ctx)
    except V.CedarError as err:
        return Err(str(err))
    if static or uid.type != ctx.resource_type or uid.type != "NetworkDestination":
        return Static(static)
    return Sym(conj(R.res_is(uid, ctx), R.res_in(target, ctx)))


def _ancestors(uid: EntityUid, ctx: Context) -> frozenset[EntityUid]:
    if uid.type == "NetworkDestination":
        return frozenset()  # members are specifications, not Cedar entities
    if uid == ctx.principal:
        return ctx.principal_ancestors
    if uid.type == "Action" and uid.id in ctx.schema.actions:
        return frozenset(EntityUid("Action", g) for g in ctx.schema.actions[uid.id].groups)
    return ctx.entities.ancestors_of(uid)


def _getattr(a: AValue, attr: str, e: Expr, ctx: Context) -> AValue:
    if isinstance(a, Err):
        return a
    if isinstance(a, Res):
        info = ctx.schema.entity_types[ctx.resource_type]
        return Attr(attr) if attr in info.attrs else Err(f"no attribute `{attr}`")
    if isinstance(a, Static):
        if isinstance(a.value, V.RecordVal):
            got = a.value.get(attr)
            return Static(got) if got is not None else Err(f"no attribute `{attr}`")
        if isinstance(a.value, EntityUid):
            return _entity_attr(a.value, attr, e, ctx)
    return Opaque(f"`{render(e)}`")


def _entity_attr(uid: EntityUid, attr: str, e: Expr, ctx: Context) -> AValue:
    """`uid.attr` from the entities (an agent's registry attributes, folded in)."""
    if uid.type == "Action":
        return Err(f"`{uid}` has no attribute `{attr}`")
    if uid == ctx.principal and ctx.anonymous:
        return Opaque(f"`{render(e)}`: a class or default sandbox stands for any agent in it")
    listed = _listed_attrs(uid, ctx)
    if listed is None and uid.type == ctx.resource_type:
        # the entity exists (with the resource's attributes) only when it is the
        # request's resource: a value under a condition, which the kernel cannot fold
        return Opaque(f"`{render(e)}`: `{uid}` is an entity only when it is the resource")
    attrs = listed
    if attrs is None or attr not in attrs:
        return Err(f"`{uid}` has no attribute `{attr}`")
    try:
        return Static(V.from_json(attrs[attr]))
    except V.CedarError:
        return Opaque(f"`{render(e)}`")


def _listed_attrs(uid: EntityUid, ctx: Context) -> dict[str, object] | None:
    """The attributes of `uid` as Cedar's entities hold them; None: not an entity.

    Paths the entities file lists have their `path`; destination-set members
    are not entities (they are matched against connections)."""
    if uid.type == "NetworkDestination":
        return None
    if uid.type in ("FilePath", "Executable"):
        return {"path": uid.id} if uid in ctx.entities.parents else None
    return ctx.entities.attrs_of(uid)


def _has(a: AValue, attr: str, e: Expr, ctx: Context) -> AValue:
    if isinstance(a, Err):
        return a
    if isinstance(a, Res):
        info = ctx.schema.entity_types[ctx.resource_type]
        if attr in info.optional_attrs:
            return Sym(HasHost()) if attr == "host" else Opaque(f"`{render(e)}`")
        return Static(attr in info.attrs)
    if isinstance(a, Static):
        if isinstance(a.value, V.RecordVal):
            return Static(a.value.get(attr) is not None)
        if isinstance(a.value, EntityUid):
            uid = a.value
            if uid == ctx.principal and ctx.anonymous:
                return Opaque(f"`{render(e)}`: a class or default sandbox stands for any agent")
            attrs = _listed_attrs(uid, ctx) if uid.type != "Action" else None
            if attrs is None and uid.type == ctx.resource_type:
                info = ctx.schema.entity_types[ctx.resource_type]
                if attr in info.optional_attrs:
                    return Opaque(f"`{render(e)}`")
                # `has` on an entity that does not exist is false, not an error
                return Sym(R.res_is(uid, ctx)) if attr in info.attrs else Static(False)
            return Static(attrs is not None and attr in attrs)
    return Opaque(f"`{render(e)}`")


def _like(a: AValue, pattern: tuple[str | None, ...], e: Expr) -> AValue:
    if isinstance(a, Err):
        return a
    if isinstance(a, Static):
        if not isinstance(a.value, str):
            return Err("type error: `like` needs a string")
        return Static(V.like(a.value, pattern))
    if isinstance(a, Attr) and a.name == "path":
        return Sym(R.path_pattern(pattern))
    if isinstance(a, Attr) and a.name == "host":
        return Sym(HostLike(pattern))
    if isinstance(a, Attr) and a.name == "protocol":
        return Sym(ProtoIn(frozenset(p for p in PROTOCOLS if V.like(p, pattern))))
    return Opaque(f"`{render(e)}`")


def _is(a: Expr, t: str, in_: Expr | None, ctx: Context) -> AValue:
    v = _ev(a, ctx)
    if isinstance(v, Err):
        return v
    if isinstance(v, Res):
        head: AValue = Static(t == ctx.resource_type)
        if in_ is None or head == Static(False):
            return head
        target = _ev(in_, ctx)
        if isinstance(target, Err):
            return target
        return (
            Sym(R.res_in(target.value, ctx))
            if isinstance(target, Static)
            else Opaque("`is ... in`")
        )
    if isinstance(v, Static) and isinstance(v.value, EntityUid):
        if v.value.type != t:
            return Static(False)
        if in_ is None:
            return Static(True)
        target = _ev(in_, ctx)
        if isinstance(target, Static):
            return _entity_in(v.value, target.value, ctx)
        return target if isinstance(target, Err) else Opaque("`is ... in`")
    if isinstance(v, Static):
        return Err("type error: `is` needs an entity")
    return Opaque(f"`{render(a)} is {t}`")


def _if(c: Expr, t: Expr, f: Expr, ctx: Context) -> AValue:
    cond = _ev(c, ctx)
    if isinstance(cond, Err):
        return cond
    if isinstance(cond, Static):
        if not isinstance(cond.value, bool):
            return Err("type error: expected a boolean")
        return _ev(t if cond.value else f, ctx)
    then, else_ = _ev(t, ctx), _ev(f, ctx)
    if not (_boolish(then) and _boolish(else_)):
        return Opaque("`if` over values the kernel cannot follow")
    cf, tf, ef = to_formula(cond), to_formula(then), to_formula(else_)
    if tf == Const(True) and ef == Const(False):
        return Sym(cf)
    return Sym(Ite(cf, tf, ef))


def _boolish(v: AValue) -> bool:
    return isinstance(v, Sym | Err) or (isinstance(v, Static) and isinstance(v.value, bool))


def _set(es: tuple[Expr, ...], ctx: Context) -> AValue:
    items: list[V.Value] = []
    for x in es:
        v = _ev(x, ctx)
        if isinstance(v, Err):
            return v
        if not isinstance(v, Static):
            return Opaque(f"set `{render(SetLit(es))}` holds resource values")
        items.append(v.value)
    return Static(V.SetVal(tuple(items)))
