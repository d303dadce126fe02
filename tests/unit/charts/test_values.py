"""The chart's values: values.yaml fits values.schema.json, and the schema refuses mistakes.

Helm itself enforces the schema too (test_render.py); these say which
mistakes it must refuse.
"""

from __future__ import annotations

import json
import re
from pathlib import Path
from typing import Any

import jsonschema
import pytest
import yaml

CHART = Path(__file__).parents[3] / "charts" / "manul"


def _schema() -> dict[str, Any]:
    doc = json.loads((CHART / "values.schema.json").read_text())
    jsonschema.Draft7Validator.check_schema(doc)
    assert isinstance(doc, dict)
    return doc


def _values() -> dict[str, Any]:
    doc = yaml.safe_load((CHART / "values.yaml").read_text())
    assert isinstance(doc, dict)
    return doc


def test_default_values_fit_the_schema() -> None:
    jsonschema.validate(_values(), _schema())


@pytest.mark.parametrize(("path", "value"), [
    (("metrics", "port"), 70000),
    (("image", "pullPolicy"), "Sometimes"),
    (("decision", "socketDir"), "relative/dir"),
    (("discovery", "quarantineShadw"), True),
    (("trustDomain",), "Not A Domain"),
    (("securityContext", "mode"), "root"),
    (("securityContext", "extraCapabilities"), ["cap_sys_admin"]),
    (("events", "rate"), -1),
    (("auditLog", "maxSize"), "lots"),
    (("auditLog", "window"), "soon"),
    (("otel", "endpoint"), "grpc:collector"),
    (("baseline", "mode"), "some"),
    (("updateStrategy", "maxUnavailable"), 0),
    (("decision", "socketGroup"), -5),
    (("decision", "workers"), 65),
    (("decision", "workers"), "auto"),
    (("metrics", "serviceMonitor", "enabled"), "yes"),
])
def test_schema_refuses(path: tuple[str, ...], value: object) -> None:
    values = _values()
    node = values
    for key in path[:-1]:
        node = node[key]
    node[path[-1]] = value
    with pytest.raises(jsonschema.ValidationError):
        jsonschema.validate(values, _schema())


def test_chart_metadata() -> None:
    chart = yaml.safe_load((CHART / "Chart.yaml").read_text())
    assert chart["apiVersion"] == "v2" and chart["name"] == "manul"
    assert sorted(p.name for p in (CHART / "crds").glob("*.yaml")) == [
        "agents.yaml", "discoveredagents.yaml", "llmproviders.yaml", "mcpservers.yaml",
        "policies.yaml", "serviceidentities.yaml"]


DOC_METRICS = Path(__file__).parents[3] / "docs" / "metrics.md"
TEMPLATES = CHART / "templates"


def _documented() -> set[str]:
    return set(re.findall(r"^\| `(manul_[a-z0-9_]+)` \|", DOC_METRICS.read_text(), re.M))


def _named(text: str) -> set[str]:
    """Metric names in PromQL, histogram series folded into their metric."""
    return {re.sub(r"_(bucket|sum|count)$", "", m)
            for m in re.findall(r"\bmanul_[a-z0-9_]+", text)}


def test_alerts_reference_metrics_that_exist() -> None:
    text = (TEMPLATES / "prometheusrule.yaml").read_text()
    named = _named(text)
    assert named and named <= _documented(), named - _documented()
    for alert in ("ManulShadowAgentSeen", "ManulSandboxDenials", "ManulAnomaly",
                  "ManulDecisionPointNotServing", "ManulRingBufferDrops"):
        assert f"alert: {alert}" in text


def test_the_dashboard_is_json_and_references_metrics_that_exist() -> None:
    doc = json.loads((CHART / "dashboards" / "manul.json").read_text())
    exprs = [t["expr"] for p in doc["panels"] for t in p["targets"]]
    named = _named("\n".join(exprs))
    assert len(named) >= 10 and named <= _documented(), named - _documented()
    assert len({p["id"] for p in doc["panels"]}) == len(doc["panels"])


def _paths(node: Any, prefix: tuple[str, ...] = ()) -> set[tuple[str, ...]]:
    out = {prefix} if prefix else set()
    if isinstance(node, dict):
        for k, v in node.items():
            out |= _paths(v, (*prefix, k))
    return out


def test_every_value_a_template_reads_is_in_values_yaml() -> None:
    """A template reading a value that does not exist renders as nothing, silently
    (Helm does not complain): caught here."""
    known = _paths(_values())
    used = set()
    for f in TEMPLATES.iterdir():
        for ref in re.findall(r"\.Values((?:\.[A-Za-z0-9_]+)+)", f.read_text()):
            used.add(tuple(ref.strip(".").split(".")))
    assert used and used <= known, used - known


def test_rbac_allows_what_the_agent_does_and_no_more() -> None:
    text = (TEMPLATES / "rbac.yaml").read_text()
    rules = next(d for d in yaml.safe_load_all(re.sub(r"\{\{[^}]*\}\}", "x", text))
             if d and d["kind"] == "ClusterRole")["rules"]
    grants = {(r, v) for rule in rules for r in rule["resources"] for v in rule["verbs"]}
    assert ("discoveredagents", "create") in grants
    assert ("discoveredagents/status", "patch") in grants and ("agents/status", "patch") in grants
    assert not {v for _, v in grants} & {"delete", "deletecollection", "update", "*"}
    assert ("agents", "patch") not in grants  # only their status
