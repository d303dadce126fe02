"""TLS ClientHello parsing: bytes as captured off the wire -> a frozen `ClientHello`.

Called by the discovery consumer for every handshake record `bpf/tls.bpf.c`
copies to the ring buffer, and by `ja4` (which reads the result). The input
starts at a TLS record header; the ClientHello may span several records
(large post-quantum key shares) and the capture may be cut at its bound
(about 4 KiB), so:

* records are reassembled until the handshake message is complete;
* if the input ends early, every extension that arrived whole is reported and
  `truncated` is set; if it ends before the extensions start, that is a
  `ClientHelloError` with `truncated=True`;
* a malformed body of a known extension does not lose the rest: its type is
  listed in `malformed_extensions` and parsing goes on. Framing errors (record
  layer, handshake header, fixed fields, extension list) raise.

The input is attacker-controlled. `ClientHelloError` is the only exception
that leaves this module: every length is checked against the bytes present
before it is used, nothing is allocated from a declared length, there is no
recursion, and each loop consumes at least one byte per step.

The prefix rule (mirrored by `bpf/tls.bpf.c`; keep the two identical)
--------------------------------------------------------------------
A TCP payload is taken for the start of a ClientHello when its first six
bytes satisfy all of:

    byte 0      == 0x16              content type: handshake
    byte 1      == 0x03              record version major
    byte 2      in 0x01..0x04        record version minor (TLS 1.0 .. 1.3)
    bytes 3..4  in 1..16384          record length, big-endian (RFC 8446 5.1)
    byte 5      == 0x01              handshake type: client_hello

`looks_like_client_hello` implements exactly this. SSLv2-compatible hellos
(first byte 0x80) and SSL 3.0 records (minor 0x00) are deliberately not
matched; QUIC carries its ClientHello in CRYPTO frames and is not parsed here.
"""

from __future__ import annotations

import re
import struct
from dataclasses import dataclass

from agent.discovery.errors import ClientHelloError

Buffer = bytes | bytearray | memoryview

CONTENT_HANDSHAKE = 0x16
HANDSHAKE_CLIENT_HELLO = 0x01
MAX_RECORD = 1 << 14  # RFC 8446 5.1: plaintext fragment length limit
_RECORD_HEADER = 5
_HANDSHAKE_HEADER = 4

EXT_SERVER_NAME = 0x0000
EXT_SUPPORTED_GROUPS = 0x000A
EXT_EC_POINT_FORMATS = 0x000B
EXT_SIGNATURE_ALGORITHMS = 0x000D
EXT_ALPN = 0x0010
EXT_SUPPORTED_VERSIONS = 0x002B
EXT_KEY_SHARE = 0x0033

_DECODED = frozenset({
    EXT_SERVER_NAME, EXT_SUPPORTED_GROUPS, EXT_EC_POINT_FORMATS, EXT_SIGNATURE_ALGORITHMS,
    EXT_ALPN, EXT_SUPPORTED_VERSIONS, EXT_KEY_SHARE,
})

_unpack_from = struct.unpack_from

# One DNS label: letters, digits, `_` (seen in the wild), inner `-`; 1-63 bytes.
_LABEL = rb"[a-z0-9_](?:[a-z0-9_-]{0,61}[a-z0-9_])?"
_HOSTNAME = re.compile(rb"(?:" + _LABEL + rb"\.)*" + _LABEL)


def is_grease(value: int) -> bool:
    """True for a GREASE value (RFC 8701): 0x0a0a, 0x1a1a, ... 0xfafa."""
    return (value & 0x0F0F) == 0x0A0A and (value >> 8) == (value & 0xFF)


def normalize_hostname(raw: bytes) -> str | None:
    """`raw` as a lower-case DNS host name without trailing dot, or None if it is not one.

    Accepts ASCII labels of letters, digits, `-` (not at either end) and `_`,
    1-63 bytes each, 253 bytes in all. IDN must arrive as A-labels (`xn--`).
    """
    if not raw or len(raw) > 254:
        return None
    host = raw.lower()
    if host[-1] == 0x2E:  # one trailing dot is tolerated
        host = host[:-1]
    if len(host) > 253 or _HOSTNAME.fullmatch(host) is None:
        return None
    return host.decode("ascii")


