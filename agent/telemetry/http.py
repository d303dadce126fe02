"""The agent's one HTTP server: /metrics (Prometheus), /healthz, and JSON views.

A small threaded server on a configurable address (default
127.0.0.1:9464). Feature packages register extra JSON routes (discovery's
`/inventory`, the decision point's `/.well-known/jwks.json` and OIDC
discovery document) with `add_route`. Everything here is public by nature
(counters, public keys); nothing is written. It runs on its own threads, so
a slow scraper never delays a decision.
"""

from __future__ import annotations

import json
import logging
import threading
from collections.abc import Callable
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

from prometheus_client import CONTENT_TYPE_LATEST, generate_latest

from agent.errors import ConfigError
from agent.telemetry.metrics import REGISTRY

log = logging.getLogger(__name__)
Route = Callable[[], tuple[int, Any]]  # -> (status, JSON-able body)


def parse_listen(text: str) -> tuple[str, int]:
    host, sep, port = text.rpartition(":")
    if not sep or not port.isdigit() or not 0 <= int(port) < 65536:  # a port from 0 to 65535
        raise ConfigError(f"`{text}` is not HOST:PORT (e.g. `127.0.0.1:9464`)")
    return host.strip("[]") or "0.0.0.0", int(port)


class HttpServer:
    def __init__(self, listen: str) -> None:
        self.address = parse_listen(listen)
        self.routes: dict[str, Route] = {}
        self._server: ThreadingHTTPServer | None = None

    def add_route(self, path: str, route: Route) -> None:
        self.routes[path] = route

    @property
    def bound(self) -> tuple[str, int] | None:
        """The address it listens on (the port chosen for `:0`), once started."""
        if self._server is None:
            return None
        host, port = self._server.server_address[:2]
        return str(host), int(port)

    def start(self) -> tuple[str, int]:
        routes = self.routes

        class Handler(BaseHTTPRequestHandler):
            def do_GET(self) -> None:
                path = self.path.split("?", 1)[0]
                if path == "/metrics":
                    body = generate_latest(REGISTRY)
                    self._send(200, CONTENT_TYPE_LATEST, body)
                    return
                route = routes.get(path)
                if route is None:
                    self._send(404, "application/json",
                               json.dumps({"error": f"no route {path}",
                                           "routes": ["/metrics", *routes]}).encode())
                    return
                status, doc = route()
                self._send(status, "application/json",
                           json.dumps(doc, indent=2, default=str).encode())

            def _send(self, status: int, ctype: str, body: bytes) -> None:
                self.send_response(status)
                self.send_header("Content-Type", ctype)
                self.send_header("Content-Length", str(len(body)))
                self.end_headers()
                self.wfile.write(body)

            def log_message(self, fmt: str, *args: Any) -> None:
                log.debug("http: " + fmt, *args)

        try:
            self._server = ThreadingHTTPServer(self.address, Handler)
        except OSError as e:
            raise ConfigError(f"cannot listen on {self.address[0]}:{self.address[1]}: "
                              f"{e.strerror}") from e
        self._server.daemon_threads = True
        threading.Thread(target=self._server.serve_forever, name="http", daemon=True).start()
        host, port = self._server.server_address[:2]
        return str(host), int(port)

    def stop(self) -> None:
        if self._server is not None:
            self._server.shutdown()
            self._server.server_close()
            self._server = None
