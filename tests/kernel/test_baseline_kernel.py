"""The baseline where BPF trampolines load (the VM's kernel): what the fallback misses.

On this kernel the behaviour sensor uses fexit on security_file_open and
fentry on security_unix_stream_connect, not the system-call tracepoints:
a credential read through a 32-bit system call (int $0x80 from a 64-bit
process) or through io_uring, which the tracepoints never see, must be
`credential-access`; so must a Unix stream connect to a credential socket.
The helper prints what it read (the positive control: the read happened).
"""

from __future__ import annotations

import socket
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

from agent.baseline.detect import Detector
from agent.baseline.service import Anomaly, BaselineConfig, BaselineService, Mode
from agent.kernel.probe import BEHAVIOUR_MECHANISMS, choose_mechanisms, probe_all
from agent.registry import FileSource
from agent.workloads import WorkloadResolver
from tests.support import ROOT, Cgroup, baseline_agent_registry


def test_trampolines_see_32bit_io_uring_and_unix_credential_access(
        tmp_path: Path, make_cgroup: Any) -> None:
    cg: Cgroup = make_cgroup()
    vault = tmp_path / "vault"
    vault.mkdir()
    (vault / "a.key").write_text("secret-a\n")
    (vault / "b.key").write_text("secret-b\n")
    server = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    server.bind(str(vault / "runtime.sock"))
    server.listen(4)
    helper = tmp_path / "open_elsewise"
    subprocess.run(["clang", "-O2", "-o", str(helper), str(ROOT / "tests/kernel/open_elsewise.c")],
                   check=True)
    registry = baseline_agent_registry(tmp_path, cg.path.name,
                                       f"  baseline: {{credentials: ['{vault}/*']}}\n")
    src = FileSource(registry)
    found: list[Anomaly] = []
    svc = BaselineService(lambda: src.registry, WorkloadResolver(),
                          config=BaselineConfig(mode=Mode.REGISTERED, learn_seconds=3600.0,
                                                state_dir=tmp_path / "state"),
                          on_anomaly=found.append)
    svc.start()
    try:
        assert svc.sensor.trampolines, "BPF trampolines load in the test VM"
        mech = next(m for m in choose_mechanisms(probe_all()) if m.concern == "behaviour")
        assert (mech.mechanism, mech.degraded) == (BEHAVIOUR_MECHANISMS[True][0], False)
        r = cg.run([str(helper), "int80", str(vault / "a.key")])
        assert (r.returncode, r.stdout) == (0, "secret-a\n"), r.stderr
        r = cg.run([str(helper), "uring", str(vault / "b.key")])
        assert (r.returncode, r.stdout) == (0, "secret-b\n"), r.stderr
        r = cg.run([sys.executable, "-c", "import socket; "
                    f"socket.socket(socket.AF_UNIX).connect({str(vault / 'runtime.sock')!r})"])
        assert r.returncode == 0, r.stderr
        end = time.monotonic() + 3
        while time.monotonic() < end:
            svc.poll(0.1)
    finally:
        svc.close()
        server.close()
    cred = {a.finding.evidence["path"]: a.finding.evidence["access"] for a in found
            if a.finding.detector is Detector.CREDENTIAL_ACCESS}
    assert cred.get(str(vault / "a.key")) == "read", cred
    assert cred.get(str(vault / "b.key")) == "read", cred
    assert cred.get(str(vault / "runtime.sock")) == "unix", cred
