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
from collections.abc import Callable

from agent.errors import KernelError
from agent.kernel import abi
from agent.kernel import libbpf as L
from agent.kernel.maps import Map

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
        # Positions and record headers are read and written through native
        # 8- and 4-byte views: one aligned load or store each, never torn.
        # (struct's "<Q" packs byte by byte; a torn producer_pos read makes
        # the consumer run past the producer and the kernel then refuses
        # every reserve as "full".)
        self._cons_pos = memoryview(self._cons).cast("Q")
        self._prod_pos = memoryview(self._prod).cast("Q")
        self._hdrs = memoryview(self._prod).cast("I")
        self._epoll = select.epoll()
        self._epoll.register(ringbuf.fd, select.EPOLLIN)
        self.consumed = 0

    def close(self) -> None:
        for view in (self._cons_pos, self._prod_pos, self._hdrs):
            view.release()
        self._epoll.close()
        self._prod.close()
        self._cons.close()

    def __enter__(self) -> RingBuffer:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def pending(self) -> int:
        """Bytes committed by producers and not yet consumed."""
        return int(self._prod_pos[0] - self._cons_pos[0])

    def drain(self, max_records: int = 65536) -> list[bytes]:
        """Copy out committed records (up to `max_records`) and release their space."""
        prod_mm, hdrs, data, mask = self._prod, self._hdrs, self._data, self._mask
        cons = self._cons_pos[0]
        prod = self._prod_pos[0]
        out: list[bytes] = []
        left = max_records
        while cons < prod and left:
            off = data + (cons & mask)
            hdr = hdrs[off >> 2]
            if hdr & 0xC0000000:  # busy (not committed yet) or discarded
                if hdr & 0x80000000:
                    break
                cons += ((hdr & 0x3FFFFFFF) + 15) & ~7
                continue
            stride = (hdr + 15) & ~7  # 8-byte header, 8-byte alignment
            # Ring buffers mostly carry records of one size: take the run of
            # committed records with this same header in C-level slices, so
            # the interpreter's per-record cost is one list-comprehension step.
            n = min((prod - cons) // stride, left)
            step = stride >> 2
            while n > 1 and hdrs[off >> 2: (off >> 2) + n * step: step].tolist().count(hdr) != n:
                n >>= 1
            n = max(n, 1)
            first = off + 8
            out.extend([prod_mm[o: o + hdr] for o in range(first, first + n * stride, stride)])
            cons += n * stride
            left -= n
        self._cons_pos[0] = cons
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

    def errors(self) -> dict[str, int]:
        """Every BPF-side error counter of this object, by kind (summed over CPUs)."""
        return error_counts(self._errors) if self._errors is not None else {}

    def fileno(self) -> int:
        """The epoll descriptor, readable when records may be waiting."""
        return self._epoll.fileno()


def error_counts(errors: Map) -> dict[str, int]:
    """An object's `manul_errors` per-CPU array, summed, by kind (abi.ERR_NAMES)."""
    out = {}
    for idx, name in abi.ERR_NAMES.items():
        v = errors.lookup(idx)
        out[name] = sum(int.from_bytes(x, "little") for x in v) if v else 0
    return out
