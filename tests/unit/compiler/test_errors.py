"""Every way a policy can fail gives a clear, located error, and nothing else.

Cedar-style messages (lowercase, input in backticks, parts joined by
colons) naming the file, the policy's `@id` and the line:col, for:
malformed Cedar, schema violations, unknown actions, `like` patterns with
an inner `*` in a forbid, paths longer than a kernel key, templates,
duplicate ids, and broken entities files.
"""

from __future__ import annotations

import json

import pytest

from compiler import CompileError, EntitiesSource, Location, PolicySource, compile_policies
from compiler.errors import (
    EntitiesError,
    InputError,
    LimitError,
    ParseError,
    SchemaError,
    UnsupportedError,
)


def compile_text(text: str, name: str = "p.cedar", entities: list[object] | None = None) -> object:
    ents = EntitiesSource("e.json", json.dumps(entities)) if entities is not None else None
    return compile_policies([PolicySource(name, text)], ents)


def only(err: CompileError) -> tuple[str, Location | None, str | None]:
    assert len(err.diagnostics) == 1, err.diagnostics
    d = err.diagnostics[0]
    return d.message, d.location, d.policy


def test_malformed_cedar_names_file_policy_and_position() -> None:
    text = (
        '@id("ok")\npermit(principal, action, resource);\n\n'
        '@id("broken")\npermit(principal, action == Action::"readFile", resource)\n'
        '  when { resource.path like "/a*" &&  };\n'
    )
    with pytest.raises(ParseError) as ei:
        compile_text(text, "broken.cedar")
    message, loc, policy = only(ei.value)
    assert message == "unexpected token `}`"
    assert loc == Location("broken.cedar", 6, 39)
    assert policy == "broken"
    assert str(ei.value) == "broken.cedar:6:39: policy `broken`: unexpected token `}`"


def test_unterminated_string_points_at_its_quote() -> None:
    with pytest.raises(ParseError) as ei:
        compile_text('permit(principal, action, resource)\nwhen { resource.path == "/a };')
    _, loc, _ = only(ei.value)
    assert loc == Location("p.cedar", 2, 25)


def test_schema_violation_points_at_the_attribute() -> None:
    text = (
        '@id("typo")\npermit(principal, action == Action::"readFile", resource)\n'
        '  when { resource.pth like "/a*" };'
    )
    with pytest.raises(SchemaError) as ei:
        compile_text(text)
    message, loc, policy = only(ei.value)
    assert message == "attribute `pth` on entity type `FilePath` not found"
    assert (loc, policy) == (Location("p.cedar", 3, 19), "typo")


def test_unsafe_optional_host_is_a_schema_error() -> None:
    text = (
        'permit(principal, action == Action::"connectNetwork", resource) '
        'when { resource.host == "x" };'
    )
    with pytest.raises(SchemaError) as ei:
        compile_text(text)
    assert "optional attribute `host`" in ei.value.diagnostics[0].message
    assert ei.value.diagnostics[0].policy == "p.cedar:1"  # no @id: file and line


def test_unknown_action() -> None:
    text = '\n@id("fly")\npermit(principal, action == Action::"fly", resource);'
    with pytest.raises(SchemaError) as ei:
        compile_text(text)
    first = ei.value.diagnostics[0]
    assert first.message == 'unrecognized action `Action::"fly"`'
    assert (first.location, first.policy) == (Location("p.cedar", 3, 29), "fly")


def test_kernel_action_context_is_empty() -> None:
    text = (
        '@id("ctx") permit(principal, action == Action::"readFile", resource) '
        "when { context.depth < 2 };"
    )
    with pytest.raises(SchemaError) as ei:
        compile_text(text)
    assert ei.value.diagnostics[0].message == (
        'attribute `depth` in context for Action::"readFile" not found'
    )


