"""BPF LSM in the VM: a program denies opening one marker file for one cgroup only."""

from __future__ import annotations

import errno
import os
import platform
from pathlib import Path
from typing import Any

from agent.kernel import BpfObject, fs
from agent.kernel.probe import probe_lsm
from tests.support import BPF_DIR

OPEN = ("import json\ntry:\n    open({path!r}).read()\n    print(json.dumps(0))\n"
        "except OSError as e:\n    print(json.dumps(e.errno))")


def test_guest_reports_bpf_lsm() -> None:
    print(f"kernel {platform.release()}, LSMs {','.join(fs.active_lsms())}")
    feature = probe_lsm()
    assert feature.available, feature.detail


def test_lsm_denies_marker_for_one_cgroup_only(make_cgroup: Any, tmp_path: Path) -> None:
    inside, outside = make_cgroup(), make_cgroup()
    shm = Path("/dev/shm")  # tmpfs: the inode the hook sees is the one stat() gives
    marker = shm / f"manul-marker-{os.getpid()}"
    other = shm / f"manul-other-{os.getpid()}"
    marker.write_text("secret")
    other.write_text("fine")
    try:
        with BpfObject.open(BPF_DIR / "tests" / "lsm_deny_marker.bpf.o") as obj:
            obj.set_rodata(target_cgroup_id=inside.id, marker_ino=marker.stat().st_ino)
            obj.load()
            obj.attach_all()
            assert inside.python(OPEN.format(path=str(marker))) == errno.EACCES
            assert inside.python(OPEN.format(path=str(other))) == 0
            assert outside.python(OPEN.format(path=str(marker))) == 0
            assert marker.read_text() == "secret"  # this test process is outside too
            denials = obj.map("denials").lookup(0)
            assert int.from_bytes(denials, "little") == 1
        # detached with the object: the cgroup can open it again
        assert inside.python(OPEN.format(path=str(marker))) == 0
    finally:
        marker.unlink()
        other.unlink()
