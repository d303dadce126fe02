"""The reference evaluator: decide a kernel request from compiled bytes.

This is what `bpf/sandbox.bpf.c` does, written in Python over the same map
entries: build the lookup key the way the BPF side does, find the longest
matching prefix exactly as `BPF_MAP_TYPE_LPM_TRIE` does (the longest entry
whose first `prefixlen` bits equal the key's, never longer than the key's
own `prefixlen`), and read the verdict. A miss is a deny (fail closed).
It only ever sees bytes, so the differential tests check the compiler
*and* the layout. Used by the tests and by `manul compile --query`.
"""

from __future__ import annotations

import ipaddress
from dataclasses import dataclass

from compiler import layout
from compiler.regions import normalize_address
from compiler.result import CompiledSandbox, MapEntry
from compiler.schema import PATH_ACTIONS

PROTO_BIT = {"tcp": layout.PROTO_TCP, "udp": layout.PROTO_UDP}


@dataclass(frozen=True)
class Verdict:
    allow: bool
    rule_id: int  # 0: no rule decided (Cedar's default deny)


class LpmTrie:
    """A longest-prefix-match map over (key, value) byte entries."""

    def __init__(self, entries: tuple[MapEntry, ...] | list[MapEntry], data_bytes: int):
        self.bits = 8 * data_bytes
        self.by_len: dict[int, dict[int, bytes]] = {}
        for e in entries:
            plen = layout.decode_prefixlen(e.key)
            data = int.from_bytes(e.key[4 : 4 + data_bytes], "big")
            self.by_len.setdefault(plen, {})[data >> (self.bits - plen)] = e.value
        self.lengths = sorted(self.by_len, reverse=True)

    def lookup(self, key: bytes) -> bytes | None:
        plen_key = layout.decode_prefixlen(key)
        data = int.from_bytes(key[4 : 4 + self.bits // 8], "big")
        for plen in self.lengths:
            if plen > plen_key:
                continue
            hit = self.by_len[plen].get(data >> (self.bits - plen))
            if hit is not None:
                return hit
        return None


class SandboxEvaluator:
    """Decides kernel requests for one compiled sandbox, from its bytes."""

    def __init__(self, sandbox: CompiledSandbox):
        self.sandbox = sandbox
        self.paths = LpmTrie(sandbox.maps.get("sandbox_paths", ()), 4 + layout.PATH_BYTES)
        self.net = LpmTrie(sandbox.maps.get("sandbox_net", ()), 24)
        self.sockets = {e.key: e.value for e in sandbox.maps.get("sandbox_sockets", ())}

    def _path_val(self, path: str) -> tuple[int, tuple[int, ...], int, int] | None:
        raw = path.encode("utf-8", "surrogatepass")
        hit = self.paths.lookup(layout.path_lookup_key(self.sandbox.sandbox_id, raw))
        if hit is None:
            return None
        v = layout.manul_path_val.from_buffer_copy(hit)
        return v.allow, tuple(v.rule_id), v.sub_or, v.sub_and

    def rights(self, path: str) -> int:
        """The mask of path slots allowed on `path` (bit = PATH_ACTIONS index)."""
        hit = self._path_val(path)
        return 0 if hit is None else hit[0]

    def refer(self, old: str, new: str, *, exchange: bool = False) -> bool:
        """link(old, new) / rename(old, new) of a file, as the kernel decides
        it: writeFile on the new name (and on the old one for a rename, which
        `path()` answers), and the new name grants nothing the old one does
        not (both ways for RENAME_EXCHANGE)."""
        write = 1 << PATH_ACTIONS.index("writeFile")
        a, b = self.rights(old), self.rights(new)
        if not b & write:
            return False
        if b & ~a:
            return False
        return not (exchange and a & ~b)

    def socket(self, kind: str) -> Verdict:
        """openRawSocket on SocketKind::`kind` ("raw" or "packet")."""
        code = layout.SOCK_KINDS.get(kind)
        if code is None:
            return Verdict(False, 0)
        hit = self.sockets.get(layout.sock_key(self.sandbox.sandbox_id, code))
        if hit is None:
            return Verdict(False, 0)
        allow, rule = layout.decode_sock_val(hit)
        return Verdict(bool(allow), rule)

    def path(self, action: str, path: str) -> Verdict:
        """readFile / writeFile / exec / loadLibrary on a resolved path."""
        slot = PATH_ACTIONS.index(action)
        raw = path.encode("utf-8", "surrogatepass")
        hit = self.paths.lookup(layout.path_lookup_key(self.sandbox.sandbox_id, raw))
        if hit is None:
            return Verdict(False, 0)
        allow, rules = layout.decode_path_val(hit)
        return Verdict(bool(allow >> slot & 1), rules[slot])

    def connect(self, address: str, port: int, protocol: str) -> Verdict:
        """connectNetwork to an address, port and protocol."""
        addr = normalize_address(address)
        hit = self.net.lookup(layout.net_lookup_key(self.sandbox.sandbox_id, addr))
        if hit is None:
            return Verdict(False, 0)
        bit = PROTO_BIT.get(protocol, 0)
        for lo, hi, protos, allow, rule in layout.decode_net_val(hit):
            if lo <= port <= hi and protos & bit:
                return Verdict(bool(allow), rule)
        return Verdict(False, 0)

    def decide(self, action: str, attrs: dict[str, object]) -> Verdict:
        """A kernel action with the resource's attributes (`path`, or
        `ip`/`port`/`protocol`; `host` is not something the kernel sees;
        `kind` for openRawSocket: the SocketKind id)."""
        if action == "openRawSocket":
            kind = attrs.get("kind")
            if not isinstance(kind, str):
                raise ValueError('openRawSocket needs `kind` ("raw" or "packet")')
            return self.socket(kind)
        if action == "connectNetwork":
            ip, port, proto = attrs.get("ip"), attrs.get("port"), attrs.get("protocol")
            if not isinstance(ip, str) or not isinstance(port, int) or not isinstance(proto, str):
                raise ValueError("connectNetwork needs `ip`, `port` and `protocol`")
            ipaddress.ip_address(ip)
            return self.connect(ip, port, proto)
        path = attrs.get("path")
        if not isinstance(path, str):
            raise ValueError(f"{action} needs `path`")
        return self.path(action, path)
