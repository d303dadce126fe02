"""The agent's side of the decision workers: start them, keep them current, restart them.

`WorkerPool` starts `n` worker processes (`agent.decision.worker`), each
with a socket pair to the agent, and sends each what it decides with (the
snapshot's inputs, the signing keys, the node facts, the health to
answer). When one of those changes in the agent, `push(kind)` sends the
latest state to every worker from one sender thread (a stuck worker cannot
block the agent's writers; pushes coalesce). One thread per worker reads
what it sends back: audit records go to the agent's one audit log,
decision counts and latencies to the agent's metrics.

A worker that dies is logged (with its exit status) and started again,
after 1 s, doubling up to 30 s while it keeps dying; meanwhile `PeerGate`
sends new connections to the live ones (`live()`), and with none alive the
decision point reports NOT_SERVING.
"""

from __future__ import annotations

import contextlib
import logging
import os
import socket
import subprocess
import sys
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from agent.decision.ipc import Channel, ChannelClosed
from agent.errors import ConfigError
from agent.telemetry.audit import AuditLog
from agent.telemetry.logs import JsonFormatter

log = logging.getLogger(__name__)

START_TIMEOUT = 120.0  # a worker parses the whole policy set before it is ready
STOP_TIMEOUT = 5.0
_KINDS = ("snapshot", "keys", "facts", "health")


def default_workers() -> int:
    """Two workers where the agent may run on two CPUs or more, else none (decide in-process)."""
    try:
        cpus = len(os.sched_getaffinity(0))
    except (AttributeError, OSError):
        cpus = os.cpu_count() or 1
    return 2 if cpus >= 2 else 0


@dataclass
class _Slot:
    index: int
    socket: str
    proc: subprocess.Popen[bytes] | None = None
    channel: Channel | None = None
    ready: threading.Event = field(default_factory=threading.Event)
    pid: int = 0
    restarts: int = 0
    last_exit: str = ""
    failure: str = ""
    sent: dict[str, Any] = field(default_factory=dict)  # what this worker holds, per kind


