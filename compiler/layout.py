"""Byte layouts of the sandbox maps: the one Python mirror of manul.h.

Every key and value the compiler emits (and `agent/sandbox` writes, and
`bpf/sandbox.bpf.c` reads) is declared here as a `ctypes.Structure` whose
field names are the C member names, and registered in `MIRRORS` under its C
struct name; a test reads the compiled objects' BTF and checks each mirror's
size and field offsets. Native byte order (the compiler runs on the node
that loads the maps); addresses are in network order, as in a sockaddr.

    sandbox_paths  LPM_TRIE  manul_path_key -> manul_path_val
      key: prefixlen:u32 | sandbox_id:u32 | path[252]
        exact path  P: data = sandbox_id, P, NUL   prefixlen = 32 + 8*(len(P)+1)
        prefix     P*: data = sandbox_id, P        prefixlen = 32 + 8*len(P)
        root          : data = sandbox_id          prefixlen = 32
      val: rule_id[4]:u32 (read, write, exec, loadLibrary) | allow:u8 | sub_or:u8 |
           sub_and:u8 | pad:u8  (sub_*: OR / AND of allow over the entry and all below)
    sandbox_net    LPM_TRIE  manul_net_key -> manul_net_val
      key: prefixlen:u32 | sandbox_id:u32 | family:u32 | addr[16]
        prefixlen = 64 + CIDR bits; IPv4 in addr[0..3], rest zero
      val: nranges:u32 | range[16] of
           (port_lo:u16 | port_hi:u16 | protos:u8 | allow:u8 | pad:u16 | rule_id:u32)
    sandbox_sockets HASH     manul_sbx_sock_key -> manul_sbx_sock_val
      key: kind:u32 (1 raw IP, 2 packet) | sandbox_id:u32   val: allow:u32 | rule_id:u32
    sandbox_cgroups HASH     cgroup id:u64 -> manul_sandbox_binding
      val: sandbox_id:u32 | flags:u32            (written by agent/sandbox)

See the comments beside the structs in bpf/include/manul.h for how the BPF
side decides, and docs/policy.md for the policy-level view.
"""

from __future__ import annotations

import ctypes
import ipaddress

LPM_DATA_MAX = 256  # the kernel's cap on LPM trie key data (LPM_DATA_SIZE_MAX)
PATH_BYTES = LPM_DATA_MAX - 4  # MANUL_SBX_PATH_BYTES: what is left after sandbox_id
EXACT_PATH_MAX = PATH_BYTES - 1  # an exact key also holds the terminating NUL
PREFIX_PATH_MAX = PATH_BYTES

PATH_ACTIONS = 4  # MANUL_SBX_PATH_ACTIONS; slots: read, write, exec, loadLibrary
NET_RANGES = 16  # MANUL_SBX_NET_RANGES

AF_INET = 2
AF_INET6 = 10
PROTO_TCP = 1  # MANUL_SBX_PROTO_TCP: bits of manul_net_range.protos
PROTO_UDP = 2

BINDING_ENFORCE = 1  # MANUL_SBX_F_ENFORCE: deny (else audit only)


class manul_path_key(ctypes.Structure):
    _fields_ = (
        ("prefixlen", ctypes.c_uint32),
        ("sandbox_id", ctypes.c_uint32),
        ("path", ctypes.c_uint8 * PATH_BYTES),
    )


class manul_path_val(ctypes.Structure):
    _fields_ = (
        ("rule_id", ctypes.c_uint32 * PATH_ACTIONS),
        ("allow", ctypes.c_uint8),
        ("sub_or", ctypes.c_uint8),
        ("sub_and", ctypes.c_uint8),
        ("pad", ctypes.c_uint8),
    )


class manul_net_key(ctypes.Structure):
    _fields_ = (
        ("prefixlen", ctypes.c_uint32),
        ("sandbox_id", ctypes.c_uint32),
        ("family", ctypes.c_uint32),
        ("addr", ctypes.c_uint8 * 16),
    )


class manul_net_range(ctypes.Structure):
    _fields_ = (
        ("port_lo", ctypes.c_uint16),
        ("port_hi", ctypes.c_uint16),
        ("protos", ctypes.c_uint8),
        ("allow", ctypes.c_uint8),
        ("pad", ctypes.c_uint16),
        ("rule_id", ctypes.c_uint32),
    )


class manul_net_val(ctypes.Structure):
    _fields_ = (
        ("nranges", ctypes.c_uint32),
        ("range", manul_net_range * NET_RANGES),
    )


class manul_sbx_sock_key(ctypes.Structure):
    _fields_ = (
        ("kind", ctypes.c_uint32),
        ("sandbox_id", ctypes.c_uint32),
    )


class manul_sbx_sock_val(ctypes.Structure):
    _fields_ = (
        ("allow", ctypes.c_uint32),
        ("rule_id", ctypes.c_uint32),
    )


class manul_sandbox_binding(ctypes.Structure):
    _fields_ = (
        ("sandbox_id", ctypes.c_uint32),
        ("flags", ctypes.c_uint32),
    )


