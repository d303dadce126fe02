"""One agent, one policy set: `manul run --registry R --policies P` end to end.

The real entry point runs in a subprocess with the shipped example folder
(kernel and gateway policies in one place) and a copy of the example
registry whose analyst runs in a test cgroup:

* the gateway part is served on the ext_authz socket, and the kernel part is
  enforced on the analyst's workload (this host has no BPF LSM: network rules
  through the cgroup hooks), from the same reading of the same folder;
* the agent's one HTTP server answers /healthz, /metrics and the decision
  point's JWKS and OIDC discovery, whose issuer is the tokens' `iss`;
* `manul quarantine add` (the pinned map) makes the decision point see
  `context.quarantined` for that caller, so its gateway call is denied by
  `quarantined-callers`, and the kernel refuses its workload's connections
  except to the allow-list; `manul quarantine release` undoes both.

Every enforcement claim has its positive control (the same call before, or
from outside the cgroup).
"""

from __future__ import annotations

import base64
import errno
import json
import os
import re
import shutil
import signal
import socket
import subprocess
import time
import urllib.request
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from agent.decision.client import ask, build_check_request, response_summary
from agent.kernel.fs import BPFFS, ensure_bpffs
from tests.support import ROOT, Cgroup

ANALYST = "spiffe://cluster.local/ns/finance/sa/analyst"
FINANCE_MCP = "http://finance-tools.finance.svc:8080/mcp"
MANUL = str(ROOT / ".venv" / "bin" / "manul")
CONNECT = ("import json, socket\ns = socket.socket()\ns.settimeout(2)\n"
           "print(json.dumps(s.connect_ex(({host!r}, {port}))))")


@pytest.fixture
def pin_root() -> Iterator[Path]:
    ensure_bpffs()
    root = BPFFS / f"manul-test-{uuid.uuid4().hex[:8]}"
    yield root
    from agent.sandbox.kernel import unload

    unload(root)
    shutil.rmtree(root, ignore_errors=True)


def _registry(tmp: Path, cg: Cgroup) -> Path:
    """The example registry, the analyst's host identity pointed at `cg`."""
    reg = tmp / "registry"
    shutil.copytree(ROOT / "examples" / "registry", reg)
    agents = reg / "agents.yaml"
    text = agents.read_text()
    assert "- cgroup: /manul.slice/analyst/*" in text
    agents.write_text(text.replace("- cgroup: /manul.slice/analyst/*",
                                   f"- cgroup: /{cg.path.name}"))
    return reg


class Agent:
    """`manul run` in a subprocess, until `stop()`."""

    def __init__(self, tmp: Path, registry: Path, pin_root: Path, *extra: str) -> None:
        self.socket = str(tmp / "run" / "authz.sock")
        env = dict(os.environ, TERM="dumb", MANUL_PIN_ROOT=str(pin_root),
                   MANUL_LOG_FORMAT="text")  # the text a person reads (JSON: test_run.py)
        self.proc = subprocess.Popen(
            [MANUL, "run", "--registry", str(registry), "--policies",
             str(ROOT / "examples" / "policies"), "--listen", "127.0.0.1:0",
             "--authz-socket", self.socket, "--audit-log", str(tmp / "audit.jsonl"), *extra],
            stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, env=env)
        self.output: list[str] = []
        line = self._wait(r"http://127\.0\.0\.1:(\d+)/metrics")
        port = re.search(r"127\.0\.0\.1:(\d+)", line)
        assert port is not None
        self.base = f"http://127.0.0.1:{port.group(1)}"
        self._wait(r"Ctrl-C stops")

    def _wait(self, pattern: str, timeout: float = 60) -> str:
        assert self.proc.stdout is not None
        end = time.monotonic() + timeout
        while time.monotonic() < end:
            line = self.proc.stdout.readline()
            if not line:
                break
            self.output.append(line)
            if re.search(pattern, line):
                return line
        raise AssertionError(f"`{pattern}` never appeared:\n{''.join(self.output)}")

    def get(self, path: str) -> Any:
        try:
            with urllib.request.urlopen(self.base + path, timeout=5) as resp:
                return json.load(resp)
        except urllib.error.HTTPError as e:
            return json.load(e)

    def check(self, tool: str = "get_balance", want: bool | None = None) -> Any:
        """The analyst's MCP call; with `want`, None unless the decision is that."""
        spec = {"spiffe": ANALYST, "url": FINANCE_MCP,
                "body": {"jsonrpc": "2.0", "id": 1, "method": "tools/call",
                         "params": {"name": tool, "arguments": {}}}}
        got = response_summary(ask(self.socket, build_check_request(spec)))
        return got if want is None or got["allowed"] == want else None

    def until(self, what: Any, timeout: float = 10.0) -> Any:
        """Poll `what()` until truthy (the agent reads the pinned map every second)."""
        end = time.monotonic() + timeout
        while True:
            got = what()
            if got or time.monotonic() > end:
                return got
            time.sleep(0.2)

    def stop(self) -> str:
        self.proc.send_signal(signal.SIGINT)
        out, _ = self.proc.communicate(timeout=30)
        return "".join(self.output) + out


def _listener(addr: str) -> socket.socket:
    s = socket.socket()
    s.bind((addr, 0))
    s.listen(8)
    return s


