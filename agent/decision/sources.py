"""Registry and policy set, reloaded atomically into one `Snapshot`.

A `Snapshot` is everything one decision reads: the registry, its caller
and destination indexes, its entity graph (the one builder's entities plus
the policy set's entities file: class and group nesting), and the evaluator
over the policy set. `Sources.poll()` rebuilds it when the registry or the
policy set changed and swaps it in with one reference assignment, so a
decision in flight finishes on the snapshot it started with.

The registry source and the policy set source are the agent's own (`manul
run` passes its one registry source and its one policy set, and polls the
registry itself), or, standalone (`manul authz serve`, `manul check
--local`), a folder of each that `poll()` also reloads.

Failure behaviour, in one place:
- a registry that does not load keeps the previous registry (its source);
- a policy set that does not read, parse or validate (or whose entities do
  not merge with the registry's) is reported (`policy_error`, the log,
  health) and the previous set stays in force;
- with no policy set loaded (none ever valid, or the set emptied), `evaluator`
  is None and every request is denied with `policy_error` as the reason.
"""

from __future__ import annotations

import dataclasses
import logging
import threading
import time
from collections.abc import Hashable
from dataclasses import dataclass
from typing import Any, Protocol

from agent.decision.destination import Destinations
from agent.decision.entities import EntityGraph, action_entities
from agent.decision.errors import PolicyLoadError
from agent.decision.evaluate import Evaluator
from agent.decision.identity import CallerIndex
from agent.decision.policies import PolicyIndex, parse_policies
from agent.errors import ManulError, RegistryError
from agent.registry import Registry
from agent.registry.entities import registry_entities
from agent.registry.policyset import PolicySet, PolicySetSource
from compiler import CompileError, load_schema
from compiler.entities import merge_entities, parse_entities

log = logging.getLogger(__name__)


class RegistrySource(Protocol):
    """A registry backend (`FileSource`, `KubeSource`)."""

    last_error: str | None

    @property
    def registry(self) -> Registry: ...

    def poll(self) -> bool: ...


@dataclass(frozen=True)
class LoadedSet:
    """A policy set as the decision point uses it."""

    index: PolicyIndex
    entities: tuple[tuple[str, str], ...]  # the set's entities file: (name, text), or ()
    sources: tuple[tuple[str, str], ...] = ()  # the .cedar files: (name, text)


@dataclass(frozen=True)
class SnapshotInputs:
    """What a snapshot was built from, so another process can build the same one
    (a decision worker: `agent.decision.worker`). Plain data: it pickles."""

    registry: Registry
    policies: tuple[tuple[str, str], ...] | None  # None: no policy set in force
    entities: tuple[tuple[str, str], ...]
    policy_error: str
    version: int

    def build(self) -> Snapshot:
        """The snapshot; raises `PolicyLoadError` or `CompileError` as the agent's did not."""
        index = parse_policies(list(self.policies)) if self.policies is not None else None
        return Snapshot.build(self.registry, index, self.policy_error, self.version,
                              self.entities)


@dataclass(frozen=True)
class Snapshot:
    registry: Registry
    callers: CallerIndex
    destinations: Destinations
    graph: EntityGraph
    policies: PolicyIndex | None
    evaluator: Evaluator | None
    policy_error: str  # why the newest policy set is not in force ("" when it is)
    version: int
    loaded_at: float

    @classmethod
    def build(cls, registry: Registry, policies: PolicyIndex | None, policy_error: str = "",
              version: int = 1, entities: tuple[tuple[str, str], ...] = ()) -> Snapshot:
        """Raises `CompileError` when `entities` do not merge with the registry's."""
        graph = EntityGraph.from_json([*action_entities(), *entity_list(registry, entities)])
        evaluator = Evaluator(policies, graph) if policies is not None else None
        return cls(registry, CallerIndex(registry), Destinations(registry), graph, policies,
                   evaluator, policy_error, version, time.time())

    @property
    def serving(self) -> bool:
        return self.evaluator is not None


