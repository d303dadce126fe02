"""Host tests load real BPF programs on this machine's kernel: root only."""

from __future__ import annotations

import os
import shutil
import uuid
from collections.abc import Iterator
from pathlib import Path

import pytest

from agent.kernel.fs import BPFFS, ensure_bpffs


@pytest.fixture(autouse=True)
def _root() -> None:
    if os.geteuid() != 0:
        pytest.fail("host tests load BPF programs and need root; run them with `make test`")


@pytest.fixture
def bpffs_root() -> Iterator[Path]:
    """A scratch directory in bpffs for one test's pinned state (removed after; an
    unpinned link detaches its program)."""
    ensure_bpffs()
    root = BPFFS / f"manul-test-{uuid.uuid4().hex[:8]}"
    yield root
    shutil.rmtree(root, ignore_errors=True)