def test_inner_star_in_forbid_is_refused_at_the_pattern() -> None:
    text = (
        '@id("analyst-net")\nforbid(principal, action == Action::"readFile", resource)\n'
        '  when { resource.path like "/a/*/b" };'
    )
    with pytest.raises(UnsupportedError) as ei:
        compile_text(text)
    assert str(ei.value) == (
        "p.cedar:3:29: policy `analyst-net`: unsupported pattern `/a/*/b`: "
        "only a trailing `*` compiles to the kernel"
    )


def test_inner_star_in_forbid_unless_is_refused_too() -> None:
    text = (
        'forbid(principal, action == Action::"exec", resource) '
        'unless { resource.path like "*.py" };'
    )
    with pytest.raises(UnsupportedError, match=r"unsupported pattern `\*\.py`"):
        compile_text(text)


def test_inner_star_in_permit_narrows_and_is_reported() -> None:
    text = (
        '@id("logs") permit(principal, action == Action::"readFile", resource) '
        'when { resource.path like "/var/log/*/x" };'
    )
    comp = compile_text(text)
    approx = [a for s in comp.sandboxes for a in s.approximations]  # type: ignore[attr-defined]
    assert {str(a) for a in approx} == {
        "policy `logs`: `readFile`: unsupported pattern `/var/log/*/x`: only a trailing `*` "
        "compiles to the kernel: the kernel allows less"
    }


def test_inner_star_on_gateway_only_forbid_is_fine() -> None:
    text = (
        'forbid(principal, action == Action::"callLLM", resource) '
        'when { context.model like "*-mini-*" };'
    )
    comp = compile_text(text)
    assert [p.layer for p in comp.policies] == ["gateway"]  # type: ignore[attr-defined]


@pytest.mark.parametrize(
    ("literal", "ok"),
    [
        ('resource.path == "/' + "x" * 250 + '"', True),  # 251 bytes + NUL = 252
        ('resource.path == "/' + "x" * 251 + '"', False),
        ('resource.path like "/' + "x" * 251 + '*"', True),  # 252-byte prefix
        ('resource.path like "/' + "x" * 252 + '*"', False),
        ('["/' + "é" * 126 + '"].contains(resource.path)', False),  # 253 bytes in UTF-8
    ],
)
def test_oversized_paths(literal: str, ok: bool) -> None:
    text = (
        f'@id("long") permit(principal, action == Action::"readFile", resource) when {{{literal}}};'
    )
    if ok:
        compile_text(text)
        return
    with pytest.raises(LimitError) as ei:
        compile_text(text)
    message, loc, policy = only(ei.value)
    assert policy == "long" and loc is not None and loc.line == 1
    assert "a kernel key holds at most" in message


def test_oversized_scope_path() -> None:
    path = "/" + "b" * 300
    text = f'permit(principal, action == Action::"exec", resource == Executable::"{path}");'
    with pytest.raises(LimitError, match="is 301 bytes"):
        compile_text(text)


def test_nul_in_path() -> None:
    with pytest.raises(LimitError, match="contains a NUL character"):
        compile_text(
            'permit(principal, action == Action::"readFile", resource) '
            'when { resource.path == "/a\\0b" };'
        )


def test_templates_are_refused() -> None:
    with pytest.raises(UnsupportedError,
                       match=r"templates \(`\?principal`, `\?resource`\) are not supported"):
        compile_text("permit(principal == ?principal, action, resource);")


def test_duplicate_ids() -> None:
    with pytest.raises(ParseError, match=r"duplicate policy id `x`: first used at p\.cedar:1:1"):
        compile_text(
            '@id("x") permit(principal, action, resource);\n'
            '@id("x") forbid(principal, action, resource);'
        )


def test_errors_across_files_are_all_reported() -> None:
    with pytest.raises(ParseError) as ei:
        compile_policies(
            [
                PolicySource("a.cedar", "permit(principal, action, resource) when { foo };"),
                PolicySource("b.cedar", "permit(principal, action, resource);"),
                PolicySource("c.cedar", "forbid(principal, action resource);"),
            ]
        )
    assert [d.location.file for d in ei.value.diagnostics if d.location] == ["a.cedar", "c.cedar"]


