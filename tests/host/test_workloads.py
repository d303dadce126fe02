"""Attribution on the real kernel: real cgroup v2 directories laid out like kubelet pods
(systemd and cgroupfs drivers) and systemd units, real processes in them, resolved by
cgroup id; cgroups removed before resolving; ids never seen; process details of real
children; walk cost and rate limiting.

Every cgroup is created under a fresh `manul-test-<rand>` directory at the v2 root and
removed afterwards (the module checks that none is left behind).
"""

from __future__ import annotations

import os
import shutil
import signal
import statistics
import subprocess
import threading
import time
import uuid
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import psutil  # type: ignore[import-untyped]
import pytest

from agent.kernel.fs import cgroup2_root
from agent.registry import load_directory
from agent.workloads import PodInfo, StaticPods, WorkloadResolver
from agent.workloads.cgtree import MAX_DEPTH, walk
from agent.workloads.processes import start_ticks
from tests.support import Cgroup

ROOT = cgroup2_root()[0]
EXAMPLES = Path(__file__).resolve().parents[2] / "examples" / "registry"


def _hex(n: int = 64) -> str:
    return (uuid.uuid4().hex * 2)[:n]


UID_A, UID_B, UID_C, UID_X = (str(uuid.uuid4()) for _ in range(4))
STATIC = _hex(32)  # a static pod's config hash; its mirror pod has another UID
MIRROR = str(uuid.uuid4())
C = [_hex() for _ in range(8)]

PODS = StaticPods([
    PodInfo("finance", "analyst-0", UID_A, "analyst", (("app", "analyst"),), "node-1"),
    PodInfo("team-b", "summarizer-1", UID_B, "summarizer"),
    PodInfo("team-c", "batch-2", UID_C, "default"),
    PodInfo("kube-system", "etcd-node-1", MIRROR, "default", mirror_of=STATIC),
])

# (layout under the test root, expected fields)
LAYOUTS: list[tuple[str, dict[str, Any]]] = [
    (f"kubepods.slice/kubepods-burstable.slice/kubepods-burstable-pod{UID_A.replace('-', '_')}"
     f".slice/cri-containerd-{C[0]}.scope",
     {"kind": "pod", "name": "finance/analyst-0", "pod_uid": UID_A, "qos": "burstable",
      "container_id": C[0], "runtime": "containerd", "service_account": "analyst",
      "labels": (("app", "analyst"),)}),
    (f"kubepods.slice/kubepods-pod{UID_B.replace('-', '_')}.slice/crio-{C[1]}.scope",
     {"kind": "pod", "name": "team-b/summarizer-1", "qos": "guaranteed", "container_id": C[1],
      "runtime": "crio", "service_account": "summarizer"}),
    (f"kubepods/besteffort/pod{UID_C}/{C[2]}",
     {"kind": "pod", "name": "team-c/batch-2", "qos": "besteffort", "container_id": C[2],
      "runtime": ""}),
    (f"kubepods/burstable/pod{STATIC}/{C[3]}",
     {"kind": "pod", "name": "kube-system/etcd-node-1", "pod_uid": STATIC}),
    (f"kubepods/pod{UID_X}/{C[4]}",  # a pod the source does not know (yet)
     {"kind": "pod", "name": f"pod:{UID_X}", "namespace": "", "service_account": ""}),
    ("system.slice/analyst-agent.service",
     {"kind": "host", "name": "analyst-agent.service", "unit": "analyst-agent.service"}),
    (f"system.slice/docker-{C[5]}.scope",
     {"kind": "host", "name": f"container:docker/{C[5][:12]}", "container_id": C[5],
      "runtime": "docker", "unit": f"docker-{C[5]}.scope"}),
    (f"machine.slice/libpod-{C[6]}.scope/container",
     {"kind": "host", "name": f"container:podman/{C[6][:12]}", "runtime": "podman"}),
    ("user.slice/user-1000.slice/session-3.scope",
     {"kind": "host", "name": "session-3.scope", "unit": "session-3.scope"}),
    ("user.slice/user-1000.slice/user@1000.service/app.slice/notes.service",
     {"kind": "host", "name": "notes.service", "unit": "notes.service"}),
    ("agents/a1", {"kind": "host", "unit": "", "container_id": ""}),
]


