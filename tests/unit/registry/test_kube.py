"""The cluster registry backend through the real `kubernetes` client.

No API server exists on the development machines, so a local HTTP endpoint
answers the list calls the way the API server does (the `CustomObjectsApi`
request path, JSON lists with a resourceVersion); the client, the parsing
and the snapshot swap are the production code.
"""

from __future__ import annotations

import json
import threading
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

import pytest
from kubernetes import client

from agent.errors import RegistryError
from agent.registry.kube import GROUP, PLURALS, VERSION, KubeSource

AGENT = {"metadata": {"name": "analyst", "namespace": "finance", "uid": "x",
                      "resourceVersion": "7"},
         "spec": {"team": "finance", "identities": [
             {"serviceAccount": {"namespace": "finance", "name": "analyst"}}]}}


class FakeCluster:
    def __init__(self) -> None:
        self.items: dict[str, list[dict[str, Any]]] = {p: [] for p in PLURALS.values()}
        self.version = 1
        self.requests: list[str] = []
        self.missing: set[str] = set()


@pytest.fixture
def cluster() -> Iterator[tuple[FakeCluster, Any]]:
    state = FakeCluster()

    class Handler(BaseHTTPRequestHandler):
        def do_GET(self) -> None:
            state.requests.append(self.path)
            prefix = f"/apis/{GROUP}/{VERSION}/"
            plural = self.path.removeprefix(prefix).split("?")[0]
            if not self.path.startswith(prefix) or plural not in state.items \
                    or plural in state.missing:
                self.send_response(404)
                self.end_headers()
                return
            body = json.dumps({"apiVersion": f"{GROUP}/{VERSION}", "kind": "List",
                               "metadata": {"resourceVersion": str(state.version)},
                               "items": state.items[plural]}).encode()
            self.send_response(200)
            self.send_header("Content-Type", "application/json")
            self.send_header("Content-Length", str(len(body)))
            self.end_headers()
            self.wfile.write(body)

        def log_message(self, *args: Any) -> None:
            pass

    httpd = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    threading.Thread(target=httpd.serve_forever, daemon=True).start()
    cfg = client.Configuration()
    cfg.host = f"http://127.0.0.1:{httpd.server_address[1]}"
    api_client = client.ApiClient(cfg)
    yield state, client.CustomObjectsApi(api_client)
    api_client.close()
    httpd.shutdown()
    httpd.server_close()


def test_records_load_and_reload(cluster: tuple[FakeCluster, Any]) -> None:
    state, api = cluster
    state.items["agents"].append(AGENT)
    src = KubeSource(api)
    agent = src.registry.agent("finance/analyst")
    assert agent is not None and agent.team == "finance"
    assert agent.meta.source == f"agents.{GROUP}/finance/analyst"
    assert src.poll() is False  # nothing changed: no new snapshot
    state.items["llmproviders"].append(
        {"metadata": {"name": "gw"}, "spec": {"gateway": True, "hosts": ["gw.internal"]}})
    state.version += 1
    assert src.poll() is True
    assert [p.meta.name for p in src.registry.providers] == ["gw"]


def test_invalid_record_keeps_the_previous_snapshot(cluster: tuple[FakeCluster, Any]) -> None:
    state, api = cluster
    state.items["agents"].append(AGENT)
    src = KubeSource(api)
    first = src.registry
    bad = json.loads(json.dumps(AGENT))
    bad["spec"]["riskLevl"] = "high"
    state.items["agents"] = [bad]
    state.version += 1
    assert src.poll() is False
    assert src.registry is first
    assert src.last_error and "agents.manul.dev/finance/analyst: spec.riskLevl: unknown field" \
        in src.last_error


def test_missing_crd_says_what_to_install(cluster: tuple[FakeCluster, Any]) -> None:
    state, api = cluster
    state.missing.add("policies")
    with pytest.raises(RegistryError, match=r"`policies\.manul\.dev` CRD is not installed"):
        KubeSource(api)
