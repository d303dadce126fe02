"""`manul run`: the node agent in the foreground (host mode by default)."""

from __future__ import annotations

import sys
from pathlib import Path
from typing import Any

import click
from rich.markup import escape

from agent.baseline.service import Anomaly, Mode
from agent.baseline.store import DEFAULT_STATE_DIR
from agent.commands._discovery_view import observation_line
from agent.commands._options import (
    agent_options,
    group_id,
    parse_duration,
    parse_size,
    stop_on_signals,
)
from agent.daemon import Daemon, DaemonConfig
from agent.decision.pool import default_workers
from agent.discovery.service import Observation
from agent.errors import ManulError
from agent.kernel.budget import RATE_MAX
from agent.kernel.fs import PIN_ROOT
from agent.sandbox.counters import DEFAULT_EVENT_BURST, DEFAULT_EVENT_RATE, DEFAULT_NODE_RATE
from agent.telemetry.audit import DEFAULT_BACKUPS
from agent.telemetry.logs import Output, resolve
from agent.telemetry.throttle import DEFAULT_BURST, DEFAULT_RATE, DEFAULT_WINDOW


@click.command()
@click.option("--registry", type=click.Path(path_type=Path, file_okay=False),
              help="Folder of registry YAML (Agent, LLMProvider, ... records): host mode.")
@click.option("--listen", default="127.0.0.1:9464", show_default=True,
              help="Address of /metrics, /healthz and /inventory (empty to disable).")
@click.option("--audit-log", default="/var/log/manul/audit.jsonl", show_default=True,
              help="Audit log (JSON lines); `-` writes it to stdout.")
@click.option("--audit-max-size", default="100M", show_default=True, callback=parse_size,
              help="Rotate the audit log past this size (K, M, G: binary units).")
@click.option("--audit-backups", type=click.IntRange(0, 100), default=DEFAULT_BACKUPS,
              show_default=True, help="Rotated audit files kept (`audit.jsonl.1`, ...).")
@click.option("--audit-window", default=f"{DEFAULT_WINDOW:g}s", show_default=True,
              callback=parse_duration,
              help="Identical sandbox denials (and quarantine refusals, discovery records) "
                   "of one workload within this window become one record with a count.")
@click.option("--audit-rate", type=click.FloatRange(0, 1e6), default=DEFAULT_RATE,
              show_default=True,
              help="Audit records a second each workload may write (0: no limit); what "
                   "it may not is counted and reported as `suppressed` in a later record.")
@click.option("--audit-burst", type=click.IntRange(1, 1_000_000), default=DEFAULT_BURST,
              show_default=True, help="... and at most this many at once.")
@click.option("--event-rate", type=click.IntRange(0, RATE_MAX), default=DEFAULT_EVENT_RATE,
              show_default=True,
              help="Sandbox denials (and quarantine refusals) a second each workload may "
                   "send up from the kernel as events, per CPU (0: no limit). Every one is "
                   "still counted in the kernel: this bounds the agent's work in a storm, "
                   "not the metrics.")
@click.option("--event-burst", type=click.IntRange(1, RATE_MAX), default=DEFAULT_EVENT_BURST,
              show_default=True, help="... and at most this many at once.")
@click.option("--event-node-rate", type=click.IntRange(0, RATE_MAX), default=DEFAULT_NODE_RATE,
              show_default=True,
              help="Sandbox (and quarantine) events a second the whole node may send up "
                   "(0: no limit): a cap for many workloads storming at once, so that "
                   "events are held back and counted rather than lost.")
@click.option("--policies", type=click.Path(path_type=Path, file_okay=False, exists=True),
              help="The policy set: a folder of .cedar files (and entities.json). The kernel "
                   "enforces it for sandboxed agents; Envoy ext_authz is answered from it on "
                   "--authz-socket. Default: the registry's Policy records (no ext_authz).")
@click.option("--authz-socket", type=click.Path(path_type=Path), default="/run/manul/authz.sock",
              show_default=True, help="The decision point's Unix socket (with --policies, "
                                      "and in cluster mode).")
@click.option("--authz-socket-group", default=None, metavar="GROUP",
              help="Group (name or gid) owning the decision point's socket: the gateway's "
                   "pods join it (supplementalGroups) to connect. Default: root's.")
