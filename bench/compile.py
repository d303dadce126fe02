#!/usr/bin/env python3
"""Sandbox compiler cost: 100, 1,000 and 10,000 policies, against cedarpy's parse.

Generates a realistic policy set of N policies: one agent class per ten
policies (file workspaces with forbidden sub-trees and exact secrets,
executables and libraries, CIDR and port-range egress, host-name egress
through destination sets, an SSH guardrail, a gateway-only tool policy),
an agent per class, and a few node-wide guardrails. Then, in the same run,
times `compiler.compile_policies` (parse, validate, specialise, lower to
bytes, for every sandbox) and cedarpy's own parse of the same text
(`cedarpy.PolicySet.from_str`), and prints entry counts and the ratio.
Aim (issue 3): 1,000 policies in under a second, growth no worse than
linear.

    .venv/bin/python bench/compile.py            # about half a minute
    BENCH_SIZES=100,1000 .venv/bin/python bench/compile.py
"""

from __future__ import annotations

import json
import os
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

import cedarpy  # noqa: E402

from compiler import Compilation, EntitiesSource, PolicySource, compile_policies  # noqa: E402

GLOBAL = """
@id("g-no-credentials")
forbid (principal, action in Action::"fileAccess", resource in PathSet::"credentials");
@id("g-no-metadata")
forbid (principal, action == Action::"connectNetwork", resource)
when { resource.ip == ip("169.254.169.254") };
@id("g-libraries")
permit (principal, action == Action::"loadLibrary", resource)
when { resource.path like "/usr/lib/*" || resource.path like "/lib/*" };
@id("g-read-usr")
permit (principal, action == Action::"readFile", resource)
when { resource.path like "/usr/*" || resource.path like "/etc/ssl/*" };
@id("g-dns")
permit (principal, action == Action::"connectNetwork", resource in DestinationSet::"dns");
@id("g-proc-self")
permit (principal, action == Action::"readFile", resource)
when { resource.path like "/proc/self/*" };
@id("g-no-shells")
forbid (principal, action == Action::"exec", resource in PathSet::"shells");
@id("g-no-private")
forbid (principal, action == Action::"connectNetwork", resource)
when { resource.ip.isInRange(ip("192.168.0.0/16")) || resource.ip.isInRange(ip("fc00::/7")) }
unless { resource.ip.isInRange(ip("fd00::/16")) };
@id("g-models")
permit (principal, action == Action::"callLLM", resource) when { resource.name == "openai" };
@id("g-suspended")
forbid (principal in AgentClass::"suspended", action, resource);
"""

CLASS = """
@id("c{i}-files")
permit (principal in AgentClass::"class-{i}", action in Action::"fileAccess", resource)
when {{
  resource.path like "/workspace/class-{i}/*" ||
  resource.path == "/var/run/secrets/class-{i}/key"
}};
@id("c{i}-no-git")
forbid (principal in AgentClass::"class-{i}", action == Action::"writeFile", resource)
when {{ resource.path like "/workspace/class-{i}/.git/*" }};
@id("c{i}-exec")
permit (principal in AgentClass::"class-{i}", action == Action::"exec", resource)
when {{ resource.path like "/opt/class-{i}/bin/*" || resource.path == "/usr/bin/python3" }};
@id("c{i}-net")
permit (principal in AgentClass::"class-{i}", action == Action::"connectNetwork", resource)
when {{
  resource.ip.isInRange(ip("10.{a}.{b}.0/24")) && resource.port >= 8000 && resource.port <= 8099
}};
@id("c{i}-llm")
permit (principal in AgentClass::"class-{i}", action == Action::"connectNetwork", resource)
when {{ resource in DestinationSet::"llm-{j}" }};
@id("c{i}-no-ssh")
forbid (principal in AgentClass::"class-{i}", action == Action::"connectNetwork", resource)
when {{ resource.port == 22 }};
@id("c{i}-tmp")
permit (principal in AgentClass::"class-{i}", action in Action::"fileAccess", resource)
when {{ resource.path like "/tmp/class-{i}/*" }}
unless {{ resource.path like "/tmp/class-{i}/locked/*" }};
@id("c{i}-v6")
permit (principal in AgentClass::"class-{i}", action == Action::"connectNetwork", resource)
when {{ resource.ip.isInRange(ip("fd00:{i:x}::/64")) && resource.protocol == "tcp" }};
@id("c{i}-tools")
permit (principal in AgentClass::"class-{i}", action == Action::"invokeTool", resource)
when {{ context.delegation_depth < 3 }};
@id("c{i}-agent")
forbid (principal == Agent::"agent-{i}", action == Action::"readFile", resource)
when {{ resource.path like "/workspace/class-{i}/private/*" }};
"""
PER_CLASS = 10
LLM_SETS = 20


