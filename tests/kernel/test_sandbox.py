"""Kernel sandboxes under BPF LSM (in the VM): the analyst example, for real.

Workers are long-lived processes in real cgroups, chrooted into a
directory laid out like the analyst's container (`/workspace/analyst-1`,
`/etc/shadow`, this machine's /usr bound read-only), each in a network
namespace of its own with listeners on loopback. Paths are what the kernel
resolves from the task's root, as for a container. Expected policy ids are
checked against cedarpy on the source policies (tests/unit/compiler's
oracle), not written down twice.
"""

from __future__ import annotations

import errno
import json
import os
import signal
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from agent.registry.policyset import PolicyRecords
from agent.sandbox import SandboxMaps, apply_sandbox, compile_sandbox, ensure_loaded, locked
from agent.sandbox.apply import CgroupRef, compile_all
from agent.sandbox.events import AuditTrail, Decision
from agent.sandbox.kernel import lsm_programs, mechanisms
from agent.sandbox.state import read_status
from agent.telemetry.audit import AuditLog
from tests.support import (
    EXAMPLES,
    LOOPBACK_HOSTS,
    ROOT,
    SANDBOX_AGENT,
    Cgroup,
    SyscallWorker,
    apply_to,
    drop_pin_root,
    make_root,
    policy_input,
    sandbox_pin_root,
    sandboxed_agent_registry,
    unmake_root,
)

sys.path.insert(0, str(ROOT / "tests" / "unit" / "compiler"))
from cedar_oracle import Case, Oracle, Request

ANALYST = 'Agent::"analyst-1"'
POLICIES = ("data-analyst.cedar", "guardrails.cedar")
FILES = {
    "/workspace/analyst-1/x": "data",
    "/etc/shadow": "root:*:19000:0:99999:7:::\n",
    "/var/run/secrets/analyst-key": "key",
}


@pytest.fixture
def pin_root() -> Iterator[Path]:
    root = sandbox_pin_root()
    yield root
    drop_pin_root(root)


@pytest.fixture
def chroot(tmp_path: Path) -> Iterator[Path]:
    root = make_root(tmp_path, FILES, usr=True)
    # a name inside the workspace that resolves to /etc/shadow
    (root / "workspace/analyst-1/link").symlink_to("/etc/shadow")
    yield root
    unmake_root(root)


def start(cg: Cgroup, root: Path) -> SyscallWorker:
    w = SyscallWorker(cg)
    assert w.errno(op="netns") == 0
    assert w.errno(op="listen", ports=[443]) == 0
    assert w.errno(op="chroot", path=str(root)) == 0
    return w


def drain(root: Path, audit: AuditLog | None = None) -> list[Decision]:
    with SandboxMaps.open(root) as maps:
        trail = AuditTrail(maps, audit=audit)
        try:
            return trail.drain()
        finally:
            trail.close()


def oracle(files: tuple[str, ...]) -> Oracle:
    """cedarpy on the source policies, for the sandbox of `analyst-1`."""
    inputs = policy_input(*files)
    case = Case("analyst", "\n".join(s.text for s in inputs.sources),
                json.loads((EXAMPLES / "entities.json").read_text()) + list(inputs.registry),
                {k: list(v) for k, v in LOOPBACK_HOSTS.items()})
    return Oracle(case, compile_all(inputs))


def cedar_says(o: Oracle, d: Decision) -> tuple[bool, frozenset[str]]:
    """cedarpy's decision and deciding policies for what the kernel reported."""
    if d.action == "connectNetwork":
        addr, _, rest = d.resource.rpartition(":")
        port, _, proto = rest.partition("/")
        r = Request(ANALYST, d.action, ip=addr.strip("[]"), port=int(port), protocol=proto)
    else:
        r = Request(ANALYST, d.action, path=d.resource)
    (outcome,) = o.cedar([r])[0]
    return outcome.allow, outcome.policies


def test_lsm_mechanisms_are_chosen(pin_root: Path) -> None:
    lsm, actions = ensure_loaded(pin_root)
    assert lsm, "BPF LSM is active in the test VM: the LSM hooks must be chosen"
    assert set(actions) == set(lsm_programs())
    st = read_status(pin_root)
    assert st is not None and st.mechanisms == mechanisms(True) and not st.degraded


