"""Compiled means equivalent, in the kernel: the differential requests as real syscalls.

The compiler's differential generator (tests/unit/compiler/cedar_oracle.py)
draws requests near each policy set's literals. Here they are not given to
the reference evaluator but made for real by a worker in a sandboxed cgroup,
with every sandbox of the policy set applied in turn:

    readFile / writeFile  open(O_RDONLY / O_WRONLY) of a file that exists:
                          0 = allowed, ENOENT = denied
    exec                  posix_spawn of an empty executable file:
                          ENOEXEC = allowed (the kernel went on to load it),
                          EPERM = denied
    loadLibrary           mmap(PROT_EXEC) through a descriptor opened before
                          the sandbox applied: 0 = allowed, EPERM = denied;
                          the kernel allows a mapping that `exec` or
                          `loadLibrary` permits, so it is compared with
                          cedarpy's answer on both
    refer                 renameat2(RENAME_EXCHANGE) of two files: allowed
                          iff cedarpy permits writeFile on both and the same
                          actions on both (ENOENT = denied)
    connectNetwork        connect() (TCP, or UDP) in a network namespace where
                          every address is local and every TCP port used has
                          a listener: ECONNREFUSED = denied, anything else =
                          allowed (the hook let it through)

The worker is chrooted into a directory holding every path requested, so
the path the kernel resolves is the path requested. Requests a kernel
cannot make as asked are left out, and counted: non-canonical paths (`//`,
`.`, `..`, a trailing `/`: the kernel resolves them to another path),
names over NAME_MAX, writes and execs of paths that must be directories
because other paths are below them, TCP to port 0. Each decision must equal
`cedarpy.is_authorized` on the source policies, and each deny's event must
name the same policies.
"""

from __future__ import annotations

import dataclasses
import errno
import ipaddress
import os
import sys
from pathlib import Path
from typing import Any

from hypothesis import HealthCheck, Phase, given, settings

from agent.sandbox import SandboxMaps, apply_sandbox, ensure_loaded, locked
from agent.sandbox.apply import CgroupRef
from agent.sandbox.events import AuditTrail, Decision
from tests.support import ROOT, SyscallWorker, drop_pin_root, sandbox_pin_root

sys.path.insert(0, str(ROOT / "tests" / "unit" / "compiler"))
from cedar_corpus import CASES
from cedar_oracle import Case, Oracle, Request, requests

CASE_NAMES = (
    "examples", "brief-analyst", "path-sets", "exact-vs-prefix", "prefix-overlap",
    "forbid-inside-permit", "escaped-star", "unicode-and-bytes", "long-paths",
    "cidr-ports-protocols", "ipv6", "loopback-multicast", "protocols", "port-ranges", "hosts",
)
PER_CASE = 100
PAIRS_PER_CASE = 12
MIN_REPLAYED = 500
PATH_ACTIONS = ("readFile", "writeFile", "exec", "loadLibrary")


def draw(case: Case, comp: Any, n: int) -> list[Request]:
    """`n` requests from the differential generator (one per example, so that
    hypothesis spreads them out), the same on every run."""
    out: list[Request] = []

    @settings(max_examples=n, derandomize=True, database=None, deadline=None,
              phases=(Phase.generate,), suppress_health_check=list(HealthCheck))
    @given(requests(case, comp))
    def grab(r: Request) -> None:
        out.append(r)

    grab()
    assert len(out) >= n // 2, len(out)
    return out


def canonical(path: str) -> bool:
    """A path the kernel resolves to itself (and that a file system can hold)."""
    if not path.startswith("/") or "\0" in path or len(path.encode()) >= 4000:
        return False
    if path != "/" and (path.endswith("/") or "//" in path):
        return False
    parts = path.split("/")[1:] if path != "/" else []
    return all(p not in (".", "..") and len(p.encode()) <= 255 for p in parts)


def ancestors(path: str) -> list[str]:
    parts = path.split("/")[1:-1]
    return ["/" + "/".join(parts[:i]) for i in range(1, len(parts) + 1)]


