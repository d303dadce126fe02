"""The fallback on a real distribution kernel without BPF LSM (Debian 6.1).

What it must do: choose the cgroup and tracepoint programs, enforce the
network (connect, sendto, TCP Fast Open) and raw IP sockets, report file
and exec rules as degraded would-denies, and say all of it truthfully in
`manul doctor` and `manul sandbox status`. What it cannot do (links,
renames, mappings, packet sockets, ptrace, mounts) is checked to be
*reported* as not decided, so the docs stay true.
"""

from __future__ import annotations

import errno
import json
import subprocess
from pathlib import Path
from typing import Any

from agent.sandbox.kernel import FALLBACK_PROGRAMS, ensure_loaded, mechanisms
from agent.sandbox.state import read_status
from tests.kernel.test_sandbox import ANALYST, FILES, POLICIES, drain, pin_root, start  # noqa: F401
from tests.support import ROOT, apply_to, make_root, policy_input, unmake_root


def test_doctor_is_truthful() -> None:
    r = subprocess.run([str(ROOT / ".venv/bin/manul"), "doctor", "--json"],
                       capture_output=True, text=True, timeout=120, check=False)
    doc = json.loads(r.stdout)
    lsm = {f["key"]: f for f in doc["features"]}["bpf_lsm"]
    assert lsm["available"] is False and "not in the active LSM list" in lsm["detail"]
    mech = {m["concern"]: m for m in doc["mechanisms"]}
    assert mech["network"]["degraded"] is False
    assert mech["network"]["mechanism"].startswith("cgroup:connect4/6+sendmsg4/6")
    for concern in ("file", "exec", "raw-sockets", "confinement"):
        assert mech[concern]["degraded"] is True, concern


def test_fallback_chosen_and_status_says_so(pin_root: Path) -> None:  # noqa: F811
    lsm, actions = ensure_loaded(pin_root)
    assert lsm is False and set(actions) == set(FALLBACK_PROGRAMS)
    st = read_status(pin_root)
    assert st is not None and st.mechanisms == mechanisms(False)
    assert st.degraded == ("readFile", "writeFile", "exec", "loadLibrary", "openRawSocket",
                           "confinement")


def test_network_and_raw_ip_sockets_enforced_files_reported(
        make_cgroup: Any, pin_root: Path, tmp_path: Path) -> None:  # noqa: F811
    root = make_root(tmp_path, FILES, usr=True)
    try:
        inside, outside = make_cgroup(), make_cgroup()
        with start(inside, root) as w, start(outside, root) as o:
            apply_to(pin_root, policy_input(*POLICIES), ANALYST, [inside])
            # enforced: every way to a peer the cgroup hooks see, and raw IP sockets
            assert w.errno(op="connect", family=4, addr="127.0.0.3",
                           port=443) == errno.ECONNREFUSED
            assert w.errno(op="fastopen", family=4, addr="127.0.0.3",
                           port=443) == errno.ECONNREFUSED
            assert w.errno(op="sendto", family=4, addr="127.0.0.3",
                           port=53) == errno.ECONNREFUSED
            assert w.errno(op="connect", family=4, addr="127.0.0.2", port=443) == 0
            assert w.errno(op="raw_socket", kind="raw") == errno.EPERM
            assert o.errno(op="raw_socket", kind="raw") == 0
            # reported, not enforced: the open happens, a degraded would-deny says so
            assert w.errno(op="open", path="/etc/shadow") == 0
            # not decided at all here (documented): packet sockets, links
            assert w.errno(op="raw_socket", kind="packet") == 0
            assert w.errno(op="link", src="/etc/shadow", dst="/workspace/analyst-1/s") == 0
        events = drain(pin_root)
    finally:
        unmake_root(root)
    seen = {(d.operation, d.action, d.verdict, d.mechanism, d.degraded) for d in events}
    assert ("connect", "connectNetwork", "deny", "cgroup", False) in seen
    assert ("sendmsg", "connectNetwork", "deny", "cgroup", False) in seen
    assert ("socket", "openRawSocket", "deny", "cgroup", False) in seen
    assert ("open", "readFile", "would-deny", "tracepoint", True) in seen