_TOPS: list[Path] = []  # every test root this module made (other suites run alongside)


@pytest.fixture(scope="module", autouse=True)
def _nothing_left_behind() -> Iterator[None]:
    yield
    left = [str(p) for p in _TOPS if p.exists()]
    assert not left, f"cgroups left behind: {left}"


class Tree:
    """Nested real cgroups under one test root; every level made through `make_cgroup`
    so the fixture removes them deepest first."""

    def __init__(self, make_cgroup: Callable[..., Cgroup]) -> None:
        self._make = make_cgroup
        self.top = make_cgroup()
        _TOPS.append(self.top.path)
        self.made: dict[str, Cgroup] = {}
        self.own: list[Cgroup] = []  # leaves a test removes itself; cleaned up if it did not
        self.procs: list[subprocess.Popen[str]] = []

    def cgroup(self, rel: str) -> Cgroup:
        parent = self.top.path
        cg = self.top
        for i, part in enumerate(rel.split("/")):
            key = "/".join(rel.split("/")[: i + 1])
            if key not in self.made:
                self.made[key] = self._make(part, parent=parent)
            cg = self.made[key]
            parent = cg.path
        return cg

    def leaf(self, rel: str) -> Cgroup:
        """Like `cgroup`, but the test may rmdir the last level itself."""
        parent, _, name = rel.rpartition("/")
        base = self.cgroup(parent) if parent else self.top
        (base.path / name).mkdir()
        cg = Cgroup(base.path / name)
        self.own.append(cg)
        return cg

    def rel(self, cg: Cgroup) -> str:
        return "/" + str(cg.path.relative_to(ROOT))

    def run(self, cg: Cgroup, *argv: str) -> int:
        """A real process in `cg` (sleep by default); returns its pid once it is inside."""
        cmd = list(argv or ("sleep", "60"))
        p = cg.popen(cmd)
        self.procs.append(p)
        comm = os.path.basename(cmd[0])[:15]
        for _ in range(1000):  # inside the cgroup, and past the shell's exec
            if p.pid in cg.pids() and Path(f"/proc/{p.pid}/comm").read_text().strip() == comm:
                return p.pid
            time.sleep(0.002)
        raise AssertionError(f"process {p.pid} never ran `{comm}` in {cg.path}")

    def kill(self, pid: int) -> None:
        for p in self.procs:
            if p.pid == pid:
                p.kill()
                p.wait()

    def close(self) -> None:
        for p in self.procs:
            if p.poll() is None:
                p.kill()
            p.wait()
        for cg in reversed(self.own):
            if cg.path.exists():
                cg.destroy()


@pytest.fixture
def tree(make_cgroup: Callable[..., Cgroup]) -> Iterator[Tree]:
    t = Tree(make_cgroup)
    yield t
    t.close()


def test_real_cgroups_resolve_to_their_workloads(tree: Tree) -> None:
    made = [(tree.cgroup(rel), want) for rel, want in LAYOUTS]
    pids = [tree.run(cg) for cg, _ in made]
    resolver = WorkloadResolver(pods=PODS)
    for (cg, want), pid in zip(made, pids, strict=True):
        rel = tree.rel(cg)
        assert resolver.process_cgroup(pid) == rel  # the kernel's view of the process
        w = resolver.resolve(cg.id)
        assert w is not None, rel
        assert (w.cgroup_id, w.cgroup_path) == (cg.id, rel)
        got = {k: getattr(w, k) for k in want}
        assert got == want, rel
        if want.get("name") is None:
            assert w.name == rel  # a plain path names itself
    assert resolver.walks == 1  # the first miss walked once; the rest were cached


def test_identities_of_resolved_workloads_match_the_example_registry(tree: Tree) -> None:
    reg = load_directory(EXAMPLES)
    analyst = reg.agent("finance/analyst")
    pod_cg = tree.cgroup(LAYOUTS[0][0])
    unit_cg = tree.cgroup("system.slice/analyst-agent.service")
    other_cg = tree.cgroup("system.slice/crawler.service")
    resolver = WorkloadResolver(pods=PODS)
    pod_w, unit_w, other_w = (resolver.resolve(cg.id) for cg in (pod_cg, unit_cg, other_cg))
    assert pod_w is not None and unit_w is not None and other_w is not None
    assert reg.match_any(pod_w.identities()) is analyst
    assert reg.match_any(unit_w.identities()) is analyst
    assert reg.match_any(other_w.identities()) is None


