"""Concrete Cedar values and the operations the specialiser folds statically.

Everything that does not depend on the resource (the principal, the action,
literals) is evaluated here exactly as Cedar would, including its errors
(integer overflow, missing attributes, type mismatches). Values are plain
Python: `bool`, `int`, `str`, `EntityUid`, and the small frozen types below.
"""

from __future__ import annotations

import ipaddress
import re
from dataclasses import dataclass
from typing import TypeAlias

from compiler.expr import EntityUid

I64_MIN = -(2**63)
I64_MAX = 2**63 - 1

IpAddress: TypeAlias = ipaddress.IPv4Address | ipaddress.IPv6Address


@dataclass(frozen=True)
class IpVal:
    """Cedar's `ipaddr`: an address and a prefix length (a range)."""

    address: IpAddress
    prefix: int

    @property
    def network(self) -> ipaddress.IPv4Network | ipaddress.IPv6Network:
        return ipaddress.ip_network((self.address, self.prefix), strict=False)

    @property
    def full(self) -> bool:
        return self.prefix == self.address.max_prefixlen


@dataclass(frozen=True)
class SetVal:
    items: tuple[Value, ...]


@dataclass(frozen=True)
class RecordVal:
    items: tuple[tuple[str, Value], ...]  # sorted by key

    def get(self, key: str) -> Value | None:
        for k, v in self.items:
            if k == key:
                return v
        return None


Value: TypeAlias = bool | int | str | EntityUid | IpVal | SetVal | RecordVal


class CedarError(Exception):
    """A Cedar evaluation error in a static part of a condition."""


def equal(a: Value, b: Value) -> bool:
    """Cedar `==`: values of different types are unequal, never an error."""
    if type(a) is not type(b):
        return False
    if isinstance(a, SetVal) and isinstance(b, SetVal):
        return all(any(equal(x, y) for y in b.items) for x in a.items) and all(
            any(equal(y, x) for x in a.items) for y in b.items
        )
    if isinstance(a, RecordVal) and isinstance(b, RecordVal):
        return len(a.items) == len(b.items) and all(
            ka == kb and equal(va, vb) for (ka, va), (kb, vb) in zip(a.items, b.items, strict=True)
        )
    return a == b


def contains(s: SetVal, v: Value) -> bool:
    return any(equal(x, v) for x in s.items)


def checked(n: int) -> int:
    if not I64_MIN <= n <= I64_MAX:
        raise CedarError("integer overflow")
    return n


def as_long(v: Value) -> int:
    if isinstance(v, bool) or not isinstance(v, int):
        raise CedarError(f"expected a long, got {type(v).__name__}")
    return v


def as_bool(v: Value) -> bool:
    if not isinstance(v, bool):
        raise CedarError(f"expected a boolean, got {type(v).__name__}")
    return v


def as_set(v: Value) -> SetVal:
    if not isinstance(v, SetVal):
        raise CedarError(f"expected a set, got {type(v).__name__}")
    return v


def parse_ip(text: str) -> IpVal:
    """Cedar's `ip()`: `a.b.c.d[/n]` or an IPv6 address[/n]; no embedded IPv4."""
    addr_text, _, prefix_text = text.partition("/")
    try:
        if ":" in addr_text:
            if "." in addr_text:
                raise CedarError(f"embedded IPv4 is not accepted: `{text}`")
            if "%" in addr_text:
                raise CedarError(f"a zone index is not accepted: `{text}`")
            address: IpAddress = ipaddress.IPv6Address(addr_text)
        else:
            address = ipaddress.IPv4Address(addr_text)
    except ValueError as e:
        raise CedarError(f"invalid IP address `{text}`") from e
    if not prefix_text:
        if "/" in text:
            raise CedarError(f"empty prefix in `{text}`")
        return IpVal(address, address.max_prefixlen)
    # Cedar's prefix: ASCII digits, no leading zero, at most as many digits
    # as the family's longest prefix has (`032` and `٨` are errors there)
    if not (prefix_text.isascii() and prefix_text.isdigit()) \
            or (len(prefix_text) > 1 and prefix_text[0] == "0") \
            or int(prefix_text) > address.max_prefixlen:
        raise CedarError(f"invalid prefix in `{text}`")
    return IpVal(address, int(prefix_text))


LOOPBACK = (ipaddress.ip_network("127.0.0.0/8"), ipaddress.ip_network("::1/128"))
MULTICAST = (ipaddress.ip_network("224.0.0.0/4"), ipaddress.ip_network("ff00::/8"))
FAMILY_ROOTS = {
    "isIpv4": (ipaddress.ip_network("0.0.0.0/0"),),
    "isIpv6": (ipaddress.ip_network("::/0"),),
    "isLoopback": LOOPBACK,
    "isMulticast": MULTICAST,
}


def ip_predicate(fn: str, v: IpVal) -> bool:
    """isIpv4 / isIpv6 / isLoopback / isMulticast on a static value."""
    net = v.network
    return any(
        net.version == root.version and net.subnet_of(root)  # type: ignore[arg-type]
        for root in FAMILY_ROOTS[fn]
    )


def in_range(a: IpVal, b: IpVal) -> bool:
    na, nb = a.network, b.network
    return na.version == nb.version and na.subnet_of(nb)  # type: ignore[arg-type]


def like(text: str, pattern: tuple[str | None, ...]) -> bool:
    """Cedar `like`: `None` elements are `*` (any sequence, possibly empty)."""
    return pattern_regex(pattern).fullmatch(text) is not None


def pattern_regex(pattern: tuple[str | None, ...]) -> re.Pattern[str]:
    return re.compile("".join(".*" if el is None else re.escape(el) for el in pattern), re.S)


def from_json(v: object) -> Value:
    """An attribute value in Cedar's entity JSON form (entities file, registry).

    Raises `CedarError` for what has no static value here (decimals,
    datetimes: the compiler never folds those).
    """
    if isinstance(v, bool | str):
        return v
    if isinstance(v, int):
        return checked(v)
    if isinstance(v, list):
        return SetVal(tuple(from_json(x) for x in v))
    if isinstance(v, dict):
        ent = v.get("__entity")
        if isinstance(ent, dict) and len(v) == 1:
            return EntityUid(str(ent["type"]), str(ent["id"]))
        ext = v.get("__extn")
        if isinstance(ext, dict) and len(v) == 1:
            if ext.get("fn") == "ip":
                return parse_ip(str(ext.get("arg")))
            raise CedarError(f"extension `{ext.get('fn')}` is not folded by the compiler")
        return RecordVal(tuple(sorted((str(k), from_json(x)) for k, x in v.items())))
    raise CedarError(f"unexpected attribute value {v!r}")
