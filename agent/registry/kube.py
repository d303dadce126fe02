"""The cluster backend: registry records as `manul.dev/v1alpha1` custom resources.

Same model and same interface as the host backend (`FileSource`): a
`registry` snapshot and `poll()` that swaps in a new one when something
changed, keeping the previous snapshot when the new one is invalid. Each
kind is listed once (at start, synchronously, so a missing CRD is an error
at once) and then watched (`informer.Informer`: bookmarks, a relist only
after 410 Gone): events update one shared cache, and `poll()` parses the
cache only when an event changed it. An idle cluster costs each node one
open watch per kind and no requests. The CRDs are in `charts/manul/crds/`.
"""

from __future__ import annotations

import functools
import logging
import threading
import time
from collections.abc import Mapping
from typing import Any

from agent.errors import ManulError, RegistryError
from agent.registry.informer import Informer
from agent.registry.model import API_VERSION, Record
from agent.registry.parse import parse_record
from agent.registry.registry import Registry

log = logging.getLogger(__name__)

GROUP, VERSION = API_VERSION.split("/")
PLURALS = {
    "Agent": "agents",
    "ServiceIdentity": "serviceidentities",
    "LLMProvider": "llmproviders",
    "MCPServer": "mcpservers",
    "Policy": "policies",
}


def load_credentials(error: type[ManulError] = RegistryError) -> None:
    """Configure the `kubernetes` client: in-cluster service account, else kubeconfig.

    Shared by both cluster backends (this one and `agent.workloads.KubePods`);
    `error` is the caller's error class.
    """
    from kubernetes import config

    try:
        config.load_incluster_config()  # type: ignore[no-untyped-call]
    except config.ConfigException:
        try:
            config.load_kube_config()  # type: ignore[no-untyped-call]
        except (config.ConfigException, OSError) as e:
            raise error(f"no Kubernetes credentials (in-cluster or kubeconfig): {e}") from e


def _custom_api() -> Any:
    from kubernetes import client

    load_credentials()
    return client.CustomObjectsApi()


class KubeSource:
    """Registry records from the API server; `api` is a `CustomObjectsApi`."""

    def __init__(self, api: Any = None, *, watch: bool = True, watch_seconds: int = 300,
                 retry_seconds: float = 1.0) -> None:
        self.api = api if api is not None else _custom_api()
        self.last_error: str | None = None
        self._lock = threading.Lock()
        self._items: dict[str, dict[str, dict[str, Any]]] = {k: {} for k in PLURALS}
        self._dirty = False
        self.informers = {
            kind: Informer(f"{plural}.{GROUP}", self.api.list_cluster_custom_object,
                           on_list=functools.partial(self._on_list, kind),
                           on_event=functools.partial(self._on_event, kind),
                           watch_seconds=watch_seconds, retry_seconds=retry_seconds,
                           group=GROUP, version=VERSION, plural=plural)
            for kind, plural in PLURALS.items()}
        from kubernetes.client.exceptions import ApiException
        from urllib3.exceptions import HTTPError

        for kind, inf in self.informers.items():
            try:
                inf.list_now()
            except (ApiException, HTTPError, OSError, ValueError) as e:
                raise _list_error(kind, e) from e
        self.registry = self._build()
        if watch:
            for inf in self.informers.values():
                inf.start()

    def stop(self, timeout: float = 1.0) -> None:
        for inf in self.informers.values():
            inf.stop(0)
        end = time.monotonic() + timeout
        for inf in self.informers.values():
            inf.stop(max(0.0, end - time.monotonic()))

    # -- the cache ------------------------------------------------------------

    def _on_list(self, kind: str, doc: Mapping[str, Any]) -> None:
        items = {_key(item): _record(item) for item in doc.get("items") or []}
        with self._lock:
            if items != self._items[kind]:
                self._items[kind] = items
                self._dirty = True

    def _on_event(self, kind: str, event: Mapping[str, Any]) -> None:
        obj = event.get("raw_object", event.get("object"))
        if not isinstance(obj, dict):
            return
        with self._lock:
            if event.get("type") == "DELETED":
                self._dirty |= self._items[kind].pop(_key(obj), None) is not None
            elif event.get("type") in ("ADDED", "MODIFIED"):
                rec = _record(obj)
                if self._items[kind].get(_key(obj)) != rec:  # not a status-only change
                    self._items[kind][_key(obj)] = rec
                    self._dirty = True

    def _build(self) -> Registry:
        with self._lock:
            snapshot = {kind: list(items.values()) for kind, items in self._items.items()}
            self._dirty = False
        records: list[Record] = []
        for kind, plural in PLURALS.items():
            for item in sorted(snapshot[kind], key=_key):
                obj = {"apiVersion": API_VERSION, "kind": kind, **item}
                meta = obj.get("metadata", {})
                where = f"{plural}.{GROUP}/{meta.get('namespace', '')}/" \
                        f"{meta.get('name', '?')}".replace("//", "/")
                records.append(parse_record(obj, where))
        return Registry.build(records)

    # -- the interface ----------------------------------------------------------

    def poll(self) -> bool:
        """Swap in a new snapshot when a watch event changed the cache. True when
        a new snapshot is in force; an invalid one keeps the previous (and says why)."""
        if not self._dirty:
            return False
        try:
            new = self._build()
        except RegistryError as e:
            self.last_error = str(e)
            log.error("registry reload from the cluster failed, keeping the previous one: %s",
                      e)
            return False
        self.last_error = None
        self.registry = new
        return True

    def requests(self) -> dict[str, int]:
        """Lists and watches opened so far, per kind (for tests and /healthz)."""
        return {f"{k}.lists": i.lists for k, i in self.informers.items()} | {
            f"{k}.watches": i.watches for k, i in self.informers.items()}


def _record(item: Mapping[str, Any]) -> dict[str, Any]:
    """What the registry reads of an object: not its `status` (the cluster view writes
    it, every node, often) nor the server's bookkeeping, so that those changes never
    make a new snapshot."""
    meta = {k: v for k, v in (item.get("metadata") or {}).items()
            if k not in ("resourceVersion", "managedFields", "generation")}
    return {k: v for k, v in item.items() if k != "status"} | {"metadata": meta}


def _key(item: Mapping[str, Any]) -> str:
    meta = item.get("metadata") or {}
    return f"{meta.get('namespace', '')}/{meta.get('name', '')}"


def _list_error(kind: str, e: Exception) -> RegistryError:
    from kubernetes.client.exceptions import ApiException

    if isinstance(e, ApiException):
        if e.status == 404:
            return RegistryError(
                f"the `{PLURALS[kind]}.{GROUP}` CRD is not installed; install the chart's "
                "CRDs (charts/manul/crds/)")
        return RegistryError(f"cannot list {PLURALS[kind]}.{GROUP}: {e.status} {e.reason}")
    if isinstance(e, OSError):
        return RegistryError(f"cannot reach the API server: {e}")
    return RegistryError(f"cannot list {PLURALS[kind]}.{GROUP}: {e}")
