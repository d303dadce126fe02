"""JA4: FoxIO's published vectors, the spec's ALPN rules, and consistency on real handshakes.

Vectors: github.com/FoxIO-LLC/ja4 at commit 0e54bc8 (2026) —
`technical_details/JA4.md` (the worked example) and the expected outputs of
the Python reference, `python/test/testdata/<capture>.json` (keys `JA4.n`,
`JA4_r.n`, `JA4_o.n`, `JA4_ro.n`; file and stream cited per vector). The
captures themselves are not copied here: each ClientHello is rebuilt from the
published `JA4_ro` lists (ciphers, extensions and signature algorithms in wire
order), optionally with GREASE values added, and all four fingerprints must
come out as published.
"""

from __future__ import annotations

import hashlib
import ssl

import pytest
import tlsbuild as tb
from tlsclients import curl_hello, openssl_hello, python_hello

from agent.discovery import ja4, ja4_o, ja4_r, ja4_ro, parse_client_hello
from agent.discovery.ja4 import alpn_chars

# (source, SNI, first ALPN value, JA4, JA4_r, JA4_o, JA4_ro)
VECTORS = [
    ("JA4.md example; tls-handshake.pcapng.json stream 2", "accounts.google.com", b"h2",
     "t13d1516h2_8daaf6152771_e5627efa2ab1",
     "t13d1516h2_002f,0035,009c,009d,1301,1302,1303,c013,c014,c02b,c02c,c02f,c030,cca8,cca9_0005,000a,000b,000d,0012,0015,0017,001b,0023,002b,002d,0033,4469,ff01_0403,0804,0401,0503,0805,0501,0806,0601",
     "t13d1516h2_acb858a92679_18f69afefd3d",
     "t13d1516h2_1301,1302,1303,c02b,c02f,c02c,c030,cca9,cca8,c013,c014,009c,009d,002f,0035_001b,0000,0033,0010,4469,0017,002d,000d,0005,0023,0012,002b,ff01,000b,000a,0015_0403,0804,0401,0503,0805,0501,0806,0601"),
    ("tls-handshake.pcapng.json stream 6 (no ALPN)", "mtalk.google.com", b"",
     "t13d151400_8daaf6152771_de4a06bb82e3",
     "t13d151400_002f,0035,009c,009d,1301,1302,1303,c013,c014,c02b,c02c,c02f,c030,cca8,cca9_0005,000a,000b,000d,0012,0015,0017,001b,0023,002b,002d,0033,ff01_0403,0804,0401,0503,0805,0501,0806,0601",
     "t13d151400_acb858a92679_2f4561be1d1f",
     "t13d151400_1301,1302,1303,c02b,c02f,c02c,c030,cca9,cca8,c013,c014,009c,009d,002f,0035_0033,002b,001b,0000,0012,002d,000d,000a,0005,0023,0017,ff01,000b,0015_0403,0804,0401,0503,0805,0501,0806,0601"),
    ("tls-handshake.pcapng.json stream 19 (http/1.1)", "gateway.facebook.com", b"http/1.1",
     "t13d1516h1_8daaf6152771_e5627efa2ab1",
     "t13d1516h1_002f,0035,009c,009d,1301,1302,1303,c013,c014,c02b,c02c,c02f,c030,cca8,cca9_0005,000a,000b,000d,0012,0015,0017,001b,0023,002b,002d,0033,4469,ff01_0403,0804,0401,0503,0805,0501,0806,0601",
     "t13d1516h1_acb858a92679_4d217f5c60c0",
     "t13d1516h1_1301,1302,1303,c02b,c02f,c02c,c030,cca9,cca8,c013,c014,009c,009d,002f,0035_0012,4469,0010,000a,002b,0033,001b,0017,0023,000b,0000,0005,ff01,002d,000d,0015_0403,0804,0401,0503,0805,0501,0806,0601"),
    ("tls-handshake.pcapng.json stream 31 (pre_shared_key)", "edge-chat.facebook.com", b"http/1.1",
     "t13d1517h1_8daaf6152771_6cdcb247c39b",
     "t13d1517h1_002f,0035,009c,009d,1301,1302,1303,c013,c014,c02b,c02c,c02f,c030,cca8,cca9_0005,000a,000b,000d,0012,0015,0017,001b,0023,0029,002b,002d,0033,4469,ff01_0403,0804,0401,0503,0805,0501,0806,0601",
     "t13d1517h1_acb858a92679_98b2855b1dea",
     "t13d1517h1_1301,1302,1303,c02b,c02f,c02c,c030,cca9,cca8,c013,c014,009c,009d,002f,0035_0000,0017,0005,002b,0012,0023,000a,0033,0010,002d,001b,4469,000b,000d,ff01,0015,0029_0403,0804,0401,0503,0805,0501,0806,0601"),
    ("tls-handshake.pcapng.json stream 41, JA4.1", "js.monitor.azure.com", b"h2",
     "t13d1516h2_8daaf6152771_e5627efa2ab1",
     "t13d1516h2_002f,0035,009c,009d,1301,1302,1303,c013,c014,c02b,c02c,c02f,c030,cca8,cca9_0005,000a,000b,000d,0012,0015,0017,001b,0023,002b,002d,0033,4469,ff01_0403,0804,0401,0503,0805,0501,0806,0601",
     "t13d1516h2_acb858a92679_5ec2817d7b86",
     "t13d1516h2_1301,1302,1303,c02b,c02f,c02c,c030,cca9,cca8,c013,c014,009c,009d,002f,0035_0012,000d,001b,002b,0000,4469,0023,ff01,0033,000a,0017,002d,000b,0010,0005,0015_0403,0804,0401,0503,0805,0501,0806,0601"),
    ("badcurveball.pcap.json stream 0", "bad.curveballtest.com", b"h2",
     "t13d1615h2_46e7e9700bed_45f260be83e2",
     "t13d1615h2_000a,002f,0035,009c,009d,1301,1302,1303,c013,c014,c02b,c02c,c02f,c030,cca8,cca9_0005,000a,000b,000d,0012,0015,0017,001b,0023,002b,002d,0033,ff01_0403,0804,0401,0503,0805,0501,0806,0601,0201",
     "t13d1615h2_45f31bb0a5cc_b0e5d31d5128",
     "t13d1615h2_1301,1302,1303,c02b,c02f,c02c,c030,cca9,cca8,c013,c014,009c,009d,002f,0035,000a_0000,0017,ff01,000a,000b,0023,0010,0005,000d,0012,0033,002d,002b,001b,0015_0403,0804,0401,0503,0805,0501,0806,0601,0201"),
    ("tls12.pcap.json stream 0 (Firefox)", "contile.services.mozilla.com", b"h2",
     "t13d1715h2_5b57614c22b0_3d5424432f57",
     "t13d1715h2_002f,0035,009c,009d,1301,1302,1303,c009,c00a,c013,c014,c02b,c02c,c02f,c030,cca8,cca9_0005,000a,000b,000d,0015,0017,001c,0022,0023,002b,002d,0033,ff01_0403,0503,0603,0804,0805,0806,0401,0501,0601,0203,0201",
     "t13d1715h2_5b234860e130_014157ec0da2",
     "t13d1715h2_1301,1303,1302,c02b,c02f,cca9,cca8,c02c,c030,c00a,c009,c013,c014,009c,009d,002f,0035_0000,0017,ff01,000a,000b,0023,0010,0005,0022,0033,002b,000d,002d,001c,0015_0403,0503,0603,0804,0805,0806,0401,0501,0601,0203,0201"),
    ("macos_tcp_flags.pcap.json stream 0 (a repeated signature algorithm)", "venarisecurity.com",
     b"h2",
     "t13d2613h2_2802a3db6c62_845d286b0d67",
     "t13d2613h2_000a,002f,0035,003c,003d,009c,009d,1301,1302,1303,c008,c009,c00a,c012,c013,c014,c023,c024,c027,c028,c02b,c02c,c02f,c030,cca8,cca9_0005,000a,000b,000d,0012,0015,0017,002b,002d,0033,ff01_0403,0804,0401,0503,0203,0805,0805,0501,0806,0601,0201",
     "t13d2613h2_78a7dc604b78_93870a65b655",
     "t13d2613h2_1301,1302,1303,c02c,c02b,c024,c023,c00a,c009,cca9,c030,c02f,c028,c027,c014,c013,cca8,009d,009c,003d,003c,0035,002f,c008,c012,000a_ff01,0000,0017,000d,0005,0012,0010,000b,0033,002d,002b,000a,0015_0403,0804,0401,0503,0203,0805,0805,0501,0806,0601,0201"),
    ("ipv6.pcapng.json stream 0 (TLS 1.2, 46 ciphers)", "www.cloudflare.com", b"h2",
     "t12d4605h2_85626a9a5f7f_aaf95bb78ec9",
     "t12d4605h2_0004,0005,000a,0016,002f,0033,0035,0039,003c,003d,0041,0045,0067,006b,0081,0084,0088,009c,009d,009e,009f,00ba,00be,00c0,00c4,00ff,c007,c008,c009,c00a,c011,c012,c013,c014,c023,c024,c027,c028,c02b,c02c,c02f,c030,cca8,cca9,ccaa,ff85_000a,000b,000d_0601,0603,efef,0501,0503,0401,0403,eeee,eded,0301,0303,0201,0203",
     "t12d4605h2_644f5d117d98_094daec7ec8d",
     "t12d4605h2_c030,c02c,c028,c024,c014,c00a,009f,006b,0039,cca9,cca8,ccaa,ff85,00c4,0088,0081,009d,003d,0035,00c0,0084,c02f,c02b,c027,c023,c013,c009,009e,0067,0033,00be,0045,009c,003c,002f,00ba,0041,c011,c007,0005,0004,c012,c008,0016,000a,00ff_0000,000b,000a,000d,0010_0601,0603,efef,0501,0503,0401,0403,eeee,eded,0301,0303,0201,0203"),
    ("latest.pcapng.json stream 3 (TLS 1.2, no ALPN)", "discovery.cem.cloud.us", b"",
     "t12d190800_d83cc789557e_7af1ed941c26",
     "t12d190800_000a,002f,0035,003c,003d,009c,009d,c009,c00a,c013,c014,c023,c024,c027,c028,c02b,c02c,c02f,c030_0005,000a,000b,000d,0017,0023,ff01_0804,0805,0806,0401,0501,0201,0403,0503,0203,0202,0601,0603",
     "t12d190800_e8d5f427a2c5_5e98404dd3cc",
     "t12d190800_c02c,c02b,c030,c02f,c024,c023,c028,c027,c00a,c009,c014,c013,009d,009c,003d,003c,0035,002f,000a_0000,0005,000a,000b,000d,0023,0017,ff01_0804,0805,0806,0401,0501,0201,0403,0503,0203,0202,0601,0603"),
    ("ssh2.pcapng.json stream 8 (TLS 1.2)",
     "mcs2-cloudstation-eu-west-1.prod.hydra.sophos.com", b"h2",
     "t12d1909h2_d83cc789557e_7af1ed941c26",
     "t12d1909h2_000a,002f,0035,003c,003d,009c,009d,c009,c00a,c013,c014,c023,c024,c027,c028,c02b,c02c,c02f,c030_0005,000a,000b,000d,0017,0023,ff01_0804,0805,0806,0401,0501,0201,0403,0503,0203,0202,0601,0603",
     "t12d1909h2_e8d5f427a2c5_5da3d607c71a",
     "t12d1909h2_c02c,c02b,c030,c02f,c024,c023,c028,c027,c00a,c009,c014,c013,009d,009c,003d,003c,0035,002f,000a_0000,0005,000a,000b,000d,0023,0010,0017,ff01_0804,0805,0806,0401,0501,0201,0403,0503,0203,0202,0601,0603"),
    ("https3-301-get.pcap.json stream 0 (TLS 1.0, only SNI: c is empty)", "www.github.com", b"",
     "t10d230100_6a57a6f57151_000000000000",
     "t10d230100_0003,0004,0005,0006,0008,0009,000a,0011,0012,0013,0014,0015,0016,002f,0032,0033,0035,0038,0039,0096,0099,009a,00ff_",
     "t10d230100_ce175d585f73_000000000000",
     "t10d230100_0039,0038,0035,0016,0013,000a,0033,0032,002f,009a,0099,0096,0005,0004,0015,0012,0009,0014,0011,0008,0006,0003,00ff_0000"),
    ("tls3.pcapng.json stream 9", "darksail.ai", b"h2",
     "t13d1516h2_8daaf6152771_9b887d9acb53",
     "t13d1516h2_002f,0035,009c,009d,1301,1302,1303,c013,c014,c02b,c02c,c02f,c030,cca8,cca9_0005,000a,000b,000d,0012,0017,001b,0023,0029,002b,002d,0033,4469,ff01_0403,0804,0401,0503,0805,0501,0806,0601",
     "t13d1516h2_acb858a92679_01fb3542df69",
     "t13d1516h2_1301,1302,1303,c02b,c02f,c02c,c030,cca9,cca8,c013,c014,009c,009d,002f,0035_0033,000a,0005,000d,0012,0000,0010,002b,0023,001b,0017,002d,ff01,4469,000b,0029_0403,0804,0401,0503,0805,0501,0806,0601"),
]

