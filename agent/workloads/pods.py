"""The cluster side of attribution: pod UID -> Pod (namespace, name, service account, labels).

The resolver asks a `PodSource` for the UID parsed from a pod's cgroup path.
Two sources: `StaticPods` (a fixed list, or a file of Pod objects as
`kubectl get pods -o yaml|json` prints them: for tests and offline host runs)
and `KubePods` (list+watch of this node's pods through the `kubernetes`
client, on its own thread). Both turn Pod dicts into `PodInfo` with
`pod_from_dict` and index them with `PodIndex`.

A static pod runs under its config hash (32 hex digits) as UID; the API
server shows its mirror pod under another UID with the hash in the
`kubernetes.io/config.mirror` annotation, so the index answers to both.
"""

from __future__ import annotations

import json
import logging
import threading
from collections import OrderedDict
from collections.abc import Iterable, Iterator, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Protocol

import yaml

from agent.errors import WorkloadError
from agent.registry.informer import Informer
from agent.textfile import read_text

log = logging.getLogger(__name__)

MIRROR_ANNOTATION = "kubernetes.io/config.mirror"


@dataclass(frozen=True, slots=True)
class PodInfo:
    namespace: str
    name: str
    uid: str
    service_account: str
    labels: tuple[tuple[str, str], ...] = ()
    node: str = ""
    mirror_of: str = ""  # a mirror pod: the static pod's UID (config hash)


class PodSource(Protocol):
    def pod_by_uid(self, uid: str) -> PodInfo | None:
        """The pod with this UID (dashed or a static pod's hash), None if unknown."""


def pod_from_dict(obj: Any, where: str = "pod") -> PodInfo:
    """A Pod object (a dict as the API server or kubectl gives it) -> PodInfo."""
    if not isinstance(obj, Mapping):
        raise WorkloadError(f"{where}: expected a Pod object, got {type(obj).__name__}")
    kind = obj.get("kind", "Pod")
    if kind != "Pod":
        raise WorkloadError(f"{where}: kind `{kind}` is not a Pod")
    meta = obj.get("metadata")
    if not isinstance(meta, Mapping):
        raise WorkloadError(f"{where}: metadata: missing")
    name, uid = meta.get("name"), meta.get("uid")
    if not isinstance(name, str) or not name:
        raise WorkloadError(f"{where}: metadata.name: missing")
    if not isinstance(uid, str) or not uid:
        raise WorkloadError(f"{where}: metadata.uid: missing in pod `{name}`")
    spec = obj.get("spec") or {}
    if not isinstance(spec, Mapping):
        raise WorkloadError(f"{where}: spec: expected a mapping in pod `{name}`")
    labels = meta.get("labels") or {}
    annotations = meta.get("annotations") or {}
    if not isinstance(labels, Mapping) or not isinstance(annotations, Mapping):
        raise WorkloadError(f"{where}: metadata.labels/annotations: expected mappings "
                            f"in pod `{name}`")
    sa = spec.get("serviceAccountName") or spec.get("serviceAccount") or "default"
    return PodInfo(
        namespace=str(meta.get("namespace") or "default"),
        name=name,
        uid=uid.lower(),
        service_account=str(sa),
        labels=tuple(sorted((str(k), str(v)) for k, v in labels.items())),
        node=str(spec.get("nodeName") or ""),
        mirror_of=str(annotations.get(MIRROR_ANNOTATION) or "").lower(),
    )


def pods_from_documents(docs: Iterable[Any], where: str) -> Iterator[PodInfo]:
    """Pods from parsed documents: Pod objects, or lists (`kind: List`/`PodList`, `items`)."""
    for d, doc in enumerate(docs):
        if doc is None:
            continue
        at = f"{where}#{d}" if d else where
        if isinstance(doc, Mapping) and "items" in doc:
            items = doc["items"] or []
            if not isinstance(items, list):
                raise WorkloadError(f"{at}: items: expected a list")
            for i, item in enumerate(items):
                yield pod_from_dict(item, f"{at}: items[{i}]")
        else:
            yield pod_from_dict(doc, at)


class PodIndex:
    """Pods by UID and by mirror hash; deleted pods kept (bounded) for late events."""

    def __init__(self, keep_deleted: int = 4096) -> None:
        self._live: dict[str, PodInfo] = {}
        self._alias: dict[str, str] = {}  # static pod hash -> mirror pod UID
        self._gone: OrderedDict[str, PodInfo] = OrderedDict()
        self._keep = keep_deleted
        self._lock = threading.Lock()

    def __len__(self) -> int:
        return len(self._live)

    def get(self, uid: str) -> PodInfo | None:
        uid = uid.lower()
        with self._lock:
            pod = self._live.get(uid)
            if pod is None and uid in self._alias:
                pod = self._live.get(self._alias[uid])
            if pod is None:
                pod = self._gone.get(uid)
            return pod

    def put(self, pod: PodInfo) -> None:
        with self._lock:
            self._put(pod)

    def delete(self, uid: str) -> None:
        with self._lock:
            self._delete(uid.lower())

    def replace(self, pods: Iterable[PodInfo]) -> None:
        """Make `pods` the live set; pods that vanished count as deleted."""
        fresh = list(pods)
        keep = {p.uid for p in fresh}
        with self._lock:
            for uid in [u for u in self._live if u not in keep]:
                self._delete(uid)
            for p in fresh:
                self._put(p)

    def _put(self, pod: PodInfo) -> None:
        old = self._live.get(pod.uid)
        if old is not None and old.mirror_of and old.mirror_of != pod.mirror_of:
            self._alias.pop(old.mirror_of, None)
        self._live[pod.uid] = pod
        self._gone.pop(pod.uid, None)
        if pod.mirror_of:
            self._alias[pod.mirror_of] = pod.uid
            self._gone.pop(pod.mirror_of, None)

    def _delete(self, uid: str) -> None:
        pod = self._live.pop(uid, None)
        if pod is None:
            return
        self._remember(uid, pod)
        if pod.mirror_of and self._alias.get(pod.mirror_of) == uid:
            del self._alias[pod.mirror_of]
            self._remember(pod.mirror_of, pod)

    def _remember(self, uid: str, pod: PodInfo) -> None:
        self._gone[uid] = pod
        self._gone.move_to_end(uid)
        while len(self._gone) > self._keep:
            self._gone.popitem(last=False)


