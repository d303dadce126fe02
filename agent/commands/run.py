"""`manul run`: the node agent in the foreground (host mode by default)."""

from __future__ import annotations

import sys
from pathlib import Path

import click
from rich.console import Console
from rich.markup import escape

from agent.commands._discovery_view import observation_line
from agent.commands._options import agent_options, stop_on_signals
from agent.daemon import Daemon, DaemonConfig
from agent.discovery.service import Observation
from agent.errors import ManulError
from agent.kernel.fs import PIN_ROOT


@click.command()
@click.option("--registry", type=click.Path(path_type=Path, file_okay=False),
              help="Folder of registry YAML (Agent, LLMProvider, ... records): host mode.")
@click.option("--listen", default="127.0.0.1:9464", show_default=True,
              help="Address of /metrics, /healthz and /inventory (empty to disable).")
@click.option("--audit-log", default="/var/log/manul/audit.jsonl", show_default=True,
              help="Audit log (JSON lines); `-` writes it to stdout.")
@click.option("--policies", type=click.Path(path_type=Path, file_okay=False, exists=True),
              help="The policy set: a folder of .cedar files (and entities.json). The kernel "
                   "enforces it for sandboxed agents; Envoy ext_authz is answered from it on "
                   "--authz-socket. Default: the registry's Policy records (no ext_authz).")
@click.option("--authz-socket", type=click.Path(path_type=Path), default="/run/manul/authz.sock",
              show_default=True, help="The decision point's Unix socket (with --policies, "
                                      "and in cluster mode).")
@click.option("--no-sandbox", is_flag=True,
              help="Do not enforce the registry's sandboxes (Agent spec.sandbox).")
@click.option("--no-authz", is_flag=True,
              help="Do not answer Envoy ext_authz (the policy set is still enforced in "
                   "the kernel).")
@click.option("--pin-root", type=click.Path(path_type=Path), default=PIN_ROOT, hidden=True,
              envvar="MANUL_PIN_ROOT", help="bpffs directory of the pinned state.")
@agent_options
def run(registry: Path | None, listen: str, audit_log: str, kubernetes: bool, node: str,
        pods_file: Path | None, trust_domain: str, policies: Path | None, authz_socket: Path,
        no_sandbox: bool, no_authz: bool, pin_root: Path,
        quarantine_shadow: bool, allow: tuple[str, ...]) -> None:
    """Run Manul's node agent in the foreground until Ctrl-C.

    It probes the kernel, watches the registry folder, and turns on
    discovery: every TLS handshake on this host to an LLM provider is
    attributed to its workload and printed, classified `registered`,
    `shadow`, `unattributable` or `governed` (through the gateway).
    """
    con = Console(highlight=False)
    if registry is None and not kubernetes:
        raise click.UsageError("give --registry DIR (host mode) or --kubernetes (cluster mode)")
    audit = audit_log
    try:
        daemon = Daemon(DaemonConfig(registry=registry, listen=listen, audit_log=audit,
                                     quarantine_shadow=quarantine_shadow,
                                     quarantine_allow=list(allow), kubernetes=kubernetes,
                                     node=node, pods_file=pods_file,
                                     trust_domain=trust_domain, policies=policies,
                                     sandbox=not no_sandbox, pin_root=pin_root,
                                     authz=not no_authz,
                                     authz_socket=authz_socket),
                        on_observation=lambda o: _print(con, o))
    except ManulError as e:
        con.print(f"[red]manul run:[/] {e}")
        sys.exit(1)

    stop_on_signals(daemon.stop_event)

    def ready(address: tuple[str, int] | None) -> None:
        reg = daemon.registry()
        where = "the cluster" if kubernetes else f"`{registry}`"
        con.print(f"[bold]Manul[/] watching TLS handshakes on this host "
                  f"(registry {where}: {len(reg.agents)} agents, "
                  f"{len(reg.providers)} extra providers).")
        for m in daemon.mechanisms:
            note = f"  [yellow]degraded: {m.note}[/]" if m.degraded else ""
            con.print(f"  {m.concern:<10} {m.mechanism}{note}")
        if address:
            con.print(f"  http       http://{address[0]}:{address[1]}/metrics, /healthz, "
                      "/inventory")
        con.print(f"  audit      {audit}")
        con.print(f"  policies   {daemon.policy_set.origin}")
        if daemon.authz is not None:
            snap = daemon.authz.sources.snapshot
            state = (f"{len(snap.policies or ())} policies" if not snap.policy_error
                     else f"[red]not serving: {escape(snap.policy_error)}[/]")
            con.print(f"  ext_authz  unix:{authz_socket} ({state})")
        if daemon.sandbox is not None:
            st = daemon.sandbox.status().to_json()
            con.print(f"  sandbox    {len(st.get('bindings', []))} cgroups bound "
                      "(`manul sandbox status` for details)")
        con.print("Make an HTTPS call to an LLM provider (e.g. "
                  "`curl https://api.openai.com/v1/models`) and it appears below. Ctrl-C stops.")

    try:
        daemon.run(ready=ready)
    except ManulError as e:
        con.print(f"[red]manul run:[/] {e}")
        sys.exit(1)
    con.print(f"stopped: {daemon.discovery.stats.llm} LLM handshakes classified.")


def _print(con: Console, o: Observation) -> None:
    con.print(observation_line(o))
