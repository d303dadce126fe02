"""What the kernel reports about a workload's behaviour, as Python records.

An `Item` is one baselined thing — a program run, a file read or written,
a peer connected to, a port listened on, a Unix socket connected to — in
the form the kernel keys it (`struct manul_bl_key`). An `Activity` is one
novel event from bpf/baseline.bpf.c: the item, the scope it was checked
against, and the process that did it. Items print and parse as one line
(`exec /usr/bin/curl`, `connect tcp 10.0.0.7:5432`, `listen tcp :8080`),
which is how baselines are stored and shown.
"""

from __future__ import annotations

import ctypes
import ipaddress
from dataclasses import dataclass
from enum import StrEnum

from agent.baseline.errors import BaselineError
from agent.kernel import abi

PROTO_TCP, PROTO_UDP = 6, 17
_PROTO_NAMES = {PROTO_TCP: "tcp", PROTO_UDP: "udp"}
_PROTO_NUMBERS = {v: k for k, v in _PROTO_NAMES.items()}


class Kind(StrEnum):
    EXEC = "exec"
    READ = "read"
    WRITE = "write"
    CONNECT = "connect"
    LISTEN = "listen"
    UNIX = "unix"

    @property
    def has_path(self) -> bool:
        return self in (Kind.EXEC, Kind.READ, Kind.WRITE, Kind.UNIX)


_KIND_NUMBERS = {Kind.EXEC: abi.BL_EXEC, Kind.READ: abi.BL_READ, Kind.WRITE: abi.BL_WRITE,
                 Kind.CONNECT: abi.BL_CONNECT, Kind.LISTEN: abi.BL_LISTEN,
                 Kind.UNIX: abi.BL_UNIX}
_KINDS = {v: k for k, v in _KIND_NUMBERS.items()}


@dataclass(frozen=True, slots=True, order=True)
class Item:
    """One baselined thing. Path kinds have `path`; network kinds the rest."""

    kind: Kind
    path: str = ""
    addr: str = ""  # connect: the peer (IPv4 plain, IPv6 compressed)
    port: int = 0  # connect: the peer's; listen: the local one (0: ephemeral)
    proto: str = ""  # tcp or udp

    def __str__(self) -> str:
        if self.kind.has_path:
            return f"{self.kind} {self.path}"
        if self.kind is Kind.CONNECT:
            host = f"[{self.addr}]" if ":" in self.addr else self.addr
            return f"connect {self.proto} {host}:{self.port}"
        return f"listen {self.proto} :{self.port if self.port else 'ephemeral'}"

    @classmethod
    def parse(cls, text: str) -> Item:
        """The inverse of str(); BaselineError on anything else."""
        kind_text, _, rest = text.partition(" ")
        try:
            kind = Kind(kind_text)
        except ValueError:
            raise BaselineError(f"`{text}` is not a baseline item: unknown kind "
                                f"`{kind_text}`") from None
        if kind.has_path:
            if not rest.startswith("/"):
                raise BaselineError(f"`{text}` is not a baseline item: the path is not "
                                    "absolute")
            return cls(kind, path=rest)
        proto, _, where = rest.partition(" ")
        if proto not in _PROTO_NUMBERS:
            raise BaselineError(f"`{text}` is not a baseline item: protocol `{proto}` is "
                                "not tcp or udp")
        host, _, port_text = where.rpartition(":")
        try:
            port = 0 if port_text == "ephemeral" else int(port_text)
            if not 0 <= port <= 65535:
                raise ValueError(port_text)
            if kind is Kind.LISTEN:
                if host:
                    raise ValueError(host)
                return cls(kind, port=port, proto=proto)
            addr = str(ipaddress.ip_address(host.strip("[]")))
        except ValueError:
            raise BaselineError(f"`{text}` is not a baseline item: `{where}` is not an "
                                "address and port") from None
        return cls(kind, addr=addr, port=port, proto=proto)

    def key(self, scope: int) -> bytes:
        """The kernel's `struct manul_bl_key` of this item in `scope`."""
        k = abi.manul_bl_key()
        k.scope = scope
        k.kind = _KIND_NUMBERS[self.kind]
        k.port = self.port
        k.proto = _PROTO_NUMBERS.get(self.proto, 0)
        if self.addr:
            ip = ipaddress.ip_address(self.addr)
            raw = (ipaddress.IPv6Address(f"::ffff:{ip}").packed if ip.version == 4
                   else ip.packed)
            ctypes.memmove(k.addr, raw, 16)
        if self.path:
            raw_path = self.path.encode("utf-8", "surrogateescape")
            if len(raw_path) >= abi.PATH_MAX:
                raise BaselineError(f"path `{self.path[:60]}...` is longer than the kernel "
                                    f"keeps ({abi.PATH_MAX - 1} bytes)")
            k.path = raw_path
        return bytes(k)


def prefix_key(kind: Kind, scope: int, directory: str) -> bytes:
    """The kernel's `struct manul_bl_prefix` for every `kind` path under `directory`/."""
    raw = directory.rstrip("/").encode("utf-8", "surrogateescape") + b"/"
    if len(raw) > abi.BL_PREFIX_MAX:
        raise BaselineError(f"directory `{directory[:60]}...` is longer than the kernel's "
                            f"prefixes ({abi.BL_PREFIX_MAX} bytes)")
    p = abi.manul_bl_prefix()
    p.prefixlen = 96 + 8 * len(raw)
    ctypes.memmove(p.scope, scope.to_bytes(8, "little"), 8)
    p.kind = _KIND_NUMBERS[kind]
    p.path = raw
    return bytes(p)


@dataclass(frozen=True, slots=True)
class Activity:
    """One novel event of a watched workload, as the kernel reported it."""

    item: Item
    scope: int
    cgroup_id: int
    pid: int
    tgid: int
    ppid: int
    uid: int
    comm: str
    parent_comm: str
    flags: int
    ktime_ns: int
    dev: int = 0  # path events: the file's device (kernel encoding) and inode
    ino: int = 0

    @property
    def truncated(self) -> bool:
        return bool(self.flags & abi.BL_F_TRUNCATED)

    @property
    def reads_too(self) -> bool:
        """A write open that may read as well (O_RDWR)."""
        return bool(self.flags & abi.BL_F_READ)


def _addr(raw: bytes) -> str:
    ip = ipaddress.IPv6Address(raw)
    return str(ip.ipv4_mapped) if ip.ipv4_mapped is not None else str(ip)


def decode(record: bytes) -> Activity:
    """One `struct manul_bl_event` record; BaselineError on an unknown kind."""
    ev = abi.decode(abi.manul_bl_event, record)
    k = ev.key
    kind = _KINDS.get(k.kind)
    if kind is None:
        raise BaselineError(f"behaviour event of unknown kind {k.kind}")
    if kind.has_path:
        item = Item(kind, path=k.path.decode("utf-8", "surrogateescape"))
    elif kind is Kind.CONNECT:
        item = Item(kind, addr=_addr(bytes(k.addr)), port=k.port,
                    proto=_PROTO_NAMES.get(k.proto, str(k.proto)))
    else:
        item = Item(kind, port=k.port, proto=_PROTO_NAMES.get(k.proto, str(k.proto)))
    return Activity(item, k.scope, ev.cgroup_id, ev.pid, ev.tgid, ev.ppid, ev.uid,
                    ev.comm.decode(errors="replace"), ev.pcomm.decode(errors="replace"),
                    ev.flags, ev.hdr.ktime_ns, ev.dev, ev.ino)
