"""The cluster registry backend through the real `kubernetes` client.

No API server exists on the development machines, so a local HTTP endpoint
speaks the API server's list and watch protocol for the custom resources
(the `CustomObjectsApi` request paths; JSON lists with a resourceVersion;
watch streams of ADDED/MODIFIED/DELETED/BOOKMARK/ERROR lines that end at
`timeoutSeconds`; 410 Gone) and counts what it is asked. The client, the
informers, the cache and the snapshot swap are the production code.
"""

from __future__ import annotations

import json
import queue
import threading
import time
from collections import Counter
from collections.abc import Callable, Iterator
from http.server import BaseHTTPRequestHandler
from typing import Any
from urllib.parse import parse_qs, urlparse

import pytest

from agent.errors import RegistryError
from agent.registry.kube import GROUP, PLURALS, VERSION, KubeSource
from tests.support import custom_objects_api

AGENT = {"metadata": {"name": "analyst", "namespace": "finance", "uid": "x",
                      "resourceVersion": "7"},
         "spec": {"team": "finance", "identities": [
             {"serviceAccount": {"namespace": "finance", "name": "analyst"}}]}}
GATEWAY = {"metadata": {"name": "gw", "resourceVersion": "8"},
           "spec": {"gateway": True, "hosts": ["gw.internal"]}}


