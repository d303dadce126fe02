"""The chart's CRDs: valid Kubernetes objects that accept what the registry parser accepts.

kubernetes-validate checks each CRD against the API server's own schema for
`apiextensions.k8s.io/v1`; jsonschema then checks every example record
against its CRD's `openAPIV3Schema`, and that a typo the parser refuses is
refused by the CRD too (so `kubectl apply` fails where a host run would).
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import jsonschema
import kubernetes_validate
import pytest
import yaml

from agent.errors import RegistryError
from agent.registry import parse_record
from agent.registry.kube import PLURALS

ROOT = Path(__file__).parents[3]
CRDS = ROOT / "charts" / "manul" / "crds"
EXAMPLES = ROOT / "examples" / "registry"


def _crd(kind: str) -> dict[str, Any]:
    doc = yaml.safe_load((CRDS / f"{PLURALS[kind]}.yaml").read_text())
    assert isinstance(doc, dict)
    return doc


def _schema(kind: str) -> dict[str, Any]:
    schema = _crd(kind)["spec"]["versions"][0]["schema"]["openAPIV3Schema"]
    assert isinstance(schema, dict)
    return schema


@pytest.mark.parametrize("kind", sorted(PLURALS))
def test_crd_is_a_valid_kubernetes_object(kind: str) -> None:
    kubernetes_validate.validate(_crd(kind), "1.30", strict=True)


def _examples() -> list[dict[str, Any]]:
    out = []
    for f in sorted(EXAMPLES.glob("*.yaml")):
        out += [d for d in yaml.safe_load_all(f.read_text()) if d]
    return out


@pytest.mark.parametrize("record", _examples(),
                         ids=lambda r: f"{r['kind']}/{r['metadata']['name']}")
def test_every_example_record_fits_its_crd(record: dict[str, Any]) -> None:
    if record["kind"] == "Policy" and "file" in record["spec"]:
        pytest.fail("example Policy records must be inline (`cedar:`) to apply to a cluster")
    jsonschema.validate(record, _schema(record["kind"]))


@pytest.mark.parametrize(("kind", "spec"), [
    ("Agent", {"riskLevl": "high"}),
    ("MCPServer", {"url": "http://a/mcp", "tools": ["b/c"]}),
    ("MCPServer", {"url": "http://a/mcp", "toolSets": {"read": ["b/c"]}}),
    ("Agent", {"riskLevel": "extreme"}),
    ("Agent", {"identities": [{"spiffe": "not-a-spiffe-id"}]}),
    ("Agent", {"identities": [{"systemdUnit": "a", "cgroup": "/b"}]}),
    ("Agent", {"sandbox": {"policies": []}}),
    ("LLMProvider", {"hosts": []}),
    ("Policy", {"cedar": ""}),
])
def test_what_the_parser_refuses_the_crd_refuses(kind: str, spec: dict[str, Any]) -> None:
    record = {"apiVersion": "manul.dev/v1alpha1", "kind": kind,
              "metadata": {"name": "x", "namespace": "ns"}, "spec": spec}
    with pytest.raises(RegistryError):
        parse_record(record, "test")
    with pytest.raises(jsonschema.ValidationError):
        jsonschema.validate(record, _schema(kind))


def test_the_cluster_view_crd_is_a_valid_kubernetes_object() -> None:
    """DiscoveredAgent is written by Manul, not a registry record (its objects are
    checked against this schema in tests/unit/discovery/test_publish.py)."""
    doc = yaml.safe_load((CRDS / "discoveredagents.yaml").read_text())
    kubernetes_validate.validate(doc, "1.30", strict=True)
    assert doc["spec"]["versions"][0]["subresources"] == {"status": {}}
    assert _crd("Agent")["spec"]["versions"][0]["subresources"] == {"status": {}}
