#!/usr/bin/env python3
"""Ring-buffer throughput: Manul's Python consumer against a minimal C consumer.

One BPF program (bpf/bench.bpf.c) writes `burst` records per getppid() of a
producer process. In the same run, on the same program and ring buffer:

1. saturated: the producer runs flat out without waking the consumer, and
   each consumer spins: the C one on libbpf's ring_buffer__consume
   (bench/ringbuf_consumer.c), the Python one on RingBuffer.drain. What
   each receives per second is its maximum rate; the ratio Python/C is
   printed;
2. paced: the producer is held to half of the Python consumer's maximum,
   with the kernel's normal wake-ups, and the Python consumer runs as the
   agent does (RingBuffer.poll, sleeping in epoll): it must receive every
   record with zero drops.

Aim (issue 2): Python >= 1/4 of C; zero drops at half the Python maximum.
Run as root after `make bpf`: .venv/bin/python bench/ringbuf.py
"""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
import textwrap
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from agent.kernel import BpfObject, RingBuffer  # noqa: E402
from agent.kernel import libbpf as L  # noqa: E402
from agent.kernel.fs import BPFFS, ensure_bpffs  # noqa: E402

SECONDS = float(os.environ.get("BENCH_SECONDS", "3"))
BURST = 64

PRODUCER = textwrap.dedent("""
    import os, sys, time
    rate = float(sys.argv[1])        # syscalls per second, 0 = flat out
    seconds = float(sys.argv[2])
    sys.stdout.write("ready\\n"); sys.stdout.flush()
    sys.stdin.readline()
    getppid = os.getppid
    n = 0
    start = time.perf_counter()
    end = start + seconds
    if rate == 0:
        while True:
            for _ in range(1000):
                getppid()
            n += 1000
            if time.perf_counter() >= end:
                break
    else:
        while True:
            now = time.perf_counter()
            if now >= end:
                break
            due = int((now - start) * rate)
            while n < due:
                getppid(); n += 1
            time.sleep(0.0005)
    print(n, flush=True)
""")


def build_c_consumer() -> Path:
    out = ROOT / "build" / "bench" / "ringbuf_consumer"
    src = ROOT / "bench" / "ringbuf_consumer.c"
    if not out.exists() or out.stat().st_mtime < src.stat().st_mtime:
        out.parent.mkdir(parents=True, exist_ok=True)
        subprocess.run(["cc", "-O2", "-Wall", "-o", str(out), str(src), "-lbpf"], check=True)
    return out


class Bench:
    def __init__(self) -> None:
        ensure_bpffs()
        self.pin_dir = BPFFS / f"manul-bench-{os.getpid()}"
        self.obj = BpfObject.open("bench")
        self.obj.pin_maps(self.pin_dir, ["bench_events"])
        self.obj.load()
        self.obj.attach_all()
        self.cfg = self.obj.map("bench_cfg")
        self.errors = self.obj.map("manul_errors")
        self.rb = RingBuffer(self.obj.map("bench_events"), self.errors)

    def close(self) -> None:
        self.rb.close()
        self.obj.close()
        shutil.rmtree(self.pin_dir, ignore_errors=True)

    def drops(self) -> int:
        return self.rb.drops()

    def producer(self, rate: float, seconds: float, *, wake: bool = True
                 ) -> subprocess.Popen[str]:
        p = subprocess.Popen([sys.executable, "-c", PRODUCER, str(rate), str(seconds)],
                             stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True)
        assert p.stdout and p.stdin
        assert p.stdout.readline().strip() == "ready"
        self.cfg.update(0, p.pid)
        self.cfg.update(1, BURST)
        self.cfg.update(2, 0 if wake else 1)
        return p

    @staticmethod
    def go(p: subprocess.Popen[str]) -> None:
        assert p.stdin
        p.stdin.write("go\n")
        p.stdin.flush()

    @staticmethod
    def finish(p: subprocess.Popen[str]) -> int:
        assert p.stdout
        n = int(p.stdout.readline())
        p.wait()
        return n * BURST

    def run_c(self, seconds: float) -> tuple[float, int, int]:
        exe = build_c_consumer()
        self.rb.drain(1 << 30)
        d0 = self.drops()
        c = subprocess.Popen([str(exe), str(self.pin_dir / "bench_events"), str(seconds + 0.5)],
                             stdout=subprocess.PIPE, text=True)
        assert c.stdout and c.stdout.readline().strip() == "ready"
        p = self.producer(0, seconds, wake=False)
        t0 = time.perf_counter()
        self.go(p)
        produced = self.finish(p)
        elapsed = time.perf_counter() - t0
        got = int(c.stdout.readline().split()[0])
        c.wait()
        return got / elapsed, produced, self.drops() - d0

    def run_py(self, rate: float, seconds: float) -> tuple[float, int, int, int]:
        """rate 0: flat out, spinning on drain(); else paced, sleeping in poll()."""
        self.rb.drain(1 << 30)
        d0 = self.drops()
        spin = rate == 0
        p = self.producer(rate, seconds, wake=not spin)
        got = 0
        acc = 0
        rb = self.rb
        t0 = time.perf_counter()
        self.go(p)
        while p.poll() is None:
            batch = rb.drain() if spin else rb.poll(0.01)
            for rec in batch:  # touch every record, as the C consumer does
                acc += rec[16]
            got += len(batch)
        elapsed = time.perf_counter() - t0
        produced = self.finish(p)
        got += len(rb.drain(1 << 30))
        return got / elapsed, got, produced, self.drops() - d0


def main() -> int:
    if os.geteuid() != 0:
        print("bench/ringbuf.py loads BPF programs: run it as root", file=sys.stderr)
        return 2
    b = Bench()
    try:
        c_rate, c_produced, c_drops = b.run_c(SECONDS)
        py_rate, _, py_produced, py_drops = b.run_py(0, SECONDS)
        half = py_rate / 2
        _, paced_got, paced_produced, paced_drops = b.run_py(half / BURST, SECONDS)
    finally:
        b.close()
    ratio = py_rate / c_rate if c_rate else 0.0
    print(f"ring buffer 4 MiB, {BURST} records/syscall, {SECONDS:.0f} s per run, "
          f"{L.possible_cpus()} CPUs")
    print(f"{'consumer':<34}{'events/s':>14}{'offered':>14}{'drops':>12}")
    print(f"{'C (libbpf ring_buffer__consume)':<34}{c_rate:>14,.0f}{c_produced:>14,}{c_drops:>12,}")
    print(f"{'Python (agent.kernel.RingBuffer)':<34}{py_rate:>14,.0f}{py_produced:>14,}"
          f"{py_drops:>12,}")
    print(f"{'Python paced at 1/2 its maximum':<34}{paced_got / SECONDS:>14,.0f}"
          f"{paced_produced:>14,}{paced_drops:>12,}")
    print(f"ratio Python/C: {ratio:.2f}  (aim >= 0.25)")
    print(f"paced run: received {paced_got:,} of {paced_produced:,}, drops {paced_drops} "
          f"(aim: all, 0 drops)")
    ok = ratio >= 0.25 and paced_drops == 0 and paced_got == paced_produced
    print("result:", "meets the aims" if ok else "MISSES an aim")
    return 0


if __name__ == "__main__":
    sys.exit(main())
