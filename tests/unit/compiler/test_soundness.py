"""What the compiler emits for the sandbox's soundness checks, against cedarpy.

* openRawSocket: one `sandbox_sockets` entry per socket kind, deciding what
  cedarpy decides on `SocketKind::"raw"` / `SocketKind::"packet"`;
* the refer rule (link / rename): the reference evaluator's answer, from
  the compiled bytes, equals the rule stated on cedarpy's decisions (write
  on the new name, and the new name grants nothing the old one does not);
* the subtree summaries (`sub_or`, `sub_and`) bound the rights of every
  path below a directory, which the kernel's directory-rename check needs.
"""

from __future__ import annotations

import itertools
import json

import cedarpy
import pytest
from cedar_oracle import agent_attrs

from compiler import EntitiesSource, PolicySource, compile_policies, layout
from compiler.evaluate import SandboxEvaluator
from compiler.schema import PATH_ACTIONS, load_schema

A = 'Agent::"a"'
POLICIES = f"""
@id("ws") permit (principal == {A}, action in [Action::"readFile", Action::"writeFile"], resource)
  when {{ resource.path like "/ws/*" }};
@id("bin") permit (principal == {A}, action == Action::"exec", resource)
  when {{ resource.path like "/ws/bin/*" }};
@id("git") forbid (principal, action == Action::"writeFile", resource)
  when {{ resource.path like "/ws/.git/*" }};
@id("ro") permit (principal == {A}, action == Action::"readFile", resource)
  when {{ resource.path like "/ro/*" }};
@id("secret") forbid (principal, action in Action::"fileAccess", resource)
  when {{ resource.path == "/ws/secret" }};
@id("raw") permit (principal == {A}, action == Action::"openRawSocket",
                   resource == SocketKind::"raw");
@id("no-raw-b") forbid (principal == Agent::"b", action == Action::"openRawSocket", resource);
"""
ENTITIES = [{"uid": {"type": "Agent", "id": i}, "attrs": agent_attrs(i), "parents": []}
            for i in "ab"]
PATHS = ["/ws/x", "/ws/bin/x", "/ws/.git/x", "/ro/x", "/ws/secret", "/other", "/ws/d/y"]


@pytest.fixture(scope="module")
def evaluators() -> dict[str, SandboxEvaluator]:
    comp = compile_policies([PolicySource("p.cedar", POLICIES)],
                            EntitiesSource("e.json", json.dumps(ENTITIES)))
    return {s.name: SandboxEvaluator(s) for s in comp.sandboxes}


def cedar(principal: str, action: str, rtype: str, rid: str, attrs: dict[str, object]) -> bool:
    ents = [*ENTITIES, {"uid": {"type": rtype, "id": rid}, "attrs": attrs, "parents": []}]
    req = {"principal": principal, "action": f'Action::"{action}"',
           "resource": f'{rtype}::"{rid}"', "context": {}}
    r = cedarpy.is_authorized(req, POLICIES, json.dumps(ents), schema=load_schema().cedar)
    return r.allowed


def rights(principal: str, path: str) -> int:
    rtype = {"exec": "Executable", "loadLibrary": "Executable"}
    return sum(1 << i for i, a in enumerate(PATH_ACTIONS)
               if cedar(principal, a, rtype.get(a, "FilePath"), path, {"path": path}))


@pytest.mark.parametrize("who", ["a", "b"])
@pytest.mark.parametrize("kind", ["raw", "packet"])
def test_raw_sockets_decided_as_cedar_does(evaluators: dict[str, SandboxEvaluator],
                                           who: str, kind: str) -> None:
    ev = evaluators[f'Agent::"{who}"']
    want = cedar(f'Agent::"{who}"', "openRawSocket", "SocketKind", kind, {})
    assert ev.socket(kind).allow is want
    assert want is (who == "a" and kind == "raw")


def test_socket_entries_name_their_policies(evaluators: dict[str, SandboxEvaluator]) -> None:
    a, b = evaluators[A], evaluators['Agent::"b"']
    entries = {e.what: e for e in a.sandbox.maps["sandbox_sockets"]}
    assert set(entries) == {'SocketKind::"raw"'}  # packet: no entry, default deny
    assert layout.decode_sock_val(entries['SocketKind::"raw"'].value)[0] == 1
    assert {e.what for e in b.sandbox.maps["sandbox_sockets"]} == {
        'SocketKind::"raw"', 'SocketKind::"packet"'}  # denied by a forbid: named
    assert not b.socket("raw").allow and b.socket("raw").rule_id != 0


def test_rights_and_refer_match_cedar(evaluators: dict[str, SandboxEvaluator]) -> None:
    ev = evaluators[A]
    want = {p: rights(A, p) for p in PATHS}
    assert {p: ev.rights(p) for p in PATHS} == want
    write = 1 << PATH_ACTIONS.index("writeFile")
    for old, new in itertools.permutations(PATHS, 2):
        allowed = bool(want[new] & write) and not want[new] & ~want[old]
        assert ev.refer(old, new) is allowed, (old, new)
        both = allowed and not want[old] & ~want[new]
        assert ev.refer(old, new, exchange=True) is both, (old, new)


def test_subtree_summaries_bound_every_path_below(evaluators: dict[str, SandboxEvaluator]) -> None:
    ev = evaluators[A]
    for d in ("/ws", "/ws/d", "/ro", "/"):
        raw = (d.rstrip("/") + "/").encode()
        hit = ev.paths.lookup(layout.path_key(ev.sandbox.sandbox_id, raw, exact=False))
        assert hit is not None
        v = layout.manul_path_val.from_buffer_copy(hit)
        below = [p for p in PATHS if p.startswith(raw.decode())]
        for p in below:
            r = rights(A, p)
            assert r & ~(v.sub_or | v.allow) == 0, (d, p)  # nothing below grants more
            assert (v.sub_and & v.allow) & ~r == 0, (d, p)  # nothing below grants less
