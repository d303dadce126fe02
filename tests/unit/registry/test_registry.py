"""Registry: parsing, strictness, lookups, and the host backend's reload."""

from __future__ import annotations

import textwrap
from pathlib import Path

import pytest

from agent.errors import RegistryError
from agent.registry import FileSource, Identity, IdentityKind, load_directory

EXAMPLES = Path(__file__).parents[3] / "examples" / "registry"


def test_examples_load() -> None:
    reg = load_directory(EXAMPLES)
    analyst = reg.agent("finance/analyst")
    assert analyst is not None and analyst.classes == ("data-analyst",)
    assert any(p.gateway for p in reg.providers)


@pytest.mark.parametrize(
    ("presented", "expected"),
    [
        (Identity(IdentityKind.SERVICE_ACCOUNT, "finance/analyst"), "analyst"),
        (Identity(IdentityKind.SPIFFE, "spiffe://cluster.local/ns/finance/sa/analyst"), "analyst"),
        (Identity(IdentityKind.CGROUP, "/manul.slice/analyst/w1"), "analyst"),
        (Identity(IdentityKind.CGROUP, "/manul.slice/analyst"), "analyst"),
        (Identity(IdentityKind.CGROUP, "/manul.slice/analyst2"), None),
        (Identity(IdentityKind.SYSTEMD_UNIT, "analyst-agent.service"), "analyst"),
        (Identity(IdentityKind.OIDC, "system:serviceaccount:support:support-bot",
                  issuer="https://kubernetes.default.svc.cluster.local"), "support-bot"),
        (Identity(IdentityKind.OIDC, "system:serviceaccount:support:support-bot",
                  issuer="https://evil.example.com"), None),
        (Identity(IdentityKind.SERVICE_ACCOUNT, "finance/other"), None),
    ],
)
def test_match(presented: Identity, expected: str | None) -> None:
    rec = load_directory(EXAMPLES).match(presented)
    assert (rec.meta.name if rec else None) == expected


def _write(tmp: Path, body: str) -> Path:
    (tmp / "r.yaml").write_text(textwrap.dedent(body))
    return tmp


@pytest.mark.parametrize(
    ("body", "message"),
    [
        ("apiVersion: v1\nkind: Agent\nmetadata: {name: a}\nspec: {}\n", "apiVersion: `v1`"),
        ("apiVersion: manul.dev/v1alpha1\nkind: Robot\nmetadata: {name: a}\nspec: {}\n",
         "unknown kind `Robot`"),
        ("apiVersion: manul.dev/v1alpha1\nkind: Agent\nmetadata: {name: a}\n"
         "spec: {riskLevl: high}\n", "r.yaml:1: spec.riskLevl: unknown field"),
        ("apiVersion: manul.dev/v1alpha1\nkind: Agent\nmetadata: {name: a}\n"
         "spec: {identities: [{serviceacount: x}]}\n", "spec.identities[0]"),
        ("apiVersion: manul.dev/v1alpha1\nkind: Agent\nmetadata: {name: a}\n"
         "spec: {identities: [{spiffe: x}]}\n", "is not a spiffe:// ID"),
        ("apiVersion: manul.dev/v1alpha1\nkind: Agent\nmetadata: {name: a}\n"
         "spec: {authentication: password}\n", "spec.authentication: `password`"),
        ("apiVersion: manul.dev/v1alpha1\nkind: Agent\nmetadata: {name: a}\n"
         "spec: {sandbox: {policies: [nope]}}\n",
         "spec.sandbox.policies: is no longer read: every sandbox compiles from the one "),
        ("apiVersion: manul.dev/v1alpha1\nkind: LLMProvider\nmetadata: {name: a}\n"
         "spec: {hosts: ['api.*.com']}\n", "leading `*.`"),
        ("apiVersion: manul.dev/v1alpha1\nkind: MCPServer\nmetadata: {name: a}\n"
         "spec: {url: 'http://a/mcp', tools: ['b/c']}\n", "`b/c`: a tool or tool set name"),
        ("apiVersion: manul.dev/v1alpha1\nkind: MCPServer\nmetadata: {name: a}\n"
         "spec: {url: 'http://a/mcp', toolSets: {read: ['x/y']}}\n", "spec.toolSets.read: `x/y`"),
        ("apiVersion: manul.dev/v1alpha1\nkind: MCPServer\nmetadata: {name: a/b}\n"
         "spec: {url: 'http://a/mcp', tools: [c]}\n", "metadata.name: `a/b` contains `/`"),
        ("a: [\n", "invalid YAML"),
        ("---\napiVersion: manul.dev/v1alpha1\nkind: Agent\nmetadata: {name: a}\nspec: {}\n"
         "---\napiVersion: manul.dev/v1alpha1\nkind: Agent\nmetadata: {name: a}\nspec: {}\n",
         "r.yaml:7: Agent `a` is already defined in"),
        ("apiVersion: manul.dev/v1alpha1\nkind: Agent\nmetadata: {name: a}\n"
         "spec: {identities: [{systemdUnit: x.service}]}\n---\n"
         "apiVersion: manul.dev/v1alpha1\nkind: Agent\nmetadata: {name: b}\n"
         "spec: {identities: [{systemdUnit: x.service}]}\n", "also claimed by Agent `a`"),
    ],
)
def test_bad_records_name_file_and_field(tmp_path: Path, body: str, message: str) -> None:
    (tmp_path / "r.yaml").write_text(body)
    with pytest.raises(RegistryError) as err:
        load_directory(tmp_path)
    assert message in str(err.value)
    assert "r.yaml" in str(err.value)