def looks_like_client_hello(prefix: Buffer) -> bool:
    """The cheap prefix rule of the module docstring, on the first bytes of a payload."""
    if len(prefix) < 6:
        return False
    length = prefix[3] << 8 | prefix[4]
    return (
        prefix[0] == CONTENT_HANDSHAKE
        and prefix[1] == 0x03
        and 0x01 <= prefix[2] <= 0x04
        and 0 < length <= MAX_RECORD
        and prefix[5] == HANDSHAKE_CLIENT_HELLO
    )


@dataclass(frozen=True, slots=True)
class ClientHello:
    """What a ClientHello says, in wire order, GREASE values kept (use `is_grease`).

    `server_name` is the first `host_name` of the SNI extension, validated and
    lower-cased; an SNI that is present but not a host name leaves it None and
    keeps the raw bytes (at most 255) in `rejected_server_name`. `alpn` holds
    the protocol ids as bytes, in order. `length` is the handshake body length
    the message declares, `records` how many TLS records carried it.
    """

    record_version: int
    legacy_version: int
    cipher_suites: tuple[int, ...]
    compression_methods: bytes
    extensions: tuple[int, ...]
    server_name: str | None
    alpn: tuple[bytes, ...]
    supported_versions: tuple[int, ...]
    signature_algorithms: tuple[int, ...]
    supported_groups: tuple[int, ...]
    ec_point_formats: tuple[int, ...]
    key_share_groups: tuple[int, ...]
    length: int
    records: int
    truncated: bool
    rejected_server_name: bytes | None = None
    malformed_extensions: tuple[int, ...] = ()
    quic: bool = False  # always False here: TLS records over TCP

    @property
    def max_version(self) -> int:
        """The highest version offered: supported_versions without GREASE, else legacy."""
        best = -1
        for v in self.supported_versions:
            if v > best and not is_grease(v):
                best = v
        return best if best >= 0 else self.legacy_version


class _Bad(Exception):
    """An extension body that does not parse; caught per extension, never escapes."""


def parse_client_hello(data: Buffer) -> ClientHello:
    """Parse a ClientHello from bytes starting at its first TLS record header.

    Raises `ClientHelloError` (and nothing else) for anything that is not one.
    Bytes after the end of the ClientHello are ignored.
    """
    mv = memoryview(data)
    if mv.ndim != 1 or mv.itemsize != 1:
        raise ClientHelloError("input must be a flat buffer of bytes")
    body, declared, records = _reassemble(mv)
    return _parse_body(body, declared, records, mv[1] << 8 | mv[2])


def _check_record(mv: memoryview, off: int, index: int) -> int:
    """Validate the record header at `off` (5 bytes present); return its length."""
    if mv[off] != CONTENT_HANDSHAKE:
        what = "is not handshake (0x16)" if index == 1 else "interrupts the ClientHello"
        raise ClientHelloError(f"record {index}: content type `{mv[off]:#04x}` {what}")
    if mv[off + 1] != 0x03 or mv[off + 2] > 0x04:
        version = mv[off + 1] << 8 | mv[off + 2]
        raise ClientHelloError(f"record {index}: version `{version:#06x}` is not TLS")
    length = mv[off + 3] << 8 | mv[off + 4]
    if length > MAX_RECORD:
        raise ClientHelloError(f"record {index}: length `{length}` exceeds {MAX_RECORD}")
    return length


