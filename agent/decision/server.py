"""The ext_authz gRPC service on a Unix socket, and everything it runs with.

`DecisionServer` wires decisions to the outside: the Envoy
`envoy.service.auth.v3.Authorization/Check` service and the standard
`grpc.health.v1.Health` service on private sockets, fronted by `PeerGate`
on the public socket (mode 0660, peer uid/gid allow-list); JWKS and OIDC
discovery routes on the agent's one HTTP server (`telemetry.http`); and one
maintenance thread that reloads registry and policies and rotates the
signing key. Health is SERVING while a policy set is loaded and the public
socket accepts (and, with workers, one is ready), NOT_SERVING otherwise
(requests are then denied, with the reason).

Where decisions run: with `workers=0` in this process (a `GrpcFront` on
the agent's own `DecisionPoint`); with `workers=N`, in N worker processes
(`agent.decision.pool`, `agent.decision.worker`) that hold copies of the
snapshot, keys and node facts, while this process keeps the sources, the
keys, the audit log, the metrics and the public socket.

Inside `manul run` it is a part of the agent: the daemon hands it its
registry source and policy set (`sources`), its HTTP server and its audit
log. Standalone (`manul authz serve`) it builds each from its config.
"""

from __future__ import annotations

import logging
import os
import shutil
import socket
import tempfile
import threading
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from envoy.service.auth.v3 import external_auth_pb2
from opentelemetry.sdk.trace import TracerProvider

from agent.decision.decide import DecisionPoint, observe_batch
from agent.decision.delegation import DelegationVerifier
from agent.decision.facts import NodeFacts
from agent.decision.front import SERVICE_NAME, GrpcFront
from agent.decision.identity import Authenticator
from agent.decision.jwks import Fetch, HttpFetcher, JWKSCache
from agent.decision.peer import PeerCred, PeerGate, PeerPolicy
from agent.decision.pool import WorkerPool
from agent.decision.sources import Sources
from agent.decision.tokens import MAX_LIFETIME, KeyRing, TokenMinter
from agent.errors import ConfigError
from agent.registry import FileSource
from agent.registry.policyset import PolicyFolder
from agent.telemetry.audit import AuditLog
from agent.telemetry.http import HttpServer
from agent.telemetry.metrics import AUTHZ_SERVING
from agent.telemetry.tracing import records

log = logging.getLogger(__name__)

DEFAULT_SOCKET = Path("/run/manul/authz.sock")
JWKS_PATH = "/.well-known/jwks.json"
DISCOVERY_PATH = "/.well-known/openid-configuration"


@dataclass(frozen=True)
class ServerConfig:
    registry: Path | None = None  # standalone: a registry folder (else `sources` is given)
    policies: Path | None = None  # standalone: a policy folder
    socket: Path = DEFAULT_SOCKET
    socket_group: int | None = None
    allow_uids: frozenset[int] | None = None  # None: root and our own user
    allow_gids: frozenset[int] | None = None  # None: the socket's group
    http: str = "127.0.0.1:8181"  # standalone only; "" disables the HTTP port
    issuer: str = ""  # default: http://<http address>
    audiences: tuple[str, ...] = ("manul",)
    leeway: int = 30
    token_lifetime: int = MAX_LIFETIME
    key_file: Path | None = None
    rotate_every: float = 3600.0
    trusted_issuers: Mapping[str, str] = field(default_factory=dict)
    jwt_metadata_key: str = "jwt_payload"
    jwks_ca_file: str | None = None
    audit_log: str | None = None  # None: no audit log; "-": stdout
    workers: int = 0  # decision worker processes; 0: decide in this process
    trace_file: Path | None = None  # workers: spans as JSON lines here (else OTLP from env)
    reload_interval: float = 1.0
    max_connections: int | None = None  # None: what RLIMIT_NOFILE allows (peer.py)

    def peer_policy(self) -> PeerPolicy:
        default = PeerPolicy.default(self.socket_group)
        return PeerPolicy(self.allow_uids if self.allow_uids is not None else default.uids,
                          self.allow_gids if self.allow_gids is not None else default.gids)