def test_policy_file_is_read_relative_to_record(tmp_path: Path) -> None:
    (tmp_path / "p.cedar").write_text("permit(principal, action, resource);")
    (tmp_path / "r.yaml").write_text(
        "apiVersion: manul.dev/v1alpha1\nkind: Policy\nmetadata: {name: p}\n"
        "spec: {file: p.cedar}\n")
    pol = load_directory(tmp_path).policy("p")
    assert pol is not None and pol.cedar.startswith("permit")


def test_reload_keeps_previous_snapshot_on_error(tmp_path: Path) -> None:
    good = ("apiVersion: manul.dev/v1alpha1\nkind: Agent\nmetadata: {name: a}\n"
            "spec: {team: x}\n")
    f = tmp_path / "r.yaml"
    f.write_text(good)
    src = FileSource(tmp_path)
    first = src.registry
    f.write_text(good.replace("team", "teem"))
    import os
    os.utime(f, ns=(1, 1))
    assert src.poll() is False
    assert src.registry is first and src.last_error and "spec.teem" in src.last_error
    f.write_text(good.replace("x", "y"))
    assert src.poll() is True
    assert src.registry.agents[0].team == "y"


AGENT = ("apiVersion: manul.dev/v1alpha1\nkind: Agent\nmetadata: {name: a, namespace: n}\n"
         "spec:\n  riskLevel: medium\n  team: x\n")


@pytest.mark.parametrize(("body", "message"), [
    (AGENT + "  riskLevel: low\n", "r.yaml:7: invalid YAML: `riskLevel` is given twice in one "
     "mapping (first on line 5)"),
    ("apiVersion: manul.dev/v1alpha1\nkind: Agent\nmetadata: {name: a, name: b}\nspec: {}\n",
     "r.yaml:3: invalid YAML: `name` is given twice"),
])
def test_duplicate_keys_are_errors_with_their_line(tmp_path: Path, body: str,
                                                   message: str) -> None:
    (tmp_path / "r.yaml").write_text(body)
    with pytest.raises(RegistryError) as err:
        load_directory(tmp_path)
    assert message in str(err.value)


@pytest.mark.parametrize("data", [
    b"\x7fELF\x02\x01\x01\x00" + bytes(range(256)),  # a binary
    "team: caf\u00e9\n".encode("latin-1"),  # text, but not UTF-8
])
def test_a_binary_file_is_a_clear_error(tmp_path: Path, data: bytes) -> None:
    (tmp_path / "r.yaml").write_bytes(data)
    with pytest.raises(RegistryError) as err:
        load_directory(tmp_path)
    assert "r.yaml` is not UTF-8 text" in str(err.value) and "binary" in str(err.value)


def test_a_binary_policy_file_is_a_clear_error(tmp_path: Path) -> None:
    (tmp_path / "p.cedar").write_bytes(b"\xff\xfe\x00permit")
    (tmp_path / "r.yaml").write_text(
        "apiVersion: manul.dev/v1alpha1\nkind: Policy\nmetadata: {name: p}\n"
        "spec: {file: p.cedar}\n")
    with pytest.raises(RegistryError) as err:
        load_directory(tmp_path)
    assert "r.yaml: spec.file: " in str(err.value) and "p.cedar` is not UTF-8" in str(err.value)


def test_runtime_failures_keep_the_previous_registry_and_say_why(tmp_path: Path) -> None:
    folder = tmp_path / "reg"
    folder.mkdir()
    f = folder / "r.yaml"
    f.write_text(AGENT)
    src = FileSource(folder)
    first = src.registry
    f.write_bytes(b"\x00\x01\xff binary now")
    assert src.poll() is False
    assert src.registry is first and src.last_error and "not UTF-8" in src.last_error
    f.write_text(AGENT + "  team: y\n")
    assert src.poll() is False and "given twice" in (src.last_error or "")
    folder.rename(tmp_path / "gone")  # the folder itself disappears
    assert src.poll() is False and "must be a directory" in (src.last_error or "")
    (tmp_path / "gone").rename(folder)
    f.write_text(AGENT.replace("team: x", "team: z"))
    assert src.poll() is True and src.last_error is None
    assert src.registry.agents[0].team == "z"
