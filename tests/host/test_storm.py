"""An event storm against `manul run` (issue 14): one sandboxed workload connects
in a loop to denied destinations for 10 s beside a quiet one.

Real processes in real cgroups, the real agent in a subprocess, enforcement by
the cgroup connect hooks (this machine has no BPF LSM). Asserted:

- every refused call is in `manul_sandbox_decisions_total` (counted in the kernel,
  exact) and in the storming workload's per-rule series;
- the audit log stays within its cap, and its records account for every denial:
  the `count`s of the workload's records plus their `suppressed` are the refusals;
- the quiet workload's single denial is recorded (its own kernel and record
  budgets: the storm cannot starve it);
- /healthz answers 200 and the decision point answers a Check during the storm.

Positive control: the same destinations accept connections from outside the
sandbox (real listeners on 127.0.0.9), so a refusal is the sandbox's doing.
"""

from __future__ import annotations

import json
import os
import re
import signal
import socket
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from contextlib import ExitStack
from pathlib import Path
from typing import Any

import pytest

from agent.decision.client import ask, build_check_request
from tests.support import ROOT, Cgroup, drop_pin_root, http_get, sandbox_pin_root

PORT = 19474
PEER = "127.0.0.9"
NPORTS = 256  # distinct destinations: more than a workload's record burst
STORM_S = 10.0

STORM = r"""
import errno, json, socket, sys, time
ports, seconds = json.load(open(sys.argv[1])), float(sys.argv[2])
n = refused = ok = 0
other = {}
end = time.monotonic() + seconds
while time.monotonic() < end:
    for p in ports:
        s = socket.socket()
        e = s.connect_ex(("127.0.0.9", p))
        s.close()
        n += 1
        if e == errno.ECONNREFUSED:
            refused += 1
        elif e == 0:
            ok += 1
        else:
            other[e] = other.get(e, 0) + 1
print(json.dumps({"calls": n, "refused": refused, "ok": ok, "other": other}))
"""

POLICY = """
@id("storm-files")
permit (principal in AgentClass::"storm", action in [Action::"readFile", Action::"exec",
        Action::"loadLibrary"], resource)
when { resource.path like "/*" };
"""


@pytest.fixture
def listeners() -> Iterator[list[int]]:
    """Real listeners on 127.0.0.9: outside a sandbox, every port accepts."""
    with ExitStack() as stack:
        ports = []
        for _ in range(NPORTS):
            s = stack.enter_context(socket.socket())
            s.bind((PEER, 0))
            s.listen(4096)
            ports.append(s.getsockname()[1])
        yield ports


def _setup(tmp: Path, parent: Cgroup) -> tuple[Path, Path]:
    reg = tmp / "registry"
    reg.mkdir()
    (reg / "agents.yaml").write_text(
        "apiVersion: manul.dev/v1alpha1\nkind: Agent\nmetadata: {name: stormy}\n"
        "spec:\n  classes: [storm]\n  identities:\n"
        f"    - cgroup: /{parent.path.name}/storm\n    - cgroup: /{parent.path.name}/quiet\n"
        "  sandbox: {mode: enforce}\n")
    pol = tmp / "policies"
    pol.mkdir()
    (pol / "storm.cedar").write_text(POLICY)
    return reg, pol


def _get(path: str) -> tuple[int, str]:
    return http_get(PORT, path)


def _metric(text: str, name: str, **labels: str) -> float:
    total = 0.0
    for line in text.splitlines():
        m = re.match(rf"^{name}(?:\{{(.*)\}})? (\S+)$", line)
        if m and all(f'{k}="{v}"' in (m.group(1) or "") for k, v in labels.items()):
            total += float(m.group(2))
    return total


def _wait_bound(cgs: list[Cgroup], timeout: float = 30.0) -> None:
    """Until the agent has bound both cgroups (a denied connect is refused)."""
    end = time.monotonic() + timeout
    code = "import socket, errno; s = socket.socket(); print(s.connect_ex(('127.0.0.9', 9)))"
    for cg in cgs:
        while True:
            r = cg.run([sys.executable, "-c", code])
            if r.stdout.strip() == "111" and _bound_now(cg):
                break
            assert time.monotonic() < end, f"{cg.path} was never sandboxed: {r.stderr}"
            time.sleep(0.3)


def _bound_now(cg: Cgroup) -> bool:
    status, body = _get("/healthz")
    return status == 200 and f"{cg.path.parent.name}/{cg.path.name}" in body


