"""Test helper: client-to-server TCP byte streams out of pcap / pcapng files.

Just enough to replay captured TLS handshakes into the parser: Ethernet
(with VLAN tags), Linux cooked (v1, v2), raw IP and BSD loopback link types;
IPv4 and IPv6 (no extension headers); TCP payloads put in sequence order from
the first segment that starts a ClientHello. Used by `test_foxio_captures`.
"""

from __future__ import annotations

import ipaddress
import struct
from collections.abc import Iterator

from agent.discovery import looks_like_client_hello

FlowKey = tuple[str, int, str, int]  # src, sport, dst, dport


def frames(data: bytes) -> Iterator[tuple[int, bytes]]:
    """(link type, frame) for every packet of a pcap or pcapng file."""
    if data[:4] == b"\x0a\x0d\x0d\x0a":
        yield from _pcapng(data)
        return
    end = "<" if data[:4] in (b"\xd4\xc3\xb2\xa1", b"\x4d\x3c\xb2\xa1") else ">"
    link = struct.unpack_from(end + "I", data, 20)[0]
    off = 24
    while off + 16 <= len(data):
        cap = struct.unpack_from(end + "I", data, off + 8)[0]
        yield link, data[off + 16 : off + 16 + cap]
        off += 16 + cap


def _pcapng(data: bytes) -> Iterator[tuple[int, bytes]]:
    off, end, links = 0, "<", []
    while off + 12 <= len(data):
        if data[off : off + 4] == b"\x0a\x0d\x0d\x0a":  # section header: byte order, new links
            end = "<" if data[off + 8 : off + 12] == b"\x4d\x3c\x2b\x1a" else ">"
            links = []
        kind, size = struct.unpack_from(end + "II", data, off)
        body = data[off + 8 : off + size - 4]
        if kind == 1:  # interface description
            links.append(struct.unpack_from(end + "H", body, 0)[0])
        elif kind == 6:  # enhanced packet
            iface, cap = struct.unpack_from(end + "I", body, 0)[0], struct.unpack_from(
                end + "I", body, 12)[0]
            yield links[iface], body[20 : 20 + cap]
        elif kind == 3:  # simple packet
            yield links[0], body[4:]
        off += max(size, 12)


def _ip(link: int, frame: bytes) -> bytes | None:
    if link == 1:  # Ethernet
        ethertype, pos = struct.unpack_from(">H", frame, 12)[0], 14
        while ethertype in (0x8100, 0x88A8):
            ethertype, pos = struct.unpack_from(">H", frame, pos + 2)[0], pos + 4
        return frame[pos:] if ethertype in (0x0800, 0x86DD) else None
    skip = {0: 4, 101: 0, 12: 0, 228: 0, 229: 0, 113: 16, 276: 20}.get(link)
    return None if skip is None else frame[skip:]


def _tcp(ip: bytes) -> tuple[FlowKey, int, bytes] | None:
    if len(ip) < 40:
        return None
    if ip[0] >> 4 == 4 and ip[9] == 6:
        total = struct.unpack_from(">H", ip, 2)[0]
        src, dst, seg = ip[12:16], ip[16:20], ip[(ip[0] & 15) * 4 : total]
    elif ip[0] >> 4 == 6 and ip[6] == 6:
        length = struct.unpack_from(">H", ip, 4)[0]
        src, dst, seg = ip[8:24], ip[24:40], ip[40 : 40 + length]
    else:
        return None
    if len(seg) < 20:
        return None
    sport, dport, seq = struct.unpack_from(">HHI", seg, 0)
    key = (str(ipaddress.ip_address(src)), sport, str(ipaddress.ip_address(dst)), dport)
    return key, seq, seg[(seg[12] >> 4) * 4 :]


def client_hello_streams(data: bytes, limit: int = 20_000) -> dict[FlowKey, bytes]:
    """For each TCP flow that starts a ClientHello: its bytes from there, in order."""
    flows: dict[FlowKey, list[tuple[int, bytes]]] = {}
    for link, frame in frames(data):
        ip = _ip(link, frame)
        seg = None if ip is None else _tcp(ip)
        if seg is not None and seg[2]:
            flows.setdefault(seg[0], []).append((seg[1], seg[2]))
    out: dict[FlowKey, bytes] = {}
    for key, segments in flows.items():
        start = next((seq for seq, p in segments if looks_like_client_hello(p)), None)
        if start is None:
            continue
        by_offset: dict[int, bytes] = {}
        for seq, payload in segments:
            by_offset.setdefault((seq - start) & 0xFFFFFFFF, payload)
        stream = b""
        for offset in sorted(o for o in by_offset if o < limit):
            if offset > len(stream):
                break  # a gap: stop at what is contiguous
            stream += by_offset[offset][len(stream) - offset :]
        out[key] = stream
    return out
