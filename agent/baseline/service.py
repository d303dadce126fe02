"""The baseline service: novel kernel events -> learn, or judge and report.

Fed by `BehaviourSensor`, it keeps one `Profile` per agent (registered
agents: every workload of one agent shares one baseline; with
`--baseline all`, every other workload gets its own, by workload name):

- it tells the kernel whom to watch: the topmost cgroups of each
  registered agent get that agent's scope; the agent's own cgroup and the
  root are never watched; with `all`, every other cgroup is its own scope;
- a novel event while the profile learns is added to it (and a directory
  it generalises is pushed to the kernel); after learning, the detectors
  judge it (agent/baseline/detect.py), and a finding becomes an `anomaly`
  audit record, a metric, the caller's anomaly level for the decision
  point, and — when the Agent asks `spec.baseline.onAnomaly: quarantine` —
  the workload's quarantine;
- profiles are saved under the state directory every few seconds and when
  learning ends, and seeded into the kernel again after a restart.

Thread-safe: the daemon's baseline thread calls `poll` and `tick`; the
discovery loop calls `observe` (gateway-bypass).
"""

from __future__ import annotations

import logging
import os
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass
from enum import StrEnum
from pathlib import Path
from typing import Any

from agent.baseline.catalog import credential_files
from agent.baseline.detect import Detector, Finding, PortScan, Severity, against_baseline, catalogue
from agent.baseline.events import Activity, Item, Kind
from agent.baseline.profile import Profile
from agent.baseline.sensor import BehaviourSensor, KindStats
from agent.baseline.store import DEFAULT_STATE_DIR, Store
from agent.decision.facts import ANOMALY_NONE, NodeFacts
from agent.errors import ManulError
from agent.kernel import abi
from agent.registry import Agent, Registry
from agent.registry.model import OnAnomaly
from agent.sandbox.assign import agent_topmost
from agent.telemetry import metrics
from agent.telemetry.audit import AuditLog
from agent.telemetry.ratelimit import KeyedLimiter
from agent.workloads import Workload, WorkloadResolver

log = logging.getLogger(__name__)


class Mode(StrEnum):
    OFF = "off"
    REGISTERED = "registered"  # the registry's agents
    ALL = "all"  # every workload on the node


@dataclass(frozen=True, slots=True)
class BaselineConfig:
    mode: Mode = Mode.REGISTERED
    learn_seconds: float = 1800.0
    state_dir: Path = DEFAULT_STATE_DIR
    flush_seconds: float = 5.0  # dirty profiles are saved at most this often
    level_seconds: float = 900.0  # an anomaly level falls back to none after this quiet
    records_per_minute: float = 6.0  # anomaly records per workload and detector ...
    records_burst: int = 5  # ... after a burst of this many


@dataclass(frozen=True, slots=True)
class Anomaly:
    """One finding, as reported."""

    finding: Finding
    name: str  # the profile: agent key, or workload name
    agent: str | None  # the registry key when registered
    workload: Workload | None
    record: dict[str, Any]  # the audit record (also when no audit log is kept)
    written: bool  # False: held back by the rate limit (counted)


