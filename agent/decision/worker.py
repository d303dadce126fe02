"""A decision worker: a process of its own that decides ext_authz requests.

The agent (`agent.decision.pool`) starts one per CPU it gives the decision
point, so decisions run on several CPUs, not under one interpreter lock.
A worker is a `DecisionPoint` behind a `GrpcFront` on a socket in the
agent's private directory; the agent's `PeerGate` relays gateway
connections to it. It holds copies, never its own sources:

- the snapshot, built from the agent's `SnapshotInputs` (the same registry,
  policy texts and entities files, so the same decisions);
- the signing keys (`KeyRing.replica`: it signs with the agent's current
  key and never rotates by itself);
- the node facts (quarantine, anomaly level) and the health to answer.

Each arrives over the socket pair (`agent.decision.ipc`) whenever it
changes in the agent. What the worker produces goes back the same way,
batched every 50 ms: audit records, encoded here (the agent appends them
to its one audit log), and decision counts and latencies (the agent's
metrics). After each snapshot the worker freezes what it holds out of the
garbage collector's sight (`gc.freeze`), so collections stay short with
thousands of policies. Spans are
exported by the worker itself (OTLP from the environment, or
`--trace-file`). A worker ends when the agent asks, when the socket pair
closes, or when the agent dies (PR_SET_PDEATHSIG).

    python -m agent.decision.worker FD   # started by the agent, never by hand
"""

from __future__ import annotations

import contextlib
import ctypes
import functools
import gc
import logging
import os
import signal
import socket
import sys
import threading
import time
from collections import Counter
from typing import Any

from agent.decision.decide import DecisionPoint
from agent.decision.delegation import DelegationVerifier
from agent.decision.facts import NodeFacts
from agent.decision.front import GrpcFront
from agent.decision.identity import Authenticator
from agent.decision.ipc import Channel, ChannelClosed
from agent.decision.jwks import HttpFetcher, JWKSCache
from agent.decision.sources import Snapshot, SnapshotInputs
from agent.decision.tokens import KeyRing, TokenMinter
from agent.telemetry.audit import encode, record
from agent.telemetry.logs import setup_logging
from agent.telemetry.tracing import (
    JsonLinesExporter,
    make_provider,
    provider_from_env,
    records,
)

log = logging.getLogger("agent.decision.worker")

FLUSH_EVERY = 0.05  # seconds between batches of records and metrics to the agent
_PR_SET_PDEATHSIG = 1


class Reporter:
    """Audit records and metric samples, batched to the agent."""

    def __init__(self, channel: Channel, node: str) -> None:
        self.channel = channel
        self.node = node
        self._lock = threading.Lock()
        self._records: list[str] = []
        self._counts: Counter[str] = Counter()
        self._latencies: list[float] = []
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True,
                                        name="manul-worker-report")

    def write(self, kind: str, /, **fields: Any) -> None:
        line = encode(record(kind, self.node, fields))  # here, not in the agent's process
        with self._lock:
            self._records.append(line)

    def observe(self, decision: str, seconds: float) -> None:
        with self._lock:
            self._counts[decision] += 1
            self._latencies.append(seconds)

    def start(self) -> None:
        self._thread.start()

    def _run(self) -> None:
        while not self._stop.wait(FLUSH_EVERY):
            self.flush()

    def flush(self) -> None:
        with self._lock:
            records, self._records = self._records, []
            counts, self._counts = self._counts, Counter()
            latencies, self._latencies = self._latencies, []
        try:
            if records:
                self.channel.send("audit", records)
            if counts:
                self.channel.send("metrics", dict(counts), latencies)
        except ChannelClosed:
            pass  # the agent is gone: the control loop ends the worker

    def stop(self) -> None:
        self._stop.set()
        self._thread.join(timeout=2)
        self.flush()