def plan(cases: list[tuple[Case, Any, list[Request]]]) -> tuple[set[str], set[str], dict[str, int]]:
    """The directories and files the requests need, and why some requests are left out."""
    paths = {r.path for _, _, reqs in cases for r in reqs
             if r.action != "connectNetwork" and canonical(r.path)}
    dirs = {"/"} | {a for p in paths for a in ancestors(p)}
    return dirs, paths - dirs, {}


def usable(r: Request, dirs: set[str], skipped: dict[str, int]) -> bool:
    why = ""
    if r.action == "connectNetwork":
        if r.protocol == "tcp" and r.port == 0:
            why = "TCP to port 0"
    elif not canonical(r.path):
        why = "a path the kernel resolves to another"
    elif r.path in dirs and r.action != "readFile":
        why = f"{r.action} of a path that must be a directory"
    if why:
        skipped[why] = skipped.get(why, 0) + 1
    return not why


def command(r: Request) -> dict[str, Any]:
    if r.action == "readFile":
        return {"op": "open", "path": r.path, "mode": "r"}
    if r.action == "writeFile":
        return {"op": "open", "path": r.path, "mode": "w"}
    if r.action == "exec":
        return {"op": "exec", "path": r.path}
    if r.action == "loadLibrary":
        return {"op": "mmap", "path": r.path}
    family = ipaddress.ip_address(r.ip).version
    return {"op": "connect", "family": family, "addr": r.ip, "port": r.port,
            "proto": r.protocol, "timeout": 2.0}


def kernel_allowed(r: Request, result: dict[str, Any]) -> bool:
    e = result["errno"]
    if r.action in ("readFile", "writeFile"):
        assert e in (0, errno.ENOENT), (r, result)
        return bool(e == 0)
    if r.action == "exec":
        assert e in (errno.ENOEXEC, errno.EPERM), (r, result)
        return bool(e == errno.ENOEXEC)
    if r.action == "loadLibrary":
        assert e in (0, errno.EPERM), (r, result)
        return bool(e == 0)
    return bool(e != errno.ECONNREFUSED)


def resource(r: Request) -> str:
    if r.action != "connectNetwork":
        return r.path if len(r.path.encode()) < 256 else r.path.encode()[:255].decode(
            "utf-8", "surrogateescape")
    a = ipaddress.ip_address(r.ip)
    return f"{a if a.version == 4 else f'[{a}]'}:{r.port}/{r.protocol}"