class BaselineService:
    def __init__(self, registry: Callable[[], Registry], resolver: WorkloadResolver, *,
                 config: BaselineConfig, audit: AuditLog | None = None,
                 facts: NodeFacts | None = None, protect_cgroups: frozenset[int] = frozenset(),
                 quarantine: Callable[[Workload], bool] | None = None,
                 on_anomaly: Callable[[Anomaly], None] | None = None,
                 sensor: BehaviourSensor | None = None) -> None:
        self._registry = registry
        self.resolver = resolver
        self.config = config
        self.audit = audit
        self.facts = facts
        self.protect = protect_cgroups
        self._quarantine = quarantine
        self.on_anomaly = on_anomaly
        # hooks attached only while someone is watched (`sync`): a node without a
        # registered agent pays nothing, not even the system calls' slow path
        # (with `--baseline all` too: `start` marks the protected cgroups first, so
        # that the agent's own work while attaching is never observed)
        self.sensor = sensor or BehaviourSensor(observe_all=config.mode is Mode.ALL,
                                                attach=False)
        self.store = Store(config.state_dir)
        self.profiles: dict[str, Profile] = {}
        self._dirty: set[str] = set()
        self._agent_scope: dict[str, int] = {}  # agent key -> scope
        self._scope_name: dict[int, str] = {}  # scope -> profile name
        self._seeded: set[int] = set()
        self._watch: dict[int, int] = {}  # cgroup id -> scope (0: never), as written
        self._levels: dict[str, tuple[int, float]] = {}  # agent key -> (level, last anomaly)
        self._learning: set[str] = set()
        self._quarantined: set[int] = set()
        self._names: dict[str, str] = {}  # peer address -> the last TLS server name seen for it
        self.scan = PortScan()
        self.limiter = KeyedLimiter(config.records_per_minute / 60.0, config.records_burst)
        self._lock = threading.RLock()
        self._exported: dict[tuple[str, str], int] = {}
        self._last_flush = 0.0
        self._urgent = False  # flush at the next tick (a new profile, learning ended)
        self._last_sync = 0.0
        self._last_secrets = 0.0
        self._secrets: dict[tuple[int, int], tuple[str, str]] = {}  # (dev, ino) -> (path, what)
        self.anomalies = 0

    # -- life cycle ---------------------------------------------------------------

    def start(self) -> None:
        self.sensor.__enter__()
        for cg in self.protect:
            self.sensor.never(cg)
            self._watch[cg] = 0
        self.sync()
        self.index_secrets()

    def index_secrets(self) -> None:
        """The catalogue's files on this node, by inode, into the kernel (`bl_secrets`):
        a hard link or another path to one is still credential-access."""
        extra = tuple(g for a in self._registry().agents for g in a.baseline.credentials)
        self._secrets = credential_files(extra)
        self.sensor.secrets(self._secrets)
        self._last_secrets = time.monotonic()

    def close(self) -> None:
        with self._lock:
            self.flush(force=True)
        self.sensor.__exit__(None, None, None)

    # -- whom to watch --------------------------------------------------------------

    def sync(self) -> None:
        """Watch the registered agents' cgroups (their topmost ones) under their scopes."""
        with self._lock:
            reg = self._registry()
            want: dict[int, int] = {cg: 0 for cg in self.protect}
            listed = self.resolver.listing()  # the daemon's walk of this second
            for key, found in agent_topmost(reg, self.resolver, listed,
                                            sandboxed_only=False).items():
                scope = self._scope_for_agent(key)
                for cg_id, _ in found:
                    if cg_id not in want:
                        want[cg_id] = scope
            for cg, scope in want.items():
                if self._watch.get(cg) != scope:
                    if scope:
                        self.sensor.watch(cg, scope)
                    else:
                        self.sensor.never(cg)
            for cg in set(self._watch) - set(want):
                self.sensor.unwatch(cg)
            self._watch = want
            self._last_sync = time.monotonic()
            if self.config.mode is Mode.ALL or any(want.values()):
                self.sensor.attach()
            else:
                self.sensor.detach()

    def _scope_for_agent(self, key: str) -> int:
        scope = self._agent_scope.get(key)
        if scope is None:
            scope = abi.BL_SCOPE_AGENT | (len(self._agent_scope) + 1)
            self._agent_scope[key] = scope
            self._scope_name[scope] = key
            self._seed(scope, key)
        return scope

    def _seed(self, scope: int, name: str) -> None:
        """What the stored (or current) profile of `name` knows, into the kernel."""
        if scope in self._seeded:
            return
        self._seeded.add(scope)
        p = self._profile(name, time.time(), create=False)
        if p is None:
            return
        n = self.sensor.seed(scope, p.items)
        for kind, d in p.prefixes:
            self.sensor.generalise(scope, kind, d)
        log.info("baseline of `%s`: %d items and %d directories seeded into the kernel",
                 name, n, len(p.prefixes))

    def _name_of(self, a: Activity) -> str | None:
        name = self._scope_name.get(a.scope)
        if name is not None:
            return name
        if self.config.mode is not Mode.ALL or a.scope & abi.BL_SCOPE_AGENT:
            return None
        w = self.resolver.resolve(a.cgroup_id, a.tgid)
        name = w.name if w is not None else f"cgroup:{a.cgroup_id}"
        self._scope_name[a.scope] = name
        self._seed(a.scope, name)
        return name

    def _scopes_of(self, name: str) -> list[int]:
        return [s for s, n in self._scope_name.items() if n == name]

    def _profile(self, name: str, now: float, create: bool = True) -> Profile | None:
        p = self.profiles.get(name)
        if p is None:
            p = self.store.load_or_quarantine(name)
            if p is None and not create:
                return None
            if p is None:
                p = Profile(name, self.config.learn_seconds, now)
                self._dirty.add(name)
                self._urgent = True  # on disk at once: `manul baseline show` sees it
                log.info("baseline of `%s`: learning for %g s", name, p.learn_seconds)
            agent = self._agent(name)
            if agent is not None:
                p.credentials = agent.baseline.credentials
            self.profiles[name] = p
            if p.learning(now):
                self._learning.add(name)
        return p

    def _agent(self, name: str) -> Agent | None:
        """The registered agent a profile belongs to (None: a workload's, with `all`)."""
        if name not in self._agent_scope:
            return None
        a = self._registry().agent(name)
        return a if a is not None and a.meta.key == name else None

    # -- events -------------------------------------------------------------------

    def poll(self, timeout: float = 0.2) -> list[Anomaly]:
        acts = self.sensor.poll(timeout)
        out: list[Anomaly] = []
        with self._lock:
            for a in acts:
                try:
                    found = self.handle(a)
                except ManulError as e:  # one bad event never costs the others
                    log.error("baseline: %s: %s", a.item, e)
                    continue
                if found is not None:
                    out.extend(found)
        return out

    def handle(self, a: Activity, now: float | None = None) -> list[Anomaly] | None:
        now = time.time() if now is None else now
        with self._lock:
            name = self._name_of(a)
            if name is None:
                return None
            p = self._profile(name, now)
            assert p is not None
            item = a.item
            findings: list[Finding] = []
            f = catalogue(item, p.credentials)
            if f is None and a.flags & abi.BL_F_SECRET:
                f = self._secret(a)
            if f is not None and (a.flags & abi.BL_F_SECRET or not p.covers(item)):
                findings.append(f)
            learning = p.learning(now)
            if not findings and learning:
                d = p.learn(item, now)
                self._dirty.add(name)
                if d is not None:
                    for scope in self._scopes_of(name):
                        try:
                            self.sensor.generalise(scope, *d)
                        except ManulError as e:  # the trie is full: files stay novel
                            log.warning("baseline of `%s`: directory `%s` not generalised in "
                                        "the kernel: %s", name, d[1], e)
                return []
            if not findings and not p.covers(item):
                f = against_baseline(p, item)
                if f is not None:
                    findings.append(f)
                scan = self.scan.add(a.scope, item, a.ktime_ns / 1e9)  # when it happened
                if scan is not None:
                    findings.append(scan)
                if not findings:
                    p.note_novel(item, now)
                    self._dirty.add(name)
            return [self._report(f, name, a, now) for f in findings]

    def server_name(self, cgroup_id: int, tgid: int, addr: str, host: str) -> None:
        """A TLS handshake to `host` at `addr` (discovery, every handshake): the peer's
        name, for the evidence of later findings and the profile of whoever made it."""
        with self._lock:
            if len(self._names) >= 4096:
                self._names.pop(next(iter(self._names)))
            self._names[addr] = host
            if not self.profiles:
                return  # nobody's profile to name it in (every handshake comes here)
            w = self.resolver.resolve(cgroup_id, tgid)
            if w is None:
                return
            rec = self._registry().match_any(w.identities())
            name = (rec.meta.key if isinstance(rec, Agent) and rec.meta.key in self._agent_scope
                    else w.name if self.config.mode is Mode.ALL else None)
            p = self.profiles.get(name) if name is not None else None
            if p is not None and p.name_peer(addr, host):
                self._dirty.add(p.name)

    def _secret(self, a: Activity) -> Finding:
        """credential-access by inode: the file is a catalogued credential under
        another name (a hard link, a bind mount, /proc/<pid>/root/...)."""
        path, what = self._secrets.get((a.dev, a.ino),
                                       ("a catalogued file", "credential (matched by inode)"))
        verb = "connected to" if a.item.kind is Kind.UNIX else (
            "opened for writing" if a.item.kind is Kind.WRITE else "read")
        return Finding(Detector.CREDENTIAL_ACCESS,
                       f"{what} `{path}` {verb} as `{a.item.path}`",
                       {"path": a.item.path, "access": str(a.item.kind), "credential": what,
                        "same_file_as": path})

    def observe(self, *, agent: Agent | None, workload: Workload | None, provider: str,
                sni: str, destination: str, pid: int, process: str, ja4: str,
                gateway: bool) -> Anomaly | None:
        """A TLS handshake to an LLM provider (discovery): `gateway-bypass` when a
        registered agent whose baseline is on calls a provider that is not the gateway."""
        if agent is None or gateway or self.config.mode is Mode.OFF:
            return None
        finding = Finding(Detector.GATEWAY_BYPASS,
                          f"registered agent `{agent.meta.key}` called LLM provider "
                          f"`{provider}` ({sni}) directly, not through the gateway",
                          {"provider": provider, "sni": sni, "destination": destination,
                           "ja4": ja4})
        with self._lock:
            self._scope_for_agent(agent.meta.key)
            return self._report(finding, agent.meta.key, None, time.time(), workload=workload,
                                process={"pid": pid, "comm": process})

    def _report(self, f: Finding, name: str, a: Activity | None, now: float, *,
                workload: Workload | None = None,
                process: dict[str, Any] | None = None) -> Anomaly:
        agent = self._agent(name)
        if a is not None:
            workload = self.resolver.resolve(a.cgroup_id, a.tgid)
            process = {"pid": a.tgid, "comm": a.comm, "exe": _exe(a.tgid), "uid": a.uid}
            parent: dict[str, Any] | None = {"pid": a.ppid, "comm": a.parent_comm,
                                             "exe": _exe(a.ppid)}
        else:
            parent = None
        self.anomalies += 1
        metrics.ANOMALIES.labels(detector=str(f.detector), agent=name).inc()
        if agent is not None:
            self._raise_level(agent.meta.key, int(f.severity), now)
        # catalogue findings are limited per credential or endpoint (the kernel sends
        # each once): decoys cannot use up the budget of the real one
        subject = (f.evidence.get("path") or f.evidence.get("destination")
                   if f.detector in (Detector.CREDENTIAL_ACCESS, Detector.METADATA_ENDPOINT)
                   else None)
        key = (name, str(f.detector), subject)
        written = self.limiter.allow(key, now)
        rec: dict[str, Any] = {
            "detector": str(f.detector), "severity": str(f.severity), "summary": f.summary,
            "agent": agent.meta.key if agent is not None else None,
            "workload": workload.name if workload is not None else name,
            "namespace": workload.namespace if workload is not None else "",
            "pod": workload.pod if workload is not None else "",
            "cgroup": workload.cgroup_path if workload is not None else "",
            "process": process, "parent": parent, "evidence": self._named(f.evidence),
        }
        if written:
            rec["suppressed"] = self.limiter.take_suppressed(key)
            if self.audit is not None:
                rec = self.audit.write("anomaly", **rec)
            log.warning("anomaly %s in `%s`: %s", f.detector, name, f.summary)
        else:
            metrics.ANOMALIES_SUPPRESSED.labels(detector=str(f.detector)).inc()
        out = Anomaly(f, name, agent.meta.key if agent is not None else None, workload, rec,
                      written)
        if (agent is not None and agent.baseline.on_anomaly is OnAnomaly.QUARANTINE
                and workload is not None):
            self._respond(agent, workload)
        if self.on_anomaly is not None:
            self.on_anomaly(out)
        return out

    def _named(self, evidence: dict[str, Any]) -> dict[str, Any]:
        """The evidence, with the peer's TLS server name when one was seen."""
        dest = evidence.get("destination")
        if isinstance(dest, str) and "host" not in evidence:
            host = self._names.get(dest.rpartition(":")[0].strip("[]"))
            if host:
                return {**evidence, "host": host}
        return evidence

    def _respond(self, agent: Agent, w: Workload) -> None:
        if self._quarantine is None or w.cgroup_id in self._quarantined:
            return
        try:
            done = self._quarantine(w)
        except ManulError as e:
            log.error("cannot quarantine `%s` (Agent `%s` asks it on anomaly): %s", w.name,
                      agent.meta.key, e)
            return
        if done:
            self._quarantined.add(w.cgroup_id)
            if self.audit is not None:
                self.audit.write("quarantine", workload=w.name, cgroup=w.cgroup_path,
                                 cgroup_id=w.cgroup_id, agent=agent.meta.key,
                                 reason="anomaly (spec.baseline.onAnomaly: quarantine)")

    def _raise_level(self, key: str, level: int, now: float) -> None:
        old = self._levels.get(key, (ANOMALY_NONE, 0.0))[0]
        self._levels[key] = (max(old, level), now)
        if self.facts is not None and level > old:
            self.facts.set_anomaly_level(key, max(old, level))

    # -- housekeeping (about once a second) -----------------------------------------

    def tick(self, now: float | None = None) -> None:
        now = time.time() if now is None else now
        with self._lock:
            if time.monotonic() - self._last_sync >= 2.0:
                self.sync()
            if time.monotonic() - self._last_secrets >= 60.0:
                self.index_secrets()  # new pods' tokens, new kubeconfigs
            for name in self.store.resets():
                self.reset(name)
            for name in sorted(self._learning):
                p = self.profiles.get(name)
                if p is not None and not p.learning(now):
                    self._learning.discard(name)
                    self._dirty.add(name)
                    self._urgent = True
                    counts = p.counts()
                    log.info("baseline of `%s` learned: %s", name, counts)
                    if self.audit is not None:
                        self.audit.write("baseline-learned", name=name, items=counts,
                                         learned_at=p.learned_at)
            for key, (level, last) in list(self._levels.items()):
                if level and now - last > self.config.level_seconds:
                    self._levels[key] = (ANOMALY_NONE, last)
                    if self.facts is not None:
                        self.facts.set_anomaly_level(key, ANOMALY_NONE)
            if self._urgent or now - self._last_flush >= self.config.flush_seconds:
                self.flush()
            self._export(now)

    def reset(self, name: str) -> None:
        """Forget `name`'s baseline here and in the kernel; it learns again."""
        with self._lock:
            self.profiles.pop(name, None)
            self._dirty.discard(name)
            self._learning.discard(name)
            for scope in self._scopes_of(name):
                self.sensor.forget(scope)
                self.scan.forget(scope)
            log.warning("baseline of `%s` reset: learning again", name)
            if self.audit is not None:
                self.audit.write("baseline-reset", name=name)

    def flush(self, force: bool = False) -> None:
        self._last_flush = time.time()
        self._urgent = False
        for name in sorted(self._dirty):
            p = self.profiles.get(name)
            if p is None:
                continue
            try:
                self.store.save(p)
            except ManulError as e:
                log.error("%s", e)
                continue
            self._dirty.discard(name)

    def _export(self, now: float) -> None:
        for kind, st in self.sensor.stats().items():
            for outcome in ("seen", "sent", "known", "lost"):
                value = getattr(st, outcome)
                delta = value - self._exported.get((kind, outcome), 0)
                if delta > 0:
                    metrics.BASELINE_EVENTS.labels(kind=kind, outcome=outcome).inc(delta)
                    self._exported[(kind, outcome)] = value
        learning = sum(1 for p in self.profiles.values() if p.learning(now))
        metrics.BASELINE_PROFILES.labels(state="learning").set(learning)
        metrics.BASELINE_PROFILES.labels(state="detecting").set(len(self.profiles) - learning)

    def status(self) -> dict[str, Any]:
        """For /healthz: mode, profiles, and what the kernel kept back."""
        now = time.time()
        with self._lock:
            stats = self.sensor.stats() if self.sensor.started else {}
            seen = sum(s.seen for s in stats.values())
            known = sum(s.known for s in stats.values())
            return {
                "mode": str(self.config.mode),
                "started": self.sensor.started,
                "attached": self.sensor.attached,  # only while a workload is watched
                "profiles": {n: {"learning": p.learning(now), "items": p.counts(),
                                 "learn_ends": round(p.started + p.learn_seconds, 1)}
                             for n, p in sorted(self.profiles.items())},
                "kernel": {k: vars_of(s) for k, s in stats.items()},
                "filtered_in_kernel": round(known / seen, 4) if seen else None,
                "anomalies": self.anomalies,
                "lost": sum(s.lost for s in stats.values()),
            }


def vars_of(s: KindStats) -> dict[str, int]:
    return {"seen": s.seen, "sent": s.sent, "known": s.known, "lost": s.lost}


def _exe(pid: int) -> str:
    try:
        return os.readlink(f"/proc/{pid}/exe")
    except OSError:
        return ""


__all__ = ["Anomaly", "BaselineConfig", "BaselineService", "Item", "Kind", "Mode", "Severity"]
