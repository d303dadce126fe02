"""Pod sources: Pod objects -> PodInfo, files of pods, and the list+watch event handling.

`KubePods` is fed what the `kubernetes` client produces: watch events made by
the client's own `Watch.unmarshal_event` from API server lines, and, at the
end, the whole thread against a small local HTTP server that answers the two
requests a real API server would (list, then watch) through a real
`CoreV1Api`.
"""

from __future__ import annotations

import json
import threading
import time
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any
from urllib.parse import parse_qs, urlparse

import pytest
import yaml
from kubernetes import client, watch

from agent.errors import WorkloadError
from agent.workloads import KubePods, PodInfo, StaticPods, pod_from_dict

DATA = Path(__file__).parent / "data"
UID_A = "207aaad1-659f-4db8-88e0-46e0cdcc3004"
UID_B = "5f0c1d2e-3a4b-4c5d-8e6f-708192a3b4c5"
UID_C = "6a1b2c3d-4e5f-4a6b-9c7d-8e9fa0b1c2d3"
STATIC = "03671a0313f5acf27bef3683009923f8"


def pod_obj(uid: str, name: str, ns: str = "default", sa: str = "default", rv: str = "1",
            labels: dict[str, str] | None = None, mirror: str = "") -> dict[str, Any]:
    meta: dict[str, Any] = {"name": name, "namespace": ns, "uid": uid, "resourceVersion": rv,
                            "labels": labels or {}}
    if mirror:
        meta["annotations"] = {"kubernetes.io/config.mirror": mirror}
    return {"apiVersion": "v1", "kind": "Pod", "metadata": meta,
            "spec": {"nodeName": "node-1", "serviceAccountName": sa,
                     "containers": [{"name": "c", "image": "busybox"}]},
            "status": {"phase": "Running"}}


def event(kind: str, obj: dict[str, Any]) -> dict[str, Any]:
    """A watch event exactly as `kubernetes.watch.Watch.stream` yields it."""
    line = json.dumps({"type": kind, "object": obj})
    ev = watch.Watch().unmarshal_event(line, "V1Pod")  # type: ignore[no-untyped-call]
    assert isinstance(ev, dict)
    return ev


# -- Pod objects ---------------------------------------------------------------


def test_pod_from_dict_reads_identity_fields() -> None:
    p = pod_from_dict(pod_obj(UID_A, "a", ns="finance", sa="analyst",
                              labels={"b": "2", "a": "1"}))
    assert p == PodInfo("finance", "a", UID_A, "analyst", (("a", "1"), ("b", "2")), "node-1")


def test_pod_defaults_namespace_and_service_account() -> None:
    p = pod_from_dict({"kind": "Pod", "metadata": {"name": "x", "uid": UID_A}, "spec": {}})
    assert (p.namespace, p.service_account) == ("default", "default")


@pytest.mark.parametrize(("obj", "msg"), [
    ([], "expected a Pod object"),
    ({"kind": "Service", "metadata": {"name": "s", "uid": "u"}}, "kind `Service` is not a Pod"),
    ({"kind": "Pod"}, "metadata: missing"),
    ({"kind": "Pod", "metadata": {"uid": "u"}}, "metadata.name: missing"),
    ({"kind": "Pod", "metadata": {"name": "n"}}, "metadata.uid: missing in pod `n`"),
    ({"kind": "Pod", "metadata": {"name": "n", "uid": "u", "labels": ["x"]}},
     "expected mappings"),
])
def test_malformed_pods_are_refused(obj: Any, msg: str) -> None:
    with pytest.raises(WorkloadError, match=msg):
        pod_from_dict(obj)


# -- StaticPods ----------------------------------------------------------------


def test_static_pods_from_kubectl_yaml() -> None:
    pods = StaticPods.from_file(DATA / "pods.yaml")
    assert len(pods) == 3
    a = pods.pod_by_uid(UID_A)
    assert a is not None
    assert (a.namespace, a.name, a.service_account) == (
        "finance", "analyst-7d9f8c6b5-x2k8q", "analyst")
    assert ("app.kubernetes.io/name", "analyst") in a.labels
    # the static pod runs under its config hash; the API shows its mirror pod
    api = pods.pod_by_uid(STATIC)
    assert api is not None and api.name == "kube-apiserver-node-1"
    assert pods.pod_by_uid("9c0a4f1e-5b6d-4c3e-8f2a-7d1b0e9c8a76") is api
    # UIDs are compared in lower case
    assert pods.pod_by_uid("e1465238-4518-4c21-832f-fd9f87033dad") is not None
    assert pods.pod_by_uid(UID_B) is None


