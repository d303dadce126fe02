"""Fallback kernel tests: the same Debian kernel booted *without* `bpf` in lsm=.

`vagrant/run-kernel-tests` boots it once for these (MANUL_VM_LSM without
bpf). They never skip: anywhere else every test fails and says why.
"""

from __future__ import annotations

import pytest

from tests.kernel.conftest import why_not


@pytest.fixture(autouse=True)
def _in_bpf_lsm_vm() -> None:
    """Overrides tests/kernel's check: here BPF LSM must be *off*."""
    why = why_not(bpf_lsm=False)
    if why:
        pytest.fail(why)
