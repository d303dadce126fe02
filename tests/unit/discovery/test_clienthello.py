"""ClientHello parsing: real stacks (Python ssl, openssl s_client, curl), framing, truncation."""

from __future__ import annotations

import dataclasses
import ssl
import time

import pytest
import tlsbuild as tb
from tlsclients import curl_hello, openssl_hello, python_hello

from agent.discovery import (
    ClientHello,
    ClientHelloError,
    looks_like_client_hello,
    normalize_hostname,
    parse_client_hello,
)

FFDHE8192 = 0x0104
X25519 = 0x001D
MANY_ALPN = [f"proto-{i:02d}-" + "x" * 180 for i in range(8)]  # ~1.5 KB of ALPN


@pytest.fixture(scope="module")
def real() -> dict[str, bytes]:
    """One ClientHello from each real client configuration the tests use."""
    return {
        "python": python_hello(alpn=["h2", "http/1.1"])[0],
        "python-big": python_hello("api.anthropic.com", alpn=MANY_ALPN)[0],
        "openssl": openssl_hello("-alpn", "h2,http/1.1"),
        "openssl-big": openssl_hello("-groups", "ffdhe8192:x25519", "-alpn", ",".join(MANY_ALPN),
                                     servername="api.anthropic.com"),
        "openssl-frag": openssl_hello("-groups", "ffdhe8192:x25519", "-max_send_frag", "512",
                                      servername="api.anthropic.com"),
        "curl": curl_hello(),
        "curl-ffdhe": curl_hello("--curves", "ffdhe8192:X25519"),
    }


# --- real stacks -----------------------------------------------------------------------


def test_python_ssl_fields_match_the_context_that_sent_them() -> None:
    wire, ctx = python_hello(alpn=["h2", "http/1.1"])
    h = parse_client_hello(wire)
    assert h.server_name == "api.openai.com"
    assert h.alpn == (b"h2", b"http/1.1")
    # OpenSSL lists the context's ciphers in priority order, then the renegotiation SCSV;
    # PSK and SRP suites stay off the wire without a PSK/SRP callback (some OpenSSL
    # builds, Debian's 3.0 among them, list them in get_ciphers()).
    sent = [c for c in ctx.get_ciphers() if not any(k in c.get("kea", "")
                                                    for k in ("psk", "srp"))]
    assert h.cipher_suites == (*(c["id"] & 0xFFFF for c in sent), 0x00FF)
    assert h.record_version == 0x0301 and h.legacy_version == 0x0303
    assert h.supported_versions[0] == 0x0304 and h.max_version == 0x0304
    assert h.key_share_groups and set(h.key_share_groups) <= set(h.supported_groups)
    assert 0 in h.ec_point_formats
    assert 0x0804 in h.signature_algorithms  # rsa_pss_rsae_sha256
    assert {0x0000, 0x0010, 0x002B, 0x0033, 0x000D} <= set(h.extensions)
    assert h.compression_methods == b"\x00"
    assert (h.records, h.truncated, h.quic, h.malformed_extensions) == (1, False, False, ())
    assert h.length == len(wire) - 9


def test_python_ssl_tls12_only() -> None:
    wire, _ = python_hello(maximum_version=ssl.TLSVersion.TLSv1_2,
                           ciphers="ECDHE-RSA-AES128-GCM-SHA256")
    h = parse_client_hello(wire)
    assert h.cipher_suites == (0xC02F, 0x00FF)
    assert 0x002B not in h.extensions and h.supported_versions == ()
    assert h.max_version == 0x0303


def test_python_ssl_without_sni() -> None:
    h = parse_client_hello(python_hello(None)[0])
    assert h.server_name is None and 0x0000 not in h.extensions


def test_python_ssl_large_hello(real: dict[str, bytes]) -> None:
    wire = real["python-big"]
    assert len(wire) > 1500
    h = parse_client_hello(wire)
    assert h.alpn == tuple(p.encode() for p in MANY_ALPN)
    assert h.server_name == "api.anthropic.com"


@pytest.mark.parametrize("name", ["openssl", "curl"])
def test_command_line_clients(real: dict[str, bytes], name: str) -> None:
    h = parse_client_hello(real[name])
    assert h.server_name == "api.openai.com"
    assert h.alpn == (b"h2", b"http/1.1")
    assert h.max_version == 0x0304 and not h.truncated


def test_openssl_large_hello_with_ffdhe8192_key_share(real: dict[str, bytes]) -> None:
    wire = real["openssl-big"]
    assert len(wire) > 2000
    h = parse_client_hello(wire)
    assert h.key_share_groups == (FFDHE8192,)
    assert h.server_name == "api.anthropic.com"
    assert len(h.alpn) == len(MANY_ALPN)


def test_openssl_sends_a_clienthello_over_several_records(real: dict[str, bytes]) -> None:
    # -max_send_frag 512 makes libssl itself fragment the 1.3 KB hello.
    h = parse_client_hello(real["openssl-frag"])
    assert h.records >= 3
    assert h.server_name == "api.anthropic.com"
    assert h.key_share_groups == (FFDHE8192,) and not h.truncated


