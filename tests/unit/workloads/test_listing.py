"""`WorkloadResolver.listing`: readers of the cgroup tree share one recent walk."""

from __future__ import annotations

from pathlib import Path

from agent.workloads import WorkloadResolver


def test_listing_shares_a_recent_walk_and_walks_when_it_is_old(tmp_path: Path) -> None:
    (tmp_path / "a" / "b").mkdir(parents=True)
    r = WorkloadResolver(cgroup_root=tmp_path)
    first = r.listing()
    assert sorted(p for _, p in first) == ["/", "/a", "/a/b"] and r.walks == 1
    (tmp_path / "c").mkdir()
    assert r.listing() == first and r.walks == 1  # recent enough: no second walk
    assert "/c" in {p for _, p in r.listing(max_age=0)} and r.walks == 2
