"""The public Unix socket: mode 0660, and a peer credential check at accept time.

gRPC's C core accepts its own connections and tells a handler nothing about
the peer of a Unix socket (`context.peer()` is just `unix:`), so the check
happens in front of it: `PeerGate` owns the socket the gateway connects to,
reads each new connection's SO_PEERCRED (uid, gid, pid, filled in by the
kernel at connect time) and SO_PEERGROUPS (its supplementary groups), closes
it at once unless the uid, the gid or a supplementary group is allowed,
and otherwise relays the bytes (with splice(2), no copies through Python)
to a gRPC server, which listens in a private 0700 directory nobody else
can enter: the decision point's own, or, with decision workers, the worker
with the fewest connections (a gateway holds a few long-lived HTTP/2
connections, one per proxy thread: they spread over the workers).

The socket is bound inside that private directory, given mode 0660 (and the
configured group), and only then renamed into place, so it is never
reachable with looser permissions, not even for an instant. A path that
still has a live server behind it is refused rather than stolen.
"""

from __future__ import annotations

import contextlib
import errno
import logging
import os
import resource
import socket
import struct
import tempfile
import threading
from collections import Counter
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path

from agent.errors import ConfigError

log = logging.getLogger(__name__)

_UCRED = struct.Struct("3i")  # pid, uid, gid
_SO_PEERGROUPS = getattr(socket, "SO_PEERGROUPS", 59)
_MAX_GROUPS = 256  # CPython's getsockopt() reads at most 1,024 bytes
_CHUNK = 1 << 16


@dataclass(frozen=True)
class PeerCred:
    pid: int
    uid: int
    gid: int
    groups: frozenset[int] = frozenset()  # supplementary groups (SO_PEERGROUPS)


@dataclass(frozen=True)
class PeerPolicy:
    """Allowed peers: any listed uid, or any listed gid (primary or supplementary)."""

    uids: frozenset[int]
    gids: frozenset[int]

    def allows(self, cred: PeerCred) -> bool:
        return cred.uid in self.uids or cred.gid in self.gids or bool(cred.groups & self.gids)

    @classmethod
    def default(cls, group: int | None = None) -> PeerPolicy:
        """Root and this process's user, and the socket's group."""
        return cls(frozenset({0, os.geteuid()}),
                   frozenset({group if group is not None else os.getegid()}))


