"""The kernel's per-workload event budget (bpf/lib/ratelimit.h) and exact counts,
for the sandbox and the quarantine: a burst of denials from one process pinned
to one CPU is counted to the last call, while only `burst + rate * elapsed`
events reach user space and the rest are counted as held.

Real cgroups, real connects refused by the cgroup hooks; positive control: the
same destination accepts the connection from outside (a real listener).
"""

from __future__ import annotations

import errno
import json
import socket
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from agent.discovery.quarantine import Quarantine
from agent.kernel import budget
from agent.registry import load_directory
from agent.registry.policyset import PolicyRecords
from agent.sandbox import counters as C
from agent.sandbox.hosts import static_resolver
from agent.sandbox.service import SandboxService
from agent.workloads import WorkloadResolver
from tests.support import (
    EXAMPLES,
    Cgroup,
    drop_pin_root,
    sandbox_pin_root,
    sandboxed_agent_registry,
)

RATE, BURST, CALLS = 50, 20, 2000

# one CPU, so that one per-CPU bucket decides; prints the calls' errnos and the time
BURSTER = r"""
import collections, json, os, socket, sys, time
os.sched_setaffinity(0, {0})
host, port, n = sys.argv[1], int(sys.argv[2]), int(sys.argv[3])
time.sleep(float(sys.argv[4]))  # the budget refills after the start-up's events
errs = collections.Counter()
t0 = time.monotonic()
for _ in range(n):
    s = socket.socket()
    errs[s.connect_ex((host, port))] += 1
    s.close()
print(json.dumps({"errnos": errs, "elapsed": time.monotonic() - t0}))
"""


@pytest.fixture
def listener() -> Iterator[tuple[str, int]]:
    with socket.socket() as s:
        s.bind(("127.0.0.3", 0))
        s.listen(4096)
        addr = s.getsockname()
        with socket.create_connection(addr, timeout=5):  # positive control
            pass
        yield addr


def _burst(cg: Cgroup, addr: tuple[str, int], n: int, delay: float = 0.0) -> dict[str, Any]:
    r = cg.run([sys.executable, "-c", BURSTER, addr[0], str(addr[1]), str(n), str(delay)])
    assert r.returncode == 0, r.stderr
    out: dict[str, Any] = json.loads(r.stdout)
    return out


def test_sandbox_events_are_budgeted_per_workload_and_counts_stay_exact(
        make_cgroup: Any, tmp_path: Path, listener: tuple[str, int]) -> None:
    cg = make_cgroup()
    reg = load_directory(sandboxed_agent_registry(
        tmp_path, cg.path.name, {"analyst": str(EXAMPLES / "data-analyst.cedar")},
        (EXAMPLES / "entities.json").read_text()))
    root = sandbox_pin_root()
    svc = SandboxService(lambda: reg, WorkloadResolver(), None,
                         policies=PolicyRecords(lambda: reg), root=root,
                         host_resolver=static_resolver({}), event_rate=RATE,
                         event_burst=BURST)
    try:
        svc.start()
        assert [c.what for c in svc.reconcile()] == ["applied"]
        assert svc.maps is not None
        svc.poll()  # nothing yet
        before = C.read_totals(svc.maps)
        got = _burst(cg, listener, CALLS)
        assert got["errnos"] == {str(errno.ECONNREFUSED): CALLS}, got
        # (the child's own start-up is in the budget too: its file opens are
        # would-deny events of the tracepoint fallback)
        delivered = svc.poll()
        after = C.read_totals(svc.maps)
        key = ("connectNetwork", "deny", "enforce")
        counted = after.decisions[key] - before.decisions.get(key, 0)
        held = after.held - before.held
        print(f"{CALLS} refused in {got['elapsed']:.3f} s: counted {counted}, "
              f"delivered {len(delivered)}, held {held}")
        assert counted == CALLS  # every one, delivered or not
        assert BURST <= len(delivered) <= BURST + RATE * 2.0  # the child ran well within 2 s
        assert len(delivered) + held == after.total - before.total
        assert budget.held(svc.maps.budget)[cg.id] == held
        per_rule = {k: n for k, n in C.read_counts(svc.maps).items()
                    if k.bound_cgroup_id == cg.id and k.action == "connectNetwork"}
        assert sum(per_rule.values()) == CALLS
        # the bucket refills: a second later, a denial is an event again
        assert _burst(cg, listener, 1, delay=1.0)["errnos"] == {str(errno.ECONNREFUSED): 1}
        assert len([d for d in svc.poll() if d.action == "connectNetwork"]) == 1
        # no budget (rate 0): every event is sent
        C.set_budget(svc.maps, 0, 1)
        assert _burst(cg, listener, 50)["errnos"] == {str(errno.ECONNREFUSED): 50}
        assert len([d for d in svc.poll() if d.action == "connectNetwork"]) == 50
    finally:
        svc.close()
        drop_pin_root(root)