def test_analyst_example_enforced(make_cgroup: Any, pin_root: Path, chroot: Path) -> None:
    inside, outside = make_cgroup(), make_cgroup()
    with start(inside, chroot) as w, start(outside, chroot) as o:
        apply_to(pin_root, policy_input(*POLICIES), ANALYST, [inside])
        # files: its workspace yes, credentials no (they look absent), even through a link
        assert w.errno(op="open", path="/workspace/analyst-1/x") == 0
        assert w.errno(op="open", path="/workspace/analyst-1/x", mode="rw") == 0
        assert w.errno(op="open", path="/var/run/secrets/analyst-key", mode="w") == 0
        assert w.errno(op="open", path="/etc/shadow") == errno.ENOENT
        assert w.errno(op="open", path="/workspace/analyst-1/link") == errno.ENOENT
        # exec: a shell is forbidden, and nothing permits any other binary
        assert w.call(op="exec", path="/usr/bin/bash", args=["-c", "exit 0"]) == {
            "errno": errno.EPERM, "exit": None}
        assert w.errno(op="exec", path="/usr/bin/true") == errno.EPERM
        # network: the approved endpoint yes, anything else is refused
        assert w.errno(op="connect", family=4, addr="127.0.0.2", port=443) == 0
        assert w.errno(op="connect", family=4, addr="127.0.0.3", port=443) == errno.ECONNREFUSED
        assert w.errno(op="connect", family=6, addr="::1", port=443) == 0
        assert w.errno(op="connect", family=6, addr="::ffff:127.0.0.2", port=443) == 0
        assert w.errno(op="connect", family=6, addr="::ffff:127.0.0.3",
                       port=443) == errno.ECONNREFUSED
        assert w.errno(op="sendto", family=4, addr="127.0.0.3", port=53) == errno.ECONNREFUSED
        # a process outside the sandboxed cgroup is unaffected
        assert o.errno(op="open", path="/etc/shadow") == 0
        assert o.call(op="exec", path="/usr/bin/true") == {"errno": 0, "exit": 0}
        assert o.call(op="exec", path="/usr/bin/bash", args=["-c", "exit 3"]) == {
            "errno": 0, "exit": 3}
        assert o.errno(op="connect", family=4, addr="127.0.0.3", port=443) == 0
    events = drain(pin_root)
    assert [(d.action, d.resource, d.verdict) for d in events] == [
        ("readFile", "/etc/shadow", "deny"),
        ("readFile", "/etc/shadow", "deny"),  # the link, resolved
        ("exec", "/usr/bin/bash", "deny"),
        ("exec", "/usr/bin/true", "deny"),
        ("connectNetwork", "127.0.0.3:443/tcp", "deny"),
        ("connectNetwork", "127.0.0.3:443/tcp", "deny"),  # IPv4-mapped: decided as IPv4
        ("connectNetwork", "127.0.0.3:53/udp", "deny"),  # sendto (cgroup/sendmsg4)
    ]
    assert [d.policies for d in events] == [
        ("no-credentials",), ("no-credentials",), ("no-shells",), (), ("analyst-net",),
        ("analyst-net",), ("analyst-net",)]
    assert [d.mechanism for d in events] == ["lsm"] * 6 + ["cgroup"]
    assert {(d.mode, d.sandbox) for d in events} == {("enforce", ANALYST)}
    # who: the worker, or for exec the child it spawned
    assert [d.tgid if d.action != "exec" else d.ppid for d in events] == [w.pid] * 7
    o_ = oracle(POLICIES)
    for d in events:
        assert cedar_says(o_, d) == (False, frozenset(d.policies)), d