# tls-non-ascii-alpn.pcapng.json stream 0: the first ALPN value on the wire is 0xba 0xad.
# FoxIO's programs print `99` for it (their older rule); JA4.md says "if the first or last
# byte of the first ALPN is not an ASCII alphanumeric character ... print the first and last
# characters of the hex representation": "baad" -> "bd". We follow the text; b and c match.
NON_ASCII_ALPN = (
    "tls-non-ascii-alpn.pcapng.json stream 0", "clientservices.googleapis.com", b"\xba\xad",
    "t13d151699_8daaf6152771_e5627efa2ab1",
    "t13d151699_002f,0035,009c,009d,1301,1302,1303,c013,c014,c02b,c02c,c02f,c030,cca8,cca9_0005,000a,000b,000d,0012,0015,0017,001b,0023,002b,002d,0033,4469,ff01_0403,0804,0401,0503,0805,0501,0806,0601",
    "t13d151699_acb858a92679_8fc3c02244b2",
    "t13d151699_1301,1302,1303,c02b,c02f,c02c,c030,cca9,cca8,c013,c014,009c,009d,002f,0035_ff01,0033,002d,0005,4469,000d,0010,0023,001b,002b,0000,0012,000a,0017,000b,0015_0403,0804,0401,0503,0805,0501,0806,0601",
)


