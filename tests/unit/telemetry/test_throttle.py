"""RecordThrottle and AuditLog.event: aggregation windows, per-workload budgets,
suppressed counts carried by the next record, and the accounting invariant
(the counts of a workload's records plus their `suppressed` are what it offered)."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from agent.telemetry.audit import AuditLog
from agent.telemetry.throttle import SUPPRESSED_KIND, RecordThrottle


class Clock:
    def __init__(self) -> None:
        self.now = 100.0

    def __call__(self) -> float:
        return self.now


def _throttle(clock: Clock, **kw: Any) -> RecordThrottle:
    return RecordThrottle(clock=clock, wall=lambda: clock.now + 1e9, **kw)


def test_repeats_in_a_window_become_one_aggregated_record() -> None:
    clock = Clock()
    t = _throttle(clock, window=10, rate=100, burst=100)
    first = t.offer("sandbox-deny", "w", ("r",), {"resource": "r"})
    assert first == [("sandbox-deny", {"resource": "r", "count": 1})]
    for i in range(5):
        clock.now += 1
        assert t.offer("sandbox-deny", "w", ("r",), {"resource": "r", "pid": i}) == []
    assert t.tick() == []  # the window is still open
    clock.now += 5
    (kind, rec), = t.tick()
    assert kind == "sandbox-deny" and rec["count"] == 5 and rec["aggregated"]
    assert rec["resource"] == "r" and "pid" not in rec  # the first record's fields
    assert rec["first_time"] == 1e9 + 101 and rec["last_time"] == 1e9 + 105
    # a new window: written at once again
    assert t.offer("sandbox-deny", "w", ("r",), {"resource": "r"})[0][1]["count"] == 1
    # another key or another workload is another record
    assert t.offer("sandbox-deny", "w", ("s",), {})[0][1]["count"] == 1
    assert t.offer("sandbox-deny", "v", ("r",), {})[0][1]["count"] == 1
    assert t.stats.aggregated == 5


def test_an_expired_window_is_closed_by_the_next_offer() -> None:
    clock = Clock()
    t = _throttle(clock, window=2, rate=100, burst=100)
    t.offer("k", "w", 1, {})
    t.offer("k", "w", 1, {})
    clock.now += 3
    out = t.offer("k", "w", 1, {})
    assert [r["count"] for _, r in out] == [1, 1] and out[0][1]["aggregated"]


def test_a_spent_budget_is_counted_and_carried_by_the_next_record() -> None:
    clock = Clock()
    t = _throttle(clock, window=10, rate=1, burst=3)
    written = [t.offer("k", "storm", i, {}) for i in range(10)]
    assert sum(len(w) for w in written) == 3
    assert t.offer("k", "quiet", 0, {}) != []  # its own budget
    clock.now += 1  # one token back
    (_, rec), = t.offer("k", "storm", 99, {})
    assert rec["suppressed"] == 7 and rec["count"] == 1
    assert t.stats.suppressed == 7


def test_suppressions_nothing_carries_are_reported_by_tick() -> None:
    clock = Clock()
    t = _throttle(clock, window=10, rate=1, burst=1)
    t.offer("k", "w", 1, {})
    t.offer("k", "w", 2, {})  # refused
    t.suppress("k", "w", 40)  # held back in the kernel
    assert t.tick() == []  # no token yet
    clock.now += 1
    assert t.tick() == [(SUPPRESSED_KIND, {"workload": "w", "suppressed": 41})]
    assert t.tick() == []


def test_open_windows_are_bounded() -> None:
    clock = Clock()
    t = _throttle(clock, window=60, rate=0, max_keys=4)
    for i in range(4):
        t.offer("k", "w", i, {})
        t.offer("k", "w", i, {})
    out = t.offer("k", "w", 99, {})  # the oldest window is closed early
    assert [r["count"] for _, r in out] == [1, 1]
    assert t.pending() == 3


def test_bad_limits_are_refused() -> None:
    with pytest.raises(ValueError):
        RecordThrottle(window=-1)
    with pytest.raises(ValueError):
        RecordThrottle(burst=0)


@settings(max_examples=200, deadline=None)
@given(st.lists(st.tuples(st.sampled_from(["a", "b"]), st.integers(0, 3),
                          st.floats(0, 3)), max_size=200),
       st.floats(0.5, 20), st.floats(0, 5), st.integers(1, 10), st.integers(0, 50))
def test_every_offer_is_accounted_for(offers: list[tuple[str, int, float]], window: float,
                                      rate: float, burst: int, held: int) -> None:
    clock = Clock()
    t = _throttle(clock, window=window, rate=rate, burst=burst)
    out = []
    for workload, key, dt in offers:
        clock.now += dt
        out += t.offer("k", workload, key, {"workload": workload})
        out += t.tick()
    t.suppress("k", "a", held)
    out += t.drain()
    for w in ("a", "b"):
        offered = sum(1 for o in offers if o[0] == w) + (held if w == "a" else 0)
        mine = [r for _, r in out if r["workload"] == w]
        assert sum(r.get("count", 0) + r.get("suppressed", 0) for r in mine) == offered


def test_audit_log_event_writes_aggregates_and_drains_on_close(tmp_path: Path) -> None:
    clock = Clock()
    path = tmp_path / "audit.jsonl"
    log = AuditLog(path, node="n", throttle=_throttle(clock, window=5, rate=100, burst=100))
    for _ in range(3):
        log.event("sandbox-deny", budget="w", key=("x",), workload="w", resource="x")
    log.tick()
    assert len(path.read_text().splitlines()) == 1
    log.close()  # what is still open is written
    recs = [json.loads(x) for x in path.read_text().splitlines()]
    assert [(r["kind"], r["count"], r.get("aggregated", False)) for r in recs] == [
        ("sandbox-deny", 1, False), ("sandbox-deny", 2, True)]
    assert all(r["workload"] == "w" and r["node"] == "n" for r in recs)


def test_one_workloads_many_keys_close_its_own_windows_not_others() -> None:
    clock = Clock()
    t = _throttle(clock, window=60, rate=0, max_keys=1000, max_keys_per_workload=8)
    t.offer("k", "victim", "v", {"workload": "victim"})
    t.offer("k", "victim", "v", {"workload": "victim"})  # a repeat, in its window
    out = []
    for i in range(500):
        out += t.offer("k", "storm", i, {"workload": "storm"})
        out += t.offer("k", "storm", i, {"workload": "storm"})
    assert all(r["workload"] == "storm" for _, r in out)  # the victim's window stayed
    assert t.pending() == 1 + 8
    (_, rec), = [x for x in t.drain() if x[1]["workload"] == "victim"]
    assert rec["count"] == 1 and rec["aggregated"]


def test_a_record_over_the_budget_is_never_built() -> None:
    clock = Clock()
    t = _throttle(clock, window=10, rate=1, burst=1)
    built = []

    def fields() -> dict[str, Any]:
        built.append(1)
        return {"workload": "w"}

    for i in range(100):
        t.offer("k", "w", i, fields)
    assert len(built) == 1 and t.stats.suppressed == 99
