"""Regions and formulas: Cedar's three outcomes, LPM subtrees, cells."""

from __future__ import annotations

import ipaddress

import pytest

from compiler.ir import (
    And,
    Const,
    ErrorConst,
    HasHost,
    HostIn,
    IpIn,
    Ite,
    Not,
    Or,
    PathEq,
    PathPrefix,
    PortIn,
    ProtoIn,
    Unknown,
    conj,
    disj,
    neg,
)
from compiler.regions import NetUniverse, PathUniverse, _successor, bits_of, evaluate

U = PathUniverse(exact={"/a/b", "/a"}, prefixes={"/a", "/a/b", "/c"})
# keys, sorted: ("",0) ("/a",0) ("/a",1) ("/a/b",0) ("/a/b",1) ("/c",0)


def names(bits: int) -> list[str]:
    return [("=" if U.keys[i][1] else "") + U.keys[i][0].decode() for i in bits_of(bits)]


def test_keys_are_a_dfs_order() -> None:
    assert U.keys == [(b"", 0), (b"/a", 0), (b"/a", 1), (b"/a/b", 0), (b"/a/b", 1), (b"/c", 0)]


def test_prefix_is_its_subtree() -> None:
    assert names(U.prefix_bits("/a")) == ["/a", "=/a", "/a/b", "=/a/b"]
    assert names(U.prefix_bits("")) == ["", "/a", "=/a", "/a/b", "=/a/b", "/c"]
    assert names(U.atom(PathEq("/a"))[0]) == ["=/a"]


def test_successor_handles_ff_bytes() -> None:
    assert _successor(b"/a") == b"/b"
    assert _successor(b"/a\xff\xff") == b"/b"
    assert _successor(b"\xff") is None


def test_parent_is_where_a_lookup_falls_back() -> None:
    parent = {
        U.keys[i]: U.keys[p] if (p := U.parent(i)) is not None else None for i in range(len(U))
    }
    assert parent[(b"", 0)] is None
    assert parent[(b"/a", 0)] == (b"", 0)
    assert parent[(b"/a", 1)] == (b"/a", 0)  # exact `/a` falls back to prefix `/a`
    assert parent[(b"/a/b", 1)] == (b"/a/b", 0)
    assert parent[(b"/c", 0)] == (b"", 0)


def test_and_short_circuits_errors() -> None:
    # false && error = false; true && error = error (neither true nor false)
    a, err = PathPrefix("/c"), ErrorConst("boom")
    b = evaluate(And((a, err)), U)
    assert b.t_must == b.t_may == 0
    assert names(b.f_must) == ["", "/a", "=/a", "/a/b", "=/a/b"]  # where `a` is false


def test_or_short_circuits_errors() -> None:
    b = evaluate(Or((PathPrefix("/c"), ErrorConst("boom"))), U)
    assert names(b.t_must) == ["/c"] and b.f_must == 0


def test_not_of_error_is_error() -> None:
    b = evaluate(Not(ErrorConst("boom")), U)
    assert b == (0, 0, 0, 0)


def test_unknown_bounds_and_path_hint() -> None:
    b = evaluate(Unknown("x", path_hint="/a/b"), U)
    assert b.t_must == 0 and names(b.t_may) == ["/a/b", "=/a/b"]
    assert names(b.f_must) == ["", "/a", "=/a", "/c"] and b.f_may == U.full
    nb = evaluate(Not(Unknown("x", path_hint="/a/b")), U)
    assert names(nb.t_must) == ["", "/a", "=/a", "/c"]  # a permit `unless` narrows to this


def test_ite() -> None:
    f = Ite(PathPrefix("/a"), PathEq("/a"), PathPrefix("/c"))
    assert names(evaluate(f, U).t_must) == ["=/a", "/c"]


@pytest.mark.parametrize(
    ("a", "b", "folded"),
    [
        (Const(False), ErrorConst("e"), Const(False)),
        (Const(True), PathEq("/a"), PathEq("/a")),
        (PathEq("/a"), Const(True), PathEq("/a")),
        (PathEq("/a"), Const(False), Const(False)),  # total left side: folds
        (HostIn(frozenset({"h"})), Const(False), And((HostIn(frozenset({"h"})), Const(False)))),
    ],
)
def test_conj_folds_only_where_cedar_allows(a: object, b: object, folded: object) -> None:
    assert conj(a, b) == folded  # type: ignore[arg-type]


def test_disj_and_neg_fold() -> None:
    assert disj(Const(True), ErrorConst("e")) == Const(True)
    assert disj(ErrorConst("e"), Const(True)) == ErrorConst("e")
    assert neg(Not(PathEq("/a"))) == PathEq("/a")


NET = NetUniverse(
    [
        And((IpIn(ipaddress.ip_network("10.0.0.0/8")), PortIn(80, 443))),
        HasHost(),
        ProtoIn(frozenset({"udp"})),
    ],
    {"h.example": ["10.1.2.3", "::ffff:10.9.9.9"], "g.example": ["10.1.2.3"]},
)


def test_net_slots_and_intervals() -> None:
    shown = [(str(s.network), s.host) for s in NET.slots]
    assert shown == [
        ("0.0.0.0/0", None),
        ("10.0.0.0/8", None),
        ("10.1.2.3/32", "g.example"),  # two hosts resolve to it: two slots
        ("10.1.2.3/32", "h.example"),
        ("10.9.9.9/32", "h.example"),  # IPv4-mapped IPv6 becomes IPv4
        ("::/0", None),
    ]
    assert NET.intervals == [(0, 79), (80, 443), (444, 65535)]
    assert NET.slot_range(ipaddress.ip_network("10.0.0.0/8")) == (1, 5)


def test_net_atoms() -> None:
    t, f = NET.atom(PortIn(80, 443))
    assert bits_of(t)[:4] == [2, 3, 8, 9]  # interval 1, both protocols, in every slot
    t, f = NET.atom(HostIn(frozenset({"h.example"})))
    slots_true = sorted({c // NET.block for c in bits_of(t)})
    slots_false = sorted({c // NET.block for c in bits_of(f)})
    assert slots_true == [3, 4] and slots_false == [2]  # no host elsewhere: error there
