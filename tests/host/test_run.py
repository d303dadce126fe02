"""`manul run`, the README's first command, end to end on this host.

The real entry point runs in a subprocess; a real HTTPS call from a shell
(curl, resolved to a local TLS server) must appear, classified, on its
output; /healthz, /metrics and /inventory answer; Ctrl-C stops it cleanly.
Its stdout is a pipe, as under a DaemonSet, so the output is JSON lines
(`--log-format auto`): every line of stdout and stderr must be one JSON
object, the banner a `started` event, the call an `observation`.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import time
import urllib.request
from collections.abc import Callable
from pathlib import Path
from typing import Any

from tests.support import ROOT, drop_pin_root, sandbox_pin_root
from tests.tls_support import TlsServer


def _wait_for(proc: subprocess.Popen[str], kind: str, timeout: float,
              match: Callable[[dict[str, Any]], bool] = lambda e: True) -> dict[str, Any]:
    """The next stdout event of `kind` that `match`es; every line must be JSON."""
    assert proc.stdout is not None
    end = time.monotonic() + timeout
    seen = []
    while time.monotonic() < end:
        line = proc.stdout.readline()
        if not line:
            break
        seen.append(line)
        event = json.loads(line)  # one JSON object per line, never wrapped
        assert isinstance(event, dict) and "time" in event, line
        if event.get("event") == kind and match(event):
            return event
    raise AssertionError(f"no `{kind}` event; output was:\n{''.join(seen)}")


def test_manul_run_shows_a_shell_https_call(tmp_path: Path) -> None:
    audit = tmp_path / "audit.jsonl"
    pins = sandbox_pin_root()  # what the run pins (sandbox programs) goes, not the host's
    env = {k: v for k, v in os.environ.items() if k != "MANUL_LOG_FORMAT"}
    env["MANUL_PIN_ROOT"] = str(pins)
    stderr = (tmp_path / "stderr.log").open("w")
    proc = subprocess.Popen(
        [str(ROOT / ".venv" / "bin" / "manul"), "-v", "run", "--registry",
         str(ROOT / "examples" / "registry"), "--listen", "127.0.0.1:19464",
         "--audit-log", str(audit)],
        stdout=subprocess.PIPE, stderr=stderr, text=True, env=env)
    try:
        started = _wait_for(proc, "started", 60)
        assert {"concern": "tls", "mechanism": "cgroup_skb/egress", "degraded": None} \
            in started["mechanisms"]
        assert started["http"] == "http://127.0.0.1:19464" and started["agents"] >= 1
        with TlsServer(tmp_path, ["api.openai.com"]) as srv:
            t0 = time.monotonic()
            r = subprocess.run(
                ["sh", "-c", f"curl -sS --noproxy '*' --cacert {srv.ca_file} --resolve "
                             f"api.openai.com:{srv.port}:127.0.0.1 "
                             f"https://api.openai.com:{srv.port}/v1/models"],
                capture_output=True, text=True, timeout=30, check=False)
            assert r.returncode == 0, r.stderr
            seen = _wait_for(proc, "observation", 10,
                             lambda e: e["provider"] == "openai"
                             and e["sni"] == "api.openai.com")
            print(f"classified after {time.monotonic() - t0:.3f} s: {seen}")
        assert seen["classification"] in ("shadow", "registered") and "curl" in seen["process"]
        deadline = time.monotonic() + 5
        while True:  # the kernel counters are exported once a second
            with urllib.request.urlopen("http://127.0.0.1:19464/healthz", timeout=5) as resp:
                health = json.load(resp)
            tls = health["kernel"]["tls"]  # every object's deliveries and losses
            if tls["delivered"] >= 1 or time.monotonic() > deadline:
                break
            time.sleep(0.2)
        assert health["ok"] and health["discovery"]["llm"] >= 1
        assert tls["delivered"] >= 1 and tls["ringbuf_full"] == 0, health["kernel"]
        with urllib.request.urlopen("http://127.0.0.1:19464/livez", timeout=5) as resp:
            live = json.load(resp)  # the chart's liveness probe: the main loop turns
        assert resp.status == 200 and live["ok"] and live["loop_age_s"] < 30, live
        with urllib.request.urlopen("http://127.0.0.1:19464/metrics", timeout=5) as resp:
            text = resp.read().decode()
        assert 'manul_llm_handshakes_total{classification=' in text
        assert 'manul_mechanism_info{concern="tls",mechanism="cgroup_skb/egress"} 1.0' in text
        with urllib.request.urlopen("http://127.0.0.1:19464/inventory", timeout=5) as resp:
            inv = json.load(resp)
        assert any("openai" in e["providers"] for e in inv)
    finally:
        proc.send_signal(signal.SIGINT)
        out, _ = proc.communicate(timeout=30)
        stderr.close()
        drop_pin_root(pins)
    assert proc.returncode == 0, out
    events = [json.loads(x) for x in out.splitlines()]
    assert events[-1]["event"] == "stopped" and events[-1]["llm_handshakes"] >= 1
    logs = [json.loads(x) for x in (tmp_path / "stderr.log").read_text().splitlines()]
    assert logs, "with -v the agent logs what it starts"
    assert all({"time", "level", "logger", "message"} <= rec.keys() for rec in logs)
    records = [json.loads(x) for x in audit.read_text().splitlines()]
    assert any(r["kind"] == "llm-provider-first-seen" and r["provider"] == "openai"
               for r in records)


def test_healthz_answers_for_the_embedded_decision_point(tmp_path: Path) -> None:
    """`manul run --policies`: the agent's /healthz is 503 while the decision
    point cannot serve (here: its socket cannot accept), with the reason."""
    from agent.daemon import Daemon, DaemonConfig

    d = Daemon(DaemonConfig(registry=ROOT / "examples" / "registry", listen="", sandbox=False,
                            policies=ROOT / "examples" / "policies",
                            authz_socket=tmp_path / "authz.sock"))
    assert d.authz is not None
    d.authz.start()
    d.started_at = time.time()
    try:
        code, body = d._healthz()
        assert code == 200 and body["authz"]["serving"] and body["authz"]["socket"]["accepting"]
        d.authz.gate._set_accepting(False)  # what the accept loop does on EMFILE
        code, body = d._healthz()
        assert code == 503 and body["authz"]["socket"]["accepting"] is False
        from agent.telemetry.metrics import AUTHZ_SERVING
        assert AUTHZ_SERVING._value.get() == 0  # what the chart's alert watches
        # not ready, but alive: the liveness probe does not restart it for this
        assert d._livez()[0] == 503  # (the main loop never turned here)
        d._heartbeat = time.monotonic()
        assert d._livez()[0] == 200
    finally:
        d.authz.stop()


def test_reloads_of_registry_and_policies_are_audited(tmp_path: Path) -> None:
    """What the agent enforces changes only with an audit record: which
    records or files changed, and digests of what was and is in force; a
    reload that fails says why (the previous reading stays)."""
    import shutil

    from agent.daemon import Daemon, DaemonConfig

    reg, pol = tmp_path / "registry", tmp_path / "policies"
    shutil.copytree(ROOT / "examples" / "registry", reg)
    shutil.copytree(ROOT / "examples" / "policies", pol)
    audit = tmp_path / "audit.jsonl"
    d = Daemon(DaemonConfig(registry=reg, listen="", sandbox=False, authz=False,
                            policies=pol, audit_log=str(audit)))

    def records(kind: str) -> list[dict[str, Any]]:
        return [r for r in map(json.loads, audit.read_text().splitlines()) if r["kind"] == kind]

    try:
        d.policy_set.load()
        (loaded,) = records("policy-set-loaded")
        assert loaded["digest_before"] is None and loaded["digest_after"]
        assert "entities.json" in loaded["added"] and loaded["files"] >= 1
        d.policy_set.load()  # nothing changed: nothing audited
        assert len(records("policy-set-loaded")) == 1
        # a policy file changes
        first = sorted(pol.glob("*.cedar"))[0]
        first.write_text(first.read_text() + "\n// reviewed\n")
        os.utime(first, (time.time() + 5, time.time() + 5))
        d.policy_set.load()
        second = records("policy-set-loaded")[-1]
        assert second["changed"] == [first.name] and second["added"] == []
        assert second["digest_before"] == loaded["digest_after"] != second["digest_after"]
        # a registry record changes, then a reload fails
        agents = reg / "agents.yaml"
        agents.write_text(agents.read_text().replace("riskLevel: low", "riskLevel: high", 1))
        os.utime(agents, (time.time() + 10, time.time() + 10))
        assert d._poll_registry()
        (reloaded,) = records("registry-reloaded")
        assert reloaded["changed"] and all(k.startswith("Agent/") for k in reloaded["changed"])
        assert reloaded["digest_before"] != reloaded["digest_after"]
        agents.write_text("kind: [\n")
        os.utime(agents, (time.time() + 15, time.time() + 15))
        assert not d._poll_registry()
        (failed,) = records("registry-reload-failed")
        assert "agents.yaml" in failed["error"]
        assert failed["digest_in_force"] == reloaded["digest_after"]
    finally:
        if d.audit is not None:
            d.audit.close()
