"""Stage 3, validate: schema checks, Manul's own checks, and the layer split.

* cedarpy's validator checks every source against the sandbox schema
  (unknown actions and attributes, type errors, unsafe optional access).
* Manul refuses, with a located error, what the kernel cannot enforce and
  must not guess at: a `forbid` on a kernel action whose path pattern has a
  `*` other than a trailing one (denying the whole literal prefix instead
  would be sound but surprising), and paths longer than an LPM key holds.
* Each policy is classified: `kernel` (all its actions are kernel actions),
  `gateway` (none are), or `both`, with the reasons.

Called by the pipeline after `ir` policies are built, before `lower`.
"""

from __future__ import annotations

import json
import re

import cedarpy

from compiler.entities import RESERVED_PREFIX
from compiler.errors import Diagnostic, LimitError, Location, SchemaError, UnsupportedError
from compiler.expr import Binary, EntityUid, Expr, GetAttr, HasAttr, Like, Lit, SetLit, Var, walk
from compiler.ir import Policy, Unknown
from compiler.limits import path_problem
from compiler.parse import ParsedPolicy, ParsedSources
from compiler.resource import path_pattern
from compiler.result import Layer, PolicyReport
from compiler.schema import KERNEL_ACTIONS, Schema
from compiler.source import WILDCARD, SourceText


def validate_schema(
    parsed: ParsedSources, policies: list[Policy], schema: Schema
) -> dict[str, dict[str, str]]:
    """Run cedarpy's validator on every source, per action where it must.

    One schema serves both layers, so a policy whose scope admits kernel and
    gateway actions (`forbid (principal, action, resource) when {
    context.quarantined }`) cannot type-check for all of them: the kernel
    actions' context is empty. Such a policy is validated again for each
    action its scope admits, and accepted when it type-checks for at least
    one; for the others Cedar skips it at run time (an error), and the
    compiler, which evaluates with Cedar's semantics, does the same. Returns,
    per policy id, the actions it does not type-check for, with the first
    reason; raises `SchemaError` when some policy type-checks for none.
    """
    errors: list[Diagnostic] = []
    skipped: dict[str, dict[str, str]] = {}
    by_statement: dict[tuple[str, int], tuple[ParsedPolicy, Policy]] = {}
    for p, pol in zip(parsed.policies, policies, strict=True):
        by_statement[(p.source.name, p.local_index)] = (p, pol)
    for src in parsed.sources:
        if not src.statements:
            continue
        result = cedarpy.validate_policies(src.text, schema.cedar)
        if result.validation_passed:
            continue
        annotations = result.id_annotations_by_policy_id
        failed: dict[int, list[str]] = {}
        for err in result.errors:
            pid = err.policy_id
            m = re.fullmatch(r"policy(\d+)", pid or "")
            index = int(m.group(1)) if m else -1
            message = re.sub(r"^for policy `[^`]*`, ", "", err.error)
            found = by_statement.get((src.name, index))
            if found is not None:
                failed.setdefault(index, []).append(message)
                continue
            name = annotations.get(pid, pid) if pid else None
            errors.append(Diagnostic(message, _locate(src, index, message), name or None))
        for index, messages in failed.items():
            p, pol = by_statement[(src.name, index)]
            bad = _per_action(p, pol, schema)
            if bad is None or len(bad) == len(pol.actions):
                for message in messages:
                    loc = _locate(src, p.statement, message)
                    errors.append(Diagnostic(message, loc, p.pid))
                continue
            skipped[p.pid] = bad
    if errors:
        raise SchemaError(errors)
    return skipped


def _per_action(p: ParsedPolicy, pol: Policy, schema: Schema) -> dict[str, str] | None:
    """Action -> why `p` does not type-check for it (None: nothing to try per action)."""
    if len(pol.actions) < 2:
        return None
    bad: dict[str, str] = {}
    for action in sorted(pol.actions):
        est = dict(p.est)
        est["action"] = {"op": "==", "entity": {"type": "Action", "id": action}}
        doc = {"staticPolicies": {"policy0": est}, "templates": {}, "templateLinks": []}
        try:
            text = cedarpy.policies_from_json_str(json.dumps(doc))
        except ValueError:
            return None
        result = cedarpy.validate_policies(text, schema.cedar)
        if not result.validation_passed:
            first = result.errors[0].error if result.errors else "does not type-check"
            bad[action] = re.sub(r"^for policy `[^`]*`, ", "", first)
    return bad