MIRRORS: dict[str, type[ctypes.Structure]] = {
    "manul_path_key": manul_path_key,
    "manul_path_val": manul_path_val,
    "manul_net_key": manul_net_key,
    "manul_net_range": manul_net_range,
    "manul_net_val": manul_net_val,
    "manul_sandbox_binding": manul_sandbox_binding,
    "manul_sbx_sock_key": manul_sbx_sock_key,
    "manul_sbx_sock_val": manul_sbx_sock_val,
}

# Map name -> (key struct, value struct). Sizes follow from the structs.
MAPS: dict[str, tuple[type[ctypes.Structure], type[ctypes.Structure]]] = {
    "sandbox_paths": (manul_path_key, manul_path_val),
    "sandbox_net": (manul_net_key, manul_net_val),
    "sandbox_sockets": (manul_sbx_sock_key, manul_sbx_sock_val),
}


def path_key(sandbox_id: int, path: bytes, *, exact: bool) -> bytes:
    """An LPM key for an exact path (NUL-terminated) or a path prefix."""
    data = path + b"\0" if exact else path
    if len(data) > PATH_BYTES:
        raise ValueError(f"path of {len(path)} bytes does not fit an LPM key")
    k = manul_path_key()
    k.prefixlen = 32 + 8 * len(data)
    k.sandbox_id = sandbox_id
    ctypes.memmove(k.path, data, len(data))
    return bytes(k)


def path_lookup_key(sandbox_id: int, path: bytes) -> bytes:
    """The key the BPF side builds for a lookup: path, NUL, cut at PATH_BYTES."""
    data = (path + b"\0")[:PATH_BYTES]
    k = manul_path_key()
    k.prefixlen = 32 + 8 * len(data)
    k.sandbox_id = sandbox_id
    ctypes.memmove(k.path, data, len(data))
    return bytes(k)


def path_val(allow_mask: int, rule_ids: tuple[int, ...], sub_or: int | None = None,
             sub_and: int | None = None) -> bytes:
    """A path entry: its own verdicts, and the OR / AND of `allow` over it and
    every entry below it (default: its own, as for a leaf)."""
    v = manul_path_val()
    v.allow = allow_mask
    v.sub_or = allow_mask if sub_or is None else sub_or
    v.sub_and = allow_mask if sub_and is None else sub_and
    for i, r in enumerate(rule_ids):
        v.rule_id[i] = r
    return bytes(v)


def net_key(sandbox_id: int, network: ipaddress.IPv4Network | ipaddress.IPv6Network) -> bytes:
    k = manul_net_key()
    k.prefixlen = 64 + network.prefixlen
    k.sandbox_id = sandbox_id
    k.family = AF_INET if network.version == 4 else AF_INET6
    packed = network.network_address.packed
    ctypes.memmove(k.addr, packed, len(packed))
    return bytes(k)


def net_lookup_key(
    sandbox_id: int, address: ipaddress.IPv4Address | ipaddress.IPv6Address
) -> bytes:
    return net_key(sandbox_id, ipaddress.ip_network(address))


def net_val(ranges: list[tuple[int, int, int, int, int]]) -> bytes:
    """`ranges`: (port_lo, port_hi, protos, allow, rule_id), at most NET_RANGES."""
    if len(ranges) > NET_RANGES:
        raise ValueError(f"{len(ranges)} port ranges do not fit {NET_RANGES} slots")
    v = manul_net_val()
    v.nranges = len(ranges)
    for i, (lo, hi, protos, allow, rule) in enumerate(ranges):
        r = v.range[i]
        r.port_lo, r.port_hi, r.protos, r.allow, r.rule_id = lo, hi, protos, allow, rule
    return bytes(v)


SOCK_KINDS = {"raw": 1, "packet": 2}  # enum manul_sbx_sock_kind


def sock_key(sandbox_id: int, kind: int) -> bytes:
    k = manul_sbx_sock_key()
    k.sandbox_id, k.kind = sandbox_id, kind
    return bytes(k)


def sock_val(allow: int, rule_id: int) -> bytes:
    v = manul_sbx_sock_val()
    v.allow, v.rule_id = allow, rule_id
    return bytes(v)


def decode_sock_val(data: bytes) -> tuple[int, int]:
    v = manul_sbx_sock_val.from_buffer_copy(data)
    return v.allow, v.rule_id


def decode_path_val(data: bytes) -> tuple[int, tuple[int, ...]]:
    v = manul_path_val.from_buffer_copy(data)
    return v.allow, tuple(v.rule_id)


def decode_net_val(data: bytes) -> list[tuple[int, int, int, int, int]]:
    v = manul_net_val.from_buffer_copy(data)
    n = min(v.nranges, NET_RANGES)
    return [
        (r.port_lo, r.port_hi, r.protos, r.allow, r.rule_id) for r in (v.range[i] for i in range(n))
    ]


def decode_prefixlen(key: bytes) -> int:
    return int(ctypes.c_uint32.from_buffer_copy(key[:4]).value)
