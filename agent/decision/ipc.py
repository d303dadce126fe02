"""Messages between the agent and its decision workers, over a private socket pair.

A message is a tuple whose first item names it, behind a 4-byte length.
The socket pair is made by the agent and inherited by the worker it
starts; nothing else can reach it (no path, no listener).

Agent to worker, pickled (the worker trusts its agent, and a snapshot is
rich data): `("init", spec, SnapshotInputs, keys, facts, serving)`,
`("snapshot", SnapshotInputs)`, `("keys", document)`, `("facts", {key:
CallerFacts})`, `("health", serving)`, `("ping", n)`, `("stop",)`.
Worker to agent, JSON (the agent takes only records and counts from a
process that parses gateway input, never objects): `("ready", pid)`,
`("pong", n)`, `("audit", [line, ...])`, `("metrics", {decision: count},
[seconds, ...])`, `("failed", why)`.
"""

from __future__ import annotations

import contextlib
import json
import pickle
import socket
import struct
import threading
from typing import Any

_LEN = struct.Struct("!I")
MAX_MESSAGE = 256 << 20  # a registry and policy set of this size would be refused earlier


class ChannelClosed(Exception):
    """The other end closed the channel (or went away)."""


class Channel:
    """One end of a socket pair: `send` from any thread, `recv` from one."""

    def __init__(self, sock: socket.socket, *, json_in: bool = False,
                 json_out: bool = False) -> None:
        """`json_in`/`json_out`: this end receives/sends JSON (else pickle)."""
        self.sock = sock
        self.json_in = json_in
        self.json_out = json_out
        self._send_lock = threading.Lock()

    def send(self, *message: Any) -> None:
        data = (json.dumps(message, separators=(",", ":")).encode() if self.json_out
                else pickle.dumps(message, protocol=pickle.HIGHEST_PROTOCOL))
        try:
            with self._send_lock:
                self.sock.sendall(_LEN.pack(len(data)) + data)
        except OSError as e:
            raise ChannelClosed(str(e)) from e

    def recv(self) -> tuple[Any, ...]:
        size = _LEN.unpack(self._read(_LEN.size))[0]
        if size > MAX_MESSAGE:
            raise ChannelClosed(f"a message of {size} bytes: the other end is not a worker")
        raw = self._read(size)
        try:
            message = tuple(json.loads(raw)) if self.json_in else pickle.loads(raw)
        except (ValueError, TypeError) as e:
            raise ChannelClosed(f"a malformed message: {e}") from e
        if not isinstance(message, tuple) or not message or not isinstance(message[0], str):
            raise ChannelClosed("a malformed message")
        return message

    def _read(self, n: int) -> bytes:
        buf = bytearray()
        while len(buf) < n:
            try:
                chunk = self.sock.recv(min(n - len(buf), 1 << 20))
            except OSError as e:
                raise ChannelClosed(str(e)) from e
            if not chunk:
                raise ChannelClosed("end of stream")
            buf += chunk
        return bytes(buf)

    def close(self) -> None:
        with contextlib.suppress(OSError):
            self.sock.shutdown(socket.SHUT_RDWR)
        self.sock.close()