def peer_cred(sock: socket.socket) -> PeerCred:
    """The peer's pid, uid and gid (SO_PEERCRED) and its supplementary groups
    (SO_PEERGROUPS, Linux 4.13+), all as the kernel recorded them at connect time."""
    raw = sock.getsockopt(socket.SOL_SOCKET, socket.SO_PEERCRED, _UCRED.size)
    pid, uid, gid = _UCRED.unpack(raw)
    groups: frozenset[int] = frozenset()
    try:
        data = sock.getsockopt(socket.SOL_SOCKET, _SO_PEERGROUPS, 4 * _MAX_GROUPS)
    except OSError as e:
        if e.errno not in (errno.ENOPROTOOPT, errno.ERANGE):
            raise
        if e.errno == errno.ERANGE:
            log.warning("peer pid %d is in more than %d groups: only its uid and primary gid "
                        "are checked", pid, _MAX_GROUPS)
    else:
        groups = frozenset(struct.unpack(f"{len(data) // 4}I", data[: len(data) // 4 * 4]))
    return PeerCred(pid, uid, gid, groups)


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
    """One accepted connection spliced to one connection to the gRPC server.

    Everything it needs (the upstream connection, two pipes, two threads) is
    acquired in `open`, which either returns a running relay or releases
    whatever it took and raises: a failure never leaks a descriptor."""

    def __init__(self, outer: socket.socket, inner: socket.socket,
                 pipes: tuple[tuple[int, int], tuple[int, int]],
                 done: Callable[[_Relay], None], upstream: str = "") -> None:
        self.outer, self.inner = outer, inner
        self.upstream = upstream
        self._pipes = pipes
        self._left = 2
        self._lock = threading.Lock()
        self._done = done
        self.finished = False

    @classmethod
    def open(cls, outer: socket.socket, upstream: str,
             done: Callable[[_Relay], None]) -> _Relay:
        taken: list[int] = []
        inner = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        try:
            inner.connect(upstream)
            a = os.pipe()
            taken.extend(a)
            b = os.pipe()
            taken.extend(b)
        except OSError:
            inner.close()
            for fd in taken:
                os.close(fd)
            raise
        relay = cls(outer, inner, (a, b), done, upstream)
        relay._start()
        return relay

    def _start(self) -> None:
        pumps = [threading.Thread(target=self._pump, args=(src, dst, pipe), daemon=True,
                                  name="manul-authz-relay")
                 for src, dst, pipe in ((self.outer, self.inner, self._pipes[0]),
                                        (self.inner, self.outer, self._pipes[1]))]
        try:
            pumps[0].start()
        except RuntimeError:  # no thread could be started: nothing runs yet
            self.inner.close()
            for fd in (*self._pipes[0], *self._pipes[1]):
                os.close(fd)
            raise OSError(errno.EAGAIN, "cannot start a relay thread") from None
        try:
            pumps[1].start()
        except RuntimeError:
            # the running pump owns its pipe and the sockets: shut them down
            # and it cleans up as it ends
            with self._lock:
                self._left -= 1
            os.close(self._pipes[1][0])
            os.close(self._pipes[1][1])
            self.close()
            raise OSError(errno.EAGAIN, "cannot start a relay thread") from None

    def _pump(self, src: socket.socket, dst: socket.socket, pipe: tuple[int, int]) -> None:
        r, w = pipe
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
                self.finished = True
                self._done(self)

    def close(self) -> None:
        for s in (self.outer, self.inner):
            with contextlib.suppress(OSError):
                s.shutdown(socket.SHUT_RDWR)


# Errors taking a connection: one peer gone before we got to it (skip it),
# or the process out of descriptors, memory or threads (back off until
# some are free). Anything else is logged as unexpected and treated like
# exhaustion; only stop() ends the loop.
_PEER_GONE = {errno.ECONNABORTED, errno.EPROTO, errno.EINTR, errno.EPIPE, errno.ECONNRESET,
              errno.ENOTCONN}
_EXHAUSTED = {errno.EMFILE, errno.ENFILE, errno.ENOBUFS, errno.ENOMEM, errno.EAGAIN}
# descriptors one relayed connection holds: the accepted socket, the
# upstream one, two pipes, and the gRPC server's end of the upstream one
FDS_PER_CONNECTION = 7
_FD_RESERVE = 64  # for the gRPC server, the HTTP port, files, reloads


def default_max_connections() -> int:
    """What the descriptor limit allows, leaving room for everything else."""
    soft, _ = resource.getrlimit(resource.RLIMIT_NOFILE)
    if soft == resource.RLIM_INFINITY:
        return 4096
    return max(1, min(4096, (soft - _FD_RESERVE) // FDS_PER_CONNECTION))


class PeerGate:
    """The public socket's accept loop: peer check, connection cap, relays.

    It never stops accepting on an error: transient accept() failures back
    off (10 ms, doubling to 1 s) and retry, and `accepting` is False (health
    says NOT_SERVING) until an accept succeeds again. Beyond
    `max_connections` open relays, a new connection is closed at once
    (`shed` counts them) rather than let the process run out of
    descriptors."""

    def __init__(self, path: str | Path, upstream: str | Callable[[], Sequence[str]],
                 policy: PeerPolicy, *,
                 mode: int = 0o660, group: int | None = None,
                 on_reject: Callable[[PeerCred], None] | None = None,
                 max_connections: int | None = None,
                 on_state: Callable[[bool], None] | None = None) -> None:
        self.path = Path(path)
        # the gRPC server's private socket path, or what returns those alive now
        self.upstream = upstream
        self.policy = policy
        self.mode = mode
        self.group = group
        self.on_reject = on_reject
        self.on_state = on_state  # called with `accepting` when it changes
        self.max_connections = max_connections or default_max_connections()
        self.rejected = 0
        self.shed = 0  # connections closed at once: over max_connections
        self.accept_errors = 0
        self.unavailable = 0  # connections closed at once: no gRPC server to relay to
        self.accepting = False
        self.last_error = ""
        self._sock: socket.socket | None = None
        self._bound: int | None = None  # the inode of the socket this gate created
        self._relays: set[_Relay] = set()
        self._lock = threading.Lock()
        self._stopping = threading.Event()
        self._thread: threading.Thread | None = None

    @property
    def connections(self) -> int:
        with self._lock:
            return len(self._relays)

    def start(self) -> None:
        self._sock = bind_private(self.path, self.mode, self.group)
        self._bound = os.stat(self.path).st_ino
        self._set_accepting(True)
        self._thread = threading.Thread(target=self._accept_loop, daemon=True,
                                        name="manul-authz-accept")
        self._thread.start()

    def _set_accepting(self, ok: bool) -> None:
        if ok == self.accepting:
            return
        recovered = self.accept_errors > 0
        self.accepting = ok
        if ok and recovered:
            log.warning("accepting connections on %s again (%d failed accept() calls so far)",
                        self.path, self.accept_errors)
        if self.on_state is not None:
            try:
                self.on_state(ok)
            except Exception:  # a health hook must not stop the accept loop
                log.exception("health update failed")

    def _accept_loop(self) -> None:
        listener = self._sock
        assert listener is not None
        delay = 0.0
        while not self._stopping.is_set():
            try:
                conn, _ = listener.accept()
                self._admit(conn)
            except OSError as e:
                if self._stopping.is_set():
                    return  # stop() shut the listener down
                if e.errno in _PEER_GONE:
                    continue  # that one peer is gone; the socket is fine
                self.accept_errors += 1
                if e.errno not in _EXHAUSTED:
                    log.error("cannot take a connection on %s: %s; retrying", self.path, e)
                self.last_error = e.strerror or str(e)
                if self.accepting:
                    log.warning("cannot take connections on %s: %s (%d open); backing off",
                                self.path, self.last_error, self.connections)
                self._set_accepting(False)
                delay = min(1.0, delay * 2 if delay else 0.01)
                self._stopping.wait(delay)
                continue
            delay = 0.0
            self._set_accepting(True)

    def _admit(self, conn: socket.socket) -> None:
        try:
            cred = peer_cred(conn)
        except OSError:
            conn.close()
            raise
        if not self.policy.allows(cred):
            self.rejected += 1
            log.warning("refused a connection on %s from uid %d gid %d pid %d: not in the "
                        "allow-list", self.path, cred.uid, cred.gid, cred.pid)
            if self.on_reject is not None:
                self.on_reject(cred)  # recorded before the peer can see the refusal
            conn.close()
            return
        if self.connections >= self.max_connections:
            self.shed += 1
            if self.shed == 1 or self.shed % 1000 == 0:
                log.warning("%s: %d connections open, the most allowed; closing new ones "
                            "(%d so far)", self.path, self.max_connections, self.shed)
            conn.close()
            return
        choices = [self.upstream] if isinstance(self.upstream, str) else self.upstream()
        if not choices:
            self._unavailable(conn, "no decision worker is ready")
            return
        with self._lock:
            load = Counter(r.upstream for r in self._relays)
        relay: _Relay | None = None
        why = ""
        # the least loaded first; one that just died (not yet known) is skipped
        for target in sorted(choices, key=lambda u: load.get(u, 0)):
            try:
                relay = _Relay.open(conn, target, self._forget)
                break
            except OSError as e:
                if e.errno not in (errno.ECONNREFUSED, errno.ENOENT):
                    conn.close()
                    raise
                why = f"`{target}`: {e.strerror}"
        if relay is None:
            self._unavailable(conn, why)
            return
        with self._lock:
            if not relay.finished:  # it may be over already: then _forget ran first
                self._relays.add(relay)

    def _unavailable(self, conn: socket.socket, why: str) -> None:
        self.unavailable += 1
        if self.unavailable == 1 or self.unavailable % 1000 == 0:
            log.warning("%s: closing a connection at once: %s (%d so far)", self.path, why,
                        self.unavailable)
        conn.close()

    def _forget(self, relay: _Relay) -> None:
        with self._lock:
            self._relays.discard(relay)

    def stop(self) -> None:
        self._stopping.set()
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
        # remove our socket only: a gate that never bound, or whose path another
        # server has taken since, leaves it alone
        with contextlib.suppress(OSError):
            if self._bound is not None and os.stat(self.path).st_ino == self._bound:
                self.path.unlink()
