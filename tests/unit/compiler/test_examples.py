"""The shipped policy folder does what the design brief says, decided from bytes.

One folder (`examples/policies`) with the example registry's agents: the
kernel part decided by the reference evaluator on the compiled entries, the
gateway part by cedarpy on the same set (`Querier`).
"""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from agent.registry import load_directory
from agent.registry.entities import registry_entities
from agent.registry.policyset import read_paths
from compiler import Compilation, Querier, compile_policies

EXAMPLES = Path(__file__).resolve().parents[3] / "examples" / "policies"
REGISTRY = EXAMPLES.parent / "registry"
ANALYST = 'Agent::"finance/analyst"'


@pytest.fixture(scope="module")
def comp() -> Compilation:
    ps = read_paths([str(EXAMPLES)])
    return compile_policies(
        ps.sources, ps.entities,
        resolved=json.loads((EXAMPLES / "hosts.json").read_text()),
        registry=registry_entities(load_directory(REGISTRY)),
    )


def ask(comp: Compilation, action: str, principal: str = ANALYST, **attrs: object) -> str:
    answer = Querier(comp).answer(
        {"principal": principal, "action": f'Action::"{action}"', "resource_attrs": attrs}
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
        ("readFile", "/data/finance/q3.parquet", "allow"),  # team == "finance", folded in
        ("writeFile", "/data/finance/q3.parquet", "deny"),
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


def test_team_data_is_the_finance_teams(comp: Compilation) -> None:
    coder = 'Agent::"dev/coder"'
    assert ask(comp, "readFile", coder, path="/data/finance/q3.parquet") == "deny"
    assert ask(comp, "readFile", coder, path="/workspace/repo/main.py") == "allow"


def test_layers(comp: Compilation) -> None:
    layers = {p.policy: p.layer for p in comp.policies}
    assert layers["analyst-files"] == layers["analyst-net"] == "kernel"
    assert layers["finance-team-data"] == layers["critical-risk-gateway-only"] == "kernel"
    assert layers["quarantined-callers"] == layers["agents-call-registered-models"] == "gateway"
    assert layers["high-risk-no-risky-tools"] == "gateway"
    assert layers["suspended-agent"] == "both"
    # Agents' own sandboxes fold their attributes in exactly; class and default
    # sandboxes stand for any agent, so only there are principal reads approximated.
    for s in comp.sandboxes:
        if s.principal.id.startswith("manul:"):
            assert {a.policy for a in s.approximations} <= {
                "finance-team-data", "critical-risk-gateway-only"}, s.name
            assert s.approximations, s.name
        else:
            assert not s.approximations, s.name


def test_gateway_query(comp: Compilation) -> None:
    q = Querier(comp)
    ctx = json.loads((EXAMPLES / "requests.jsonl").read_text().splitlines()[-1])["context"]
    base = {"action": 'Action::"invokeTool"',
            "resource": 'Tool::"finance/finance-tools/get_balance"'}
    ok = q.answer({**base, "principal": ANALYST, "context": {**ctx, "quarantined": False}})
    assert (ok.decision, ok.policies, ok.layer) == (
        "allow", ("finance-agents-invoke-finance-tools",), "gateway")
    no = q.answer({**base, "principal": 'Agent::"support/support-bot"',
                   "context": {**ctx, "quarantined": False}})
    assert (no.decision, no.policies) == ("deny", ())
    moving = q.answer({**base, "principal": ANALYST, "context": {**ctx, "quarantined": False},
                       "resource": 'Tool::"finance/finance-tools/transfer_funds"'})
    assert (moving.decision, moving.policies) == ("deny", ("payments-need-low-risk",))
