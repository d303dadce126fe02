"""The chart's values: values.yaml fits values.schema.json, and the schema refuses mistakes.

No Helm binary exists on the development machines; these checks are what
`helm lint` would do with the schema.
"""

from __future__ import annotations

import json
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
