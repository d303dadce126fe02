"""docs/metrics.md lists exactly the metrics agent/telemetry/metrics.py declares."""

from __future__ import annotations

import re
from pathlib import Path

from agent.telemetry.metrics import REGISTRY

DOC = Path(__file__).parents[3] / "docs" / "metrics.md"


def test_every_metric_is_documented_and_every_documented_metric_exists() -> None:
    declared = {m.name + ("_total" if m.type == "counter" else "")
                for m in REGISTRY.collect()}
    documented = set(re.findall(r"^\| `(manul_[a-z0-9_]+)` \|", DOC.read_text(), re.M))
    assert declared == documented