def _locate(src: SourceText, index: int, message: str) -> Location:
    """The first backticked word of `message` found in the policy, else its start."""
    for word in re.findall(r"`([^`]+)`", message):
        found = src.find_word(index, word)
        if found is not None:
            return found
    return src.statement_location(index)


def check_reserved(policies: list[Policy], parsed: ParsedSources) -> None:
    """Refuse agent ids with the prefix the compiler gives anonymous principals
    (`Agent::"manul:default"`): a policy naming one would reach class sandboxes."""
    errors: list[Diagnostic] = []
    for pol, src in zip(policies, parsed.policies, strict=True):
        for uid in sorted(pol.named_entities()):
            if uid.type == "Agent" and uid.id.startswith(RESERVED_PREFIX):
                loc = src.source.find_string(src.statement, uid.id) or pol.location
                errors.append(Diagnostic(
                    f"agent ids starting with `{RESERVED_PREFIX}` are reserved: `{uid}`",
                    loc, pol.pid))
    if errors:
        raise UnsupportedError(errors)


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
    def is_path(e: Expr) -> bool:
        # `resource.path`, or anything that can evaluate to it
        # (`if c then resource.path else ""`, `(if c then resource else r).path`)
        nodes = walk(e)
        return any(isinstance(n, Var) and n.name == "resource" for n in nodes) and any(
            isinstance(n, GetAttr) and n.attr == "path" for n in nodes)

    out: list[tuple[str, bool, tuple[str | None, ...] | None]] = []
    match node:
        case Like(arg=a, pattern=p) if is_path(a):
            out.append(("".join(WILDCARD if el is None else el for el in p), True, p))
        case Binary(op="==" | "!=", left=lhs, right=rhs) if is_path(lhs) or is_path(rhs):
            # every string the other side can evaluate to (`if c then "/a" else "/b"`)
            other = rhs if is_path(lhs) else lhs
            out.extend((n.value, False, None) for n in walk(other)
                       if isinstance(n, Lit) and isinstance(n.value, str))
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


def classify(pol: Policy, schema: Schema, skipped: dict[str, str] | None = None) -> PolicyReport:
    """Kernel, gateway or both, with the reasons.

    `skipped`: the actions the policy does not type-check for (Cedar skips
    it for them), from `validate_schema`; they count for neither layer.
    """
    skipped = skipped or {}
    actions = pol.actions - skipped.keys()
    kernel = tuple(a for a in KERNEL_ACTIONS if a in actions)
    gateway = tuple(sorted(actions - KERNEL_ACTIONS.keys()))
    reasons: list[str] = []
    by_reason: dict[str, list[str]] = {}
    for a in gateway:
        by_reason.setdefault(schema.gateway_reason(a), []).append(a)
    for why, acts in by_reason.items():
        reasons.append(f"{why} ({', '.join(f'`{a}`' for a in acts)})")
    if skipped:
        names = ", ".join(f"`{a}`" for a in sorted(skipped, key=_action_order))
        first = skipped[min(skipped, key=_action_order)]
        reasons.append(f"not for {names}: it does not type-check there ({first}), and Cedar "
                       "skips a policy that errors")
    ctx_reads = sorted(
        {
            n.attr
            for n in walk(pol.condition)
            if isinstance(n, GetAttr | HasAttr) and n.arg == Var("context")
        }
    )
    if ctx_reads and kernel:
        attrs = ", ".join(f"`context.{a}`" for a in ctx_reads)
        reasons.append(f"reads {attrs}: kernel actions have an empty context")
    elif ctx_reads:
        attrs = ", ".join(f"`context.{a}`" for a in ctx_reads)
        reasons.append(f"reads {attrs}: only the gateway knows the request context")
    if not actions:
        return PolicyReport(
            pol.pid,
            pol.effect,
            "gateway",
            (),
            (),
            ("applies to no action in the schema",),
            pol.location,
        )
    layer: Layer = "kernel" if not gateway else ("gateway" if not kernel else "both")
    if layer == "both":
        compiled = ", ".join(f"`{a}`" for a in kernel)
        reasons.insert(0, f"compiled for {compiled}; the rest stays at the gateway")
    return PolicyReport(pol.pid, pol.effect, layer, kernel, gateway, tuple(reasons), pol.location)


def _action_order(action: str) -> tuple[int, str]:
    """Kernel actions in their schema order, then the others by name."""
    kernel = list(KERNEL_ACTIONS)
    return (kernel.index(action), "") if action in KERNEL_ACTIONS else (len(kernel), action)