def test_a_storm_of_denied_opens_is_counted_exactly_and_budgeted(
        make_cgroup: Any, pin_root: Path, chroot: Path) -> None:
    """Event storms under BPF LSM: every denied open of a tight loop is counted in
    the kernel (totals and per rule), only the workload's budget of events is sent
    (the rest counted as held), and a workload beside it still gets its one
    denial through (its own budget)."""
    from agent.sandbox import counters as C

    storm, quiet, outside = make_cgroup(), make_cgroup(), make_cgroup()
    rate, burst = 50, 20
    with start(storm, chroot) as w, start(quiet, chroot) as q, start(outside, chroot) as o:
        apply_to(pin_root, policy_input(*POLICIES), ANALYST, [storm, quiet])
        # positive control: the same open, outside the sandbox, succeeds
        assert o.call(op="open_loop", path="/etc/shadow", seconds=0.2)["ok"] > 0
        with SandboxMaps.open(pin_root) as maps:
            C.set_budget(maps, rate, burst)
            before = C.read_totals(maps)
        t0 = time.monotonic()
        got = w.call(op="open_loop", path="/etc/shadow", seconds=2.0)
        elapsed = time.monotonic() - t0
        assert got["ok"] == 0 and got["n"] > 1000, got  # positive control: test_analyst_...
        assert q.errno(op="open", path="/etc/shadow") == errno.ENOENT
        with SandboxMaps.open(pin_root) as maps:
            after = C.read_totals(maps)
            counts = C.read_counts(maps)
    events = drain(pin_root)
    key = ("readFile", "deny", "enforce")
    assert after.decisions[key] - before.decisions.get(key, 0) == got["n"] + 1
    assert sum(n for k, n in counts.items()
               if k.bound_cgroup_id == storm.id and k.action == "readFile") == got["n"]
    mine = [d for d in events if d.bound_cgroup_id == storm.id]
    cpus = os.cpu_count() or 1
    print(f"{got['n']} denied opens in {elapsed:.2f} s: {len(mine)} events, "
          f"{after.held - before.held} held ({cpus} CPUs)")
    assert burst <= len(mine) <= cpus * (burst + rate * elapsed) + 2
    assert [d.resource for d in events if d.bound_cgroup_id == quiet.id] == ["/etc/shadow"]
    assert len(events) + (after.held - before.held) == after.total - before.total


def test_audit_mode_allows_and_logs_each_would_deny(make_cgroup: Any, pin_root: Path,
                                                     chroot: Path, tmp_path: Path) -> None:
    cg = make_cgroup()
    with start(cg, chroot) as w:
        apply_to(pin_root, policy_input(*POLICIES), ANALYST, [cg], mode="audit")
        assert w.errno(op="open", path="/workspace/analyst-1/x") == 0
        assert w.errno(op="open", path="/etc/shadow") == 0
        assert w.errno(op="open", path="/etc/shadow", mode="w") == 0
        assert w.call(op="exec", path="/usr/bin/bash", args=["-c", "exit 3"]) == {
            "errno": 0, "exit": 3}
        assert w.errno(op="connect", family=4, addr="127.0.0.3", port=443) == 0
        assert w.errno(op="connect", family=4, addr="127.0.0.2", port=443) == 0
    log_path = tmp_path / "audit.jsonl"
    audit = AuditLog(log_path, node="vm")
    events = drain(pin_root, audit)
    audit.close()
    records = [json.loads(line) for line in log_path.read_text().splitlines()]
    # identical would-denies are one record with a count (docs/metrics.md, "Storms")
    assert sum(r["count"] for r in records) == len(events) > 0
    assert {r["kind"] for r in records} == {"sandbox-would-deny"}
    assert {(r["verdict"], r["mode"]) for r in records} == {("would-deny", "audit")}
    seen = {(r["action"], r["resource"]): tuple(r["policies"]) for r in records}
    assert seen[("readFile", "/etc/shadow")] == ("no-credentials",)
    assert seen[("writeFile", "/etc/shadow")] == ("no-credentials",)
    assert seen[("exec", "/usr/bin/bash")] == ("no-shells",)
    assert seen[("connectNetwork", "127.0.0.3:443/tcp")] == ("analyst-net",)
    assert ("readFile", "/workspace/analyst-1/x") not in seen
    # bash itself ran in the sandbox and read its libraries: every one of
    # those would-denies is reported too, each with what cedarpy decides.
    assert any(a == "readFile" and p.startswith("/usr/lib/") for a, p in seen)
    o_ = oracle(POLICIES)
    for d in events:
        assert cedar_says(o_, d) == (False, frozenset(d.policies)), d


