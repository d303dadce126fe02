"""The node agent: composes the parts and runs them until told to stop.

`manul run` builds a `Daemon` from its flags. Host mode (the default) reads
the registry from a folder of YAML and attributes workloads from cgroup
paths; cluster mode adds pods from the Kubernetes API. What runs today:
the kernel feature probe (reported, and exported as `manul_mechanism_info`),
the registry watch, TLS discovery with classification and optional
quarantine of shadow agents, kernel sandboxes for the registry's sandboxed
agents (reconciled as records and workloads change), the HTTP endpoint (/metrics, /healthz,
/inventory), and, given gateway policies, the ext_authz decision point on
its Unix socket, which reads this node's facts about callers (`NodeFacts`).
"""

from __future__ import annotations

import logging
import os
import socket
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from agent.decision.facts import NodeFacts
from agent.decision.server import DEFAULT_SOCKET, DecisionServer, ServerConfig
from agent.discovery.quarantine import Quarantine, addr_key, resolve_hosts
from agent.discovery.sensor import TlsSensor
from agent.discovery.service import Discovery, Observation
from agent.errors import ConfigError, ManulError
from agent.kernel import RingBuffer, fs
from agent.kernel.probe import Feature, Mechanism, choose_mechanisms, safe_probe_all
from agent.registry import FileSource, Registry
from agent.registry.kube import KubeSource
from agent.sandbox.service import SandboxService
from agent.telemetry import metrics
from agent.telemetry.audit import AuditLog
from agent.telemetry.http import HttpServer
from agent.workloads import KubePods, PodSource, StaticPods, WorkloadResolver

log = logging.getLogger(__name__)


@dataclass
class DaemonConfig:
    registry: Path | None  # a folder of YAML (host mode); None with `kubernetes`
    listen: str = "127.0.0.1:9464"  # "" for no HTTP endpoint
    audit_log: str | None = None  # None: stdout is the console; audit goes to a file or off
    quarantine_shadow: bool = False
    quarantine_allow: list[str] = field(default_factory=list)
    trust_domain: str = "cluster.local"
    kubernetes: bool = False  # cluster mode: records and pods from the API server
    node: str = ""  # this node's name (cluster mode); default $NODE_NAME, else hostname
    pods_file: Path | None = None  # pods from a file (kubectl get pods -o yaml), offline
    sandbox: bool = True  # enforce the registry's sandboxes (Agent spec.sandbox)
    policies: Path | None = None  # gateway Cedar policies: also serve ext_authz decisions
    authz_socket: Path = DEFAULT_SOCKET


