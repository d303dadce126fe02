"""The resource space of one sandbox, cut into the regions the maps key on.

A sandbox's atoms (every exact path, path prefix, CIDR, port bound, host,
...) cut the resource space into finitely many regions in which every atom
has one truth value, and each region is exactly what one LPM entry (and, for
the network, one port interval and protocol in it) decides:

* `PathUniverse`: one region per trie entry: the root (""), every prefix,
  every exact path. Sorted by bytes, a prefix's subtree is a contiguous run,
  so `path like "p*"` is a bit range.
* `NetUniverse`: cells = address slot x port interval x protocol. Address
  slots are the CIDRs (plus both family roots and, when a rule reads the
  host, every resolved address, one slot per host that resolves to it).

Formulas evaluate to sets of regions as Python ints used as bitsets, with
Cedar's three outcomes (true, false, error) and, for `Unknown`, lower and
upper bounds: `Bounds(t_must, t_may, f_must, f_may)`. Pure; used by `lower`.
"""

from __future__ import annotations

import bisect
import ipaddress
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from typing import NamedTuple

from compiler import values as V
from compiler.ir import (
    PORT_MAX,
    PROTOCOLS,
    And,
    Const,
    ErrorConst,
    Formula,
    HasHost,
    HostIn,
    HostLike,
    IpIn,
    IpNetwork,
    Ite,
    Not,
    Or,
    PathEq,
    PathIn,
    PathPrefix,
    PortIn,
    ProtoIn,
    Unknown,
    atoms,
)


class Bounds(NamedTuple):
    """Where a formula is true / false, as bitsets; must <= actual <= may."""

    t_must: int
    t_may: int
    f_must: int
    f_may: int


def path_key(path: str) -> bytes:
    return path.encode("utf-8", "surrogatepass")


class PathUniverse:
    """Regions of the path trie: the root, each prefix and each exact path."""

    def __init__(self, exact: Iterable[str], prefixes: Iterable[str]):
        pre = {path_key(p) for p in prefixes} | {b""}
        keys = sorted([(p, 0) for p in pre] + [(path_key(x), 1) for x in set(exact)])
        # INVARIANT: sorted by (bytes, kind) with kind 0 = prefix, 1 = exact,
        # so every key starting with p sits in one run beginning at (p, 0).
        self.keys: list[tuple[bytes, int]] = keys
        self.strings = [k for k, _ in keys]
        self.index = {k: i for i, k in enumerate(keys)}
        self.prefixes = pre
        self.full = (1 << len(keys)) - 1
        self._memo: dict[Formula, tuple[int, int]] = {}

    def __len__(self) -> int:
        return len(self.keys)

    def prefix_bits(self, prefix: str) -> int:
        p = path_key(prefix)
        lo = self.index[(p, 0)]
        hi = (
            len(self.keys)
            if (succ := _successor(p)) is None
            else bisect.bisect_left(self.strings, succ)
        )
        return ((1 << hi) - 1) ^ ((1 << lo) - 1)

    def atom(self, a: Formula) -> tuple[int, int]:
        """(true, false) regions of a path atom; path atoms never error."""
        if a not in self._memo:
            if isinstance(a, PathEq):
                t = 1 << self.index[(path_key(a.path), 1)]
            elif isinstance(a, PathPrefix):
                t = self.prefix_bits(a.prefix)
            elif isinstance(a, PathIn):
                t = 0
                for p in a.paths:
                    t |= 1 << self.index[(path_key(p), 1)]
            else:
                raise AssertionError(f"not a path atom: {a}")
            self._memo[a] = (t, self.full & ~t)
        return self._memo[a]

    def unknown(self, u: Unknown) -> Bounds:
        if u.path_hint is None:
            return Bounds(0, self.full, 0, self.full)
        hint = self.prefix_bits(u.path_hint)
        return Bounds(0, hint, self.full & ~hint, self.full)

    def parent(self, i: int) -> int | None:
        """The entry a lookup falls back to if entry `i` were absent."""
        key, kind = self.keys[i]
        start = len(key) if kind == 1 else len(key) - 1
        for n in range(start, -1, -1):
            if key[:n] in self.prefixes and (n < len(key) or kind == 1):
                return self.index[(key[:n], 0)]
        return None