def test_static_pods_from_json_and_multi_document_yaml(tmp_path: Path) -> None:
    j = tmp_path / "pods.json"
    j.write_text(json.dumps({"kind": "PodList", "items": [pod_obj(UID_A, "a")]}))
    assert StaticPods.from_file(j).pod_by_uid(UID_A) is not None
    y = tmp_path / "pods.yaml"
    y.write_text(yaml.safe_dump_all([pod_obj(UID_B, "b"), None, pod_obj(UID_C, "c")]))
    pods = StaticPods.from_file(y)
    assert {pods.pod_by_uid(u).name for u in (UID_B, UID_C)} == {"b", "c"}  # type: ignore[union-attr]


def test_static_pods_file_errors_name_the_file_and_item(tmp_path: Path) -> None:
    bad = tmp_path / "bad.yaml"
    bad.write_text(json.dumps({"kind": "List", "items": [pod_obj(UID_A, "a"), {"kind": "Pod"}]}))
    with pytest.raises(WorkloadError, match=r"`.*bad.yaml`: items\[1\]: metadata: missing"):
        StaticPods.from_file(bad)
    broken = tmp_path / "broken.yaml"
    broken.write_text("items: [\n")
    with pytest.raises(WorkloadError, match="not valid yaml"):
        StaticPods.from_file(broken)
    with pytest.raises(WorkloadError, match="cannot read pods file"):
        StaticPods.from_file(tmp_path / "missing.yaml")


# -- KubePods event handling -----------------------------------------------------


def test_watch_events_update_the_index() -> None:
    kp = KubePods("node-1")
    rv = kp.apply_list({"kind": "PodList", "metadata": {"resourceVersion": "10"},
                        "items": [pod_obj(UID_A, "a", sa="one")]})
    assert rv == "10"
    kp.apply_event(event("ADDED", pod_obj(UID_B, "b", rv="11")))
    b = kp.pod_by_uid(UID_B)
    assert b is not None and b.name == "b"
    kp.apply_event(event("MODIFIED", pod_obj(UID_A, "a", sa="two", rv="12",
                                             labels={"tier": "gold"})))
    a = kp.pod_by_uid(UID_A)
    assert a is not None and (a.service_account, a.labels) == ("two", (("tier", "gold"),))
    assert len(kp) == 2


def test_deleted_pods_stay_answerable_but_leave_the_live_set() -> None:
    kp = KubePods("node-1", keep_deleted=2)
    for i, uid in enumerate((UID_A, UID_B, UID_C)):
        kp.apply_event(event("ADDED", pod_obj(uid, f"p{i}")))
    for uid in (UID_A, UID_B, UID_C):
        kp.apply_event(event("DELETED", pod_obj(uid, "gone")))
    assert len(kp) == 0
    # the two most recently deleted are still named; the oldest fell out of the bound
    assert kp.pod_by_uid(UID_A) is None
    assert kp.pod_by_uid(UID_B) is not None and kp.pod_by_uid(UID_C) is not None


def test_relist_drops_vanished_pods_into_the_deleted_set() -> None:
    kp = KubePods("node-1")
    kp.apply_list({"metadata": {"resourceVersion": "1"},
                   "items": [pod_obj(UID_A, "a"), pod_obj(UID_B, "b")]})
    kp.apply_list({"metadata": {"resourceVersion": "9"}, "items": [pod_obj(UID_B, "b")]})
    assert len(kp) == 1
    assert kp.pod_by_uid(UID_A) is not None  # remembered as deleted


def test_mirror_pods_answer_for_the_static_pod_hash() -> None:
    kp = KubePods("node-1")
    kp.apply_event(event("ADDED", pod_obj(UID_A, "etcd-node-1", ns="kube-system",
                                          mirror=STATIC)))
    etcd = kp.pod_by_uid(STATIC)
    assert etcd is not None and etcd.name == "etcd-node-1"
    kp.apply_event(event("DELETED", pod_obj(UID_A, "etcd-node-1", mirror=STATIC)))
    assert kp.pod_by_uid(STATIC) is not None and len(kp) == 0


