"""Pinned state: enforcement outlives the agent, a restart adopts it, changes swap safely."""

from __future__ import annotations

import errno
import signal
import socket
import subprocess
import sys
import textwrap
import uuid
from collections.abc import Iterator
from pathlib import Path

import pytest

from agent.kernel import BpfObject, attach_pinned, remove_pinned
from agent.kernel.fs import BPFFS, ensure_bpffs
from agent.kernel.pins import pinned_links
from tests.support import BPF_DIR, Cgroup

OBJ = BPF_DIR / "tests" / "cgroup_connect.bpf.o"
CONNECT = ("import json, socket\ns = socket.socket()\n"
           "print(json.dumps(s.connect_ex(('127.0.0.1', {port}))))")


@pytest.fixture
def pin_root() -> Iterator[Path]:
    ensure_bpffs()
    root = BPFFS / f"manul-test-{uuid.uuid4().hex[:8]}"
    yield root
    if root.exists():
        import shutil
        shutil.rmtree(root)


@pytest.fixture
def listener() -> Iterator[int]:
    s = socket.socket()
    s.bind(("127.0.0.1", 0))
    s.listen(64)
    yield s.getsockname()[1]
    s.close()


def _attach(cg: Cgroup, root: Path, deny: int, marker: int = 0) -> dict[str, str]:
    with BpfObject.open(OBJ) as obj:
        obj.set_rodata(deny_port=deny, marker=marker)
        obj.only("test_connect4")
        result = attach_pinned(obj, "conn", cgroup=cg.path, root=root)
        return result.actions


def test_pinned_program_survives_close_and_is_adopted(
        cgroup: Cgroup, pin_root: Path, listener: int) -> None:
    assert _attach(cgroup, pin_root, listener) == {"test_connect4": "attached"}
    # our object and handles are closed: the pin keeps enforcing
    assert cgroup.python(CONNECT.format(port=listener)) == errno.EPERM
    assert _attach(cgroup, pin_root, listener) == {"test_connect4": "adopted"}
    # state in pinned maps survived too: two connects counted across two "agents"
    assert cgroup.python(CONNECT.format(port=listener)) == errno.EPERM
    from agent.kernel import Map
    counts = Map.from_pin(pin_root / "conn" / "maps" / "connects_by_port")
    assert counts.lookup(listener) == (2).to_bytes(8, "little")
    counts.close()
    assert remove_pinned("conn", root=pin_root)
    assert cgroup.python(CONNECT.format(port=listener)) == 0


def test_changed_settings_replace_make_before_break(
        cgroup: Cgroup, pin_root: Path, listener: int) -> None:
    _attach(cgroup, pin_root, listener, marker=1)
    (fp1, _), = pinned_links("conn", pin_root).values()
    assert _attach(cgroup, pin_root, listener, marker=2) == {"test_connect4": "replaced"}
    (fp2, _), = pinned_links("conn", pin_root).values()
    assert fp1 != fp2
    assert cgroup.python(CONNECT.format(port=listener)) == errno.EPERM
    # a build that no longer denies replaces it too, and the deny ends
    assert _attach(cgroup, pin_root, 0, marker=2) == {"test_connect4": "replaced"}
    assert cgroup.python(CONNECT.format(port=listener)) == 0


AGENT = textwrap.dedent("""
    import sys, time
    from pathlib import Path
    from agent.kernel import BpfObject, attach_pinned
    with BpfObject.open(sys.argv[1]) as obj:
        obj.set_rodata(deny_port=int(sys.argv[3]))
        obj.only("test_connect4")
        attach_pinned(obj, "conn", cgroup=sys.argv[2], root=Path(sys.argv[4]))
        print("ready", flush=True)
        time.sleep(600)
""")


def test_kill_9_of_the_agent_leaves_enforcement(
        cgroup: Cgroup, pin_root: Path, listener: int) -> None:
    agent = subprocess.Popen(
        [sys.executable, "-c", AGENT, str(OBJ), str(cgroup.path), str(listener), str(pin_root)],
        stdout=subprocess.PIPE, text=True)
    assert agent.stdout is not None
    assert agent.stdout.readline().strip() == "ready"
    agent.send_signal(signal.SIGKILL)
    agent.wait()
    assert cgroup.python(CONNECT.format(port=listener)) == errno.EPERM
    assert _attach(cgroup, pin_root, listener) == {"test_connect4": "adopted"}
    agent.stdout.close()
