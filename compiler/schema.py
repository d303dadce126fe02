"""The sandbox schema, as the compiler needs it.

`schema.cedarschema` (shipped with the package) is the single source: cedarpy
validates policies against it, and this module reads cedarpy's normalised
rendering of it (`str(cedarpy.Schema)`, one declaration per action and
entity type) for the facts the compiler works with: action groups, each
action's resource types, each entity type's parents and attributes.

What is *kernel* is decided here, in `KERNEL_ACTIONS`: the actions whose
requests the BPF side sees, each with the slot it is enforced in. Everything
else is a gateway action.
"""

from __future__ import annotations

import functools
import re
from dataclasses import dataclass
from importlib import resources
from typing import Literal

import cedarpy

from compiler.errors import Diagnostic, SchemaError

Family = Literal["path", "net", "socket"]

# Kernel action -> (map family, human description). The path slot index of
# each file-family action is its position in PATH_ACTIONS.
KERNEL_ACTIONS: dict[str, Family] = {
    "readFile": "path",
    "writeFile": "path",
    "exec": "path",
    "loadLibrary": "path",
    "connectNetwork": "net",
    "openRawSocket": "socket",
}
SOCKET_KINDS: tuple[str, ...] = ("raw", "packet")  # the SocketKind ids the kernel tells apart
PATH_ACTIONS: tuple[str, ...] = ("readFile", "writeFile", "exec", "loadLibrary")

# Why the kernel cannot enforce a gateway action.
GATEWAY_REASONS: dict[str, str] = {
    "callTool": "the kernel does not see tool calls",
    "callLLM": "the kernel does not see LLM calls",
    "delegate": "the kernel does not see delegation between agents",
}


@dataclass(frozen=True)
class ActionInfo:
    name: str
    groups: frozenset[str]  # transitive, without the action itself
    principals: frozenset[str]
    resources: frozenset[str]
    context_empty: bool


@dataclass(frozen=True)
class EntityTypeInfo:
    name: str
    parents: frozenset[str]  # direct parent types
    attrs: frozenset[str]
    optional_attrs: frozenset[str]


@dataclass(frozen=True)
class SandboxSchema:
    """The parsed schema: the text for cedarpy plus the facts for the compiler."""

    text: str
    actions: dict[str, ActionInfo]  # only actions that apply to something
    groups: frozenset[str]  # action groups (declared without appliesTo)
    entity_types: dict[str, EntityTypeInfo]

    def expand(self, action: str) -> frozenset[str]:
        """The concrete actions `action in Action::"<action>"` covers."""
        return frozenset(
            name for name, info in self.actions.items() if name == action or action in info.groups
        )

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
    def kernel_actions(self) -> frozenset[str]:
        return frozenset(a for a in self.actions if a in KERNEL_ACTIONS)

    @property
    def gateway_actions(self) -> frozenset[str]:
        return frozenset(a for a in self.actions if a not in KERNEL_ACTIONS)


_ACTION_RE = re.compile(
    r'action\s+"(?P<name>[^"]+)"(?:\s+in\s+\[(?P<parents>[^\]]*)\])?'
    r"(?:\s+appliesTo\s*\{(?P<body>.*?)\})?\s*;",
    re.S,
)
_ENTITY_RE = re.compile(
    r"entity\s+(?P<name>\w+)(?:\s+in\s+\[(?P<parents>[^\]]*)\])?(?:\s*=\s*\{(?P<attrs>[^}]*)\})?\s*;",
    re.S,
)


def _names(text: str | None) -> list[str]:
    return re.findall(r'Action::"([^"]+)"', text or "")


def _list(body: str, key: str) -> frozenset[str]:
    m = re.search(key + r"\s*:\s*\[([^\]]*)\]", body)
    return frozenset(p.strip() for p in m.group(1).split(",") if p.strip()) if m else frozenset()


@functools.cache
def load_schema() -> SandboxSchema:
    """Read and parse the shipped schema (cached: it never changes at runtime)."""
    text = resources.files("compiler").joinpath("schema.cedarschema").read_text("utf-8")
    return parse_schema(text)


def parse_schema(text: str) -> SandboxSchema:
    try:
        rendered = str(cedarpy.Schema.from_str(text))
    except ValueError as e:
        raise SchemaError(Diagnostic(f"invalid sandbox schema: {e}")) from e
    parents: dict[str, list[str]] = {}
    applies: dict[str, tuple[frozenset[str], frozenset[str], bool]] = {}
    for m in _ACTION_RE.finditer(rendered):
        parents[m.group("name")] = _names(m.group("parents"))
        body = m.group("body")
        if body is not None:
            ctx = re.search(r"context\s*:\s*(\{\s*\}|\w+)", body)
            empty = ctx is None or ctx.group(1).startswith("{")
            applies[m.group("name")] = (_list(body, "principal"), _list(body, "resource"), empty)
    actions: dict[str, ActionInfo] = {}
    for name, (principals, res, empty) in applies.items():
        groups: set[str] = set()
        todo = list(parents.get(name, []))
        while todo:
            g = todo.pop()
            if g not in groups:
                groups.add(g)
                todo.extend(parents.get(g, []))
        actions[name] = ActionInfo(name, frozenset(groups), principals, res, empty)
    types: dict[str, EntityTypeInfo] = {}
    for m in _ENTITY_RE.finditer(rendered):
        attrs_text = m.group("attrs") or ""
        attrs = re.findall(r"(\w+)(\??)\s*:", attrs_text)
        types[m.group("name")] = EntityTypeInfo(
            m.group("name"),
            frozenset(p.strip() for p in (m.group("parents") or "").split(",") if p.strip()),
            frozenset(a for a, _ in attrs),
            frozenset(a for a, opt in attrs if opt),
        )
    return SandboxSchema(
        text=text,
        actions=actions,
        groups=frozenset(parents) - frozenset(applies),
        entity_types=types,
    )
