"""The Python ring-buffer consumer against real kernel records of mixed sizes."""

from __future__ import annotations

import subprocess
import sys

from agent.kernel import BpfObject, RingBuffer
from tests.support import BPF_DIR

GETPPID = "import os, sys; sys.stdin.readline(); os.getppid()"


def test_mixed_sizes_and_discards_arrive_in_order() -> None:
    count = 200
    child = subprocess.Popen([sys.executable, "-c", GETPPID], stdin=subprocess.PIPE, text=True)
    assert child.stdin is not None
    with BpfObject.open(BPF_DIR / "tests" / "ringbuf_mixed.bpf.o") as obj:
        obj.set_rodata(target_tgid=child.pid, count=count)
        obj.load()
        obj.attach_all()
        with RingBuffer(obj.map("mixed_events")) as rb:
            child.stdin.write("go\n")
            child.stdin.close()
            child.wait()
            records = rb.drain()
            again = rb.drain()
    expected = [i for i in range(count) if i % 3 != 2]
    assert [int.from_bytes(r[:8], "little") for r in records] == expected
    assert [len(r) for r in records] == [8 * (1 + i % 8) for i in expected]
    assert again == []
    assert rb.consumed == len(expected)


def test_drain_respects_max_records_and_resumes() -> None:
    child = subprocess.Popen([sys.executable, "-c", GETPPID], stdin=subprocess.PIPE, text=True)
    assert child.stdin is not None
    with BpfObject.open(BPF_DIR / "tests" / "ringbuf_mixed.bpf.o") as obj:
        obj.set_rodata(target_tgid=child.pid, count=30)
        obj.load()
        obj.attach_all()
        with RingBuffer(obj.map("mixed_events")) as rb:
            child.stdin.write("go\n")
            child.stdin.close()
            child.wait()
            first = rb.drain(max_records=7)
            rest = rb.poll(timeout=1.0)
    seqs = [int.from_bytes(r[:8], "little") for r in first + rest]
    assert len(first) == 7
    assert seqs == [i for i in range(30) if i % 3 != 2]
