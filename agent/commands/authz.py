"""`manul authz serve`: the local decision point, standalone.

Runs the Envoy ext_authz v3 service on a Unix socket with a registry folder
and a policy folder, reloading both when they change, until SIGINT/SIGTERM.
"""

from __future__ import annotations

import logging
import pwd
import signal
import threading
from pathlib import Path
from types import FrameType

import click

from agent.commands._options import group_id
from agent.decision.pool import default_workers
from agent.decision.server import DEFAULT_SOCKET, DecisionServer, ServerConfig
from agent.errors import ManulError
from agent.telemetry.tracing import JsonLinesExporter, make_provider, provider_from_env

log = logging.getLogger(__name__)


def _uid(value: str) -> int:
    if value.isdigit():
        return int(value)
    try:
        return pwd.getpwnam(value).pw_uid
    except KeyError:
        raise click.BadParameter(f"no user `{value}`") from None


def _trusted(values: tuple[str, ...]) -> dict[str, str]:
    out = {}
    for v in values:
        issuer, sep, jwks = v.partition("=")
        if not sep or not issuer:
            raise click.BadParameter(f"`{v}`: expected ISSUER=JWKS_URL")
        out[issuer] = jwks or issuer.rstrip("/") + "/.well-known/jwks.json"
    return out


@click.group()
def authz() -> None:
    """The local decision point (Envoy ext_authz v3 over a Unix socket)."""


@authz.command()
@click.option("--socket", "socket_path", type=click.Path(path_type=Path),
              default=DEFAULT_SOCKET, show_default=True,
              help="Unix socket the gateway connects to (created 0660).")
@click.option("--registry", type=click.Path(path_type=Path, file_okay=False, exists=True),
              required=True, help="Folder of registry YAML (agents, servers, providers).")
@click.option("--policies", type=click.Path(path_type=Path, file_okay=False), required=True,
              help="The policy folder (.cedar files and entities.json; the gateway part is "
                   "served, kernel-only policies never match).")
@click.option("--socket-group", default=None, help="Group owning the socket (name or gid).")
@click.option("--allow-uid", multiple=True, help="Peer uid allowed to connect (repeatable; "
              "default: root and this user).")
@click.option("--allow-gid", multiple=True, help="Peer gid allowed to connect (repeatable; "
              "default: the socket's group).")
@click.option("--http", "http_addr", default="127.0.0.1:8181", show_default=True,
              help="HOST:PORT for JWKS, /healthz and /metrics; empty to disable.")
@click.option("--issuer", default="", help="`iss` of minted tokens (default: the HTTP URL).")
@click.option("--audience", multiple=True, default=("manul",), show_default=True,
              help="Audience a caller's OIDC token must carry when its registration "
                   "lists none (repeatable).")
@click.option("--trust-issuer", multiple=True, metavar="ISSUER=JWKS_URL",
              help="Another node's decision point whose per-hop tokens are accepted as "
                   "delegation (repeatable).")
@click.option("--jwt-metadata-key", default="jwt_payload", show_default=True,
              help="jwt_authn `payload_in_metadata` key for the jwtMetadata mechanism.")
@click.option("--jwks-ca-file", type=click.Path(dir_okay=False, exists=True), default=None,
              help="Extra CA bundle for fetching OIDC issuers' keys.")
@click.option("--key-file", type=click.Path(path_type=Path, dir_okay=False), default=None,
              help="Keep signing keys here (0600) so a restart keeps tokens verifiable.")
@click.option("--rotate-every", type=float, default=3600.0, show_default=True,
              help="Seconds between signing-key rotations.")
@click.option("--token-lifetime", type=click.IntRange(1, 120), default=120, show_default=True,
              help="Seconds a minted per-hop token is valid.")
@click.option("--leeway", type=click.IntRange(0, 300), default=30, show_default=True,
              help="Clock skew tolerated on exp/nbf/iat, in seconds.")
@click.option("--audit-log", default=None, help="Audit log path (`-` for stdout).")
@click.option("--trace-file", type=click.Path(path_type=Path, dir_okay=False), default=None,
              help="Write OpenTelemetry spans as JSON lines to this file.")
@click.option("--workers", type=click.IntRange(0, 64), default=None,
              help="Decision worker processes, so decisions use several CPUs (default: 2 "
                   "where this process may use two CPUs or more, else 0: decide in this "
                   "process).")
@click.option("--reload-interval", type=float, default=1.0, show_default=True,
              help="Seconds between checks for registry and policy changes.")
@click.option("--max-connections", type=click.IntRange(1, 1_000_000), default=None,
              help="Open gateway connections before new ones are closed at once "
                   "(default: what the descriptor limit allows, at most 4096).")
def serve(socket_path: Path, registry: Path, policies: Path, socket_group: str | None,
          allow_uid: tuple[str, ...], allow_gid: tuple[str, ...], http_addr: str, issuer: str,
          audience: tuple[str, ...], trust_issuer: tuple[str, ...], jwt_metadata_key: str,
          jwks_ca_file: str | None, key_file: Path | None, rotate_every: float,
          token_lifetime: int, leeway: int, audit_log: str | None, trace_file: Path | None,
          workers: int | None, reload_interval: float, max_connections: int | None) -> None:
    """Serve ext_authz decisions until interrupted.

    \b
    Example:
      manul authz serve --socket /run/manul/authz.sock \\
          --registry examples/registry --policies examples/policies
    """
    config = ServerConfig(
        registry=registry, policies=policies, socket=socket_path,
        socket_group=group_id(socket_group) if socket_group else None,
        allow_uids=frozenset(_uid(u) for u in allow_uid) if allow_uid else None,
        allow_gids=frozenset(group_id(g) for g in allow_gid) if allow_gid else None,
        http=http_addr, issuer=issuer, audiences=audience, leeway=leeway,
        token_lifetime=token_lifetime, key_file=key_file, rotate_every=rotate_every,
        trusted_issuers=_trusted(trust_issuer), jwt_metadata_key=jwt_metadata_key,
        jwks_ca_file=jwks_ca_file, audit_log=audit_log,
        workers=default_workers() if workers is None else workers, trace_file=trace_file,
        reload_interval=reload_interval, max_connections=max_connections)
    try:
        provider = (make_provider(exporter=JsonLinesExporter(trace_file)) if trace_file
                    else provider_from_env())
        server = DecisionServer(config, tracer_provider=provider).start()
    except ManulError as e:
        raise click.ClickException(str(e)) from e
    stop = threading.Event()

    def on_signal(signum: int, frame: FrameType | None) -> None:
        stop.set()

    signal.signal(signal.SIGTERM, on_signal)
    signal.signal(signal.SIGINT, on_signal)
    snap = server.sources.snapshot
    click.echo(f"manul authz: serving on {socket_path} ({len(snap.policies or ())} policies"
               f"{'; ' + snap.policy_error if snap.policy_error else ''})"
               + (f"; JWKS at {server.issuer}/.well-known/jwks.json" if server.http else ""),
               err=True)
    try:
        stop.wait()
    finally:
        server.stop()
        if provider is not None:
            provider.shutdown()
