"""The decision point's HTTP port: JWKS for destinations, health, metrics.

    GET /.well-known/jwks.json              the per-hop tokens' public keys
    GET /.well-known/openid-configuration   {"issuer", "jwks_uri"} for OIDC libraries
    GET /healthz                            200 while serving, 503 without a policy set
    GET /metrics                            Prometheus text format

Everything here is public by nature (public keys, counters); nothing is
written. Runs on its own threads so a slow scraper never delays a decision.
"""

from __future__ import annotations

import json
import threading
from collections.abc import Callable
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

from prometheus_client import CONTENT_TYPE_LATEST, generate_latest

from agent.errors import ConfigError
from agent.telemetry.metrics import REGISTRY

JWKS_PATH = "/.well-known/jwks.json"
DISCOVERY_PATH = "/.well-known/openid-configuration"


class DecisionHTTP:
    def __init__(self, host: str, port: int, *, jwks: Callable[[], dict[str, Any]],
                 issuer: str, health: Callable[[], tuple[bool, dict[str, Any]]]) -> None:
        self.issuer = issuer  # may be set after construction, once the port is known
        outer = self

        class Handler(BaseHTTPRequestHandler):
            server_version = "manul"

            def log_message(self, format: str, *args: Any) -> None:
                return  # access logs would drown the decision audit

            def do_GET(self) -> None:
                path = self.path.split("?", 1)[0]
                if path == JWKS_PATH:
                    self._send(200, "application/json", json.dumps(jwks()).encode(),
                               cache="public, max-age=60")
                elif path == DISCOVERY_PATH:
                    doc = {"issuer": outer.issuer,
                           "jwks_uri": outer.issuer.rstrip("/") + JWKS_PATH,
                           "id_token_signing_alg_values_supported": ["ES256"]}
                    self._send(200, "application/json", json.dumps(doc).encode())
                elif path in ("/healthz", "/readyz"):
                    ok, detail = health()
                    self._send(200 if ok else 503, "application/json",
                               json.dumps(detail).encode())
                elif path == "/metrics":
                    self._send(200, CONTENT_TYPE_LATEST, generate_latest(REGISTRY))
                else:
                    self._send(404, "text/plain", b"not found\n")

            def _send(self, code: int, ctype: str, body: bytes, cache: str = "no-store") -> None:
                self.send_response(code)
                self.send_header("Content-Type", ctype)
                self.send_header("Content-Length", str(len(body)))
                self.send_header("Cache-Control", cache)
                self.end_headers()
                self.wfile.write(body)

        try:
            self._server = ThreadingHTTPServer((host, port), Handler)
        except (OSError, OverflowError) as e:
            raise ConfigError(f"--http `{host}:{port}`: cannot listen there: "
                              f"{getattr(e, 'strerror', None) or e}") from e
        self._server.daemon_threads = True
        self._thread = threading.Thread(target=self._server.serve_forever, args=(0.05,),
                                        daemon=True, name="manul-authz-http")

    @property
    def port(self) -> int:
        return int(self._server.server_address[1])

    def start(self) -> None:
        self._thread.start()

    def stop(self) -> None:
        self._server.shutdown()
        self._server.server_close()
