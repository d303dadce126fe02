"""JA4 on FoxIO's own packet captures, compared with their published outputs.

FoxIO's captures are not part of this repository. Point `MANUL_JA4_FOXIO` at a
checkout of github.com/FoxIO-LLC/ja4 (it needs `pcap/` and
`python/test/testdata/`) and every TCP ClientHello in every capture is
replayed through `parse_client_hello` and `ja4*`, and compared with the
`JA4.n`, `JA4_r.n`, `JA4_o.n` and `JA4_ro.n` values of the matching flow.
It lives in tests/extra/, outside `make test` (which never skips quietly):
run it by hand when the parser or JA4 changes.

Known, documented difference (see `agent/discovery/ja4.py`):
`tls-non-ascii-alpn.pcapng` has first ALPN value 0xba 0xad: the spec's hex rule
gives `bd` where the reference programs print `99`.
"""

from __future__ import annotations

import json
import os
from pathlib import Path

import pytest

from agent.discovery import ja4, ja4_o, ja4_r, ja4_ro, parse_client_hello
from tests.extra.pcapread import client_hello_streams

ROOT = os.environ.get("MANUL_JA4_FOXIO", "")
SPEC_OVER_PROGRAMS = {("tls-non-ascii-alpn.pcapng", "t13d151699"): "t13d1516bd"}


def test_foxio_captures() -> None:
    if not ROOT:
        pytest.fail("set MANUL_JA4_FOXIO to a checkout of github.com/FoxIO-LLC/ja4")
    root = Path(ROOT)
    compared = 0
    for capture in sorted((root / "pcap").glob("*.pcap*")):
        expected_file = root / "python" / "test" / "testdata" / f"{capture.name}.json"
        if not expected_file.exists():
            continue
        streams = client_hello_streams(capture.read_bytes())
        for flow in json.loads(expected_file.read_text()):
            key = (flow["src"], int(flow["srcport"]), flow["dst"], int(flow["dstport"]))
            if not flow.get("JA4.1", "").startswith("t"):
                continue  # QUIC and flows without a client fingerprint
            hello = parse_client_hello(streams[key])
            got = [ja4(hello), ja4_r(hello), ja4_o(hello), ja4_ro(hello)]
            want = [flow[f"{k}.1"] for k in ("JA4", "JA4_r", "JA4_o", "JA4_ro")]
            for old, new in SPEC_OVER_PROGRAMS.items():
                if old[0] == capture.name:
                    want = [w.replace(old[1], new) for w in want]
            assert got == want, (capture.name, key)
            assert hello.server_name == flow.get("domain"), (capture.name, key)
            compared += 1
    assert compared > 100, compared