def _quarantine(pin_root: Path, *args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run([MANUL, "quarantine", *args], capture_output=True, text=True,
                          env=dict(os.environ, MANUL_PIN_ROOT=str(pin_root)), timeout=60,
                          check=False)


def _claims(token: str) -> dict[str, Any]:
    body = token.split(".")[1]
    return json.loads(base64.urlsafe_b64decode(body + "=" * (-len(body) % 4)))


def test_quarantine_is_seen_at_the_gateway_and_released(make_cgroup: Any, pin_root: Path,
                                                        tmp_path: Path) -> None:
    cg = make_cgroup()
    agent = Agent(tmp_path, _registry(tmp_path, cg), pin_root, "--no-sandbox")
    other, allowed = _listener("127.0.0.2"), _listener("127.0.0.1")
    try:
        # before: allowed by the folder's MCP policy; the kernel lets it connect anywhere
        ok = agent.check()
        assert ok["allowed"], ok
        assert ok["headers"]["x-manul-policy"] == "finance-agents-invoke-finance-tools"
        assert cg.python(CONNECT.format(host="127.0.0.2", port=other.getsockname()[1])) == 0
        # one HTTP server: the decision point's keys and issuer are on the agent's port
        jwks = agent.get("/.well-known/jwks.json")
        assert jwks["keys"] and all(k["kty"] == "EC" for k in jwks["keys"])
        issuer = agent.get("/.well-known/openid-configuration")["issuer"]
        assert issuer == agent.base
        token = ok["headers"]["authorization"].removeprefix("Bearer ")
        assert _claims(token)["iss"] == agent.base
        health = agent.get("/healthz")
        assert health["ok"] and health["authz"]["serving"], health
        assert health["policies"]["source"].startswith("folder `")
        assert health["quarantined_callers"] == []

        r = _quarantine(pin_root, "add", "--cgroup", f"/{cg.path.name}", "--allow", "127.0.0.1")
        assert r.returncode == 0, r.stderr
        assert f"quarantined /{cg.path.name}" in r.stdout
        denied = agent.until(lambda: agent.check(want=False))
        assert denied and denied["body"]["policies"] == ["quarantined-callers"], denied
        assert agent.get("/healthz")["quarantined_callers"] == ["finance/analyst"]
        # the kernel: nothing but the allow-list (positive control: the allowed address)
        assert cg.python(CONNECT.format(host="127.0.0.2", port=other.getsockname()[1])) \
            == errno.EPERM
        assert cg.python(CONNECT.format(host="127.0.0.1", port=allowed.getsockname()[1])) == 0
        listed = json.loads(_quarantine(pin_root, "list", "--registry",
                                        str(tmp_path / "registry"), "--json").stdout)
        assert [(q["cgroup_id"], q["caller"]) for q in listed["quarantined"]] == [
            (cg.id, "finance/analyst")]
        assert listed["allowed"] == ["127.0.0.1/32"]

        r = _quarantine(pin_root, "release", "--cgroup", f"/{cg.path.name}")
        assert r.returncode == 0, r.stderr
        again = agent.until(lambda: agent.check(want=True))
        assert again and again["allowed"], again
        assert agent.get("/healthz")["quarantined_callers"] == []
        assert cg.python(CONNECT.format(host="127.0.0.2", port=other.getsockname()[1])) == 0
        r = _quarantine(pin_root, "release", "--cgroup", f"/{cg.path.name}")
        assert r.returncode == 1 and "not quarantined" in r.stderr
    finally:
        other.close()
        allowed.close()
        out = agent.stop()
    assert agent.proc.returncode == 0, out
    assert "caller `finance/analyst` is quarantined" in out
    assert "caller `finance/analyst` is released from quarantine" in out
    kinds = [json.loads(x)["kind"] for x in (tmp_path / "audit.jsonl").read_text().splitlines()]
    assert [k for k in kinds if k.startswith("caller-")] == ["caller-quarantined",
                                                             "caller-released"]


def test_one_folder_is_enforced_in_the_kernel_and_served_to_the_gateway(
        make_cgroup: Any, pin_root: Path, tmp_path: Path) -> None:
    """The analyst's sandbox compiled from the folder (its `analyst-net` forbid)
    and the folder's gateway policies, from one `manul run`."""
    cg = make_cgroup()
    agent = Agent(tmp_path, _registry(tmp_path, cg), pin_root)
    target = _listener("127.0.0.3")
    try:
        port = target.getsockname()[1]
        outside = make_cgroup()
        assert outside.python(CONNECT.format(host="127.0.0.3", port=port)) == 0  # control
        refused = agent.until(lambda: cg.python(CONNECT.format(host="127.0.0.3", port=port))
                              in (errno.ECONNREFUSED, errno.EPERM))
        assert refused, "the analyst's sandbox was never applied"
        status = agent.get("/healthz")["sandbox"]["status"]
        assert [(b["cgroup_id"], b["sandbox"]) for b in status["bindings"]] == [
            (cg.id, 'Agent::"finance/analyst"')]
        assert agent.check()["allowed"]  # the same folder's gateway policy
        assert not agent.check("transfer_funds")["allowed"]  # payments-need-low-risk
    finally:
        target.close()
        out = agent.stop()
    assert agent.proc.returncode == 0, out
