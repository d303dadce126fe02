"""The public Unix socket: mode 0660, and a peer credential check at accept time.

gRPC's C core accepts its own connections and tells a handler nothing about
the peer of a Unix socket (`context.peer()` is just `unix:`), so the check
happens in front of it: `PeerGate` owns the socket the gateway connects to,
reads each new connection's SO_PEERCRED (uid, gid, pid, filled in by the
kernel at connect time), closes it at once unless the uid or gid is allowed,
and otherwise relays the bytes (with splice(2), no copies through Python)
to the gRPC server, which listens in a private 0700 directory nobody else
can enter.

The socket is bound inside that private directory, given mode 0660 (and the
configured group), and only then renamed into place, so it is never
reachable with looser permissions, not even for an instant. A path that
still has a live server behind it is refused rather than stolen.
"""

from __future__ import annotations

import contextlib
import logging
import os
import socket
import struct
import tempfile
import threading
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

from agent.errors import ConfigError

log = logging.getLogger(__name__)

_UCRED = struct.Struct("3i")  # pid, uid, gid
_CHUNK = 1 << 16


@dataclass(frozen=True)
class PeerCred:
    pid: int
    uid: int
    gid: int


@dataclass(frozen=True)
class PeerPolicy:
    """Allowed peers: any listed uid, or any listed gid."""

    uids: frozenset[int]
    gids: frozenset[int]

    def allows(self, cred: PeerCred) -> bool:
        return cred.uid in self.uids or cred.gid in self.gids

    @classmethod
    def default(cls, group: int | None = None) -> PeerPolicy:
        """Root and this process's user, and the socket's group."""
        return cls(frozenset({0, os.geteuid()}),
                   frozenset({group if group is not None else os.getegid()}))


def peer_cred(sock: socket.socket) -> PeerCred:
    raw = sock.getsockopt(socket.SOL_SOCKET, socket.SO_PEERCRED, _UCRED.size)
    pid, uid, gid = _UCRED.unpack(raw)
    return PeerCred(pid, uid, gid)


def _alive(path: Path) -> bool:
    s = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    try:
        s.settimeout(0.5)
        s.connect(str(path))
        return True
    except OSError:
        return False
    finally:
        s.close()


def bind_private(path: Path, mode: int = 0o660, group: int | None = None,
                 backlog: int = 128) -> socket.socket:
    """A listening socket at `path` that has `mode` (and `group`) from its first instant."""
    path.parent.mkdir(parents=True, exist_ok=True, mode=0o755)
    if path.exists() or path.is_symlink():
        if _alive(path):
            raise ConfigError(f"`{path}`: another server is listening on this socket")
        if not path.is_socket():
            raise ConfigError(f"`{path}` exists and is not a socket; not replacing it")
    private = tempfile.mkdtemp(prefix=".manul-", dir=path.parent)
    tmp = os.path.join(private, "s")
    sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    try:
        sock.bind(tmp)
        os.chmod(tmp, mode)
        if group is not None:
            os.chown(tmp, -1, group)
        os.replace(tmp, path)
        sock.listen(backlog)
    except OSError as e:
        sock.close()
        with contextlib.suppress(OSError):
            os.unlink(tmp)
        raise ConfigError(f"`{path}`: cannot create the socket: {e.strerror}") from e
    finally:
        os.rmdir(private)
    return sock


class _Relay:
    """One accepted connection spliced to one connection to the gRPC server."""

    def __init__(self, outer: socket.socket, inner: socket.socket,
                 done: Callable[[_Relay], None]) -> None:
        self.outer, self.inner = outer, inner
        self._left = 2
        self._lock = threading.Lock()
        self._done = done

    def start(self) -> None:
        for a, b in ((self.outer, self.inner), (self.inner, self.outer)):
            threading.Thread(target=self._pump, args=(a, b), daemon=True,
                             name="manul-authz-relay").start()

    def _pump(self, src: socket.socket, dst: socket.socket) -> None:
        r, w = os.pipe()
        try:
            while True:
                n = os.splice(src.fileno(), w, _CHUNK)
                if n == 0:
                    break
                while n:
                    n -= os.splice(r, dst.fileno(), n)
        except OSError:
            pass  # either side went away: tear both down below
        finally:
            os.close(r)
            os.close(w)
            for s in (dst, src):
                with contextlib.suppress(OSError):
                    s.shutdown(socket.SHUT_RDWR)
            with self._lock:
                self._left -= 1
                last = self._left == 0
            if last:
                self.outer.close()
                self.inner.close()
                self._done(self)

    def close(self) -> None:
        for s in (self.outer, self.inner):
            with contextlib.suppress(OSError):
                s.shutdown(socket.SHUT_RDWR)


class PeerGate:
    def __init__(self, path: str | Path, upstream: str, policy: PeerPolicy, *,
                 mode: int = 0o660, group: int | None = None,
                 on_reject: Callable[[PeerCred], None] | None = None) -> None:
        self.path = Path(path)
        self.upstream = upstream  # the gRPC server's private socket path
        self.policy = policy
        self.mode = mode
        self.group = group
        self.on_reject = on_reject
        self.rejected = 0
        self._sock: socket.socket | None = None
        self._relays: set[_Relay] = set()
        self._lock = threading.Lock()
        self._thread: threading.Thread | None = None

    def start(self) -> None:
        self._sock = bind_private(self.path, self.mode, self.group)
        self._thread = threading.Thread(target=self._accept_loop, daemon=True,
                                        name="manul-authz-accept")
        self._thread.start()

    def _accept_loop(self) -> None:
        listener = self._sock
        assert listener is not None
        while True:
            try:
                conn, _ = listener.accept()
            except OSError:
                return  # stop() shut the listener down
            try:
                self._admit(conn)
            except OSError as e:
                log.warning("dropping a connection on %s: %s", self.path, e)
                conn.close()

    def _admit(self, conn: socket.socket) -> None:
        cred = peer_cred(conn)
        if not self.policy.allows(cred):
            self.rejected += 1
            log.warning("refused a connection on %s from uid %d gid %d pid %d: not in the "
                        "allow-list", self.path, cred.uid, cred.gid, cred.pid)
            if self.on_reject is not None:
                self.on_reject(cred)  # recorded before the peer can see the refusal
            conn.close()
            return
        inner = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        try:
            inner.connect(self.upstream)
        except OSError:
            inner.close()
            raise
        relay = _Relay(conn, inner, self._forget)
        with self._lock:
            self._relays.add(relay)
        relay.start()

    def _forget(self, relay: _Relay) -> None:
        with self._lock:
            self._relays.discard(relay)

    def stop(self) -> None:
        if self._sock is not None:
            with contextlib.suppress(OSError):
                self._sock.shutdown(socket.SHUT_RDWR)
            self._sock.close()
            self._sock = None
        if self._thread is not None:
            self._thread.join(timeout=2)
        with self._lock:
            relays = list(self._relays)
        for r in relays:
            r.close()
        with contextlib.suppress(OSError):
            self.path.unlink()
