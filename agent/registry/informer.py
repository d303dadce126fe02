"""List once, then watch: the one way Manul reads a kind from the API server.

Every node runs Manul, so whatever one agent asks of the API server is
multiplied by the cluster. An `Informer` lists a kind once, then holds a
watch from the list's `resourceVersion` (with bookmarks, so an idle watch
still advances it) and applies each event as it arrives. It lists again
only when it must: the watch answered 410 Gone (the version expired), or
the connection broke and could not resume; between failed attempts it
backs off exponentially, with jitter, so a restarted API server is not met
by every node at once. A watch that simply times out is resumed from the
last version seen, without a list.

Used by the cluster registry (`KubeSource`, one informer per kind) and this
node's pods (`agent.workloads.KubePods`). `list_call` is the `kubernetes`
client's list method (the watch uses the same method with `watch=True`).
"""

from __future__ import annotations

import json
import logging
import random
import threading
from collections.abc import Callable, Mapping
from typing import Any

from agent.errors import ManulError

log = logging.getLogger(__name__)


class WatchError(Exception):
    """An ERROR event in a watch stream."""

    def __init__(self, status: Mapping[str, Any]) -> None:
        self.code = int(status.get("code") or 0)
        super().__init__(f"{status.get('code', '?')} {status.get('reason', '')}: "
                         f"{status.get('message', '')}")


class Informer:
    """One kind: `on_list(doc)` for every list, `on_event(event)` for every watch event.

    `on_list` gets the list response as a dict; `on_event` gets the
    `kubernetes` client's event dict (`type`, `raw_object`), bookmarks
    excluded. Either may raise a `ManulError` to force a relist. `lists` and `watches` count
    the calls made (exported by the callers, checked by the tests).
    """

    def __init__(self, name: str, list_call: Callable[..., Any], *,
                 on_list: Callable[[Mapping[str, Any]], object],
                 on_event: Callable[[Mapping[str, Any]], object],
                 watch_seconds: int = 300, retry_seconds: float = 1.0,
                 max_retry_seconds: float = 60.0, **kwargs: Any) -> None:
        self.name = name
        self.list_call = list_call
        self.kwargs = kwargs  # e.g. group, version, plural; field_selector
        self.on_list = on_list
        self.on_event = on_event
        self.watch_seconds = watch_seconds
        self.retry = retry_seconds
        self.max_retry = max_retry_seconds
        self.resource_version = ""
        self.synced = threading.Event()
        self.lists = 0
        self.watches = 0
        self.errors = 0
        self.last_error = ""
        self._stop = threading.Event()
        self._watch: Any = None
        self._thread: threading.Thread | None = None

    # -- one list, one watch (also called directly: the first list is synchronous) --

    def list_now(self) -> None:
        self.lists += 1
        resp = self.list_call(**self.kwargs, _preload_content=False)
        try:
            doc = json.loads(resp.data)
        finally:
            resp.release_conn()
        self.on_list(doc)
        self.resource_version = str((doc.get("metadata") or {}).get("resourceVersion") or "")
        self.synced.set()

    def watch_once(self) -> None:
        """Follow the watch until it ends (server timeout) or stop(); raises on errors."""
        from kubernetes import watch

        w = watch.Watch()  # type: ignore[no-untyped-call]
        self._watch = w
        self.watches += 1
        try:
            stream = w.stream(  # type: ignore[no-untyped-call]
                self.list_call, **self.kwargs, resource_version=self.resource_version,
                allow_watch_bookmarks=True, timeout_seconds=self.watch_seconds)
            for event in stream:
                kind = event.get("type")
                obj = event.get("raw_object", event.get("object"))
                if kind == "ERROR":
                    raise WatchError(obj if isinstance(obj, Mapping) else {})
                meta = obj.get("metadata") if isinstance(obj, Mapping) else None
                if kind != "BOOKMARK":
                    self.on_event(event)
                if isinstance(meta, Mapping) and meta.get("resourceVersion"):
                    self.resource_version = str(meta["resourceVersion"])
                if self._stop.is_set():
                    break
        finally:
            self._watch = None

    # -- the thread ------------------------------------------------------------

    def start(self) -> None:
        if self._thread is None:
            self._thread = threading.Thread(target=self._run, name=f"manul-watch-{self.name}",
                                            daemon=True)
            self._thread.start()

    def stop(self, timeout: float = 5.0) -> None:
        """Stop watching. The thread (a daemon) ends when its watch returns; a
        watch blocked in a read is not waited for beyond `timeout`."""
        self._stop.set()
        w = self._watch
        if w is not None:
            w.stop()
        if self._thread is not None and timeout > 0:
            self._thread.join(timeout)

    def _run(self) -> None:
        from kubernetes.client.exceptions import ApiException
        from urllib3.exceptions import HTTPError

        failures = 0
        while not self._stop.is_set():
            try:
                if not self.synced.is_set() or not self.resource_version:
                    self.list_now()
                self.watch_once()
                failures = 0  # a watch that ended by itself is resumed from its version
            except (ApiException, WatchError) as e:
                status = getattr(e, "status", None) or getattr(e, "code", 0)
                if status == 410:  # Gone: the version expired; list again, at once
                    log.info("watch %s: resourceVersion expired, listing again", self.name)
                    self.synced.clear()
                    continue
                failures += 1
                self._failed(f"api server: {e}", failures)
            except (HTTPError, OSError, ValueError) as e:
                failures += 1
                self._failed(str(e), failures)
            except ManulError as e:  # a handler refused the data: list again after a pause
                failures += 1
                self.synced.clear()
                self._failed(f"{type(e).__name__}: {e}", failures)

    def _failed(self, why: str, failures: int) -> None:
        if self._stop.is_set():
            return  # stopping: the connection was cut on purpose
        self.errors += 1
        self.last_error = why
        delay = min(self.max_retry, self.retry * 2 ** (failures - 1))
        delay *= random.uniform(0.5, 1.0)  # jitter: nodes do not retry in step
        log.warning("watch %s failed: %s; retrying in %.1f s", self.name, why, delay)
        self._stop.wait(delay)
