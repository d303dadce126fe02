"""`compiler.values` against Cedar itself (cedarpy): the folds the compiler
does on static values must give Cedar's answer, error included, or a kernel
sandbox and the gateway decide the same request differently."""

from __future__ import annotations

import json

import cedarpy
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from compiler import values as V

_POLICY = 'permit (principal, action, resource) when { ip(context.s).isIpv4() || true };'


def _cedar_parses_ip(text: str) -> bool:
    request = {
        "principal": {"type": "P", "id": "p"},
        "action": {"type": "Action", "id": "a"},
        "resource": {"type": "R", "id": "r"},
        "context": {"s": text},
    }
    return bool(cedarpy.is_authorized(request, _POLICY, json.dumps([])).allowed)


def _we_parse_ip(text: str) -> bool:
    try:
        V.parse_ip(text)
    except V.CedarError:
        return False
    return True


CASES = [
    "10.0.0.0/8", "10.0.0.0/08", "10.0.0.1/032", "10.0.0.1/00032", "10.0.0.0/0",
    "10.0.0.0/00", "10.0.0.0/", "10.0.0.0/33", "10.0.0.0/ 8", "10.0.0.0/٨", "10.0.0.0/+8",
    "010.0.0.1", "1.2.3", "1.2.3.4.5", "1::/016", "1::1/0128", "1::1/128", "1::1/129",
    "::ffff:1.2.3.4", "fe80::1%eth0", "::", "::/0", "1:2:3:4:5:6:7:8", "1:2:3:4:5:6:7:8:9",
    " 1.2.3.4", "1.2.3.4 ", "\uff11.2.3.4", "1.2.3.4/8/8", "",
]


@pytest.mark.parametrize("text", CASES)
def test_ip_parsing_agrees_with_cedar(text: str) -> None:
    assert _we_parse_ip(text) == _cedar_parses_ip(text), text


def test_the_probe_tells_good_from_bad() -> None:
    """Positive control: the Cedar probe accepts a good address and refuses a bad one."""
    assert _cedar_parses_ip("10.0.0.0/8") and not _cedar_parses_ip("10.0.0.0/08")


@settings(max_examples=300, deadline=None)
@given(st.text(alphabet="0123456789af:./%٨ ", max_size=18))
def test_ip_parsing_agrees_with_cedar_on_any_text(text: str) -> None:
    assert _we_parse_ip(text) == _cedar_parses_ip(text), text


def test_ip_ranges_agree_with_cedar() -> None:
    assert V.in_range(V.parse_ip("10.1.2.3"), V.parse_ip("10.0.0.0/8"))
    assert not V.in_range(V.parse_ip("::1"), V.parse_ip("0.0.0.0/0"))
