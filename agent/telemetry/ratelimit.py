"""Token buckets per key: how many records of one kind one workload may write.

`KeyedLimiter.allow(key, now)` spends a token of `key`'s bucket (`burst`
tokens, refilled at `rate` per second) and says whether the record may be
written; what it refuses is counted per key, and `take_suppressed(key)`
hands that count to the next record that is written, so a flood shows up
as one record with `suppressed: N`, never as silence. Buckets idle for
`idle` seconds are dropped (memory stays bounded by the keys in use).
"""

from __future__ import annotations

import threading
from collections.abc import Hashable
from dataclasses import dataclass


@dataclass
class _Bucket:
    tokens: float
    stamp: float
    suppressed: int = 0


class KeyedLimiter:
    def __init__(self, rate: float, burst: int, idle: float = 3600.0) -> None:
        if rate <= 0 or burst < 1:
            raise ValueError("a rate limit needs a positive rate and a burst of at least 1")
        self.rate = rate
        self.burst = burst
        self.idle = idle
        self._buckets: dict[Hashable, _Bucket] = {}
        self._lock = threading.Lock()
        self._last_sweep = 0.0

    def allow(self, key: Hashable, now: float) -> bool:
        with self._lock:
            b = self._buckets.get(key)
            if b is None:
                b = self._buckets[key] = _Bucket(float(self.burst), now)
            else:
                b.tokens = min(float(self.burst), b.tokens + (now - b.stamp) * self.rate)
                b.stamp = now
            if now - self._last_sweep > self.idle:
                self._sweep(now)
            if b.tokens >= 1.0:
                b.tokens -= 1.0
                return True
            b.suppressed += 1
            return False

    def take_suppressed(self, key: Hashable) -> int:
        """Records of `key` refused since the last call (and reset to 0)."""
        with self._lock:
            b = self._buckets.get(key)
            if b is None:
                return 0
            n, b.suppressed = b.suppressed, 0
            return n

    def suppressed(self) -> int:
        with self._lock:
            return sum(b.suppressed for b in self._buckets.values())

    def _sweep(self, now: float) -> None:
        self._last_sweep = now
        for key in [k for k, b in self._buckets.items()
                    if now - b.stamp > self.idle and not b.suppressed]:
            del self._buckets[key]
