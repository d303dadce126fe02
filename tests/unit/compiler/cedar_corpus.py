"""The differential corpus: policy sets that stress what the compiler does.

Each `Case` is a policy set, its entities and a resolver result. `exact`
cases must agree with cedarpy on every request, reasons included; the others
are approximated on purpose and must only be sound (never allow what Cedar
denies). Kept as data so the CI-size and nightly-size tests share it.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from cedar_oracle import Case, agent_attrs

from agent.registry import load_directory
from agent.registry.entities import registry_entities
from compiler.entities import merge_entities

CORPUS = Path(__file__).parent / "corpus"
EXAMPLES = Path(__file__).parents[3] / "examples" / "policies"
REGISTRY = Path(__file__).parents[3] / "examples" / "registry"


def ent(t: str, i: str, *parents: tuple[str, str], **attrs: Any) -> dict[str, Any]:
    """An entity; an Agent gets the registry's attributes (`team=`, `risk=`, ...)."""
    if t in ("FilePath", "Executable"):
        attrs = {"path": i}
    elif t == "Agent":
        attrs = agent_attrs(i, **attrs)
    return {
        "uid": {"type": t, "id": i},
        "attrs": attrs,
        "parents": [{"type": pt, "id": pi} for pt, pi in parents],
    }


ANALYST = ("AgentClass", "data-analyst")
CODER = ("AgentClass", "coder")
BASE = [
    ent("AgentClass", "all-agents"),
    ent("AgentClass", "data-analyst", ("AgentClass", "all-agents")),
    ent("AgentClass", "senior-analyst", ANALYST),
    ent("AgentClass", "coder", ("AgentClass", "all-agents")),
    ent("Agent", "ana", ANALYST),
    ent("Agent", "sam", ("AgentClass", "senior-analyst")),
    ent("Agent", "cody", CODER),
    ent("Agent", "orphan"),
]
# Agents that differ in every attribute the principal-attributes case reads.
PEOPLE = [
    *BASE[:4],
    ent("Agent", "fin-lo", ANALYST, team="finance", risk="low", capabilities=("reports",)),
    ent("Agent", "fin-hi", ANALYST, team="finance", risk="critical"),
    ent("Agent", "ops", CODER, team="platform", risk="high", capabilities=("deploy",)),
    ent("Agent", "nobody", team="", risk="medium"),
]
NET = [
    ent("DestinationSet", "approved-llm"),
    ent("DestinationSet", "gateway"),
    ent("DestinationSet", "egress", ("DestinationSet", "approved-llm")),
    ent("NetworkDestination", "api.openai.com:443/tcp", ("DestinationSet", "approved-llm")),
    ent("NetworkDestination", "api.anthropic.com:443/tcp", ("DestinationSet", "approved-llm")),
    ent("NetworkDestination", "10.96.0.10:8443/tcp", ("DestinationSet", "gateway")),
    ent("NetworkDestination", "[fd00::10]:8443/tcp", ("DestinationSet", "gateway")),
    ent("NetworkDestination", "dns.internal:53/udp", ("DestinationSet", "egress")),
]
RESOLVED = {
    "api.openai.com": ["162.159.140.245", "172.66.0.243", "2606:4700::6812:1"],
    "api.anthropic.com": ["160.79.104.10"],
    "dns.internal": ["10.96.0.53"],
    "evil.example": ["203.0.113.66"],
}
PATHS = [
    ent("PathSet", "secrets"),
    ent("PathSet", "k8s-secrets", ("PathSet", "secrets")),
    ent("FilePath", "/etc/shadow", ("PathSet", "secrets")),
    ent(
        "FilePath",
        "/var/run/secrets/kubernetes.io/serviceaccount/token",
        ("PathSet", "k8s-secrets"),
    ),
    ent("FilePath", "/root/.ssh/id_rsa", ("PathSet", "secrets")),
    ent("PathSet", "shells"),
    ent("Executable", "/bin/sh", ("PathSet", "shells")),
    ent("Executable", "/bin/bash", ("PathSet", "shells")),
    ent("Executable", "/usr/bin/python3"),
]


def case(
    name: str,
    entities: list[dict[str, Any]] | None = None,
    resolved: dict[str, list[str]] | None = None,
    *,
    exact: bool = True,
) -> Case:
    text = (CORPUS / f"{name}.cedar").read_text("utf-8")
    return Case(name, text, entities or [], resolved or {}, exact)


CASES: list[Case] = [
    case("brief-analyst", BASE + NET, RESOLVED),
    case("prefix-overlap"),
    case("forbid-inside-permit"),
    case("exact-vs-prefix"),
    case("escaped-star"),
    case("everything-but"),
    case("path-sets", BASE + PATHS),
    case("exec-sets", BASE + PATHS),
    case("class-hierarchy", BASE),
    case("principal-in-condition", BASE),
    case("action-groups"),
    case("action-in-condition"),
    case("unless-clauses"),
    case("cidr-overlap"),
    case("cidr-forbid-precedence"),
    case("ipv6"),
    case("loopback-multicast"),
    case("port-ranges"),
    case("protocols"),
    case("cidr-ports-protocols"),
    case("destination-sets", BASE + NET, RESOLVED),
    case("hosts", None, RESOLVED),
    case("host-errors", None, RESOLVED),
    case("resource-equality", None, RESOLVED),
    case("static-errors"),
    case("ill-typed-at-run-time", BASE),
    case("principal-is-in", BASE),
    case("literal-resources", BASE + NET + PATHS, RESOLVED),
    case("static-constants"),
    case("gateway-and-partial", BASE),
    case("default-deny"),
    case("unicode-and-bytes"),
    case("long-paths"),
    case("many-agents", BASE),
    case("mixed-kernel", BASE + NET, RESOLVED),
    case("approx-inner-star-permit", exact=False),
    case("approx-port-arithmetic", exact=False),
    case(
        "approx-shared-address",
        None,
        {"a.example": ["198.51.100.7", "198.51.100.8"], "b.example": ["198.51.100.8"]},
        exact=False,
    ),
    case("principal-attributes", PEOPLE + NET, RESOLVED, exact=False),
    # The shipped folder, every file (kernel and gateway policies) as one
    # policy set, with the example registry's agents (the one builder).
    Case(
        "examples",
        "\n".join(f.read_text("utf-8") for f in sorted(EXAMPLES.rglob("*.cedar"))),
        merge_entities(
            registry_entities(load_directory(REGISTRY)),
            "entities.json",
            (EXAMPLES / "entities.json").read_text("utf-8"),
        ),
        json.loads((EXAMPLES / "hosts.json").read_text("utf-8")),
        exact=False,  # class sandboxes approximate the policies on principal attributes
    ),
]
