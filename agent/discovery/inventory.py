"""The discovery inventory: per workload, which LLM providers it talks to, and how.

Kept in memory by the discovery service, rendered as the live table of
`manul discover` and as its `--json` output (one object per workload). A
workload is keyed by its display name; unattributable handshakes are keyed
by their cgroup id so that they are counted, never dropped.
"""

from __future__ import annotations

import threading
from collections.abc import Iterator
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any

from agent.discovery.classify import Classification


@dataclass
class Entry:
    key: str
    workload: str
    kind: str  # "pod" | "host" | "unknown"
    namespace: str = ""
    pod: str = ""
    service_account: str = ""
    unit: str = ""
    cgroup: str = ""
    agent: str = ""  # the matching registry record, if any
    classification: Classification = Classification.UNATTRIBUTABLE
    providers: set[str] = field(default_factory=set)
    sni: set[str] = field(default_factory=set)
    ja4: set[str] = field(default_factory=set)
    processes: dict[int, str] = field(default_factory=dict)  # pid -> exe or comm
    first_seen: float = 0.0
    last_seen: float = 0.0
    count: int = 0
    quarantined: bool = False

    def to_json(self) -> dict[str, Any]:
        return {
            "workload": self.workload,
            "kind": self.kind,
            "namespace": self.namespace,
            "pod": self.pod,
            "service_account": self.service_account,
            "unit": self.unit,
            "cgroup": self.cgroup,
            "agent": self.agent,
            "classification": str(self.classification),
            "providers": sorted(self.providers),
            "sni": sorted(self.sni),
            "ja4": sorted(self.ja4),
            "processes": [{"pid": p, "exe": e} for p, e in sorted(self.processes.items())],
            "first_seen": _iso(self.first_seen),
            "last_seen": _iso(self.last_seen),
            "count": self.count,
            "quarantined": self.quarantined,
        }


def _iso(t: float) -> str:
    return datetime.fromtimestamp(t, UTC).isoformat(timespec="milliseconds")


_RANK = {Classification.UNATTRIBUTABLE: 0, Classification.GOVERNED: 1,
         Classification.REGISTERED: 2, Classification.SHADOW: 3}


class Inventory:
    """Thread-safe map of workload key -> Entry."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._entries: dict[str, Entry] = {}

    def record(self, entry_template: Entry, *, provider: str, sni: str, ja4: str, pid: int,
               exe: str, when: float, classification: Classification) -> tuple[Entry, bool]:
        """Add one handshake. Returns the entry and whether (workload, provider) is new."""
        with self._lock:
            e = self._entries.get(entry_template.key)
            if e is None:
                e = entry_template
                e.first_seen = when
                self._entries[e.key] = e
            new_pair = provider not in e.providers
            e.providers.add(provider)
            e.sni.add(sni)
            if ja4:
                e.ja4.add(ja4)
            if pid:
                e.processes[pid] = exe
            e.last_seen = max(e.last_seen, when)
            e.count += 1
            # A workload that called a provider directly stays shadow even if it
            # also uses the gateway: the most telling classification wins.
            if _RANK[classification] > _RANK[e.classification]:
                e.classification = classification
            return e, new_pair

    def process_exe(self, key: str, pid: int) -> str | None:
        """The executable recorded for `pid` in workload `key`, if seen before."""
        with self._lock:
            e = self._entries.get(key)
            return e.processes.get(pid) if e is not None else None

    def entries(self) -> list[Entry]:
        with self._lock:
            return sorted(self._entries.values(), key=lambda e: (-e.last_seen, e.key))

    def __iter__(self) -> Iterator[Entry]:
        return iter(self.entries())

    def count(self, classification: Classification) -> int:
        with self._lock:
            return sum(1 for e in self._entries.values() if e.classification is classification)

    def to_json(self) -> list[dict[str, Any]]:
        return [e.to_json() for e in self.entries()]
