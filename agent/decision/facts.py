"""What only this node knows about a caller's workload: quarantine and anomaly level.

The decision point reads these into every Cedar context
(`context.quarantined`, `context.anomaly_level`). Keys are the caller's
registry key (`namespace/name`, or `name`). Writers replace an immutable
`CallerFacts` under a lock; readers take one dictionary lookup, no lock.

The writers, and their interface:
- quarantine: the daemon reads the pinned quarantine map every second and
  calls `set_quarantined_keys` with the registry keys of the quarantined
  workloads (shadow quarantine by discovery, `manul quarantine add`), so a
  release there is a release here;
- anomaly level: the behavioural baseline calls `set_anomaly_level(key,
  level)` with one of `ANOMALY_*` when its verdict on a caller changes
  (and `ANOMALY_NONE` when it clears). Nothing else writes it.

Decision workers (other processes) hold a copy: `subscribe` tells the
agent's decision server of every change, which sends `snapshot()` on, and
the worker's copy takes it whole (`replace`).
"""

from __future__ import annotations

import logging
import threading
from collections.abc import Callable, Mapping
from dataclasses import dataclass

log = logging.getLogger(__name__)

ANOMALY_NONE, ANOMALY_LOW, ANOMALY_MEDIUM, ANOMALY_HIGH = 0, 1, 2, 3


@dataclass(frozen=True, slots=True)
class CallerFacts:
    quarantined: bool = False
    anomaly_level: int = ANOMALY_NONE


NO_FACTS = CallerFacts()


class NodeFacts:
    """A thread-safe map: caller registry key -> CallerFacts."""

    def __init__(self) -> None:
        self._facts: dict[str, CallerFacts] = {}
        self._lock = threading.Lock()
        self._listeners: list[Callable[[], None]] = []

    def subscribe(self, listener: Callable[[], None]) -> None:
        """Call `listener()` after every change (from the writer's thread)."""
        self._listeners.append(listener)

    def _changed(self) -> None:
        for listener in list(self._listeners):
            try:
                listener()
            except Exception:  # a listener must not break the writer
                log.exception("a node-facts listener failed")

    def replace(self, facts: Mapping[str, CallerFacts]) -> None:
        """Exactly `facts` from now on (a copy following another process's)."""
        with self._lock:
            self._facts = {k: f for k, f in facts.items() if f != NO_FACTS}
        self._changed()

    def get(self, key: str) -> CallerFacts:
        return self._facts.get(key, NO_FACTS)

    def set_quarantined(self, key: str, quarantined: bool = True) -> None:
        with self._lock:
            old = self._facts.get(key, NO_FACTS)
            self._put(key, CallerFacts(quarantined, old.anomaly_level))
        self._changed()

    def set_anomaly_level(self, key: str, level: int) -> None:
        if not ANOMALY_NONE <= level <= ANOMALY_HIGH:
            raise ValueError(f"anomaly level `{level}` is not between 0 and 3")
        with self._lock:
            old = self._facts.get(key, NO_FACTS)
            self._put(key, CallerFacts(old.quarantined, level))
        self._changed()

    def set_quarantined_keys(self, keys: frozenset[str]) -> None:
        """Exactly `keys` are quarantined now (the others are released)."""
        changed = False
        with self._lock:
            for key in set(self._facts) | keys:
                old = self._facts.get(key, NO_FACTS)
                if old.quarantined != (key in keys):
                    self._put(key, CallerFacts(key in keys, old.anomaly_level))
                    changed = True
        if changed:
            self._changed()

    def quarantined(self) -> frozenset[str]:
        return frozenset(k for k, f in self._facts.items() if f.quarantined)

    def clear(self, key: str) -> None:
        with self._lock:
            self._facts.pop(key, None)
        self._changed()

    def snapshot(self) -> dict[str, CallerFacts]:
        return dict(self._facts)

    def _put(self, key: str, facts: CallerFacts) -> None:
        if facts == NO_FACTS:
            self._facts.pop(key, None)
        else:
            self._facts[key] = facts
