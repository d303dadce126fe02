"""JA4, the TLS client fingerprint, of a parsed `ClientHello`.

Called by the discovery consumer for each handshake it records (the inventory
keeps JA4s per workload) and by `manul discover --json`. Implemented from
FoxIO's specification, `technical_details/JA4.md` in github.com/FoxIO-LLC/ja4
(JA4 for TLS clients is BSD-3-Clause, Copyright (c) FoxIO). Only JA4 is here:
the other JA4+ methods (JA4S, JA4H, JA4X, ...) are under a different license
and must not be added.

    ja4    = a_b_c, e.g. t13d1516h2_8daaf6152771_e5627efa2ab1
    a      = t (TCP; q for QUIC) + version + d|i (SNI extension present or not)
             + 2-digit cipher count + 2-digit extension count (GREASE excluded,
             capped at 99) + first and last character of the first ALPN value
    b      = sha256 of the sorted cipher list (4 hex digits each, comma-joined),
             first 12 hex characters
    c      = the same of the sorted extension list without SNI (0000) and ALPN
             (0010), then `_` and the signature algorithms in wire order (the
             `_` only when there are any)
    ja4_r  = a with b and c unhashed; ja4_o / ja4_ro = the same in wire order,
             SNI and ALPN kept

GREASE values (RFC 8701) are dropped everywhere. An empty list hashes to
`000000000000`. For a truncated ClientHello (`hello.truncated`) the
fingerprint covers only what arrived and is not comparable with others.

Where FoxIO's reference programs disagree with the text, the text wins and the
tests say so: a first ALPN value whose first or last byte is not an ASCII
letter or digit gives the first and last hex digit of the value (the programs
print `99`). Where the text is silent the Python reference's published
outputs decide: `ja4_o`'s c is `000000000000` whenever JA4's own c list
(extensions without SNI/ALPN, plus signature algorithms) is empty, even if the
wire-order list still holds SNI or ALPN.
"""

from __future__ import annotations

import struct
from hashlib import sha256

from agent.discovery.clienthello import EXT_ALPN, EXT_SERVER_NAME, ClientHello, is_grease

_VERSIONS = {
    0x0304: "13", 0x0303: "12", 0x0302: "11", 0x0301: "10", 0x0300: "s3", 0x0002: "s2",
    0xFEFF: "d1", 0xFEFD: "d2", 0xFEFC: "d3",
}
_ALNUM = frozenset(b"0123456789ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz")
_EMPTY = "000000000000"


def ja4(hello: ClientHello) -> str:
    """The JA4 fingerprint: sorted lists, hashed."""
    ciphers, exts, empty = _lists(hello, original=False)
    return f"{_part_a(hello)}_{_hash12(ciphers)}_{_EMPTY if empty else _hash12(exts)}"


def ja4_r(hello: ClientHello) -> str:
    """JA4 raw: sorted lists, unhashed."""
    ciphers, exts, _ = _lists(hello, original=False)
    return f"{_part_a(hello)}_{ciphers}_{exts}"


def ja4_o(hello: ClientHello) -> str:
    """JA4 original order: wire-order lists (SNI and ALPN kept), hashed."""
    ciphers, exts, empty = _lists(hello, original=True)
    return f"{_part_a(hello)}_{_hash12(ciphers)}_{_EMPTY if empty else _hash12(exts)}"


def ja4_ro(hello: ClientHello) -> str:
    """JA4 raw, original order: wire-order lists, unhashed."""
    ciphers, exts, _ = _lists(hello, original=True)
    return f"{_part_a(hello)}_{ciphers}_{exts}"


def alpn_chars(first: bytes) -> str:
    """The two ALPN characters of part a for the first ALPN value (b"" when none)."""
    if not first:
        return "00"
    if first[0] in _ALNUM and first[-1] in _ALNUM:
        return chr(first[0]) + chr(first[-1])
    digits = first.hex()
    return digits[0] + digits[-1]


def _part_a(hello: ClientHello) -> str:
    kind = "q" if hello.quic else "t"
    version = _VERSIONS.get(hello.max_version, "00")
    sni = "d" if EXT_SERVER_NAME in hello.extensions else "i"
    ciphers = min(99, sum(1 for c in hello.cipher_suites if not is_grease(c)))
    exts = min(99, sum(1 for e in hello.extensions if not is_grease(e)))
    alpn = alpn_chars(hello.alpn[0] if hello.alpn else b"")
    return f"{kind}{version}{sni}{ciphers:02d}{exts:02d}{alpn}"


def _lists(hello: ClientHello, *, original: bool) -> tuple[str, str, bool]:
    """(cipher list, extension list [+ `_` + signature algorithms], c-is-empty) as JA4 writes them.

    c-is-empty: no extension but SNI/ALPN and no signature algorithm, which makes
    part c `000000000000` in every variant.
    """
    ciphers = [c for c in hello.cipher_suites if not is_grease(c)]
    kept = [
        e for e in hello.extensions
        if e not in (EXT_SERVER_NAME, EXT_ALPN) and not is_grease(e)
    ]
    if original:
        exts = [e for e in hello.extensions if not is_grease(e)]
    else:
        ciphers.sort()
        kept.sort()
        exts = kept
    sigs = [s for s in hello.signature_algorithms if not is_grease(s)]
    ext_text = _hex_list(exts)
    if sigs:
        ext_text = f"{ext_text}_{_hex_list(sigs)}"
    return _hex_list(ciphers), ext_text, not kept and not sigs


def _hex_list(values: list[int]) -> str:
    """[0x1301, 0xc02b] -> "1301,c02b"."""
    return struct.pack(f">{len(values)}H", *values).hex(",", 2)


def _hash12(text: str) -> str:
    return sha256(text.encode("ascii")).hexdigest()[:12] if text else _EMPTY
