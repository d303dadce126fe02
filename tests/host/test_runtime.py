"""The kernel runtime on this kernel: load, attach, events, maps, rollback, errors.

Every test loads real programs and makes real syscalls from real child
processes placed in real cgroups, and asserts the outcome.
"""

from __future__ import annotations

import errno
import os
import socket
import time
from pathlib import Path
from typing import Any

import pytest

from agent.errors import KernelError
from agent.kernel import BpfObject, RingBuffer, abi
from tests.support import BPF_DIR, Cgroup

TEST_OBJ = BPF_DIR / "tests"


def _listener() -> tuple[socket.socket, int]:
    s = socket.socket()
    s.bind(("127.0.0.1", 0))
    s.listen(64)
    return s, s.getsockname()[1]


CONNECT = """
import json, socket, errno
s = socket.socket()
try:
    s.connect(("127.0.0.1", {port}))
    print(json.dumps(0))
except OSError as e:
    print(json.dumps(e.errno))
"""


def _events(rb: RingBuffer, want: int, timeout: float = 5.0) -> list[bytes]:
    out: list[bytes] = []
    end = time.monotonic() + timeout
    while len(out) < want and time.monotonic() < end:
        out.extend(rb.poll(0.1))
    return out


def test_tracepoint_exec_events_from_child_in_cgroup(cgroup: Cgroup) -> None:
    with BpfObject.open("exec") as obj:
        obj.set_rodata(filter_cgroup_id=cgroup.id)
        obj.load()
        links = obj.attach_all()
        assert [lk.program for lk in links] == ["manul_exec"]
        with RingBuffer(obj.map("exec_events"), obj.map("manul_errors")) as rb:
            outside = os.spawnv(os.P_WAIT, "/bin/true", ["true"])  # not in the cgroup
            assert outside == 0
            r = cgroup.run(["/bin/sh", "-c", "exec /bin/echo manul-exec-test"])
            assert r.returncode == 0
            recs = _events(rb, 2)
            evs = [abi.decode(abi.manul_exec_event, x) for x in recs]
            names = [e.filename.decode() for e in evs]
            assert "/bin/echo" in names, names
            assert all(e.cgroup_id == cgroup.id for e in evs)
            echo = next(e for e in evs if e.filename == b"/bin/echo")
            assert echo.comm == b"echo"
            assert echo.hdr.type == abi.EV_EXEC and echo.hdr.size == len(recs[0])
            assert rb.drops() == 0


def _connect_obj(deny_port: int = 0, marker: int = 0) -> BpfObject:
    obj = BpfObject.open(TEST_OBJ / "cgroup_connect.bpf.o")
    obj.set_rodata(deny_port=deny_port, marker=marker)
    obj.only("test_connect4")
    return obj


def test_cgroup_program_denies_and_reports_only_its_cgroup(make_cgroup: Any) -> None:
    inside, outside = make_cgroup(), make_cgroup()
    srv, port = _listener()
    srv2, denied = _listener()
    with srv, srv2:
        with _connect_obj(deny_port=denied) as obj:
            _deny_in_one_cgroup(obj, inside, outside, port, denied)
        # object closed: its unpinned link is gone and the port is open again
        assert inside.python(CONNECT.format(port=denied)) == 0


def _deny_in_one_cgroup(obj: BpfObject, inside: Cgroup, outside: Cgroup, port: int,
                        denied: int) -> None:
    obj.load()
    obj.attach_all(cgroup=inside.path)
    with RingBuffer(obj.map("test_events")) as rb:
        assert inside.python(CONNECT.format(port=port)) == 0
        assert inside.python(CONNECT.format(port=denied)) == errno.EPERM
        assert outside.python(CONNECT.format(port=denied)) == 0
        evs = [abi.decode(abi.manul_test_event, x) for x in _events(rb, 2)]
        assert sorted(e.value for e in evs) == sorted([port, denied])
        assert {e.cgroup_id for e in evs} == {inside.id}
    counts = dict(obj.map("connects_by_port").items())
    assert int.from_bytes(counts[port.to_bytes(4, "little")], "little") == 1


def test_ringbuf_full_is_counted_not_silent(cgroup: Cgroup) -> None:
    srv, port = _listener()
    with srv, _connect_obj() as obj:
        obj.set_max_entries("test_events", 4096)  # room for ~60 records
        obj.load()
        obj.attach_all(cgroup=cgroup.path)
        n = 200
        code = ("import socket, json\n"
                f"for _ in range({n}):\n"
                "    s = socket.socket(); s.setblocking(False)\n"
                f"    s.connect_ex(('127.0.0.1', {port})); s.close()\n"
                "print(json.dumps(1))")
        with RingBuffer(obj.map("test_events"), obj.map("manul_errors")) as rb:
            cgroup.python(code)
            got = len(rb.drain())
            drops = rb.drops()
            assert got > 0 and drops > 0
            assert got + drops == n


def test_attach_failure_leaves_nothing_attached(cgroup: Cgroup) -> None:
    srv, port = _listener()
    with srv, BpfObject.open(TEST_OBJ / "cgroup_connect.bpf.o") as obj:
        obj.set_rodata(deny_port=port)
        obj.load()
        with pytest.raises(KernelError) as err:
            obj.attach_all(cgroup=cgroup.path)
        e = err.value
        assert e.obj == "cgroup_connect" and e.program == "test_missing_tracepoint"
        assert "manul_no_such_category" in str(e)
        assert obj.links == []
        # the connect4 program attached first was rolled back
        assert cgroup.python(CONNECT.format(port=port)) == 0


def test_missing_cgroup_names_object_program_and_path(tmp_path: Path) -> None:
    with _connect_obj() as obj:
        obj.load()
        with pytest.raises(KernelError) as err:
            obj.attach_all(cgroup=tmp_path / "no-such-cgroup")
    msg = str(err.value)
    assert "object `cgroup_connect`" in msg and "program `test_connect4`" in msg
    assert "no-such-cgroup" in msg and "ENOENT" in msg


def test_corrupt_object_is_a_clear_error(tmp_path: Path) -> None:
    bad = tmp_path / "corrupt.bpf.o"
    good = (BPF_DIR / "exec.bpf.o").read_bytes()
    bad.write_bytes(good[:64] + os.urandom(512))
    with pytest.raises(KernelError) as err:
        BpfObject.open(bad)
    assert "object `corrupt`" in str(err.value)
    assert "not a valid BPF object" in str(err.value)


def test_verifier_rejection_carries_program_and_log() -> None:
    with BpfObject.open(TEST_OBJ / "verifier_reject.bpf.o") as obj, \
            pytest.raises(KernelError) as err:
        obj.load()
    e = err.value
    assert e.program == "unchecked_lookup" and e.errno == errno.EACCES
    assert "invalid mem access" in e.log or "map_value_or_null" in e.log
    assert "object `verifier_reject`" in str(e)


def test_missing_rodata_setting_is_refused() -> None:
    with BpfObject.open("exec") as obj, pytest.raises(KernelError, match="no_such_setting"):
        obj.set_rodata(no_such_setting=1)