def entity_list(registry: Registry, entities: tuple[tuple[str, str], ...]) -> list[Any]:
    """The registry's entities with the set's entities file merged in, read and
    checked by the compiler (`parse_entities`: the schema, explicit references,
    no `Action` entities, absolute paths, reserved ids), so both enforcement
    points accept the same files and see the same entities: destination-set
    members are specifications the kernel matches connections against, not
    entities, and a path's `path` is its id. Raises `CompileError` located in
    the file."""
    base = registry_entities(registry)
    if not entities:
        entities = (("registry", "[]"),)
    *rest, (name, text) = entities
    for n, t in rest:
        base = merge_entities(base, n, t)
    return list(parse_entities(name, text, load_schema(), base).cedar_json)


class Sources:
    """A registry source and a policy set source, reloaded together."""

    inputs: SnapshotInputs  # what `snapshot` was built from (set by `_build`)

    def __init__(self, registry: RegistrySource, policies: PolicySetSource, *,
                 poll_registry: bool = True) -> None:
        self.registry = registry
        self.policy_source = policies
        self.poll_registry = poll_registry  # False: the agent polls its registry itself
        self._lock = threading.Lock()
        self._stamp: Hashable = policies.stamp()
        self._loaded, self._error = self._load(None)
        self.snapshot = self._build(registry.registry, self._loaded, self._error, 1)
        self._reg_seen = registry.registry

    def _load(self, previous: LoadedSet | None) -> tuple[LoadedSet | None, str]:
        """The policy set now, or the previous one and why not."""
        what = "keeping the previous policy set" if previous else "no policy set is loaded"
        try:
            ps: PolicySet = self.policy_source.load()
            if not len(ps):
                # every policy removed: revoke (fail closed) rather than keep the old set
                return None, f"no policy loaded: the {ps.origin} holds no .cedar policies"
            index = parse_policies([(s.name, s.text) for s in ps.sources])
        except (PolicyLoadError, ManulError) as e:
            log.error("policy load failed, %s: %s", what, e)
            return previous, str(e)
        ents = ((ps.entities.name, ps.entities.text),) if ps.entities is not None else ()
        return LoadedSet(index, ents, tuple((s.name, s.text) for s in ps.sources)), ""

    def _build(self, reg: Registry, loaded: LoadedSet | None, error: str,
               version: int) -> Snapshot:
        index = loaded.index if loaded is not None else None
        ents = loaded.entities if loaded is not None else ()
        try:
            snap = Snapshot.build(reg, index, error, version, ents)
            self.inputs = SnapshotInputs(reg, loaded.sources if loaded is not None else None,
                                         ents, error, version)
            return snap
        except CompileError as e:  # the set's entities file does not fit this registry
            why = f"the policy set's entities do not merge with the registry: {e}"
            log.error("%s; keeping the previous snapshot", why)
            old = getattr(self, "snapshot", None)
            if old is not None:
                self.inputs = dataclasses.replace(self.inputs, policy_error=why,
                                                  version=version)
                return Snapshot(old.registry, old.callers, old.destinations, old.graph,
                                old.policies, old.evaluator, why, version, time.time())
            self.inputs = SnapshotInputs(reg, None, (), why, version)
            return Snapshot.build(reg, None, why, version)

    def poll(self) -> bool:
        """Reload what changed; True when a new snapshot is in force."""
        with self._lock:
            if self.poll_registry:
                try:
                    self.registry.poll()
                except RegistryError as e:  # the folder itself vanished
                    log.error("registry poll failed, keeping the previous one: %s", e)
            stamp = self.policy_source.stamp()
            reg = self.registry.registry
            old = self.snapshot
            if stamp == self._stamp and reg is self._reg_seen:
                return False
            if stamp != self._stamp:
                self._stamp = stamp
                self._loaded, self._error = self._load(self._loaded)
            self._reg_seen = reg
            self.snapshot = self._build(reg, self._loaded, self._error, old.version + 1)
            return True

    def watch(self, stop: threading.Event, interval: float = 1.0) -> None:
        while not stop.wait(interval):
            try:
                self.poll()
            except Exception:
                log.exception("reload failed; the previous snapshot stays in force")
