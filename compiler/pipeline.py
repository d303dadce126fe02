"""The compiler's driver: parse -> ir -> validate -> lower, for every sandbox.

A *sandbox* is one principal the kernel enforces for:

* `default`: an agent in no class (principal `Agent::"manul:default"`);
* `AgentClass::"c"`, for every class in the entities file or named in a
  policy: an anonymous agent that is a member of `c` (and of `c`'s
  ancestors), principal `Agent::"manul:class:c"`;
* `Agent::"a"`, for every agent in the entities file or named in a policy,
  with its classes from the entities file.

`agent/sandbox` binds each workload's cgroup to the sandbox of its agent
(or of its agent's class, or `default`). Sandbox ids are assigned in that
order from 1 unless the caller pins them (`sandbox_ids`), e.g. to keep ids
stable across reloads.
"""

from __future__ import annotations

import ipaddress
from collections.abc import Collection, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from compiler.avalue import Context
from compiler.entities import RESERVED_PREFIX, Entities, parse_entities
from compiler.errors import Diagnostic, InputError
from compiler.expr import Binary, EntityUid, Lit, mentions, walk
from compiler.ir import Const, ErrorConst, Formula, Policy, Rule, SandboxIR, Scope
from compiler.loader import load_policies
from compiler.lower import RuleTable, lower_sandbox
from compiler.parse import PolicySource
from compiler.policy import scope_expr
from compiler.result import Compilation, CompiledSandbox, GatewayItem
from compiler.schema import KERNEL_ACTIONS, load_schema
from compiler.specialize import specialize


@dataclass(frozen=True)
class EntitiesSource:
    name: str
    text: str


@dataclass(frozen=True)
class SandboxSpec:
    name: str
    principal: EntityUid
    ancestors: frozenset[EntityUid]


def compile_policies(
    sources: Sequence[PolicySource],
    entities: EntitiesSource | None = None,
    *,
    resolved: Mapping[str, Sequence[str]] | None = None,
    sandbox_ids: Mapping[str, int] | None = None,
    registry: Sequence[dict[str, Any]] = (),
    only: Collection[str] | None = None,
) -> Compilation:
    """Compile Cedar sources to per-sandbox map entries. Pure: no I/O.

    `resolved` maps host names to the addresses the agent resolved them to
    (the compiler never resolves anything itself); hosts missing from it
    match no address. `registry` is the caller's registry as Cedar entities
    (agents with their attributes, classes, groups), merged under the
    entities file. `only` names the sandboxes to lower (`Agent::"a"`, ...;
    default: all); ids are assigned over all of them either way. Raises a
    `CompileError` subclass on any error.
    """
    schema = load_schema()
    resolved = _check_resolved(resolved or {})
    loaded = load_policies(sources)
    parsed = loaded.parsed
    if entities is None and registry:
        entities = EntitiesSource("registry", "[]")
    ents = (
        parse_entities(entities.name, entities.text, schema, registry) if entities else Entities()
    )
    policies = list(loaded.policies)
    reports = loaded.reports
    specs = _sandboxes(policies, ents)
    ids = _assign_ids(specs, sandbox_ids or {})
    index = _PrincipalIndex(policies)
    table = RuleTable()
    cache: dict[tuple[int, str], Formula] = {}
    compiled: list[CompiledSandbox] = []
    for spec in specs:
        if only is not None and spec.name not in only:
            continue
        sir = SandboxIR(spec.name, ids[spec.name], spec.principal)
        applicable = [
            (i, policies[i])
            for i in index.candidates(spec)
            if _principal_matches(policies[i].principal, spec)
        ]
        for action in KERNEL_ACTIONS:
            ctx = Context(
                spec.principal,
                spec.ancestors,
                action,
                next(iter(schema.actions[action].resources)),
                schema,
                ents,
            )
            rules: list[Rule] = []
            for i, p in applicable:
                if action not in p.actions:
                    continue
                formula = _formula(i, p, ctx, cache)
                if isinstance(formula, ErrorConst) or formula == Const(False):
                    continue  # never applies to this sandbox and action
                rules.append(Rule(p.pid, p.effect, action, formula))
            sir.rules[action] = tuple(rules)
        low = lower_sandbox(sir, table, resolved)
        gateway = tuple(
            GatewayItem(r.policy, r.layer, "; ".join(r.reasons))
            for r in (reports[i] for i, _ in applicable)
            if r.layer != "kernel"
        )
        compiled.append(
            CompiledSandbox(
                name=spec.name,
                sandbox_id=sir.sandbox_id,
                principal=spec.principal,
                maps=low.maps,
                rules={rid: table.by_id[rid] for rid in sorted(low.rule_ids)},
                gateway=gateway,
                approximations=tuple(low.approximations),
                notes=tuple(low.notes),
                hosts=low.hosts,
                ir=sir,
            )
        )
    hosts = sorted(ents.hosts() | _named_hosts(policies))
    return Compilation(
        sandboxes=tuple(compiled),
        rules=dict(table.by_id),
        policies=reports,
        policy_text=parsed.text,
        entities_json=ents.cedar_json,
        schema_json=schema.json,
        hosts=tuple(hosts),
        cedar_ids={p.cedar_id: p.pid for p in parsed.policies},
    )


