"""Fuzzing the ClientHello parser (and what consumes its output) with hypothesis.

The only exception allowed out of `parse_client_hello` is `ClientHelloError`;
whatever it returns must go through JA4 and the catalog without raising.
Inputs are structured mutations of real ClientHellos (Python ssl, openssl,
curl, synthetic GREASE-laden ones, multi-record ones): flipped bytes,
overwritten length fields, truncation, insertions and deletions, duplicated
regions, random extension lists and bodies, random record framing. The CI size
runs in well under a minute; `MANUL_FUZZ_SCALE=20` makes a long run.
`tests/fuzz/fuzz_clienthello.py` is the coverage-guided (atheris) companion.
"""

from __future__ import annotations

import contextlib
import functools
import os

import tlsbuild as tb
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from tlsclients import curl_hello, openssl_hello, python_hello

from agent.discovery import (
    Catalog,
    CatalogError,
    ClientHello,
    ClientHelloError,
    ja4,
    ja4_o,
    ja4_r,
    ja4_ro,
    normalize_hostname,
    parse_client_hello,
    validate_pattern,
)

_SCALE = int(os.environ.get("MANUL_FUZZ_SCALE", "1"))
_CATALOG = Catalog.builtin()


def _settings(n: int) -> settings:
    return settings(max_examples=n * _SCALE, deadline=None, database=None,
                    suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large])


@functools.cache
def seeds() -> tuple[bytes, ...]:
    chrome_like = tb.hello_from_lists(
        version="13", grease=True, host=b"api.openai.com",
        ciphers=[0x1301, 0x1302, 0x1303, 0xC02B, 0xC02F, 0xC02C, 0xC030, 0xCCA9, 0xCCA8],
        extensions=[0x001B, 0x0000, 0x0033, 0x0010, 0x4469, 0x0017, 0x002D, 0x000D, 0x0005,
                    0x0023, 0x0012, 0x002B, 0xFF01, 0x000B, 0x000A, 0x0015],
        sigalgs=[0x0403, 0x0804, 0x0401, 0x0503, 0x0805, 0x0501, 0x0806, 0x0601],
    )
    python = python_hello(alpn=["h2", "http/1.1"])[0]
    return (
        python,
        python_hello(None)[0],
        python_hello("api.anthropic.com", alpn=[f"p{i}" * 40 for i in range(12)])[0],
        openssl_hello("-alpn", "h2"),
        openssl_hello("-groups", "ffdhe8192:x25519", "-max_send_frag", "512"),
        curl_hello(),
        chrome_like,
        tb.reframe(python, [3, 60, 200]),
    )


def check(data: bytes) -> ClientHello | None:
    """Parse; on success, use the result the way discovery does."""
    try:
        hello = parse_client_hello(data)
    except ClientHelloError:
        return None
    for fingerprint in (ja4, ja4_r, ja4_o, ja4_ro):
        assert fingerprint(hello).startswith("t")
    if hello.server_name is not None:
        assert normalize_hostname(hello.server_name.encode()) == hello.server_name
        _CATALOG.match(hello.server_name)
    assert all(0 <= v <= 0xFFFF for v in hello.cipher_suites + hello.extensions)
    assert set(hello.malformed_extensions) <= set(hello.extensions)
    return hello


# --- mutations of real ClientHellos ----------------------------------------------------

_LENGTHS = st.sampled_from([0, 1, 2, 3, 4, 5, 0x7F, 0x80, 0xFF, 0x100, 0x3FFF, 0x4000, 0x4001,
                            0x7FFF, 0xFFFE, 0xFFFF]) | st.integers(0, 0xFFFF)


