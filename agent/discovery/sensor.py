"""The kernel side of discovery: load bpf/tls.bpf.c at the cgroup v2 root, read handshakes.

`TlsSensor` is a context manager: entering loads and attaches the capture
(egress) and the connect observers to the root of the cgroup v2 hierarchy,
so every process on the node is seen; leaving detaches them. Observation
only: nothing is pinned, and traffic is never changed.
"""

from __future__ import annotations

import time
from pathlib import Path

from agent.discovery.handshake import Handshake, decode
from agent.kernel import abi
from agent.kernel.sensor import Sensor


class TlsSensor(Sensor):
    OBJECT = "tls"
    RINGBUF = "tls_events"

    def __init__(self, cgroup: str | Path | None = None, ringbuf_bytes: int = 1 << 22,
                 coalesce: float = 0.005) -> None:
        """`coalesce`: after the first handshake of a quiet spell, wait this long for
        others, so a burst costs one wake-up instead of one per handshake."""
        super().__init__(cgroup, ringbuf_bytes)
        self.coalesce = coalesce

    def __enter__(self) -> TlsSensor:
        super().__enter__()
        return self

    def poll(self, timeout: float = 0.1) -> list[Handshake]:
        """Handshakes captured since the last call (waits up to `timeout`)."""
        out = []
        records = self.ringbuf.poll(timeout)
        if records and self.coalesce > 0:
            time.sleep(self.coalesce)
            records += self.ringbuf.drain()
        for rec in records:
            if abi.event_type(rec) == abi.EV_TLS:
                out.append(decode(rec))
        return out
