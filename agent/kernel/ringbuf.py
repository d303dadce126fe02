"""A BPF ring-buffer consumer written in Python over mmap, in batches.

The ring buffer's pages are mapped directly (as libbpf does): a writable
consumer page, then the read-only producer page and the data area, which
the kernel maps twice in a row so that a record that wraps is still
contiguous. `RingBuffer.drain()` copies out every committed record and
advances the consumer position once, so Python pays one syscall-free pass
per batch instead of a C-to-Python callback per event. `poll()` sleeps in
epoll until the kernel signals data.

Records the kernel could not reserve are not here to see: the BPF side
counts them (`manul_errors[MANUL_ERR_RINGBUF_FULL]`), and `drops()` reads
that counter.
"""

from __future__ import annotations

import contextlib
import mmap
import select
import struct
from collections.abc import Callable

from agent.errors import KernelError
from agent.kernel import libbpf as L
from agent.kernel.maps import Map

_BUSY = 1 << 31
_DISCARD = 1 << 30
_HDR = 8
_U64 = struct.Struct("<Q")
_U32 = struct.Struct("<I")
RINGBUF_FULL = 0  # enum manul_err index (manul.h)


class RingBuffer:
    def __init__(self, ringbuf: Map, errors: Map | None = None) -> None:
        if ringbuf.type != L.MAP_TYPE_RINGBUF:
            raise KernelError(f"map `{ringbuf.name}` is not a ring buffer")
        self.map = ringbuf
        self.name = ringbuf.name
        self._errors = errors
        self.size = ringbuf.max_entries
        self._mask = self.size - 1
        page = mmap.PAGESIZE
        try:
            self._cons = mmap.mmap(ringbuf.fd, page, mmap.MAP_SHARED,
                                   mmap.PROT_READ | mmap.PROT_WRITE, offset=0)
            self._prod = mmap.mmap(ringbuf.fd, page + 2 * self.size, mmap.MAP_SHARED,
                                   mmap.PROT_READ, offset=page)
        except OSError as e:
            raise KernelError(f"cannot map ring buffer `{self.name}`", errno=e.errno or 0) from e
        self._data = page
        self._epoll = select.epoll()
        self._epoll.register(ringbuf.fd, select.EPOLLIN)
        self.consumed = 0

    def close(self) -> None:
        self._epoll.close()
        self._prod.close()
        self._cons.close()

    def __enter__(self) -> RingBuffer:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def pending(self) -> int:
        """Bytes committed by producers and not yet consumed."""
        return int(_U64.unpack_from(self._prod, 0)[0] - _U64.unpack_from(self._cons, 0)[0])

    def drain(self, max_records: int = 65536) -> list[bytes]:
        """Copy out committed records (up to `max_records`) and release their space."""
        prod_mm, data, mask = self._prod, self._data, self._mask
        cons = _U64.unpack_from(self._cons, 0)[0]
        prod = _U64.unpack_from(prod_mm, 0)[0]
        out: list[bytes] = []
        unpack = _U32.unpack_from
        while cons < prod and len(out) < max_records:
            off = data + (cons & mask)
            hdr = unpack(prod_mm, off)[0]
            if hdr & _BUSY:
                break
            n = hdr & ~(_BUSY | _DISCARD)
            if not hdr & _DISCARD:
                out.append(prod_mm[off + _HDR: off + _HDR + n])
            cons += (n + _HDR + 7) & ~7
        _U64.pack_into(self._cons, 0, cons)
        self.consumed += len(out)
        return out

    def poll(self, timeout: float | None = None, max_records: int = 65536) -> list[bytes]:
        """Wait up to `timeout` seconds for records, then drain them."""
        batch = self.drain(max_records)
        if batch:
            return batch
        with contextlib.suppress(InterruptedError):
            self._epoll.poll(-1 if timeout is None else timeout)
        return self.drain(max_records)

    def run(self, handler: Callable[[list[bytes]], None], stop: Callable[[], bool],
            timeout: float = 0.1) -> None:
        """Hand batches to `handler` until `stop()` is true."""
        while not stop():
            batch = self.poll(timeout)
            if batch:
                handler(batch)

    def drops(self) -> int:
        """Records the BPF side could not reserve (summed over CPUs)."""
        if self._errors is None:
            return 0
        v = self._errors.lookup(RINGBUF_FULL)
        return sum(int.from_bytes(x, "little") for x in v) if v else 0

    def fileno(self) -> int:
        """The epoll descriptor, readable when records may be waiting."""
        return self._epoll.fileno()
