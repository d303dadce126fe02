"""The cluster-wide view: what each node's discovery saw, as Kubernetes objects.

In cluster mode every node publishes its sightings of LLM callers:

- a shadow workload (a pod whose service account no Agent or ServiceIdentity
  claims) becomes one namespaced `DiscoveredAgent` named after its service
  account, so `kubectl get discoveredagents -A` lists every shadow agent in
  the cluster, whichever nodes its pods run on;
- a registered `Agent` gets the same facts in its `status`.

Each node writes only its own part, `status.nodes.<node>` (classification,
providers, host names, JA4 fingerprints, processes, pods: the 32 most recent
of each; first and last seen), with a JSON merge patch on the status
subresource, so nodes never overwrite each other; it reads the object once
first (the other parts; its own `firstSeen` from before a restart), and makes
it again if it was deleted. The top-level summary (`classification`,
`providers`, `nodeCount`, `firstSeen`, `lastSeen`: the printer columns) is the
union of the nodes as this node last saw them, written once more when other
providers or nodes appeared meanwhile. Writes are bounded: an object is
written when something new was seen (a provider, host name, fingerprint,
process or pod), at most once every `interval` seconds, and otherwise only to
advance `lastSeen`, at most once every `refresh` seconds. An API error is
logged (once per object and error) and retried at the next flush; nothing
here can stop discovery. RBAC: `discoveredagents` get/create,
`discoveredagents/status` and `agents/status` patch (charts/manul/templates/rbac.yaml).
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any

from agent.discovery.classify import Classification
from agent.discovery.service import Observation
from agent.registry.model import Agent

log = logging.getLogger(__name__)

GROUP, VERSION = "manul.dev", "v1alpha1"
DISCOVERED = "discoveredagents"
AGENTS = "agents"
DEFAULT_INTERVAL = 10.0
DEFAULT_REFRESH = 60.0
TIMEOUT = 5.0  # seconds per API call
MAX_ITEMS = 32  # per list in one node's part: a workload with more is summarised


def _shape(summary: dict[str, Any]) -> dict[str, Any]:
    """What makes a summary stale: not the times (they move on every node's write,
    and rewriting for them would multiply writes by the nodes)."""
    return {k: v for k, v in summary.items() if k not in ("firstSeen", "lastSeen")}


def _stamp(t: float) -> str:
    return datetime.fromtimestamp(t, UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


@dataclass
class _Seen:
    """What this node saw of one object's workload."""

    kind: str  # DiscoveredAgent | Agent
    namespace: str
    name: str
    classification: str = ""
    # each the MAX_ITEMS most recent, oldest first (a CronJob's pods come and go)
    providers: dict[str, None] = field(default_factory=dict)
    hosts: dict[str, None] = field(default_factory=dict)
    ja4: dict[str, None] = field(default_factory=dict)
    processes: dict[str, None] = field(default_factory=dict)
    pods: dict[str, None] = field(default_factory=dict)
    first: float = 0.0
    last: float = 0.0
    gen: int = 1  # bumped by every new fact
    written_gen: int = 0  # the generation last written
    resummarise: bool = False  # the summary was stale: write it once more
    written_at: float = -1e18  # monotonic
    written_last: float = 0.0  # the lastSeen last written
    fetched: bool = False  # the object was read once (a restarted node keeps firstSeen)
    created: bool = False
    others: dict[str, Any] = field(default_factory=dict)  # other nodes' parts, last seen
    first_stamp: str = ""  # this node's firstSeen as stored, when older than `first`

    @property
    def novel(self) -> bool:
        return self.gen != self.written_gen or self.resummarise

    def part(self) -> dict[str, Any]:
        first = _stamp(self.first)
        return {"classification": self.classification,
                "providers": sorted(self.providers), "hostNames": sorted(self.hosts),
                "ja4": sorted(self.ja4), "processes": sorted(self.processes),
                "pods": sorted(self.pods),
                "firstSeen": min(first, self.first_stamp) if self.first_stamp else first,
                "lastSeen": _stamp(self.last)}


def _remember(recent: dict[str, None], item: str) -> bool:
    """Keep `item` among the MAX_ITEMS most recent; True when it was not there."""
    if not item:
        return False
    new = item not in recent
    recent.pop(item, None)
    recent[item] = None
    while len(recent) > MAX_ITEMS:
        del recent[next(iter(recent))]
    return new


@dataclass
class PublishStats:
    writes: int = 0
    creates: int = 0
    errors: int = 0


