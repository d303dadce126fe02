"""Compiler tests: make the helpers beside this file (`cedar_oracle`, `cedar_corpus`) importable."""

from __future__ import annotations

import sys
from pathlib import Path

_HERE = str(Path(__file__).parent)
if _HERE not in sys.path:
    sys.path.insert(0, _HERE)
