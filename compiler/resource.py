"""What comparisons on the request's resource mean as kernel atoms.

`resource.path == "/a"` is an exact path, `resource.port < 1024` a port
interval, `resource in DestinationSet::"d"` the members' addresses, hosts,
ports and protocols, `resource.ip.isInRange(ip(...))` a CIDR, and so on.
Called by `specialize` once both sides of a comparison are evaluated; what
cannot be expressed becomes `Unknown` (or `Opaque`) with a reason.
"""

from __future__ import annotations

import ipaddress

from compiler import layout
from compiler import values as V
from compiler.avalue import Attr, AValue, Context, Err, Opaque, Res, Static, Sym
from compiler.entities import parse_member
from compiler.expr import EntityUid, Expr, render, render_pattern
from compiler.ir import (
    PORT_MAX,
    PROTOCOLS,
    Const,
    ErrorConst,
    Formula,
    HasHost,
    HostIn,
    IpIn,
    PathEq,
    PathIn,
    PathPrefix,
    PortIn,
    ProtoIn,
    Unknown,
    conj,
    disj,
)
from compiler.limits import short


def equals(a: AValue, b: AValue, e: Expr, ctx: Context) -> Formula:
    """`a == b` where at least one side depends on the resource."""
    for side in (a, b):
        if isinstance(side, Opaque):
            return Unknown(side.reason)
    if isinstance(b, Attr | Res) and isinstance(a, Static):
        a, b = b, a
    if isinstance(a, Attr) and isinstance(b, Static):
        return attr_equals(a.name, b.value)
    if isinstance(a, Res) and isinstance(b, Static):
        if not isinstance(b.value, EntityUid) or b.value.type != ctx.resource_type:
            return Const(False)
        return res_is(b.value, ctx)
    return Unknown(f"`{render(e)}` compares values the kernel cannot relate")


def attr_equals(name: str, v: V.Value) -> Formula:
    if name == "path":
        return path_eq(v) if isinstance(v, str) else Const(False)
    if name == "port":
        ok = isinstance(v, int) and not isinstance(v, bool) and 0 <= v <= PORT_MAX
        return PortIn(v, v) if ok and isinstance(v, int) else Const(False)
    if name == "protocol":
        return (
            ProtoIn(frozenset({v}) & frozenset(PROTOCOLS)) if isinstance(v, str) else Const(False)
        )
    if name == "host":
        return HostIn(frozenset({v}) if isinstance(v, str) else frozenset())
    if name == "ip":
        if isinstance(v, V.IpVal) and v.full:
            return IpIn(v.network)
        return Const(False)
    return Unknown(f"`resource.{name}`")


def res_is(uid: EntityUid, ctx: Context) -> Formula:
    """`resource == uid` for a uid of the resource's own type."""
    if ctx.resource_type in ("FilePath", "Executable", "SocketKind"):
        return path_eq(uid.id)  # a socket kind is decided like an exact path: by its name
    member = parse_member(uid)
    if member is None or member.address is None or member.canonical != uid.id:
        return Const(False)  # a connection is named by its address, in canonical form
    return conj(
        IpIn(ipaddress.ip_network(member.address)),
        conj(PortIn(member.port, member.port), ProtoIn(frozenset({member.protocol}))),
    )


def res_in(target: V.Value, ctx: Context) -> Formula:
    targets = target.items if isinstance(target, V.SetVal) else (target,)
    out: Formula = Const(False)
    for t in targets:
        if not isinstance(t, EntityUid):
            return ErrorConst("`in` needs entities on the right")
        out = disj(out, _res_in_one(t, ctx))
    return out


def _res_in_one(t: EntityUid, ctx: Context) -> Formula:
    if t.type == ctx.resource_type:
        return res_is(t, ctx)
    if ctx.resource_type in ("FilePath", "Executable") and t.type == "PathSet":
        paths = ctx.entities.paths_in(ctx.resource_type, t)
        return PathIn(t, paths) if paths else Const(False)
    if ctx.resource_type == "NetworkDestination" and t.type == "DestinationSet":
        out: Formula = Const(False)
        for m in ctx.entities.members_in(t):
            rest = conj(PortIn(m.port, m.port), ProtoIn(frozenset({m.protocol})))
            if m.host is not None:
                out = disj(out, conj(HasHost(), conj(HostIn(frozenset({m.host})), rest)))
            elif m.address is not None:
                out = disj(out, conj(IpIn(ipaddress.ip_network(m.address)), rest))
        return out
    return Const(False)