class ClusterView:
    """Publishes this node's discovery; `observe` from discovery, `flush` once a second."""

    def __init__(self, api: Any, node: str, *, interval: float = DEFAULT_INTERVAL,
                 refresh: float = DEFAULT_REFRESH,
                 clock: Callable[[], float] = time.monotonic,
                 wall: Callable[[], float] = time.time) -> None:
        """`api`: a `kubernetes.client.CustomObjectsApi`."""
        self.api = api
        self.node = node
        self.interval = interval
        self.refresh = refresh
        self.clock = clock
        self.wall = wall
        self.stats = PublishStats()
        self._seen: dict[tuple[str, str, str], _Seen] = {}
        self._failed: dict[tuple[str, str, str], str] = {}  # the error last logged
        self._lock = threading.Lock()

    def observe(self, obs: Observation) -> None:
        """Record one classified handshake (pods only: a host process has no object)."""
        w = obs.workload
        if w is None or w.kind != "pod" or not w.namespace:
            return
        caller = obs.verdict.caller
        if isinstance(caller, Agent) and caller.meta.namespace:
            key = ("Agent", caller.meta.namespace, caller.meta.name)
        elif obs.classification is Classification.SHADOW and w.service_account:
            key = ("DiscoveredAgent", w.namespace, w.service_account)
        else:
            return  # governed through the gateway, or not a pod we can name
        now = self.wall()
        with self._lock:
            s = self._seen.get(key)
            if s is None:
                s = self._seen[key] = _Seen(*key, first=now)
            cls = str(obs.classification)
            new = cls != s.classification
            s.classification = cls
            new |= _remember(s.providers, obs.match.provider)
            new |= _remember(s.hosts, obs.sni)
            new |= _remember(s.ja4, obs.ja4)
            new |= _remember(s.processes, obs.exe)
            new |= _remember(s.pods, w.pod)
            s.last = max(s.last, now)
            if new:
                s.gen += 1

    def run(self, stop: threading.Event, every: float = 1.0) -> None:
        """Flush once a second until `stop` (the daemon's publisher thread: API calls
        never hold up discovery)."""
        while not stop.wait(every):
            try:
                self.flush()
            except Exception:
                log.exception("cluster view: flush failed (retried)")

    def flush(self) -> int:
        """Write what is due (see the module docstring); returns the writes made."""
        now = self.clock()
        with self._lock:
            due = [s for s in self._seen.values()
                   if (s.novel and now - s.written_at >= self.interval)
                   or (s.last > s.written_last and now - s.written_at >= self.refresh)]
        n = 0
        for s in due:
            if self._write(s, now):
                n += 1
        return n

    # -- the API ---------------------------------------------------------------------

    def _write(self, s: _Seen, now: float) -> bool:
        from kubernetes.client.exceptions import ApiException
        from urllib3.exceptions import HTTPError

        key = (s.kind, s.namespace, s.name)
        try:
            if not s.fetched:
                self._fetch(s)
            with self._lock:
                part = s.part()
                gen, last = s.gen, s.last
            if s.kind == "DiscoveredAgent" and not s.created:
                self._create(s)
            obj = self._patch(s, part)
        except (ApiException, HTTPError, OSError, ValueError) as e:
            if isinstance(e, ApiException) and e.status == 404 and s.kind == "DiscoveredAgent":
                s.created = s.fetched = False  # deleted meanwhile: made again next time
            self.stats.errors += 1
            why = f"{getattr(e, 'status', '')} {getattr(e, 'reason', '') or e}".strip()
            if self._failed.get(key) != why:
                self._failed[key] = why
                log.warning("cannot publish %s %s/%s to the cluster: %s (retried)", s.kind,
                            s.namespace, s.name, why)
            with self._lock:
                s.written_at = now  # retried after `interval`, not in a loop
            return False
        self._failed.pop(key, None)
        nodes = ((obj or {}).get("status") or {}).get("nodes") or {}
        with self._lock:
            others = {k: v for k, v in nodes.items() if k != self.node}
            # the summary was made from the other nodes as last seen: when they moved
            # meanwhile, write it again (after `interval`) so that it converges
            stale = _shape(self._summary(others, part)) != _shape(self._summary(s.others, part))
            s.others = others
            s.written_at = now
            s.written_last = last
            s.written_gen = gen
            s.resummarise = stale
        self.stats.writes += 1
        return True

    def _fetch(self, s: _Seen) -> None:
        """Read the object once: the other nodes' parts, and this node's own firstSeen
        from before a restart (kept when older)."""
        from kubernetes.client.exceptions import ApiException

        plural = DISCOVERED if s.kind == "DiscoveredAgent" else AGENTS
        try:
            obj = self.api.get_namespaced_custom_object(GROUP, VERSION, s.namespace, plural,
                                                        s.name, _request_timeout=TIMEOUT)
        except ApiException as e:
            if e.status != 404:
                raise
            obj = None
        nodes = ((obj or {}).get("status") or {}).get("nodes") or {}
        with self._lock:
            s.others = {k: v for k, v in nodes.items() if k != self.node}
            s.first_stamp = (nodes.get(self.node) or {}).get("firstSeen", "")
            s.created = obj is not None
            s.fetched = True

    def _create(self, s: _Seen) -> None:
        from kubernetes.client.exceptions import ApiException

        body = {"apiVersion": f"{GROUP}/{VERSION}", "kind": "DiscoveredAgent",
                "metadata": {"name": s.name, "namespace": s.namespace,
                             "labels": {"app.kubernetes.io/managed-by": "manul"}},
                "spec": {"serviceAccount": s.name}}
        try:
            self.api.create_namespaced_custom_object(GROUP, VERSION, s.namespace, DISCOVERED,
                                                     body, _request_timeout=TIMEOUT)
            self.stats.creates += 1
        except ApiException as e:
            if e.status != 409:  # another node made it first: fine
                raise
        s.created = True

    def _summary(self, others: dict[str, Any], part: dict[str, Any]) -> dict[str, Any]:
        """The printer columns: the union of every node's part."""
        nodes = {**others, self.node: part}
        parts = list(nodes.values())
        return {
            "classification": part["classification"],
            "providers": sorted({p for x in parts for p in x.get("providers", ())}),
            "nodeCount": len(nodes),
            "firstSeen": min(x.get("firstSeen", part["firstSeen"]) for x in parts),
            "lastSeen": max(x.get("lastSeen", part["lastSeen"]) for x in parts),
        }

    def _patch(self, s: _Seen, part: dict[str, Any]) -> Any:
        body = {"status": {**self._summary(s.others, part), "nodes": {self.node: part}}}
        plural = DISCOVERED if s.kind == "DiscoveredAgent" else AGENTS
        return self.api.patch_namespaced_custom_object_status(
            GROUP, VERSION, s.namespace, plural, s.name, body, _request_timeout=TIMEOUT)
