"""The gRPC side of one deciding process: ext_authz and health on a private Unix socket.

`GrpcFront` runs a `grpc.aio` server in a thread of its own, with its own
event loop, serving `envoy.service.auth.v3.Authorization/Check` and the
standard `grpc.health.v1.Health`. A decision is CPU work and runs on the
loop itself: one Python thread does all of it, which costs less than a
pool of threads taking the GIL from one another (bench/authz.py measured
it). The loop never waits on the network: a decision that would fetch an
issuer's key set (`jwks.no_fetch` raises `FetchNeeded` before it does) is
decided again on a small thread pool, and the others go on meanwhile.

The decision point in the agent's process (`--authz-workers 0`) and each
worker process (`agent.decision.worker`) run one `GrpcFront`; `PeerGate`
relays the public socket to it.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import threading
from collections.abc import Callable
from concurrent import futures
from typing import Any

import grpc
from envoy.service.auth.v3 import external_auth_pb2_grpc
from grpc_health.v1 import health, health_pb2, health_pb2_grpc

from agent.decision.decide import DecisionPoint, Outcome
from agent.decision.jwks import FetchNeeded, no_fetch
from agent.decision.response import to_check_response
from agent.errors import ConfigError

log = logging.getLogger(__name__)

SERVICE_NAME = "envoy.service.auth.v3.Authorization"
_OPTIONS = [("grpc.max_receive_message_length", 16 << 20)]


class _Authorization(external_auth_pb2_grpc.AuthorizationServicer):  # type: ignore[misc]
    def __init__(self, point: DecisionPoint, pool: futures.ThreadPoolExecutor) -> None:
        self.point = point
        self.pool = pool

    async def Check(self, request: Any, context: Any) -> Any:
        try:
            with no_fetch():
                outcome = self.point.check_proto(request)
        except FetchNeeded:
            loop = asyncio.get_running_loop()
            outcome = await loop.run_in_executor(self.pool, self._check, request)
        return to_check_response(outcome)

    def _check(self, request: Any) -> Outcome:
        return self.point.check_proto(request)


class GrpcFront:
    """A grpc.aio ext_authz server on `path`, in its own thread and event loop."""

    def __init__(self, point: DecisionPoint, path: str, *, fetch_threads: int = 4) -> None:
        self.point = point
        self.path = path
        self._pool = futures.ThreadPoolExecutor(max_workers=fetch_threads,
                                                thread_name_prefix="manul-authz-fetch")
        self._loop: asyncio.AbstractEventLoop | None = None
        self._health: Any = None
        self._stopped: asyncio.Event | None = None
        self._ready = threading.Event()
        self._error: BaseException | None = None
        self._grace = 1.0
        self._serving = False
        self._thread = threading.Thread(target=self._run, daemon=True, name="manul-authz-grpc")

    def start(self, timeout: float = 30.0) -> None:
        self._thread.start()
        if not self._ready.wait(timeout):
            raise ConfigError(f"`{self.path}`: the gRPC server did not start in {timeout:.0f} s")
        if self._error is not None:
            raise ConfigError(f"`{self.path}`: the gRPC server did not start: "
                              f"{self._error}") from self._error

    def _run(self) -> None:
        loop = asyncio.new_event_loop()
        asyncio.set_event_loop(loop)
        self._loop = loop
        try:
            loop.run_until_complete(self._serve())
        except Exception as e:
            self._error = e
            log.exception("the gRPC server on %s stopped", self.path)
        finally:
            self._ready.set()
            loop.close()

    async def _serve(self) -> None:
        server = grpc.aio.server(options=_OPTIONS)
        external_auth_pb2_grpc.add_AuthorizationServicer_to_server(
            _Authorization(self.point, self._pool), server)
        self._health = health.aio.HealthServicer()
        health_pb2_grpc.add_HealthServicer_to_server(self._health, server)
        if server.add_insecure_port(f"unix:{self.path}") == 0:
            raise OSError(f"cannot listen on unix:{self.path}")
        await server.start()
        await self._set(self._serving)
        self._stopped = asyncio.Event()
        self._ready.set()
        await self._stopped.wait()
        await server.stop(self._grace)

    async def _set(self, serving: bool) -> None:
        status = (health_pb2.HealthCheckResponse.SERVING if serving
                  else health_pb2.HealthCheckResponse.NOT_SERVING)
        for name in ("", SERVICE_NAME):
            await self._health.set(name, status)

    def set_health(self, serving: bool) -> None:
        """What the health service answers (SERVING or NOT_SERVING), from any thread."""
        self._serving = serving
        loop = self._loop
        if loop is None or not self._ready.is_set() or loop.is_closed():
            return  # applied when the server starts
        try:
            asyncio.run_coroutine_threadsafe(self._set(serving), loop).result(timeout=5)
        except (RuntimeError, TimeoutError, futures.TimeoutError) as e:
            log.warning("could not update the health of %s: %s", self.path, e)

    def call_soon(self, fn: Callable[[], None]) -> None:
        """Run `fn` on the event loop (from any thread); nothing if it is not running."""
        loop = self._loop
        if loop is not None and not loop.is_closed():
            with contextlib.suppress(RuntimeError):
                loop.call_soon_threadsafe(fn)

    def stop(self, grace: float = 1.0) -> None:
        self._grace = grace
        loop, stopped = self._loop, self._stopped
        if loop is not None and stopped is not None and not loop.is_closed():
            with contextlib.suppress(RuntimeError):  # the loop ended already
                loop.call_soon_threadsafe(stopped.set)
        if self._thread.is_alive():
            self._thread.join(timeout=grace + 5)
        self._pool.shutdown(wait=False, cancel_futures=True)
