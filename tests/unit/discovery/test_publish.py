"""The cluster-wide view (agent/discovery/publish.py) through the real `kubernetes`
client against a local stand-in for the API server's custom-object endpoints:
create (409 when it exists), GET, and PATCH of the status subresource with a
JSON merge patch (RFC 7386, as the API server applies
`application/merge-patch+json`). Two `ClusterView`s play two nodes.

Observations are the real dataclasses (Workload, Verdict, Match, the
registry's Agent); only the handshake and ClientHello, which the publisher
never reads, are left out.
"""

from __future__ import annotations

import json
import threading
from collections import Counter
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler
from pathlib import Path
from typing import Any, cast

import jsonschema
import pytest
import yaml

from agent.discovery.catalog import Match
from agent.discovery.classify import Classification, Verdict
from agent.discovery.publish import ClusterView
from agent.discovery.service import Observation
from agent.registry import Registry, parse_record
from agent.workloads import Workload
from tests.support import custom_objects_api

ROOT = Path(__file__).parents[3]

PREFIX = "/apis/manul.dev/v1alpha1/namespaces/"


def merge(target: Any, patch: Any) -> Any:
    """RFC 7386."""
    if not isinstance(patch, dict):
        return patch
    out = dict(target) if isinstance(target, dict) else {}
    for k, v in patch.items():
        if v is None:
            out.pop(k, None)
        else:
            out[k] = merge(out.get(k), v)
    return out


class StandIn:
    def __init__(self) -> None:
        self.objects: dict[tuple[str, str, str], dict[str, Any]] = {}
        self.requests: Counter[str] = Counter()
        self.patches: Counter[tuple[str, str]] = Counter()  # (object name, node) -> writes
        self.fail = 0  # answer the next n writes with 500
        self.lock = threading.Lock()

    def handler(self) -> type[BaseHTTPRequestHandler]:
        state = self

        class Handler(BaseHTTPRequestHandler):
            def log_message(self, *args: Any) -> None:
                pass

            def reply(self, code: int, body: Any) -> None:
                data = json.dumps(body).encode()
                self.send_response(code)
                self.send_header("Content-Type", "application/json")
                self.send_header("Content-Length", str(len(data)))
                self.end_headers()
                self.wfile.write(data)

            def parts(self) -> list[str]:
                assert self.path.startswith(PREFIX), self.path
                return self.path[len(PREFIX):].split("?")[0].split("/")

            def body(self) -> Any:
                return json.loads(self.rfile.read(int(self.headers["Content-Length"])))

            def do_POST(self) -> None:
                ns, plural = self.parts()
                obj = self.body()
                with state.lock:
                    state.requests["create"] += 1
                    key = (ns, plural, obj["metadata"]["name"])
                    if key in state.objects:
                        return self.reply(409, {"kind": "Status", "reason": "AlreadyExists"})
                    state.objects[key] = obj
                self.reply(201, obj)

            def do_GET(self) -> None:
                ns, plural, name = self.parts()[:3]
                obj = state.objects.get((ns, plural, name))
                self.reply(200 if obj else 404, obj or {"kind": "Status"})

            def do_PATCH(self) -> None:
                ns, plural, name, sub = self.parts()
                assert sub == "status"
                assert self.headers["Content-Type"] == "application/merge-patch+json"
                patch = self.body()
                with state.lock:
                    state.requests["patch"] += 1
                    if state.fail:
                        state.fail -= 1
                        return self.reply(500, {"kind": "Status", "reason": "InternalError"})
                    obj = state.objects.get((ns, plural, name))
                    if obj is None:
                        return self.reply(404, {"kind": "Status", "reason": "NotFound"})
                    for node in patch["status"]["nodes"]:
                        state.patches[(name, node)] += 1
                    obj["status"] = merge(obj.get("status"), patch["status"])
                self.reply(200, obj)

        return Handler


@pytest.fixture
def cluster() -> Iterator[tuple[StandIn, Any]]:
    state = StandIn()
    with custom_objects_api(state.handler()) as api:
        yield state, api


class Clock:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


def pod(name: str, sa: str, ns: str = "team-a") -> Workload:
    return Workload(kind="pod", name=f"{ns}/{name}", cgroup_id=1, cgroup_path="/kubepods/x",
                    namespace=ns, pod=name, service_account=sa)