@click.option("--authz-workers", type=click.IntRange(0, 64), default=None,
              help="Processes that decide ext_authz requests, so decisions use several "
                   "CPUs and never wait on the agent (default: 2 where the agent may use "
                   "two CPUs or more, else 0: decide in the agent's process).")
@click.option("--no-sandbox", is_flag=True,
              help="Do not enforce the registry's sandboxes (Agent spec.sandbox).")
@click.option("--no-authz", is_flag=True,
              help="Do not answer Envoy ext_authz (the policy set is still enforced in "
                   "the kernel).")
@click.option("--baseline", "baseline", type=click.Choice([m.value for m in Mode]),
              default=Mode.REGISTERED.value, show_default=True,
              help="Whose behaviour is learned in the kernel and watched for anomalies: the "
                   "registry's agents, every workload on the node, or nobody.")
@click.option("--baseline-learn", default="30m", show_default=True, callback=parse_duration,
              help="How long each agent's baseline learns before its detectors run "
                   "(90s, 30m, 2h, 1d).")
@click.option("--state-dir", type=click.Path(path_type=Path, file_okay=False),
              default=DEFAULT_STATE_DIR, show_default=True, envvar="MANUL_STATE_DIR",
              help="Where learned baselines are kept across restarts.")
@click.option("--no-cluster-view", is_flag=True,
              help="Cluster mode: do not publish what discovery sees (a DiscoveredAgent "
                   "per shadow agent, the status of Agent records).")
@click.option("--pin-root", type=click.Path(path_type=Path), default=PIN_ROOT, hidden=True,
              envvar="MANUL_PIN_ROOT", help="bpffs directory of the pinned state.")