class WorkerPool:
    def __init__(self, n: int, directory: str, spec: dict[str, Any],
                 state: Callable[[str], Any], *, audit: AuditLog | None,
                 observe: Callable[[dict[str, int], list[float]], None],
                 on_change: Callable[[], None] | None = None) -> None:
        """`state(kind)`: the current value of each of `_KINDS`; `observe(counts,
        latencies)`: a batch of decisions for the metrics; `on_change()`: a worker
        became ready or died (health may change)."""
        if n < 1:
            raise ValueError("a worker pool needs at least one worker")
        self.spec = dict(spec, log_level=logging.getLogger().getEffectiveLevel(),
                         log_format=_log_format())
        self.state = state
        self.audit = audit
        self.observe = observe
        self.on_change = on_change
        self.slots = [_Slot(i, os.path.join(directory, f"worker-{i}.sock")) for i in range(n)]
        self._stopping = threading.Event()
        self._dirty: set[str] = set()
        self._dirty_lock = threading.Lock()
        self._wake = threading.Event()
        self._threads: list[threading.Thread] = []

    # -- lifecycle ---------------------------------------------------------

    def start(self, timeout: float = START_TIMEOUT) -> None:
        """Start every worker and wait until each is ready; ConfigError if one is not."""
        for slot in self.slots:
            t = threading.Thread(target=self._supervise, args=(slot,), daemon=True,
                                 name=f"manul-authz-worker-{slot.index}")
            self._threads.append(t)
            t.start()
        sender = threading.Thread(target=self._send_loop, daemon=True,
                                  name="manul-authz-push")
        self._threads.append(sender)
        sender.start()
        deadline = time.monotonic() + timeout
        for slot in self.slots:
            while not slot.ready.wait(0.1):
                if slot.failure or time.monotonic() > deadline:
                    why = slot.failure or f"not ready after {timeout:.0f} s"
                    self.stop()
                    raise ConfigError(f"decision worker {slot.index} did not start: {why}")

    def stop(self) -> None:
        self._stopping.set()
        self._wake.set()
        for slot in self.slots:
            ch = slot.channel
            if ch is not None:
                with contextlib.suppress(ChannelClosed):
                    ch.send("stop")
        for slot in self.slots:
            proc = slot.proc
            if proc is None:
                continue
            try:
                proc.wait(timeout=STOP_TIMEOUT)
            except subprocess.TimeoutExpired:
                log.warning("decision worker %d (pid %d) did not stop; killing it",
                            slot.index, proc.pid)
                proc.kill()
                proc.wait()
        for t in self._threads:
            t.join(timeout=STOP_TIMEOUT)

    # -- what the gate and health read -------------------------------------

    def live(self) -> list[str]:
        """The sockets of the workers ready to decide."""
        return [s.socket for s in self.slots if s.ready.is_set()]

    def describe(self) -> dict[str, Any]:
        return {"configured": len(self.slots), "ready": len(self.live()),
                "workers": [{"pid": s.pid, "ready": s.ready.is_set(), "restarts": s.restarts,
                             "last_exit": s.last_exit} for s in self.slots]}

    # -- keeping workers current ---------------------------------------------

    def push(self, kind: str) -> None:
        """Send the current `kind` to every worker soon (coalesced, never blocking)."""
        if kind not in _KINDS:
            raise ValueError(f"unknown state `{kind}`")
        with self._dirty_lock:
            self._dirty.add(kind)
        self._wake.set()

    def _send_loop(self) -> None:
        while not self._stopping.is_set():
            self._wake.wait()
            self._wake.clear()
            with self._dirty_lock:
                kinds, self._dirty = self._dirty, set()
            for kind in _KINDS:  # snapshot before health: a worker serves what it has
                if kind not in kinds or self._stopping.is_set():
                    continue
                try:
                    value = self.state(kind)
                except Exception:
                    log.exception("cannot read the %s for the decision workers", kind)
                    continue
                for slot in self.slots:
                    ch = slot.channel
                    if ch is None or not slot.ready.is_set() or _holds(slot, kind, value):
                        continue
                    # a failed send: its supervisor sees it die and restarts it
                    with contextlib.suppress(ChannelClosed):
                        ch.send(kind, value)
                        slot.sent[kind] = value

    # -- one worker's life -----------------------------------------------------

    def _supervise(self, slot: _Slot) -> None:
        delay = 1.0
        while not self._stopping.is_set():
            started = time.monotonic()
            try:
                self._run(slot)
            except Exception as e:  # could not even start it: try again later
                slot.failure = f"{type(e).__name__}: {e}"
                log.exception("decision worker %d could not be started", slot.index)
            if self._stopping.is_set():
                return
            if time.monotonic() - started > 60:
                delay = 1.0  # it ran a while: a fresh failure, not a crash loop
            slot.restarts += 1
            log.error("decision worker %d stopped (%s); starting it again in %.0f s",
                      slot.index, slot.last_exit or slot.failure or "unknown", delay)
            if self._stopping.wait(delay):
                return
            delay = min(30.0, delay * 2)

    def _run(self, slot: _Slot) -> None:
        with contextlib.suppress(FileNotFoundError):
            os.unlink(slot.socket)  # a stale socket of a worker that died
        ours, theirs = socket.socketpair(socket.AF_UNIX, socket.SOCK_STREAM)
        try:
            proc = subprocess.Popen(
                [sys.executable, "-m", "agent.decision.worker", str(theirs.fileno())],
                pass_fds=(theirs.fileno(),), stdin=subprocess.DEVNULL)
        finally:
            theirs.close()
        channel = Channel(ours)
        slot.proc, slot.channel, slot.pid = proc, channel, proc.pid
        try:
            slot.sent = {k: self.state(k) for k in _KINDS}
            channel.send("init", dict(self.spec, socket=slot.socket),
                         *(slot.sent[k] for k in _KINDS))
            self._read(slot, channel)
        finally:
            was_ready = slot.ready.is_set()
            slot.ready.clear()
            slot.channel = None
            channel.close()
            try:
                code = proc.wait(timeout=STOP_TIMEOUT)
            except subprocess.TimeoutExpired:
                proc.kill()
                code = proc.wait()
            slot.last_exit = (f"killed by signal {-code}" if code < 0
                              else f"exit status {code}")
            if was_ready and self.on_change is not None:
                self.on_change()

    def _read(self, slot: _Slot, channel: Channel) -> None:
        while True:
            try:
                message = channel.recv()
            except ChannelClosed:
                return
            kind = message[0]
            if kind == "audit":
                if self.audit is not None:
                    self.audit.append(message[1])
            elif kind == "metrics":
                self.observe(message[1], message[2])
            elif kind == "ready":
                slot.failure = ""
                slot.ready.set()
                log.info("decision worker %d ready (pid %d)", slot.index, slot.pid)
                # what changed while it started reaches it now (nothing else is resent)
                for k in _KINDS:
                    self.push(k)
                if self.on_change is not None:
                    self.on_change()
            elif kind == "failed":
                slot.failure = str(message[1])
                log.error("decision worker %d: %s", slot.index, slot.failure)
            else:
                log.error("decision worker %d sent an unknown message `%s`", slot.index, kind)


def _holds(slot: _Slot, kind: str, value: Any) -> bool:
    """The worker has `value` already: the same snapshot inputs (one object per
    snapshot: comparing them whole would cost a walk of the registry), or an
    equal key ring, facts map or health."""
    if kind not in slot.sent:
        return False
    held = slot.sent[kind]
    return held is value if kind == "snapshot" else bool(held == value)


def _log_format() -> str:
    return "json" if any(isinstance(h.formatter, JsonFormatter)
                         for h in logging.getLogger().handlers) else "text"
