"""The one Cedar schema, for both enforcement points, read structurally.

`schema.cedarschema.json` (shipped with the package, Cedar's JSON schema
form) is the single source: cedarpy validates policies and entities against
it, and this module reads the same JSON for the facts the compiler and the
decision point work with: action groups, each action's principal, resource
and context types, each entity type's parents and attributes. Nothing is
mirrored by hand; `manul compile --schema` prints it in Cedar's syntax.

What is *kernel* is the schema's: the actions in `Action::"kernelAccess"`
(their context is empty, so the kernel can decide them). Each is enforced
in the map family its resource type names (`FAMILIES`). Every other action
is a gateway action, and the reason the kernel leaves it to the gateway is
the `doc` annotation of the action or of its nearest group ("the kernel
does not see MCP calls").
"""

from __future__ import annotations

import functools
import json
from dataclasses import dataclass, field
from importlib import resources
from typing import Any, Literal

import cedarpy

from compiler.errors import Diagnostic, SchemaError

Family = Literal["path", "net", "socket"]

KERNEL_GROUP = "kernelAccess"
GATEWAY_GROUP = "gatewayAccess"
# Which kernel map decides an action, by its resource type (BPF side: manul.h).
FAMILIES: dict[str, Family] = {
    "FilePath": "path",
    "Executable": "path",
    "NetworkDestination": "net",
    "SocketKind": "socket",
}
# The path actions in their kernel slot order: a slot index is ABI (manul.h,
# SBX_ACT_*), so this order is fixed here and checked against the schema.
PATH_ACTIONS: tuple[str, ...] = ("readFile", "writeFile", "exec", "loadLibrary")
SOCKET_KINDS: tuple[str, ...] = ("raw", "packet")  # the SocketKind ids the kernel tells apart


@dataclass(frozen=True)
class AttrInfo:
    name: str
    type: str  # Cedar type name: String, Long, Boolean, Set, Entity, ipaddr, ...
    required: bool


@dataclass(frozen=True)
class ActionInfo:
    name: str
    groups: frozenset[str]  # transitive, without the action itself
    principals: frozenset[str]
    resources: frozenset[str]
    context: tuple[AttrInfo, ...]  # the context record's attributes
    doc: str = ""

    @property
    def context_empty(self) -> bool:
        return not self.context


@dataclass(frozen=True)
class EntityTypeInfo:
    name: str
    parents: frozenset[str]  # direct parent types
    attributes: tuple[AttrInfo, ...]
    doc: str = ""

    @property
    def attrs(self) -> frozenset[str]:
        return frozenset(a.name for a in self.attributes)

    @property
    def optional_attrs(self) -> frozenset[str]:
        return frozenset(a.name for a in self.attributes if not a.required)


@dataclass(frozen=True)
class Schema:
    """The parsed schema: its JSON for cedarpy plus the facts Manul works with."""

    json: str
    actions: dict[str, ActionInfo]  # only actions that apply to something
    groups: dict[str, frozenset[str]]  # action group -> its groups (transitive)
    group_docs: dict[str, str]
    entity_types: dict[str, EntityTypeInfo]
    cedar: cedarpy.Schema = field(compare=False, repr=False)

    @property
    def text(self) -> str:
        """The schema in Cedar's human syntax (as `manul compile --schema` prints it)."""
        return str(self.cedar).replace("__cedar::", "")

    def expand(self, action: str) -> frozenset[str]:
        """The concrete actions `action in Action::"<action>"` covers."""
        return frozenset(
            name for name, info in self.actions.items() if name == action or action in info.groups
        )

    def action_groups(self, action: str) -> frozenset[str]:
        """The groups `Action::"<action>"` is transitively in (an action or a group)."""
        info = self.actions.get(action)
        return info.groups if info is not None else self.groups.get(action, frozenset())

    def ancestor_types(self, type_name: str) -> frozenset[str]:
        """Every type an entity of `type_name` may transitively be `in`."""
        seen: set[str] = set()
        todo = [type_name]
        while todo:
            info = self.entity_types.get(todo.pop())
            if info is None:
                continue
            for parent in info.parents:
                if parent not in seen:
                    seen.add(parent)
                    todo.append(parent)
        return frozenset(seen)

    @property
    def kernel_actions(self) -> dict[str, Family]:
        """Kernel action -> the map family that decides it, in schema order."""
        return {
            a: FAMILIES[next(iter(info.resources))]
            for a, info in self.actions.items()
            if KERNEL_GROUP in info.groups
        }

    @property
    def gateway_actions(self) -> frozenset[str]:
        return frozenset(a for a, info in self.actions.items() if KERNEL_GROUP not in info.groups)

    def gateway_reason(self, action: str) -> str:
        """Why the kernel leaves `action` to the gateway, from the schema's docs."""
        info = self.actions[action]
        what = info.doc
        if not what:  # the nearest documented group (groups are few and shallow)
            for g in sorted(info.groups, key=lambda g: len(self.groups.get(g, ()))):
                if g != GATEWAY_GROUP and self.group_docs.get(g):
                    what = self.group_docs[g]
                    break
        return f"the kernel does not see {what or 'this action'}"


