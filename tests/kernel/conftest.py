"""Kernel tests run inside a VM with BPF LSM active (vagrant/run-kernel-tests).

They never skip: outside such a VM, or when BPF LSM is not active and
loadable, every test fails and says how to run them properly.
"""

from __future__ import annotations

import os

import pytest

from agent.kernel import fs


def _why_not() -> str | None:
    if os.geteuid() != 0:
        return "kernel tests need root"
    if os.environ.get("MANUL_IN_VM") != "1":
        return ("kernel tests run inside the test VM: use `vagrant/run-kernel-tests` "
                "(or `make kernel`), not pytest directly")
    lsms = fs.active_lsms()
    if "bpf" not in lsms:
        return f"BPF LSM is not active in this kernel (LSMs: {','.join(lsms)})"
    return None


@pytest.fixture(autouse=True)
def _in_bpf_lsm_vm() -> None:
    why = _why_not()
    if why:
        pytest.fail(why)