def test_a_removed_cgroup_is_still_attributed_if_it_was_seen(tree: Tree) -> None:
    cg = tree.leaf(f"kubepods/burstable/pod{UID_A}/{C[7]}")
    pid = tree.run(cg)
    resolver = WorkloadResolver(pods=PODS)
    resolver.refresh()
    tree.kill(pid)
    cg.path.rmdir()
    resolver.refresh()  # the walk no longer finds it; the cache keeps it
    w = resolver.resolve(cg.id)
    assert w is not None and w.name == "finance/analyst-0" and w.container_id == C[7]
    # a resolver that never saw it cannot attribute it
    assert WorkloadResolver(pods=PODS).resolve(cg.id) is None


def test_ids_never_seen_are_none_and_a_burst_costs_one_walk(tree: Tree) -> None:
    resolver = WorkloadResolver(min_walk_interval=5.0)
    unknown = [(1 << 62) + i for i in range(100)]
    assert [resolver.resolve(i) for i in unknown] == [None] * 100
    assert resolver.walks == 1
    assert resolver.rate_limited == 99


def test_a_new_cgroup_is_found_by_pid_at_once_and_by_walk_after_the_interval(
        tree: Tree) -> None:
    resolver = WorkloadResolver(min_walk_interval=60.0)
    resolver.refresh()
    cg = tree.cgroup("system.slice/late.service")
    other = tree.cgroup("system.slice/other.service")
    pid, other_pid = tree.run(cg), tree.run(other)
    assert resolver.resolve(cg.id) is None  # inside the interval: no walk
    assert resolver.walks == 1 and resolver.rate_limited == 1
    # a pid whose cgroup is another one is not trusted for this id
    assert resolver.resolve(cg.id, pid=other_pid) is None
    # the connecting process's own cgroup settles it without a walk
    w = resolver.resolve(cg.id, pid=pid)
    assert w is not None and (w.unit, w.cgroup_path) == ("late.service", tree.rel(cg))
    assert resolver.walks == 1
    assert resolver.resolve(cg.id) is w  # cached from then on

    short = WorkloadResolver(min_walk_interval=0.2)
    short.refresh()
    cg2 = tree.cgroup("system.slice/later.service")
    time.sleep(0.25)
    w2 = short.resolve(cg2.id)  # no pid, but the interval has passed: one walk finds it
    assert w2 is not None and w2.unit == "later.service"
    assert short.walks == 2


def test_pod_metadata_arriving_after_the_first_handshake_is_used() -> None:
    class Late:
        def __init__(self) -> None:
            self.pods: dict[str, PodInfo] = {}

        def pod_by_uid(self, uid: str) -> PodInfo | None:
            return self.pods.get(uid)

    source = Late()
    uid = str(uuid.uuid4())
    top = ROOT / f"manul-test-{uuid.uuid4().hex[:8]}"
    _TOPS.append(top)
    levels = [top, top / "kubepods", top / "kubepods" / f"pod{uid}"]
    for p in levels:
        p.mkdir()
    try:
        cid = os.stat(levels[-1]).st_ino
        resolver = WorkloadResolver(pods=source)
        first = resolver.resolve(cid)
        assert first is not None and not first.pod_known and first.identities() == ()
        source.pods[uid] = PodInfo("ns", "late-pod", uid, "robot")
        second = resolver.resolve(cid)
        assert second is not None and second.name == "ns/late-pod"
        assert resolver.resolve(cid) is second  # cached while the source's answer holds
        del source.pods[uid]  # the pod source forgot it: the attribution stays
        third = resolver.resolve(cid)
        assert third is not None and third.name == "ns/late-pod"
    finally:
        for p in reversed(levels):
            p.rmdir()


