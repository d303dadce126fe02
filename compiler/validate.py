"""Stage 3, validate: schema checks, Manul's own checks, and the layer split.

* cedarpy's validator checks every source against the sandbox schema
  (unknown actions and attributes, type errors, unsafe optional access).
* Manul refuses, with a located error, what the kernel cannot enforce and
  must not guess at: a `forbid` on a kernel action whose path pattern has a
  `*` other than a trailing one (denying the whole literal prefix instead
  would be sound but surprising), and paths longer than an LPM key holds.
* Each policy is classified: `kernel` (all its actions are kernel actions),
  `gateway` (none are), or `partial` (both), with the reasons.

Called by the pipeline after `ir` policies are built, before `lower`.
"""

from __future__ import annotations

import re

import cedarpy

from compiler.errors import Diagnostic, LimitError, Location, SchemaError, UnsupportedError
from compiler.expr import Binary, EntityUid, Expr, GetAttr, HasAttr, Like, Lit, SetLit, Var, walk
from compiler.ir import Policy, Unknown
from compiler.limits import path_problem
from compiler.parse import ParsedPolicy, ParsedSources
from compiler.resource import path_pattern
from compiler.result import Layer, PolicyReport
from compiler.schema import GATEWAY_REASONS, KERNEL_ACTIONS, SandboxSchema
from compiler.source import WILDCARD, SourceText


def validate_schema(parsed: ParsedSources, schema: SandboxSchema) -> None:
    """Run cedarpy's validator on every source; raise `SchemaError` on errors."""
    errors: list[Diagnostic] = []
    by_source: dict[str, list[ParsedPolicy]] = {}
    for p in parsed.policies:
        by_source.setdefault(p.source.name, []).append(p)
    for src in parsed.sources:
        if not src.statements:
            continue
        result = cedarpy.validate_policies(src.text, schema.text)
        if result.validation_passed:
            continue
        annotations = result.id_annotations_by_policy_id
        for err in result.errors:
            pid = err.policy_id
            m = re.fullmatch(r"policy(\d+)", pid or "")
            index = int(m.group(1)) if m else -1
            name = annotations.get(pid, pid) if pid else None
            message = re.sub(r"^for policy `[^`]*`, ", "", err.error)
            errors.append(Diagnostic(message, _locate(src, index, message), name or None))
    if errors:
        raise SchemaError(errors)


def _locate(src: SourceText, index: int, message: str) -> Location:
    """The first backticked word of `message` found in the policy, else its start."""
    for word in re.findall(r"`([^`]+)`", message):
        found = src.find_word(index, word)
        if found is not None:
            return found
    return src.statement_location(index)


def check_kernel_limits(policies: list[Policy], parsed: ParsedSources) -> None:
    """Refuse inner-`*` path patterns in kernel forbids, and oversized paths.

    Raises `UnsupportedError` (with every problem found) when a forbid has an
    unsupported pattern, else `LimitError` when only sizes are the problem.
    """
    unsupported: list[Diagnostic] = []
    too_big: list[Diagnostic] = []
    sources = {p.pid: p for p in parsed.policies}
    for pol in policies:
        if not pol.actions & KERNEL_ACTIONS.keys():
            continue
        src = sources[pol.pid]
        for node in walk(pol.condition):
            for value, is_pattern, pattern in _path_literals(node):
                loc = src.source.find_string(src.statement, value, pattern=is_pattern)
                problem = path_problem(value, pattern)
                if problem is not None:
                    too_big.append(Diagnostic(problem, loc, pol.pid))
                if is_pattern and pol.effect == "forbid" and pattern is not None:
                    f = path_pattern(pattern)
                    if isinstance(f, Unknown):
                        unsupported.append(Diagnostic(f.reason, loc, pol.pid))
        for uid in (pol.resource.entity,):
            if uid is not None and uid.type in ("FilePath", "Executable"):
                problem = path_problem(uid.id, None)
                if problem is not None:
                    loc = src.source.find_string(src.statement, uid.id)
                    too_big.append(Diagnostic(problem, loc, pol.pid))
    if unsupported:
        raise UnsupportedError(unsupported + too_big)
    if too_big:
        raise LimitError(too_big)


def _path_literals(node: Expr) -> list[tuple[str, bool, tuple[str | None, ...] | None]]:
    """Path strings compared with `resource.path` in `node`: (text, is_pattern, pattern)."""
    path_attr = GetAttr(Var("resource"), "path")

    def is_path(e: Expr) -> bool:
        return e == path_attr

    out: list[tuple[str, bool, tuple[str | None, ...] | None]] = []
    match node:
        case Like(arg=a, pattern=p) if is_path(a):
            out.append(("".join(WILDCARD if el is None else el for el in p), True, p))
        case Binary(op="==" | "!=", left=lhs, right=Lit(value=str() as s)) if is_path(lhs):
            out.append((s, False, None))
        case Binary(op="==" | "!=", left=Lit(value=str() as s), right=rhs) if is_path(rhs):
            out.append((s, False, None))
        case Binary(op="contains", left=SetLit(elems=es), right=rhs) if is_path(rhs):
            out.extend(
                (e.value, False, None)
                for e in es
                if isinstance(e, Lit) and isinstance(e.value, str)
            )
        case Lit(value=EntityUid(type="FilePath" | "Executable", id=path)):
            out.append((path, False, None))
        case _:
            pass
    return out


def classify(pol: Policy, schema: SandboxSchema) -> PolicyReport:
    """Kernel, gateway or partial, with the reasons."""
    kernel = tuple(sorted(pol.actions & KERNEL_ACTIONS.keys()))
    gateway = tuple(sorted(pol.actions - KERNEL_ACTIONS.keys()))
    reasons: list[str] = []
    for a in gateway:
        reasons.append(f"`{a}`: {GATEWAY_REASONS.get(a, 'the kernel does not see this action')}")
    ctx_reads = sorted(
        {
            n.attr
            for n in walk(pol.condition)
            if isinstance(n, GetAttr | HasAttr) and n.arg == Var("context")
        }
    )
    if ctx_reads:
        attrs = ", ".join(f"`context.{a}`" for a in ctx_reads)
        reasons.append(f"reads {attrs}: only the gateway knows the request context")
    if not pol.actions:
        return PolicyReport(
            pol.pid,
            pol.effect,
            "gateway",
            (),
            (),
            ("applies to no action in the schema",),
            pol.location,
        )
    layer: Layer = "kernel" if not gateway else ("gateway" if not kernel else "partial")
    if layer == "partial":
        compiled = ", ".join(f"`{a}`" for a in kernel)
        reasons.insert(0, f"compiled for {compiled}; the rest stays at the gateway")
    return PolicyReport(pol.pid, pol.effect, layer, kernel, gateway, tuple(reasons), pol.location)
