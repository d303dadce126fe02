"""Request paths are normalised before a destination is chosen (docs/decision.md, "Paths")."""

from __future__ import annotations

from pathlib import Path

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from agent.decision.checkrequest import Incoming
from agent.decision.client import build_check_request
from agent.decision.destination import Destinations
from agent.decision.errors import RequestError
from agent.decision.paths import normalize_path
from agent.registry import load_directory

HOST = "tools.shared.svc:8080"


@pytest.mark.parametrize(("raw", "want"), [
    ("/mcp", "/mcp"),
    ("/", "/"),
    ("/mcp/../hr", "/hr"),
    ("/mcp/./../hr", "/hr"),
    ("/mcp//hr", "/mcp/hr"),
    ("//mcp///tools/", "/mcp/tools/"),
    ("/a/b/..", "/a/"),
    ("/a/.", "/a/"),
    ("/../../etc", "/etc"),
    ("/m%63p", "/mcp"),
    ("/%7euser", "/~user"),
    ("/a%3ab", "/a%3Ab"),
    ("/a%25b", "/a%25b"),
])
def test_normalised(raw: str, want: str) -> None:
    assert normalize_path(raw) == want


@pytest.mark.parametrize(("raw", "reason"), [
    ("/mcp/%2e%2e/hr", "encodes `.`"),
    ("/mcp/%2E./hr", "encodes `.`"),
    ("/mcp%2fhr", "encodes `/`"),
    ("/mcp%5c..%5chr", "encodes `\\`"),
    ("/mcp\\..\\hr", "contains `\\`"),
    ("/mcp%zz", "not a valid percent-escape"),
    ("/mcp%4", "not a valid percent-escape"),
    ("/mcp\x00", "control character"),
    ("mcp", "does not start with `/`"),
])
def test_ambiguous_paths_are_refused(raw: str, reason: str) -> None:
    with pytest.raises(RequestError) as err:
        normalize_path(raw)
    assert reason in str(err.value)


@settings(max_examples=2000, deadline=None)
@given(st.text(alphabet="/.%2eEfF5cC~ab", max_size=40).map(lambda s: "/" + s))
def test_normal_form_properties(raw: str) -> None:
    try:
        out = normalize_path(raw)
    except RequestError:
        return
    assert out.startswith("/")
    assert "//" not in out
    assert all(seg not in (".", "..") for seg in out.split("/"))
    assert normalize_path(out) == out  # idempotent


@pytest.fixture
def two_servers(tmp_path: Path) -> Destinations:
    (tmp_path / "servers.yaml").write_text(
        "apiVersion: manul.dev/v1alpha1\nkind: MCPServer\nmetadata: {name: tools, "
        f"namespace: shared}}\nspec:\n  url: http://{HOST}/mcp\n  riskLevel: low\n"
        "  tools: [search]\n---\n"
        "apiVersion: manul.dev/v1alpha1\nkind: MCPServer\nmetadata: {name: hr, "
        f"namespace: shared}}\nspec:\n  url: http://{HOST}/hr\n  riskLevel: high\n"
        "  tools: [salaries]\n")
    return Destinations(load_directory(tmp_path))


def _dest(d: Destinations, path: str) -> str:
    inc = Incoming.from_proto(build_check_request({"url": f"http://{HOST}{path}"}))
    return d.resolve(inc).key


def test_a_dot_dot_path_reaches_the_server_it_names(two_servers: Destinations) -> None:
    """The attack: `/mcp/../hr` was decided as the `/mcp` server (and given
    a per-hop token for it) while the upstream served `/hr`."""
    assert _dest(two_servers, "/mcp") == "shared/tools"
    for path in ("/mcp/../hr", "/mcp/./../hr", "//mcp/..//hr", "/m%63p/../hr"):
        assert _dest(two_servers, path) == "shared/hr", path
    for path in ("/mcp/%2e%2e/hr", "/mcp/%2E%2E/hr", "/mcp%2F..%2Fhr", "/mcp\\..\\hr"):
        with pytest.raises(RequestError):
            _dest(two_servers, path)
