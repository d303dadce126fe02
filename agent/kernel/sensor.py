"""An observation object attached at the cgroup v2 root, read through one ring buffer.

`Sensor` is what discovery's `TlsSensor` and the baseline's
`BehaviourSensor` have in common: entering opens the object, sizes its ring
buffer, lets the subclass set what it needs before load (`configure`),
loads it, attaches every program (cgroup programs at the root, or at
`cgroup`, so every process is seen) and maps the ring buffer; leaving
detaches and closes everything. Observation only: nothing is pinned.
"""

from __future__ import annotations

import logging
from pathlib import Path

from agent.errors import KernelError
from agent.kernel.fs import cgroup2_root, ensure_bpffs
from agent.kernel.obj import BpfObject
from agent.kernel.ringbuf import RingBuffer

log = logging.getLogger(__name__)


class Sensor:
    OBJECT = ""  # the BPF object's name (build/bpf/<OBJECT>.bpf.o)
    RINGBUF = ""  # its ring buffer map

    def __init__(self, cgroup: str | Path | None = None, ringbuf_bytes: int = 1 << 22,
                 attach: bool = True) -> None:
        """`attach`: attach the programs on entering (else at `attach()`)."""
        self.cgroup = Path(cgroup) if cgroup else None
        self.ringbuf_bytes = ringbuf_bytes
        self.attach_on_enter = attach
        self._obj: BpfObject | None = None
        self._rb: RingBuffer | None = None
        self._attached = False

    def configure(self, obj: BpfObject) -> None:
        """Settings before load (`.rodata`, map sizes); nothing by default."""

    def __enter__(self) -> Sensor:
        ensure_bpffs()
        obj = BpfObject.open(self.OBJECT)
        try:
            obj.set_max_entries(self.RINGBUF, self.ringbuf_bytes)
            self.configure(obj)
            obj.load()
            self._rb = RingBuffer(obj.map(self.RINGBUF), obj.map("manul_errors"))
            self._obj = obj
            if self.attach_on_enter:
                self.attach()
        except BaseException:
            if self._rb is not None:
                self._rb.close()
                self._rb = None
            self._obj = None
            obj.close()
            raise
        return self

    @property
    def attached(self) -> bool:
        return self._attached

    def attach(self) -> None:
        """Attach every program (cgroup programs at the root): observation on."""
        if self._attached:
            return
        root = self.cgroup or cgroup2_root()[0]
        self.obj.attach_all(cgroup=root)
        self._attached = True
        log.info("%s attached at %s", self.OBJECT, root)

    def detach(self) -> None:
        """Detach every program (loaded, maps and counters kept): no cost to anyone."""
        if self._attached:
            self.obj.detach_all()
            self._attached = False
            log.info("%s detached", self.OBJECT)

    def __exit__(self, *exc: object) -> None:
        self._attached = False
        if self._rb is not None:
            self._rb.close()
            self._rb = None
        if self._obj is not None:
            self._obj.close()
            self._obj = None

    @property
    def started(self) -> bool:
        return self._rb is not None

    @property
    def obj(self) -> BpfObject:
        if self._obj is None:
            raise KernelError(f"the {self.OBJECT} sensor is not started")
        return self._obj

    @property
    def ringbuf(self) -> RingBuffer:
        if self._rb is None:
            raise KernelError(f"the {self.OBJECT} sensor is not started")
        return self._rb

    def drops(self) -> int:
        return self.ringbuf.drops()

    def errors(self) -> dict[str, int]:
        """BPF-side error counters by kind (summed over CPUs)."""
        return self.ringbuf.errors()