def compare(op: str, a: AValue, b: AValue, e: Expr) -> AValue:
    flip = {"<": ">", "<=": ">=", ">": "<", ">=": "<="}
    for side in (a, b):
        if isinstance(side, Opaque):
            return side
    if isinstance(b, Attr) and isinstance(a, Static):
        a, b, op = b, a, flip[op]
    if isinstance(a, Attr) and a.name == "port" and isinstance(b, Static):
        if isinstance(b.value, bool) or not isinstance(b.value, int):
            return Err("type error: expected a long")
        n = b.value
        lo, hi = {
            "<": (0, n - 1), "<=": (0, n), ">": (n + 1, PORT_MAX), ">=": (n, PORT_MAX),
        }[op]  # fmt: skip
        lo, hi = max(lo, 0), min(hi, PORT_MAX)
        return Sym(PortIn(lo, hi) if lo <= hi else Const(False))
    return Opaque(f"`{render(e)}`")


def path_eq(path: str) -> Formula:
    """`resource.path == path`. A kernel path is a C string, so one holding a
    NUL matches nothing; one longer than an exact key (a value computed from a
    registry attribute, say: policy literals that long are refused) is
    approximated by its first bytes, which such a path starts with."""
    if "\0" in path:
        return Const(False)
    if len(path.encode("utf-8", "surrogatepass")) > layout.EXACT_PATH_MAX:
        return Unknown(f"path `{short(path)}` is longer than a kernel key holds",
                       path_hint=_cut(path, layout.PREFIX_PATH_MAX))
    return PathEq(path)


def _cut(path: str, size: int) -> str:
    return path.encode("utf-8", "surrogatepass")[:size].decode("utf-8", "ignore")


def path_pattern(pattern: tuple[str | None, ...]) -> Formula:
    """`path like pattern` as atoms: exact, `prefix*`, or Unknown (inner `*`)."""
    if any(el is not None and "\0" in el for el in pattern):
        return Const(False)  # a kernel path is a C string: it never holds a NUL
    first = next((i for i, el in enumerate(pattern) if el is None), len(pattern))
    literal = "".join(el for el in pattern[:first] if el is not None)
    if first == len(pattern):
        return path_eq(literal)
    if len(literal.encode("utf-8", "surrogatepass")) > layout.PREFIX_PATH_MAX:
        return Unknown(f"pattern prefix `{short(literal)}` is longer than a kernel key holds",
                       path_hint=_cut(literal, layout.PREFIX_PATH_MAX))
    if all(el is None for el in pattern[first:]):
        return PathPrefix(literal)
    return Unknown(
        f"unsupported pattern `{render_pattern(pattern)}`: "
        "only a trailing `*` compiles to the kernel",
        path_hint=literal,
    )


def call(fn: str, args: list[AValue], e: Expr) -> AValue:
    try:
        if fn == "ip" and len(args) == 1 and isinstance(args[0], Static):
            if not isinstance(args[0].value, str):
                return Err("`ip` needs a string")
            return Static(V.parse_ip(args[0].value))
        if fn == "isInRange" and len(args) == 2:
            a, b = args
            if isinstance(a, Static) and isinstance(b, Static):
                if isinstance(a.value, V.IpVal) and isinstance(b.value, V.IpVal):
                    return Static(V.in_range(a.value, b.value))
                return Err("`isInRange` needs IP values")
            if isinstance(a, Attr) and a.name == "ip" and isinstance(b, Static):
                if not isinstance(b.value, V.IpVal):
                    return Err("`isInRange` needs IP values")
                return Sym(IpIn(b.value.network))
            if isinstance(b, Attr) and b.name == "ip" and isinstance(a, Static):
                if not isinstance(a.value, V.IpVal):
                    return Err("`isInRange` needs IP values")
                return Sym(IpIn(a.value.network) if a.value.full else Const(False))
        if fn in V.FAMILY_ROOTS and len(args) == 1:
            (a,) = args
            if isinstance(a, Static):
                if not isinstance(a.value, V.IpVal):
                    return Err(f"`{fn}` needs an IP value")
                return Static(V.ip_predicate(fn, a.value))
            if isinstance(a, Attr) and a.name == "ip":
                out: Formula = Const(False)
                for root in V.FAMILY_ROOTS[fn]:
                    out = disj(out, IpIn(root))
                return Sym(out)
    except V.CedarError as err:
        return Err(str(err))
    return Opaque(f"`{render(e)}`")
