"""The node agent: composes the parts and runs them until told to stop.

`manul run` builds a `Daemon` from its flags. Host mode (the default) reads
the registry from a folder of YAML and attributes workloads from cgroup
paths; cluster mode adds pods from the Kubernetes API. One agent, composed
of one of each:

- one registry source (`FileSource` or `KubeSource`), polled here;
- one policy set (`--policies DIR` on a host, else the registry's Policy
  records), read once per change and shared: the kernel sandboxes of the
  registry's sandboxed agents and the ext_authz decision point enforce it;
- one audit log, one HTTP server (/metrics, /healthz, /inventory, the
  decision point's JWKS), one set of node facts about callers (`NodeFacts`:
  the pinned quarantine map, read back every second).

Also the kernel feature probe (reported, and exported as
`manul_mechanism_info`), TLS discovery with classification and optional
quarantine of shadow agents, and the behavioural baseline (agent/baseline:
each registered agent's normal, learned in the kernel, and its anomalies,
which set the decision point's `context.anomaly_level`). The decision point
runs with `--policies` and in cluster mode.
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

from agent.baseline.service import Anomaly, BaselineConfig, BaselineService, Mode
from agent.baseline.store import DEFAULT_STATE_DIR
from agent.decision.facts import NodeFacts
from agent.decision.server import DEFAULT_SOCKET, DecisionServer, ServerConfig
from agent.decision.sources import Sources
from agent.discovery.publish import ClusterView
from agent.discovery.quarantine import Quarantine, addr_key, pinned_cgroups, resolve_hosts
from agent.discovery.sensor import TlsSensor
from agent.discovery.service import Discovery, Observation
from agent.errors import ConfigError, ManulError
from agent.kernel import RingBuffer, fs
from agent.kernel.fs import PIN_ROOT
from agent.kernel.probe import Feature, Mechanism, choose_mechanisms, safe_probe_all
from agent.registry import Agent, FileSource, Registry
from agent.registry.kube import KubeSource
from agent.registry.policyset import (
    CachedPolicySet,
    PolicyFolder,
    PolicyRecords,
    PolicySet,
    PolicySetSource,
)
from agent.sandbox.counters import DEFAULT_EVENT_BURST, DEFAULT_EVENT_RATE, DEFAULT_NODE_RATE
from agent.sandbox.service import SandboxService
from agent.telemetry import metrics
from agent.telemetry.audit import DEFAULT_BACKUPS, DEFAULT_MAX_BYTES, AuditLog
from agent.telemetry.http import HttpServer
from agent.telemetry.throttle import DEFAULT_BURST, DEFAULT_RATE, DEFAULT_WINDOW, RecordThrottle
from agent.telemetry.tracing import provider_from_env
from agent.workloads import KubePods, PodSource, StaticPods, Workload, WorkloadResolver

log = logging.getLogger(__name__)


@dataclass
class DaemonConfig:
    registry: Path | None  # a folder of YAML (host mode); None with `kubernetes`
    listen: str = "127.0.0.1:9464"  # "" for no HTTP endpoint
    audit_log: str | None = None  # None: stdout is the console; audit goes to a file or off
    audit_max_bytes: int = DEFAULT_MAX_BYTES  # rotated past this size
    audit_backups: int = DEFAULT_BACKUPS  # rotated files kept
    # storms (agent.telemetry.throttle): repeats within `audit_window` s become one
    # record; each workload may write `audit_rate` records a second (`audit_burst`)
    audit_window: float = DEFAULT_WINDOW
    audit_rate: float = DEFAULT_RATE
    audit_burst: int = DEFAULT_BURST
    # each sandboxed workload's kernel event budget (per CPU; 0: none)
    event_rate: int = DEFAULT_EVENT_RATE
    event_burst: int = DEFAULT_EVENT_BURST
    event_node_rate: int = DEFAULT_NODE_RATE  # ... and the node's, in all
    quarantine_shadow: bool = False
    quarantine_allow: list[str] = field(default_factory=list)
    trust_domain: str = "cluster.local"
    kubernetes: bool = False  # cluster mode: records and pods from the API server
    node: str = ""  # this node's name (cluster mode); default $NODE_NAME, else hostname
    pods_file: Path | None = None  # pods from a file (kubectl get pods -o yaml), offline
    sandbox: bool = True  # enforce the registry's sandboxes (Agent spec.sandbox)
    # The policy set, for the kernel and the gateway alike: a folder (host
    # mode); None: the registry's Policy records.
    policies: Path | None = None
    authz_socket: Path = DEFAULT_SOCKET
    authz_socket_group: int | None = None  # gid that may use the socket (the gateway's)
    authz_workers: int = 0  # decision worker processes (0: decide in the agent's process)
    pin_root: Path = PIN_ROOT  # bpffs directory of the pinned state (sandbox, quarantine)
    authz: bool = True  # False: never serve ext_authz
    baseline: Mode = Mode.REGISTERED  # whose behaviour is learned (off, registered, all)
    baseline_learn: float = 1800.0  # seconds of learning per agent before detection
    state_dir: Path = DEFAULT_STATE_DIR  # where baselines are kept across restarts
    cluster_view: bool = True  # cluster mode: publish DiscoveredAgents and Agent status

    @property
    def decision_point(self) -> bool:
        """Serve ext_authz: with a policy folder, and in cluster mode (its Policy
        records), unless turned off."""
        return self.authz and (self.policies is not None or self.kubernetes)


def changes(before: dict[str, str], after: dict[str, str]) -> dict[str, list[str]]:
    """Names added, removed and changed between two readings (records, files)."""
    return {"added": sorted(after.keys() - before.keys()),
            "removed": sorted(before.keys() - after.keys()),
            "changed": sorted(k for k in before.keys() & after.keys() if before[k] != after[k])}


def _files(ps: PolicySet | None) -> dict[str, str]:
    if ps is None:
        return {}
    out = {s.name: s.text for s in ps.sources}
    if ps.entities is not None:
        out[ps.entities.name] = ps.entities.text
    return out


class Daemon:
    def __init__(self, config: DaemonConfig,
                 on_observation: Callable[[Observation], None] | None = None,
                 on_anomaly: Callable[[Anomaly], None] | None = None) -> None:
        self.config = config
        self.on_observation = on_observation
        self.stop_event = threading.Event()
        self.features: list[Feature] = []
        self.mechanisms: list[Mechanism] = []
        self.source: FileSource | KubeSource
        pods: PodSource | None = None
        self.view: ClusterView | None = None
        if config.kubernetes:
            self.source = KubeSource()
            node = config.node or os.environ.get("NODE_NAME") or socket.gethostname()
            if config.cluster_view:  # the same client as the registry's informers
                self.view = ClusterView(self.source.api, node)
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
        try:
            throttle = RecordThrottle(config.audit_window, config.audit_rate,
                                      config.audit_burst)
        except ValueError as e:
            raise ConfigError(f"audit record limits: {e}") from e
        self.audit = (AuditLog(config.audit_log, max_bytes=config.audit_max_bytes,
                               backups=config.audit_backups, throttle=throttle)
                      if config.audit_log else None)
        for network in config.quarantine_allow:
            addr_key(network)  # ConfigError now, before anything is loaded or pinned
        self.quarantine = (Quarantine(root=config.pin_root, event_rate=config.event_rate,
                                      event_burst=config.event_burst,
                                      node_rate=config.event_node_rate)
                           if config.quarantine_shadow else None)
        root_id = fs.cgroup_id(fs.cgroup2_root()[0])
        own = fs.cgroup_id(fs.resolve_cgroup(fs.cgroup_of_pid(os.getpid())))
        self.protect = frozenset({root_id, own})  # never quarantined nor watched
        self.discovery = Discovery(
            self.registry, self.resolver, audit=self.audit, quarantine=self.quarantine,
            quarantine_shadow=config.quarantine_shadow,
            protect_cgroups=self.protect, on_server_name=self._server_name)
        # The one policy set: both enforcement points read this one reading.
        source: PolicySetSource = (PolicyFolder(config.policies) if config.policies is not None
                                   else PolicyRecords(self.registry))
        self.policy_set = CachedPolicySet(source, on_change=self._policies_changed,
                                          on_error=self._policies_failed)
        self.sandbox = (SandboxService(self.registry, self.resolver, self.audit,
                                       policies=self.policy_set, root=config.pin_root,
                                       event_rate=config.event_rate,
                                       event_burst=config.event_burst,
                                       event_node_rate=config.event_node_rate)
                        if config.sandbox else None)
        # What only this node knows about callers, for the decision point.
        self.facts = NodeFacts()
        self.baseline = (BaselineService(
            self.registry, self.resolver,
            config=BaselineConfig(mode=config.baseline, learn_seconds=config.baseline_learn,
                                  state_dir=config.state_dir),
            audit=self.audit, facts=self.facts, protect_cgroups=self.protect,
            quarantine=self._quarantine_workload, on_anomaly=on_anomaly)
            if config.baseline is not Mode.OFF else None)
        self.http = HttpServer(config.listen) if config.listen else None
        if self.http is not None:
            self.http.add_route("/healthz", self._healthz)
            self.http.add_route("/livez", self._livez)
            self.http.add_route("/inventory",
                                lambda: (200, self.discovery.inventory.to_json()))
        self.authz: DecisionServer | None = None
        # spans over OTLP when the OpenTelemetry environment asks (ConfigError if it is wrong)
        self.tracing = provider_from_env()
        if config.decision_point:
            self.authz = DecisionServer(
                ServerConfig(socket=config.authz_socket, http="",
                             socket_group=config.authz_socket_group,
                             workers=config.authz_workers), facts=self.facts,
                sources=Sources(self.source, self.policy_set, poll_registry=False),
                http=self.http, audit=self.audit, tracer_provider=self.tracing)
        self.started_at = 0.0
        self._exported: dict[str, int] = {}
        # per BPF object: events delivered from its ring buffer and its error
        # counters (ringbuf_full: events lost), as last exported
        self.ring_stats: dict[str, dict[str, Any]] = {}
        self._heartbeat = 0.0  # monotonic: the main loop's last turn (/livez)
        self._drop_logged: dict[str, float] = {}  # object -> when a drop may be logged again

    def registry(self) -> Registry:
        return self.source.registry

    def probe(self) -> None:
        self.features, error = safe_probe_all()
        if error:
            log.error("kernel probe failed: %s", error)
        self.mechanisms = choose_mechanisms(self.features)
        if self.baseline is None:
            self.mechanisms = [m if m.concern != "behaviour" else
                               Mechanism("behaviour", "off", False, "--baseline off")
                               for m in self.mechanisms]
        for m in self.mechanisms:
            metrics.MECHANISM.labels(concern=m.concern, mechanism=m.mechanism).set(1)
        if self.baseline is not None:  # the probe said whether trampolines load
            self.baseline.sensor.trampolines = any(f.key == "fentry" and f.available
                                                   for f in self.features)

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
            "policies": {"source": self.policy_set.origin},
            "quarantined_callers": sorted(self.facts.quarantined()),
            "discovery": vars(self.discovery.stats),
            "kernel": self.ring_stats,  # per BPF object: delivered, errors, ringbuf_full (lost)
            "authz": authz,
            "baseline": self.baseline.status() if self.baseline is not None else None,
            "sandbox": ({"status": self.sandbox.status().to_json(),
                         "errors": self.sandbox.errors,
                         # counted in the kernel: exact, delivered or not
                         "counts": (self.sandbox.counters.totals.to_json()
                                    if self.sandbox.counters is not None else None)}
                        if self.sandbox is not None and self.sandbox.maps is not None
                        else None),
            "audit": self._audit_health(),
        }

    def _livez(self) -> tuple[int, Any]:
        """Liveness (the chart's liveness and startup probes): the main loop turned
        within the last 30 s. Not readiness: a decision point without policies is
        alive, and restarting it would not help (that is /healthz)."""
        age = time.monotonic() - self._heartbeat if self._heartbeat else None
        ok = self.started_at > 0 and age is not None and age < 30.0 \
            and not self.stop_event.is_set()
        return (200 if ok else 503), {"ok": ok, "loop_age_s": round(age, 1) if age else None}

    def _audit_health(self) -> dict[str, Any] | None:
        if self.audit is None:
            return None
        st = self.audit.throttle.stats
        return {"errors": self.audit.errors, "rotations": self.audit.rotations,
                "records_aggregated": st.aggregated, "records_suppressed": st.suppressed,
                "pending": self.audit.throttle.pending()}

    def _gateway_allow(self) -> list[str]:
        hosts = [h for p in self.registry().providers if p.gateway for h in p.hosts]
        return resolve_hosts(hosts) + list(self.config.quarantine_allow)

    def run(self, ready: Callable[[tuple[str, int] | None], None] | None = None) -> None:
        """Run until `stop_event` is set (or SIGINT/SIGTERM through the CLI)."""
        self.probe()
        if self.config.policies is not None and self.registry().policies:
            log.warning("the registry's %d Policy records are not read: the policy set is "
                        "the folder `%s` (--policies)", len(self.registry().policies),
                        self.config.policies)
        address = self.http.start() if self.http is not None else None
        if self.authz is not None:
            self.authz.start()
            log.info("ext_authz decisions on unix:%s", self.config.authz_socket)
        sandbox_thread: threading.Thread | None = None
        baseline_thread: threading.Thread | None = None
        if self.view is not None:
            threading.Thread(target=self.view.run, args=(self.stop_event,),
                             name="cluster-view", daemon=True).start()
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
            if self.baseline is not None:
                self.baseline.start()
                baseline_thread = threading.Thread(target=self._baseline_loop,
                                                   name="baseline", daemon=True)
                baseline_thread.start()
            with TlsSensor() as sensor:
                self.started_at = time.time()
                if ready:
                    ready(address)
                self._loop(sensor)
        finally:
            self.stop_event.set()
            if sandbox_thread is not None:
                sandbox_thread.join(5)
            if baseline_thread is not None:
                baseline_thread.join(5)
            if self.baseline is not None:
                self.baseline.close()  # saves what was learned
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
            if isinstance(self.source, KubeSource):
                self.source.stop()
            if self.tracing is not None:
                self.tracing.shutdown()  # exports what is still batched

    def _loop(self, sensor: TlsSensor) -> None:
        last_poll = time.monotonic()
        self._export_counters(sensor)  # /healthz has every object's counters from the start
        while not self.stop_event.is_set():
            self._heartbeat = time.monotonic()
            for hs in sensor.poll(0.1):
                obs = self.discovery.handle(hs)
                if obs is not None and self.baseline is not None:
                    caller = obs.verdict.caller
                    self.baseline.observe(
                        agent=caller if isinstance(caller, Agent) else None,
                        workload=obs.workload, provider=obs.match.provider, sni=obs.sni,
                        destination=f"{hs.dst}:{hs.dport}", pid=hs.tgid, process=obs.exe,
                        ja4=obs.ja4, gateway=obs.match.gateway)
                if obs is not None and self.view is not None:
                    self.view.observe(obs)
                if obs is not None and self.on_observation is not None:
                    self.on_observation(obs)
            if self.quarantine is not None:
                self.quarantine.refusals(on=self._refused)
            now = time.monotonic()
            if now - last_poll >= 1.0:
                last_poll = now
                if self._poll_registry() and self.quarantine is not None:
                    self.quarantine.set_allowed(self._gateway_allow())
                self.resolver.refresh()
                self.sync_facts()
                self._export_counters(sensor)
                if self.audit is not None:
                    self.audit.tick()  # aggregated records whose window closed
        self._export_counters(sensor)  # the last second's counts, for whoever reports them

    # -- the audit trail of what the agent enforces ------------------------------

    def _registry_origin(self) -> str:
        return "kubernetes" if self.config.kubernetes else f"folder `{self.config.registry}`"

    def _poll_registry(self) -> bool:
        """Reload the registry; audit a new snapshot (what changed, digests before
        and after) or a failed reload (the snapshot in force stays)."""
        before, error = self.source.registry, self.source.last_error
        changed = self.source.poll()
        if self.audit is None:
            return changed
        if changed and self.source.registry.digest() != before.digest():
            after = self.source.registry
            self.audit.write("registry-reloaded", source=self._registry_origin(),
                             digest_before=before.digest(), digest_after=after.digest(),
                             **changes(before.contents(), after.contents()))
        elif self.source.last_error and self.source.last_error != error:
            self.audit.write("registry-reload-failed", source=self._registry_origin(),
                             error=self.source.last_error, digest_in_force=before.digest())
        return changed

    def _policies_changed(self, previous: PolicySet | None, new: PolicySet) -> None:
        if self.audit is None:
            return
        self.audit.write("policy-set-loaded", source=new.origin,
                         digest_before=previous.digest() if previous is not None else None,
                         digest_after=new.digest(), files=len(new),
                         **changes(_files(previous), _files(new)))

    def _policies_failed(self, message: str) -> None:
        if self.audit is not None:
            self.audit.write("policy-set-failed", source=self.policy_set.origin, error=message)

    def sync_facts(self) -> None:
        """The decision point's `context.quarantined`, from the pinned quarantine
        map: every registered caller one of whose workloads' cgroups is in it."""
        ids = (self.quarantine.cgroups() if self.quarantine is not None
               and self.quarantine.ring is not None else pinned_cgroups(self.config.pin_root))
        keys: set[str] = set()
        reg = self.registry()
        for cg in ids or ():
            w = self.resolver.resolve(cg)
            rec = reg.match_any(w.identities()) if w is not None else None
            if rec is not None:
                keys.add(rec.meta.key)
        before = self.facts.quarantined()
        if before != keys:
            self.facts.set_quarantined_keys(frozenset(keys))
            for key in sorted(keys - before):
                log.warning("caller `%s` is quarantined: the decision point sees "
                            "context.quarantined", key)
                if self.audit is not None:
                    self.audit.write("caller-quarantined", caller=key)
            for key in sorted(before - keys):
                log.warning("caller `%s` is released from quarantine", key)
                if self.audit is not None:
                    self.audit.write("caller-released", caller=key)

    def _sandbox_loop(self) -> None:
        """Reconcile sandboxes with the registry and drain their audit trail."""
        assert self.sandbox is not None
        while not self.stop_event.is_set():
            try:
                self.sandbox.poll(0.5)
            except ManulError as e:
                log.error("sandbox: %s", e)
                self.stop_event.wait(2.0)

    def _server_name(self, hs: Any, sni: str) -> None:
        if self.baseline is not None:
            self.baseline.server_name(hs.cgroup_id, hs.tgid, hs.dst, sni)

    def _baseline_loop(self) -> None:
        """Learn and judge the baseline's novel events; housekeeping once a second."""
        assert self.baseline is not None
        last = 0.0
        while not self.stop_event.is_set():
            try:
                self.baseline.poll(0.2)
                if time.monotonic() - last >= 1.0:
                    last = time.monotonic()
                    self.baseline.tick()
            except ManulError as e:
                log.error("baseline: %s", e)
                self.stop_event.wait(1.0)

    def _quarantine_workload(self, w: Workload) -> bool:
        """Quarantine `w` for the baseline (an Agent's `onAnomaly: quarantine`); the
        quarantine programs are loaded on first use when --quarantine-shadow did not."""
        if w.cgroup_id in self.protect or w.cgroup_path in ("", "/"):
            log.warning("not quarantining %s: its cgroup is protected", w.name)
            return False
        if self.quarantine is None:
            q = Quarantine(root=self.config.pin_root, event_rate=self.config.event_rate,
                           event_burst=self.config.event_burst,
                           node_rate=self.config.event_node_rate)
            q.start()
            q.set_allowed(self._gateway_allow())
            self.quarantine = q
        self.quarantine.add(w.cgroup_id)
        log.warning("workload `%s` quarantined on anomaly: egress only to the gateway", w.name)
        return True

    def _export_counters(self, sensor: TlsSensor) -> None:
        """BPF-side error counters and ring-buffer totals of every object (TLS,
        sandbox, quarantine), as Prometheus counters: nothing is lost silently."""
        rings: list[tuple[str, str, RingBuffer]] = [("tls", "tls_events", sensor.ringbuf)]
        trail = self.sandbox.trail if self.sandbox is not None else None
        if trail is not None:
            rings.append(("sandbox", "sandbox_events", trail.ring))
        if self.quarantine is not None and self.quarantine.ring is not None:
            rings.append(("quarantine", "quarantine_events", self.quarantine.ring))
        if self.baseline is not None and self.baseline.sensor.started:
            rings.append(("baseline", "bl_events", self.baseline.sensor.ringbuf))
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
                        metrics.RINGBUF_DROPPED.labels(ringbuf=name).inc(delta)
                        if time.monotonic() >= self._drop_logged.get(obj, 0.0):
                            self._drop_logged[obj] = time.monotonic() + 60.0
                            log.warning("%s ring buffer full: %d events lost so far", obj,
                                        value)
            consumed = ring.consumed
            metrics.RINGBUF_EVENTS.labels(ringbuf=name).inc(
                max(0, consumed - self._exported.get(f"{name}:consumed", 0)))
            self._exported[f"{name}:consumed"] = consumed
        if self.quarantine is not None and self.quarantine.ring is not None:
            try:  # its refusals, counted in the kernel; what its budgets held back
                self.quarantine.export(self._name, self.audit)
            except ManulError as e:
                log.error("quarantine counters: %s", e)

    def _name(self, cgroup_id: int) -> str:
        w = self.resolver.resolve(cgroup_id)
        return w.name if w is not None else f"cgroup:{cgroup_id}"

    def _refused(self, r: Any) -> None:
        if self.audit is not None:
            name = self._name(r.cgroup_id)
            self.audit.event("quarantine-refused", budget=name,
                             key=(r.cgroup_id, r.dst, r.dport), workload=name,
                             cgroup_id=r.cgroup_id, pid=r.pid, process=r.comm,
                             destination=f"{r.dst}:{r.dport}")
