"""`manul compile --query`: answer Cedar requests the way Manul would.

A request for a kernel action is decided by the reference evaluator from the
compiled map entries of the principal's sandbox (layer `kernel`); any other
request is what the gateway decides, and is answered by cedarpy on the
source policies (layer `gateway`). Pure: takes request objects (already
decoded from JSON lines), returns answer objects.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from typing import Any

import cedarpy

from compiler.errors import Diagnostic, QueryError
from compiler.evaluate import SandboxEvaluator
from compiler.expr import EntityUid
from compiler.result import Compilation, CompiledSandbox
from compiler.schema import KERNEL_ACTIONS


@dataclass(frozen=True)
class Answer:
    decision: str  # allow | deny
    policies: tuple[str, ...]
    layer: str  # kernel | gateway

    def to_json(self) -> dict[str, Any]:
        return {"decision": self.decision, "policies": list(self.policies), "layer": self.layer}


def parse_uid(value: Any, what: str) -> EntityUid:
    """`Type::"id"` or `{"type": ..., "id": ...}`."""
    if isinstance(value, dict):
        try:
            return EntityUid.from_json(value)
        except ValueError as e:
            raise QueryError(Diagnostic(f"`{what}`: {e}")) from e
    if isinstance(value, str) and "::" in value:
        type_name, _, rest = value.rpartition("::")
        try:
            ident = json.loads(rest)
        except json.JSONDecodeError as e:
            raise QueryError(Diagnostic(f"`{what}`: not an entity: `{value}`")) from e
        if isinstance(ident, str):
            return EntityUid(type_name, ident)
    raise QueryError(Diagnostic(f"`{what}`: not an entity: `{value}`"))


class Querier:
    def __init__(self, compilation: Compilation):
        self.c = compilation
        self._evaluators: dict[str, SandboxEvaluator] = {}
        self._policies = cedarpy.PolicySet.from_str(compilation.policy_text)
        self._schema = cedarpy.Schema.from_json_str(compilation.schema_json)

    def sandbox_for(self, principal: EntityUid) -> CompiledSandbox:
        """The sandbox whose rules apply to `principal`."""
        for s in self.c.sandboxes:
            if s.principal == principal or s.name == str(principal):
                return s
        if principal.type == "Agent":
            default = self.c.sandbox("default")
            if default is not None:
                return default  # an agent nothing names and no class claims
        raise QueryError(Diagnostic(f"no sandbox for principal `{principal}`"))

    def answer(self, request: dict[str, Any]) -> Answer:
        if not isinstance(request, dict):
            raise QueryError(Diagnostic("a request is a JSON object"))
        principal = parse_uid(request.get("principal"), "principal")
        action = parse_uid(request.get("action"), "action")
        attrs = request.get("resource_attrs") or {}
        if not isinstance(attrs, dict):
            raise QueryError(Diagnostic("`resource_attrs` must be an object"))
        if action.type == "Action" and action.id in KERNEL_ACTIONS:
            if action.id == "openRawSocket":
                attrs = {"kind": parse_uid(request.get("resource"), "resource").id}
            sandbox = self.sandbox_for(principal)
            ev = self._evaluators.get(sandbox.name)
            if ev is None:
                ev = self._evaluators[sandbox.name] = SandboxEvaluator(sandbox)
            try:
                verdict = ev.decide(action.id, attrs)
            except ValueError as e:
                raise QueryError(Diagnostic(f"`resource_attrs`: {e}")) from e
            prov = self.c.rules.get(verdict.rule_id)
            return Answer(
                "allow" if verdict.allow else "deny",
                prov.policies if prov is not None else (),
                "kernel",
            )
        return self._gateway(request, principal, action, attrs)

    def _gateway(
        self,
        request: dict[str, Any],
        principal: EntityUid,
        action: EntityUid,
        attrs: dict[str, Any],
    ) -> Answer:
        resource = parse_uid(request.get("resource"), "resource")
        entities = [e for e in self.c.entities_json if EntityUid.from_json(e["uid"]) != resource]
        base = next(
            (e for e in self.c.entities_json if EntityUid.from_json(e["uid"]) == resource), None
        )
        entities.append(
            {
                "uid": {"type": resource.type, "id": resource.id},
                "attrs": {k: _attr(k, v) for k, v in attrs.items()}
                or (base or {}).get("attrs", {}),
                "parents": (base or {}).get("parents", []),
            }
        )
        result = cedarpy.is_authorized(
            {
                "principal": {"type": principal.type, "id": principal.id},
                "action": {"type": action.type, "id": action.id},
                "resource": {"type": resource.type, "id": resource.id},
                "context": request.get("context") or {},
            },
            self._policies,
            json.dumps(entities),
            schema=self._schema,
        )
        if result.decision.value == "NoDecision":
            raise QueryError(Diagnostic("; ".join(result.diagnostics.errors) or "no decision"))
        order = {p.policy: i for i, p in enumerate(self.c.policies)}
        pids = sorted(
            (self.c.policy_id(r) for r in result.diagnostics.reasons),
            key=lambda p: order.get(p, len(order)),
        )
        return Answer("allow" if result.allowed else "deny", tuple(pids), "gateway")


def _attr(name: str, value: Any) -> Any:
    if name == "ip" and isinstance(value, str):
        return {"__extn": {"fn": "ip", "arg": value}}
    return value
