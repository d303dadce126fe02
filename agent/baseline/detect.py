"""The detectors: which novel events are anomalies, and how bad.

Two families. Catalogue detectors judge an event by what it touches and
fire during learning too (a credential read in the first minute is not
"normal"; such items are never learned): `credential-access`,
`metadata-endpoint`, and `gateway-bypass` (a registered agent's TLS
handshake straight to an LLM provider, from discovery). Baseline
detectors judge against the learned profile and fire only after learning:
`new-exec`, `new-destination`, `port-scan`.

Pure: the service gives the profile, the item and the time; a `Finding`
comes back. `PortScan` keeps the short window of novel peers per scope.
"""

from __future__ import annotations

from collections import deque
from dataclasses import dataclass, field
from enum import IntEnum, StrEnum
from typing import Any

from agent.baseline.catalog import credential, metadata
from agent.baseline.events import Item, Kind
from agent.baseline.profile import Profile


class Detector(StrEnum):
    NEW_EXEC = "new-exec"
    CREDENTIAL_ACCESS = "credential-access"
    NEW_DESTINATION = "new-destination"
    PORT_SCAN = "port-scan"
    METADATA_ENDPOINT = "metadata-endpoint"
    GATEWAY_BYPASS = "gateway-bypass"


class Severity(IntEnum):
    """Also the decision point's `context.anomaly_level` (agent/decision/facts.py)."""

    LOW = 1
    MEDIUM = 2
    HIGH = 3

    def __str__(self) -> str:
        return self.name.lower()


SEVERITY = {
    Detector.NEW_EXEC: Severity.MEDIUM,
    Detector.CREDENTIAL_ACCESS: Severity.HIGH,
    Detector.NEW_DESTINATION: Severity.MEDIUM,
    Detector.PORT_SCAN: Severity.HIGH,
    Detector.METADATA_ENDPOINT: Severity.HIGH,
    Detector.GATEWAY_BYPASS: Severity.MEDIUM,
}

SCAN_WINDOW = 10.0  # seconds
SCAN_PEERS = 16  # distinct novel (address, port) pairs in the window
SCAN_PORTS = 10  # ... or distinct novel ports on one address


@dataclass(frozen=True, slots=True)
class Finding:
    detector: Detector
    summary: str  # one sentence
    evidence: dict[str, Any]

    @property
    def severity(self) -> Severity:
        return SEVERITY[self.detector]


def catalogue(item: Item, extra_credentials: tuple[str, ...] = ()) -> Finding | None:
    """The catalogue detectors' verdict on `item` (learning or not)."""
    what = credential(item, extra_credentials)
    if what is not None:
        verb = {Kind.READ: "read", Kind.WRITE: "opened for writing",
                Kind.UNIX: "connected to"}.get(item.kind, str(item.kind))
        return Finding(Detector.CREDENTIAL_ACCESS, f"{what} `{item.path}` {verb}",
                       {"path": item.path, "access": str(item.kind), "credential": what})
    service = metadata(item)
    if service is not None:
        return Finding(Detector.METADATA_ENDPOINT,
                       f"connection to {service} at {item.addr}:{item.port}",
                       {"destination": f"{item.addr}:{item.port}", "protocol": item.proto,
                        "service": service})
    return None


def against_baseline(profile: Profile, item: Item) -> Finding | None:
    """The baseline detectors' verdict on an item the profile does not cover."""
    if profile.covers(item):
        return None
    if item.kind is Kind.EXEC:
        return Finding(Detector.NEW_EXEC, f"`{item.path}` was never run during learning",
                       {"path": item.path})
    if item.kind is Kind.CONNECT:
        return Finding(Detector.NEW_DESTINATION,
                       f"{item.proto} peer {item.addr}:{item.port} was never contacted "
                       "during learning",
                       {"destination": f"{item.addr}:{item.port}", "protocol": item.proto})
    return None


@dataclass
class PortScan:
    """Novel peers per scope in the last SCAN_WINDOW seconds."""

    window: float = SCAN_WINDOW
    peers: int = SCAN_PEERS
    ports: int = SCAN_PORTS
    _seen: dict[int, deque[tuple[float, str, int]]] = field(default_factory=dict)
    _quiet_until: dict[int, float] = field(default_factory=dict)

    def add(self, scope: int, item: Item, now: float) -> Finding | None:
        if item.kind is not Kind.CONNECT:
            return None
        q = self._seen.setdefault(scope, deque())
        q.append((now, item.addr, item.port))
        while q and now - q[0][0] > self.window:
            q.popleft()
        if now < self._quiet_until.get(scope, 0.0):
            return None
        pairs = {(a, p) for _, a, p in q}
        by_addr: dict[str, set[int]] = {}
        for a, p in pairs:
            by_addr.setdefault(a, set()).add(p)
        addr, ports = max(by_addr.items(), key=lambda kv: len(kv[1]))
        if len(pairs) < self.peers and len(ports) < self.ports:
            return None
        self._quiet_until[scope] = now + self.window  # one finding per window
        return Finding(
            Detector.PORT_SCAN,
            f"{len(pairs)} new peers ({len(by_addr)} addresses, up to {len(ports)} ports on "
            f"{addr}) within {self.window:g} s",
            {"peers": len(pairs), "addresses": len(by_addr), "busiest_address": addr,
             "ports_on_busiest": len(ports), "window_s": self.window,
             "sample": sorted(f"{a}:{p}" for a, p in pairs)[:20]})

    def forget(self, scope: int) -> None:
        self._seen.pop(scope, None)
        self._quiet_until.pop(scope, None)
