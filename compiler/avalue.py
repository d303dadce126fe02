"""The abstract values partial evaluation works with, and its context.

A sub-expression of a condition is either a constant (`Static`, or `Err`
when Cedar's evaluation of it errors), the request's resource (`Res`) or one
of its attributes (`Attr`), a boolean that depends on the resource (`Sym`,
holding a kernel `Formula`), or something the compiler cannot follow
(`Opaque`). Shared by `specialize` (the evaluator) and `resource` (what
comparisons on the resource mean as atoms).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import TypeAlias

from compiler import values as V
from compiler.entities import RESERVED_PREFIX, Entities
from compiler.expr import EntityUid
from compiler.ir import Const, ErrorConst, Formula, Unknown
from compiler.schema import Schema


@dataclass(frozen=True)
class Static:
    value: V.Value


@dataclass(frozen=True)
class Err:
    reason: str


@dataclass(frozen=True)
class Res:
    """The request's resource entity."""


@dataclass(frozen=True)
class Attr:
    """`resource.<name>`."""

    name: str


@dataclass(frozen=True)
class Opaque:
    """A non-boolean value the compiler cannot follow."""

    reason: str


@dataclass(frozen=True)
class Sym:
    """A boolean that depends on the resource."""

    formula: Formula


AValue: TypeAlias = Static | Err | Res | Attr | Opaque | Sym


@dataclass(frozen=True)
class Context:
    principal: EntityUid
    principal_ancestors: frozenset[EntityUid]
    action: str
    resource_type: str
    schema: Schema
    entities: Entities

    @property
    def anonymous(self) -> bool:
        """A class or default sandbox: the principal stands for any agent in it."""
        return self.principal.id.startswith(RESERVED_PREFIX) and self.principal.type == "Agent"


def to_formula(v: AValue) -> Formula:
    match v:
        case Static(value=bool() as b):
            return Const(b)
        case Sym(formula=f):
            return f
        case Err(reason=r):
            return ErrorConst(r)
        case Opaque(reason=r):
            return Unknown(r)
    return ErrorConst("type error: expected a boolean")
