"""The registry's entities as a graph the evaluator slices, plus the actions.

The entities are the one builder's (`agent.registry.entities`); this module
adds the Action entities (derived from the one schema: pre-parsed entity
handles do not get them from it) and knows, per entity, its ancestors (the
policy index slices the policies a request can meet with them) and what its
attributes point at (`closure()`: the few entities a request that brings
its own can touch; see evaluate.py).
"""

from __future__ import annotations

import json
import threading
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from typing import Any

from agent.registry import Registry
from agent.registry.entities import (
    EntityJson,
    Uid,
    caller_uid,
    entity,
    ref,
    registry_entities,
    tool_uid,
    unregistered_tool,
)
from compiler import load_schema

__all__ = ["EntityGraph", "EntityJson", "Uid", "action_entities", "caller_uid", "ref",
           "tool_uid", "uid_str", "unregistered_tool"]


def uid_str(uid: Uid) -> str:
    return f"{uid[0]}::{json.dumps(uid[1])}"


@dataclass
class EntityGraph:
    """All entities of one registry snapshot; immutable once built."""

    entities: dict[Uid, EntityJson]
    parents: dict[Uid, tuple[Uid, ...]]
    refs: dict[Uid, tuple[Uid, ...]]  # the entities each one's attributes point at
    _ancestors: dict[Uid, frozenset[Uid]] = field(default_factory=dict, repr=False)
    _lock: threading.Lock = field(default_factory=threading.Lock, repr=False)

    @classmethod
    def from_json(cls, items: Iterable[EntityJson]) -> EntityGraph:
        entities: dict[Uid, EntityJson] = {}
        for e in items:
            uid = (e["uid"]["type"], e["uid"]["id"])
            entities[uid] = e
        parents = {u: tuple((p["type"], p["id"]) for p in e["parents"])
                   for u, e in entities.items()}
        refs = {u: tuple(_refs_in(e["attrs"])) for u, e in entities.items()}
        return cls(entities, parents, refs)

    @classmethod
    def build(cls, registry: Registry) -> EntityGraph:
        return cls.from_json([*action_entities(), *registry_entities(registry)])

    def ancestors(self, uid: Uid) -> frozenset[Uid]:
        """Every entity `uid` is transitively `in` (not itself)."""
        found = self._ancestors.get(uid)
        if found is not None:
            return found
        seen: set[Uid] = set()
        stack = list(self.parents.get(uid, ()))
        while stack:
            p = stack.pop()
            if p not in seen:
                seen.add(p)
                stack.extend(self.parents.get(p, ()))
        result = frozenset(seen)
        with self._lock:
            self._ancestors[uid] = result
        return result

    def closure(self, roots: Iterable[Uid], extra: Mapping[Uid, EntityJson]) -> set[Uid]:
        """The entities reachable from `roots` through parents and attribute references.

        # INVARIANT: an evaluation that starts from `roots` (principal,
        # action, resource, and the literals of the policies it runs) can
        # only read entities in this set: attribute access, `in`, `is` and
        # `has` never reach anything else.
        """
        seen: set[Uid] = set()
        stack = list(roots)
        while stack:
            u = stack.pop()
            if u in seen:
                continue
            seen.add(u)
            e = extra.get(u)
            if e is not None:
                stack.extend((p["type"], p["id"]) for p in e["parents"])
                stack.extend(_refs_in(e["attrs"]))
                continue
            stack.extend(self.parents.get(u, ()))
            stack.extend(self.refs.get(u, ()))
        return seen

    def to_json(self, uids: Iterable[Uid], extra: Mapping[Uid, EntityJson] = {}) -> str:
        out = []
        for u in uids:
            e = extra.get(u) or self.entities.get(u)
            if e is not None:
                out.append(e)
        return json.dumps(out)

    def all_json(self) -> str:
        return json.dumps(list(self.entities.values()))


def _refs_in(value: Any) -> Iterable[Uid]:
    if isinstance(value, dict):
        ent = value.get("__entity")
        if isinstance(ent, dict) and len(value) == 1:
            yield (ent["type"], ent["id"])
            return
        for v in value.values():
            yield from _refs_in(v)
    elif isinstance(value, list):
        for v in value:
            yield from _refs_in(v)


def action_entities() -> list[EntityJson]:
    """Every action and action group of the one schema, with its groups as parents."""
    schema = load_schema()
    out = []
    for name in sorted({*schema.actions, *schema.groups}):
        parents = [("Action", g) for g in sorted(schema.action_groups(name))]
        out.append(entity(("Action", name), {}, parents))
    return out