def test_process_details_of_a_real_child(tree: Tree) -> None:
    cg = tree.cgroup("system.slice/details.service")
    args = ["sleep", "60", *(["0"] * 40)]  # sleep sums its arguments
    pid = tree.run(cg, *args)
    resolver = WorkloadResolver()
    info = resolver.process(pid)
    assert info is not None
    sleep_exe = os.path.realpath(shutil.which("sleep") or "/bin/sleep")
    assert (info.pid, info.tgid, info.ppid) == (pid, pid, os.getpid())
    assert info.comm == "sleep"
    assert os.path.realpath(info.exe) == sleep_exe
    assert info.cmdline == tuple(args[:32]) and info.cmdline_truncated
    assert (info.username, info.uid) == ("root", 0)
    assert abs(info.start_time - time.time()) < 60
    # after it exits and is reaped, the details seen before are still there
    tree.kill(pid)
    assert not Path(f"/proc/{pid}").exists()
    assert resolver.process(pid) is info
    assert resolver.process_cgroup(pid) is None
    # never seen alive: nothing to say
    assert WorkloadResolver().process(pid) is None


def test_start_time_is_read_right_even_from_an_awkward_comm(tree: Tree, tmp_path: Path) -> None:
    """The cache tells reused pids apart by /proc/<pid>/stat's start time; a comm with
    spaces and parentheses must not shift the fields."""
    exe = tmp_path / "we) ird (c"
    shutil.copy(shutil.which("sleep") or "/bin/sleep", exe)
    cg = tree.cgroup("system.slice/awkward.service")
    pid = tree.run(cg, str(exe), "60")
    info = WorkloadResolver().process(pid)
    assert info is not None and info.comm == "we) ird (c"
    ticks = start_ticks(pid)
    assert ticks is not None
    boot = psutil.boot_time()
    assert abs(boot + ticks / os.sysconf("SC_CLK_TCK") - info.start_time) < 0.05


def test_a_thread_id_reports_its_process() -> None:
    tid: list[int] = []
    done = threading.Event()

    def body() -> None:
        tid.append(threading.get_native_id())
        done.wait(10)

    t = threading.Thread(target=body)
    t.start()
    try:
        while not tid:
            time.sleep(0.001)
        info = WorkloadResolver().process(tid[0])
        assert info is not None and (info.pid, info.tgid) == (tid[0], os.getpid())
    finally:
        done.set()
        t.join()


def test_a_zombie_in_a_removed_cgroup(tree: Tree) -> None:
    cg = tree.leaf("system.slice/zombie.service")
    pid = tree.run(cg)
    resolver = WorkloadResolver()
    os.kill(pid, signal.SIGKILL)
    for _ in range(500):  # dead but not reaped: a zombie that has left the cgroup
        if not cg.pids():
            break
        time.sleep(0.002)
    cg.path.rmdir()
    assert resolver.process_cgroup(pid) == tree.rel(cg)  # " (deleted)" dropped
    info = resolver.process(pid)
    assert info is not None and info.comm == "sleep" and info.exe == ""


def test_concurrent_resolves_during_walks_and_churn(tree: Tree) -> None:
    stable = [tree.cgroup(f"kubepods/burstable/pod{UID_A}/{_hex()}") for _ in range(50)]
    resolver = WorkloadResolver(pods=PODS, min_walk_interval=0.0)
    resolver.refresh()
    errors: list[str] = []
    stop = threading.Event()

    def reader() -> None:
        while not stop.is_set():
            for cg in stable:
                w = resolver.resolve(cg.id)
                if w is None or w.name != "finance/analyst-0" or w.cgroup_id != cg.id:
                    errors.append(f"{cg.id}: {w}")
            resolver.resolve((1 << 62) + 1)  # misses walk (interval 0) concurrently

    def churn() -> None:
        for i in range(100):
            p = tree.top.path / f"churn-{i}"
            p.mkdir()
            resolver.refresh()
            p.rmdir()

    threads = [threading.Thread(target=reader) for _ in range(4)]
    for t in threads:
        t.start()
    churn()
    stop.set()
    for t in threads:
        t.join()
    assert errors == []
    assert resolver.walks > 100


