"""Registry fields the decision point reads: A2A `url`, OIDC `jwksUri`, risk levels."""

from __future__ import annotations

from pathlib import Path

import pytest

from agent.errors import RegistryError
from agent.registry import load_directory

HEAD = "apiVersion: manul.dev/v1alpha1\nkind: Agent\nmetadata: {name: a}\n"


def _load(tmp_path: Path, spec: str) -> object:
    (tmp_path / "r.yaml").write_text(HEAD + "spec:\n" + spec)
    return load_directory(tmp_path)


def test_agent_url_and_jwks_uri(tmp_path: Path) -> None:
    reg = _load(tmp_path, (
        "  url: https://a.example.com/a2a\n"
        "  identities:\n"
        "    - oidc: {issuer: https://issuer.example.com, subject: a,\n"
        "             audiences: [manul], jwksUri: http://127.0.0.1:9/keys}\n"))
    agent = reg.agent("a")  # type: ignore[attr-defined]
    assert agent.url == "https://a.example.com/a2a"
    assert agent.identities[0].jwks_uri == "http://127.0.0.1:9/keys"


@pytest.mark.parametrize("uri", ["http://keys.example.com/jwks", "file:///etc/keys", "ftp://x"])
def test_jwks_uri_must_be_tls_unless_loopback(tmp_path: Path, uri: str) -> None:
    with pytest.raises(RegistryError, match=r"jwksUri: `.*` must be an https:// URL"):
        _load(tmp_path, "  identities:\n    - oidc: {issuer: https://i.example.com, "
                        f"subject: a, jwksUri: {uri}}}\n")


def test_risk_level_is_checked(tmp_path: Path) -> None:
    with pytest.raises(RegistryError, match=r"spec\.riskLevel: `extreme` is not one of"):
        _load(tmp_path, "  riskLevel: extreme\n")


def test_risk_level_of_mcp_server_is_checked(tmp_path: Path) -> None:
    (tmp_path / "r.yaml").write_text(
        "apiVersion: manul.dev/v1alpha1\nkind: MCPServer\nmetadata: {name: m}\n"
        "spec: {riskLevel: hi}\n")
    with pytest.raises(RegistryError, match="riskLevel: `hi`"):
        load_directory(tmp_path)