def _reassemble(mv: memoryview) -> tuple[memoryview, int, int]:
    """Return (handshake body as present, declared body length, records used)."""
    n = len(mv)
    if n < _RECORD_HEADER:
        raise ClientHelloError(f"{n} bytes is shorter than a TLS record header", truncated=True)
    length = _check_record(mv, 0, 1)
    # Fast path: the whole message is in the first record (the common case), no copy.
    if length >= _HANDSHAKE_HEADER and n >= 9:
        if mv[5] != HANDSHAKE_CLIENT_HELLO:
            raise ClientHelloError(f"handshake type `{mv[5]}` is not client_hello (1)")
        declared = mv[6] << 16 | mv[7] << 8 | mv[8]
        if declared + _HANDSHAKE_HEADER <= length and 9 + declared <= n:
            return mv[9 : 9 + declared], declared, 1
    # Slow path: gather fragments from consecutive handshake records.
    buf = bytearray()
    need = -1
    off = 0
    records = 0
    while off + _RECORD_HEADER <= n:
        records += 1
        length = _check_record(mv, off, records)
        start = off + _RECORD_HEADER
        buf += mv[start : min(start + length, n)]
        if need < 0 and len(buf) >= _HANDSHAKE_HEADER:
            if buf[0] != HANDSHAKE_CLIENT_HELLO:
                raise ClientHelloError(f"handshake type `{buf[0]}` is not client_hello (1)")
            need = _HANDSHAKE_HEADER + (buf[1] << 16 | buf[2] << 8 | buf[3])
        if 0 <= need <= len(buf):
            break
        off = start + length
    if need < 0:
        if buf and buf[0] != HANDSHAKE_CLIENT_HELLO:
            raise ClientHelloError(f"handshake type `{buf[0]}` is not client_hello (1)")
        raise ClientHelloError("input ends inside the handshake header", truncated=True)
    body = memoryview(buf)[_HANDSHAKE_HEADER : min(need, len(buf))]
    return body, need - _HANDSHAKE_HEADER, records


def _short(what: str, truncated: bool, declared: int) -> ClientHelloError:
    if truncated:
        return ClientHelloError(f"input ends inside the {what}", truncated=True)
    return ClientHelloError(f"{what} overruns the declared ClientHello length `{declared}`")


def _parse_body(b: memoryview, declared: int, records: int, record_version: int) -> ClientHello:
    end = len(b)
    truncated = end < declared
    # legacy_version(2) random(32) legacy_session_id<0..32>
    if end < 35:
        raise _short("fixed fields", truncated, declared)
    legacy_version = b[0] << 8 | b[1]
    sid = b[34]
    if sid > 32:
        raise ClientHelloError(f"session id length `{sid}` exceeds 32")
    p = 35 + sid
    if p + 2 > end:
        raise _short("session id or cipher suites length", truncated, declared)
    cs_len = b[p] << 8 | b[p + 1]
    if cs_len & 1:
        raise ClientHelloError(f"cipher suites length `{cs_len}` is odd")
    p += 2
    if p + cs_len + 1 > end:
        raise _short("cipher suites", truncated, declared)
    ciphers: tuple[int, ...] = _unpack_from(f">{cs_len >> 1}H", b, p)
    p += cs_len
    cm_len = b[p]
    p += 1
    if p + cm_len > end:
        raise _short("compression methods", truncated, declared)
    compression = bytes(b[p : p + cm_len])
    p += cm_len

    ext_end = p
    if p < end:
        if p + 2 > end:
            raise _short("extensions length", truncated, declared)
        ext_end = p + 2 + (b[p] << 8 | b[p + 1])
        p += 2
        if ext_end > end:
            if not truncated:
                raise _short("extensions", truncated, declared)
            ext_end = end
        elif ext_end < end:
            raise ClientHelloError(f"{end - ext_end} bytes follow the extensions")
    (types, sni, alpn, versions, sigalgs, groups, points, shares, malformed) = _parse_extensions(
        b, p, ext_end, truncated
    )
    server_name = None if sni is None else normalize_hostname(sni)
    return ClientHello(
        record_version=record_version,
        legacy_version=legacy_version,
        cipher_suites=ciphers,
        compression_methods=compression,
        extensions=types,
        server_name=server_name,
        alpn=alpn,
        supported_versions=versions,
        signature_algorithms=sigalgs,
        supported_groups=groups,
        ec_point_formats=points,
        key_share_groups=shares,
        length=declared,
        records=records,
        truncated=truncated,
        rejected_server_name=sni[:255] if sni is not None and server_name is None else None,
        malformed_extensions=malformed,
    )


_Ints = tuple[int, ...]
_Extensions = tuple[
    _Ints, bytes | None, tuple[bytes, ...], _Ints, _Ints, _Ints, _Ints, _Ints, _Ints
]


