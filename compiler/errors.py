"""The compiler's exception hierarchy.

Every error the compiler raises is a `CompileError` carrying one or more
`Diagnostic`s: where (file, line:col when known), which policy (its `@id`,
or Cedar's positional id), and a message in Cedar's style: lowercase, user
input in backticks, related parts joined with colons. Library errors
(cedarpy's `ValueError`s, `json` errors) are chained with `raise ... from e`.

Callers: `manul compile` prints `str(error)`, one diagnostic per line, and
exits 1. Nothing in the compiler writes anywhere, so an error never leaves
anything half-done behind.
"""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True)
class Location:
    """A place in an input file. `line` and `col` are 1-based; 0 = unknown."""

    file: str
    line: int = 0
    col: int = 0

    def __str__(self) -> str:
        if self.line:
            return f"{self.file}:{self.line}:{self.col}"
        return self.file


@dataclass(frozen=True)
class Diagnostic:
    """One problem, Cedar style: `file:line:col: policy `id`: message`."""

    message: str
    location: Location | None = None
    policy: str | None = None

    def __str__(self) -> str:
        parts: list[str] = []
        if self.location is not None:
            parts.append(str(self.location))
        if self.policy is not None:
            parts.append(f"policy `{self.policy}`")
        parts.append(self.message)
        return ": ".join(parts)


class CompileError(Exception):
    """Base of every error the compiler raises."""

    def __init__(self, diagnostics: Diagnostic | list[Diagnostic] | tuple[Diagnostic, ...]):
        if isinstance(diagnostics, Diagnostic):
            diagnostics = (diagnostics,)
        self.diagnostics: tuple[Diagnostic, ...] = tuple(diagnostics)
        super().__init__("\n".join(str(d) for d in self.diagnostics))


class InputError(CompileError):
    """An input file cannot be read as what it claims to be (JSON, UTF-8)."""


class ParseError(CompileError):
    """Cedar text that does not parse."""


class SchemaError(CompileError):
    """Policies or entities that do not validate against the sandbox schema."""


class EntitiesError(CompileError):
    """An entities file that is malformed or breaks Manul's conventions."""


class UnsupportedError(CompileError):
    """Valid Cedar that the kernel cannot enforce and must not guess at.

    Raised instead of an approximation when the sound approximation would be
    surprising (a `forbid` with a `like` pattern that has an inner `*`), or
    for features Manul does not take (templates).
    """


class LimitError(CompileError):
    """Valid Cedar that exceeds a kernel limit (a path longer than an LPM key)."""


class QueryError(CompileError):
    """A `--query` request line that is not a well-formed request."""
