"""`manul check`: ask the decision point for a decision and its explanation.

Either over the socket of a running `manul authz serve` (exactly what a
gateway would get back), or `--local` against a registry and policy folder
(the same pipeline in-process, with the Cedar request and the deciding
policies' text). The request comes from flags or from a JSON file (see
agent/decision/client.py for its shape). Exit status: 0 allow, 1 deny,
3 the decision point could not be reached.
"""

from __future__ import annotations

import json
import sys
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

import click
import grpc
from rich.console import Console
from rich.table import Table

from agent.commands._options import read_arg
from agent.decision.client import ask, build_check_request, response_summary
from agent.decision.errors import RequestError
from agent.decision.server import DEFAULT_SOCKET
from agent.errors import ManulError


def _json_arg(value: str, what: str) -> Any:
    text = read_arg(value[1:], what) if value.startswith("@") else value
    try:
        return json.loads(text)
    except ValueError as e:
        raise click.BadParameter(f"{what}: not JSON: {e}") from e


def _spec(file: str | None, **flags: Any) -> dict[str, Any]:
    spec: dict[str, Any] = {}
    if file:
        text = sys.stdin.read() if file == "-" else read_arg(file, "-f")
        try:
            loaded = json.loads(text)
        except ValueError as e:
            raise click.BadParameter(f"{file}: not JSON: {e}") from e
        if not isinstance(loaded, dict):
            raise click.BadParameter(f"{file}: expected a JSON object")
        spec.update(loaded)
    for key in ("spiffe", "bearer", "delegation", "url", "method", "destination"):
        if flags.get(key):
            spec[key] = flags[key]
    if spec.get("url"):
        try:
            _ = urlsplit(str(spec["url"])).port  # parses the host and port too
        except ValueError as e:
            raise click.BadParameter(f"--url `{spec['url']}`: not a URL ({e})") from None
    if flags.get("jwt_payload"):
        spec["jwt_payload"] = _json_arg(flags["jwt_payload"], "--jwt-payload")
    headers = dict(spec.get("headers", {}))
    for h in flags.get("header") or ():
        k, sep, v = h.partition(":")
        if not sep:
            raise click.BadParameter(f"--header `{h}`: expected NAME:VALUE")
        headers[k.strip().lower()] = v.strip()
    if headers:
        spec["headers"] = headers
    if flags.get("body"):
        spec["body"] = _json_arg(flags["body"], "--body")
    elif flags.get("tool"):
        spec["body"] = {"jsonrpc": "2.0", "id": 1, "method": "tools/call",
                        "params": {"name": flags["tool"], "arguments": {}}}
    elif flags.get("mcp"):
        spec["body"] = {"jsonrpc": "2.0", "id": 1, "method": flags["mcp"], "params": {}}
    elif flags.get("a2a"):
        spec["body"] = {"jsonrpc": "2.0", "id": 1, "method": flags["a2a"],
                        "params": {"message": {"role": "user", "parts": []}}}
    elif flags.get("model"):
        spec["body"] = {"model": flags["model"], "messages": []}
    if "url" not in spec and "host" not in spec and "attributes" not in spec:
        raise click.UsageError("say where the request goes: --url or a request file")
    return spec


def _print_remote(con: Console, summary: dict[str, Any]) -> None:
    allowed = summary["allowed"]
    md = summary.get("metadata", {})
    con.print(("[green bold]ALLOW[/]" if allowed else "[red bold]DENY[/]")
              + f"  (HTTP {summary['status']})")
    t = Table(show_header=False, box=None)
    for k in ("reason", "caller", "on_behalf_of", "action", "resource", "policies",
              "delegation_depth", "trace_id"):
        v = md.get(k, "")
        if v not in ("", [], None):
            t.add_row(k, ", ".join(v) if isinstance(v, list) else str(v))
    con.print(t)
    if allowed:
        con.print("[bold]upstream headers[/]")
        for k, v in summary["headers"].items():
            con.print(f"  {k}: {v if len(v) < 90 else v[:60] + '...'}")
        con.print(f"  removed: {', '.join(summary['headers_to_remove'])}")


@click.command()
@click.option("--socket", "socket_path", type=click.Path(path_type=Path),
              default=DEFAULT_SOCKET, show_default=True, help="A running decision point.")
