"""`manul check` and `manul authz serve` as a person runs them."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

from click.testing import CliRunner

from agent.cli import cli
from tests.unit.decision.authz_helpers import ANALYST, FINANCE_MCP, ROOT, Running


def test_check_local_allow_and_deny(folders: tuple[Path, Path]) -> None:
    reg, pol = folders
    base = ["check", "--local", "--registry", str(reg), "--policies", str(pol),
            "--spiffe", ANALYST, "--url", FINANCE_MCP]
    ok = CliRunner().invoke(cli, [*base, "--tool", "get_balance"])
    assert ok.exit_code == 0, ok.output
    assert "ALLOW" in ok.output and "finance-agents-invoke-finance-tools" in ok.output
    no = CliRunner().invoke(cli, [*base, "--tool", "transfer_funds", "--json"])
    assert no.exit_code == 1
    doc = json.loads(no.output)
    assert doc["policies"] == ["payments-need-low-risk"]
    assert "forbid" in doc["policy_text"]["payments-need-low-risk"]
    assert doc["cedar_request"]["context"]["tool"] == "transfer_funds"


def test_check_over_the_socket_from_a_file(running: Running, tmp_path: Path) -> None:
    req = tmp_path / "req.json"
    req.write_text(json.dumps({"spiffe": ANALYST, "url": FINANCE_MCP, "body": {
        "jsonrpc": "2.0", "id": 1, "method": "tools/call", "params": {"name": "get_balance"}}}))
    out = CliRunner().invoke(cli, ["check", "--socket", running.socket, "-f", str(req),
                                   "--json"])
    assert out.exit_code == 0, out.output
    summary = json.loads(out.output)
    assert summary["allowed"] and summary["headers"]["x-manul-decision"] == "allow"
    gone = CliRunner().invoke(cli, ["check", "--socket", str(tmp_path / "none.sock"),
                                    "-f", str(req)])
    assert gone.exit_code == 3


def test_authz_serve_runs_and_stops(tmp_path: Path, folders: tuple[Path, Path]) -> None:
    reg, pol = folders
    sock = tmp_path / "s" / "authz.sock"
    env = dict(os.environ, PYTHONPATH=str(ROOT))
    proc = subprocess.Popen(
        [sys.executable, "-m", "agent.cli", "authz", "serve", "--socket", str(sock),
         "--registry", str(reg), "--policies", str(pol), "--http", "127.0.0.1:0",
         "--audit-log", str(tmp_path / "audit.jsonl")],
        cwd=ROOT, env=env, stderr=subprocess.PIPE, text=True)
    try:
        assert proc.stderr is not None
        line = proc.stderr.readline()
        assert "serving on" in line, line
        out = CliRunner().invoke(cli, ["check", "--socket", str(sock), "--spiffe", ANALYST,
                                       "--url", FINANCE_MCP, "--tool", "get_balance"])
        assert out.exit_code == 0 and "ALLOW" in out.output, out.output
    finally:
        proc.send_signal(signal.SIGTERM)
        proc.wait(timeout=20)
        if proc.stderr is not None:
            proc.stderr.close()
    assert proc.returncode == 0
    deadline = time.monotonic() + 5
    while sock.exists() and time.monotonic() < deadline:
        time.sleep(0.05)
    assert not sock.exists()
    assert "authz" in (tmp_path / "audit.jsonl").read_text()