def _check_resolved(resolved: Mapping[str, Sequence[str]]) -> dict[str, list[str]]:
    """The resolver result, each address checked (IPv4-mapped IPv6 kept as given)."""
    errors: list[Diagnostic] = []
    out: dict[str, list[str]] = {}
    for host, addrs in resolved.items():
        out[host] = []
        for a in addrs:
            try:
                if "%" in a:
                    raise ValueError("a scoped address")
                ipaddress.ip_address(a)
            except ValueError:
                errors.append(
                    Diagnostic(f"resolver result: host `{host}`: `{a}` is not an IP address")
                )
                continue
            out[host].append(a)
    if errors:
        raise InputError(errors)
    return out


def _formula(i: int, p: Policy, ctx: Context, cache: dict[tuple[int, str], Formula]) -> Formula:
    expr = Binary("&&", scope_expr("resource", p.resource), p.condition)
    if mentions(p.condition, "principal"):
        return specialize(expr, ctx)
    key = (i, ctx.action)
    if key not in cache:
        cache[key] = specialize(expr, ctx)
    return cache[key]


class _PrincipalIndex:
    """Policies by the entity in their principal scope, so that each sandbox
    looks only at the policies that can name it (and the unscoped ones)."""

    def __init__(self, policies: list[Policy]):
        self.always: list[int] = []
        self.by_entity: dict[EntityUid, list[int]] = {}
        for i, p in enumerate(policies):
            if p.principal.entity is not None:
                self.by_entity.setdefault(p.principal.entity, []).append(i)
            else:
                self.always.append(i)

    def candidates(self, spec: SandboxSpec) -> list[int]:
        """Policy indices, in source order, whose scope may admit `spec`."""
        out = set(self.always)
        for uid in (spec.principal, *spec.ancestors):
            out.update(self.by_entity.get(uid, ()))
        return sorted(out)


def _principal_matches(scope: Scope, spec: SandboxSpec) -> bool:
    if scope.op == "all":
        return True
    if scope.op == "is":
        if scope.entity_type != spec.principal.type:
            return False
        return (scope.entity is None or scope.entity == spec.principal
                or scope.entity in spec.ancestors)
    assert scope.entity is not None
    if scope.op == "==":
        return scope.entity == spec.principal
    return scope.entity == spec.principal or scope.entity in spec.ancestors


def _sandboxes(policies: list[Policy], ents: Entities) -> list[SandboxSpec]:
    classes = set(ents.of_type("AgentClass"))
    agents = set(ents.of_type("Agent"))
    for p in policies:
        for uid in p.named_entities():
            if uid.type == "AgentClass":
                classes.add(uid)
            elif uid.type == "Agent":
                agents.add(uid)
    # reserved ids (`manul:`) were refused by the loader and the entities reader
    specs = [SandboxSpec("default", EntityUid("Agent", RESERVED_PREFIX + "default"), frozenset())]
    for c in sorted(classes):
        specs.append(
            SandboxSpec(
                str(c),
                EntityUid("Agent", f"{RESERVED_PREFIX}class:{c.id}"),
                frozenset({c}) | ents.ancestors_of(c),
            )
        )
    for a in sorted(agents):
        specs.append(SandboxSpec(str(a), a, ents.ancestors_of(a)))
    return specs


def _assign_ids(specs: list[SandboxSpec], pinned: Mapping[str, int]) -> dict[str, int]:
    used = set(pinned.values())
    if 0 in used or any(not 0 < v < 2**32 for v in used):
        raise InputError(Diagnostic("sandbox ids must be in 1..2^32-1 (0 means no sandbox)"))
    if len(used) != len(pinned):
        raise InputError(Diagnostic("two sandboxes pinned to the same id"))
    out: dict[str, int] = {}
    nxt = 1
    for s in specs:
        if s.name in pinned:
            out[s.name] = pinned[s.name]
            continue
        while nxt in used:
            nxt += 1
        out[s.name] = nxt
        used.add(nxt)
    return out


def _named_hosts(policies: list[Policy]) -> set[str]:
    """Host names compared with `resource.host` anywhere (to resolve)."""
    from compiler.expr import GetAttr, SetLit, Var

    host = GetAttr(Var("resource"), "host")
    out: set[str] = set()
    for p in policies:
        for n in walk(p.condition):
            if isinstance(n, Binary) and n.op in ("==", "!="):
                for a, b in ((n.left, n.right), (n.right, n.left)):
                    if a == host and isinstance(b, Lit) and isinstance(b.value, str):
                        out.add(b.value)
            if (
                isinstance(n, Binary)
                and n.op == "contains"
                and n.right == host
                and isinstance(n.left, SetLit)
            ):
                out.update(
                    e.value for e in n.left.elems if isinstance(e, Lit) and isinstance(e.value, str)
                )
    return out