class Daemon:
    def __init__(self, config: DaemonConfig,
                 on_observation: Callable[[Observation], None] | None = None) -> None:
        self.config = config
        self.on_observation = on_observation
        self.stop_event = threading.Event()
        self.features: list[Feature] = []
        self.mechanisms: list[Mechanism] = []
        self.source: FileSource | KubeSource
        pods: PodSource | None = None
        if config.kubernetes:
            self.source = KubeSource()
            node = config.node or os.environ.get("NODE_NAME") or socket.gethostname()
            kube_pods = KubePods(node)
            kube_pods.start()
            pods = kube_pods
        elif config.registry is not None:
            self.source = FileSource(config.registry)
        else:
            raise ConfigError("give a registry folder (host mode) or --kubernetes")
        if config.pods_file is not None:
            pods = StaticPods.from_file(config.pods_file)
        self.pods = pods
        self.resolver = WorkloadResolver(pods=pods, trust_domain=config.trust_domain)
        self.audit = AuditLog(config.audit_log) if config.audit_log else None
        for network in config.quarantine_allow:
            addr_key(network)  # ConfigError now, before anything is loaded or pinned
        self.quarantine = Quarantine() if config.quarantine_shadow else None
        root_id = fs.cgroup_id(fs.cgroup2_root()[0])
        own = fs.cgroup_id(fs.resolve_cgroup(fs.cgroup_of_pid(os.getpid())))
        self.discovery = Discovery(
            self.registry, self.resolver, audit=self.audit, quarantine=self.quarantine,
            quarantine_shadow=config.quarantine_shadow,
            protect_cgroups=frozenset({root_id, own}))
        self.sandbox = (SandboxService(self.registry, self.resolver, self.audit)
                        if config.sandbox else None)
        # What only this node knows about callers, for the decision point.
        self.facts = NodeFacts()
        self.authz: DecisionServer | None = None
        if config.policies is not None:
            if config.registry is None:
                raise ConfigError("the decision point reads the registry from a folder; "
                                  "give --registry with --policies")
            self.authz = DecisionServer(
                ServerConfig(registry=config.registry, policies=config.policies,
                             socket=config.authz_socket, audit_log=config.audit_log),
                facts=self.facts)
        self.http = HttpServer(config.listen) if config.listen else None
        if self.http is not None:
            self.http.add_route("/healthz", self._healthz)
            self.http.add_route("/inventory",
                                lambda: (200, self.discovery.inventory.to_json()))
        self.started_at = 0.0
        self._exported: dict[str, int] = {}
        # per BPF object: events delivered from its ring buffer and its error
        # counters (ringbuf_full: events lost), as last exported
        self.ring_stats: dict[str, dict[str, Any]] = {}

    def registry(self) -> Registry:
        return self.source.registry

    def probe(self) -> None:
        self.features, error = safe_probe_all()
        if error:
            log.error("kernel probe failed: %s", error)
        self.mechanisms = choose_mechanisms(self.features)
        for m in self.mechanisms:
            metrics.MECHANISM.labels(concern=m.concern, mechanism=m.mechanism).set(1)

    def _healthz(self) -> tuple[int, Any]:
        ok = not self.stop_event.is_set() and self.started_at > 0
        authz: dict[str, Any] | None = None
        if self.authz is not None:
            serving, authz = self.authz.health_detail()
            ok = ok and serving  # no policy set, or the socket cannot accept
        return (200 if ok else 503), {
            "ok": ok,
            "uptime_s": round(time.time() - self.started_at, 1) if self.started_at else 0,
            "mechanisms": [{"concern": m.concern, "mechanism": m.mechanism,
                            "degraded": m.degraded} for m in self.mechanisms],
            "registry": {"source": "kubernetes" if self.config.kubernetes
                         else str(self.config.registry), "error": self.source.last_error,
                         "agents": len(self.registry().agents)},
            "discovery": vars(self.discovery.stats),
            "kernel": self.ring_stats,  # per BPF object: delivered, errors, ringbuf_full (lost)
            "authz": authz,
            "sandbox": ({"status": self.sandbox.status().to_json(),
                         "errors": self.sandbox.errors} if self.sandbox is not None
                        and self.sandbox.maps is not None else None),
        }

    def _gateway_allow(self) -> list[str]:
        hosts = [h for p in self.registry().providers if p.gateway for h in p.hosts]
        return resolve_hosts(hosts) + list(self.config.quarantine_allow)

    def run(self, ready: Callable[[tuple[str, int] | None], None] | None = None) -> None:
        """Run until `stop_event` is set (or SIGINT/SIGTERM through the CLI)."""
        self.probe()
        address = self.http.start() if self.http is not None else None
        if self.authz is not None:
            self.authz.start()
            log.info("ext_authz decisions on unix:%s", self.config.authz_socket)
        sandbox_thread: threading.Thread | None = None
        try:
            if self.sandbox is not None:
                status = self.sandbox.start()
                log.info("sandbox: %s", status.to_json())
                sandbox_thread = threading.Thread(target=self._sandbox_loop, name="sandbox",
                                                  daemon=True)
                sandbox_thread.start()
            if self.quarantine is not None:
                actions = self.quarantine.start()
                self.quarantine.set_allowed(self._gateway_allow())
                log.info("quarantine %s; allowed: %s", actions, self.quarantine.allowed())
            with TlsSensor() as sensor:
                self.started_at = time.time()
                if ready:
                    ready(address)
                self._loop(sensor)
        finally:
            self.stop_event.set()
            if sandbox_thread is not None:
                sandbox_thread.join(5)
            if self.sandbox is not None:
                self.sandbox.close()  # enforcement stays pinned
            if self.authz is not None:
                self.authz.stop()
            if self.http is not None:
                self.http.stop()
            if self.quarantine is not None:
                self.quarantine.close()
            if self.audit is not None:
                self.audit.close()
            if isinstance(self.pods, KubePods):
                self.pods.stop()

    def _loop(self, sensor: TlsSensor) -> None:
        last_poll = time.monotonic()
        self._export_counters(sensor)  # /healthz has every object's counters from the start
        while not self.stop_event.is_set():
            for hs in sensor.poll(0.1):
                obs = self.discovery.handle(hs)
                if obs is not None and self.on_observation is not None:
                    self.on_observation(obs)
            if self.quarantine is not None:
                self.quarantine.refusals(on=self._refused)
            now = time.monotonic()
            if now - last_poll >= 1.0:
                last_poll = now
                if self.source.poll() and self.quarantine is not None:
                    self.quarantine.set_allowed(self._gateway_allow())
                self.resolver.refresh()
                self._export_counters(sensor)
        self._export_counters(sensor)  # the last second's counts, for whoever reports them

    def _sandbox_loop(self) -> None:
        """Reconcile sandboxes with the registry and drain their audit trail."""
        assert self.sandbox is not None
        while not self.stop_event.is_set():
            try:
                self.sandbox.poll(0.5)
            except ManulError as e:
                log.error("sandbox: %s", e)
                self.stop_event.wait(2.0)

    def _export_counters(self, sensor: TlsSensor) -> None:
        """BPF-side error counters and ring-buffer totals of every object (TLS,
        sandbox, quarantine), as Prometheus counters: nothing is lost silently."""
        rings: list[tuple[str, str, RingBuffer]] = [("tls", "tls_events", sensor.ringbuf)]
        trail = self.sandbox.trail if self.sandbox is not None else None
        if trail is not None:
            rings.append(("sandbox", "sandbox_events", trail.ring))
        if self.quarantine is not None and self.quarantine.ring is not None:
            rings.append(("quarantine", "quarantine_events", self.quarantine.ring))
        for obj, name, ring in rings:
            errors = ring.errors()
            self.ring_stats[obj] = {"ringbuf": name, "delivered": ring.consumed, **errors}
            for kind, value in errors.items():
                key = f"{obj}:{kind}"
                delta = value - self._exported.get(key, 0)
                if delta > 0:
                    metrics.BPF_ERRORS.labels(object=obj, kind=kind).inc(delta)
                    self._exported[key] = value
                    if kind == "ringbuf_full":
                        log.warning("%s ring buffer full: %d events lost so far", obj, value)
            consumed = ring.consumed
            metrics.RINGBUF_EVENTS.labels(ringbuf=name).inc(
                max(0, consumed - self._exported.get(f"{name}:consumed", 0)))
            self._exported[f"{name}:consumed"] = consumed

    def _refused(self, r: Any) -> None:
        if self.audit is not None:
            self.audit.write("quarantine-refused", cgroup_id=r.cgroup_id, pid=r.pid,
                             process=r.comm, destination=f"{r.dst}:{r.dport}")
