"""The public socket: created 0660, peers checked by SO_PEERCRED at accept time."""

from __future__ import annotations

import json
import os
import shutil
import stat
import subprocess
import tempfile
from collections.abc import Iterator
from pathlib import Path

import grpc
import pytest

from agent.decision.peer import PeerPolicy
from agent.errors import ConfigError
from tests.unit.decision.authz_helpers import Running, mcp_call, start_server

NOBODY = 65534
# the venv's interpreter may live where other users cannot read (root's home)
SYSTEM_PYTHON = next((p for p in ("/usr/bin/python3", "/usr/local/bin/python3")
                      if os.access(p, os.X_OK)), "")
AS_OTHER_USER = pytest.mark.skipif(
    os.geteuid() != 0 or not SYSTEM_PYTHON,
    reason="needs root and a system python3 to connect as another user")
H2_PROBE = r"""
import socket, sys
s = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
s.settimeout(5)
s.connect(sys.argv[1])
try:
    # the HTTP/2 client preface and an empty SETTINGS frame
    s.sendall(b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n" + bytes([0, 0, 0, 4, 0, 0, 0, 0, 0]))
    data = s.recv(64)
except OSError:
    data = b""
print("answered" if data else "closed")
"""


def test_refused_peer_gets_no_answer(tmp_path: Path, folders: tuple[Path, Path]) -> None:
    # an allow-list without this process's uid and gid: our own connection is refused
    r = start_server(tmp_path, *folders, allow_uids=frozenset({12345}),
                     allow_gids=frozenset({12345}))
    try:
        with pytest.raises(grpc.RpcError) as err:
            r.ask(mcp_call("get_balance"))
        assert err.value.code() == grpc.StatusCode.UNAVAILABLE
        assert r.server.gate.rejected >= 1
        records = [json.loads(x) for x in r.audit.read_text().splitlines()]
        refused = [x for x in records if x["kind"] == "authz-peer-refused"]
        assert refused and refused[0]["uid"] == os.geteuid() and refused[0]["pid"] > 0
        assert not [x for x in records if x["kind"] == "authz"]  # nothing was decided
    finally:
        r.server.stop()


@pytest.fixture
def open_dir() -> Iterator[Path]:
    """A directory other users may enter (pytest's tmp_path is 0700)."""
    d = Path(tempfile.mkdtemp(prefix="manul-peer-"))
    d.chmod(0o755)
    yield d
    shutil.rmtree(d, ignore_errors=True)


def _probe_as_nobody(sock: str) -> str:
    out = subprocess.run([SYSTEM_PYTHON, "-c", H2_PROBE, sock], user=NOBODY, group=NOBODY,
                         capture_output=True, text=True, timeout=30, check=True)
    return out.stdout.strip()


@AS_OTHER_USER
def test_other_user_is_checked_by_peer_credentials(open_dir: Path,
                                                   folders: tuple[Path, Path]) -> None:
    r = start_server(open_dir, *folders)
    try:
        os.chmod(r.socket, 0o666)  # let the file mode through, so only SO_PEERCRED decides
        assert _probe_as_nobody(r.socket) == "closed"
        assert r.server.gate.rejected == 1
    finally:
        r.server.stop()
    allowed = start_server(open_dir, *folders, allow_uids=frozenset({0, NOBODY}))
    try:
        os.chmod(allowed.socket, 0o666)
        assert _probe_as_nobody(allowed.socket) == "answered"
    finally:
        allowed.server.stop()


@AS_OTHER_USER
def test_file_mode_keeps_others_out(open_dir: Path, folders: tuple[Path, Path]) -> None:
    r = start_server(open_dir, *folders, allow_uids=frozenset({0, NOBODY}))
    try:
        assert stat.S_IMODE(os.stat(r.socket).st_mode) == 0o660
        with pytest.raises(subprocess.CalledProcessError) as err:
            _probe_as_nobody(r.socket)
        assert "PermissionError" in err.value.stderr
    finally:
        r.server.stop()


def test_a_live_socket_is_not_stolen(running: Running, tmp_path: Path,
                                     folders: tuple[Path, Path]) -> None:
    with pytest.raises(ConfigError, match="another server is listening"):
        start_server(tmp_path, *folders)
    assert running.ask(mcp_call("get_balance"))["allowed"]


def test_stale_socket_is_replaced(tmp_path: Path, folders: tuple[Path, Path]) -> None:
    r = start_server(tmp_path, *folders)
    sock = r.socket
    r.server.stop()
    import socket as s
    stale = s.socket(s.AF_UNIX, s.SOCK_STREAM)
    stale.bind(sock)  # a socket file nobody listens on, as after a crash
    stale.close()
    again = start_server(tmp_path, *folders)
    try:
        assert again.ask(mcp_call("get_balance"))["allowed"]
    finally:
        again.server.stop()


def test_default_policy() -> None:
    p = PeerPolicy.default(group=4242)
    assert 0 in p.uids and os.geteuid() in p.uids and p.gids == frozenset({4242})
