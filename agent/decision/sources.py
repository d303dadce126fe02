"""Registry and policies, reloaded atomically into one `Snapshot`.

A `Snapshot` is everything one decision reads: the registry, its caller
and destination indexes, its entity graph, and the evaluator over the
policy set. `Sources.poll()` rebuilds it when the registry folder or a
policy file changed and swaps it in with one reference assignment, so a
decision in flight finishes on the snapshot it started with.

Failure behaviour, in one place:
- a registry that does not load keeps the previous registry (FileSource);
- a policy set that does not parse or validate is reported (`policy_error`,
  the log, health) and the previous set stays in force;
- with no policy set loaded (none ever valid, or the folder emptied), `evaluator`
  is None and every request is denied with `policy_error` as the reason.
"""

from __future__ import annotations

import logging
import threading
import time
from dataclasses import dataclass
from pathlib import Path

from agent.decision.destination import Destinations
from agent.decision.entities import EntityGraph
from agent.decision.errors import PolicyLoadError
from agent.decision.evaluate import Evaluator
from agent.decision.identity import CallerIndex
from agent.decision.policies import PolicyIndex, load_policy_dir, policy_files_stamp
from agent.errors import RegistryError
from agent.registry import FileSource, Registry

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class Snapshot:
    registry: Registry
    callers: CallerIndex
    destinations: Destinations
    graph: EntityGraph
    policies: PolicyIndex | None
    evaluator: Evaluator | None
    policy_error: str  # why the newest policy files are not in force ("" when they are)
    version: int
    loaded_at: float

    @classmethod
    def build(cls, registry: Registry, policies: PolicyIndex | None, policy_error: str = "",
              version: int = 1) -> Snapshot:
        graph = EntityGraph.build(registry)
        evaluator = Evaluator(policies, graph) if policies is not None else None
        return cls(registry, CallerIndex(registry), Destinations(registry), graph, policies,
                   evaluator, policy_error, version, time.time())

    @property
    def serving(self) -> bool:
        return self.evaluator is not None


class Sources:
    """A registry folder and a policy folder, watched by polling."""

    def __init__(self, registry_dir: str | Path, policy_dir: str | Path) -> None:
        self.policy_dir = Path(policy_dir)
        self.registry = FileSource(registry_dir)  # raises RegistryError: nothing to serve
        self._stamp = policy_files_stamp(self.policy_dir)
        policies, error = self._load_policies(None)
        self._lock = threading.Lock()
        self.snapshot = Snapshot.build(self.registry.registry, policies, error)
        self._reg_seen = self.registry.registry

    def _load_policies(self, previous: PolicyIndex | None) -> tuple[PolicyIndex | None, str]:
        try:
            index = load_policy_dir(self.policy_dir)
        except PolicyLoadError as e:
            what = "keeping the previous policy set" if previous else "no policy set is loaded"
            log.error("policy load failed, %s: %s", what, e)
            return previous, str(e)
        if not len(index):
            # every policy removed: revoke (fail closed) rather than keep the old set
            return None, f"no policy loaded: `{self.policy_dir}` holds no .cedar policies"
        return index, ""

    def poll(self) -> bool:
        """Reload what changed; True when a new snapshot is in force."""
        with self._lock:
            try:
                self.registry.poll()
            except RegistryError as e:  # the folder itself vanished
                log.error("registry poll failed, keeping the previous one: %s", e)
            stamp = policy_files_stamp(self.policy_dir)
            reg = self.registry.registry
            old = self.snapshot
            if stamp == self._stamp and reg is self._reg_seen:
                return False
            policies, error = old.policies, old.policy_error
            if stamp != self._stamp:
                self._stamp = stamp
                policies, error = self._load_policies(old.policies)
            self._reg_seen = reg
            self.snapshot = Snapshot.build(reg, policies, error, old.version + 1)
            return True

    def watch(self, stop: threading.Event, interval: float = 1.0) -> None:
        while not stop.wait(interval):
            try:
                self.poll()
            except Exception:
                log.exception("reload failed; the previous snapshot stays in force")
