"""The kernel side of discovery: load bpf/tls.bpf.c at the cgroup v2 root, read handshakes.

`TlsSensor` is a context manager: entering loads and attaches the capture
(egress) and the connect observers to the root of the cgroup v2 hierarchy,
so every process on the node is seen; leaving detaches them. Observation
only: nothing is pinned, and traffic is never changed.
"""

from __future__ import annotations

import logging
import time
from pathlib import Path

from agent.discovery.handshake import Handshake, decode
from agent.kernel import BpfObject, RingBuffer, abi
from agent.kernel.fs import cgroup2_root, ensure_bpffs

log = logging.getLogger(__name__)


class TlsSensor:
    def __init__(self, cgroup: str | Path | None = None, ringbuf_bytes: int = 1 << 22,
                 coalesce: float = 0.005) -> None:
        """`coalesce`: after the first handshake of a quiet spell, wait this long for
        others, so a burst costs one wake-up instead of one per handshake."""
        self.cgroup = Path(cgroup) if cgroup else None
        self.ringbuf_bytes = ringbuf_bytes
        self.coalesce = coalesce
        self._obj: BpfObject | None = None
        self._rb: RingBuffer | None = None

    def __enter__(self) -> TlsSensor:
        ensure_bpffs()
        root = self.cgroup or cgroup2_root()[0]
        obj = BpfObject.open("tls")
        try:
            obj.set_max_entries("tls_events", self.ringbuf_bytes)
            obj.load()
            obj.attach_all(cgroup=root)
            self._rb = RingBuffer(obj.map("tls_events"), obj.map("manul_errors"))
        except BaseException:
            obj.close()
            raise
        self._obj = obj
        log.info("tls capture attached at %s", root)
        return self

    def __exit__(self, *exc: object) -> None:
        if self._rb is not None:
            self._rb.close()
            self._rb = None
        if self._obj is not None:
            self._obj.close()
            self._obj = None

    @property
    def ringbuf(self) -> RingBuffer:
        if self._rb is None:
            raise RuntimeError("the sensor is not started")
        return self._rb

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

    def drops(self) -> int:
        return self.ringbuf.drops()

    def errors(self) -> dict[str, int]:
        """BPF-side error counters by kind (summed over CPUs)."""
        return self.ringbuf.errors()