class StaticPods:
    """A fixed set of pods: from a list, or from a YAML/JSON file of Pod objects."""

    def __init__(self, pods: Iterable[PodInfo] = ()) -> None:
        self._index = PodIndex()
        self._index.replace(pods)

    @classmethod
    def from_file(cls, path: str | Path) -> StaticPods:
        """Load `kubectl get pods -o yaml` / `-o json` output, a Pod, or several YAML docs."""
        p = Path(path)
        text = read_text(p, WorkloadError, "cannot read pods file")
        try:
            docs = [json.loads(text)] if p.suffix == ".json" else list(yaml.safe_load_all(text))
        except (json.JSONDecodeError, yaml.YAMLError) as e:
            raise WorkloadError(f"`{p}`: not valid {p.suffix.lstrip('.') or 'yaml'}: {e}") from e
        return cls(pods_from_documents(docs, f"`{p}`"))

    def __len__(self) -> int:
        return len(self._index)

    def pod_by_uid(self, uid: str) -> PodInfo | None:
        return self._index.get(uid)


class KubePods:
    """This node's pods from the API server: list, then watch (`Informer`).

    `start()` runs the informer on a daemon thread; `synced` is set after the
    first list. Every watch event goes through `apply_event` (the same dict the
    `kubernetes` client's `Watch.stream` yields: `type`, `object`, `raw_object`),
    and every list through `apply_list`; `raw_object` is read, so the model
    objects are never needed. Deleted pods stay answerable for a while
    (`keep_deleted`), so a handshake processed after its pod is gone still
    names it.
    """

    def __init__(self, node: str, api: Any = None, *, keep_deleted: int = 4096,
                 watch_seconds: int = 300, retry_seconds: float = 2.0) -> None:
        if not node:
            raise WorkloadError("the node name is empty: set it (e.g. from the downward API "
                                "`spec.nodeName`) to watch this node's pods")
        self.node = node
        self.field_selector = f"spec.nodeName={node}"
        self.synced = threading.Event()
        self._api = api
        self._index = PodIndex(keep_deleted)
        self._watch_seconds = watch_seconds
        self._retry = retry_seconds
        self._informer: Informer | None = None
        self._resource_version = ""

    def __len__(self) -> int:
        return len(self._index)

    def pod_by_uid(self, uid: str) -> PodInfo | None:
        return self._index.get(uid)

    @property
    def errors(self) -> int:
        return self._informer.errors if self._informer is not None else 0

    @property
    def last_error(self) -> str:
        return self._informer.last_error if self._informer is not None else ""

    # -- the path from API responses to the index (production and tests) ----

    def apply_list(self, pod_list: Mapping[str, Any]) -> str:
        """A PodList response (as a dict): becomes the live set. Returns its resourceVersion."""
        items = pod_list.get("items") or []
        self._index.replace(pod_from_dict(item, f"pod list: items[{i}]")
                            for i, item in enumerate(items))
        meta = pod_list.get("metadata") or {}
        self._resource_version = str(meta.get("resourceVersion") or "")
        self.synced.set()
        return self._resource_version

    def apply_event(self, event: Mapping[str, Any]) -> None:
        """One watch event. ADDED/MODIFIED upsert, DELETED forgets (kept as deleted)."""
        kind = event.get("type")
        obj = event.get("raw_object", event.get("object"))
        if kind == "ERROR":
            status = obj if isinstance(obj, Mapping) else {}
            raise WorkloadError(f"pod watch failed: {status.get('code', '?')} "
                                f"{status.get('reason', '')}: {status.get('message', '')}")
        if kind not in ("ADDED", "MODIFIED", "DELETED", "BOOKMARK"):
            log.debug("pod watch: ignoring event type %r", kind)
            return
        meta = obj.get("metadata") if isinstance(obj, Mapping) else None
        if isinstance(meta, Mapping) and meta.get("resourceVersion"):
            self._resource_version = str(meta["resourceVersion"])
        if kind == "BOOKMARK":
            return
        pod = pod_from_dict(obj, f"pod watch {kind}")
        if kind == "DELETED":
            self._index.delete(pod.uid)
        else:
            self._index.put(pod)

    # -- the thread ----------------------------------------------------------

    def start(self) -> None:
        if self._informer is not None:
            return
        if self._api is None:
            self._api = _core_api()
        self._informer = Informer(
            f"pods on {self.node}", self._api.list_pod_for_all_namespaces,
            on_list=self.apply_list, on_event=self.apply_event,
            watch_seconds=self._watch_seconds, retry_seconds=self._retry,
            field_selector=self.field_selector)
        self._informer.start()

    def stop(self, timeout: float = 5.0) -> None:
        if self._informer is not None:
            self._informer.stop(timeout)


def _core_api() -> Any:
    """A CoreV1Api from the in-cluster service account, else from the kubeconfig."""
    from kubernetes import client

    from agent.registry.kube import load_credentials

    load_credentials(WorkloadError)
    return client.CoreV1Api()
