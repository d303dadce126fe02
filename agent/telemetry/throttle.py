"""Aggregation and per-workload budgets for the audit log's high-volume records.

A record offered through `AuditLog.event(kind, workload=..., key=..., **fields)`
(sandbox denials, quarantine refusals, discovery sightings) goes through one
`RecordThrottle`:

- **aggregation**: the first record of a (kind, workload, key) is written at
  once with `count: 1` and opens a window of `window` seconds; the same record
  again inside the window is only counted. When the window closes (`tick`,
  once a second) one record carries the repeats: the first record's fields
  with `count: N`, `first_time` and `last_time` of the repeats and
  `aggregated: true`. A storm of one denial is two records per window.
- **budget**: every record of a workload spends a token of that workload's
  bucket (`rate` a second, at most `burst`). A record refused is not written;
  its count is added to the workload's `suppressed`, and the next record of the
  workload that is written says `suppressed: N`. When no record comes, `tick`
  writes a `records-suppressed` record for the workload as soon as a token is
  back, so a suppression is never silent. The budget is checked before the
  record is built (`fields` may be a function), so a storm over its budget
  costs a count, not a record.

Hence, for one workload, the `count`s of its records plus their `suppressed`
is the number of records offered (plus what `suppress` was told: events held
back before they reached user space). Open windows are bounded per workload
and in all (the oldest close early, so one workload's many keys close its own
windows, not others'), and so are buckets (`KeyedLimiter`'s idle sweep).

What this cannot do: a workload that raises many *distinct* denials spends its
budget on them, and a denial among them may then be known only as a count
(`suppressed`, and exactly in the kernel's per-rule metrics), not by its
resource. The budget bounds the disk; it cannot keep every detail.
"""

from __future__ import annotations

import threading
import time
from collections import OrderedDict
from collections.abc import Callable, Hashable
from dataclasses import dataclass, field
from typing import Any

from agent.telemetry import metrics
from agent.telemetry.ratelimit import KeyedLimiter

DEFAULT_WINDOW = 10.0
DEFAULT_RATE = 20.0
DEFAULT_BURST = 100
SUPPRESSED_KIND = "records-suppressed"

Record = tuple[str, dict[str, Any]]  # (kind, fields) to write


@dataclass
class _Window:
    kind: str
    workload: str
    fields: dict[str, Any]
    closes: float  # monotonic
    repeats: int = 0
    first: float = 0.0  # wall clock of the first repeat
    last: float = 0.0


@dataclass
class ThrottleStats:
    written: int = 0  # records let through
    aggregated: int = 0  # repeats carried by aggregated records written
    suppressed: int = 0  # records (or held events) not written: a spent budget
    by_kind: dict[str, list[int]] = field(default_factory=dict)  # kind -> [aggregated, suppressed]