def test_a_storm_is_counted_exactly_bounded_and_cannot_hide_a_quiet_denial(
        tmp_path: Path, make_cgroup: Any, listeners: list[int]) -> None:
    parent = make_cgroup()
    storm, quiet = make_cgroup("storm", parent.path), make_cgroup("quiet", parent.path)
    reg, pol = _setup(tmp_path, parent)
    # positive control: outside the sandbox every destination accepts
    for p in listeners:
        with socket.create_connection((PEER, p), timeout=5):
            pass
    audit = tmp_path / "audit.jsonl"
    pins = sandbox_pin_root()
    env = {**os.environ, "MANUL_PIN_ROOT": str(pins)}
    stderr = (tmp_path / "stderr.log").open("w")
    agent = subprocess.Popen(
        [str(ROOT / ".venv" / "bin" / "manul"), "--log-format", "json", "run",
         "--registry", str(reg), "--policies", str(pol), "--authz-socket",
         str(tmp_path / "authz.sock"), "--listen", f"127.0.0.1:{PORT}", "--audit-log",
         str(audit), "--audit-max-size", "1M", "--audit-backups", "1", "--baseline", "off"],
        stdout=subprocess.PIPE, stderr=stderr, text=True, env=env)
    try:
        _wait_bound([storm, quiet])
        # the two probes of _wait_bound were denials too: the baseline to subtract
        base = -1.0
        while True:  # exported once a second: until two readings agree
            time.sleep(1.2)
            status, before = _get("/metrics")
            assert status == 200
            now = _metric(before, "manul_sandbox_decisions_total", action="connectNetwork",
                          verdict="deny", mode="enforce")
            if now == base:
                break
            base = now
        ports = tmp_path / "ports.json"
        ports.write_text(json.dumps(listeners))
        proc = storm.popen([sys.executable, "-c", STORM, str(ports), str(STORM_S)],
                           stdout=subprocess.PIPE, stderr=subprocess.PIPE)
        health: list[int] = []
        answers: list[str] = []

        def during() -> None:
            time.sleep(2.0)
            for _ in range(5):
                health.append(_get("/healthz")[0])
                resp = ask(str(tmp_path / "authz.sock"),
                           build_check_request({"url": "https://api.example/v1", "method": "GET"}),
                           timeout=5)
                answers.append(str(resp.status.code))
                time.sleep(0.5)

        side = threading.Thread(target=during)
        side.start()
        time.sleep(STORM_S / 2)
        quiet_port = listeners[7]
        r = quiet.run([sys.executable, "-c",
                       f"import socket; print(socket.socket().connect_ex(('{PEER}', "
                       f"{quiet_port})))"])
        assert r.stdout.strip() == "111", r.stderr  # ECONNREFUSED: the sandbox
        out, err = proc.communicate(timeout=STORM_S + 60)
        side.join(30)
        assert proc.returncode == 0, err
        result = json.loads(out)
        print("storm:", result)
        assert result["ok"] == 0 and not result["other"], result
        refused = result["refused"]
        assert refused > 10_000, result  # a storm, not a drizzle
        assert health == [200] * 5, health
        assert len(answers) == 5, answers  # answered (allowed or denied), never stuck

        deadline = time.monotonic() + 10
        while True:  # the kernel's counts are exported once a second
            text = _get("/metrics")[1]
            counted = _metric(text, "manul_sandbox_decisions_total", action="connectNetwork",
                              verdict="deny", mode="enforce") - base
            if counted >= refused + 1 or time.monotonic() > deadline:
                break
            time.sleep(0.5)
        print(f"refused {refused + 1}, counted {counted:.0f}")
        assert abs(counted - (refused + 1)) <= 0.01 * (refused + 1), (counted, refused)
        assert counted == refused + 1  # exact, in fact: counted before any event
        per_rule = _metric(text, "manul_sandbox_rule_decisions_total",
                           policies="default-deny", action="connectNetwork", verdict="deny")
        assert per_rule >= counted
        held = _metric(text, "manul_sandbox_events_held_total")
        assert held > 0, "the storm never reached the kernel's event budget"
        health_body = json.loads(_get("/healthz")[1])
        print("healthz kernel:", health_body["kernel"].get("sandbox"),
              "audit:", health_body["audit"])
        dropped = health_body["kernel"]["sandbox"]["ringbuf_full"]
    finally:
        agent.send_signal(signal.SIGINT)
        agent.communicate(timeout=60)
        stderr.close()
        drop_pin_root(pins)
    assert agent.returncode == 0

    files = [audit, Path(f"{audit}.1")]
    size = sum(f.stat().st_size for f in files if f.exists())
    assert size <= 2 * (1 << 20), size  # max size 1M, one backup
    records = [json.loads(line) for f in files if f.exists()
               for line in f.read_text().splitlines()]
    quiet_records = [x for x in records if x["kind"] == "sandbox-deny"
                     and x.get("cgroup", "").endswith("/quiet")
                     and x["resource"] != f"{PEER}:9/tcp"]  # _wait_bound's probe
    assert [x["resource"] for x in quiet_records] == [f"{PEER}:{quiet_port}/tcp"], quiet_records
    storm_name = next(x["workload"] for x in records if x["kind"] == "sandbox-deny"
                      and x.get("cgroup", "").endswith("/storm")
                      and x["resource"].startswith(f"{PEER}:"))
    mine = [x for x in records if x.get("workload") == storm_name
            and x["kind"] in ("sandbox-deny", "records-suppressed")
            and (x["kind"] != "sandbox-deny" or x["resource"] != f"{PEER}:9/tcp")]
    written = sum(x.get("count", 0) for x in mine)
    suppressed = sum(x.get("suppressed", 0) for x in mine)
    aggregated = [x for x in mine if x.get("aggregated")]
    print(f"storm records: {len(mine)} ({len(aggregated)} aggregated), counts {written}, "
          f"suppressed {suppressed}, ring buffer drops {dropped}, audit {size} bytes")
    assert aggregated and suppressed > 0
    # every refusal is in a record's count or a suppressed count (a ring-buffer
    # drop is the only loss, and the kernel budget keeps the ring from filling)
    assert dropped == 0
    assert written + suppressed == refused, (written, suppressed, refused)
