"""`manul compile`: compile a policy set and say what went where, and why.

Reads policy files and folders (a folder brings its `entities.json`), the
registry for agents' attributes (`--registry`) and optionally a resolver
result, runs the pure compiler (`compiler`), and prints, per policy, its
layer (kernel, gateway, both) with the reasons, then per sandbox the
kernel map entries by kind and count and every approximation. `--json` prints everything
(entries as hex) as one JSON document; `--query REQUESTS.jsonl` answers one
Cedar request per line instead. It never writes a file: loading entries into
the kernel is `agent/sandbox`'s job. Exit status 1 on any error (and, with
`--strict`, on any approximation).
"""

from __future__ import annotations

import json
import sys
from typing import Any

import click
from rich.console import Console

from agent.commands._options import read_arg
from agent.errors import ManulError
from agent.registry import load_directory
from agent.registry.entities import registry_entities
from agent.registry.policyset import read_paths
from compiler import (
    Compilation,
    CompiledSandbox,
    CompileError,
    Querier,
    compile_policies,
    load_schema,
)


def _hosts(path: str | None) -> dict[str, list[str]]:
    if path is None:
        return {}
    try:
        data = json.loads(read_arg(path))
    except ValueError as e:
        raise click.BadParameter(f"{path}: not JSON: {e}", param_hint="--hosts") from e
    ok = isinstance(data, dict) and all(
        isinstance(v, list) and all(isinstance(a, str) for a in v) for v in data.values()
    )
    if not ok:
        raise click.BadParameter(
            f"{path}: expected an object of host -> [address, ...]", param_hint="--hosts"
        )
    return {str(k): [str(a) for a in v] for k, v in data.items()}


@click.command("compile")
@click.argument("paths", nargs=-1, type=click.Path(exists=True))
@click.option(
    "--entities",
    "entities_file",
    type=click.Path(dir_okay=False),
    help="Cedar JSON entities: sets and their members, class nesting "
    "(default: a folder's entities.json).",
)
@click.option(
    "--registry",
    "registry_dir",
    type=click.Path(file_okay=False, exists=True),
    help="Registry folder: every Agent gets its sandbox, its attributes folded in.",
)
@click.option(
    "--hosts",
    "hosts_file",
    type=click.Path(dir_okay=False),
    help="A resolver result, {host: [address, ...]} (the agent resolves at load time).",
)
@click.option("--json", "as_json", is_flag=True, help="Print the whole result as JSON.")
@click.option(
    "--query",
    "query_file",
    type=click.Path(dir_okay=False, allow_dash=True),
    help="Answer the Cedar requests in this JSON-lines file (- for stdin).",
)
@click.option("--ir", "show_ir", is_flag=True, help="Also print each sandbox's kernel rules.")
@click.option("--strict", is_flag=True, help="Treat any approximation as an error.")
@click.option("--schema", "show_schema", is_flag=True,
              help="Print the one Cedar schema (both layers) and exit.")
