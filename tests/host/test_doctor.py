"""`manul doctor` tells the truth about this kernel.

Each claim is checked against an independent attempt: what doctor calls
available, the test loads and attaches itself; what it calls unavailable
must come with a reason and a fallback.
"""

from __future__ import annotations

import json
import subprocess
from pathlib import Path

from agent.errors import KernelError
from agent.kernel import BpfObject, fs
from tests.support import ROOT


def _doctor(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run([str(ROOT / ".venv" / "bin" / "manul"), "doctor", *args],
                          capture_output=True, text=True, timeout=120, check=False)


def _lsm_loads() -> tuple[bool, int]:
    try:
        with BpfObject.open("probe") as obj:
            obj.only("probe_lsm")
            obj.load()
            obj.attach_all()
        return True, 0
    except KernelError as e:
        return False, e.errno


def test_json_report_matches_an_independent_attempt() -> None:
    r = _doctor("--json")
    assert r.returncode == 0, r.stdout + r.stderr
    doc = json.loads(r.stdout)
    features = {f["key"]: f for f in doc["features"]}
    assert set(features) == {"btf", "cgroup_v2", "bpf_lsm", "overlay_btf", "fentry", "ringbuf",
                             "tracepoint", "raw_tracepoint", "tp_btf", "cgroup_skb", "sock_addr",
                             "uprobe"}
    # the sandbox reads overlayfs' struct from its module's BTF, or vmlinux's when built in
    overlay = Path("/sys/kernel/btf/overlay").exists() or "STRUCT 'ovl_fs'" in subprocess.run(
        ["bpftool", "btf", "dump", "file", "/sys/kernel/btf/vmlinux"],
        capture_output=True, text=True, check=True).stdout
    assert features["overlay_btf"]["available"] == overlay
    assert doc["lsms"] == fs.active_lsms()
    # Manul's own host tests load these on this kernel; doctor must agree.
    for key in ("btf", "cgroup_v2", "ringbuf", "tracepoint", "cgroup_skb", "sock_addr"):
        assert features[key]["available"], features[key]
    ok, err = _lsm_loads()
    lsm = features["bpf_lsm"]
    assert lsm["available"] == ok
    if not ok:
        assert lsm["fallback"] and "cgroup connect4/6" in lsm["fallback"]
        if err == 1:
            assert "EPERM" in lsm["detail"]
    for f in features.values():
        assert f["available"] or (f["detail"] and f["fallback"]), f
    mechanisms = {m["concern"]: m for m in doc["mechanisms"]}
    assert mechanisms["network"]["mechanism"] == (
        "lsm:socket_connect/socket_sendmsg+cgroup:sendmsg4/6" if ok else
        "cgroup:connect4/6+sendmsg4/6 (TCP Fast Open included; ICMP echo sockets are not seen)")
    assert mechanisms["network"]["degraded"] is False
    for concern in ("file", "exec", "raw-sockets", "confinement"):
        assert mechanisms[concern]["degraded"] == (not ok), concern


def test_table_names_mechanisms_and_fallbacks() -> None:
    r = _doctor()
    assert r.returncode == 0
    for text in ("Kernel mechanisms", "BPF LSM", "What Manul will use", "tls"):
        assert text in r.stdout
