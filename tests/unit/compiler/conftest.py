"""Compiler tests: make the helpers beside this file (`cedar_oracle`, `cedar_corpus`) importable."""

from __future__ import annotations

import sys
from pathlib import Path

import pytest

_HERE = str(Path(__file__).parent)
if _HERE not in sys.path:
    sys.path.insert(0, _HERE)


def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    """Nightly-size tests here run only when asked for (`-m slow`); else skip, visibly."""
    if "slow" in (config.getoption("-m") or ""):
        return
    skip = pytest.mark.skip(reason="nightly-size: run with `pytest -m slow tests/unit/compiler`")
    for item in items:
        if item.get_closest_marker("slow") and Path(str(item.fspath)).is_relative_to(_HERE):
            item.add_marker(skip)
