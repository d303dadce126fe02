#!/usr/bin/env python3
"""An event storm against `manul run`, in one run: what is offered, what is
counted, what the audit log and the agent pay, for one and for ten storming
workloads.

Each storming workload is a process in its own cgroup, sandboxed by the
registry (an Agent whose identities are the cgroups; a policy that permits no
connection), calling connect() to 127.0.0.9 in a loop for STORM_SECONDS; it
counts its refusals (ECONNREFUSED from the cgroup connect hook). Per storm
size, three phases, seconds apart:

  budgets on   `manul run` with its defaults (kernel event budget 50/s per
               workload and CPU, burst 100, 5,000/s for the node; records
               aggregated and budgeted)
  no agent     the same pinned enforcement, the agent stopped: the baseline,
               nobody draining events
  node only    `--event-rate 0`: no per-workload budget, the node's only
  no budgets   `--event-rate 0 --event-node-rate 0`: every denial is an event,
               as before the budgets (records still aggregated and budgeted):
               what the kernel budgets save

Printed per phase: denials offered per second (the workloads' own count),
counted per second (the kernel's exact totals, and for the agent phases
`manul_sandbox_decisions_total` from /metrics) and their ratio, events the
agent received and the kernel held back, audit bytes per second, the
agent's CPU (user + system, all threads) as a share of one core, and
/healthz during the storm. Ratios against baselines of the same run: storm
throughput (agent on / no agent), agent CPU and ring-buffer drops (budgets
on / no budgets).
Run as root after `make bpf`: .venv/bin/python bench/storm.py
(STORM_SECONDS, default 5; STORM_SIZES, default "1,10").
"""

from __future__ import annotations

import json
import os
import re
import shutil
import signal
import subprocess
import sys
import tempfile
import time
import uuid
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))
os.environ.setdefault("MANUL_BPF_DIR", str(ROOT / "build" / "bpf"))

from agent.kernel.fs import BPFFS, cgroup2_root, ensure_bpffs  # noqa: E402
from agent.sandbox import counters as C  # noqa: E402
from agent.sandbox.kernel import SandboxMaps, unload  # noqa: E402
from tests.support import http_get  # noqa: E402

SECONDS = float(os.environ.get("STORM_SECONDS", "5"))
SIZES = [int(x) for x in os.environ.get("STORM_SIZES", "1,10").split(",")]
PORT = 19484
KEY = ("connectNetwork", "deny", "enforce")

STORM = r"""
import errno, socket, sys, time
seconds = float(sys.argv[1])
n = 0
end = time.monotonic() + seconds
while time.monotonic() < end:
    for _ in range(64):
        s = socket.socket()
        n += s.connect_ex(("127.0.0.9", 9)) == errno.ECONNREFUSED
        s.close()
print(n)
"""
ENTER = 'echo $$ > "$0/cgroup.procs" && exec "$@"'


def _cpu(pid: int) -> float:
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def _get(path: str) -> tuple[int, str]:
    return http_get(PORT, path)


def _metric(text: str, name: str) -> float:
    m = re.search(rf'^{name}\{{action="connectNetwork",mode="enforce",verdict="deny"\}} (\S+)$',
                  text, re.M)
    return float(m.group(1)) if m else 0.0