@functools.cache
def load_schema() -> Schema:
    """Read and parse the shipped schema (cached: it never changes at runtime)."""
    text = resources.files("compiler").joinpath("schema.cedarschema.json").read_text("utf-8")
    return parse_schema(text)


def parse_schema(text: str) -> Schema:
    """Parse Cedar's JSON schema form; `SchemaError` if cedarpy or Manul refuses it."""
    try:
        cedar = cedarpy.Schema.from_json_str(text)
        raw = json.loads(text)
        ns = raw[""]
        common: dict[str, Any] = ns.get("commonTypes", {})
        entity_types = {
            name: EntityTypeInfo(
                name,
                frozenset(body.get("memberOfTypes", ())),
                _attributes(body.get("shape"), common),
                body.get("annotations", {}).get("doc", ""),
            )
            for name, body in ns.get("entityTypes", {}).items()
        }
        parents = {
            name: [m["id"] for m in body.get("memberOf", ())]
            for name, body in ns["actions"].items()
        }
        actions: dict[str, ActionInfo] = {}
        groups: dict[str, frozenset[str]] = {}
        docs: dict[str, str] = {}
        for name, body in ns["actions"].items():
            closure = _closure(name, parents)
            doc = body.get("annotations", {}).get("doc", "")
            applies = body.get("appliesTo")
            if applies is None:
                groups[name] = closure
                docs[name] = doc
                continue
            actions[name] = ActionInfo(
                name,
                closure,
                frozenset(applies.get("principalTypes", ())),
                frozenset(applies.get("resourceTypes", ())),
                _attributes(applies.get("context"), common),
                doc,
            )
    except ValueError as e:  # cedarpy's refusal and JSON errors alike
        raise SchemaError(Diagnostic(f"invalid Cedar schema: {e}")) from e
    except (KeyError, TypeError, AttributeError) as e:
        raise SchemaError(Diagnostic(f"unexpected Cedar schema structure: {e!r}")) from e
    schema = Schema(text, actions, groups, docs, entity_types, cedar)
    _check(schema)
    return schema


def _closure(name: str, parents: dict[str, list[str]]) -> frozenset[str]:
    seen: set[str] = set()
    todo = list(parents.get(name, ()))
    while todo:
        g = todo.pop()
        if g not in seen:
            seen.add(g)
            todo.extend(parents.get(g, ()))
    return frozenset(seen)


def _attributes(shape: Any, common: dict[str, Any]) -> tuple[AttrInfo, ...]:
    """A record type's attributes (a common type name is looked up)."""
    if shape is None:
        return ()
    if shape.get("type") in common:
        shape = common[shape["type"]]
    out = []
    for name, t in sorted(shape.get("attributes", {}).items()):
        kind = t["type"]
        if kind == "Extension":
            kind = t["name"]
        out.append(AttrInfo(name, kind, bool(t.get("required", True))))
    return tuple(out)


def _check(schema: Schema) -> None:
    """What the kernel side relies on: kernel actions in known map families,
    with an empty context, and the path actions in their ABI slots."""
    problems = []
    for a, info in schema.actions.items():
        if KERNEL_GROUP not in info.groups:
            continue
        if len(info.resources) != 1 or next(iter(info.resources)) not in FAMILIES:
            problems.append(f"kernel action `{a}` must apply to one of {sorted(FAMILIES)}")
        if info.context:
            problems.append(f"kernel action `{a}` must have an empty context")
    paths = [a for a, info in schema.actions.items() if info.resources & {"FilePath", "Executable"}]
    if sorted(paths) != sorted(PATH_ACTIONS):
        problems.append(f"path actions {sorted(paths)} differ from the kernel's {PATH_ACTIONS}")
    if problems:
        raise SchemaError([Diagnostic(f"schema: {p}") for p in problems])


# Derived once, for the modules that need them as constants.
KERNEL_ACTIONS: dict[str, Family] = load_schema().kernel_actions
