"""Test helper: build ClientHello bytes field by field, and re-frame real ones.

Used by the parser, JA4 and fuzz tests. Independent of the parser under test:
it writes the TLS wire format (RFC 8446 4.1.2, RFC 6066 3, RFC 7301 3.1)
directly, so a test that round-trips through it checks the parser against
the RFCs rather than against itself.
"""

from __future__ import annotations

import struct
from collections.abc import Iterable, Sequence

GREASE = (0x0A0A, 0x1A1A, 0x2A2A, 0x3A3A, 0x4A4A, 0x5A5A, 0x6A6A, 0x7A7A,
          0x8A8A, 0x9A9A, 0xAAAA, 0xBABA, 0xCACA, 0xDADA, 0xEAEA, 0xFAFA)


def u8(n: int) -> bytes:
    return bytes([n])


def u16(n: int) -> bytes:
    return struct.pack(">H", n)


def u24(n: int) -> bytes:
    return struct.pack(">I", n)[1:]


def vec8(body: bytes) -> bytes:
    return u8(len(body)) + body


def vec16(body: bytes) -> bytes:
    return u16(len(body)) + body


def u16s(values: Iterable[int]) -> bytes:
    return b"".join(u16(v) for v in values)


def ext(etype: int, body: bytes = b"") -> bytes:
    return u16(etype) + vec16(body)


def sni(host: bytes) -> bytes:
    return ext(0x0000, vec16(u8(0) + vec16(host)))


def alpn(names: Sequence[bytes]) -> bytes:
    return ext(0x0010, vec16(b"".join(vec8(n) for n in names)))


def supported_versions(versions: Sequence[int]) -> bytes:
    return ext(0x002B, vec8(u16s(versions)))


def signature_algorithms(algs: Sequence[int]) -> bytes:
    return ext(0x000D, vec16(u16s(algs)))


def supported_groups(groups: Sequence[int]) -> bytes:
    return ext(0x000A, vec16(u16s(groups)))


def ec_point_formats(formats: Sequence[int]) -> bytes:
    return ext(0x000B, vec8(bytes(formats)))


def key_share(shares: Sequence[tuple[int, int]]) -> bytes:
    """`shares`: (group, key length) pairs; key bytes are filler."""
    return ext(0x0033, vec16(b"".join(u16(g) + vec16(b"\x42" * n) for g, n in shares)))


def handshake(
    *,
    version: int = 0x0303,
    ciphers: Sequence[int] = (0x1301, 0x1302, 0xC02F),
    extensions: Sequence[bytes] | None = (),
    session_id: bytes = b"\x11" * 32,
    compression: bytes = b"\x00",
) -> bytes:
    """A ClientHello handshake message (4-byte header + body); `extensions=None` omits the block."""
    body = (u16(version) + b"\x5a" * 32 + vec8(session_id) + vec16(u16s(ciphers))
            + vec8(compression))
    if extensions is not None:
        body += vec16(b"".join(extensions))
    return u8(1) + u24(len(body)) + body


def records(message: bytes, sizes: Sequence[int] = (), record_version: int = 0x0301) -> bytes:
    """Frame a handshake message as TLS records: fragments of `sizes`, the rest in one more."""
    out = b""
    pos = 0
    for size in sizes:
        out += u8(0x16) + u16(record_version) + vec16(message[pos : pos + size])
        pos += size
    if pos < len(message) or not sizes:
        out += u8(0x16) + u16(record_version) + vec16(message[pos:])
    return out


def unframe(wire: bytes) -> bytes:
    """The handshake bytes carried by a run of complete TLS records (test input is trusted)."""
    out = b""
    pos = 0
    while pos + 5 <= len(wire):
        n = int.from_bytes(wire[pos + 3 : pos + 5], "big")
        out += wire[pos + 5 : pos + 5 + n]
        pos += 5 + n
    return out


def reframe(wire: bytes, sizes: Sequence[int]) -> bytes:
    """Real record bytes re-cut into records of `sizes` (+ the remainder)."""
    return records(unframe(wire), sizes, int.from_bytes(wire[1:3], "big"))


def hello_from_lists(
    *,
    version: str,
    ciphers: Sequence[int],
    extensions: Sequence[int],
    sigalgs: Sequence[int],
    host: bytes = b"example.com",
    first_alpn: bytes = b"h2",
    grease: bool = False,
) -> bytes:
    """A full record-framed ClientHello with these lists, in this order.

    Extension bodies are well-formed and plausible; `version` is JA4's two
    characters (`13` puts 0x0304 in supported_versions, the rest set the
    legacy version). With `grease`, GREASE values are sprinkled into every list
    the way Chrome does, which JA4 must ignore.
    """
    legacy = {"13": 0x0303, "12": 0x0303, "11": 0x0302, "10": 0x0301}[version]
    body_for = {
        0x0000: sni(host),
        0x0010: alpn([first_alpn, b"http/1.1"]),
        0x000D: signature_algorithms(sigalgs),
        0x002B: supported_versions(
            ([0x3A3A] if grease else []) + ([0x0304, 0x0303] if version == "13" else [legacy])
        ),
        0x000A: supported_groups(([0x2A2A] if grease else []) + [0x001D, 0x0017, 0x0018]),
        0x000B: ec_point_formats([0]),
        0x0033: key_share(([(0x2A2A, 1)] if grease else []) + [(0x001D, 32)]),
    }
    exts = [body_for.get(t, ext(t, b"\x00" if t == 0xFF01 else b"")) for t in extensions]
    cs = list(ciphers)
    if grease:
        cs.insert(0, 0x9A9A)
        exts.insert(0, ext(0x1A1A))
        exts.append(ext(0xDADA, b"\x00"))
    return records(handshake(version=legacy, ciphers=cs, extensions=exts))