def generate(n: int) -> tuple[str, str, dict[str, list[str]]]:
    """N policies (10 node-wide, the rest ten per class), entities, resolver."""
    classes = max(1, (n - 10) // PER_CLASS)
    parts = [GLOBAL]
    ents: list[dict[str, object]] = [
        {"uid": {"type": "PathSet", "id": "credentials"}, "attrs": {}, "parents": []},
        {"uid": {"type": "PathSet", "id": "shells"}, "attrs": {}, "parents": []},
        {"uid": {"type": "AgentClass", "id": "suspended"}, "attrs": {}, "parents": []},
        {"uid": {"type": "DestinationSet", "id": "dns"}, "attrs": {}, "parents": []},
        {
            "uid": {"type": "NetworkDestination", "id": "10.96.0.10:53/udp"},
            "attrs": {},
            "parents": [{"type": "DestinationSet", "id": "dns"}],
        },
    ]
    for path in ("/etc/shadow", "/root/.ssh/id_rsa", "/root/.aws/credentials"):
        ents.append(
            {
                "uid": {"type": "FilePath", "id": path},
                "attrs": {"path": path},
                "parents": [{"type": "PathSet", "id": "credentials"}],
            }
        )
    for path in ("/bin/sh", "/bin/bash", "/usr/bin/bash"):
        ents.append(
            {
                "uid": {"type": "Executable", "id": path},
                "attrs": {"path": path},
                "parents": [{"type": "PathSet", "id": "shells"}],
            }
        )
    resolved: dict[str, list[str]] = {}
    for j in range(LLM_SETS):
        host = f"api-{j}.llm.example"
        resolved[host] = [f"198.18.{j}.1", f"198.18.{j}.2"]
        ents.append(
            {"uid": {"type": "DestinationSet", "id": f"llm-{j}"}, "attrs": {}, "parents": []}
        )
        ents.append(
            {
                "uid": {"type": "NetworkDestination", "id": f"{host}:443/tcp"},
                "attrs": {},
                "parents": [{"type": "DestinationSet", "id": f"llm-{j}"}],
            }
        )
    for i in range(classes):
        parts.append(CLASS.format(i=i, a=i // 256, b=i % 256, j=i % LLM_SETS))
        ents.append({"uid": {"type": "AgentClass", "id": f"class-{i}"}, "attrs": {}, "parents": []})
        ents.append(
            {
                "uid": {"type": "Agent", "id": f"agent-{i}"},
                "attrs": {"name": f"agent-{i}", "namespace": "", "owner": "", "team": "",
                          "risk_level": "medium", "risk_score": 2, "capabilities": [],
                          "labels": [], "url": ""},
                "parents": [{"type": "AgentClass", "id": f"class-{i}"}],
            }
        )
    return "".join(parts), json.dumps(ents), resolved


def measure(n: int) -> dict[str, float]:
    text, ents, resolved = generate(n)
    t0 = time.perf_counter()
    comp: Compilation = compile_policies(
        [PolicySource(f"bench-{n}.cedar", text)],
        EntitiesSource("bench.json", ents),
        resolved=resolved,
    )
    t_compile = time.perf_counter() - t0
    t0 = time.perf_counter()
    parsed = cedarpy.PolicySet.from_str(text)
    t_parse = time.perf_counter() - t0
    policies = len(comp.policies)
    assert policies == len(parsed), (policies, len(parsed))
    paths = sum(len(s.maps["sandbox_paths"]) for s in comp.sandboxes)
    nets = sum(len(s.maps["sandbox_net"]) for s in comp.sandboxes)
    return {
        "policies": policies,
        "sandboxes": len(comp.sandboxes),
        "path_entries": paths,
        "net_entries": nets,
        "rules": len(comp.rules),
        "gateway": sum(p.layer != "kernel" for p in comp.policies),
        "compile_s": t_compile,
        "parse_s": t_parse,
    }


def main() -> None:
    sizes = [int(s) for s in os.environ.get("BENCH_SIZES", "100,1000,10000").split(",")]
    rows = [measure(n) for n in sizes]
    head = (
        f"{'policies':>8} {'sandboxes':>9} {'path ent.':>9} {'net ent.':>8} {'rule ids':>8} "
        f"{'gateway':>7} {'compile':>9} {'cedarpy parse':>13} {'ratio':>6} {'us/policy':>9}"
    )
    print(head)
    print("-" * len(head))
    for r in rows:
        print(
            f"{r['policies']:>8.0f} {r['sandboxes']:>9.0f} {r['path_entries']:>9.0f} "
            f"{r['net_entries']:>8.0f} {r['rules']:>8.0f} {r['gateway']:>7.0f} "
            f"{r['compile_s'] * 1e3:>7.0f}ms {r['parse_s'] * 1e3:>11.1f}ms "
            f"{r['compile_s'] / r['parse_s']:>5.0f}x {r['compile_s'] / r['policies'] * 1e6:>9.0f}"
        )
    by_n = {int(r["policies"]): r for r in rows}
    thousand = next((r for n, r in by_n.items() if 1000 <= n < 2000), None)
    if thousand is not None:
        verdict = "met" if thousand["compile_s"] < 1.0 else "MISSED"
        print(f"aim: ~1,000 policies in under 1 s: {thousand['compile_s']:.2f} s ({verdict})")
    if len(rows) > 1:
        first, last = rows[0], rows[-1]
        growth = (last["compile_s"] / first["compile_s"]) / (last["policies"] / first["policies"])
        print(
            f"growth {first['policies']:.0f} -> {last['policies']:.0f} policies: "
            f"{growth:.2f}x linear (<= ~1 is linear or better)"
        )


if __name__ == "__main__":
    main()
