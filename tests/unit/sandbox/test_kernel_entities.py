"""A sandbox compiled from its cut of the registry decides as one compiled
from the whole registry (`assign.kernel_entities`).

The cut keeps what the agent's policies can reach: the agent, every entity
the policies name however the literal is spelled, and what those and the
set's entities file reach through parents and attribute references. An
entity left out reads as absent, which would turn a forbid off."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from agent.registry import Registry, load_directory
from agent.registry.entities import registry_entities
from agent.registry.policyset import PolicySet
from agent.sandbox.apply import PolicyInput, compile_all, select
from agent.sandbox.assign import kernel_entities
from compiler import EntitiesSource, PolicySource, SandboxEvaluator

EXAMPLES = Path(__file__).parents[3] / "examples" / "registry"
ME = "finance/analyst"

# Each forbid names another registry entity; the permit is the control.
LITERALS = [
    'Agent::"dev/coder"',
    'Agent :: "dev/coder"',  # spaces around `::`
    'Agent::"dev\\u{2f}coder"',  # an escaped `/`
    'Agent::"d\\u{65}v/coder"',  # an escaped letter
]


def _decide(inputs: PolicyInput, path: str) -> tuple[bool, tuple[str, ...]]:
    comp = compile_all(inputs, only={f"Agent::{json.dumps(ME)}"})
    sb = select(comp, f"Agent::{json.dumps(ME)}")
    verdict = SandboxEvaluator(sb).path("readFile", path)
    prov = comp.rules.get(verdict.rule_id)
    return verdict.allow, (prov.policies if prov else ())


def _both(registry: Registry, text: str, entities: str | None = None
          ) -> tuple[tuple[bool, tuple[str, ...]], tuple[bool, tuple[str, ...]]]:
    efile = EntitiesSource("entities.json", entities) if entities is not None else None
    ps = PolicySet("test", (PolicySource("p.cedar", text),), efile)
    agent = next(a for a in registry.agents if a.meta.key == ME)
    cut = PolicyInput(ps.sources, efile, {}, kernel_entities(registry, agent, ps))
    full = PolicyInput(ps.sources, efile, {}, tuple(registry_entities(registry)))
    return _decide(cut, "/etc/passwd"), _decide(full, "/etc/passwd")


@pytest.fixture(scope="module")
def registry() -> Registry:
    return load_directory(EXAMPLES)


@pytest.mark.parametrize("literal", LITERALS)
def test_a_literal_is_found_however_it_is_spelled(registry: Registry, literal: str) -> None:
    text = f"""@id("allow") permit (principal, action, resource);
@id("f") forbid (principal, action, resource) when {{ {literal}.team != principal.team }};"""
    cut, full = _both(registry, text)
    assert full == (False, ("f",))  # the forbid applies with the whole registry
    assert cut == full


def test_references_from_the_entities_file_are_followed(registry: Registry) -> None:
    text = """@id("allow") permit (principal, action, resource);
@id("risky-set") forbid (principal, action == Action::"readFile", resource)
  when { ToolSet::"finance/finance-tools/extra".server.risk_score >= 1 };"""
    efile = [{"uid": {"type": "ToolSet", "id": "finance/finance-tools/extra"},
              "attrs": {"name": "extra",
                        "server": {"__entity": {"type": "MCPServer",
                                                "id": "finance/finance-tools"}}},
              "parents": [{"type": "MCPServer", "id": "finance/finance-tools"}]}]
    cut, full = _both(registry, text, json.dumps(efile))
    assert full == (False, ("risky-set",))
    assert cut == full


def test_an_unnamed_agent_is_left_out(registry: Registry) -> None:
    """The cut is a cut: an agent no policy names does not come along."""
    ps = PolicySet("test", (PolicySource("p.cedar", "permit (principal, action, resource);"),),
                   None)
    agent = next(a for a in registry.agents if a.meta.key == ME)
    ids = {e["uid"]["id"] for e in kernel_entities(registry, agent, ps)}
    assert ME in ids and "dev/coder" not in ids


def test_the_registry_is_read_once_for_every_agent(registry: Registry,
                                                   monkeypatch: pytest.MonkeyPatch) -> None:
    """The reconcile loop asks for every sandboxed agent every interval: the
    registry's entities, the merge and the whole-registry check are worked out
    once per (registry, policy set) pair in force, not once per agent."""
    from agent.sandbox import assign

    calls = []
    real = assign.registry_entities
    monkeypatch.setattr(assign, "registry_entities",
                        lambda reg: calls.append(1) or real(reg))
    ps = PolicySet("test", (PolicySource("p.cedar", "permit (principal, action, resource);"),),
                   None)
    for agent in registry.agents:
        kernel_entities(registry, agent, ps)
    assert len(registry.agents) > 1 and len(calls) == 1
    other = PolicySet("test", ps.sources, None)  # a new reading: worked out again
    kernel_entities(registry, registry.agents[0], other)
    assert len(calls) == 2