def seen(w: Workload, provider: str, sni: str, *, caller: Any = None,
         cls: Classification = Classification.SHADOW, exe: str = "/usr/bin/python3",
         ja4: str = "t13d1516h2_8daaf6152771_02713d6af862") -> Observation:
    return Observation(
        handshake=cast(Any, None), hello=cast(Any, None), sni=sni, ja4=ja4,
        match=Match(provider, sni, gateway=False, builtin=True),
        verdict=Verdict(cls, caller, "test"), workload=w, process=None, exe=exe,
        entry_key=w.name, first_of_pair=True, delay_ms=0.1)


def test_two_nodes_make_one_object_per_shadow_workload(cluster: tuple[StandIn, Any]) -> None:
    state, api = cluster
    clock = Clock()
    a = ClusterView(api, "node-a", clock=clock)
    b = ClusterView(api, "node-b", clock=clock)
    a.observe(seen(pod("scraper-1", "scraper"), "openai", "api.openai.com"))
    b.observe(seen(pod("scraper-2", "scraper"), "anthropic", "api.anthropic.com",
                   exe="/usr/local/bin/node"))
    b.observe(seen(pod("lonely-1", "lonely", ns="team-b"), "openai", "api.openai.com"))
    assert a.flush() == 1 and b.flush() == 2
    clock.now += 10
    a.observe(seen(pod("scraper-1", "scraper"), "mistral", "api.mistral.ai"))
    assert a.flush() == 1  # something new: written again
    # each node's summary was made from what it last saw of the other: rewritten once
    # more after `interval`, then it has converged and nothing is written
    for _ in range(3):
        clock.now += 10
        a.flush()
        b.flush()
    assert a.flush() == 0 and b.flush() == 0
    assert sum(state.patches.values()) <= 8, state.patches
    objs = {(ns, name): o for (ns, _, name), o in state.objects.items()}
    assert set(objs) == {("team-a", "scraper"), ("team-b", "lonely")}
    st = objs[("team-a", "scraper")]["status"]
    assert set(st["nodes"]) == {"node-a", "node-b"}
    assert st["nodes"]["node-a"]["providers"] == ["mistral", "openai"]
    assert st["nodes"]["node-b"]["processes"] == ["/usr/local/bin/node"]
    assert st["nodes"]["node-b"]["pods"] == ["scraper-2"]
    assert st["providers"] == ["anthropic", "mistral", "openai"] and st["nodeCount"] == 2
    assert st["classification"] == "shadow"
    assert objs[("team-a", "scraper")]["spec"] == {"serviceAccount": "scraper"}
    crd = yaml.safe_load((ROOT / "charts/manul/crds/discoveredagents.yaml").read_text())
    for o in objs.values():  # what the API server would store: valid for the CRD
        jsonschema.validate(o, crd["spec"]["versions"][0]["schema"]["openAPIV3Schema"])
    assert state.requests["create"] == 2  # one per object: the other node read it first


def test_writes_are_bounded_whatever_the_traffic(cluster: tuple[StandIn, Any]) -> None:
    """A handshake every 100 ms for 10 simulated minutes: the same facts are written
    once a minute (lastSeen), new facts at most every `interval`."""
    state, api = cluster
    clock = Clock()
    wall = Clock()
    view = ClusterView(api, "node-a", interval=10, refresh=60, clock=clock, wall=wall)
    w = pod("chatty-1", "chatty")
    for i in range(6000):
        clock.now += 0.1
        wall.now += 0.1
        host = f"h{i // 600}.openai.com"  # a new host name every minute
        view.observe(seen(w, "openai", host))
        if i % 10 == 0:
            view.flush()
    writes = state.patches[("chatty", "node-a")]
    print(f"10 minutes, 6000 handshakes, 10 new host names: {writes} writes")
    assert 10 <= writes <= 21  # one per new fact, one per minute for lastSeen
    st = state.objects[("team-a", "discoveredagents", "chatty")]["status"]
    assert len(st["nodes"]["node-a"]["hostNames"]) == 10


