"""Workload identities and display names, and that the registry matches them as intended."""

from __future__ import annotations

from pathlib import Path

from agent.registry import Identity, IdentityKind, load_directory
from agent.workloads import Workload
from agent.workloads.model import display_name

EXAMPLES = Path(__file__).resolve().parents[3] / "examples" / "registry"
CID = "32da98c8522068be05a7510a3eddb09cad6ed2f03286180d0e931d0d0b6224a6"


def pod(ns: str = "finance", sa: str = "analyst", **kw: str) -> Workload:
    return Workload("pod", f"{ns}/p", 7, "/kubepods/pod1", namespace=ns, pod="p",
                    pod_uid="u", service_account=sa, **kw)  # type: ignore[arg-type]


def test_pod_identities_are_service_account_and_spiffe() -> None:
    assert pod().identities() == (
        Identity(IdentityKind.SERVICE_ACCOUNT, "finance/analyst"),
        Identity(IdentityKind.SPIFFE, "spiffe://cluster.local/ns/finance/sa/analyst"),
    )


def test_trust_domain_is_configurable() -> None:
    w = pod(trust_domain="prod.example.org")
    assert w.identities()[1].value == "spiffe://prod.example.org/ns/finance/sa/analyst"


def test_pod_unknown_to_the_pod_source_has_no_identities() -> None:
    w = Workload("pod", "pod:u", 7, "/kubepods/podu", pod_uid="u")
    assert w.identities() == ()
    assert not w.pod_known
    assert pod().pod_known


def test_host_identities_are_cgroup_and_unit() -> None:
    w = Workload("host", "a.service", 9, "/system.slice/a.service", unit="a.service")
    assert w.identities() == (
        Identity(IdentityKind.CGROUP, "/system.slice/a.service"),
        Identity(IdentityKind.SYSTEMD_UNIT, "a.service"),
    )
    plain = Workload("host", "/agents/a1", 9, "/agents/a1")
    assert plain.identities() == (Identity(IdentityKind.CGROUP, "/agents/a1"),)


def test_display_names() -> None:
    def name(kind: str = "host", **kw: str) -> str:
        args = {"namespace": "", "pod": "", "pod_uid": "", "unit": "", "runtime": "",
                "container_id": "", "path": "/x"} | kw
        return display_name(kind, **args)  # type: ignore[arg-type]

    assert name("pod", namespace="ns", pod="p", pod_uid="u") == "ns/p"
    assert name("pod", pod_uid="u") == "pod:u"
    assert name(unit="sshd.service") == "sshd.service"
    # a unit that is only the container's own scope names the container instead
    assert name(unit=f"docker-{CID}.scope", runtime="docker", container_id=CID) == \
        "container:docker/32da98c85220"
    assert name(runtime="containerd", container_id=CID) == "container:containerd/32da98c85220"
    # a container inside a service keeps the service's name
    assert name(unit="ci-runner.service", runtime="docker", container_id=CID) == \
        "ci-runner.service"
    assert name() == "/x"


def test_the_example_registry_claims_workloads_by_these_identities() -> None:
    reg = load_directory(EXAMPLES)
    analyst = reg.agent("finance/analyst")
    assert analyst is not None
    assert reg.match_any(pod().identities()) is analyst
    unit = Workload("host", "analyst-agent.service", 1, "/system.slice/analyst-agent.service",
                    unit="analyst-agent.service")
    assert reg.match_any(unit.identities()) is analyst
    subtree = Workload("host", "/manul.slice/analyst/w1", 1, "/manul.slice/analyst/w1")
    assert reg.match_any(subtree.identities()) is analyst
    stranger = Workload("host", "/manul.slice/other", 1, "/manul.slice/other")
    assert reg.match_any(stranger.identities()) is None
    assert reg.match_any(pod(sa="someone-else").identities()) is None
