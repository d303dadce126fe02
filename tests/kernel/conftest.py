"""Kernel tests run inside a VM with BPF LSM active (vagrant/run-kernel-tests).

They never skip: outside such a VM, or when BPF LSM is not active and
loadable, every test fails and says how to run them properly.
"""

from __future__ import annotations

import os

import pytest

from agent.kernel import fs


def why_not(bpf_lsm: bool) -> str | None:
    """Why these tests cannot run here: not root, not in the test VM, or the VM
    booted with (`bpf_lsm` False) or without (`bpf_lsm` True) BPF LSM."""
    if os.geteuid() != 0:
        return "kernel tests need root"
    if os.environ.get("MANUL_IN_VM") != "1":
        return ("kernel tests run inside the test VM: use `vagrant/run-kernel-tests` "
                "(or `make kernel`), not pytest directly")
    lsms = fs.active_lsms()
    if bpf_lsm and "bpf" not in lsms:
        return f"BPF LSM is not active in this kernel (LSMs: {','.join(lsms)})"
    if not bpf_lsm and "bpf" in lsms:
        return "BPF LSM is active: the fallback tests need the kernel booted without it"
    return None


@pytest.fixture(autouse=True)
def _in_bpf_lsm_vm() -> None:
    why = why_not(bpf_lsm=True)
    if why:
        pytest.fail(why)