def test_registered_agents_get_a_status_and_governed_calls_nothing(
        cluster: tuple[StandIn, Any]) -> None:
    state, api = cluster
    reg = Registry.build([parse_record(yaml.safe_load("""
        apiVersion: manul.dev/v1alpha1
        kind: Agent
        metadata: {name: analyst, namespace: finance}
        spec:
          identities:
            - serviceAccount: {namespace: finance, name: analyst}
        """), "test")])
    agent = reg.agents[0]
    state.objects[("finance", "agents", "analyst")] = {"metadata": {"name": "analyst"}}
    view = ClusterView(api, "node-a")
    view.observe(seen(pod("analyst-7", "analyst", ns="finance"), "openai", "api.openai.com",
                      caller=agent, cls=Classification.REGISTERED))
    view.observe(seen(pod("x-1", "x"), "gw", "gw.internal", cls=Classification.GOVERNED))
    assert view.flush() == 1
    st = state.objects[("finance", "agents", "analyst")]["status"]
    assert st["nodes"]["node-a"]["classification"] == "registered"
    assert st["nodes"]["node-a"]["pods"] == ["analyst-7"]
    assert ("team-a", "discoveredagents", "x") not in state.objects
    assert state.requests["create"] == 0  # Agents are the registry's, never created


def test_an_api_error_is_retried_later_not_in_a_loop(cluster: tuple[StandIn, Any],
                                                     caplog: pytest.LogCaptureFixture) -> None:
    state, api = cluster
    clock = Clock()
    view = ClusterView(api, "node-a", interval=10, clock=clock)
    view.observe(seen(pod("s-1", "s"), "openai", "api.openai.com"))
    state.fail = 2
    assert view.flush() == 0
    assert view.flush() == 0 and state.requests["patch"] == 1  # not before `interval`
    clock.now += 10
    assert view.flush() == 0  # the second failure: logged once
    clock.now += 10
    assert view.flush() == 1
    assert view.stats.errors == 2
    assert sum("cannot publish" in r.getMessage() for r in caplog.records) == 1


def test_a_deleted_object_is_made_again_and_a_restart_keeps_first_seen(
        cluster: tuple[StandIn, Any]) -> None:
    state, api = cluster
    clock, wall = Clock(), Clock()
    view = ClusterView(api, "node-a", interval=10, clock=clock, wall=wall)
    view.observe(seen(pod("s-1", "s"), "openai", "api.openai.com"))
    assert view.flush() == 1
    first = state.objects[("team-a", "discoveredagents", "s")]["status"]["firstSeen"]
    del state.objects[("team-a", "discoveredagents", "s")]  # kubectl delete
    clock.now += 10
    wall.now += 10
    view.observe(seen(pod("s-2", "s"), "openai", "api.openai.com"))
    assert view.flush() == 0  # the patch meets a 404 ...
    clock.now += 10
    assert view.flush() == 1  # ... and the next flush makes it again
    assert ("team-a", "discoveredagents", "s") in state.objects
    # the agent restarts: a new view, later; its part keeps the first sighting
    wall.now += 3600
    again = ClusterView(api, "node-a", interval=10, clock=clock, wall=wall)
    again.observe(seen(pod("s-3", "s"), "openai", "api.openai.com"))
    assert again.flush() == 1
    st = state.objects[("team-a", "discoveredagents", "s")]["status"]
    assert st["nodes"]["node-a"]["firstSeen"] == first < st["nodes"]["node-a"]["lastSeen"]


def test_lists_keep_the_most_recent_and_stay_bounded(cluster: tuple[StandIn, Any]) -> None:
    """A CronJob makes a new pod every run: the part lists the 32 most recent."""
    state, api = cluster
    clock = Clock()
    view = ClusterView(api, "node-a", interval=10, clock=clock)
    for i in range(200):
        view.observe(seen(pod(f"job-{i:05d}", "cron"), "openai", "api.openai.com"))
        clock.now += 1
        view.flush()
    view.flush()
    clock.now += 10
    view.flush()
    pods = state.objects[("team-a", "discoveredagents", "cron")]["status"]["nodes"][
        "node-a"]["pods"]
    assert pods == [f"job-{i:05d}" for i in range(168, 200)]
    assert state.patches[("cron", "node-a")] <= 200 // 10 + 2  # at most every interval