@click.option("--local", is_flag=True, help="Evaluate in-process instead of asking a server.")
@click.option("--registry", type=click.Path(path_type=Path, file_okay=False, exists=True),
              default=None, help="Registry folder (with --local).")
@click.option("--policies", type=click.Path(path_type=Path, file_okay=False), default=None,
              help="Policy folder (with --local).")
@click.option("-f", "--file", "file", default=None, help="Request JSON file (`-` = stdin).")
@click.option("--spiffe", help="Caller SPIFFE ID, as the proxy sets it from mTLS.")
@click.option("--bearer", help="Caller JWT (sent as Authorization: Bearer).")
@click.option("--jwt-payload", help="Payload the proxy's jwt_authn verified (JSON or @file).")
@click.option("--delegation", help="Per-hop token the caller received (x-manul-delegation).")
@click.option("--url", help="Where the request goes, e.g. http://host:8080/mcp.")
@click.option("--method", default=None, help="HTTP method (default POST).")
@click.option("--header", multiple=True, help="NAME:VALUE (repeatable).")
@click.option("--destination", help="Route destination, e.g. MCPServer/finance/finance-tools.")
@click.option("--body", help="Request body (JSON or @file).")
@click.option("--tool", help="Shortcut: an MCP tools/call of this tool.")
@click.option("--mcp", help="Shortcut: an MCP request with this JSON-RPC method.")
@click.option("--a2a", help="Shortcut: an A2A request with this method (e.g. message/send).")
@click.option("--model", help="Shortcut: an LLM chat request for this model.")
@click.option("--json", "as_json", is_flag=True, help="Machine-readable output.")
def check(socket_path: Path, local: bool, registry: Path | None, policies: Path | None,
          file: str | None, as_json: bool, **flags: Any) -> None:
    """Ask for a decision and print it with its explanation.

    \b
    Examples:
      manul check --spiffe spiffe://cluster.local/ns/finance/sa/analyst \\
          --url http://finance-tools.finance.svc:8080/mcp --tool get_balance
      manul check --local --registry examples/registry \\
          --policies examples/policies -f request.json
    """
    spec = _spec(file, **flags)
    con = Console()
    if local:
        if registry is None or policies is None:
            raise click.UsageError("--local needs --registry and --policies")
        from agent.decision.local import LocalDecider
        try:
            ex = LocalDecider(registry, policies).explain(spec)
        except (ManulError, RequestError) as e:
            raise click.ClickException(str(e)) from e
        o = ex.outcome
        doc = {"allowed": o.allowed, "status": o.status, "reason": o.reason,
               "caller": o.caller, "mechanism": o.mechanism, "on_behalf_of": o.on_behalf_of,
               "chain": list(o.chain), "delegation_depth": o.delegation_depth,
               "action": o.action, "resource": o.resource, "policies": list(o.policies),
               "policy_text": ex.policy_text, "cedar_request": dict(o.cedar),
               "token_claims": dict(o.token_claims), "policy_error": ex.policy_error}
        if as_json:
            click.echo(json.dumps(doc, indent=2, default=str))
        else:
            con.print(("[green bold]ALLOW[/]" if o.allowed else "[red bold]DENY[/]")
                      + f"  (HTTP {o.status})  {o.reason}")
            if o.caller:
                con.print(f"caller  {o.principal} via {o.mechanism}"
                          + (f", on behalf of {o.on_behalf_of} (depth {o.delegation_depth})"
                             if o.delegation_depth else ""))
            if o.action:
                con.print(f"request Action::\"{o.action}\" on {o.resource}")
                con.print_json(json.dumps(o.cedar.get("context", {}), default=str))
            for pid, text in ex.policy_text.items():
                con.print(f"[bold]policy {pid}[/]\n{text}")
            if o.token_claims:
                con.print_json(json.dumps(dict(o.token_claims)))
        sys.exit(0 if o.allowed else 1)
    try:
        resp = ask(str(socket_path), build_check_request(spec))
    except grpc.RpcError as e:
        click.echo(f"manul check: cannot reach the decision point at {socket_path}: "
                   f"{e.code().name}: {e.details()}", err=True)
        sys.exit(3)
    except RequestError as e:
        raise click.ClickException(str(e)) from e
    summary = response_summary(resp)
    if as_json:
        click.echo(json.dumps(summary, indent=2, default=str))
    else:
        _print_remote(con, summary)
    sys.exit(0 if summary["allowed"] else 1)
