"""`manul compile`: output, --json, --query, --strict, errors, and no writes."""

from __future__ import annotations

import json
import os
from pathlib import Path

import pytest
from click.testing import CliRunner

from agent.cli import cli
from agent.commands.compile import compile_cmd

EXAMPLES = Path(__file__).resolve().parents[3] / "examples" / "policies"
REGISTRY = EXAMPLES.parent / "registry"
BASE = [str(EXAMPLES), "--registry", str(REGISTRY), "--hosts", str(EXAMPLES / "hosts.json")]


def run(args: list[str], stdin: str | None = None) -> tuple[int, str, str]:
    r = CliRunner().invoke(compile_cmd, args, input=stdin)
    if r.exception and not isinstance(r.exception, SystemExit):
        raise r.exception
    return r.exit_code, r.stdout, r.stderr


def snapshot(d: Path) -> dict[str, tuple[float, bytes]]:
    return {
        str(p.relative_to(d)): (p.stat().st_mtime, p.read_bytes() if p.is_file() else b"")
        for p in sorted(d.rglob("*"))
    }


def test_registered_in_manul() -> None:
    r = CliRunner().invoke(cli, ["--help"])
    assert "compile" in r.stdout and "Compile a policy set" in r.stdout


def test_examples_report() -> None:
    code, out, _ = run(BASE)
    assert code == 0
    assert (
        'sandbox AgentClass::"data-analyst" (id 4, principal Agent::"manul:class:data-analyst")'
        in out
    )
    assert "  sandbox_paths: 24 entries (exact 15, prefix 8, root 1)" in out
    assert "  partly at the gateway: `suspended-agent`" in out
    assert out.startswith("policies (31: 19 kernel, 11 gateway, 1 both)\n")
    assert "  gateway forbid quarantined-callers" in out
    assert "  both    forbid suspended-agent" in out
    assert "reads `context.delegation_depth`: only the gateway knows the request context" in out
    assert "not for `readFile`, `writeFile`, `exec`, `loadLibrary`, `connectNetwork`, " in out
    assert "the kernel does not see MCP calls (`invokeTool`)" in out
    # an agent's own sandbox folds its attributes in; a class sandbox approximates
    assert 'sandbox Agent::"finance/analyst" (id ' in out
    assert "`principal.team`: a class or default sandbox stands for any agent in it" in out
    assert "hosts the agent resolves at load time: api.anthropic.com, api.openai.com" in out


def test_json() -> None:
    code, out, _ = run([*BASE, "--json"])
    assert code == 0
    doc = json.loads(out)
    analyst = next(s for s in doc["sandboxes"] if s["name"] == 'AgentClass::"data-analyst"')
    paths = analyst["maps"]["sandbox_paths"]
    assert paths["count"] == len(paths["entries"]) == 24
    assert all(len(bytes.fromhex(e["key"])) == 260 for e in paths["entries"])
    assert all(
        len(bytes.fromhex(e["value"])) == 196 for e in analyst["maps"]["sandbox_net"]["entries"]
    )
    layers = {p["policy"]: p["layer"] for p in doc["policies"]}
    assert layers["analyst-net"] == "kernel" and layers["suspended-agent"] == "both"
    assert layers["quarantined-callers"] == layers["finance-agents-invoke-finance-tools"] \
        == "gateway"
    assert set(analyst["rules"]) <= {int(k) for k in doc["rules"]}


def test_query() -> None:
    code, out, _ = run([*BASE, "--query", str(EXAMPLES / "requests.jsonl")])
    assert code == 0
    answers = [json.loads(line) for line in out.splitlines()]
    assert answers == [
        {"decision": "allow", "policies": ["analyst-files"], "layer": "kernel"},
        {"decision": "allow", "policies": ["analyst-files"], "layer": "kernel"},
        {"decision": "deny", "policies": ["no-credentials"], "layer": "kernel"},
        {"decision": "allow", "policies": ["finance-team-data"], "layer": "kernel"},
        {"decision": "allow", "policies": ["analyst-net-allowed"], "layer": "kernel"},
        {"decision": "deny", "policies": ["analyst-net"], "layer": "kernel"},
        {"decision": "deny", "policies": ["analyst-net", "no-cloud-metadata"], "layer": "kernel"},
        {"decision": "allow", "policies": ["coder-tools"], "layer": "kernel"},
        {"decision": "deny", "policies": [], "layer": "kernel"},  # coders are not finance
        {"decision": "deny", "policies": ["no-shells"], "layer": "kernel"},
        {"decision": "allow", "policies": ["finance-agents-invoke-finance-tools"],
         "layer": "gateway"},
        {"decision": "deny", "policies": ["quarantined-callers"], "layer": "gateway"},
    ]