class DecisionServer:
    def __init__(self, config: ServerConfig, *, facts: NodeFacts | None = None,
                 tracer_provider: TracerProvider | None = None,
                 jwks_fetch: Fetch | None = None, sources: Sources | None = None,
                 http: HttpServer | None = None, audit: AuditLog | None = None) -> None:
        """`sources`, `http`, `audit`: the agent's own (not started or closed here);
        without them they are built from `config` (standalone)."""
        self.config = config
        if sources is None:
            if config.registry is None or config.policies is None:
                raise ConfigError("the decision point needs a registry folder and a policy "
                                  "folder (--registry, --policies)")
            sources = Sources(FileSource(config.registry), PolicyFolder(config.policies))
        self.sources = sources
        self.keys = KeyRing(rotate_every=config.rotate_every,
                            keep_for=config.token_lifetime + config.leeway + 30,
                            path=config.key_file)
        self._own_http = http is None and bool(config.http)
        try:
            self.http = HttpServer(config.http) if self._own_http else http
        except ConfigError as e:
            raise ConfigError(f"--http `{config.http}`: expected HOST:PORT with a port from 0 "
                              "to 65535 (or an empty value to disable the HTTP port)") from e
        if self.http is not None:
            self.http.add_route(JWKS_PATH, lambda: (200, self.keys.jwks()))
            self.http.add_route(DISCOVERY_PATH, self._discovery)
            if self._own_http:
                self.http.add_route("/healthz", self._healthz)
                self.http.add_route("/readyz", self._healthz)
        self.issuer = config.issuer  # default: the HTTP server's URL, known once it listens
        jwks = JWKSCache(jwks_fetch or HttpFetcher(ca_file=config.jwks_ca_file))
        self._own_audit = audit is None and bool(config.audit_log)
        self.audit = AuditLog(config.audit_log) if self._own_audit and config.audit_log \
            else audit
        tracer = tracer_provider.get_tracer("manul.decision") if tracer_provider else None
        self.minter = TokenMinter(self.keys, self.issuer, config.token_lifetime)
        self.delegation = DelegationVerifier(self.keys, self.issuer,
                                             trusted=config.trusted_issuers, jwks=jwks,
                                             leeway=config.leeway)
        self.point = DecisionPoint(
            lambda: self.sources.snapshot,
            authenticator=Authenticator(jwks, audiences=config.audiences, leeway=config.leeway,
                                        jwt_metadata_key=config.jwt_metadata_key),
            delegation=self.delegation, minter=self.minter,
            facts=facts, audit=self.audit, tracer=tracer, spans=records(tracer_provider))
        if config.workers < 0:
            raise ConfigError(f"--workers `{config.workers}`: expected 0 (decide in this "
                              "process) or more")
        self._private = tempfile.mkdtemp(prefix=".manul-grpc-",
                                         dir=self._socket_parent())
        self.inner_socket = os.path.join(self._private, "grpc.sock")
        self.front: GrpcFront | None = None
        self.pool: WorkerPool | None = None
        if config.workers:
            self.pool = WorkerPool(config.workers, self._private, {}, self._worker_state,
                                   audit=self.audit, observe=observe_batch,
                                   on_change=self._set_health)
            self.point.facts.subscribe(self._facts_changed)
        else:
            self.front = GrpcFront(self.point, self.inner_socket)
        self._keys_sent = self.keys.changes
        upstream = self.pool.live if self.pool is not None else self.inner_socket
        self.gate = PeerGate(config.socket, upstream, config.peer_policy(),
                             group=config.socket_group, on_reject=self._rejected,
                             max_connections=config.max_connections,
                             on_state=lambda _accepting: self._set_health())
        self._stop = threading.Event()
        self._maint = threading.Thread(target=self._maintain, daemon=True,
                                       name="manul-authz-maintain")

    def _socket_parent(self) -> str:
        parent = self.config.socket.parent
        parent.mkdir(parents=True, exist_ok=True, mode=0o755)
        return str(parent)

    def _default_issuer(self) -> str:
        bound = self.http.bound if self.http is not None else None
        if bound is None:
            return f"https://{socket.gethostname()}/manul"
        host, port = bound
        if host in ("0.0.0.0", "::", ""):
            host = socket.gethostname()
        return f"http://{host}:{port}"

    def _set_issuer(self) -> None:
        """The issuer of minted tokens, and the one delegation tokens are checked against."""
        if not self.config.issuer:
            self.issuer = self._default_issuer()
        self.minter.issuer = self.delegation.issuer = self.issuer

    def _discovery(self) -> tuple[int, dict[str, Any]]:
        return 200, {"issuer": self.issuer, "jwks_uri": self.issuer.rstrip("/") + JWKS_PATH,
                     "id_token_signing_alg_values_supported": ["ES256"]}

    def _healthz(self) -> tuple[int, dict[str, Any]]:
        ok, detail = self.health_detail()
        return (200 if ok else 503), detail

    def _rejected(self, cred: PeerCred) -> None:
        if self.audit is not None:
            self.audit.write("authz-peer-refused", socket=str(self.config.socket),
                             uid=cred.uid, gid=cred.gid, pid=cred.pid)

    # -- lifecycle ---------------------------------------------------------

    def _spec(self) -> dict[str, Any]:
        """What a worker decides with, besides the state it is sent (`_worker_state`)."""
        c = self.config
        return {"issuer": self.issuer, "audiences": tuple(c.audiences), "leeway": c.leeway,
                "token_lifetime": c.token_lifetime, "trusted_issuers": dict(c.trusted_issuers),
                "jwt_metadata_key": c.jwt_metadata_key, "jwks_ca_file": c.jwks_ca_file,
                "trace_file": str(c.trace_file) if c.trace_file else None,
                "node": self.audit.node if self.audit is not None else ""}

    def _facts_changed(self) -> None:
        if self.pool is not None:
            self.pool.push("facts")

    def _worker_state(self, kind: str) -> Any:
        if kind == "snapshot":
            return self.sources.inputs
        if kind == "keys":
            return self.keys.document()
        if kind == "facts":
            return self.point.facts.snapshot()
        return self.serving  # health

    def start(self) -> DecisionServer:
        if self._own_http and self.http is not None:
            self.http.start()
        self._set_issuer()
        try:
            if self.pool is not None:
                self.pool.spec.update(self._spec())
                self.pool.start()
            else:
                assert self.front is not None
                self.front.start()
            self.gate.start()
        except ConfigError:
            # nothing started is left running: workers, the gRPC server, the HTTP port
            if self.pool is not None:
                self.pool.stop()
            if self.front is not None:
                self.front.stop(0)
            if self._own_http and self.http is not None:
                self.http.stop()
            if self._own_audit and self.audit is not None:
                self.audit.close()
            shutil.rmtree(self._private, ignore_errors=True)
            raise
        self._set_health()
        self._maint.start()
        snap = self.sources.snapshot
        log.info("decision point on %s: %d policies, %d callers%s", self.config.socket,
                 len(snap.policies or ()), len(snap.registry.callers()),
                 f" ({snap.policy_error})" if snap.policy_error else "")
        return self

    def stop(self, grace: float = 1.0) -> None:
        self._stop.set()
        self.gate.stop()
        if self.pool is not None:
            self.pool.stop()
        if self.front is not None:
            self.front.stop(grace)
        if self._own_http and self.http is not None:
            self.http.stop()
        if self._maint.is_alive():
            self._maint.join(timeout=5)
        shutil.rmtree(self._private, ignore_errors=True)
        if self._own_audit and self.audit is not None:
            self.audit.close()

    def __enter__(self) -> DecisionServer:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()

    def wait(self) -> None:
        self._stop.wait()

    # -- maintenance -------------------------------------------------------

    def reload(self) -> bool:
        changed = self.sources.poll()
        if changed:
            if self.pool is not None:
                self.pool.push("snapshot")
            self._set_health()
        return changed

    def _maintain(self) -> None:
        while not self._stop.wait(self.config.reload_interval):
            try:
                self.reload()
                self.keys.maybe_rotate()
                if self.pool is not None and self.keys.changes != self._keys_sent:
                    self._keys_sent = self.keys.changes
                    self.pool.push("keys")
            except Exception:
                log.exception("decision point maintenance failed")

    @property
    def serving(self) -> bool:
        """A policy set is loaded, the public socket is accepting and something decides."""
        return (self.sources.snapshot.serving and self.gate.accepting
                and (self.pool is None or bool(self.pool.live())))

    def _set_health(self) -> None:
        serving = self.serving
        if self.front is not None:
            self.front.set_health(serving)
        if self.pool is not None:
            self.pool.push("health")
        AUTHZ_SERVING.set(1 if serving else 0)

    def health_detail(self) -> tuple[bool, dict[str, Any]]:
        snap = self.sources.snapshot
        gate = self.gate
        return self.serving, {
            "serving": self.serving, "policies": len(snap.policies or ()),
            "policy_error": snap.policy_error, "policy_source": self.sources.policy_source.origin,
            "registry_error": self.sources.registry.last_error,
            "callers": len(snap.registry.callers()), "snapshot": snap.version,
            "refused_peers": gate.rejected,
            "socket": {"accepting": gate.accepting,
                       "error": None if gate.accepting else gate.last_error,
                       "connections": gate.connections,
                       "max_connections": gate.max_connections, "shed": gate.shed,
                       "unavailable": gate.unavailable,
                       "accept_errors": gate.accept_errors},
            "workers": self.pool.describe() if self.pool is not None else None}


__all__ = ["SERVICE_NAME", "DecisionServer", "ServerConfig", "external_auth_pb2"]
