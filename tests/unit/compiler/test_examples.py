"""The shipped examples do what the design brief says, decided from bytes."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from compiler import Compilation, EntitiesSource, PolicySource, Querier, compile_policies

EXAMPLES = Path(__file__).resolve().parents[3] / "examples" / "policies"


@pytest.fixture(scope="module")
def comp() -> Compilation:
    return compile_policies(
        [PolicySource(p.name, p.read_text()) for p in sorted(EXAMPLES.glob("*.cedar"))],
        EntitiesSource("entities.json", (EXAMPLES / "entities.json").read_text()),
        resolved=json.loads((EXAMPLES / "hosts.json").read_text()),
    )


def ask(comp: Compilation, action: str, **attrs: object) -> str:
    answer = Querier(comp).answer(
        {
            "principal": 'Agent::"analyst-1"',
            "action": f'Action::"{action}"',
            "resource_attrs": attrs,
        }
    )
    assert answer.layer == "kernel"
    return answer.decision


@pytest.mark.parametrize(
    ("action", "path", "decision"),
    [
        ("readFile", "/workspace/analyst-q3/data.csv", "allow"),
        ("writeFile", "/workspace/analyst-q3/out.csv", "allow"),
        ("writeFile", "/workspace/analyst-", "allow"),
        ("writeFile", "/var/run/secrets/analyst-key", "allow"),
        ("readFile", "/var/run/secrets/analyst-key2", "deny"),  # exact, not a prefix
        ("readFile", "/var/run/secrets/analyst-keys/x", "deny"),
        ("writeFile", "/workspace/coder/x", "deny"),
        ("readFile", "/etc/shadow", "deny"),  # guardrail
        ("readFile", "/usr/lib/python3/os.py", "allow"),  # runtime baseline
        ("writeFile", "/usr/lib/python3/os.py", "deny"),
        ("loadLibrary", "/usr/lib/x86_64-linux-gnu/libc.so.6", "allow"),
        ("exec", "/usr/bin/python3.12", "allow"),
        ("exec", "/usr/bin/bash", "deny"),  # no shells for analysts
    ],
)
def test_analyst_files(comp: Compilation, action: str, path: str, decision: str) -> None:
    assert ask(comp, action, path=path) == decision


@pytest.mark.parametrize(
    ("ip", "port", "proto", "decision"),
    [
        ("162.159.140.245", 443, "tcp", "allow"),  # api.openai.com, resolved
        ("162.159.140.245", 80, "tcp", "deny"),  # the member is :443/tcp
        ("2607:6bc0::10", 443, "tcp", "allow"),  # api.anthropic.com over IPv6
        ("10.96.0.20", 8443, "tcp", "allow"),  # the gateway
        ("fd00:96::20", 8443, "tcp", "allow"),
        ("10.96.0.20", 8443, "udp", "deny"),
        ("10.96.0.10", 53, "udp", "deny"),  # baseline DNS, but analyst-net forbids it
        ("151.101.0.223", 443, "tcp", "deny"),  # pypi: for coders only
        ("8.8.8.8", 443, "tcp", "deny"),
        ("169.254.169.254", 80, "tcp", "deny"),
    ],
)
def test_analyst_network(comp: Compilation, ip: str, port: int, proto: str, decision: str) -> None:
    assert ask(comp, "connectNetwork", ip=ip, port=port, protocol=proto) == decision


def test_layers(comp: Compilation) -> None:
    layers = {p.policy: p.layer for p in comp.policies}
    assert layers["analyst-files"] == layers["analyst-net"] == "kernel"
    assert layers["tools-shallow-delegation"] == layers["analyst-models"] == "gateway"
    assert layers["suspended-agent"] == "partial"
    assert all(not s.approximations for s in comp.sandboxes)


def test_gateway_query(comp: Compilation) -> None:
    q = Querier(comp)
    base = {
        "action": 'Action::"callLLM"',
        "resource": 'LLMModel::"gpt"',
        "context": {"delegation_depth": 0},
    }
    attrs = {"provider": "openai", "model": "gpt-4o"}
    ok = q.answer({**base, "principal": 'Agent::"analyst-1"', "resource_attrs": attrs})
    assert (ok.decision, ok.policies, ok.layer) == ("allow", ("analyst-models",), "gateway")
    no = q.answer({**base, "principal": 'Agent::"coder-1"', "resource_attrs": attrs})
    assert (no.decision, no.policies) == ("deny", ())
