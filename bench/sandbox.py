#!/usr/bin/env python3
"""What a sandbox costs a sandboxed process, per operation class.

Needs BPF LSM, so it runs in the test VM: run on a host, it boots the VM
once (vagrant/run-in-vm) and runs itself inside. In one run, a C loop
(bench/sandbox_loop.c, compiled now) times, from a process in a cgroup:
open()+close() of a tmpfs file; rename() of a file; create+unlink();
mmap(PROT_EXEC) of a file (loadLibrary); connect() of a UDP socket (the
cheapest connect: only the hook and a route lookup, so the hook's share is
the largest); sendto() on an unconnected UDP socket. Under:

    no program          nothing attached
    no-op LSM           the same LSM hooks returning 0 (file_open,
                        socket_connect, path_rename, path_unlink,
                        path_mknod, mmap_file, socket_sendmsg;
                        tests/bpf/lsm_noop.bpf.c): the baseline
    sandbox N           bpf/sandbox.bpf.c with the process's cgroup bound to
                        a sandbox of N path and N network entries (distinct
                        prefixes / addresses; the call is allowed, by an
                        entry as deep as the trie goes)
    other cgroup        the sandbox attached, the process not sandboxed

Configurations run in rounds (each round every configuration once); per
configuration the median ns per call is printed, with the median over rounds
of its ratio to the no-op program of the same round (paired, so that the
slow drift of a shared machine cancels) and the best-of-rounds ratio.
Aim: every operation within 1.2x of the no-op program at 10,000 entries.
Run as root after `make bpf`: .venv/bin/python bench/sandbox.py
(BENCH_ROUNDS, BENCH_N to change the rounds and the calls per run).
"""

from __future__ import annotations

import os
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
import uuid
from pathlib import Path
from types import SimpleNamespace
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

ROUNDS = int(os.environ.get("BENCH_ROUNDS", "5"))
CALLS = int(os.environ.get("BENCH_N", "20000"))
SIZES = (10, 1_000, 10_000)
FILE_OPS = ("open", "rename", "unlink", "mmap")
NET_OPS = ("connect", "sendto")
OPS = FILE_OPS + NET_OPS
BASE = Path("/dev/shm/manul-bench")  # tmpfs: the file system adds little of its own


def in_vm() -> None:
    """Boot the VM once and run this script inside (BPF LSM is refused here)."""
    cmd = [str(ROOT / "vagrant" / "run-in-vm"), "env", f"BENCH_ROUNDS={ROUNDS}",
           f"BENCH_N={CALLS}", str(ROOT / ".venv" / "bin" / "python"), "bench/sandbox.py"]
    os.execvpe(cmd[0], cmd, {**os.environ, "MANUL_VM_KVM": os.environ.get("MANUL_VM_KVM", "0")})


def build_loop(tmp: Path) -> Path:
    out = tmp / "sandbox_loop"
    # static: under the sandbox the loop may exec itself and nothing else (no ld.so, no libc)
    subprocess.run(["clang", "-O2", "-Wall", "-static", "-o", str(out),
                    str(ROOT / "bench/sandbox_loop.c")], check=True)
    return out


def entries(n: int, loop: Path) -> Any:
    """A sandbox of n prefix entries and n /32 entries (+ the root entries, and
    one that lets the loop binary be executed), built with the compiler's
    layout: what `manul compile` emits for n such rules."""
    import ipaddress

    from compiler import layout
    from compiler.result import MapEntry, Provenance

    rw = (1 << 0) | (1 << 1) | (1 << 3)  # readFile, writeFile, loadLibrary
    paths = [MapEntry(layout.path_key(1, b"", exact=False), layout.path_val(0, (0,) * 4),
                      "root", "*"),
             MapEntry(layout.path_key(1, str(loop).encode(), exact=True),
                      layout.path_val(1 << 2, (0, 0, 1, 0)), "exact", str(loop))]
    for i in range(n):  # the target's own prefix, and n - 1 others beside it
        p = (f"{BASE}/t/" if i == 0 else f"{BASE}/d{i}/").encode()
        paths.append(MapEntry(layout.path_key(1, p, exact=False),
                              layout.path_val(rw, (1, 1, 0, 1)), "prefix", p.decode()))
    allow_all = layout.net_val([(0, 65535, layout.PROTO_TCP | layout.PROTO_UDP, 1, 1)])
    net = [MapEntry(layout.net_key(1, ipaddress.ip_network("0.0.0.0/0")), layout.net_val([]),
                    "root", "0.0.0.0/0"),
           MapEntry(layout.net_key(1, ipaddress.ip_network("::/0")), layout.net_val([]),
                    "root", "::/0")]
    for i in range(n - 1):
        a = ipaddress.ip_network(f"10.{i >> 16 & 255}.{i >> 8 & 255}.{i & 255}/32")
        net.append(MapEntry(layout.net_key(1, a), allow_all, "cidr", str(a)))
    net.append(MapEntry(layout.net_key(1, ipaddress.ip_network("127.0.0.1/32")), allow_all,
                        "cidr", "127.0.0.1/32"))
    return SimpleNamespace(name=f"bench-{n}", maps={"sandbox_paths": tuple(paths),
                                                    "sandbox_net": tuple(net)},
                           rules={1: Provenance("permit", ("bench",))}, approximations=(),
                           gateway=())


