"""Coverage-guided fuzzing of the ClientHello parser with atheris (libFuzzer).

Not collected by pytest (the CI-size property run is
`tests/unit/discovery/test_fuzz_clienthello.py`); run by hand or nightly:

    .venv/bin/python tests/fuzz/fuzz_clienthello.py --seeds /tmp/ch-corpus
    .venv/bin/python tests/fuzz/fuzz_clienthello.py /tmp/ch-corpus -max_total_time=300

The first command writes real ClientHellos from Python's ssl (several
configurations, one split over records) as the starting corpus. Any exception
other than `ClientHelloError` from the parser, or any exception at all from
JA4 or the catalog on a parsed result, is a crash that libFuzzer reports with
the input that caused it.
"""

from __future__ import annotations

import contextlib
import ssl
import sys
from pathlib import Path

import atheris

with atheris.instrument_imports():
    from agent.discovery.catalog import Catalog
    from agent.discovery.clienthello import parse_client_hello
    from agent.discovery.errors import ClientHelloError
    from agent.discovery.ja4 import ja4, ja4_o, ja4_r, ja4_ro

_CATALOG = Catalog.builtin()


def test_one_input(data: bytes) -> None:
    try:
        hello = parse_client_hello(data)
    except ClientHelloError:
        return
    for fingerprint in (ja4, ja4_r, ja4_o, ja4_ro):
        fingerprint(hello)
    if hello.server_name is not None:
        _CATALOG.match(hello.server_name)


def _python_hello(host: str | None, alpn: list[str], tls12: bool = False) -> bytes:
    ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)
    ctx.check_hostname = False
    ctx.verify_mode = ssl.CERT_NONE
    if alpn:
        ctx.set_alpn_protocols(alpn)
    if tls12:
        ctx.maximum_version = ssl.TLSVersion.TLSv1_2
    out = ssl.MemoryBIO()
    obj = ctx.wrap_bio(ssl.MemoryBIO(), out, server_hostname=host)
    with contextlib.suppress(ssl.SSLWantReadError):
        obj.do_handshake()
    return out.read()


def write_seeds(directory: Path) -> None:
    directory.mkdir(parents=True, exist_ok=True)
    hellos = [
        _python_hello("api.openai.com", ["h2", "http/1.1"]),
        _python_hello(None, []),
        _python_hello("x.openai.azure.com", ["http/1.1"], tls12=True),
        _python_hello("api.anthropic.com", [f"proto{i}" * 20 for i in range(10)]),
    ]
    first = hellos[0]
    message = first[5:]
    split = b"".join(  # the first hello again, as three records
        first[:3] + len(part).to_bytes(2, "big") + part
        for part in (message[:2], message[2:200], message[200:])
    )
    for i, data in enumerate([*hellos, split]):
        (directory / f"seed-{i}").write_bytes(data)


def main() -> None:
    if len(sys.argv) == 3 and sys.argv[1] == "--seeds":
        write_seeds(Path(sys.argv[2]))
        return
    atheris.Setup(sys.argv, test_one_input)
    atheris.Fuzz()


if __name__ == "__main__":
    main()
