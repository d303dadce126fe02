"""cgroup id -> Workload, fast and remembering: what discovery calls for every handshake.

Discovery's consumer thread calls `resolve(cgroup_id)` and `process(pid)` per
event; the HTTP and CLI threads call them too, so everything here is
thread-safe. An id -> path cache is filled by walking the cgroup v2 tree
(`cgtree.walk`): on `refresh()` (the caller's timer) and on a miss, at most
once per `min_walk_interval` so a burst of unknown ids costs one walk. A miss
with a pid (the process that connected) first tries that process's cgroup,
which finds a cgroup created since the last walk without walking. Paths are
parsed (`parse_cgroup_path`) on an id's first resolve, not during walks.

Cgroups that disappear stay cached (a bounded LRU, `max_cgroups`), so a
handshake processed after its cgroup was removed is still attributed if the
cgroup was ever seen. `resolve` returns None only for an id never seen; the
caller classifies that handshake `unattributable`.

Pod metadata is looked up in the `PodSource` on every resolve (one dict
lookup) so a pod the watch reports after its first handshake is named from
then on; once a cgroup was tied to a pod, it keeps that pod even after the
source forgets it.
"""

from __future__ import annotations

import logging
import os
import threading
import time
from collections import OrderedDict
from dataclasses import dataclass
from pathlib import Path

from agent.errors import WorkloadError
from agent.kernel.fs import cgroup2_root
from agent.workloads.cgroups import CgroupInfo, parse_cgroup_path
from agent.workloads.cgtree import walk
from agent.workloads.model import DEFAULT_TRUST_DOMAIN, ProcessInfo, Workload, display_name
from agent.workloads.pods import PodInfo, PodSource
from agent.workloads.processes import ProcessCache, process_cgroup

log = logging.getLogger(__name__)


class _Entry:
    """One cached cgroup: its path; parsed on first resolve (walks only list paths);
    `workload` is rebuilt when the pod source's answer changes."""

    __slots__ = ("info", "path", "pod", "workload")

    def __init__(self, path: str) -> None:
        self.path = path
        self.info: CgroupInfo | None = None
        self.pod: PodInfo | None = None
        self.workload: Workload | None = None


@dataclass(frozen=True, slots=True)
class WalkResult:
    cgroups: int  # cgroups found by the walk
    new: int  # of which not cached before
    seconds: float
    cached: int  # ids cached after the walk (live and gone)