def _rebuild(vector: tuple[str, ...], *, grease: bool) -> bytes:
    """A ClientHello carrying the vector's JA4_ro lists, in that order."""
    _, host, first_alpn, *_, ro = vector
    parts = ro.split("_")
    a, ciphers, exts = parts[0], parts[1], parts[2]
    sigs = parts[3] if len(parts) > 3 else ""

    def ints(text: str) -> list[int]:
        return [int(x, 16) for x in text.split(",")] if text else []

    return tb.hello_from_lists(
        version=a[1:3], ciphers=ints(ciphers), extensions=ints(exts), sigalgs=ints(sigs),
        host=str(host).encode(), first_alpn=bytes(first_alpn), grease=grease,  # type: ignore[arg-type]
    )


@pytest.mark.parametrize("grease", [False, True], ids=["plain", "grease"])
@pytest.mark.parametrize("vector", VECTORS, ids=[v[0] for v in VECTORS])
def test_foxio_vectors(vector: tuple[str, ...], grease: bool) -> None:
    _, host, _, want, want_r, want_o, want_ro = vector
    h = parse_client_hello(_rebuild(vector, grease=grease))
    assert h.server_name == host or "0000" not in want_ro
    assert (ja4(h), ja4_r(h), ja4_o(h), ja4_ro(h)) == (want, want_r, want_o, want_ro)


