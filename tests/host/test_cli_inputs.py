"""Bad input on the command line: one sentence naming the file, flag or field,
a non-zero exit, no traceback, nothing changed (issue: "No tracebacks").

Each command is run as a person runs it (a process, `python -m agent.cli`)
with a missing file, a directory, a binary file and out-of-range values.
"""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

from tests.support import ROOT

REG = str(ROOT / "examples" / "registry")
GW = str(ROOT / "examples" / "policies" / "gateway")
BINARY = b"\x7fELF\x02\x01\x01\x00\xff\xfe\x00\x01"


@pytest.fixture
def inputs(tmp_path: Path) -> dict[str, str]:
    (tmp_path / "bin.dat").write_bytes(BINARY)
    (tmp_path / "dir").mkdir()
    binreg = tmp_path / "binreg"
    binreg.mkdir()
    (binreg / "a.yaml").write_bytes(BINARY)
    return {"bin": str(tmp_path / "bin.dat"), "dir": str(tmp_path / "dir"),
            "missing": str(tmp_path / "missing.json"), "binreg": str(binreg),
            "sock": str(tmp_path / "s" / "authz.sock")}


LOCAL = ["check", "--local", "--registry", REG, "--policies", GW]
CASES = [
    (["check", "-f", "{missing}"], "`{missing}` does not exist"),
    (["check", "-f", "{dir}"], "`{dir}` is a directory"),
    (["check", "-f", "{bin}"], "`{bin}` is not UTF-8 text"),
    ([*LOCAL, "--url", "http://a/b", "--jwt-payload", "@{missing}"], "--jwt-payload: `{missing}`"),
    ([*LOCAL, "--url", "http://a/b", "--body", "@{bin}"], "--body: `{bin}` is not UTF-8"),
    ([*LOCAL, "--url", "http://[::1"], "--url `http://[::1`: not a URL"),
    (["check", "--local", "--registry", "{binreg}", "--policies", GW, "--url", "http://a/b"],
     "a.yaml` is not UTF-8 text"),
    (["discover", "--pods-file", "{bin}", "--duration", "1"], "is not UTF-8 text"),
    (["discover", "--registry", "{binreg}", "--duration", "1"], "a.yaml` is not UTF-8 text"),
    (["discover", "--duration", "-1"], "--duration"),
    (["run", "--registry", "{binreg}"], "a.yaml` is not UTF-8 text"),
    (["run", "--pods-file", "{bin}", "--registry", REG], "is not UTF-8 text"),
    (["authz", "serve", "--registry", "{binreg}", "--policies", GW, "--socket", "{sock}"],
     "a.yaml` is not UTF-8 text"),
    (["authz", "serve", "--registry", REG, "--policies", GW, "--socket", "{sock}",
      "--http", "bogus"], "--http `bogus`: expected HOST:PORT"),
    (["authz", "serve", "--registry", REG, "--policies", GW, "--socket", "{sock}",
      "--http", "127.0.0.1:70000"], "a port from 0 to 65535"),
    (["sandbox", "apply", "--workload", "finance/analyst", "--registry", "{binreg}"],
     "a.yaml` is not UTF-8 text"),
]


@pytest.mark.parametrize(("args", "message"), CASES, ids=[" ".join(c[0][:3]) + f"#{i}"
                                                         for i, c in enumerate(CASES)])
def test_bad_input_is_one_sentence(inputs: dict[str, str], args: list[str],
                                   message: str) -> None:
    argv = [a.format(**inputs) for a in args]
    r = subprocess.run([sys.executable, "-m", "agent.cli", *argv], cwd=ROOT,
                       env=dict(os.environ, PYTHONPATH=str(ROOT)), capture_output=True,
                       text=True, timeout=60, check=False)
    out = r.stdout + r.stderr
    assert r.returncode != 0, out
    assert "Traceback" not in out, out
    assert message.format(**inputs) in " ".join(out.split()), out
    assert not Path(inputs["sock"]).exists()  # nothing was started


def test_a_rejected_allow_pins_nothing(tmp_path: Path) -> None:
    """--allow is checked before the quarantine programs are loaded: a bad
    value leaves nothing attached or pinned."""
    from agent.discovery.quarantine import PIN_NAME
    from agent.kernel.fs import PIN_ROOT

    pinned = PIN_ROOT / PIN_NAME
    before = pinned.exists()
    r = subprocess.run([sys.executable, "-m", "agent.cli", "discover", "--quarantine-shadow",
                        "--allow", "10.0.0.0/8", "--allow", "not-a-network", "--duration", "1"],
                       cwd=ROOT, env=dict(os.environ, PYTHONPATH=str(ROOT)),
                       capture_output=True, text=True, timeout=60, check=False)
    out = r.stdout + r.stderr
    assert r.returncode != 0 and "Traceback" not in out, out
    assert "`not-a-network` is not an IP address or CIDR" in out, out
    assert pinned.exists() == before