def test_replay_matches_cedar(make_cgroup: Any, tmp_path: Path) -> None:
    by_name = {c.name: c for c in CASES}
    cases = []
    for name in CASE_NAMES:
        comp = by_name[name].compile()
        cases.append((by_name[name], comp, draw(by_name[name], comp, PER_CASE)))
    dirs, files, skipped = plan(cases)
    root = tmp_path / "root"
    for d in sorted(dirs):
        (root / d.lstrip("/")).mkdir(parents=True, exist_ok=True)
    for f in files:
        p = root / f.lstrip("/")
        p.write_bytes(b"")  # empty: an allowed exec fails with ENOEXEC
        os.chmod(p, 0o755)
    ports = sorted({r.port for _, _, reqs in cases for r in reqs
                    if r.action == "connectNetwork" and r.protocol == "tcp" and r.port})
    pin_root = sandbox_pin_root()
    cg = make_cgroup()
    replayed = denied = allowed = referred = 0
    problems: list[str] = []
    try:
        with SyscallWorker(cg) as w, locked(pin_root):
            assert w.errno(op="netns", anyip=True) == 0
            assert w.errno(op="listen", ports=ports) == 0
            assert w.errno(op="chroot", path=str(root)) == 0
            assert w.errno(op="preopen", paths=sorted(files)) == 0
            lsm, _ = ensure_loaded(pin_root)
            assert lsm
            with SandboxMaps.open(pin_root) as maps:
                trail = AuditTrail(maps)
                refs = [CgroupRef.resolve(cg.path)]
                for case, comp, reqs in cases:
                    oracle = Oracle(case, comp)
                    for sb in comp.sandboxes:
                        mine = [r for r in reqs
                                if r.sandbox == sb.name and usable(r, dirs, skipped)]
                        if not mine:
                            continue
                        apply_sandbox(maps, sb, target=f"replay:{case.name}", cgroups=refs,
                                      mode="enforce", digest=os.urandom(32).hex())
                        results = w.batch([command(r) for r in mine])
                        events: list[Decision] = trail.drain()
                        cedar = oracle.cedar(mine)
                        libs = [i for i, r in enumerate(mine) if r.action == "loadLibrary"]
                        as_exec = oracle.cedar([dataclasses.replace(mine[i], action="exec")
                                                for i in libs])
                        for i, ex in zip(libs, as_exec, strict=True):
                            if ex[0].allow:  # a mapping `exec` permits is allowed
                                cedar[i] = ex
                        for r, res, outs in zip(mine, results, cedar, strict=True):
                            ok = kernel_allowed(r, res)
                            replayed += 1
                            allowed += ok
                            if not ok:
                                denied += 1
                                if not events:
                                    problems.append(f"no event for the deny of {r}")
                                    continue
                                ev = events.pop(0)
                                if ev.resource != resource(r):
                                    problems.append(f"event {ev.resource} for {r}")
                            if len(outs) > 1 or sb.approximations:
                                # an address several hosts resolve to, or a sandbox the
                                # compiler approximated (principal attributes in a class
                                # sandbox): sound, never more than Cedar allows
                                if ok and not all(o.allow for o in outs):
                                    problems.append(f"unsound: {r}: kernel allows, cedar {outs}")
                                continue
                            if ok != outs[0].allow:
                                problems.append(f"{case.name}: {r}: kernel "
                                                f"{'allows' if ok else 'denies'} ({res}), "
                                                f"cedar {outs[0]}")
                            elif not ok and frozenset(ev.policies) != outs[0].policies:
                                problems.append(f"{case.name}: {r}: event policies "
                                                f"{ev.policies}, cedar {outs[0].policies}")
                        if events:
                            problems.append(f"{len(events)} events without a deny: {events[:3]}")
                        n, bad = refer_pairs(w, trail, oracle, sb.name, files, case.name)
                        referred += n
                        problems += bad
                drops = trail.drops()
                trail.close()
    finally:
        drop_pin_root(pin_root)
    print(f"replayed {replayed} requests in {len(CASE_NAMES)} policy sets: {allowed} allowed, "
          f"{denied} denied; {referred} exchanges (refer); left out: {skipped}")
    assert not problems, "\n".join(problems[:20])
    assert drops == 0
    assert replayed >= MIN_REPLAYED
    assert referred >= 100
    assert allowed >= 50 and denied >= 50  # both outcomes, plenty of each


def refer_pairs(w: SyscallWorker, trail: AuditTrail, oracle: Oracle, sandbox: str,
                files: set[str], case: str) -> tuple[int, list[str]]:
    """RENAME_EXCHANGE of file pairs near this case's literals, against the refer
    rule stated on cedarpy's answers: writeFile on both, the same actions on both.
    An exchange swaps two empty files: nothing a later request sees changes."""
    pool = sorted(p for p in files if canonical(p) and len(p.encode()) < 250)
    if len(pool) < 2:
        return 0, []
    step = max(1, len(pool) // PAIRS_PER_CASE)
    pairs = [(pool[i], pool[(i * 7 + 3) % len(pool)]) for i in range(0, len(pool), step)]
    pairs = [(a, b) for a, b in pairs if a != b][:PAIRS_PER_CASE]
    asks = [Request(sandbox, act, path=p) for a, b in pairs for p in (a, b)
            for act in PATH_ACTIONS]
    answers = [o[0].allow for o in oracle.cedar(asks)]
    results = w.batch([{"op": "rename", "src": a, "dst": b, "exchange": True}
                       for a, b in pairs])
    trail.drain()
    problems = []
    for k, ((a, b), res) in enumerate(zip(pairs, results, strict=True)):
        got = answers[8 * k: 8 * k + 8]
        ra, rb = got[:4], got[4:]
        want = ra[1] and rb[1] and ra == rb
        e = res["errno"]
        if e not in (0, errno.ENOENT):
            problems.append(f"{case}: exchange {a} <-> {b}: errno {e}")
        elif (e == 0) != want:
            problems.append(f"{case}: exchange {a} <-> {b}: kernel "
                            f"{'allows' if e == 0 else 'denies'}, cedar rights {ra} / {rb}")
    return len(pairs), problems
