"""The discovery service: handshake -> ClientHello -> provider -> workload -> verdict.

Fed by `TlsSensor` (or by tests with recorded handshakes), it parses each
ClientHello, matches its SNI against the provider catalog (built-ins plus
the registry's `LLMProvider` records), attributes it to a workload, and
classifies it. Every LLM-provider handshake updates the inventory and the
metrics; the first one of each (workload, provider) pair is audited; a
shadow workload is quarantined when asked to. Handshakes to other hosts are
counted and otherwise ignored; unparseable ones are counted as errors.
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field

from agent.discovery.catalog import Catalog, Match
from agent.discovery.classify import Classification, Verdict, classify
from agent.discovery.clienthello import ClientHello, parse_client_hello
from agent.discovery.errors import ClientHelloError
from agent.discovery.handshake import Handshake
from agent.discovery.inventory import Entry, Inventory
from agent.discovery.ja4 import ja4 as ja4_of
from agent.discovery.quarantine import Quarantine
from agent.errors import ManulError
from agent.registry import Registry
from agent.telemetry import metrics
from agent.telemetry.audit import AuditLog
from agent.workloads import ProcessInfo, Workload, WorkloadResolver

log = logging.getLogger(__name__)


@dataclass(frozen=True, slots=True)
class Observation:
    """One classified LLM-provider handshake."""

    handshake: Handshake
    hello: ClientHello
    sni: str
    ja4: str
    match: Match
    verdict: Verdict
    workload: Workload | None
    process: ProcessInfo | None  # only on the first handshake of a process
    exe: str  # the process's executable (or comm when unknown)
    entry_key: str
    first_of_pair: bool
    delay_ms: float  # kernel capture -> classified

    @property
    def classification(self) -> Classification:
        return self.verdict.classification


@dataclass
class Stats:
    handshakes: int = 0
    llm: int = 0
    other_hosts: int = 0
    no_sni: int = 0
    parse_errors: int = 0
    quarantined: int = 0
    by_class: dict[str, int] = field(default_factory=dict)


class Discovery:
    def __init__(self, registry: Callable[[], Registry], resolver: WorkloadResolver, *,
                 audit: AuditLog | None = None, quarantine: Quarantine | None = None,
                 quarantine_shadow: bool = False, protect_cgroups: frozenset[int] = frozenset(),
                 on_server_name: Callable[[Handshake, str], None] | None = None) -> None:
        self._registry = registry
        self.resolver = resolver
        self.audit = audit
        self.quarantine = quarantine
        self.quarantine_shadow = quarantine_shadow and quarantine is not None
        self._protect = protect_cgroups  # never quarantined (the root, the agent itself)
        # every handshake's server name, LLM provider or not (the baseline names peers)
        self.on_server_name = on_server_name
        self.inventory = Inventory()
        self.stats = Stats()
        self._catalog: tuple[Registry, Catalog] | None = None
        self._lock = threading.Lock()

    def catalog(self) -> Catalog:
        reg = self._registry()
        if self._catalog is None or self._catalog[0] is not reg:
            self._catalog = (reg, Catalog.with_records(reg.providers))
        return self._catalog[1]

    def handle(self, hs: Handshake) -> Observation | None:
        """Classify one handshake; None when it is not a call to an LLM provider."""
        with self._lock:
            return self._handle(hs)

    def _handle(self, hs: Handshake) -> Observation | None:
        self.stats.handshakes += 1
        try:
            hello = parse_client_hello(hs.data)
        except ClientHelloError as e:
            self.stats.parse_errors += 1
            log.debug("unparseable ClientHello from cgroup %d: %s", hs.cgroup_id, e)
            return None
        sni = hello.server_name
        if not sni:
            self.stats.no_sni += 1
            return None
        if self.on_server_name is not None:
            self.on_server_name(hs, sni)
        match = self.catalog().match(sni)
        if match is None:
            self.stats.other_hosts += 1
            return None
        self.stats.llm += 1
        registry = self._registry()
        workload = self.resolver.resolve(hs.cgroup_id, hs.tgid)
        verdict = classify(workload, match, registry)
        fp = ja4_of(hello)
        entry = self._entry(hs, workload, verdict)
        # Process details (psutil, /proc reads) once per process and workload.
        known = self.inventory.process_exe(entry.key, hs.tgid)
        process = self.resolver.process(hs.tgid) if hs.tgid and known is None else None
        exe = known or (process.exe if process and process.exe else "") or hs.comm
        entry, new_pair = self.inventory.record(
            entry, provider=match.provider, sni=sni, ja4=fp, pid=hs.tgid, exe=exe,
            when=hs.seen_at, classification=verdict.classification)
        cls = verdict.classification
        self.stats.by_class[cls] = self.stats.by_class.get(cls, 0) + 1
        metrics.LLM_HANDSHAKES.labels(classification=str(cls), provider=match.provider).inc()
        metrics.SHADOW_WORKLOADS.set(self.inventory.count(Classification.SHADOW))
        if new_pair and self.audit is not None:  # within the workload's record budget
            self.audit.event(
                "llm-provider-first-seen", budget=entry.workload,
                key=(entry.key, match.provider, sni), workload=entry.workload,
                workload_kind=entry.kind,
                namespace=entry.namespace, pod=entry.pod, service_account=entry.service_account,
                unit=entry.unit, cgroup=entry.cgroup, classification=str(cls),
                agent=entry.agent, provider=match.provider, sni=sni, ja4=fp,
                pid=hs.tgid, process=exe, destination=f"{hs.dst}:{hs.dport}",
                reason=verdict.reason)
        if cls is Classification.SHADOW and self.quarantine_shadow and workload is not None:
            self._quarantine(workload, entry)
        delay = (time.clock_gettime_ns(time.CLOCK_MONOTONIC) - hs.ktime_ns) / 1e6
        return Observation(hs, hello, sni, fp, match, verdict, workload, process, exe,
                           entry.key, new_pair, delay)

    def _entry(self, hs: Handshake, w: Workload | None, v: Verdict) -> Entry:
        agent = v.caller.meta.key if v.caller else ""
        if w is None:
            key = f"unattributable:cgroup={hs.cgroup_id}"
            return Entry(key=key, workload=key, kind="unknown", cgroup=str(hs.cgroup_id),
                         agent=agent)
        return Entry(key=w.name, workload=w.name, kind=w.kind, namespace=w.namespace,
                     pod=w.pod, service_account=w.service_account, unit=w.unit,
                     cgroup=w.cgroup_path, agent=agent)

    def _quarantine(self, w: Workload, entry: Entry) -> None:
        assert self.quarantine is not None
        if entry.quarantined:
            return
        if w.cgroup_id in self._protect or w.cgroup_path in ("", "/"):
            log.warning("not quarantining %s: its cgroup is protected", w.name)
            return
        try:
            self.quarantine.add(w.cgroup_id)
        except ManulError as e:
            log.error("cannot quarantine %s: %s", w.name, e)
            return
        entry.quarantined = True
        self.stats.quarantined += 1
        if self.audit is not None:
            self.audit.write("quarantine", workload=w.name, cgroup=w.cgroup_path,
                             cgroup_id=w.cgroup_id, reason="shadow LLM caller",
                             allowed=self.quarantine.allowed())
