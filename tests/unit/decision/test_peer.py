"""The public socket: created 0660, peers checked by SO_PEERCRED at accept time."""

from __future__ import annotations

import json
import os
import shutil
import signal
import socket
import stat
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Iterator
from pathlib import Path

import grpc
import pytest
from click.testing import CliRunner
from grpc_health.v1 import health_pb2, health_pb2_grpc

from agent.cli import cli
from agent.decision.peer import PeerPolicy
from agent.errors import ConfigError
from tests.support import ROOT
from tests.unit.decision.authz_helpers import (
    ANALYST,
    FINANCE_MCP,
    Running,
    mcp_call,
    start_server,
)

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
                         extra_groups=[],
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


def _health(sock: str) -> str:
    with grpc.insecure_channel(f"unix:{sock}") as ch:
        resp = health_pb2_grpc.HealthStub(ch).Check(health_pb2.HealthCheckRequest(), timeout=5)
        return health_pb2.HealthCheckResponse.ServingStatus.Name(resp.status)


def _idle(sock: str, n: int) -> list[socket.socket]:
    """Up to n idle connections (connects that would block are given up)."""
    out = []
    for _ in range(n):
        s = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        s.setblocking(False)
        try:
            s.connect(sock)
        except OSError:
            s.close()
            continue
        out.append(s)
    return out


def test_descriptor_exhaustion_never_stops_answering(tmp_path: Path,
                                                     folders: tuple[Path, Path]) -> None:
    """Idle connections until accept() fails with EMFILE (128 descriptors,
    no connection cap): the server backs off, says so, and answers again
    as soon as descriptors are free; it never stops accepting for good."""
    reg, pol = folders
    sock = tmp_path / "s" / "authz.sock"
    proc = subprocess.Popen(
        ["prlimit", "--nofile=128", sys.executable, "-m", "agent.cli", "authz", "serve",
         "--socket", str(sock),
         "--registry", str(reg), "--policies", str(pol), "--http", "",
         "--max-connections", "100000"],
        cwd=ROOT, env=dict(os.environ, PYTHONPATH=str(ROOT)), stderr=subprocess.PIPE,
        text=True)
    lines: list[str] = []
    assert proc.stderr is not None
    reader = threading.Thread(target=lambda: lines.extend(iter(proc.stderr.readline, "")),
                              daemon=True)
    reader.start()
    idle: list[socket.socket] = []
    try:
        deadline = time.monotonic() + 30
        while not any("serving on" in x for x in lines) and time.monotonic() < deadline:
            time.sleep(0.05)
        assert _health(str(sock)) == "SERVING"
        while (not any("cannot take connections" in x for x in lines)
               and time.monotonic() < deadline):
            idle += _idle(str(sock), 50)
            time.sleep(0.2)
        assert any("Too many open files" in x for x in lines), lines
        for s in idle:
            s.close()
        idle = []
        # answering again: a decision and a truthful health answer
        deadline = time.monotonic() + 20
        while time.monotonic() < deadline:
            out = CliRunner().invoke(cli, ["check", "--socket", str(sock), "--spiffe", ANALYST,
                                           "--url", FINANCE_MCP, "--tool", "get_balance"])
            if out.exit_code == 0:
                break
            time.sleep(0.2)
        assert out.exit_code == 0 and "ALLOW" in out.output, out.output
        assert _health(str(sock)) == "SERVING"
        assert any("accepting connections on" in x and "again" in x for x in lines), lines
    finally:
        for s in idle:
            s.close()
        proc.send_signal(signal.SIGTERM)
        proc.wait(timeout=20)
        reader.join(timeout=5)
        proc.stderr.close()
    assert proc.returncode == 0, lines


def test_connections_over_the_cap_are_shed(tmp_path: Path, folders: tuple[Path, Path]) -> None:
    r = start_server(tmp_path, *folders, max_connections=3)
    idle: list[socket.socket] = []
    try:
        gate = r.server.gate
        idle = _idle(r.socket, 3)
        deadline = time.monotonic() + 10
        while gate.connections < 3 and time.monotonic() < deadline:
            time.sleep(0.02)
        assert gate.connections == 3
        with pytest.raises(grpc.RpcError) as err:
            r.ask(mcp_call("get_balance"))
        assert err.value.code() == grpc.StatusCode.UNAVAILABLE
        ok, detail = r.server.health_detail()
        assert ok and detail["socket"]["shed"] >= 1 and detail["socket"]["connections"] == 3
        idle.pop().close()
        deadline = time.monotonic() + 10
        while gate.connections > 2 and time.monotonic() < deadline:
            time.sleep(0.02)
        assert r.ask(mcp_call("get_balance"))["allowed"]
    finally:
        for s in idle:
            s.close()
        r.server.stop()


def test_health_says_not_serving_while_the_socket_cannot_accept(
        running: Running) -> None:
    gate = running.server.gate
    gate._set_accepting(False)  # what the accept loop does on EMFILE/ENFILE
    try:
        ok, detail = running.server.health_detail()
        assert not ok and detail["socket"]["accepting"] is False
        with grpc.insecure_channel(f"unix:{running.server.inner_socket}") as ch:
            resp = health_pb2_grpc.HealthStub(ch).Check(health_pb2.HealthCheckRequest(),
                                                       timeout=5)
        assert resp.status == health_pb2.HealthCheckResponse.NOT_SERVING
    finally:
        gate._set_accepting(True)
    assert running.server.health_detail()[0]


def test_a_supplementary_member_of_the_socket_group_is_allowed(
        open_dir: Path, folders: tuple[Path, Path]) -> None:
    """The peer's supplementary groups count (SO_PEERGROUPS): an Envoy whose
    primary group is its own but who is a member of the socket's group."""
    assert os.geteuid() == 0, "needs root to connect as another user"
    r = start_server(open_dir, *folders, allow_uids=frozenset({0}),
                     allow_gids=frozenset({4242}))
    try:
        os.chmod(r.socket, 0o666)

        def probe(*groups: str) -> str:
            out = subprocess.run(
                ["setpriv", f"--reuid={NOBODY}", f"--regid={NOBODY}",
                 "--groups=" + ",".join(groups) if groups else "--clear-groups",
                 SYSTEM_PYTHON or sys.executable, "-c", H2_PROBE, r.socket],
                capture_output=True, text=True, timeout=30, check=True)
            return out.stdout.strip()

        assert probe("4242") == "answered"
        assert probe("100", "4242") == "answered"
        assert probe() == "closed"  # the control: the same peer without the group
        assert probe("100") == "closed"
    finally:
        r.server.stop()
