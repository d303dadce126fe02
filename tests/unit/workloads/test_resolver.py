"""The resolver's cache rules on an ordinary directory tree standing in for the cgroup root.

Ids are inode numbers here too, so the walk, the LRU bound, rate limiting and
the pod lookup are exercised without a cgroup file system; `tests/host`
repeats what matters on real cgroups with real processes.
"""

from __future__ import annotations

import os
import uuid
from pathlib import Path

import pytest

from agent.errors import WorkloadError
from agent.workloads import PodInfo, StaticPods, WorkloadResolver
from agent.workloads.cgtree import walk

UID = str(uuid.uuid4())


def mk(root: Path, rel: str) -> int:
    p = root / rel
    p.mkdir(parents=True)
    return os.stat(p).st_ino


def test_walk_lists_every_directory_with_its_inode(tmp_path: Path) -> None:
    for rel in ("a/b/c", "a/d", "e", "f/g/h/i", *(f"many/{i}" for i in range(6))):
        mk(tmp_path, rel)
    (tmp_path / "a" / "file").write_text("x")
    expected = set()
    for d, _, _ in os.walk(tmp_path):
        rel = os.path.relpath(d, tmp_path)
        expected.add((os.stat(d).st_ino, "/" if rel == "." else f"/{rel}"))
    got = walk(tmp_path)
    assert len(got) == len(set(got)) == len(expected) == 17
    assert set(got) == expected


def test_resolve_parses_and_names(tmp_path: Path) -> None:
    pid = mk(tmp_path, f"kubepods/burstable/pod{UID}")
    unit = mk(tmp_path, "system.slice/a.service")
    pods = StaticPods([PodInfo("ns", "p", UID, "sa")])
    r = WorkloadResolver(tmp_path, pods=pods, trust_domain="td")
    w = r.resolve(pid)
    assert w is not None and (w.name, w.qos, w.trust_domain) == ("ns/p", "burstable", "td")
    u = r.resolve(unit)
    assert u is not None and u.name == "a.service" and u.cgroup_path == "/system.slice/a.service"
    assert r.cgroup_path(unit) == "/system.slice/a.service"
    assert r.walks == 1 and len(r) == 6


def test_gone_ids_are_kept_up_to_the_bound_and_evicted_before_live_ones(
        tmp_path: Path) -> None:
    root, out = tmp_path / "root", tmp_path / "out"
    out.mkdir()
    old = [mk(root, f"a{i}") for i in range(10)]
    r = WorkloadResolver(root, max_cgroups=15)
    assert r.refresh().cached == 11
    for i in range(10):  # gone from the tree (moved out: their inodes stay unused)
        (root / f"a{i}").rename(out / f"a{i}")
    assert r.refresh().cached == 11  # still remembered
    new = [mk(root, f"b{i}") for i in range(10)]
    res = r.refresh()
    assert (res.cgroups, res.new, res.cached) == (11, 10, 15)
    r.min_walk_interval = 3600  # no walk may bring anything back
    assert all(r.resolve(i) is not None for i in new)
    assert sum(r.resolve(i) is not None for i in old) == 4  # 6 gone ids made room
    assert r.resolve(os.stat(root).st_ino) is not None


def test_misses_walk_once_per_interval(tmp_path: Path) -> None:
    r = WorkloadResolver(tmp_path, min_walk_interval=3600)
    late = mk(tmp_path, "late")
    assert r.resolve(late) is not None  # the first miss walks
    later = mk(tmp_path, "later")
    assert r.resolve(later) is None and r.rate_limited == 1
    r.refresh()
    assert r.resolve(later) is not None and r.walks == 2


def test_an_unreadable_tree_is_an_error_for_refresh_and_none_for_resolve(
        tmp_path: Path) -> None:
    r = WorkloadResolver(tmp_path / "missing")
    assert r.resolve(12345) is None and r.walk_errors == 1
    with pytest.raises(WorkloadError, match=r"cannot walk the cgroup tree at `.*missing`"):
        r.refresh()
