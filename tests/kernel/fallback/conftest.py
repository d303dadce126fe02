"""Fallback kernel tests: the same Debian kernel booted *without* `bpf` in lsm=.

`vagrant/run-kernel-tests` boots it once for these (MANUL_VM_LSM without
bpf). They never skip: anywhere else every test fails and says why.
"""

from __future__ import annotations

import os

import pytest

from agent.kernel import fs


def _why_not() -> str | None:
    if os.geteuid() != 0:
        return "kernel tests need root"
    if os.environ.get("MANUL_IN_VM") != "1":
        return ("fallback tests run inside the test VM booted without BPF LSM: use "
                "`vagrant/run-kernel-tests` (or `make kernel`), not pytest directly")
    if "bpf" in fs.active_lsms():
        return "BPF LSM is active: these tests need the kernel booted without it"
    return None


@pytest.fixture(autouse=True)
def _in_bpf_lsm_vm() -> None:
    """Overrides tests/kernel's check: here BPF LSM must be *off*."""
    why = _why_not()
    if why:
        pytest.fail(why)