class WorkloadResolver:
    def __init__(self, cgroup_root: Path | None = None, pods: PodSource | None = None,
                 trust_domain: str = DEFAULT_TRUST_DOMAIN, *, max_cgroups: int = 65536,
                 min_walk_interval: float = 0.2, max_processes: int = 16384) -> None:
        self.root = Path(cgroup_root) if cgroup_root is not None else cgroup2_root()[0]
        self.pods = pods
        self.trust_domain = trust_domain
        self.min_walk_interval = min_walk_interval
        self._max = max_cgroups
        self._entries: OrderedDict[int, _Entry] = OrderedDict()
        self._lock = threading.Lock()  # guards _entries (held briefly)
        self._walk_lock = threading.Lock()  # one walk at a time
        self._last_walk = -float("inf")  # time.monotonic() at the end of the last walk
        self._processes = ProcessCache(max_processes)
        # Counters for metrics and `manul doctor`; written under _walk_lock or racy-but-monotone.
        self.walks = 0
        self.rate_limited = 0
        self.walk_errors = 0
        self.last_walk: WalkResult | None = None
        self._listing: list[tuple[int, str]] = []  # the last walk's (id, path)

    def __len__(self) -> int:
        return len(self._entries)

    # -- cgroups ---------------------------------------------------------------

    def resolve(self, cgroup_id: int, pid: int = 0) -> Workload | None:
        """The workload of a cgroup id; None only if the id was never seen.

        `pid`, when the event has one, lets a miss be settled from
        `/proc/<pid>/cgroup` without walking the tree.
        """
        with self._lock:
            entry = self._entries.get(cgroup_id)
            if entry is not None:
                self._entries.move_to_end(cgroup_id)
        if entry is None:
            entry = self._miss(cgroup_id, pid)
            if entry is None:
                return None
        return self._workload(cgroup_id, entry)

    def cgroup_path(self, cgroup_id: int) -> str | None:
        """The root-relative path cached for an id (the cgroup may be gone since)."""
        with self._lock:
            entry = self._entries.get(cgroup_id)
        return entry.path if entry is not None else None

    def refresh(self) -> WalkResult:
        """Walk the tree now (not rate-limited): new cgroups cached, live ones kept fresh.

        WorkloadError if the tree cannot be read (the cache is kept as it was).
        """
        with self._walk_lock:
            return self._walk()

    def listing(self, max_age: float = 2.0) -> list[tuple[int, str]]:
        """(cgroup id, path) of every cgroup, from a walk at most `max_age` seconds old
        (the daemon walks every second: its readers share that walk, not one each)."""
        with self._walk_lock:
            if time.monotonic() - self._last_walk > max_age or not self._listing:
                self._walk()
            return list(self._listing)

    def _miss(self, cgroup_id: int, pid: int) -> _Entry | None:
        if pid > 0:
            entry = self._from_pid(cgroup_id, pid)
            if entry is not None:
                return entry
        with self._walk_lock:
            with self._lock:
                entry = self._entries.get(cgroup_id)
            if entry is not None:  # another thread's walk found it meanwhile
                return entry
            if time.monotonic() - self._last_walk < self.min_walk_interval:
                self.rate_limited += 1
                return None
            try:
                self._walk()
            except WorkloadError as e:
                self.walk_errors += 1
                log.warning("%s", e)
                return None
        with self._lock:
            return self._entries.get(cgroup_id)

    def _from_pid(self, cgroup_id: int, pid: int) -> _Entry | None:
        rel = process_cgroup(pid)
        if rel is None:
            return None
        try:
            ino = os.stat(self.root / rel.lstrip("/")).st_ino
        except OSError:
            return None
        if ino != cgroup_id:
            return None  # the process moved, or it is not the one that connected
        info = parse_cgroup_path(rel)
        entry = _Entry(info.path)
        entry.info = info
        with self._lock:
            entry = self._entries.setdefault(cgroup_id, entry)
            self._evict()
        return entry

    def _walk(self) -> WalkResult:
        """Caller holds _walk_lock."""
        t0 = time.perf_counter()
        try:
            found = walk(self.root)
        except OSError as e:
            self._last_walk = time.monotonic()  # a failing tree is not retried in a tight loop
            raise WorkloadError(f"cannot walk the cgroup tree at `{self.root}`: "
                                f"{e.strerror or e}") from e
        entries = self._entries
        fresh: list[tuple[int, _Entry]] = []
        for ino, rel in found:
            old = entries.get(ino)  # an unlocked read: one dict lookup, atomic
            if old is None or old.path != rel:  # new, or renamed
                fresh.append((ino, _Entry(rel)))
        with self._lock:
            for ino, entry in fresh:
                entries[ino] = entry
            for ino, _ in found:
                entries.move_to_end(ino)
            self._evict()
            cached = len(entries)
        self._last_walk = time.monotonic()
        self._listing = found
        self.walks += 1
        result = WalkResult(len(found), len(fresh), time.perf_counter() - t0, cached)
        self.last_walk = result
        return result

    def _evict(self) -> None:
        """Caller holds _lock. Drops the least recently seen ids beyond the bound."""
        while len(self._entries) > self._max:
            self._entries.popitem(last=False)

    def _workload(self, cgroup_id: int, entry: _Entry) -> Workload:
        info = entry.info
        if info is None:
            info = entry.info = parse_cgroup_path(entry.path)
        if info.kind == "pod" and self.pods is not None:
            pod = self.pods.pod_by_uid(info.pod_uid)
            if pod is not None and pod is not entry.pod:
                entry.workload = self._build(cgroup_id, info, pod)
                entry.pod = pod
        workload = entry.workload
        if workload is None:  # first resolve; or a pod not (yet) known to the source
            workload = entry.workload = self._build(cgroup_id, info, None)
        return workload

    def _build(self, cgroup_id: int, info: CgroupInfo, pod: PodInfo | None) -> Workload:
        ns, name = (pod.namespace, pod.name) if pod is not None else ("", "")
        return Workload(
            kind=info.kind,
            name=display_name(info.kind, namespace=ns, pod=name, pod_uid=info.pod_uid,
                              unit=info.unit, runtime=info.runtime,
                              container_id=info.container_id, path=info.path),
            cgroup_id=cgroup_id,
            cgroup_path=info.path,
            namespace=ns,
            pod=name,
            pod_uid=info.pod_uid,
            qos=info.qos,
            container_id=info.container_id,
            runtime=info.runtime,
            service_account=pod.service_account if pod is not None else "",
            labels=pod.labels if pod is not None else (),
            unit=info.unit,
            trust_domain=self.trust_domain,
        )

    # -- processes -------------------------------------------------------------

    def process(self, pid: int) -> ProcessInfo | None:
        """Details of a process (or thread) id; kept after it exits if it was seen alive."""
        return self._processes.get(pid)

    def process_cgroup(self, pid: int) -> str | None:
        """A process's cgroup v2 path relative to the root (`0::` of /proc/<pid>/cgroup)."""
        return process_cgroup(pid)