def test_bookmark_and_error_events() -> None:
    kp = KubePods("node-1")
    kp.apply_event(event("BOOKMARK", {"kind": "Pod", "apiVersion": "v1",
                                      "metadata": {"resourceVersion": "77"}}))
    assert len(kp) == 0 and kp._resource_version == "77"
    with pytest.raises(WorkloadError, match="pod watch failed: 500"):
        kp.apply_event({"type": "ERROR", "raw_object": {"code": 500, "reason": "InternalError",
                                                        "message": "boom"}})
    with pytest.raises(WorkloadError, match="node name is empty"):
        KubePods("")


# -- KubePods thread against a local API endpoint ----------------------------------


class FakeApiServer:
    """Answers GET /api/v1/pods as a list (no `watch`) or a watch stream, from a script."""

    def __init__(self, lists: list[dict[str, Any]], watches: list[list[dict[str, Any]]]) -> None:
        self.lists, self.watches = lists, watches
        self.requests: list[dict[str, list[str]]] = []
        self.release = threading.Event()  # ends the last, held-open watch
        outer = self

        class Handler(BaseHTTPRequestHandler):
            def log_message(self, *args: Any) -> None:
                pass

            def do_GET(self) -> None:
                url = urlparse(self.path)
                q = parse_qs(url.query)
                outer.requests.append(q | {"path": [url.path]})
                self.send_response(200)
                self.send_header("Content-Type", "application/json")
                self.end_headers()
                if q.get("watch", ["false"])[0].lower() != "true":
                    self.wfile.write(json.dumps(outer.lists.pop(0)).encode())
                    return
                if not outer.watches:
                    outer.release.wait(10)
                    return
                for ev in outer.watches.pop(0):
                    self.wfile.write(json.dumps(ev).encode() + b"\n")
                    self.wfile.flush()

        self.httpd = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.thread = threading.Thread(target=self.httpd.serve_forever, daemon=True)

    def __enter__(self) -> FakeApiServer:
        self.thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.release.set()
        self.httpd.shutdown()
        self.httpd.server_close()

    def api(self) -> Any:
        conf = client.Configuration()
        conf.host = f"http://127.0.0.1:{self.httpd.server_address[1]}"
        return client.CoreV1Api(client.ApiClient(conf))


@pytest.fixture
def api_server() -> Iterator[FakeApiServer]:
    gone = {"kind": "Status", "apiVersion": "v1", "status": "Failure", "code": 410,
            "reason": "Expired", "message": "too old resource version: 15 (20)"}
    srv = FakeApiServer(
        lists=[
            {"kind": "PodList", "metadata": {"resourceVersion": "10"},
             "items": [pod_obj(UID_A, "a")]},
            {"kind": "PodList", "metadata": {"resourceVersion": "20"},
             "items": [pod_obj(UID_B, "b", rv="12"), pod_obj(UID_C, "c", rv="19")]},
        ],
        watches=[
            [{"type": "ADDED", "object": pod_obj(UID_B, "b", rv="11")},
             {"type": "DELETED", "object": pod_obj(UID_A, "a", rv="13")},
             {"type": "BOOKMARK", "object": {"kind": "Pod", "apiVersion": "v1",
                                             "metadata": {"resourceVersion": "15"}}}],
            [{"type": "ERROR", "object": gone}],
        ],
    )
    with srv:
        yield srv


def test_list_then_watch_then_relist_after_410(api_server: FakeApiServer) -> None:
    kp = KubePods("node-1", api=api_server.api(), watch_seconds=30, retry_seconds=0.05)
    kp.start()
    try:
        assert kp.synced.wait(5)
        for _ in range(250):  # the watch after the relist is the script's last request
            if len(api_server.requests) >= 5:
                break
            time.sleep(0.02)
        assert kp.pod_by_uid(UID_C) is not None and kp.pod_by_uid(UID_B) is not None
    finally:
        api_server.release.set()
        kp.stop()
    reqs = api_server.requests
    assert all(r["path"] == ["/api/v1/pods"] for r in reqs)
    assert all(r["fieldSelector"] == ["spec.nodeName=node-1"] for r in reqs)
    kinds = ["watch" if "watch" in r else "list" for r in reqs]
    assert kinds[:5] == ["list", "watch", "watch", "list", "watch"]
    # each watch resumes from the last version seen: the list's, then the bookmark's
    assert [r["resourceVersion"][0] for r in reqs if "watch" in r][:3] == ["10", "15", "20"]
    assert len(kp) == 2
    assert kp.pod_by_uid(UID_A) is not None  # deleted by the watch, still answerable
    assert kp.errors == 0  # a 410 is the normal end of a watch, not an error