@st.composite
def mutated(draw: st.DrawFn) -> bytes:
    data = bytearray(draw(st.sampled_from(seeds())))
    for _ in range(draw(st.integers(1, 8))):
        if not data:
            break
        at = draw(st.integers(0, len(data) - 1))
        kind = draw(st.sampled_from(["flip", "len16", "len24", "cut", "insert", "delete", "dup"]))
        if kind == "flip":
            data[at] ^= draw(st.integers(1, 255))
        elif kind == "len16":
            data[at : at + 2] = draw(_LENGTHS).to_bytes(2, "big")
        elif kind == "len24":
            data[at : at + 3] = draw(st.integers(0, 0xFFFFFF)).to_bytes(3, "big")
        elif kind == "cut":
            del data[at:]
        elif kind == "insert":
            data[at:at] = draw(st.binary(max_size=16))
        elif kind == "delete":
            del data[at : at + draw(st.integers(1, 64))]
        else:
            end = draw(st.integers(at, min(len(data), at + 300)))
            data[at:at] = data[at:end] * draw(st.integers(1, 4))
    return bytes(data)


@_settings(6000)
@given(mutated())
def test_mutated_real_hellos(data: bytes) -> None:
    check(data)


# --- random structure ------------------------------------------------------------------

_KNOWN = st.sampled_from([0x0000, 0x000A, 0x000B, 0x000D, 0x0010, 0x002B, 0x0033, 0x0015,
                          0x0029, 0xFF01, 0x0A0A])


@st.composite
def structured(draw: st.DrawFn) -> bytes:
    exts: list[bytes] = []
    for _ in range(draw(st.integers(0, 12))):
        etype = draw(_KNOWN | st.integers(0, 0xFFFF))
        if draw(st.booleans()):
            body = draw(st.binary(max_size=80))
        elif etype == 0x0000:
            body = tb.sni(draw(st.binary(max_size=70)))[4:]
        elif etype == 0x0010:
            body = tb.alpn(draw(st.lists(st.binary(max_size=12), max_size=6)))[4:]
        else:
            body = tb.vec16(tb.u16s(draw(st.lists(st.integers(0, 0xFFFF), max_size=20))))
        exts.append(tb.ext(etype, body))
    message = tb.handshake(
        version=draw(_LENGTHS),
        ciphers=draw(st.lists(st.integers(0, 0xFFFF), max_size=40)),
        extensions=None if draw(st.integers(0, 9)) == 0 else exts,
        session_id=draw(st.binary(max_size=32)),
        compression=draw(st.binary(max_size=3)),
    )
    sizes = draw(st.lists(st.integers(0, 400), max_size=6))
    wire = tb.records(message, sizes, draw(st.sampled_from([0x0301, 0x0303, 0x0300, 0x0304])))
    return wire[: draw(st.integers(0, len(wire)))] if draw(st.booleans()) else wire


@_settings(3000)
@given(structured())
def test_random_structure(data: bytes) -> None:
    hello = check(data)
    if hello is not None:
        assert hello.records >= 1


@_settings(1000)
@given(st.binary(max_size=1500))
def test_random_bytes_behind_a_valid_prefix(tail: bytes) -> None:
    check(b"\x16\x03\x01" + tail[:2] + b"\x01" + tail[2:])
    check(tail)


# --- exhaustive small edits ------------------------------------------------------------


def test_every_truncation_of_every_seed() -> None:
    for seed in seeds():
        for cut in range(len(seed)):
            try:
                hello = parse_client_hello(seed[:cut])
            except ClientHelloError as e:
                assert e.truncated, (cut, str(e))
            else:
                assert hello.truncated
                check(seed[:cut])


def test_every_byte_set_to_extreme_values() -> None:
    for seed in seeds()[:4]:
        for at in range(len(seed)):
            for value in (0x00, 0xFF, (seed[at] + 1) & 0xFF):
                check(seed[:at] + bytes([value]) + seed[at + 1 :])


# --- the catalog takes attacker-chosen names too ---------------------------------------


@_settings(1000)
@given(st.text(max_size=300) | st.from_regex(r"[a-z0-9*.-]{0,80}", fullmatch=True))
def test_catalog_takes_any_text(text: str) -> None:
    _CATALOG.match(text)
    with contextlib.suppress(CatalogError):
        validate_pattern(text)
