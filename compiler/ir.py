"""Stage 2, IR: policies as typed data, and per-sandbox kernel rules.

Two levels, both frozen dataclasses that print as readable text:

* `Policy` is one Cedar policy after parsing: effect, principal and resource
  scope, the concrete actions its action scope admits (groups expanded), and
  its `when`/`unless` conditions folded into one `Expr`.
* `Formula` is what a policy means for one sandbox and one kernel action:
  a boolean formula over resource *atoms* the kernel can test (`path ==`,
  `path like "p*"`, `ip in CIDR`, `port in lo..hi`, `protocol in {...}`,
  `host in {...}`), with `Unknown` where the source says something the kernel
  cannot see. `Rule` pairs a formula with its policy; `SandboxIR` collects a
  sandbox's rules per action. `specialize` builds formulas, `lower` turns
  them into map entries.

Formulas keep Cedar's evaluation semantics, including errors: `And`/`Or` are
left-to-right and short-circuit, and a sub-formula may *error* on part of
the resource space (`host in {...}` where the destination has no host; an
`ErrorConst`). A policy applies only where its formula is true: an error
makes it not apply, as in Cedar. The IR holds no BPF knowledge: no bytes,
no map names, no key layouts.
"""

from __future__ import annotations

import ipaddress
from dataclasses import dataclass, field
from typing import Literal, TypeAlias

from compiler.errors import Location
from compiler.expr import EntityUid, Expr, GetAttr, HasAttr, Lit, Var, render, render_pattern, walk

Effect = Literal["permit", "forbid"]
IpNetwork: TypeAlias = ipaddress.IPv4Network | ipaddress.IPv6Network

PORT_MAX = 65535
PROTOCOLS: tuple[str, ...] = ("tcp", "udp")  # the protocols a kernel request can have


@dataclass(frozen=True)
class Scope:
    """A principal or resource scope: `all`, `== E`, `in E`, `is T`, `is T in E`."""

    op: Literal["all", "==", "in", "is"]
    entity: EntityUid | None = None
    entity_type: str | None = None  # for `is` (with optional `in` entity)

    def __str__(self) -> str:
        if self.op == "all":
            return ""
        if self.op == "is":
            tail = f" in {self.entity}" if self.entity is not None else ""
            return f" is {self.entity_type}{tail}"
        return f" {self.op} {self.entity}"


@dataclass(frozen=True)
class Policy:
    """One Cedar policy, as the compiler sees it."""

    pid: str  # `@id`, else Cedar's positional `policyN`
    cedar_id: str
    effect: Effect
    principal: Scope
    # INVARIANT: concrete actions only (groups expanded), filtered to those
    # whose resource types the resource scope admits.
    actions: frozenset[str]
    action_text: str  # the action scope as written, for reports
    resource: Scope
    # INVARIANT: all `when` bodies and negated `unless` bodies, conjoined in
    # source order; `Lit(True)` when the policy has no conditions.
    condition: Expr
    location: Location
    statement: int  # statement index in its source, -1 when unknown

    def named_entities(self) -> frozenset[EntityUid]:
        """Every entity the policy names: its scopes' and its condition's literals.

        With the principal, these are the only roots from which a condition
        can reach an entity (through parents and attribute references).
        """
        scoped = (self.principal.entity, self.resource.entity)
        literals = (n.value for n in walk(self.condition)
                    if isinstance(n, Lit) and isinstance(n.value, EntityUid))
        return frozenset(u for u in (*scoped, *literals) if u is not None)

    def context_reads(self) -> frozenset[str] | None:
        """The context attributes the condition reads (`context.a`, `context has a`);
        None when it uses the context otherwise (compares or passes it whole)."""
        nodes = walk(self.condition)
        ctx = Var("context")
        named = frozenset(n.attr for n in nodes
                          if isinstance(n, GetAttr | HasAttr) and n.arg == ctx)
        direct = sum(1 for n in nodes if isinstance(n, GetAttr | HasAttr) and n.arg == ctx)
        if sum(1 for n in nodes if n == ctx) > direct:
            return None
        return named

    def __str__(self) -> str:
        return (
            f"{self.effect} {self.pid}: principal{self.principal}, {self.action_text}, "
            f"resource{self.resource} when {render(self.condition)}"
        )


# ---- kernel formulas ---------------------------------------------------------


@dataclass(frozen=True)
class Const:
    value: bool

    def __str__(self) -> str:
        return "true" if self.value else "false"


@dataclass(frozen=True)
class ErrorConst:
    """Evaluation always errors here (so the policy never applies)."""

    reason: str

    def __str__(self) -> str:
        return f"error({self.reason})"


@dataclass(frozen=True)
class Unknown:
    """Something the kernel cannot decide; `lower` approximates it by polarity.

    `path_hint` narrows the approximation for an unsupported `like` pattern:
    the pattern can only match paths that start with its literal prefix.
    """

    reason: str
    path_hint: str | None = None

    def __str__(self) -> str:
        return f"unknown({self.reason})"


@dataclass(frozen=True)
class PathEq:
    path: str

    def __str__(self) -> str:
        return f'path == "{render_pattern(tuple(self.path))}"'


@dataclass(frozen=True)
class PathPrefix:
    # INVARIANT: matches every path that starts with `prefix`, `prefix` included.
    prefix: str

    def __str__(self) -> str:
        return f'path like "{render_pattern(tuple(self.prefix))}*"'


@dataclass(frozen=True)
class PathIn:
    """`resource in <set>`: membership, expanded to the member paths."""

    set: EntityUid
    paths: frozenset[str]

    def __str__(self) -> str:
        return f"resource in {self.set} ({len(self.paths)} paths)"