def test_a_budget_out_of_range_is_refused_with_the_limits(tmp_path: Path) -> None:
    from agent.errors import ConfigError

    root = sandbox_pin_root()
    svc = SandboxService(lambda: load_directory(tmp_path), WorkloadResolver(), None,
                         policies=PolicyRecords(lambda: load_directory(tmp_path)), root=root,
                         event_rate=budget.RATE_MAX + 1)
    try:
        with pytest.raises(ConfigError, match="0 <= rate <= 1000000"):
            svc.start()
    finally:
        svc.close()
        drop_pin_root(root)


def test_quarantine_counts_every_refusal_and_budgets_its_events(
        make_cgroup: Any, bpffs_root: Path, listener: tuple[str, int], tmp_path: Path) -> None:
    cg, other = make_cgroup(), make_cgroup()
    q = Quarantine(root=bpffs_root, event_rate=RATE, event_burst=BURST)
    q.start()
    try:
        q.add(cg.id)
        got = _burst(cg, listener, CALLS)
        assert got["errnos"] == {str(errno.EPERM): CALLS}, got
        assert _burst(other, listener, 1)["errnos"] == {"0": 1}  # not quarantined
        events = [r for r in q.refusals() if r.cgroup_id == cg.id]
        refused = q.counts()[cg.id]  # (only connects are refused: no start-up noise)
        assert q.held is not None
        held = q.held.due()[cg.id]
        print(f"{CALLS} refused in {got['elapsed']:.3f} s: counted {refused}, "
              f"events {len(events)}, held {held}")
        assert refused == CALLS
        assert BURST <= len(events) <= BURST + RATE * got["elapsed"] + 2
        assert len(events) + held == CALLS
        assert other.id not in q.counts()
        # export: the metric and the audit log's suppressed count, once
        from agent.telemetry.audit import AuditLog
        from agent.telemetry.metrics import QUARANTINE_REFUSED

        name = f"cgroup:{cg.id}"
        audit = AuditLog(tmp_path / "audit.jsonl", node="t")
        q.export(lambda c: f"cgroup:{c}", audit)
        q.export(lambda c: f"cgroup:{c}", audit)  # nothing new: nothing more
        assert QUARANTINE_REFUSED.labels(workload=name)._value.get() >= CALLS
        assert cg.id not in q.held.due()  # reported once
        # released: the next export drops what was counted of it, and a
        # quarantine again reports only what is new
        q.remove(cg.id)
        q.export(lambda c: f"cgroup:{c}", audit)
        assert cg.id not in q.counts() and cg.id not in q.held.due()
        q.add(cg.id)
        assert _burst(cg, listener, 1)["errnos"] == {str(errno.EPERM): 1}
        assert q.counts()[cg.id] == 1 and q.held.due().get(cg.id, 0) == 0
        audit.close()
        recs = [json.loads(x) for x in (tmp_path / "audit.jsonl").read_text().splitlines()]
        assert [(r["workload"], r["suppressed"]) for r in recs] == [(name, held)]
    finally:
        q.close()


def test_what_the_budget_held_while_no_agent_ran_is_reported_once(
        make_cgroup: Any, tmp_path: Path, listener: tuple[str, int]) -> None:
    """The kernel keeps counting held events while no agent runs; the next agent
    reports them (the pinned `sandbox_reported`), and nothing twice: over two
    agents, the records' counts plus their suppressed are every decision."""
    from agent.telemetry.audit import AuditLog

    cg = make_cgroup()
    reg = load_directory(sandboxed_agent_registry(
        tmp_path, cg.path.name, {"analyst": str(EXAMPLES / "data-analyst.cedar")},
        (EXAMPLES / "entities.json").read_text()))
    root = sandbox_pin_root()
    path = tmp_path / "audit.jsonl"

    def service() -> tuple[SandboxService, AuditLog]:
        audit = AuditLog(path, node="t")
        return SandboxService(lambda: reg, WorkloadResolver(), audit,
                              policies=PolicyRecords(lambda: reg), root=root,
                              host_resolver=static_resolver({}), event_rate=RATE,
                              event_burst=BURST), audit

    try:
        first, audit = service()
        first.start()
        first.reconcile()
        assert first.maps is not None
        before = C.read_totals(first.maps)
        _burst(cg, listener, CALLS)
        first.poll()
        first.export()
        first.close()
        audit.close()
        _burst(cg, listener, CALLS)  # nobody runs: counted and held in the kernel
        second, audit = service()
        second.start()
        assert second.maps is not None
        second.poll()
        second.export()
        after = C.read_totals(second.maps)
        second.close()
        audit.close()
        records = [json.loads(x) for x in path.read_text().splitlines()]
        mine = [r for r in records if r["kind"] in ("sandbox-deny", "sandbox-would-deny",
                                                    "records-suppressed")]
        accounted = sum(r.get("count", 0) + r.get("suppressed", 0) for r in mine)
        print(f"decisions {after.total - before.total}, held {after.held - before.held}, "
              f"records {len(mine)}, accounted {accounted}")
        assert after.total - before.total >= 2 * CALLS
        assert accounted == after.total - before.total
    finally:
        drop_pin_root(root)
