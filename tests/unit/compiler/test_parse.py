"""Parsing: ids as Cedar numbers them, statements, annotations, locations."""

from __future__ import annotations

import cedarpy

from compiler import Location, PolicySource
from compiler.parse import parse_sources
from compiler.source import WILDCARD, SourceText, decode_string


def test_positional_ids_follow_cedar_across_files() -> None:
    a = 'permit(principal, action, resource);\n@id("named") forbid(principal, action, resource);\n'
    b = "// comment; with a semicolon\npermit(principal, action, resource);"
    parsed = parse_sources([PolicySource("a.cedar", a), PolicySource("b.cedar", b)])
    assert [(p.pid, p.cedar_id) for p in parsed.policies] == [
        ("policy0", "policy0"),
        ("named", "policy1"),
        ("policy2", "policy2"),
    ]
    assert cedarpy.policies_to_json_str(parsed.text).count('"effect"') == 3
    assert parsed.policies[2].location == Location("b.cedar", 2, 1)


def test_statements_skip_strings_and_comments() -> None:
    st = SourceText(
        "x.cedar",
        '// a; b\n@id("a;b")\n@other\npermit(principal, action, resource)\n'
        'when { "x;{" like "*" };\n\n@foo("bar") @id("z") forbid(principal, action, resource);',
    )
    assert [s.annotation_id for s in st.statements] == ["a;b", "z"]
    assert [st.location(s.start) for s in st.statements] == [
        Location("x.cedar", 2, 1),
        Location("x.cedar", 7, 1),
    ]
    assert st.find_string(0, "x;{") == Location("x.cedar", 5, 8)


def test_decode_patterns() -> None:
    assert decode_string(r"/a\*b*", pattern=True) == ["/", "a", "*", "b", WILDCARD]
    assert decode_string(r"tab\tnul\0\u{e9}") == list("tab\tnul\0é")
