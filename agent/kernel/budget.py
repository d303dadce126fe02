"""Event budgets of a BPF object (bpf/lib/ratelimit.h), set and read back.

The sandbox and the quarantine objects each have a budget config (an array
of two `struct manul_event_budget`: [0] what each workload may send per
CPU, [1] what the node may send per CPU in all), the buckets (an LRU per-CPU
hash: workload key -> `struct manul_rate_bucket`, key 0 the node's) and a
`reported` hash that only the agent writes: how many of each workload's held
events it has reported. Held events are cumulative in the kernel, so a
restarted agent reports what was held while no agent ran, and nothing twice.
"""

from __future__ import annotations

import math
import os
from dataclasses import dataclass

from agent.errors import ConfigError
from agent.kernel import abi
from agent.kernel.maps import Map

RATE_MAX = 1_000_000  # MANUL_RATE_MAX
NODE = 0  # MANUL_RATE_NODE


@dataclass(frozen=True, slots=True)
class Budget:
    rate: int  # events a second per workload and CPU; 0: no limit
    burst: int
    node_rate: int  # events a second the node may send in all (summed over CPUs); 0: none

    def to_json(self) -> dict[str, int]:
        return {"rate_per_cpu": self.rate, "burst_per_cpu": self.burst,
                "node_rate": self.node_rate}


def _cpus() -> int:
    return max(1, os.cpu_count() or 1)


def write_budget(config: Map, b: Budget) -> None:
    """Set both budgets; the node's is split evenly over the CPUs (a second's worth
    of burst)."""
    if not 0 <= b.rate <= RATE_MAX or not 1 <= b.burst <= RATE_MAX \
            or not 0 <= b.node_rate <= RATE_MAX * _cpus():
        raise ConfigError(f"an event budget needs 0 <= rate <= {RATE_MAX}, 1 <= burst <= "
                          f"{RATE_MAX} and a node rate from 0 to {RATE_MAX} per CPU")
    per_cpu = math.ceil(b.node_rate / _cpus()) if b.node_rate else 0
    config.update(0, bytes(abi.manul_event_budget(rate=b.rate, burst=b.burst)))
    config.update(1, bytes(abi.manul_event_budget(rate=per_cpu, burst=max(1, per_cpu))))


def read_budget(config: Map) -> Budget:
    w = abi.manul_event_budget.from_buffer_copy(config.lookup(0))
    n = abi.manul_event_budget.from_buffer_copy(config.lookup(1))
    return Budget(int(w.rate), int(w.burst), int(n.rate) * _cpus())


def held(buckets: Map) -> dict[int, int]:
    """Events each workload's budget held back so far (all CPUs; not the node's key)."""
    out = {}
    for k, per_cpu in buckets.items():
        key = int.from_bytes(k, "little")
        if key != NODE:
            out[key] = sum(abi.manul_rate_bucket.from_buffer_copy(v).held for v in per_cpu)
    return out


class HeldReporter:
    """What each workload's budget held back since the agent last said so."""

    def __init__(self, buckets: Map, reported: Map) -> None:
        self.buckets = buckets
        self.reported = reported
        self.keys: set[int] = set()  # the workloads with a bucket, as `due` last read

    def due(self) -> dict[int, int]:
        """key -> held events not reported yet (call `mark` once they are)."""
        done = {int.from_bytes(k, "little"): int.from_bytes(v, "little")
                for k, v in self.reported.items()}
        out = {}
        counts = held(self.buckets)
        self.keys = set(counts)
        for key, n in counts.items():
            if n > done.get(key, 0):
                out[key] = n - done.get(key, 0)
            elif n < done.get(key, 0):  # the bucket was evicted and began again
                self.reported.update(key.to_bytes(8, "little"), (0).to_bytes(8, "little"))
                if n:
                    out[key] = n
        return out

    def mark(self, key: int, reported: int) -> None:
        """`reported` more of `key`'s held events were reported."""
        raw = self.reported.lookup(key.to_bytes(8, "little"))
        total = (int.from_bytes(raw, "little") if raw is not None else 0) + reported
        self.reported.update(key.to_bytes(8, "little"), total.to_bytes(8, "little"))

    def forget(self, key: int) -> None:
        """`key` is gone: its bucket and what was reported of it."""
        self.buckets.delete(key.to_bytes(8, "little"))
        self.reported.delete(key.to_bytes(8, "little"))
