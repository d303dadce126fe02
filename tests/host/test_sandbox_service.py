"""The sandbox service on this machine: registry agents bound to their cgroups,
host names re-resolved on TTL, bad input keeping the previous generation,
`kill -9` leaving enforcement in place, a restart adopting it.

Network enforcement (the cgroup fallback) is what these tests observe; the
same code runs under BPF LSM in tests/kernel.
"""

from __future__ import annotations

import errno
import json
import os
import signal
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from agent.registry import Registry, load_directory
from agent.registry.policyset import PolicyRecords
from agent.sandbox.hosts import HostCache, static_resolver
from agent.sandbox.service import SandboxService
from agent.telemetry.audit import AuditLog
from agent.workloads import WorkloadResolver
from tests.support import (
    EXAMPLES,
    LOOPBACK_HOSTS,
    ROOT,
    SANDBOX_AGENT,
    Cgroup,
    SyscallWorker,
    drop_pin_root,
    sandbox_pin_root,
    sandboxed_agent_registry,
)

REFUSED = errno.ECONNREFUSED


class Clock:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


class Dns:
    """A resolver table the test changes (loopback addresses only)."""

    def __init__(self, table: dict[str, list[str]], ttl: float = 30.0) -> None:
        self.table = table
        self.ttl = ttl
        self.calls = 0

    def __call__(self, host: str) -> tuple[list[str], float]:
        self.calls += 1
        if host not in self.table:
            raise OSError(f"no such host `{host}`")
        return list(self.table[host]), self.ttl


@pytest.fixture
def pin_root() -> Iterator[Path]:
    root = sandbox_pin_root()
    yield root
    drop_pin_root(root)


def registry_dir(base: Path, cg: Cgroup, policy: str = "data-analyst.cedar") -> Path:
    file = EXAMPLES / policy if "/" not in policy else Path(policy)
    return sandboxed_agent_registry(base, cg.path.name, {"analyst": str(file)},
                                    (EXAMPLES / "entities.json").read_text())


def worker(cg: Cgroup) -> SyscallWorker:
    w = SyscallWorker(cg)
    assert w.errno(op="netns") == 0
    assert w.errno(op="listen", ports=[443]) == 0
    return w


def connect(w: SyscallWorker, addr: str) -> int:
    return w.errno(op="connect", family=4, addr=addr, port=443)


def test_host_cache_ttl_and_failures() -> None:
    clock, dns = Clock(), Dns({"a.example": ["127.0.0.2"], "b.example": ["127.0.0.3"]}, 30)
    cache = HostCache(dns, clock=clock)
    assert cache.resolve(["a.example", "*.example", "b.example", "gone.example"]) == {
        "a.example": ("127.0.0.2",), "b.example": ("127.0.0.3",)}
    calls = dns.calls
    assert cache.resolve(["a.example"]) == {"a.example": ("127.0.0.2",)}
    assert dns.calls == calls  # cached
    assert not cache.due(["a.example", "*.example"])
    clock.now += 31
    assert cache.due(["a.example"])
    dns.table["a.example"] = ["127.0.0.4"]
    assert cache.resolve(["a.example"]) == {"a.example": ("127.0.0.4",)}
    # a failure keeps the last answer; a name never resolved has none
    clock.now += 31
    del dns.table["a.example"]
    assert cache.resolve(["a.example"]) == {"a.example": ("127.0.0.4",)}
    assert cache.failures >= 2
    assert static_resolver({"x": ["127.0.0.9"]})("x") == (["127.0.0.9"], float("inf"))


