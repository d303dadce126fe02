"""`manul run` with the baseline, end to end: learn, detect, survive `kill -9`.

The real entry point runs in a subprocess over a registry with one agent
bound to a cgroup of the test's. Its workload learns; then a credential
read and a direct HTTPS call to an LLM provider (a local TLS server under
the provider's name) must appear as `anomaly` events on stdout, in the
audit log and in the metrics; `/healthz` reports what the kernel kept
back. The agent is then killed with SIGKILL and started again: the stored
baseline comes back (the steady behaviour raises nothing) and detection
goes on.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
import urllib.request
from pathlib import Path
from typing import Any

from agent.kernel.probe import BEHAVIOUR_MECHANISMS, trampolines
from tests.host.test_run import _wait_for
from tests.support import ROOT, Cgroup, baseline_agent_registry
from tests.tls_support import TlsServer

PORT = 19471


def _start(tmp: Path, registry: Path, stderr: Any) -> subprocess.Popen[str]:
    env = {k: v for k, v in os.environ.items() if k != "MANUL_LOG_FORMAT"}
    return subprocess.Popen(
        [str(ROOT / ".venv" / "bin" / "manul"), "run", "--registry", str(registry),
         "--listen", f"127.0.0.1:{PORT}", "--audit-log", str(tmp / "audit.jsonl"),
         "--baseline-learn", "3s", "--state-dir", str(tmp / "state"), "--no-sandbox"],
        stdout=subprocess.PIPE, stderr=stderr, text=True, env=env)


def _get(path: str) -> Any:
    with urllib.request.urlopen(f"http://127.0.0.1:{PORT}{path}", timeout=5) as r:
        body = r.read().decode()
    return json.loads(body) if path != "/metrics" else body


def _learned(timeout: float = 20) -> dict[str, Any]:
    end = time.monotonic() + timeout
    while time.monotonic() < end:
        prof = (_get("/healthz")["baseline"] or {}).get("profiles", {}).get("bl/agent")
        if prof and not prof["learning"]:
            return prof  # type: ignore[no-any-return]
        time.sleep(0.3)
    raise AssertionError(f"bl/agent did not finish learning: {_get('/healthz')['baseline']}")


def test_run_detects_and_keeps_its_baseline_across_kill_9(tmp_path: Path,
                                                          make_cgroup: Any) -> None:
    cg: Cgroup = make_cgroup()
    registry = baseline_agent_registry(tmp_path, cg.path.name)
    steady = [sys.executable, "-c", "open('/etc/hostname').read(); print('[]')"]
    stderr = (tmp_path / "stderr.log").open("w")
    proc = _start(tmp_path, registry, stderr)
    try:
        started = _wait_for(proc, "started", 60)
        assert started["baseline"]["mode"] == "registered"
        cg.python(steady[2])
        cg.run(["sh", "-c", "true"])
        _learned()
        cg.python(steady[2])
        r = cg.run(["sh", "-c", "cat /etc/shadow > /dev/null"])
        assert r.returncode == 0, r.stderr
        cred = _wait_for(proc, "anomaly", 10, lambda e: e["detector"] == "credential-access")
        assert cred["agent"] == "bl/agent" and cred["evidence"]["path"] == "/etc/shadow"
        assert cred["process"]["comm"] == "cat" and cred["severity"] == "high"
        with TlsServer(tmp_path, ["api.openai.com"]) as srv:
            r = cg.run(["sh", "-c", f"curl -sS --noproxy '*' --cacert {srv.ca_file} --resolve "
                                    f"api.openai.com:{srv.port}:127.0.0.1 "
                                    f"https://api.openai.com:{srv.port}/v1/models"])
            assert r.returncode == 0, r.stderr
            bypass = _wait_for(proc, "anomaly", 10,
                               lambda e: e["detector"] == "gateway-bypass")
        assert bypass["evidence"]["sni"] == "api.openai.com"
        assert bypass["evidence"]["provider"] == "openai"
        time.sleep(1.5)  # metrics and counters are exported once a second
        metrics = _get("/metrics")
        assert ('manul_anomalies_total{agent="bl/agent",detector="credential-access"} 1.0'
                in metrics)
        assert 'manul_baseline_events_total{kind="read",outcome="known"}' in metrics
        mech = BEHAVIOUR_MECHANISMS[trampolines()][0]
        assert f'manul_mechanism_info{{concern="behaviour",mechanism="{mech}"}} 1.0' in metrics
        health = _get("/healthz")
        assert health["baseline"]["lost"] == 0 and health["baseline"]["anomalies"] >= 2
        assert health["kernel"]["baseline"]["ringbuf_full"] == 0
        records = [json.loads(x) for x in (tmp_path / "audit.jsonl").read_text().splitlines()]
        kinds = {r["detector"] for r in records if r["kind"] == "anomaly"}
        assert {"credential-access", "gateway-bypass", "new-exec"} <= kinds
        assert any(r["kind"] == "baseline-learned" for r in records)
        time.sleep(5.5)  # a flush period: what was learned is on disk
    finally:
        proc.send_signal(signal.SIGKILL)
        proc.wait(30)
        if proc.stdout is not None:
            proc.stdout.close()

    stored = json.loads((tmp_path / "state" / "baseline" / "bl%2Fagent.json").read_text())
    assert stored["learned_at"] is not None and "read /etc/hostname" in stored["items"]
    assert "api.openai.com" in stored["hosts"]["127.0.0.1"]  # peers are named by their SNI

    proc = _start(tmp_path, registry, stderr)
    try:
        _wait_for(proc, "started", 60)
        assert not _get("/healthz")["baseline"]["profiles"] or _learned()
        cg.python(steady[2])
        cg.run(["sh", "-c", "true"])
        time.sleep(1.5)
        health = _get("/healthz")["baseline"]
        assert health["anomalies"] == 0, health
        prof = _learned()
        assert prof["items"]["read"] >= 1
        cg.run(["sh", "-c", "cat /etc/shadow > /dev/null"])
        _wait_for(proc, "anomaly", 10, lambda e: e["detector"] == "credential-access")
    finally:
        proc.send_signal(signal.SIGINT)
        out, _ = proc.communicate(timeout=30)
        stderr.close()
    assert proc.returncode == 0, out