@dataclass(frozen=True)
class IpIn:
    # INVARIANT: a network in canonical form (host bits zero).
    network: IpNetwork

    def __str__(self) -> str:
        return f"ip in {self.network}"


@dataclass(frozen=True)
class PortIn:
    # INVARIANT: 0 <= lo <= hi <= PORT_MAX.
    lo: int
    hi: int

    def __str__(self) -> str:
        return f"port == {self.lo}" if self.lo == self.hi else f"port in {self.lo}..{self.hi}"


@dataclass(frozen=True)
class ProtoIn:
    # INVARIANT: a subset of PROTOCOLS.
    protocols: frozenset[str]

    def __str__(self) -> str:
        return "protocol in {" + ", ".join(sorted(self.protocols)) + "}"


@dataclass(frozen=True)
class HostIn:
    """`resource.host` is one of `hosts` (an error where there is no host)."""

    hosts: frozenset[str]

    def __str__(self) -> str:
        return "host in {" + ", ".join(sorted(self.hosts)) + "}"


@dataclass(frozen=True)
class HostLike:
    """`resource.host like <pattern>` (an error where there is no host)."""

    pattern: tuple[str | None, ...]

    def __str__(self) -> str:
        return f'host like "{render_pattern(self.pattern)}"'


@dataclass(frozen=True)
class HasHost:
    def __str__(self) -> str:
        return "resource has host"


@dataclass(frozen=True)
class Not:
    arg: Formula

    def __str__(self) -> str:
        return f"!({self.arg})"


@dataclass(frozen=True)
class And:
    # INVARIANT: at least two arguments; evaluated left to right.
    args: tuple[Formula, ...]

    def __str__(self) -> str:
        return "(" + " && ".join(str(a) for a in self.args) + ")"


@dataclass(frozen=True)
class Or:
    # INVARIANT: at least two arguments; evaluated left to right.
    args: tuple[Formula, ...]

    def __str__(self) -> str:
        return "(" + " || ".join(str(a) for a in self.args) + ")"


@dataclass(frozen=True)
class Ite:
    cond: Formula
    then: Formula
    else_: Formula

    def __str__(self) -> str:
        return f"(if {self.cond} then {self.then} else {self.else_})"


Atom: TypeAlias = (
    PathEq | PathPrefix | PathIn | IpIn | PortIn | ProtoIn | HostIn | HostLike | HasHost
)
Formula: TypeAlias = Const | ErrorConst | Unknown | Atom | Not | And | Or | Ite


def is_total(f: Formula) -> bool:
    """Whether `f` evaluates without error everywhere (so it can be folded)."""
    match f:
        case ErrorConst() | Unknown() | HostIn() | HostLike():
            return False
        case Not(arg=a):
            return is_total(a)
        case And(args=args) | Or(args=args):
            return all(is_total(a) for a in args)
        case Ite(cond=c, then=t, else_=e):
            return is_total(c) and is_total(t) and is_total(e)
    return True


def conj(a: Formula, b: Formula) -> Formula:
    """`a && b`, folded where Cedar's semantics allow it."""
    if a == Const(False) or b == Const(True):
        return a
    if a == Const(True):
        return b
    if b == Const(False) and is_total(a):
        return b
    if isinstance(a, ErrorConst):
        return a
    return And((*_flat(a, And), *_flat(b, And)))


def disj(a: Formula, b: Formula) -> Formula:
    """`a || b`, folded where Cedar's semantics allow it."""
    if a == Const(True) or b == Const(False):
        return a
    if a == Const(False):
        return b
    if b == Const(True) and is_total(a):
        return b
    if isinstance(a, ErrorConst):
        return a
    return Or((*_flat(a, Or), *_flat(b, Or)))


def neg(a: Formula) -> Formula:
    if isinstance(a, Const):
        return Const(not a.value)
    if isinstance(a, Not):
        return a.arg
    if isinstance(a, ErrorConst):
        return a
    return Not(a)


def _flat(f: Formula, kind: type[And] | type[Or]) -> tuple[Formula, ...]:
    return f.args if isinstance(f, kind) else (f,)


def atoms(f: Formula) -> list[Formula]:
    """Every leaf of `f` (atoms, constants, unknowns)."""
    out: list[Formula] = []
    todo = [f]
    while todo:
        n = todo.pop()
        match n:
            case Not(arg=a):
                todo.append(a)
            case And(args=args) | Or(args=args):
                todo.extend(args)
            case Ite(cond=c, then=t, else_=e):
                todo.extend((c, t, e))
            case _:
                out.append(n)
    return out


@dataclass(frozen=True)
class Rule:
    """One policy's meaning for one sandbox and one kernel action."""

    pid: str
    effect: Effect
    action: str
    formula: Formula

    def __str__(self) -> str:
        return f"{self.effect} {self.pid}: {self.formula}"


@dataclass(frozen=True)
class SandboxIR:
    """A sandbox's kernel rules, per action, in policy order."""

    name: str  # `default`, `AgentClass::"c"` or `Agent::"a"`
    sandbox_id: int
    principal: EntityUid
    # INVARIANT: every key is a kernel action; rules keep source order.
    rules: dict[str, tuple[Rule, ...]] = field(default_factory=dict)

    def __str__(self) -> str:
        lines = [f"sandbox {self.name} (id {self.sandbox_id}, principal {self.principal})"]
        for action, rules in self.rules.items():
            lines.append(f"  {action}:")
            lines.extend(f"    {r}" for r in rules)
            if not rules:
                lines.append("    (no rules: deny)")
        return "\n".join(lines)
