"""The agent's side of the decision workers: start them, keep them current, restart them.

`WorkerPool` starts `n` worker processes (`agent.decision.worker`), each
with a socket pair to the agent, and sends each what it decides with (the
snapshot's inputs, the signing keys, the node facts, the health to
answer). When one of those changes in the agent, `push(kind)` marks it for
every worker; each worker has a sender thread of its own that sends the
latest value (pushes coalesce; small and urgent ones — facts, health,
keys — before a snapshot), so neither the agent's writers nor the other
workers ever wait on a slow worker. One thread per worker reads what it
sends back (JSON, not pickle: the agent trusts nothing a worker says
beyond records and counts): audit lines go to the agent's one audit log,
decision counts and latencies to the agent's metrics.

Every second each worker is asked for a `pong` from its event loop; one
that does not answer within `LIVENESS_TIMEOUT` (wedged, stopped, or too
far behind on its updates) is taken out of rotation and killed. A worker
that dies, or that reports it could not apply an update, is logged (with
its exit status) and started again after 1 s, doubling up to 30 s while it
keeps dying; meanwhile `PeerGate` sends new connections to the live ones
(`live()`), and with none alive the decision point reports NOT_SERVING.
Workers run `python -P` from `/`, so nothing in the agent's working
directory can stand in for Manul's code.
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
PING_EVERY = 1.0
LIVENESS_TIMEOUT = 10.0  # seconds without a pong before a ready worker is killed
_KINDS = ("snapshot", "keys", "facts", "health")
_SEND_ORDER = ("facts", "health", "keys", "snapshot")  # urgent and small first


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
    dirty: set[str] = field(default_factory=set)  # kinds to check and send
    wake: threading.Event = field(default_factory=threading.Event)
    lock: threading.Lock = field(default_factory=threading.Lock)
    pong_at: float = 0.0  # monotonic: the last pong (or when it became ready)


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
        self.liveness_timeout = LIVENESS_TIMEOUT
        self._stopping = threading.Event()
        self._threads: list[threading.Thread] = []

    # -- lifecycle ---------------------------------------------------------

    def start(self, timeout: float = START_TIMEOUT) -> None:
        """Start every worker and wait until each is ready; ConfigError if one is not."""
        for slot in self.slots:
            t = threading.Thread(target=self._supervise, args=(slot,), daemon=True,
                                 name=f"manul-authz-worker-{slot.index}")
            self._threads.append(t)
            t.start()
        watchdog = threading.Thread(target=self._watch, daemon=True,
                                    name="manul-authz-watchdog")
        self._threads.append(watchdog)
        watchdog.start()
        deadline = time.monotonic() + timeout
        for slot in self.slots:
            while not slot.ready.wait(0.1):
                if slot.failure or time.monotonic() > deadline:
                    why = slot.failure or f"not ready after {timeout:.0f} s"
                    self.stop()
                    raise ConfigError(f"decision worker {slot.index} did not start: {why}")

    def stop(self) -> None:
        self._stopping.set()
        for slot in self.slots:
            slot.wake.set()
            with slot.lock:
                ch = slot.channel
            if ch is not None:
                with contextlib.suppress(ChannelClosed):
                    ch.send("stop")
        for slot in self.slots:
            with slot.lock:
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
                             "last_exit": s.last_exit, "failure": s.failure}
                            for s in self.slots]}

    # -- keeping workers current ---------------------------------------------

    def push(self, kind: str) -> None:
        """Send the current `kind` to every worker soon (coalesced, never blocking)."""
        if kind not in _KINDS:
            raise ValueError(f"unknown state `{kind}`")
        for slot in self.slots:
            with slot.lock:
                slot.dirty.add(kind)
            slot.wake.set()

    def _send_loop(self, slot: _Slot, channel: Channel, gone: threading.Event) -> None:
        """One worker's sender, for one process's life: its updates and its pings."""
        seq = 0
        next_ping = time.monotonic()
        while not (self._stopping.is_set() or gone.is_set()):
            slot.wake.wait(max(0.0, next_ping - time.monotonic()))
            slot.wake.clear()
            try:
                if slot.ready.is_set():
                    with slot.lock:
                        kinds, slot.dirty = slot.dirty, set()
                    for kind in _SEND_ORDER:
                        if kind in kinds and not (self._stopping.is_set() or gone.is_set()):
                            value = self.state(kind)
                            if not _holds(slot, kind, value):
                                channel.send(kind, value)
                                slot.sent[kind] = value
                if time.monotonic() >= next_ping:
                    seq += 1
                    channel.send("ping", seq)
                    next_ping = time.monotonic() + PING_EVERY
            except ChannelClosed:
                return  # it died: its supervisor restarts it
            except Exception:  # never let one bad value end this worker's updates
                log.exception("cannot update decision worker %d; restarting it", slot.index)
                self._kill(slot, "an update could not be sent")
                return

    def _watch(self) -> None:
        """Kill a ready worker whose event loop stopped answering pings."""
        while not self._stopping.wait(PING_EVERY / 2):
            now = time.monotonic()
            for slot in self.slots:
                if slot.ready.is_set() and now - slot.pong_at > self.liveness_timeout:
                    log.error("decision worker %d (pid %d) has not answered for %.0f s; "
                              "restarting it", slot.index, slot.pid, now - slot.pong_at)
                    self._kill(slot, f"no answer for {now - slot.pong_at:.0f} s")

    def _kill(self, slot: _Slot, why: str) -> None:
        slot.failure = why
        was_ready = slot.ready.is_set()
        slot.ready.clear()
        with slot.lock:
            proc = slot.proc
        if proc is not None:
            with contextlib.suppress(OSError):
                proc.kill()
        if was_ready and self.on_change is not None:
            self.on_change()

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
            # -P and cwd /: the agent's working directory is not on the worker's path
            proc = subprocess.Popen(
                [sys.executable, "-P", "-m", "agent.decision.worker", str(theirs.fileno())],
                pass_fds=(theirs.fileno(),), stdin=subprocess.DEVNULL, cwd="/")
        finally:
            theirs.close()
        channel = Channel(ours, json_in=True)
        with slot.lock:
            slot.proc, slot.channel, slot.pid = proc, channel, proc.pid
        gone = threading.Event()
        sender = threading.Thread(target=self._send_loop, args=(slot, channel, gone),
                                  daemon=True, name=f"manul-authz-push-{slot.index}")
        try:
            if self._stopping.is_set():  # stop() came while it was being started
                return
            slot.sent = {k: self.state(k) for k in _KINDS}
            channel.send("init", dict(self.spec, socket=slot.socket),
                         *(slot.sent[k] for k in _KINDS))
            sender.start()
            self._read(slot, channel)
        except ChannelClosed:
            pass
        finally:
            gone.set()
            slot.wake.set()
            was_ready = slot.ready.is_set()
            slot.ready.clear()
            with slot.lock:
                slot.channel = None
            channel.close()
            if self._stopping.is_set() and proc.poll() is None:
                with contextlib.suppress(OSError):
                    proc.kill()  # stopping: it was told to stop, or started too late
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
                lines = message[1] if len(message) == 2 else None
                if not isinstance(lines, list) or not all(
                        isinstance(x, str) and x.endswith("\n") and x.count("\n") == 1
                        for x in lines):
                    log.error("decision worker %d sent malformed audit records; dropped",
                              slot.index)
                elif self.audit is not None:
                    self.audit.append(lines)
            elif kind == "metrics":
                counts, lat = (message[1], message[2]) if len(message) == 3 else ({}, None)
                if (isinstance(counts, dict) and isinstance(lat, list)
                        and all(k in ("allow", "deny") and isinstance(v, int)
                                for k, v in counts.items())
                        and all(isinstance(x, int | float) for x in lat)):
                    self.observe(counts, [float(x) for x in lat])
                else:
                    log.error("decision worker %d sent malformed metrics; dropped", slot.index)
            elif kind == "pong":
                slot.pong_at = time.monotonic()
            elif kind == "ready":
                slot.failure = ""
                slot.pong_at = time.monotonic()
                slot.ready.set()
                log.info("decision worker %d ready (pid %d)", slot.index, slot.pid)
                # what changed while it started reaches it now (nothing else is resent)
                for k in _KINDS:
                    self.push(k)
                if self.on_change is not None:
                    self.on_change()
            elif kind == "failed":
                # it kept deciding on what it had: a worker behind the agent is
                # restarted (and then starts from the agent's state)
                log.error("decision worker %d: %s", slot.index, message[1])
                if slot.ready.is_set():
                    self._kill(slot, f"could not apply an update: {message[1]}")
                else:
                    slot.failure = str(message[1])
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