def _parse_extensions(b: memoryview, p: int, ext_end: int, truncated: bool) -> _Extensions:
    """Walk the extension list; only the first occurrence of each known type is decoded."""
    types: list[int] = []
    done: set[int] = set()
    malformed: list[int] = []
    sni: bytes | None = None
    alpn: tuple[bytes, ...] | None = None
    versions: _Ints | None = None
    sigalgs: _Ints | None = None
    groups: _Ints | None = None
    points: _Ints | None = None
    shares: _Ints | None = None
    while p < ext_end:
        q = p + 4
        if q > ext_end:
            if truncated:
                break
            raise ClientHelloError("an extension header overruns the extensions block")
        etype = b[p] << 8 | b[p + 1]
        e = q + (b[p + 2] << 8 | b[p + 3])
        if e > ext_end:
            if truncated:
                break
            raise ClientHelloError(f"extension `{etype:#06x}` overruns the extensions block")
        types.append(etype)
        p = e
        if etype not in _DECODED or etype in done:
            continue
        done.add(etype)
        try:
            if etype == EXT_SERVER_NAME:
                sni = _server_name(b, q, e)
            elif etype == EXT_ALPN:
                alpn = _alpn(b, q, e)
            elif etype == EXT_SUPPORTED_VERSIONS:
                versions = _u16_list(b, q, e, 1)
            elif etype == EXT_SIGNATURE_ALGORITHMS:
                sigalgs = _u16_list(b, q, e, 2)
            elif etype == EXT_SUPPORTED_GROUPS:
                groups = _u16_list(b, q, e, 2)
            elif etype == EXT_EC_POINT_FORMATS:
                points = _u8_list(b, q, e)
            else:
                shares = _key_share(b, q, e)
        except _Bad:
            malformed.append(etype)
    return (
        tuple(types), sni, alpn or (), versions or (), sigalgs or (), groups or (),
        points or (), shares or (), tuple(malformed),
    )


def _u16_list(b: memoryview, q: int, e: int, width: int) -> tuple[int, ...]:
    """A vector of uint16 with a `width`-byte length prefix that fills the body exactly."""
    if q + width > e:
        raise _Bad
    n = b[q] if width == 1 else b[q] << 8 | b[q + 1]
    if n & 1 or q + width + n != e:
        raise _Bad
    values: tuple[int, ...] = _unpack_from(f">{n >> 1}H", b, q + width)
    return values


def _u8_list(b: memoryview, q: int, e: int) -> tuple[int, ...]:
    if q + 1 > e or q + 1 + b[q] != e:
        raise _Bad
    return tuple(b[q + 1 : e])


def _server_name(b: memoryview, q: int, e: int) -> bytes:
    """The first host_name entry of a ServerNameList (RFC 6066 3)."""
    if q + 2 > e or q + 2 + (b[q] << 8 | b[q + 1]) != e:
        raise _Bad
    p = q + 2
    while p < e:
        if p + 3 > e:
            raise _Bad
        n = p + 3 + (b[p + 1] << 8 | b[p + 2])
        if n > e:
            raise _Bad
        if b[p] == 0:
            return bytes(b[p + 3 : n])
        p = n
    raise _Bad  # a list with no host_name


def _alpn(b: memoryview, q: int, e: int) -> tuple[bytes, ...]:
    """ProtocolNameList (RFC 7301 3.1); empty names are kept, JA4 needs to see them."""
    if q + 2 > e or q + 2 + (b[q] << 8 | b[q + 1]) != e:
        raise _Bad
    names: list[bytes] = []
    p = q + 2
    while p < e:
        n = p + 1 + b[p]
        if n > e:
            raise _Bad
        names.append(bytes(b[p + 1 : n]))
        p = n
    return tuple(names)


def _key_share(b: memoryview, q: int, e: int) -> tuple[int, ...]:
    """The groups of the KeyShareEntry list (RFC 8446 4.2.8), key bytes skipped."""
    if q + 2 > e or q + 2 + (b[q] << 8 | b[q + 1]) != e:
        raise _Bad
    groups: list[int] = []
    p = q + 2
    while p < e:
        if p + 4 > e:
            raise _Bad
        n = p + 4 + (b[p + 2] << 8 | b[p + 3])
        if n > e:
            raise _Bad
        groups.append(b[p] << 8 | b[p + 1])
        p = n
    return tuple(groups)