BAD_MEMBER = "expected `<host>:<port>/<tcp|udp>`"


@pytest.mark.parametrize(
    ("entity", "message"),
    [
        ({"uid": {"type": "Nope", "id": "x"}}, "unknown entity type `Nope`"),
        ({"uid": {"type": "NetworkDestination", "id": "api.openai.com:443"}}, BAD_MEMBER),
        ({"uid": {"type": "NetworkDestination", "id": "[::1]:99999/tcp"}}, BAD_MEMBER),
        (
            {"uid": {"type": "NetworkDestination", "id": "[FD00:0::1]:053/udp"}},
            "write it `[fd00::1]:53/udp`",
        ),
        (
            {"uid": {"type": "NetworkDestination", "id": "a.ex:443/tcp"}, "attrs": {"port": 443}},
            "leave `attrs` empty",
        ),
        ({"uid": {"type": "Agent", "id": "manul:default"}}, "are reserved"),
        (
            {"uid": {"type": "Agent", "id": "a"}, "parents": [{"type": "PathSet", "id": "x"}]},
            'a `Agent` cannot be in `PathSet::"x"`',
        ),
        ({"uid": {"type": "Agent", "id": "a"}, "attrs": {"nope": "x"}}, "has no attribute `nope`"),
        ({"uid": {"type": "FilePath", "id": "/a"}, "attrs": {"path": "/b"}}, "must equal the id"),
        ({"uid": {"type": "FilePath", "id": "relative"}}, "must be absolute"),
    ],
)
def test_bad_entities(entity: dict[str, object], message: str) -> None:
    with pytest.raises(EntitiesError) as ei:
        compile_text("permit(principal, action, resource);", entities=[entity])
    assert message in ei.value.diagnostics[0].message
    loc = ei.value.diagnostics[0].location
    assert loc is not None and loc.file == "e.json" and loc.line == 1


def test_entities_not_json() -> None:
    with pytest.raises(EntitiesError) as ei:
        compile_policies(
            [PolicySource("p.cedar", "permit(principal, action, resource);")],
            EntitiesSource("e.json", "[\n{,]"),
        )
    assert str(ei.value).startswith("e.json:2:2: not JSON:")


def test_oversized_entity_path() -> None:
    entity = {"uid": {"type": "FilePath", "id": "/" + "x" * 300}, "parents": []}
    with pytest.raises(LimitError, match="is 301 bytes"):
        compile_text("permit(principal, action, resource);", entities=[entity])


def test_bad_resolver_result() -> None:
    with pytest.raises(InputError) as ei:
        compile_policies(
            [PolicySource("p.cedar", "permit(principal, action, resource);")],
            resolved={"h.example": ["192.0.2.1", "not-an-ip", "fe80::1%eth0"]},
        )
    assert [d.message for d in ei.value.diagnostics] == [
        "resolver result: host `h.example`: `not-an-ip` is not an IP address",
        "resolver result: host `h.example`: `fe80::1%eth0` is not an IP address",
    ]


def test_reserved_principal_in_a_policy() -> None:
    with pytest.raises(UnsupportedError, match="agent ids starting with `manul:` are reserved"):
        compile_text('permit(principal == Agent::"manul:default", action, resource);')


def test_pinned_sandbox_ids() -> None:
    src = [PolicySource("p.cedar", 'permit(principal == Agent::"a", action, resource);')]
    comp = compile_policies(src, sandbox_ids={'Agent::"a"': 7, "default": 1})
    assert {s.name: s.sandbox_id for s in comp.sandboxes} == {"default": 1, 'Agent::"a"': 7}
    assert all(
        e.key[4:8] == (7).to_bytes(4, "little") for e in comp.sandboxes[1].maps["sandbox_paths"]
    )
    with pytest.raises(InputError, match="0 means no sandbox"):
        compile_policies(src, sandbox_ids={"default": 0})
    with pytest.raises(InputError, match="pinned to the same id"):
        compile_policies(src, sandbox_ids={"default": 3, 'Agent::"a"': 3})