def test_service_follows_registry_and_dns(make_cgroup: Any, pin_root: Path,
                                         tmp_path: Path) -> None:
    cg, other = make_cgroup(), make_cgroup()
    reg_dir = registry_dir(tmp_path, cg)
    registry: dict[str, Registry] = {"now": load_directory(reg_dir)}
    clock, dns = Clock(), Dns({k: list(v) for k, v in LOOPBACK_HOSTS.items()}, ttl=30)
    audit_path = tmp_path / "audit.jsonl"
    audit = AuditLog(audit_path, node="test")
    resolver = WorkloadResolver()
    svc = SandboxService(lambda: registry["now"], resolver, audit, root=pin_root,
                         policies=PolicyRecords(lambda: registry["now"]),
                         host_resolver=dns, clock=clock)
    try:
        with worker(cg) as w, worker(other) as o:
            st = svc.start()
            assert st.bindings == ()
            changes = svc.reconcile()
            assert [(c.target, c.what) for c in changes] == [("agent:analyst-1", "applied")]
            assert connect(w, "127.0.0.3") == REFUSED
            assert connect(w, "127.0.0.2") == 0
            assert connect(o, "127.0.0.3") == 0  # not the agent's cgroup
            assert svc.reconcile() == []  # nothing changed, nothing done
            # the audit trail: the refused connect, named
            decisions = svc.poll()
            assert [(d.action, d.resource, d.verdict, d.policies) for d in decisions] == [
                ("connectNetwork", "127.0.0.3:443/tcp", "deny", ("analyst-net",))]
            rec = json.loads(audit_path.read_text().splitlines()[-1])  # line-buffered
            assert rec["kind"] == "sandbox-deny" and rec["agent"] == "analyst-1"
            assert rec["cgroup"] == "/" + cg.path.name and rec["pid"] == w.pid
            assert rec["policies"] == ["analyst-net"] and rec["node"] == "test"
            assert rec["process"] and rec["exe"]
            # DNS: api.openai.com moves; after its TTL a new generation follows it
            dns.table["api.openai.com"] = ["127.0.0.3"]
            assert svc.reconcile() == []  # not expired yet: the old address stays
            clock.now += 31
            changes = svc.reconcile()
            assert [c.what for c in changes] == ["applied"]
            assert connect(w, "127.0.0.3") == 0
            assert connect(w, "127.0.0.2") == REFUSED
            generation = svc.status().generation
            # a policy that does not compile: the previous generation stays in force
            bad = tmp_path / "bad.cedar"
            bad.write_text("permit (principal, action, resource) when { 1 + };")
            registry["now"] = load_directory(registry_dir(tmp_path, cg, str(bad)))
            changes = svc.reconcile()
            assert [c.what for c in changes] == ["failed"]
            assert "do not compile" in svc.errors["agent:analyst-1"]
            assert svc.status().generation == generation
            assert connect(w, "127.0.0.2") == REFUSED
            assert [c.what for c in svc.reconcile()] == ["failed"]  # audited once (below)
            # the agent leaves the registry: its cgroup is unbound
            registry["now"] = Registry()
            changes = svc.reconcile()
            assert [c.what for c in changes] == ["unbound"]
            assert connect(w, "127.0.0.2") == 0
            assert svc.status().bindings == ()
            # every change of what is enforced is in the audit log, with digests
            # of the inputs replaced and now in force; a failure once
            recs = [r for r in map(json.loads, audit_path.read_text().splitlines())
                    if r["kind"] == "sandbox-change"]
            assert [(r["change"], r["target"]) for r in recs] == [
                ("applied", "agent:analyst-1"), ("applied", "agent:analyst-1"),
                ("failed", "agent:analyst-1"), ("unbound", "")]
            first, second = recs[0], recs[1]
            assert first["digest_before"] is None and first["digest_after"]
            assert second["digest_before"] == first["digest_after"] != second["digest_after"]
            assert "do not compile" in recs[2]["detail"]
    finally:
        svc.close()
        audit.close()


AGENT = SANDBOX_AGENT