def test_query_errors_are_per_line(tmp_path: Path) -> None:
    bad = json.dumps(
        {"principal": 'Agent::"finance/analyst"', "action": 'Action::"readFile"',
         "resource_attrs": {}}
    )
    code, out, err = run([*BASE, "--query", "-"], stdin=f"not json\n{bad}\n")
    assert code == 1
    lines = [json.loads(x) for x in out.splitlines()]
    assert lines[0]["error"].startswith("not JSON")
    assert lines[1] == {"error": "`resource_attrs`: readFile needs `path`"}
    assert "error: -:1: not JSON" in err


def test_ir_flag() -> None:
    code, out, _ = run([*BASE, "--ir"])
    assert code == 0
    assert '    permit analyst-files: (path like "/workspace/analyst-*" || ' in out


def test_strict_fails_on_approximations(tmp_path: Path) -> None:
    f = tmp_path / "a.cedar"
    f.write_text(
        '@id("logs") permit(principal, action == Action::"readFile", resource)\n'
        '  when { resource.path like "/var/log/*/current" };\n'
    )
    assert run([str(f)])[0] == 0
    code, _, err = run([str(f), "--strict"])
    assert code == 1
    assert "error: policy `logs`: `readFile`: unsupported pattern `/var/log/*/current`" in err


@pytest.mark.parametrize(
    ("text", "message"),
    [
        (
            '@id("x")\npermit(principal, action, resource) when { foo };',
            "policy `x`: invalid variable: foo",
        ),
        (
            'forbid(principal, action == Action::"readFile", resource)\n'
            'when { resource.path like "/a/*/b" };',
            "unsupported pattern `/a/*/b`: only a trailing `*` compiles to the kernel",
        ),
    ],
)
def test_errors_exit_1_and_write_nothing(tmp_path: Path, text: str, message: str) -> None:
    f = tmp_path / "p.cedar"
    f.write_text(text)
    before = snapshot(tmp_path)
    cwd = os.getcwd()
    os.chdir(tmp_path)
    try:
        code, out, err = run([str(f), "--json"])
        assert run([str(f)])[0] == 1
    finally:
        os.chdir(cwd)
    assert code == 1 and out == ""
    assert f"{f}:" in err and message in err
    assert snapshot(tmp_path) == before


def test_success_writes_nothing(tmp_path: Path) -> None:
    for src in (p for p in EXAMPLES.rglob("*") if p.is_file()):
        dst = tmp_path / src.relative_to(EXAMPLES)
        dst.parent.mkdir(parents=True, exist_ok=True)
        dst.write_bytes(src.read_bytes())
    before = snapshot(tmp_path)
    cwd = os.getcwd()
    os.chdir(tmp_path)
    try:
        reg = ["--registry", str(REGISTRY)]
        assert run([".", *reg, "--json"])[0] == 0
        assert run([".", *reg, "--query", "requests.jsonl"])[0] == 0
        files = sorted(p.name for p in tmp_path.glob("*.cedar"))
        assert run([*files, *reg, "--entities", "entities.json", "--json"])[0] == 0
    finally:
        os.chdir(cwd)
    assert snapshot(tmp_path) == before


def test_schema_is_printed_in_cedar_syntax() -> None:
    code, out, _ = run(["--schema"])
    assert code == 0
    assert 'action "invokeTool" in [Action::"mcpAccess"] appliesTo {' in out
    assert 'action "readFile" in [Action::"fileAccess", Action::"kernelAccess"]' in out
    assert "entity Agent in [AgentClass, Group] = {" in out


def test_no_paths_is_a_usage_error() -> None:
    code, _, err = run([])
    assert code == 2 and "name the policy files or folders" in err


def test_missing_file() -> None:
    r = CliRunner().invoke(compile_cmd, ["/nonexistent.cedar"])
    assert r.exit_code != 0 and "nonexistent.cedar" in r.output
