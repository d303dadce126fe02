"""Host tests load real BPF programs on this machine's kernel: root only."""

from __future__ import annotations

import os

import pytest


@pytest.fixture(autouse=True)
def _root() -> None:
    if os.geteuid() != 0:
        pytest.fail("host tests load BPF programs and need root; run them with `make test`")
