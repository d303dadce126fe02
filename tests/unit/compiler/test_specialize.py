"""Partial evaluation per sandbox and action, seen through the printable IR."""

from __future__ import annotations

import json

import pytest

from compiler import Compilation, EntitiesSource, PolicySource, compile_policies

TEXT = """
@id("p1") permit(principal, action == Action::"readFile", resource)
  when { principal in AgentClass::"x" && resource.path like "/x/*" };
@id("p2") forbid(principal, action == Action::"exec", resource)
  when { context has delegation_depth || resource.path == "/bin/sh" };
@id("p3") permit(principal, action == Action::"connectNetwork", resource)
  when { 22 > resource.port && resource.port != 7 };
@id("p4") permit(principal, action == Action::"connectNetwork", resource)
  when { resource == NetworkDestination::"api.openai.com:443/tcp"
      || resource == NetworkDestination::"[2001:db8::5]:443/tcp" };
@id("p5") permit(principal, action == Action::"connectNetwork", resource)
  when { resource in DestinationSet::"llm" };
@id("p6") permit(principal, action == Action::"writeFile", resource)
  when { 9223372036854775807 + 1 > 0 };
@id("p7") permit(principal, action == Action::"connectNetwork", resource)
  when { resource.ip.isLoopback() };
@id("p8") permit(principal, action == Action::"readFile", resource)
  when { resource.path like "/var/log/*/x" };
@id("p9") permit(principal, action == Action::"loadLibrary", resource)
  when { resource.path like "/lib/*" && ["a", "b"].contains("a") };
@id("p10") permit(principal, action, resource is FilePath)
  when { action == Action::"writeFile" && resource.path like "/w/*" };
"""
ENTITIES = [
    {"uid": {"type": "DestinationSet", "id": "llm"}, "attrs": {}, "parents": []},
    {
        "uid": {"type": "NetworkDestination", "id": "api.openai.com:443/tcp"},
        "attrs": {},
        "parents": [{"type": "DestinationSet", "id": "llm"}],
    },
]


@pytest.fixture(scope="module")
def comp() -> Compilation:
    return compile_policies(
        [PolicySource("s.cedar", TEXT)], EntitiesSource("e.json", json.dumps(ENTITIES))
    )


def rules(comp: Compilation, sandbox: str, action: str) -> list[str]:
    s = comp.sandbox(sandbox)
    assert s is not None
    return [str(r) for r in s.ir.rules[action]]


def test_principal_folds_per_sandbox(comp: Compilation) -> None:
    assert 'permit p1: path like "/x/*"' in rules(comp, 'AgentClass::"x"', "readFile")
    assert not any("p1" in r for r in rules(comp, "default", "readFile"))


def test_kernel_context_is_empty(comp: Compilation) -> None:
    assert rules(comp, "default", "exec") == ['forbid p2: path == "/bin/sh"']


def test_ports_become_intervals(comp: Compilation) -> None:
    assert "permit p3: (port in 0..21 && !(port == 7))" in rules(comp, "default", "connectNetwork")


def test_destinations_by_uid_and_set(comp: Compilation) -> None:
    net = rules(comp, "default", "connectNetwork")
    # A connection is named by its address: a host-named uid never equals it.
    assert "permit p4: (ip in 2001:db8::5/128 && port == 443 && protocol in {tcp})" in net
    assert (
        "permit p5: (resource has host && host in {api.openai.com} && port == 443 "
        "&& protocol in {tcp})"
    ) in net
    assert "permit p7: (ip in 127.0.0.0/8 || ip in ::1/128)" in net


def test_static_errors_drop_the_policy(comp: Compilation) -> None:
    assert not any("p6" in r for r in rules(comp, "default", "writeFile"))


def test_static_sets_fold(comp: Compilation) -> None:
    assert rules(comp, "default", "loadLibrary") == ['permit p9: path like "/lib/*"']


def test_action_in_condition_folds(comp: Compilation) -> None:
    assert rules(comp, "default", "writeFile") == ['permit p10: path like "/w/*"']
    assert not any("p10" in r for r in rules(comp, "default", "readFile"))


def test_inner_star_is_unknown(comp: Compilation) -> None:
    assert (
        "permit p8: unknown(unsupported pattern `/var/log/*/x`: only a trailing `*` "
        "compiles to the kernel)"
    ) in rules(comp, "default", "readFile")


def test_ir_prints(comp: Compilation) -> None:
    s = comp.sandbox("default")
    assert s is not None
    text = str(s.ir)
    assert text.splitlines()[0] == 'sandbox default (id 1, principal Agent::"manul:default")'
    assert '  exec:\n    forbid p2: path == "/bin/sh"\n' in text


@pytest.mark.parametrize("condition, reads", [
    ("true", frozenset()),
    ('context.tool == "x" && context has prompt', frozenset({"tool", "prompt"})),
    ("context.chain.contains(principal.name)", frozenset({"chain"})),
    ("context == {}", None),  # the whole context: nothing may be left out
    ("[context].contains({})", None),
])
def test_context_reads_name_what_a_policy_can_see(condition: str, reads: object) -> None:
    """The decision point hands Cedar only the context attributes the policies
    it evaluates read; a policy using the context whole gets all of it."""
    from compiler import load_policies

    text = f"permit (principal, action == Action::\"invokeTool\", resource) when {{ {condition} }};"
    (pol,) = load_policies([PolicySource("p.cedar", text)], validate=False).policies
    assert pol.context_reads() == reads