def compile_cmd(
    paths: tuple[str, ...],
    entities_file: str | None,
    registry_dir: str | None,
    hosts_file: str | None,
    as_json: bool,
    query_file: str | None,
    show_ir: bool,
    strict: bool,
    show_schema: bool,
) -> None:
    """Compile a policy set: what the kernel enforces, what stays at the gateway.

    PATHS are .cedar files or folders of them (a folder's entities.json comes
    along). One schema serves both layers: each policy is reported as
    `kernel`, `gateway` or `both`, with the reason, and its kernel part is
    compiled to map entries per sandbox (every agent, class and `default`).

    \b
    Examples:
      manul compile examples/policies --registry examples/registry
      manul compile examples/policies --hosts examples/policies/hosts.json --json
      manul compile policy.cedar --query requests.jsonl
      manul compile --schema
    """
    err = Console(stderr=True, highlight=False)
    if show_schema:
        click.echo(load_schema().text)
        return
    if not paths:
        raise click.UsageError("name the policy files or folders to compile (or --schema)")
    try:
        policy_set = read_paths(list(paths), entities_file)
        registry = registry_entities(load_directory(registry_dir)) if registry_dir else []
    except ManulError as e:
        err.print(f"[bold red]error[/]: {e}", markup=True, soft_wrap=True)
        sys.exit(1)
    try:
        result = compile_policies(policy_set.sources, policy_set.entities,
                                  resolved=_hosts(hosts_file), registry=registry)
    except CompileError as e:
        for d in e.diagnostics:
            err.print(f"[bold red]error[/]: {d}", markup=True, soft_wrap=True)
        sys.exit(1)
    if query_file is not None:
        sys.exit(_query(result, query_file, err))
    approximations = [a for s in result.sandboxes for a in s.approximations]
    if as_json:
        click.echo(json.dumps(result.to_json(), indent=2, ensure_ascii=False))
    else:
        _print(result, show_ir)
    if strict and approximations:
        for a in approximations:
            err.print(f"error: {a}", markup=False, soft_wrap=True)
        sys.exit(1)


def _query(result: Compilation, path: str, err: Console) -> int:
    text = sys.stdin.read() if path == "-" else read_arg(path)
    querier = Querier(result)
    status = 0
    for n, line in enumerate(text.splitlines(), 1):
        if not line.strip():
            continue
        try:
            answer: dict[str, Any] = querier.answer(json.loads(line)).to_json()
        except (ValueError, CompileError) as e:
            message = str(e) if isinstance(e, CompileError) else f"not JSON: {e}"
            err.print(f"error: {path}:{n}: {message}", markup=False, soft_wrap=True)
            answer = {"error": message}
            status = 1
        click.echo(json.dumps(answer, ensure_ascii=False))
    return status


def _print(result: Compilation, show_ir: bool) -> None:
    out = Console(highlight=False, soft_wrap=True)
    layers = {k: sum(p.layer == k for p in result.policies) for k in ("kernel", "gateway", "both")}
    out.print(f"[bold]policies[/] ({len(result.policies)}: " + ", ".join(
        f"{v} {k}" for k, v in layers.items()) + ")", markup=True)
    width = max((len(p.policy) for p in result.policies), default=0)
    for p in result.policies:
        out.print(f"  {p.layer:<8}{p.effect:<7}{p.policy:<{width}}  {p.location}", markup=False)
        for reason in p.reasons:
            out.print(f"          {reason}", markup=False)
    out.print()
    for s in result.sandboxes:
        _print_sandbox(out, s, show_ir)
    if result.hosts:
        out.print("hosts the agent resolves at load time: " + ", ".join(result.hosts), markup=False)


def _print_sandbox(out: Console, s: CompiledSandbox, show_ir: bool) -> None:
    out.print(
        f"[bold]sandbox {s.name}[/] (id {s.sandbox_id}, principal {s.principal})", markup=True
    )
    for name, entries in s.maps.items():
        counts: dict[str, int] = {}
        for e in entries:
            counts[e.kind] = counts.get(e.kind, 0) + 1
        kinds = ", ".join(f"{k} {v}" for k, v in sorted(counts.items()))
        out.print(f"  {name}: {len(entries)} entries ({kinds})", markup=False)
    for a in s.approximations:
        out.print(f"  approximation: {a}", markup=False)
    for note in s.notes:
        out.print(f"  note: {note}", markup=False)
    only = [g.policy for g in s.gateway if g.layer == "gateway"]
    partial = [g.policy for g in s.gateway if g.layer == "both"]
    if only:
        out.print("  gateway only: " + ", ".join(f"`{p}`" for p in only), markup=False)
    if partial:
        out.print("  partly at the gateway: " + ", ".join(f"`{p}`" for p in partial), markup=False)
    if show_ir:
        for line in str(s.ir).splitlines()[1:]:
            out.print(f"  {line}", markup=False)
    out.print()
