"""Parsing: ids as Cedar numbers them, statements, annotations, locations."""

from __future__ import annotations

import cedarpy

from compiler import Location, PolicySource
from compiler.parse import parse_sources
from compiler.source import WILDCARD, SourceText, decode_string


def test_ids_are_annotations_else_file_and_line() -> None:
    """One id rule for both layers; Cedar's positional ids are kept beside."""
    a = 'permit(principal, action, resource);\n@id("named") forbid(principal, action, resource);\n'
    b = "// comment; with a semicolon\npermit(principal, action, resource);"
    parsed = parse_sources([PolicySource("a.cedar", a), PolicySource("b.cedar", b)])
    assert [(p.pid, p.cedar_id, p.local_index) for p in parsed.policies] == [
        ("a.cedar:1", "policy0", 0),
        ("named", "policy1", 1),
        ("b.cedar:2", "policy2", 0),
    ]
    assert cedarpy.policies_to_json_str(parsed.text).count('"effect"') == 3
    assert parsed.policies[2].location == Location("b.cedar", 2, 1)


def test_two_policies_on_one_line_get_columns() -> None:
    text = "permit(principal, action, resource); forbid(principal, action, resource);\n"
    parsed = parse_sources([PolicySource("x.cedar", text)])
    assert [p.pid for p in parsed.policies] == ["x.cedar:1:1", "x.cedar:1:38"]


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