def test_curl_with_ffdhe8192(real: dict[str, bytes]) -> None:
    h = parse_client_hello(real["curl-ffdhe"])
    assert h.key_share_groups == (FFDHE8192,)
    assert len(real["curl-ffdhe"]) > 1300


def test_every_real_hello_matches_the_prefix_rule(real: dict[str, bytes]) -> None:
    for name, wire in real.items():
        assert looks_like_client_hello(wire[:6]), name


# --- framing ---------------------------------------------------------------------------


def _same_but_records(a: ClientHello, b: ClientHello) -> bool:
    return dataclasses.replace(a, records=b.records) == b


@pytest.mark.parametrize("name", ["python", "python-big", "openssl-big", "curl"])
def test_reframed_into_two_records(real: dict[str, bytes], name: str) -> None:
    wire = real[name]
    whole = parse_client_hello(wire)
    body = len(tb.unframe(wire))
    for cut in (1, 2, 3, 4, 5, 40, body // 2, body - 1):
        h = parse_client_hello(tb.reframe(wire, [cut]))
        assert h.records == 2 and _same_but_records(whole, h), cut


def test_reframed_into_many_small_records(real: dict[str, bytes]) -> None:
    wire = real["openssl-big"]
    whole = parse_client_hello(wire)
    sizes = [1, 0, 3, 7] + [100] * 20  # a zero-length record in between is tolerated
    h = parse_client_hello(tb.reframe(wire, sizes))
    assert h.records > 20 and _same_but_records(whole, h)


def test_bytes_after_the_hello_are_ignored(real: dict[str, bytes]) -> None:
    wire = real["python"]
    tail = b"\x17\x03\x03\x00\x05hello"
    assert parse_client_hello(wire + tail) == parse_client_hello(wire)
    assert parse_client_hello(bytearray(wire)) == parse_client_hello(memoryview(wire))


def test_interleaved_non_handshake_record_is_an_error(real: dict[str, bytes]) -> None:
    msg = tb.unframe(real["python"])
    wire = tb.records(msg[:100]) + b"\x17\x03\x03\x00\x01x" + tb.records(msg[100:])
    with pytest.raises(ClientHelloError, match="interrupts the ClientHello"):
        parse_client_hello(wire)


# --- truncation ------------------------------------------------------------------------


@pytest.mark.parametrize("name", ["python", "openssl-frag", "curl"])
def test_truncated_at_every_offset(real: dict[str, bytes], name: str) -> None:
    wire = real[name]
    whole = parse_client_hello(wire)
    sni_at = whole.extensions.index(0x0000)
    partial = 0
    for cut in range(len(wire)):
        try:
            h = parse_client_hello(wire[:cut])
        except ClientHelloError as e:
            assert e.truncated, (cut, str(e))
            continue
        partial += 1
        assert h.truncated and h.length == whole.length
        assert h.cipher_suites == whole.cipher_suites
        assert h.extensions == whole.extensions[: len(h.extensions)]
        if len(h.extensions) > sni_at:
            assert h.server_name == whole.server_name
    assert partial > len(wire) // 2  # most cuts still yield the fixed fields and some extensions


def test_capture_bound_cuts_a_large_hello(real: dict[str, bytes]) -> None:
    wire = real["openssl-big"]
    h = parse_client_hello(wire[:1024])
    assert h.truncated and h.server_name == "api.anthropic.com"


# --- malformed input -------------------------------------------------------------------


def _hello(**kw: object) -> bytes:
    return tb.records(tb.handshake(**kw))  # type: ignore[arg-type]


def _grow(message: bytes, extra: bytes) -> bytes:
    """`extra` appended inside the handshake message (its length updated)."""
    body = message[4:] + extra
    return message[:1] + tb.u24(len(body)) + body


@pytest.mark.parametrize(
    ("wire", "message"),
    [
        (b"", "shorter than a TLS record header"),
        (b"GET / HTTP/1.1\r\n", "content type `0x47` is not handshake"),
        (b"\x16\x02\x00\x00\x04\x01\x00\x00\x00", "version `0x0200` is not TLS"),
        (b"\x16\x03\x01\x40\x01" + b"\x01" * 20, "length `16385` exceeds 16384"),
        (tb.records(b"\x02\x00\x00\x26" + b"\x00" * 38), "handshake type `2` is not client_hello"),
        (_hello(session_id=b"x" * 33), "session id length `33` exceeds 32"),
        (tb.records(tb.handshake()[:4 + 34] + b"\x00\x00\x03\x13\x01\x00\x01\x00"),
         "cipher suites length `3` is odd"),
        (tb.records(_grow(tb.handshake(extensions=[tb.sni(b"a.b")]), b"\x00\x01")),
         "2 bytes follow the extensions"),
        (tb.records(_grow(tb.handshake(extensions=None), b"\x00")),
         "extensions length overruns"),
    ],
)
def test_malformed_framing_raises(wire: bytes, message: str) -> None:
    with pytest.raises(ClientHelloError, match=message):
        parse_client_hello(wire)


def test_declared_lengths_that_disagree_are_errors_not_truncation() -> None:
    msg = bytearray(tb.handshake(extensions=[tb.sni(b"api.openai.com"), tb.alpn([b"h2"])]))
    msg[-7:-5] = b"\x00\xff"  # ALPN extension length now overruns the (complete) message
    with pytest.raises(ClientHelloError, match="overruns") as e:
        parse_client_hello(tb.records(bytes(msg)))
    assert not e.value.truncated


def test_malformed_extension_body_is_reported_and_skipped() -> None:
    exts = [tb.ext(0x0000, b"\x00\x05\x00\x00\x09abc"), tb.alpn([b"h2"]),
            tb.ext(0x000D, b"\x00\x03\x04\x03\x08"), tb.supported_versions([0x0304])]
    h = parse_client_hello(_hello(extensions=exts))
    assert h.malformed_extensions == (0x0000, 0x000D)
    assert h.server_name is None and h.signature_algorithms == ()
    assert h.alpn == (b"h2",) and h.supported_versions == (0x0304,)
    assert h.extensions == (0x0000, 0x0010, 0x000D, 0x002B)


def test_first_occurrence_of_a_duplicate_extension_wins() -> None:
    h = parse_client_hello(_hello(extensions=[tb.sni(b"api.openai.com"), tb.sni(b"evil.example")]))
    assert h.server_name == "api.openai.com" and h.extensions == (0, 0)


def test_rejected_server_name_keeps_the_raw_bytes() -> None:
    h = parse_client_hello(_hello(extensions=[tb.sni(b"bad host.example")]))
    assert h.server_name is None and h.rejected_server_name == b"bad host.example"


def test_hello_without_extensions() -> None:
    h = parse_client_hello(_hello(extensions=None, version=0x0301))
    assert h.extensions == () and h.max_version == 0x0301 and not h.truncated


@pytest.mark.parametrize(
    ("raw", "expected"),
    [
        (b"API.OpenAI.com", "api.openai.com"),
        (b"api.openai.com.", "api.openai.com"),
        (b"xn--bcher-kva.example", "xn--bcher-kva.example"),
        (b"_acme.x-y.example", "_acme.x-y.example"),
        (b"localhost", "localhost"),
        (b"a" * 63 + b".com", "a" * 63 + ".com"),
        (b"a" * 64 + b".com", None),
        (b"a." * 126 + b"a", "a." * 126 + "a"),  # 253 bytes
        (b"a." * 127, "a." * 126 + "a"),  # 253 bytes and the trailing dot
        (b"a." * 126 + b"ab", None),  # 254 bytes
        (b"a." * 127 + b"a", None),
        (b"a..b", None),
        (b"-a.com", None),
        (b"a-.com", None),
        (b"a b.com", None),
        (b"a\x00b.com", None),
        ("bücher.example".encode(), None),
        (b"", None),
        (b".", None),
    ],
)
def test_normalize_hostname(raw: bytes, expected: str | None) -> None:
    assert normalize_hostname(raw) == expected


# --- the prefix rule -------------------------------------------------------------------


@pytest.mark.parametrize(
    ("prefix", "expected"),
    [
        (b"\x16\x03\x01\x02\x00\x01", True),
        (b"\x16\x03\x04\x00\x01\x01", True),
        (b"\x16\x03\x03\x40\x00\x01", True),
        (b"\x16\x03\x01\x02\x00", False),  # too short
        (b"\x16\x03\x00\x02\x00\x01", False),  # SSL 3.0 record
        (b"\x16\x03\x05\x02\x00\x01", False),
        (b"\x16\x03\x01\x00\x00\x01", False),  # empty record
        (b"\x16\x03\x01\x40\x01\x01", False),  # longer than 2^14
        (b"\x16\x03\x01\x02\x00\x02", False),  # ServerHello
        (b"\x17\x03\x03\x02\x00\x01", False),  # application data
        (b"\x80\x2e\x01\x03\x01\x00", False),  # SSLv2-compatible hello
        (b"GET / HTTP/1.1\r\n", False),
        (b"SSH-2.0-OpenSSH_9.2", False),
        (b"", False),
    ],
)
def test_looks_like_client_hello(prefix: bytes, expected: bool) -> None:
    assert looks_like_client_hello(prefix) is expected
    assert looks_like_client_hello(memoryview(prefix)) is expected


# --- cost ------------------------------------------------------------------------------


def test_parse_cost_is_tens_of_microseconds(real: dict[str, bytes]) -> None:
    for name in ("python", "openssl-frag"):
        wire = real[name]
        n = 2000
        start = time.perf_counter()
        for _ in range(n):
            parse_client_hello(wire)
        per = (time.perf_counter() - start) / n
        assert per < 200e-6, f"{name}: {per * 1e6:.1f} us per parse"