def test_policy_swap_never_lets_a_forbidden_open_through(make_cgroup: Any, pin_root: Path,
                                                        chroot: Path) -> None:
    cg = make_cgroup()
    a = compile_sandbox(policy_input(*POLICIES), ANALYST)  # /etc/shadow: forbidden
    b = compile_sandbox(policy_input("data-analyst.cedar"), ANALYST)  # default deny
    with start(cg, chroot) as bad, start(cg, chroot) as good, locked(pin_root):
        ensure_loaded(pin_root)
        with SandboxMaps.open(pin_root) as maps:
            refs = [CgroupRef.resolve(cg.path)]
            apply_sandbox(maps, a, target="swap", cgroups=refs, mode="enforce", digest="0" * 64)
            seconds = 20.0
            bad.send(op="open_loop", path="/etc/shadow", seconds=seconds)
            good.send(op="open_loop", path="/workspace/analyst-1/x", seconds=seconds)
            swaps = 0
            end = time.monotonic() + seconds - 2
            while time.monotonic() < end:
                apply_sandbox(maps, b if swaps % 2 == 0 else a, target="swap", cgroups=refs,
                              mode="enforce", digest=f"{swaps:064x}")
                swaps += 1
            denied, allowed = bad.result(), good.result()
    print(f"{swaps} swaps; {denied['n']} forbidden and {allowed['n']} allowed opens")
    assert swaps >= 10
    assert denied["n"] > 1000 and denied["ok"] == 0, denied
    # and the allowed file never failed: the old generation is only deleted
    # after hooks that may still read it have finished
    assert allowed["n"] > 1000 and allowed["ok"] == allowed["n"], allowed
    st = read_status(pin_root)
    assert st is not None
    assert st.generation == swaps + 1
    assert [s.generation for s in st.sandboxes] == [swaps + 1]  # the old ones are gone
    assert set(st.entries) == {st.sandboxes[0].sandbox_id}


AGENT = SANDBOX_AGENT


def registry_dir(base: Path, cg: Cgroup) -> Path:
    return sandboxed_agent_registry(
        base, cg.path.name, {"analyst": str(EXAMPLES / "data-analyst.cedar"),
                             "guardrails": str(EXAMPLES / "guardrails.cedar")},
        (EXAMPLES / "entities.json").read_text())


def test_kill_9_leaves_enforcement_and_a_restart_reports_the_same(
        make_cgroup: Any, pin_root: Path, chroot: Path, tmp_path: Path) -> None:
    from agent.registry import load_directory
    from agent.sandbox.hosts import static_resolver
    from agent.sandbox.service import SandboxService
    from agent.workloads import WorkloadResolver

    cg = make_cgroup()
    reg = registry_dir(tmp_path, cg)
    with start(cg, chroot) as w:
        agent = subprocess.Popen(
            [sys.executable, "-c", AGENT, str(reg), str(pin_root), json.dumps(LOOPBACK_HOSTS)],
            cwd=ROOT, stdout=subprocess.PIPE, text=True, env={**os.environ, "PYTHONPATH": "."})
        try:
            assert agent.stdout is not None
            line = agent.stdout.readline()
            assert line, f"the agent died ({agent.wait()})"
            before = json.loads(line)
            assert before["changes"] == ["applied"]
            assert [b["cgroup_id"] for b in before["status"]["bindings"]] == [cg.id]
            assert w.errno(op="open", path="/etc/shadow") == errno.ENOENT
        finally:
            agent.send_signal(signal.SIGKILL)
            assert agent.wait() == -signal.SIGKILL
            if agent.stdout is not None:
                agent.stdout.close()
        # the agent is gone; its sandbox is not
        assert w.errno(op="open", path="/etc/shadow") == errno.ENOENT
        assert w.errno(op="open", path="/workspace/analyst-1/x") == 0
        assert w.errno(op="connect", family=4, addr="127.0.0.3", port=443) == errno.ECONNREFUSED
        assert w.errno(op="connect", family=4, addr="127.0.0.2", port=443) == 0
        # a restarted agent adopts the pinned state and reports the same
        registry = load_directory(reg)
        svc = SandboxService(lambda: registry, WorkloadResolver(), None, root=pin_root,
                             policies=PolicyRecords(lambda: registry),
                             host_resolver=static_resolver(LOOPBACK_HOSTS))
        adopted = svc.start().to_json()
        try:
            for key in ("programs", "mechanisms", "generation", "bindings", "sandboxes"):
                assert adopted[key] == before["status"][key], key
            assert svc.reconcile() == []  # nothing to change: same inputs, same cgroups
            assert svc.status().to_json()["generation"] == before["status"]["generation"]
        finally:
            svc.close()
        assert w.errno(op="open", path="/etc/shadow") == errno.ENOENT
