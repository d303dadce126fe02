"""`manul discover`: watch which workloads talk to LLM providers, then report."""

from __future__ import annotations

import json
import sys
import threading
from pathlib import Path

import click
from rich.console import Console, Group
from rich.live import Live

from agent.baseline.service import Mode
from agent.commands._discovery_view import inventory_table, observation_line
from agent.commands._options import agent_options, stop_on_signals
from agent.daemon import Daemon, DaemonConfig
from agent.discovery.service import Observation
from agent.errors import ManulError

DEFAULT_REGISTRY = Path(__file__).resolve().parents[2] / "examples" / "registry"


@click.command()
@click.option("--registry", type=click.Path(path_type=Path, file_okay=False),
              default=DEFAULT_REGISTRY, show_default=True,
              help="Folder of registry YAML; its Agent records decide `registered`.")
@click.option("--duration", type=click.FloatRange(min=0), default=0.0,
              help="Stop after this many seconds (default, 0: until Ctrl-C).")
@click.option("--json", "as_json", is_flag=True,
              help="Print the inventory as JSON, one object per workload, at the end.")
@agent_options
@click.option("--audit-log", default=None, help="Also write audit records (JSON lines) here.")
def discover(registry: Path, duration: float, as_json: bool, kubernetes: bool, node: str,
             pods_file: Path | None, trust_domain: str, quarantine_shadow: bool,
             allow: tuple[str, ...], audit_log: str | None) -> None:
    """Turn on discovery and watch what is already talking to LLM providers.

    Every TLS handshake on this node (any port) is captured in the kernel,
    its SNI matched against the provider catalog, attributed to a workload
    (pod, systemd unit, container, cgroup) and classified: `registered`
    (matches an Agent record), `shadow` (no record), `unattributable`, or
    `governed` (a call to the AI gateway).
    """
    err = Console(stderr=True, highlight=False)
    lines: list[Observation] = []
    lock = threading.Lock()

    def seen(o: Observation) -> None:
        with lock:
            lines.append(o)
            del lines[:-12]

    try:
        daemon = Daemon(DaemonConfig(registry=None if kubernetes else registry, listen="",
                                     audit_log=audit_log, quarantine_shadow=quarantine_shadow,
                                     quarantine_allow=list(allow), kubernetes=kubernetes,
                                     node=node, pods_file=pods_file, sandbox=False,
                                     baseline=Mode.OFF, trust_domain=trust_domain),
                        on_observation=seen)
    except ManulError as e:
        err.print(f"[red]manul discover:[/] {e}")
        sys.exit(1)

    stop_on_signals(daemon.stop_event)
    if duration > 0:
        threading.Timer(duration, daemon.stop_event.set).start()

    failure: list[ManulError] = []
    runner = threading.Thread(target=_run, args=(daemon, failure), daemon=True)
    runner.start()
    if as_json or not sys.stdout.isatty():
        runner.join()
    else:
        with Live(console=Console(highlight=False), refresh_per_second=4,
                  transient=True) as live:
            while runner.is_alive():
                with lock:
                    recent = [observation_line(o) for o in lines]
                live.update(Group(inventory_table(daemon.discovery.inventory.entries(),
                                                  "LLM callers (live)"), *recent))
                runner.join(0.25)
    if failure:
        err.print(f"[red]manul discover:[/] {failure[0]}")
        sys.exit(1)
    entries = daemon.discovery.inventory.entries()
    if as_json:
        click.echo(json.dumps({"workloads": daemon.discovery.inventory.to_json(),
                               "handshakes": vars(daemon.discovery.stats),
                               "kernel": daemon.ring_stats}, indent=2))
    else:
        Console(highlight=False).print(inventory_table(entries))
        s = daemon.discovery.stats
        err.print(f"{s.handshakes} TLS handshakes seen, {s.llm} to LLM providers, "
                  f"{s.other_hosts} to other hosts, {s.parse_errors} unparseable.")


def _run(daemon: Daemon, failure: list[ManulError]) -> None:
    try:
        daemon.run()
    except ManulError as e:
        failure.append(e)
        daemon.stop_event.set()