class Worker:
    def __init__(self, spec: dict[str, Any], inputs: SnapshotInputs, keys: dict[str, Any],
                 facts: dict[str, Any], channel: Channel) -> None:
        self.channel = channel
        self.snapshot: Snapshot = inputs.build()
        self.keys = KeyRing.replica(keys)
        self.facts = NodeFacts()
        self.facts.replace(facts)
        trace_file = spec.get("trace_file")
        self.provider = (make_provider(exporter=JsonLinesExporter(trace_file)) if trace_file
                         else provider_from_env())
        jwks = JWKSCache(HttpFetcher(ca_file=spec.get("jwks_ca_file")))
        issuer = spec["issuer"]
        minter = TokenMinter(self.keys, issuer, spec["token_lifetime"])
        delegation = DelegationVerifier(self.keys, issuer, trusted=spec["trusted_issuers"],
                                        jwks=jwks, leeway=spec["leeway"])
        self.reporter = Reporter(channel, spec["node"])
        tracer = self.provider.get_tracer("manul.decision") if self.provider else None
        self.point = DecisionPoint(
            lambda: self.snapshot,
            authenticator=Authenticator(jwks, audiences=tuple(spec["audiences"]),
                                        leeway=spec["leeway"],
                                        jwt_metadata_key=spec["jwt_metadata_key"]),
            delegation=delegation, minter=minter, facts=self.facts, audit=self.reporter,
            tracer=tracer, observe=self.reporter.observe, spans=records(self.provider))
        self.front = GrpcFront(self.point, spec["socket"])
        self._pending: SnapshotInputs | None = None
        self._build_lock = threading.Lock()
        self._build_wake = threading.Event()
        self._build_stop = threading.Event()
        self._builder = threading.Thread(target=self._build_loop, daemon=True,
                                         name="manul-worker-snapshot")

    def start(self, serving: bool) -> None:
        gc.freeze()
        self.reporter.start()
        self.front.set_health(serving)
        self.front.start()
        self._builder.start()

    def serve(self) -> None:
        """Apply what the agent sends until it says stop or goes away. A snapshot
        is built on a thread of its own (the latest one wins), so facts, keys and
        health sent meanwhile apply at once."""
        try:
            self._serve()
        finally:
            self._build_stop.set()
            self._build_wake.set()

    def _serve(self) -> None:
        while True:
            try:
                message = self.channel.recv()
            except ChannelClosed:
                log.info("the agent closed the channel; stopping")
                return
            kind = message[0]
            try:
                if kind == "stop":
                    return
                if kind == "snapshot":
                    with self._build_lock:
                        self._pending = message[1]
                    self._build_wake.set()
                elif kind == "ping":
                    # answered from the event loop: a wedged loop does not answer
                    self.front.call_soon(functools.partial(self._send, "pong", message[1]))
                elif kind == "keys":
                    self.keys.replace(message[1])
                elif kind == "facts":
                    self.facts.replace(message[1])
                elif kind == "health":
                    self.front.set_health(bool(message[1]))
                else:
                    log.error("unknown message `%s` from the agent; ignored", kind)
            except Exception as e:  # one bad update must not end the worker
                log.exception("could not apply `%s` from the agent", kind)
                self._send("failed", f"{kind}: {type(e).__name__}: {e}")

    def _build_loop(self) -> None:
        while not self._build_stop.is_set():
            self._build_wake.wait()
            self._build_wake.clear()
            with self._build_lock:
                inputs, self._pending = self._pending, None
            if inputs is None or self._build_stop.is_set():
                continue
            try:
                self._snapshot(inputs)
            except Exception as e:  # the agent restarts a worker that falls behind
                log.exception("could not build snapshot %d", inputs.version)
                self._send("failed", f"snapshot: {type(e).__name__}: {e}")

    def _snapshot(self, inputs: SnapshotInputs) -> None:
        t = time.perf_counter()
        self.snapshot = inputs.build()
        gc.collect()  # the previous snapshot, once no decision holds it
        gc.freeze()
        log.debug("snapshot %d in force (built in %.2f s)", inputs.version,
                  time.perf_counter() - t)

    def _send(self, *message: Any) -> None:
        with contextlib.suppress(ChannelClosed):
            self.channel.send(*message)

    def stop(self) -> None:
        self.front.stop(grace=1.0)
        self.reporter.stop()
        if self.provider is not None:
            self.provider.shutdown()


def _die_with_parent() -> None:
    try:
        libc = ctypes.CDLL(None, use_errno=True)
        libc.prctl(_PR_SET_PDEATHSIG, signal.SIGKILL, 0, 0, 0)
    except (OSError, AttributeError):  # not Linux: the closed channel still ends us
        pass


def main(argv: list[str]) -> int:
    if len(argv) != 2 or not argv[1].isdigit():
        print("usage: python -m agent.decision.worker FD (started by manul, not by hand)",
              file=sys.stderr)
        return 2
    _die_with_parent()
    signal.signal(signal.SIGINT, signal.SIG_IGN)  # the agent stops us (a Ctrl-C reaches both)
    channel = Channel(socket.socket(fileno=int(argv[1])), json_out=True)
    try:
        first = channel.recv()
    except ChannelClosed:
        return 1
    if first[0] != "init":
        return 2
    _, spec, inputs, keys, facts, serving = first
    setup_logging(spec.get("log_level", logging.WARNING), spec.get("log_format", "text"))
    try:
        worker = Worker(spec, inputs, keys, facts, channel)
        worker.start(serving)
    except Exception as e:
        log.exception("the decision worker could not start")
        with contextlib.suppress(ChannelClosed):
            channel.send("failed", f"{type(e).__name__}: {e}")
        return 1
    channel.send("ready", os.getpid())
    try:
        worker.serve()
    finally:
        worker.stop()
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv))