class Bench:
    def __init__(self, tmp: Path, n: int) -> None:
        self.tmp = tmp
        self.parent = cgroup2_root()[0] / f"manul-storm-{uuid.uuid4().hex[:6]}"
        self.parent.mkdir()
        self.cgs = []
        for i in range(n):
            p = self.parent / f"w{i}"
            p.mkdir()
            self.cgs.append(p)
        self.reg = tmp / "registry"
        self.reg.mkdir(exist_ok=True)
        ids = "".join(f"    - cgroup: /{self.parent.name}/{p.name}\n" for p in self.cgs)
        (self.reg / "agents.yaml").write_text(
            "apiVersion: manul.dev/v1alpha1\nkind: Agent\nmetadata: {name: stormy}\n"
            f"spec:\n  classes: [storm]\n  identities:\n{ids}  sandbox: {{mode: enforce}}\n")
        self.pol = tmp / "policies"
        self.pol.mkdir(exist_ok=True)
        (self.pol / "storm.cedar").write_text(
            '@id("storm-files")\npermit (principal in AgentClass::"storm", action in '
            '[Action::"readFile", Action::"exec", Action::"loadLibrary"], resource)\n'
            'when { resource.path like "/*" };\n')
        ensure_bpffs()
        self.pins = BPFFS / f"manul-bench-{uuid.uuid4().hex[:6]}"
        self.audit = tmp / f"audit-{n}.jsonl"
        self.agent: subprocess.Popen[str] | None = None

    def start(self, *extra: str) -> None:
        env = {**os.environ, "MANUL_PIN_ROOT": str(self.pins), "PYTHONPATH": str(ROOT)}
        self.agent = subprocess.Popen(
            [str(ROOT / ".venv" / "bin" / "manul"), "--log-format", "json", "run",
             "--registry", str(self.reg), "--policies", str(self.pol),
             "--authz-socket", str(self.tmp / "authz.sock"), "--listen",
             f"127.0.0.1:{PORT}", "--audit-log", str(self.audit), "--audit-max-size", "1G",
             "--baseline", "off", *extra],
            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, text=True, env=env)
        end = time.monotonic() + 60
        while True:  # every workload bound: its probe is refused by the sandbox
            status, body = _get("/healthz")
            if status == 200 and all(f"{self.parent.name}/{p.name}" in body for p in self.cgs):
                break
            if time.monotonic() > end or self.agent.poll() is not None:
                raise SystemExit(f"the agent did not bind the workloads: {status} {body[:300]}")
            time.sleep(0.3)
        time.sleep(1.5)  # its first exports done

    def stop(self) -> None:
        if self.agent is not None:
            self.agent.send_signal(signal.SIGINT)
            self.agent.wait(timeout=60)
            self.agent = None

    def phase(self, name: str) -> dict[str, Any]:
        """One storm; an agent running is stopped at the end (SIGINT: it writes
        what its aggregation windows still hold), so the audit bytes are all of
        the phase's records; the pinned enforcement stays."""
        with SandboxMaps.open(self.pins) as maps:
            t0 = C.read_totals(maps)
        size0 = self.audit.stat().st_size if self.audit.exists() else 0
        metric0 = _metric(_get("/metrics")[1], "manul_sandbox_decisions_total") \
            if self.agent else 0.0
        health0 = json.loads(_get("/healthz")[1] or "{}").get("kernel", {}).get("sandbox", {})
        cpu0 = _cpu(self.agent.pid) if self.agent else 0.0
        wall0 = time.monotonic()
        procs = [subprocess.Popen(["sh", "-c", ENTER, str(p), sys.executable, "-c", STORM,
                                   str(SECONDS)], stdout=subprocess.PIPE, text=True)
                 for p in self.cgs]
        time.sleep(SECONDS / 2)
        health = _get("/healthz")[0] if self.agent else None
        offered = sum(int(p.communicate()[0]) for p in procs)
        wall = time.monotonic() - wall0
        cpu = (_cpu(self.agent.pid) - cpu0) if self.agent else 0.0
        time.sleep(1.5)  # the last second's export
        with SandboxMaps.open(self.pins) as maps:
            t1 = C.read_totals(maps)
        counted = t1.decisions.get(KEY, 0) - t0.decisions.get(KEY, 0)
        metric = (_metric(_get("/metrics")[1], "manul_sandbox_decisions_total") - metric0
                  if self.agent else None)
        health1 = json.loads(_get("/healthz")[1] or "{}").get("kernel", {}).get("sandbox", {})
        self.stop()
        size1 = self.audit.stat().st_size if self.audit.exists() else 0
        return {"phase": name, "offered": offered, "counted": counted, "metric": metric,
                "held": t1.held - t0.held, "wall": wall, "cpu": cpu, "health": health,
                "delivered": health1.get("delivered", 0) - health0.get("delivered", 0),
                "dropped": health1.get("ringbuf_full", 0) - health0.get("ringbuf_full", 0),
                "audit_bytes": size1 - size0}

    def close(self) -> None:
        self.stop()
        unload(self.pins)
        shutil.rmtree(self.pins, ignore_errors=True)
        for p in self.cgs:
            for _ in range(50):
                try:
                    p.rmdir()
                    break
                except OSError:
                    time.sleep(0.1)
        self.parent.rmdir()


def show(r: dict[str, Any]) -> None:
    w = r["wall"]
    metric = (f", metric {r['metric'] / w:,.0f}/s" if r["metric"] is not None else "")
    agent = (f"; agent CPU {100 * r['cpu'] / w:.1f} % of a core, events in "
             f"{r['delivered'] / w:,.0f}/s, held {r['held'] / w:,.0f}/s, ring drops "
             f"{r['dropped']}, audit {r['audit_bytes'] / w / 1024:,.1f} KiB/s, /healthz "
             f"{r['health']}" if r["health"] is not None else "")
    print(f"  {r['phase']:<11} offered {r['offered'] / w:>9,.0f}/s, counted "
          f"{r['counted'] / w:,.0f}/s ({r['counted'] / max(1, r['offered']):.4f} of offered)"
          f"{metric}{agent}")


def main() -> None:
    if os.geteuid() != 0:
        raise SystemExit("run as root (BPF, cgroups)")
    print(f"storm: connect() loops refused by the sandbox, {SECONDS:g} s per phase, "
          f"{os.cpu_count()} CPUs")
    with tempfile.TemporaryDirectory() as d:
        for n in SIZES:
            b = Bench(Path(d), n)
            try:
                b.start()
                on = b.phase("budgets on")  # the agent stops; enforcement stays pinned
                off_agent = b.phase("no agent")
                b.start("--event-rate", "0")  # (drains what the pinned ring kept)
                node = b.phase("node only")
                b.start("--event-rate", "0", "--event-node-rate", "0")
                no_budget = b.phase("no budgets")
            finally:
                b.close()
            print(f"{n} storming workload(s):")
            for r in (on, off_agent, node, no_budget):
                show(r)
            thr = (on["offered"] / on["wall"]) / (off_agent["offered"] / off_agent["wall"])
            cpu = on["cpu"] / max(1e-9, no_budget["cpu"])
            audit = on["audit_bytes"] / max(1, no_budget["audit_bytes"])
            print(f"  ratios: storm throughput with the agent / without {thr:.2f}x; agent "
                  f"CPU budgets on / none {cpu:.2f}x; audit bytes budgets on / none "
                  f"{audit:.2f}x; ring drops {on['dropped']} (on) vs {no_budget['dropped']} "
                  f"(none); counted / offered {on['counted'] / max(1, on['offered']):.4f} "
                  f"(on), {no_budget['counted'] / max(1, no_budget['offered']):.4f} (none)")


if __name__ == "__main__":
    main()