def test_foxio_non_ascii_alpn_vector_follows_the_spec_text() -> None:
    _, _, _, want, want_r, want_o, want_ro = NON_ASCII_ALPN
    h = parse_client_hello(_rebuild(NON_ASCII_ALPN, grease=True))
    assert h.alpn[0] == b"\xba\xad"
    spec = [s.replace("t13d151699", "t13d1516bd") for s in (want, want_r, want_o, want_ro)]
    assert [ja4(h), ja4_r(h), ja4_o(h), ja4_ro(h)] == spec


def test_spec_extension_hash_without_signature_algorithms() -> None:
    # JA4.md: "0005,000a,...,4469,ff01 = 6d807ffa2a79" — no `_` when there are none.
    text = "0005,000a,000b,000d,0012,0015,0017,001b,0023,002b,002d,0033,4469,ff01"
    assert hashlib.sha256(text.encode()).hexdigest()[:12] == "6d807ffa2a79"
    exts = [0x001B, 0x0000, 0x0033, 0x0010, 0x4469, 0x0017, 0x002D, 0x000D, 0x0005, 0x0023,
            0x0012, 0x002B, 0xFF01, 0x000B, 0x000A, 0x0015]
    h = parse_client_hello(tb.hello_from_lists(version="13", ciphers=[0x1301], extensions=exts,
                                               sigalgs=[]))
    assert h.signature_algorithms == ()
    assert ja4(h).endswith("_6d807ffa2a79")
    assert ja4_r(h).endswith("_" + text)