def _successor(p: bytes) -> bytes | None:
    """The least byte string greater than every string that starts with `p`."""
    stripped = p.rstrip(b"\xff")
    if not stripped:
        return None
    return stripped[:-1] + bytes([stripped[-1] + 1])


def path_atoms(formulas: Iterable[Formula]) -> tuple[set[str], set[str]]:
    """The exact paths and prefixes a set of formulas mentions."""
    exact: set[str] = set()
    prefixes: set[str] = set()
    for f in formulas:
        for a in atoms(f):
            if isinstance(a, PathEq):
                exact.add(a.path)
            elif isinstance(a, PathPrefix):
                prefixes.add(a.prefix)
            elif isinstance(a, PathIn):
                exact.update(a.paths)
            elif isinstance(a, Unknown) and a.path_hint is not None:
                prefixes.add(a.path_hint)
    return exact, prefixes


@dataclass(frozen=True)
class Slot:
    network: IpNetwork
    host: str | None


def normalize_address(text: str) -> ipaddress.IPv4Address | ipaddress.IPv6Address:
    """An address as the kernel looks it up: IPv4-mapped IPv6 becomes IPv4."""
    addr = ipaddress.ip_address(text)
    if isinstance(addr, ipaddress.IPv6Address) and addr.ipv4_mapped is not None:
        return addr.ipv4_mapped
    return addr


