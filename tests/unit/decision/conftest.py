"""Fixtures for the decision point: a registry, policies, a local OIDC issuer, a server."""

from __future__ import annotations

import shutil
from collections.abc import Iterator
from pathlib import Path

import pytest

from agent.decision.local import LocalDecider
from tests.unit.decision.authz_helpers import (
    EXAMPLE_POLICIES,
    Issuer,
    IssuerHTTP,
    Running,
    registry_yaml,
    start_server,
)


@pytest.fixture(scope="session")
def issuers() -> Iterator[dict[str, Issuer]]:
    found = {"k8s": Issuer("k8s"), "idp": Issuer("idp")}
    found["k8s"].add_key("RSA")
    found["idp"].add_key("EC")
    http = IssuerHTTP(found)
    yield found
    http.close()


@pytest.fixture
def folders(tmp_path: Path, issuers: dict[str, Issuer]) -> tuple[Path, Path]:
    reg = tmp_path / "registry"
    reg.mkdir()
    (reg / "all.yaml").write_text(registry_yaml(issuers))
    pol = tmp_path / "policies"
    shutil.copytree(EXAMPLE_POLICIES, pol)
    return reg, pol


@pytest.fixture
def running(tmp_path: Path, folders: tuple[Path, Path]) -> Iterator[Running]:
    r = start_server(tmp_path, *folders)
    yield r
    r.server.stop()


@pytest.fixture(scope="module")
def local(tmp_path_factory: pytest.TempPathFactory,
          issuers: dict[str, Issuer]) -> LocalDecider:
    base = tmp_path_factory.mktemp("local")
    reg = base / "registry"
    reg.mkdir()
    (reg / "all.yaml").write_text(registry_yaml(issuers))
    return LocalDecider(reg, EXAMPLE_POLICIES)
