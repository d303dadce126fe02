"""Fixtures shared by every test suite: real cgroups and processes inside them.

`cgroup` makes a fresh cgroup v2 directory and runs real processes in it
(a shell writes its own pid to `cgroup.procs`, then execs the command), so
kernel tests exercise real syscalls from real processes in real cgroups.
"""

from __future__ import annotations

import os
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

# Learned baselines of every agent a test runs go to a scratch directory, never
# to the machine's /var/lib/manul (set before agent.baseline is imported).
os.environ.setdefault("MANUL_STATE_DIR", f"/tmp/manul-test-state-{os.getpid()}")

from tests.support import BPF_DIR, Cgroup, cgroup2_root


@pytest.fixture
def make_cgroup() -> Iterator[Any]:
    made: list[Cgroup] = []

    def make(name: str = "", parent: Path | None = None) -> Cgroup:
        base = parent or cgroup2_root()
        p = base / (name or f"manul-test-{uuid.uuid4().hex[:8]}")
        p.mkdir(parents=True)
        cg = Cgroup(p)
        made.append(cg)
        return cg

    yield make
    for cg in reversed(made):
        cg.destroy()


@pytest.fixture
def cgroup(make_cgroup: Any) -> Cgroup:
    return make_cgroup()  # type: ignore[no-any-return]


@pytest.fixture(scope="session", autouse=True)
def _objects_built() -> None:
    """Kernel-facing suites need the compiled objects; say how to get them."""
    os.environ.setdefault("MANUL_BPF_DIR", str(BPF_DIR))
