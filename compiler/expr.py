"""Cedar expressions as frozen dataclasses, built from Cedar's JSON form (EST).

`parse` gets the EST from cedarpy (`policies_to_json_str`); this module turns
each condition into a small typed tree that the rest of the compiler pattern
matches on, and prints it back in Cedar syntax for reports. It knows nothing
about sandboxes or BPF. Unrecognised EST shapes raise `ValueError` (the
caller turns that into a located `ParseError`).
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from typing import Any, TypeAlias


@dataclass(frozen=True, order=True)
class EntityUid:
    type: str
    id: str

    def __str__(self) -> str:
        return f"{self.type}::{json.dumps(self.id, ensure_ascii=False)}"

    @staticmethod
    def from_json(obj: Any) -> EntityUid:
        if isinstance(obj, dict) and "__entity" in obj:
            obj = obj["__entity"]
        if not isinstance(obj, dict) or not isinstance(obj.get("type"), str):
            raise ValueError(f"not an entity reference: {obj!r}")
        if not isinstance(obj.get("id"), str):
            raise ValueError(f"not an entity reference: {obj!r}")
        return EntityUid(obj["type"], obj["id"])


Literal: TypeAlias = bool | int | str | EntityUid


@dataclass(frozen=True)
class Lit:
    value: Literal


@dataclass(frozen=True)
class Var:
    name: str  # principal | action | resource | context


@dataclass(frozen=True)
class Slot:
    name: str  # ?principal | ?resource


@dataclass(frozen=True)
class Unary:
    op: str  # ! | neg | isEmpty
    arg: Expr


@dataclass(frozen=True)
class Binary:
    # == != in < <= > >= && || + - * contains containsAll containsAny getTag hasTag
    op: str
    left: Expr
    right: Expr


@dataclass(frozen=True)
class GetAttr:
    arg: Expr
    attr: str


@dataclass(frozen=True)
class HasAttr:
    arg: Expr
    attr: str


@dataclass(frozen=True)
class Like:
    arg: Expr
    # One element per pattern position: a single character, or None for `*`.
    pattern: tuple[str | None, ...]


@dataclass(frozen=True)
class Is:
    arg: Expr
    entity_type: str
    in_: Expr | None = None


@dataclass(frozen=True)
class If:
    cond: Expr
    then: Expr
    else_: Expr


@dataclass(frozen=True)
class SetLit:
    elems: tuple[Expr, ...]


@dataclass(frozen=True)
class RecordLit:
    items: tuple[tuple[str, Expr], ...]


@dataclass(frozen=True)
class Call:
    """An extension function or method: `ip("...")`, `a.isInRange(b)`, ..."""

    fn: str
    args: tuple[Expr, ...]


Expr: TypeAlias = (
    Lit
    | Var
    | Slot
    | Unary
    | Binary
    | GetAttr
    | HasAttr
    | Like
    | Is
    | If
    | SetLit
    | RecordLit
    | Call
)

_BINARY = {
    "==", "!=", "in", "<", "<=", ">", ">=", "&&", "||", "+", "-", "*",
    "contains", "containsAll", "containsAny", "getTag", "hasTag",
}  # fmt: skip
_METHODS = {
    "contains", "containsAll", "containsAny", "getTag", "hasTag", "isEmpty",
}  # fmt: skip


def from_est(node: Any) -> Expr:
    """Convert one EST expression node."""
    if not isinstance(node, dict) or len(node) != 1:
        raise ValueError(f"unexpected expression node: {node!r}")
    ((key, val),) = node.items()
    if key == "Value":
        return _value(val)
    if key == "Var":
        return Var(val)
    if key == "Slot":
        return Slot(val)
    if key in ("!", "neg", "isEmpty"):
        return Unary(key, from_est(val["arg"]))
    if key in _BINARY:
        return Binary(key, from_est(val["left"]), from_est(val["right"]))
    if key == ".":
        return GetAttr(from_est(val["left"]), val["attr"])
    if key == "has":
        return HasAttr(from_est(val["left"]), val["attr"])
    if key == "like":
        pattern = tuple(None if el == "Wildcard" else el["Literal"] for el in val["pattern"])
        return Like(from_est(val["left"]), pattern)
    if key == "is":
        in_ = from_est(val["in"]) if "in" in val else None
        return Is(from_est(val["left"]), val["entity_type"], in_)
    if key == "if-then-else":
        return If(from_est(val["if"]), from_est(val["then"]), from_est(val["else"]))
    if key == "Set":
        return SetLit(tuple(from_est(e) for e in val))
    if key == "Record":
        return RecordLit(tuple((k, from_est(v)) for k, v in val.items()))
    if key == "Unknown":
        raise ValueError("partial-evaluation unknowns are not policies")
    if isinstance(val, list):
        return Call(key, tuple(from_est(a) for a in val))
    raise ValueError(f"unexpected expression node: {key!r}")


def _value(val: Any) -> Expr:
    if isinstance(val, bool | int | str):
        return Lit(val)
    if isinstance(val, dict) and "__entity" in val:
        return Lit(EntityUid.from_json(val))
    if isinstance(val, dict) and "__extn" in val:
        ext = val["__extn"]
        return Call(ext["fn"], (_value(ext["arg"]),))
    if isinstance(val, list):
        return SetLit(tuple(_value(v) for v in val))
    if isinstance(val, dict):
        return RecordLit(tuple((k, _value(v)) for k, v in val.items()))
    raise ValueError(f"unexpected literal: {val!r}")


def render_pattern(pattern: tuple[str | None, ...]) -> str:
    """A pattern as Cedar writes it, without the quotes (`/a/*`, `a\\*b`)."""
    out = []
    for el in pattern:
        if el is None:
            out.append("*")
        elif el == "*":
            out.append("\\*")
        else:
            out.append(json.dumps(el, ensure_ascii=False)[1:-1])
    return "".join(out)


def render(e: Expr) -> str:
    """Cedar syntax for `e` (fully parenthesised where precedence could matter)."""
    match e:
        case Lit(value=bool() as b):
            return "true" if b else "false"
        case Lit(value=int() as i):
            return str(i)
        case Lit(value=str() as s):
            return json.dumps(s, ensure_ascii=False)
        case Lit(value=EntityUid() as u):
            return str(u)
        case Var(name=n):
            return n
        case Slot(name=n):
            return n
        case Unary(op="!", arg=a):
            return f"!{_paren(a)}"
        case Unary(op="neg", arg=a):
            return f"-{_paren(a)}"
        case Unary(op=op, arg=a):
            return f"{_paren(a)}.{op}()"
        case Binary(op=op, left=lhs, right=rhs) if op in _METHODS:
            return f"{_paren(lhs)}.{op}({render(rhs)})"
        case Binary(op=op, left=lhs, right=rhs):
            return f"{_paren(lhs)} {op} {_paren(rhs)}"
        case GetAttr(arg=a, attr=attr):
            return f"{_paren(a)}.{attr}"
        case HasAttr(arg=a, attr=attr):
            return f"{_paren(a)} has {attr}"
        case Like(arg=a, pattern=p):
            return f'{_paren(a)} like "{render_pattern(p)}"'
        case Is(arg=a, entity_type=t, in_=None):
            return f"{_paren(a)} is {t}"
        case Is(arg=a, entity_type=t, in_=i):
            assert i is not None
            return f"{_paren(a)} is {t} in {_paren(i)}"
        case If(cond=c, then=t, else_=f):
            return f"if {render(c)} then {render(t)} else {render(f)}"
        case SetLit(elems=es):
            return "[" + ", ".join(render(x) for x in es) + "]"
        case RecordLit(items=items):
            return "{" + ", ".join(f"{json.dumps(k)}: {render(v)}" for k, v in items) + "}"
        case Call(fn=fn, args=(first, *rest)) if fn not in (
            "ip",
            "decimal",
            "datetime",
            "duration",
        ):
            return f"{_paren(first)}.{fn}(" + ", ".join(render(x) for x in rest) + ")"
        case Call(fn=fn, args=args):
            return f"{fn}(" + ", ".join(render(x) for x in args) + ")"
    raise AssertionError(f"unhandled expression {e!r}")


def _paren(e: Expr) -> str:
    simple = isinstance(e, Lit | Var | Slot | GetAttr | SetLit | RecordLit | Call)
    return render(e) if simple else f"({render(e)})"


def mentions(e: Expr, var: str) -> bool:
    """Whether `e` reads the variable `var` anywhere."""
    return any(isinstance(n, Var) and n.name == var for n in walk(e))


def walk(e: Expr) -> list[Expr]:
    """Every node of `e`, pre-order."""
    out: list[Expr] = []
    todo: list[Expr] = [e]
    while todo:
        n = todo.pop()
        out.append(n)
        match n:
            case Unary(arg=a) | GetAttr(arg=a) | HasAttr(arg=a) | Like(arg=a):
                todo.append(a)
            case Binary(left=lhs, right=rhs):
                todo.extend((rhs, lhs))
            case Is(arg=a, in_=i):
                todo.extend([x for x in (i, a) if x is not None])
            case If(cond=c, then=t, else_=f):
                todo.extend((f, t, c))
            case SetLit(elems=es):
                todo.extend(reversed(es))
            case RecordLit(items=items):
                todo.extend(v for _, v in reversed(items))
            case Call(args=args):
                todo.extend(reversed(args))
            case _:
                pass
    return out
