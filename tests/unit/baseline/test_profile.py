"""Profiles and the catalogue, without a kernel: generalisation rules, storage, items."""

from __future__ import annotations

import json

import pytest
from hypothesis import given
from hypothesis import strategies as st

from agent.baseline.catalog import credential, may_hold_credentials, metadata
from agent.baseline.errors import BaselineError
from agent.baseline.events import Item, Kind
from agent.baseline.profile import GENERALISE_AT, Profile


def _many(p: Profile, kind: Kind, d: str, n: int = GENERALISE_AT) -> object:
    out = None
    for i in range(n):
        out = p.learn(Item(kind, path=f"{d}/f{i}"), 1.0) or out
    return out


def test_a_busy_directory_is_generalised_to_its_direct_files() -> None:
    p = Profile("a", 60, 0)
    assert _many(p, Kind.READ, "/srv/app/cache") == (Kind.READ, "/srv/app/cache")
    assert p.covers(Item(Kind.READ, path="/srv/app/cache/new"))
    assert not p.covers(Item(Kind.READ, path="/srv/app/cache/sub/new"))
    assert not p.covers(Item(Kind.WRITE, path="/srv/app/cache/new"))


@pytest.mark.parametrize("d", ["/etc", "/home", "/root/.ssh", "/home/bob/.aws", "/root",
                               "/etc/kubernetes/manifests", "/var/lib/kubelet/pki",
                               "/x/" + "d" * 240])
def test_never_generalised(d: str) -> None:
    p = Profile("a", 60, 0)
    assert _many(p, Kind.READ, d) is None
    assert not p.covers(Item(Kind.READ, path=f"{d}/new"))


def test_programs_and_sockets_stay_exact() -> None:
    p = Profile("a", 60, 0)
    assert _many(p, Kind.EXEC, "/usr/bin", 20) is None
    assert not p.covers(Item(Kind.EXEC, path="/usr/bin/nc"))
    assert _many(p, Kind.UNIX, "/run/app", 20) is None


def test_no_catalogue_pattern_forbids_every_directory() -> None:
    """A pattern like `*/.netrc` would make every directory one that may hold a
    credential, and nothing could ever be generalised."""
    for d in ("/srv/app/data", "/usr/lib/x86_64-linux-gnu", "/tmp", "/workspace/repo/src"):
        assert not may_hold_credentials(d), d


def test_catalogue() -> None:
    assert credential(Item(Kind.READ, path="/etc/shadow")) == "password hashes"
    assert credential(Item(Kind.UNIX, path="/run/containerd/containerd.sock"))
    assert credential(Item(Kind.READ, path="/proc/pid/environ"))
    assert credential(Item(Kind.READ, path="/proc/self/environ")) is None  # its own
    assert credential(Item(Kind.EXEC, path="/etc/shadow")) is None
    assert credential(Item(Kind.READ, path="/srv/k"), ("/srv/*",))
    for addr in ("169.254.169.254", "fd00:ec2::254", "fd20:ce::254", "168.63.129.16"):
        assert metadata(Item(Kind.CONNECT, addr=addr, port=80, proto="tcp")), addr


def test_round_trip_and_bad_files() -> None:
    p = Profile("ns/a", 60, 10.0, learned_at=70.0)
    _many(p, Kind.READ, "/srv/app/cache")
    p.learn(Item(Kind.CONNECT, addr="10.0.0.7", port=5432, proto="tcp"), 2.0)
    p.name_peer("10.0.0.7", "db.internal")
    p.note_novel(Item(Kind.READ, path="/etc/hosts"), 80.0)
    data = json.loads(json.dumps(p.to_json()))
    assert Profile.from_json(data, "x").to_json() == data
    with pytest.raises(BaselineError, match="x: not a Manul baseline"):
        Profile.from_json({"format": 99}, "x")
    data["items"] = {"bogus item": [1, 2, 3]}
    with pytest.raises(BaselineError, match="field `items`"):
        Profile.from_json(data, "x")


@given(st.text(max_size=80))
def test_item_parse_never_raises_anything_else(text: str) -> None:
    try:
        item = Item.parse(text)
    except BaselineError:
        return
    assert Item.parse(str(item)) == item