@agent_options
@click.pass_context
def run(ctx: click.Context, registry: Path | None, listen: str, audit_log: str,
        audit_max_size: int, audit_backups: int, audit_window: float, audit_rate: float,
        audit_burst: int, event_rate: int, event_burst: int, event_node_rate: int,
        kubernetes: bool, node: str,
        pods_file: Path | None, trust_domain: str,
        policies: Path | None, authz_socket: Path, authz_socket_group: str | None,
        authz_workers: int | None, no_sandbox: bool, no_authz: bool, baseline: str,
        baseline_learn: float,
        state_dir: Path, no_cluster_view: bool, pin_root: Path,
        quarantine_shadow: bool, allow: tuple[str, ...]) -> None:
    """Run Manul's node agent in the foreground until Ctrl-C.

    It probes the kernel, watches the registry folder, and turns on
    discovery: every TLS handshake on this host to an LLM provider is
    attributed to its workload and printed, classified `registered`,
    `shadow`, `unattributable` or `governed` (through the gateway).
    """
    out = Output((ctx.obj or {}).get("log_format") or resolve("auto"))
    if registry is None and not kubernetes:
        raise click.UsageError("give --registry DIR (host mode) or --kubernetes (cluster mode)")
    audit = audit_log
    try:
        daemon = Daemon(DaemonConfig(registry=registry, listen=listen, audit_log=audit,
                                     audit_max_bytes=audit_max_size,
                                     audit_backups=audit_backups,
                                     audit_window=audit_window, audit_rate=audit_rate,
                                     audit_burst=audit_burst, event_rate=event_rate,
                                     event_burst=event_burst,
                                     event_node_rate=event_node_rate,
                                     quarantine_shadow=quarantine_shadow,
                                     quarantine_allow=list(allow), kubernetes=kubernetes,
                                     node=node, pods_file=pods_file,
                                     trust_domain=trust_domain, policies=policies,
                                     sandbox=not no_sandbox, pin_root=pin_root,
                                     authz=not no_authz,
                                     authz_socket=authz_socket,
                                     authz_socket_group=(group_id(authz_socket_group)
                                                         if authz_socket_group else None),
                                     authz_workers=(default_workers() if authz_workers is None
                                                    else authz_workers),
                                     baseline=Mode(baseline),
                                     baseline_learn=baseline_learn, state_dir=state_dir,
                                     cluster_view=not no_cluster_view),
                        on_observation=lambda o: _print(out, o),
                        on_anomaly=lambda a: _print_anomaly(out, a))
    except ManulError as e:
        out.event("error", f"[red]manul run:[/] {escape(str(e))}", message=str(e))
        sys.exit(1)

    stop_on_signals(daemon.stop_event)

    def ready(address: tuple[str, int] | None) -> None:
        reg = daemon.registry()
        where = "the cluster" if kubernetes else f"`{registry}`"
        fields: dict[str, Any] = {
            "registry": "kubernetes" if kubernetes else str(registry),
            "agents": len(reg.agents), "extra_providers": len(reg.providers),
            "mechanisms": [{"concern": m.concern, "mechanism": m.mechanism,
                            "degraded": m.note if m.degraded else None}
                           for m in daemon.mechanisms],
            "http": f"http://{address[0]}:{address[1]}" if address else None,
            "audit": audit, "policies": daemon.policy_set.origin}
        lines = [f"[bold]Manul[/] watching TLS handshakes on this host "
                 f"(registry {escape(where)}: {len(reg.agents)} agents, "
                 f"{len(reg.providers)} extra providers)."]
        for m in daemon.mechanisms:
            note = f"  [yellow]degraded: {escape(m.note)}[/]" if m.degraded else ""
            lines.append(f"  {m.concern:<10} {escape(m.mechanism)}{note}")
        if address:
            lines.append(f"  http       http://{address[0]}:{address[1]}/metrics, /healthz, "
                         "/inventory")
        lines.append(f"  audit      {escape(audit)}")
        lines.append(f"  policies   {escape(daemon.policy_set.origin)}")
        if daemon.authz is not None:
            snap = daemon.authz.sources.snapshot
            fields["ext_authz"] = {"socket": str(authz_socket),
                                   "policies": len(snap.policies or ()),
                                   "error": snap.policy_error or None}
            state = (f"{len(snap.policies or ())} policies" if not snap.policy_error
                     else f"[red]not serving: {escape(snap.policy_error)}[/]")
            lines.append(f"  ext_authz  unix:{escape(str(authz_socket))} ({state})")
        if daemon.baseline is not None:
            fields["baseline"] = {"mode": baseline, "learn_s": baseline_learn,
                                  "state_dir": str(state_dir)}
            whose = "every workload" if baseline == "all" else "registered agents"
            lines.append(f"  baseline   {whose}, learning {baseline_learn:g} s each; "
                         f"kept in {escape(str(state_dir))}")
        if daemon.sandbox is not None:
            bound = len(daemon.sandbox.status().to_json().get("bindings", []))
            fields["sandbox_bindings"] = bound
            lines.append(f"  sandbox    {bound} cgroups bound "
                         "(`manul sandbox status` for details)")
        lines.append("Make an HTTPS call to an LLM provider (e.g. "
                     "`curl https://api.openai.com/v1/models`) and it appears below. "
                     "Ctrl-C stops.")
        out.event("started", "\n".join(lines), **fields)

    try:
        daemon.run(ready=ready)
    except ManulError as e:
        out.event("error", f"[red]manul run:[/] {escape(str(e))}", message=str(e))
        sys.exit(1)
    n = daemon.discovery.stats.llm
    out.event("stopped", f"stopped: {n} LLM handshakes classified.", llm_handshakes=n)


def _print(out: Output, o: Observation) -> None:
    hs = o.handshake
    out.event("observation", observation_line(o), classification=str(o.classification),
              workload=o.workload.name if o.workload else None, cgroup_id=hs.cgroup_id,
              provider=o.match.provider, sni=o.sni, destination=f"{hs.dst}:{hs.dport}",
              pid=hs.tgid, process=o.exe, ja4=o.ja4, new=o.first_of_pair,
              reason=o.verdict.reason)


def _print_anomaly(out: Output, a: Anomaly) -> None:
    if not a.written:
        return
    r = a.record
    proc = r.get("process") or {}
    color = {"high": "red", "medium": "yellow"}.get(str(a.finding.severity), "cyan")
    out.event("anomaly", f"[{color}]anomaly[/] {escape(str(a.finding.detector))} "
              f"[bold]{escape(a.name)}[/]: {escape(a.finding.summary)} "
              f"(pid {proc.get('pid')}, {escape(str(proc.get('comm') or ''))})",
              **{k: v for k, v in r.items() if k not in ("time", "kind")})