class NetUniverse:
    """Cells (address slot, port interval, protocol) of one sandbox."""

    def __init__(self, formulas: list[Formula], resolved: Mapping[str, Iterable[str]]):
        networks: set[IpNetwork] = {
            ipaddress.ip_network("0.0.0.0/0"),
            ipaddress.ip_network("::/0"),
        }
        bounds = {0, PORT_MAX + 1}
        reads_host = False
        for f in formulas:
            for a in atoms(f):
                if isinstance(a, IpIn):
                    networks.add(a.network)
                elif isinstance(a, PortIn):
                    bounds.update((a.lo, a.hi + 1))
                elif isinstance(a, HostIn | HostLike | HasHost):
                    reads_host = True
        hosts_of: dict[IpNetwork, set[str]] = {}
        self.hosts: tuple[str, ...] = ()
        if reads_host:
            self.hosts = tuple(sorted(resolved))
            for host in self.hosts:
                for text in resolved[host]:
                    net = ipaddress.ip_network(normalize_address(text))
                    networks.add(net)
                    hosts_of.setdefault(net, set()).add(host)
        slots = [
            Slot(net, h)
            for net in networks
            for h in (sorted(hosts_of[net]) if net in hosts_of else [None])
        ]
        slots.sort(key=_slot_key)
        # INVARIANT: sorted by (version, address, prefix length, host), so the
        # slots inside a CIDR form one run starting at the CIDR itself.
        self.slots = slots
        self._keys = [_slot_key(s) for s in slots]
        self.bounds = sorted(bounds)
        self.intervals = [
            (lo, hi - 1) for lo, hi in zip(self.bounds, self.bounds[1:], strict=False)
        ]
        self.block = 2 * len(self.intervals)  # cells per slot
        self.full = (1 << (len(slots) * self.block)) - 1
        self.block_mask = (1 << self.block) - 1
        self._rep = self.full // self.block_mask  # 1 at the start of every block
        self._host_bits: dict[str, int] = {}
        for i, s in enumerate(slots):
            if s.host is not None:
                self._host_bits[s.host] = self._host_bits.get(s.host, 0) | (
                    self.block_mask << (i * self.block)
                )
        self._present = 0
        for bits in self._host_bits.values():
            self._present |= bits
        self._memo: dict[Formula, tuple[int, int]] = {}

    def __len__(self) -> int:
        return len(self.slots) * self.block

    def slot_range(self, net: IpNetwork) -> tuple[int, int]:
        v = net.version
        lo = bisect.bisect_left(self._keys, (v, int(net.network_address), net.prefixlen))
        hi = bisect.bisect_left(self._keys, (v, int(net.broadcast_address) + 1))
        return lo, hi

    def atom(self, a: Formula) -> tuple[int, int]:
        """(true, false) cells of a network atom; error is the rest."""
        if a in self._memo:
            return self._memo[a]
        if isinstance(a, IpIn):
            lo, hi = self.slot_range(a.network)
            t = ((1 << (hi * self.block)) - 1) ^ ((1 << (lo * self.block)) - 1)
            out = (t, self.full & ~t)
        elif isinstance(a, PortIn):
            i_lo = bisect.bisect_right(self.bounds, a.lo) - 1
            i_hi = bisect.bisect_right(self.bounds, a.hi) - 1
            pattern = ((1 << (2 * i_hi + 2)) - 1) ^ ((1 << (2 * i_lo)) - 1)
            t = pattern * self._rep
            out = (t, self.full & ~t)
        elif isinstance(a, ProtoIn):
            pattern = 0
            for k, proto in enumerate(PROTOCOLS):
                if proto in a.protocols:
                    pattern |= (self.block_mask // 3) << k  # every other cell
            t = pattern * self._rep
            out = (t, self.full & ~t)
        elif isinstance(a, HostIn | HostLike):
            if isinstance(a, HostIn):
                names = [h for h in self.hosts if h in a.hosts]
            else:
                rx = V.pattern_regex(a.pattern)
                names = [h for h in self.hosts if rx.fullmatch(h)]
            t = 0
            for h in names:
                t |= self._host_bits.get(h, 0)
            out = (t, self._present & ~t)
        elif isinstance(a, HasHost):
            out = (self._present, self.full & ~self._present)
        else:
            raise AssertionError(f"not a network atom: {a}")
        self._memo[a] = out
        return out

    def unknown(self, u: Unknown) -> Bounds:
        return Bounds(0, self.full, 0, self.full)

    def cell(self, slot: int, interval: int, proto: int) -> int:
        return slot * self.block + 2 * interval + proto


def _slot_key(s: Slot) -> tuple[int, int, int, str]:
    return (s.network.version, int(s.network.network_address), s.network.prefixlen, s.host or "")


def evaluate(f: Formula, u: PathUniverse | NetUniverse) -> Bounds:
    """Where `f` is true and false, with Cedar's short-circuit and errors."""
    full = u.full
    match f:
        case Const(value=True):
            return Bounds(full, full, 0, 0)
        case Const(value=False):
            return Bounds(0, 0, full, full)
        case ErrorConst():
            return Bounds(0, 0, 0, 0)
        case Unknown():
            return u.unknown(f)
        case Not(arg=a):
            b = evaluate(a, u)
            return Bounds(b.f_must, b.f_may, b.t_must, b.t_may)
        case And(args=args):
            acc = evaluate(args[0], u)
            for a in args[1:]:
                b = evaluate(a, u)
                acc = Bounds(
                    acc.t_must & b.t_must,
                    acc.t_may & b.t_may,
                    acc.f_must | (acc.t_must & b.f_must),
                    acc.f_may | (acc.t_may & b.f_may),
                )
            return acc
        case Or(args=args):
            acc = evaluate(args[0], u)
            for a in args[1:]:
                b = evaluate(a, u)
                acc = Bounds(
                    acc.t_must | (acc.f_must & b.t_must),
                    acc.t_may | (acc.f_may & b.t_may),
                    acc.f_must & b.f_must,
                    acc.f_may & b.f_may,
                )
            return acc
        case Ite(cond=c, then=th, else_=el):
            bc, bt, be = evaluate(c, u), evaluate(th, u), evaluate(el, u)
            return Bounds(
                (bc.t_must & bt.t_must) | (bc.f_must & be.t_must),
                (bc.t_may & bt.t_may) | (bc.f_may & be.t_may),
                (bc.t_must & bt.f_must) | (bc.f_must & be.f_must),
                (bc.t_may & bt.f_may) | (bc.f_may & be.f_may),
            )
    true, false = u.atom(f)
    return Bounds(true, true, false, false)


def bits_of(x: int) -> list[int]:
    """Indices of the set bits of `x`, ascending."""
    out: list[int] = []
    s = bin(x)[:1:-1]
    i = s.find("1")
    while i >= 0:
        out.append(i)
        i = s.find("1", i + 1)
    return out