class RecordThrottle:
    def __init__(self, window: float = DEFAULT_WINDOW, rate: float = DEFAULT_RATE,
                 burst: int = DEFAULT_BURST, *, max_keys: int = 8192,
                 max_keys_per_workload: int = 256,
                 clock: Callable[[], float] = time.monotonic,
                 wall: Callable[[], float] = time.time) -> None:
        """`window` 0: no aggregation; `rate` 0: no budget. Open windows: at most
        `max_keys_per_workload` per workload (its oldest closes early) and
        `max_keys` in all (the busiest workload's oldest closes early)."""
        if window < 0 or rate < 0 or burst < 1 or max_keys < 1 or max_keys_per_workload < 1:
            raise ValueError("a record throttle needs window >= 0, rate >= 0, burst >= 1")
        self.window = window
        self.limiter = KeyedLimiter(rate, burst) if rate > 0 else None
        self.max_keys = max_keys
        self.per_workload = max_keys_per_workload
        self.clock = clock
        self.wall = wall
        self.stats = ThrottleStats()
        # workload -> its open windows in the order they opened (= the order they close)
        self._open: dict[str, OrderedDict[tuple[str, Hashable], _Window]] = {}
        self._n = 0
        self._owed: dict[str, int] = {}  # workload -> suppressed, not yet reported
        self._lock = threading.Lock()

    def offer(self, kind: str, workload: str, key: Hashable,
              fields: dict[str, Any] | Callable[[], dict[str, Any]]) -> list[Record]:
        """The records to write now for this one (none, it, and/or closed windows).
        `fields` may be a function, called only for a record that is written: a
        repeat, or a record over the budget, costs a lookup and a count."""
        now = self.clock()
        out: list[Record] = []
        with self._lock:
            wins = self._open.get(workload)
            wkey = (kind, key)
            w = wins.get(wkey) if wins is not None else None
            if w is not None and now < w.closes:
                if not w.repeats:
                    w.first = self.wall()
                w.repeats += 1
                w.last = self.wall()
                return out
            if w is not None and wins is not None:  # expired: its repeats go out first
                del wins[wkey]
                self._n -= 1
                self._close(w, now, out)
            if not self._allow(workload, now):  # no record built, no window opened
                self._owed[workload] = self._owed.get(workload, 0) + 1
                self._suppressed(kind, 1)
                return out
            rec = dict(fields() if callable(fields) else fields)
            if self.window > 0:
                self._room(workload, now, out)
                self._open.setdefault(workload, OrderedDict())[wkey] = _Window(
                    kind, workload, rec, now + self.window)
                self._n += 1
            self._write(kind, workload, {**rec, "count": 1}, out)
        return out

    def suppress(self, kind: str, workload: str, n: int) -> None:
        """`n` more of `workload`'s records were never offered (held back before user
        space): reported with its next record, or by `tick`."""
        if n > 0:
            with self._lock:
                self._owed[workload] = self._owed.get(workload, 0) + n
                self._suppressed(kind, n)

    def tick(self) -> list[Record]:
        """Close the windows that are due; report suppressions nothing else carried."""
        now = self.clock()
        out: list[Record] = []
        with self._lock:
            for workload, wins in list(self._open.items()):
                while wins:
                    wkey, w = next(iter(wins.items()))
                    if w.closes > now:
                        break
                    del wins[wkey]
                    self._n -= 1
                    self._close(w, now, out)
                if not wins:
                    del self._open[workload]
            for workload, n in list(self._owed.items()):
                if n and self._allow(workload, now):
                    del self._owed[workload]
                    out.append((SUPPRESSED_KIND, {"workload": workload, "suppressed": n}))
                    self.stats.written += 1
        return out

    def drain(self) -> list[Record]:
        """Everything still open, closed now, budget or not (shutting down)."""
        out: list[Record] = []
        with self._lock:
            self.limiter = None
            for wins in self._open.values():
                for w in wins.values():
                    self._close(w, self.clock(), out)
            self._open.clear()
            self._n = 0
            for workload, n in self._owed.items():
                out.append((SUPPRESSED_KIND, {"workload": workload, "suppressed": n}))
            self._owed.clear()
        return out

    def pending(self) -> int:
        with self._lock:
            return (sum(w.repeats for wins in self._open.values() for w in wins.values())
                    + sum(self._owed.values()))

    # -- under the lock -----------------------------------------------------------

    def _room(self, workload: str, now: float, out: list[Record]) -> None:
        """Close windows early until one more fits: the workload's own oldest, then
        (all full) the oldest of the workload with the most."""
        wins = self._open.get(workload)
        while wins and len(wins) >= self.per_workload:
            self._n -= 1
            self._close(wins.popitem(last=False)[1], now, out)
        while self._n >= self.max_keys:
            busiest = max(self._open.values(), key=len)
            self._n -= 1
            self._close(busiest.popitem(last=False)[1], now, out)

    def _close(self, w: _Window, now: float, out: list[Record]) -> None:
        if not w.repeats:
            return
        if not self._allow(w.workload, now):
            self._owed[w.workload] = self._owed.get(w.workload, 0) + w.repeats
            self._suppressed(w.kind, w.repeats)
            return
        rec = {**w.fields, "count": w.repeats, "first_time": w.first, "last_time": w.last,
               "aggregated": True}
        self._write(w.kind, w.workload, rec, out)
        self.stats.aggregated += w.repeats
        self._by_kind(w.kind)[0] += w.repeats
        metrics.AUDIT_AGGREGATED.labels(kind=w.kind).inc(w.repeats)

    def _write(self, kind: str, workload: str, rec: dict[str, Any],
               out: list[Record]) -> None:
        """A record the budget allowed: it carries what the workload owes."""
        owed = self._owed.pop(workload, 0)
        if owed:
            rec["suppressed"] = owed
        out.append((kind, rec))
        self.stats.written += 1

    def _allow(self, workload: str, now: float) -> bool:
        if self.limiter is None or self.limiter.allow(workload, now):
            return True
        self.limiter.take_suppressed(workload)  # counted here, per record's count
        return False

    def _suppressed(self, kind: str, n: int) -> None:
        self.stats.suppressed += n
        self._by_kind(kind)[1] += n
        metrics.AUDIT_SUPPRESSED.labels(kind=kind).inc(n)

    def _by_kind(self, kind: str) -> list[int]:
        return self.stats.by_kind.setdefault(kind, [0, 0])