def measure(loop: Path, cg: Any, target: Path) -> dict[str, float]:
    """Nanoseconds per call of each operation, from a process in cgroup `cg`."""
    out = {}
    for op in OPS:
        if op in FILE_OPS:
            args = [op, str(CALLS), str(target.parent / "u") if op == "unlink" else str(target)]
        else:
            args = [op, str(CALLS), "127.0.0.1", "9"]
        r = cg.run([str(loop), *args], timeout=600)
        if r.returncode != 0:
            raise SystemExit(f"bench loop `{op}` failed in {cg.path}: {r.stderr.strip()}")
        out[op] = float(r.stdout)
    return out


def main() -> None:
    if os.environ.get("MANUL_IN_VM") != "1":
        in_vm()
    from agent.kernel import BpfObject
    from agent.kernel.fs import BPFFS, ensure_bpffs
    from agent.sandbox import SandboxMaps, apply_sandbox, ensure_loaded, locked, unload
    from agent.sandbox.apply import CgroupRef
    from tests.support import BPF_DIR, Cgroup, cgroup2_root

    ensure_bpffs()
    pin_root = BPFFS / f"manul-bench-{uuid.uuid4().hex[:8]}"
    tmp = Path(tempfile.mkdtemp(prefix="manul-bench-"))
    cgs: list[Cgroup] = []
    samples: dict[str, list[dict[str, float]]] = {}
    try:
        for _ in range(2):
            path = cgroup2_root() / f"manul-bench-{uuid.uuid4().hex[:6]}"
            path.mkdir()
            cgs.append(Cgroup(path))
        inside, other = cgs
        loop = build_loop(tmp)
        sandboxes = {n: entries(n, loop) for n in SIZES}
        target = BASE / "t" / "f"
        target.parent.mkdir(parents=True, exist_ok=True)
        target.write_text("x")
        start = time.monotonic()
        for _ in range(ROUNDS):
            samples.setdefault("no program", []).append(measure(loop, inside, target))
            with BpfObject.open(BPF_DIR / "tests" / "lsm_noop.bpf.o") as obj:
                obj.load()
                obj.attach_all()
                samples.setdefault("no-op LSM", []).append(measure(loop, inside, target))
            with locked(pin_root):
                lsm, _ = ensure_loaded(pin_root)
                assert lsm, "bench/sandbox.py needs BPF LSM"
                with SandboxMaps.open(pin_root) as maps:
                    refs = [CgroupRef.resolve(inside.path)]
                    for n in SIZES:
                        apply_sandbox(maps, sandboxes[n], target="bench", cgroups=refs,
                                      mode="enforce", digest=os.urandom(32).hex())
                        samples.setdefault(f"sandbox {n:,}", []).append(
                            measure(loop, inside, target))
                    samples.setdefault("sandbox, other cgroup", []).append(
                        measure(loop, other, target))
                unload(pin_root)
        elapsed = time.monotonic() - start
    finally:
        unload(pin_root)
        shutil.rmtree(pin_root, ignore_errors=True)
        shutil.rmtree(BASE, ignore_errors=True)
        shutil.rmtree(tmp, ignore_errors=True)
        for cg in cgs:
            if cg.path.exists():
                cg.destroy()
    noop = samples["no-op LSM"]
    print(f"\nsandbox hook cost in the test VM ({os.uname().release}): {ROUNDS} rounds x "
          f"{CALLS:,} calls ({elapsed:.0f} s). Per operation: the median ns per call, the "
          "median of the rounds' ratios to the no-op program measured in the same round "
          "(paired: slow drift of this shared machine cancels), and best-of-rounds ns over "
          "the no-op's best")
    print(f"{'':<24}" + "".join(f"{op:>24}" for op in OPS))
    worst = 0.0
    for name, rows in samples.items():
        line = f"{name:<24}"
        for op in OPS:
            v = statistics.median(x[op] for x in rows)
            paired = statistics.median(x[op] / b[op] for x, b in zip(rows, noop, strict=True))
            best = min(x[op] for x in rows) / min(b[op] for b in noop)
            line += f"{v:>9.0f} {paired:>5.2f}x {best:>5.2f}x  "
            if name.startswith("sandbox 10,000"):
                worst = max(worst, paired)
        print(line)
    verdict = "within" if worst <= 1.2 else "NOT within"
    print(f"aim: every operation, sandbox at 10,000 entries within 1.2x of the no-op program "
          f"(paired median): {verdict} (worst {worst:.2f}x)")


if __name__ == "__main__":
    main()
