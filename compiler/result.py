"""What the compiler hands back: plain, frozen data.

`Compilation` is the whole result; `CompiledSandbox` is what `agent/sandbox`
writes into the kernel for one sandbox (its map entries as bytes, plus the
rule-id table for audit), together with what it did *not* compile: the
gateway-only policies with reasons and every approximation. `to_json` gives
the `manul compile --json` form.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Literal

from compiler.errors import Location
from compiler.expr import EntityUid
from compiler.ir import SandboxIR

Layer = Literal["kernel", "gateway", "both"]


@dataclass(frozen=True)
class Provenance:
    """What a rule id stands for: the policies that decided, and how."""

    effect: Literal["permit", "forbid"]
    policies: tuple[str, ...]  # policy ids, source order


@dataclass(frozen=True)
class MapEntry:
    key: bytes
    value: bytes
    kind: str  # paths: root | prefix | exact; net: root | cidr | host
    what: str  # the path, prefix or network, for people


@dataclass(frozen=True)
class Approximation:
    policy: str
    action: str
    direction: Literal["narrowed", "widened"]  # permit allows less / forbid denies more
    reason: str

    def __str__(self) -> str:
        effect = "allows less" if self.direction == "narrowed" else "denies more"
        return f"policy `{self.policy}`: `{self.action}`: {self.reason}: the kernel {effect}"


@dataclass(frozen=True)
class GatewayItem:
    policy: str
    layer: Layer  # gateway (nothing compiled) or both (the kernel part compiled)
    reason: str

    def __str__(self) -> str:
        return f"policy `{self.policy}`: {self.reason}"


@dataclass(frozen=True)
class PolicyReport:
    policy: str
    effect: str
    layer: Layer
    kernel_actions: tuple[str, ...]
    gateway_actions: tuple[str, ...]
    reasons: tuple[str, ...]
    location: Location


@dataclass(frozen=True)
class CompiledSandbox:
    name: str  # `default`, `AgentClass::"c"`, `Agent::"a"`
    sandbox_id: int
    principal: EntityUid  # the Cedar principal its requests are made as
    # INVARIANT: map name -> entries; every LPM map has this sandbox's root
    # entries, so a lookup for a known sandbox id never misses.
    maps: dict[str, tuple[MapEntry, ...]]
    rules: dict[int, Provenance]  # the rule ids its entries use
    gateway: tuple[GatewayItem, ...]
    approximations: tuple[Approximation, ...]
    notes: tuple[str, ...]
    hosts: tuple[str, ...]  # resolved host names whose addresses its entries encode
    ir: SandboxIR = field(compare=False)


@dataclass(frozen=True)
class Compilation:
    sandboxes: tuple[CompiledSandbox, ...]
    rules: dict[int, Provenance]  # rule id -> provenance, all sandboxes
    policies: tuple[PolicyReport, ...]
    # What the gateway layer of `--query` evaluates with cedarpy.
    policy_text: str
    entities_json: tuple[dict[str, Any], ...]
    schema_json: str  # the one schema, Cedar JSON form
    # Host names the policies and destination sets name: what the agent
    # resolves before compiling (patterns match only names resolved).
    hosts: tuple[str, ...]
    # Cedar's positional id in `policy_text` (`policyN`) -> the policy's id.
    cedar_ids: dict[str, str] = field(default_factory=dict)

    def sandbox(self, name: str) -> CompiledSandbox | None:
        return next((s for s in self.sandboxes if s.name == name), None)

    def policy_id(self, cedar_id: str) -> str:
        """The id (`@id`, else `file:line`) of a policy cedarpy names positionally."""
        return self.cedar_ids.get(cedar_id, cedar_id)

    def to_json(self, *, entries: bool = True) -> dict[str, Any]:
        return {
            "sandboxes": [_sandbox_json(s, entries) for s in self.sandboxes],
            "rules": {
                str(k): {"effect": v.effect, "policies": list(v.policies)}
                for k, v in sorted(self.rules.items())
            },
            "policies": [
                {
                    "policy": p.policy,
                    "effect": p.effect,
                    "layer": p.layer,
                    "kernel_actions": list(p.kernel_actions),
                    "gateway_actions": list(p.gateway_actions),
                    "reasons": list(p.reasons),
                    "location": str(p.location),
                }
                for p in self.policies
            ],
            "hosts": list(self.hosts),
        }


def _sandbox_json(s: CompiledSandbox, entries: bool) -> dict[str, Any]:
    maps: dict[str, Any] = {}
    for name, es in s.maps.items():
        counts: dict[str, int] = {}
        for e in es:
            counts[e.kind] = counts.get(e.kind, 0) + 1
        m: dict[str, Any] = {"count": len(es), "by_kind": counts}
        if entries:
            m["entries"] = [
                {"kind": e.kind, "what": e.what, "key": e.key.hex(), "value": e.value.hex()}
                for e in es
            ]
        maps[name] = m
    return {
        "name": s.name,
        "sandbox_id": s.sandbox_id,
        "principal": str(s.principal),
        "maps": maps,
        "rules": sorted(s.rules),
        "gateway": [{"policy": g.policy, "layer": g.layer, "reason": g.reason} for g in s.gateway],
        "approximations": [
            {"policy": a.policy, "action": a.action, "direction": a.direction, "reason": a.reason}
            for a in s.approximations
        ],
        "notes": list(s.notes),
        "hosts": list(s.hosts),
    }