@pytest.mark.parametrize(
    ("first", "chars"),
    [  # JA4.md, "ALPN Extension Value"
        (b"h2", "h2"), (b"http/1.1", "h1"), (b"", "00"), (b"h", "hh"),
        (b"\xab", "ab"), (b"\x20", "20"), (b"\xab\xcd", "ad"), (b"\x20\x61", "21"),
        (b"\x30\xab", "3b"), (b"\x61\x20", "60"), (b"\x30\x31\xab\xcd", "3d"),
        (b"\x30\xab\xcd\x31", "01"),
    ],
)
def test_alpn_characters(first: bytes, chars: str) -> None:
    assert alpn_chars(first) == chars


def test_counts_cap_at_99_and_empty_lists_hash_to_zeros() -> None:
    many = tb.records(tb.handshake(ciphers=range(1, 121), extensions=[
        tb.ext(0x1000 + i) for i in range(120)]))
    assert ja4(parse_client_hello(many)).startswith("t12i9999")
    bare = parse_client_hello(tb.records(tb.handshake(ciphers=[], extensions=None)))
    assert ja4(bare) == "t12i000000_000000000000_000000000000"
    assert ja4_r(bare) == "t12i000000__"


@pytest.mark.parametrize(
    ("versions", "legacy", "part"),
    [
        ((), 0x0302, "11"),
        ((0x2A2A,), 0x0303, "12"),  # only GREASE: the legacy version counts
        ((0x7F17, 0x0304), 0x0303, "00"),  # a draft version is the highest, and unknown
        ((0x0303, 0x0304, 0x0302), 0x0303, "13"),
        ((), 0x0300, "s3"),
        ((), 0x1234, "00"),
    ],
)
def test_version(versions: tuple[int, ...], legacy: int, part: str) -> None:
    exts = [tb.supported_versions(versions)] if versions else []
    h = parse_client_hello(tb.records(tb.handshake(version=legacy, extensions=exts)))
    assert ja4(h)[1:3] == part


# --- real handshakes -------------------------------------------------------------------


def _check_consistent(wire: bytes) -> str:
    """The four variants agree with each other on a real ClientHello; return JA4."""
    h = parse_client_hello(wire)
    a, b, c = ja4(h).split("_")
    ra, rb, *rc = ja4_r(h).split("_")
    oa, ob, *oc = ja4_ro(h).split("_")
    assert a == ra == oa == ja4_o(h).split("_")[0]
    assert b == hashlib.sha256(rb.encode()).hexdigest()[:12]
    assert c == hashlib.sha256("_".join(rc).encode()).hexdigest()[:12]
    assert rb == ",".join(sorted(ob.split(",")))
    kept = sorted(e for e in oc[0].split(",") if e not in ("0000", "0010"))
    assert rc[0] == ",".join(kept) and rc[1:] == oc[1:]
    assert int(a[4:6]) == len(ob.split(",")) and int(a[6:8]) == len(oc[0].split(","))
    return ja4(h)


def test_real_clients_are_self_consistent() -> None:
    for wire in (python_hello(alpn=["h2", "http/1.1"])[0], openssl_hello("-alpn", "h2"),
                 curl_hello(), openssl_hello("-max_send_frag", "512", "-groups", "ffdhe8192")):
        assert _check_consistent(wire).startswith("t13d")


def test_real_client_fingerprint_is_stable_and_tracks_configuration() -> None:
    base = ja4(parse_client_hello(python_hello(alpn=["h2"])[0]))
    assert base == ja4(parse_client_hello(python_hello("api.anthropic.com", alpn=["h2"])[0]))
    no_sni = ja4(parse_client_hello(python_hello(None, alpn=["h2"])[0]))
    http1 = ja4(parse_client_hello(python_hello(alpn=["http/1.1"])[0]))
    tls12 = ja4(parse_client_hello(
        python_hello(alpn=["h2"], maximum_version=ssl.TLSVersion.TLSv1_2)[0]))
    # Without SNI: `i` and one extension fewer, same b and c (SNI is not in c).
    assert no_sni[3] == "i" and int(no_sni[6:8]) == int(base[6:8]) - 1
    assert no_sni.split("_")[1:] == base.split("_")[1:]
    # Another ALPN: only the two ALPN characters change.
    assert http1 == base[:8] + "h1" + base[10:]
    # TLS 1.2 only: other version, fewer ciphers, other extensions.
    assert tls12[1:3] == "12" and tls12.split("_")[1] != base.split("_")[1]