def _full_listing(top: Path) -> set[tuple[int, str]]:
    """Every directory under `top` with its inode, the slow obvious way."""
    out = set()
    for d, subdirs, _ in os.walk(top):
        out.add((os.stat(d).st_ino, "/" + str(Path(d).relative_to(ROOT))))
        subdirs.sort()
    return out


def test_walk_matches_a_full_listing(tree: Tree) -> None:
    """The walk's shortcuts (link counts, nr_descendants, crun's `container`) against
    os.walk on shapes that exercise each: all-leaf parents, one-child scopes, a
    `container` that has children, a lone child with another name, mixed parents."""
    base = "kubepods.slice/kubepods-burstable.slice"
    for p in range(6):
        for _ in range(5 if p % 2 else 2):
            scope = f"{base}/kubepods-burstable-pod{UID_A}-{p}.slice/crio-{_hex()}.scope"
            tree.cgroup(f"{scope}/container" if p >= 3 else scope)
    tree.cgroup("machine.slice/libpod-x.scope/container/nested/deeper")
    tree.cgroup("system.slice/only.service/worker")
    tree.cgroup("system.slice/mixed.service")
    tree.cgroup("system.slice/mixed2.service/a/b/c")
    top_rel = tree.rel(tree.top)
    walked = {(i, r) for i, r in walk(ROOT) if r == top_rel or r.startswith(top_rel + "/")}
    expected = _full_listing(tree.top.path)
    assert len(expected) > 40
    assert walked == expected


def test_trees_deeper_than_the_walk_limit_are_cut_but_found_by_pid(tree: Tree) -> None:
    rel = "/".join(f"d{i}" for i in range(MAX_DEPTH + 2))
    deep = tree.cgroup(rel)
    pid = tree.run(deep)
    resolver = WorkloadResolver(min_walk_interval=0.0)
    assert resolver.resolve(deep.id) is None  # walked, not reached
    w = resolver.resolve(deep.id, pid=pid)
    assert w is not None and w.cgroup_path == tree.rel(deep)


def test_walk_and_resolve_cost(tree: Tree, capsys: pytest.CaptureFixture[str]) -> None:
    """About 4,000 cgroups as kubelet makes them: 100 containerd pods of 20 containers,
    and 50 CRI-O pods of 20 containers under crun (each scope has a `container`
    child). A walk well under 50 ms; a cached resolve well under 5 µs."""
    slices = {q: tree.cgroup(f"kubepods.slice/kubepods-{q}.slice")
              for q in ("burstable", "besteffort")}
    ids = []
    for p in range(150):
        q = "burstable" if p % 2 else "besteffort"
        uid = str(uuid.uuid4()).replace("-", "_")
        pod = tree._make(f"kubepods-{q}-pod{uid}.slice", parent=slices[q].path)
        for _ in range(20):
            if p < 100:
                ids.append(tree._make(f"cri-containerd-{_hex()}.scope", parent=pod.path).id)
            else:
                scope = tree._make(f"crio-{_hex()}.scope", parent=pod.path)
                ids.append(tree._make("container", parent=scope.path).id)
    resolver = WorkloadResolver(pods=PODS)
    first = resolver.refresh()
    assert first.cgroups >= 4100 and first.new == first.cgroups
    walks = [resolver.refresh().seconds for _ in range(9)]
    median_ms = statistics.median(walks) * 1e3

    t0 = time.perf_counter()
    for i in ids:
        w = resolver.resolve(i)
        assert w is not None and w.kind == "pod"
    first_us = (time.perf_counter() - t0) / len(ids) * 1e6
    n = 200_000
    t0 = time.perf_counter()
    for k in range(n):
        resolver.resolve(ids[k % len(ids)])
    per_call_us = (time.perf_counter() - t0) / n * 1e6

    with capsys.disabled():
        print(f"\nworkloads: walk of {first.cgroups} cgroups: first {first.seconds * 1e3:.1f} ms, "
              f"then median {median_ms:.1f} ms (max {max(walks) * 1e3:.1f}); first resolve "
              f"(parse) {first_us:.1f} µs; cached resolve {per_call_us:.2f} µs")
    assert median_ms < 50
    assert per_call_us < 5
