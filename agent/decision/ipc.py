"""Messages between the agent and its decision workers, over a private socket pair.

A message is a tuple whose first item names it, pickled, behind a 4-byte
length. Pickle is safe here only because both ends are the same program:
the socket pair is made by the agent and inherited by the worker it
starts, and nothing else can reach it (no path, no listener).

Agent to worker: `("snapshot", SnapshotInputs)`, `("keys", document)`,
`("facts", {key: CallerFacts})`, `("health", serving)`, `("stop",)`.
Worker to agent: `("ready",)`, `("audit", [(kind, fields), ...])`,
`("metrics", {decision: count}, [seconds, ...])`, `("failed", why)`.
"""

from __future__ import annotations

import contextlib
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

    def __init__(self, sock: socket.socket) -> None:
        self.sock = sock
        self._send_lock = threading.Lock()

    def send(self, *message: Any) -> None:
        data = pickle.dumps(message, protocol=pickle.HIGHEST_PROTOCOL)
        try:
            with self._send_lock:
                self.sock.sendall(_LEN.pack(len(data)) + data)
        except OSError as e:
            raise ChannelClosed(str(e)) from e

    def recv(self) -> tuple[Any, ...]:
        size = _LEN.unpack(self._read(_LEN.size))[0]
        if size > MAX_MESSAGE:
            raise ChannelClosed(f"a message of {size} bytes: the other end is not a worker")
        message = pickle.loads(self._read(size))
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