def test_kill_9_keeps_enforcement_and_restart_adopts(make_cgroup: Any, pin_root: Path,
                                                     tmp_path: Path) -> None:
    cg = make_cgroup()
    reg_dir = registry_dir(tmp_path, cg)
    with worker(cg) as w:
        agent = subprocess.Popen(
            [sys.executable, "-c", AGENT, str(reg_dir), str(pin_root),
             json.dumps(LOOPBACK_HOSTS)],
            cwd=ROOT, stdout=subprocess.PIPE, text=True, env={**os.environ, "PYTHONPATH": "."})
        try:
            assert agent.stdout is not None
            before = json.loads(agent.stdout.readline())
            assert before["changes"] == ["applied"]
            assert connect(w, "127.0.0.3") == REFUSED
        finally:
            agent.send_signal(signal.SIGKILL)
            assert agent.wait() == -signal.SIGKILL
            if agent.stdout is not None:
                agent.stdout.close()
        assert connect(w, "127.0.0.3") == REFUSED  # the agent is gone, its sandbox is not
        assert connect(w, "127.0.0.2") == 0
        registry = load_directory(reg_dir)
        svc = SandboxService(lambda: registry, WorkloadResolver(), None, root=pin_root,
                             policies=PolicyRecords(lambda: registry),
                             host_resolver=static_resolver(LOOPBACK_HOSTS))
        try:
            adopted = svc.start().to_json()
            for key in ("programs", "mechanisms", "generation", "bindings", "sandboxes"):
                assert adopted[key] == before["status"][key], key
            assert svc.reconcile() == []
        finally:
            svc.close()
        assert connect(w, "127.0.0.3") == REFUSED


def test_cli_workload(make_cgroup: Any, pin_root: Path, tmp_path: Path) -> None:
    """`manul sandbox apply --workload`: the registry's Policy records (no PATHS), compiled
    for the Agent, on its cgroups."""
    cg = make_cgroup()
    reg_dir = registry_dir(tmp_path, cg)
    hosts = tmp_path / "hosts.json"
    hosts.write_text(json.dumps(LOOPBACK_HOSTS))
    env = {"MANUL_SANDBOX_PIN_ROOT": str(pin_root), "PATH": "/usr/bin:/bin"}

    def manul(*args: str) -> subprocess.CompletedProcess[str]:
        return subprocess.run([str(ROOT / ".venv/bin/manul"), "sandbox", *args], cwd=ROOT,
                              env=env, capture_output=True, text=True, timeout=120, check=False)

    with worker(cg) as w:
        r = manul("apply", "--workload", "analyst-1", "--registry", str(reg_dir),
                  "--hosts", str(hosts), "--mode", "audit", "--json")
        assert r.returncode == 0, r.stderr
        done = json.loads(r.stdout)
        assert (done["target"], done["sandbox"], done["mode"]) == (
            "workload:analyst-1", 'Agent::"analyst-1"', "audit")
        assert [c["id"] for c in done["cgroups"]] == [cg.id]
        assert connect(w, "127.0.0.3") == 0  # audit: allowed, reported
        r = manul("apply", "--workload", "analyst-1", "--registry", str(reg_dir),
                  "--hosts", str(hosts))
        assert r.returncode == 0, r.stderr
        assert "generation 2" in r.stdout and "enforce mode" in r.stdout  # the spec's mode
        assert connect(w, "127.0.0.3") == REFUSED
        r = manul("apply", "--workload", "nobody", "--registry", str(reg_dir))
        assert r.returncode == 1 and "no Agent of that name" in r.stderr
        r = manul("remove", "--workload", "analyst-1")
        assert r.returncode == 0, r.stderr
        assert connect(w, "127.0.0.3") == 0


def test_an_unknown_principal_is_an_error_not_a_deny_all() -> None:
    from agent.sandbox.apply import compile_sandbox
    from agent.sandbox.errors import PolicyError
    from tests.support import policy_input

    inputs = policy_input("data-analyst.cedar")
    with pytest.raises(PolicyError) as err:
        compile_sandbox(inputs, 'Agent::"analyst-9"')  # a typo: nobody knows it
    assert 'no Agent "analyst-9" in the entities or policies' in str(err.value)
    assert "--principal default" in str(err.value)
    # agents the entities define are decided as they always were
    for known in ('Agent::"coder-1"', 'Agent::"analyst-7"'):
        assert compile_sandbox(inputs, known).name in (known, "default")
    assert compile_sandbox(inputs, "default").name == "default"
