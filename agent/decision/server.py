"""The ext_authz gRPC service on a Unix socket, and everything it runs with.

`DecisionServer` wires a `DecisionPoint` to the outside: the Envoy
`envoy.service.auth.v3.Authorization/Check` service and the standard
`grpc.health.v1.Health` service on a private socket, fronted by `PeerGate`
on the public socket (mode 0660, peer uid/gid allow-list); JWKS and OIDC
discovery routes on the agent's one HTTP server (`telemetry.http`); and one
maintenance thread that reloads registry and policies and rotates the
signing key. Health is SERVING while a policy set is loaded and NOT_SERVING
otherwise (requests are then denied, with the reason).

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
from concurrent import futures
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import grpc
from envoy.service.auth.v3 import external_auth_pb2, external_auth_pb2_grpc
from grpc_health.v1 import health, health_pb2, health_pb2_grpc
from opentelemetry.sdk.trace import TracerProvider

from agent.decision.decide import DecisionPoint
from agent.decision.delegation import DelegationVerifier
from agent.decision.facts import NodeFacts
from agent.decision.identity import Authenticator
from agent.decision.jwks import Fetch, HttpFetcher, JWKSCache
from agent.decision.peer import PeerCred, PeerGate, PeerPolicy
from agent.decision.response import to_check_response
from agent.decision.sources import Sources
from agent.decision.tokens import MAX_LIFETIME, KeyRing, TokenMinter
from agent.errors import ConfigError
from agent.registry import FileSource
from agent.registry.policyset import PolicyFolder
from agent.telemetry.audit import AuditLog
from agent.telemetry.http import HttpServer
from agent.telemetry.metrics import AUTHZ_SERVING

log = logging.getLogger(__name__)

DEFAULT_SOCKET = Path("/run/manul/authz.sock")
SERVICE_NAME = "envoy.service.auth.v3.Authorization"
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
    workers: int = 16
    reload_interval: float = 1.0
    max_connections: int | None = None  # None: what RLIMIT_NOFILE allows (peer.py)

    def peer_policy(self) -> PeerPolicy:
        default = PeerPolicy.default(self.socket_group)
        return PeerPolicy(self.allow_uids if self.allow_uids is not None else default.uids,
                          self.allow_gids if self.allow_gids is not None else default.gids)


class AuthorizationService(external_auth_pb2_grpc.AuthorizationServicer):  # type: ignore[misc]
    def __init__(self, point: DecisionPoint) -> None:
        self.point = point

    def Check(self, request: Any, context: grpc.ServicerContext) -> Any:
        return to_check_response(self.point.check_proto(request))


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
            facts=facts, audit=self.audit, tracer=tracer)
        self._private = tempfile.mkdtemp(prefix=".manul-grpc-",
                                         dir=self._socket_parent())
        self.inner_socket = os.path.join(self._private, "grpc.sock")
        self.health = health.HealthServicer()
        self._grpc = grpc.server(
            futures.ThreadPoolExecutor(max_workers=config.workers,
                                       thread_name_prefix="manul-authz"),
            options=[("grpc.max_receive_message_length", 16 << 20)])
        external_auth_pb2_grpc.add_AuthorizationServicer_to_server(
            AuthorizationService(self.point), self._grpc)
        health_pb2_grpc.add_HealthServicer_to_server(self.health, self._grpc)
        self._grpc.add_insecure_port(f"unix:{self.inner_socket}")
        self.gate = PeerGate(config.socket, self.inner_socket, config.peer_policy(),
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

    def start(self) -> DecisionServer:
        if self._own_http and self.http is not None:
            self.http.start()
        self._set_issuer()
        self._grpc.start()
        self.gate.start()
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
        self._grpc.stop(grace).wait()
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
            self._set_health()
        return changed

    def _maintain(self) -> None:
        while not self._stop.wait(self.config.reload_interval):
            try:
                self.reload()
                self.keys.maybe_rotate()
            except Exception:
                log.exception("decision point maintenance failed")

    @property
    def serving(self) -> bool:
        """A policy set is loaded and the public socket is accepting."""
        return self.sources.snapshot.serving and self.gate.accepting

    def _set_health(self) -> None:
        status = (health_pb2.HealthCheckResponse.SERVING if self.serving
                  else health_pb2.HealthCheckResponse.NOT_SERVING)
        for name in ("", SERVICE_NAME):
            self.health.set(name, status)
        AUTHZ_SERVING.set(1 if self.serving else 0)

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
                       "accept_errors": gate.accept_errors}}


__all__ = ["AuthorizationService", "DecisionServer", "ServerConfig", "external_auth_pb2"]