class StandIn:
    """The API server's custom-resource list and watch, counted per plural."""

    def __init__(self) -> None:
        self.items: dict[str, list[dict[str, Any]]] = {p: [] for p in PLURALS.values()}
        self.version = 10
        self.missing: set[str] = set()
        self.events: dict[str, queue.Queue[dict[str, Any]]] = {
            p: queue.Queue() for p in PLURALS.values()}
        self.lists: Counter[str] = Counter()
        self.watches: Counter[str] = Counter()
        self.watch_versions: dict[str, list[str]] = {p: [] for p in PLURALS.values()}
        self.closing = threading.Event()

    def send(self, plural: str, kind: str, obj: dict[str, Any]) -> None:
        self.version += 1
        obj = json.loads(json.dumps(obj))
        obj.setdefault("metadata", {})["resourceVersion"] = str(self.version)
        self.events[plural].put({"type": kind, "object": obj})

    def handler(self) -> type[BaseHTTPRequestHandler]:
        state = self

        class Handler(BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"  # watch streams are chunked, as the API server's

            def log_message(self, *args: Any) -> None:
                pass

            def chunk(self, data: bytes) -> None:
                self.wfile.write(f"{len(data):x}\r\n".encode() + data + b"\r\n")
                self.wfile.flush()

            def do_GET(self) -> None:
                url = urlparse(self.path)
                q = parse_qs(url.query)
                prefix = f"/apis/{GROUP}/{VERSION}/"
                plural = url.path.removeprefix(prefix)
                if not url.path.startswith(prefix) or plural not in state.items \
                        or plural in state.missing:
                    self.send_response(404)
                    self.send_header("Content-Length", "0")
                    self.end_headers()
                    return
                self.send_response(200)
                self.send_header("Content-Type", "application/json")
                if q.get("watch", ["false"])[0].lower() != "true":
                    state.lists[plural] += 1
                    body = json.dumps({"apiVersion": f"{GROUP}/{VERSION}", "kind": "List",
                                       "metadata": {"resourceVersion": str(state.version)},
                                       "items": state.items[plural]}).encode()
                    self.send_header("Content-Length", str(len(body)))
                    self.end_headers()
                    self.wfile.write(body)
                    return
                state.watches[plural] += 1
                state.watch_versions[plural].append(q.get("resourceVersion", [""])[0])
                self.send_header("Transfer-Encoding", "chunked")
                self.end_headers()
                try:
                    self.stream(plural, float(q.get("timeoutSeconds", ["300"])[0]))
                finally:
                    self.close_connection = True

            def stream(self, plural: str, timeout: float) -> None:
                end = time.monotonic() + timeout
                while time.monotonic() < end and not state.closing.is_set():
                    try:
                        ev = state.events[plural].get(timeout=0.05)
                    except queue.Empty:
                        continue
                    self.chunk(json.dumps(ev).encode() + b"\n")
                    if ev["type"] == "ERROR":
                        break
                self.chunk(b"")  # the last chunk: the server ends the watch

        return Handler


@pytest.fixture
def cluster() -> Iterator[tuple[StandIn, Any]]:
    state = StandIn()
    with custom_objects_api(state.handler()) as api:
        yield state, api
        state.closing.set()  # ends the open watch streams


def _until(cond: Callable[[], bool], timeout: float = 5.0) -> bool:
    end = time.monotonic() + timeout
    while time.monotonic() < end:
        if cond():
            return True
        time.sleep(0.02)
    return cond()


def test_records_load_then_watch_events_update_them(cluster: tuple[StandIn, Any]) -> None:
    state, api = cluster
    state.items["agents"].append(AGENT)
    src = KubeSource(api, retry_seconds=0.05)
    try:
        agent = src.registry.agent("finance/analyst")
        assert agent is not None and agent.team == "finance"
        assert agent.meta.source == f"agents.{GROUP}/finance/analyst"
        assert src.poll() is False  # nothing changed: no new snapshot
        assert _until(lambda: sum(state.watches.values()) == len(PLURALS))
        state.send("llmproviders", "ADDED", GATEWAY)
        assert _until(src.poll)
        assert [p.meta.name for p in src.registry.providers] == ["gw"]
        state.send("agents", "DELETED", AGENT)
        assert _until(src.poll)
        assert src.registry.agent("finance/analyst") is None
        # the events came by the watches: one list per kind, no relist
        assert state.lists == Counter({p: 1 for p in PLURALS.values()})
        # each watch starts from its list's version
        assert all(v == ["10"] for v in state.watch_versions.values())
    finally:
        src.stop()


def test_an_idle_cluster_costs_one_list_per_kind(cluster: tuple[StandIn, Any]) -> None:
    """Watches that time out (here after 1 s) resume from the last version seen,
    bookmarks included, without listing again."""
    state, api = cluster
    src = KubeSource(api, watch_seconds=1, retry_seconds=0.05)
    try:
        state.events["agents"].put({"type": "BOOKMARK", "object": {
            "kind": "Agent", "apiVersion": f"{GROUP}/{VERSION}",
            "metadata": {"resourceVersion": "42"}}})
        assert _until(lambda: min(state.watches[p] for p in PLURALS.values()) >= 3, 10)
    finally:
        src.stop()
    assert state.lists == Counter({p: 1 for p in PLURALS.values()})
    assert state.watch_versions["agents"][:2] == ["10", "42"]  # resumed from the bookmark
    assert not src.poll()  # a bookmark is not a change


def test_410_gone_relists_that_kind_once(cluster: tuple[StandIn, Any]) -> None:
    state, api = cluster
    src = KubeSource(api, retry_seconds=0.05)
    try:
        assert _until(lambda: state.watches["agents"] == 1)
        state.items["agents"].append(AGENT)  # changed while the watch was expiring
        state.version = 50
        state.events["agents"].put({"type": "ERROR", "object": {
            "kind": "Status", "apiVersion": "v1", "status": "Failure", "code": 410,
            "reason": "Expired", "message": "too old resource version: 10 (50)"}})
        assert _until(lambda: state.watches["agents"] == 2)
        assert _until(src.poll)
        assert src.registry.agent("finance/analyst") is not None
        assert src.informers["Agent"].errors == 0  # a 410 is the normal end, not an error
    finally:
        src.stop()
    assert state.lists["agents"] == 2
    assert all(state.lists[p] == 1 for p in PLURALS.values() if p != "agents")
    assert state.watch_versions["agents"] == ["10", "50"]


def test_invalid_record_keeps_the_previous_snapshot(cluster: tuple[StandIn, Any]) -> None:
    state, api = cluster
    state.items["agents"].append(AGENT)
    src = KubeSource(api, retry_seconds=0.05)
    try:
        first = src.registry
        bad = json.loads(json.dumps(AGENT))
        bad["spec"]["riskLevl"] = "high"
        assert _until(lambda: state.watches["agents"] == 1)
        state.send("agents", "MODIFIED", bad)
        assert _until(lambda: src.last_error is not None or src.poll())
        assert src.registry is first
        assert src.last_error and \
            "agents.manul.dev/finance/analyst: spec.riskLevl: unknown field" in src.last_error
    finally:
        src.stop()


def test_missing_crd_says_what_to_install(cluster: tuple[StandIn, Any]) -> None:
    state, api = cluster
    state.missing.add("policies")
    with pytest.raises(RegistryError, match=r"`policies\.manul\.dev` CRD is not installed"):
        KubeSource(api, watch=False)


def test_a_status_only_change_makes_no_new_snapshot(cluster: tuple[StandIn, Any]) -> None:
    """The cluster view writes Agent status from every node: those events must not make
    every node rebuild its registry (nor audit a reload)."""
    state, api = cluster
    state.items["agents"] = [AGENT]
    src = KubeSource(api, watch_seconds=5, retry_seconds=0.05)
    seen: list[Any] = []
    inf = src.informers["Agent"]
    handle = inf.on_event
    inf.on_event = lambda ev: (seen.append(ev), handle(ev))
    try:
        before = src.registry
        status = {**AGENT, "status": {"nodes": {"node-a": {"classification": "registered"}}}}
        state.send("agents", "MODIFIED", status)
        assert _until(lambda: len(seen) >= 1)
        assert src.poll() is False and src.registry is before
        changed = {**AGENT, "spec": {**AGENT["spec"], "team": "risk"}}  # positive control
        state.send("agents", "MODIFIED", changed)
        assert _until(src.poll)
        assert src.registry.agents[0].team == "risk"
    finally:
        src.stop()
