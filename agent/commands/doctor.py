"""`manul doctor`: what this node's kernel can do, and what Manul will use."""

from __future__ import annotations

import json
import platform
import sys

import click
from rich.console import Console
from rich.table import Table

from agent.kernel import fs
from agent.kernel.probe import choose_mechanisms, safe_probe_all


@click.command()
@click.option("--json", "as_json", is_flag=True, help="Machine-readable output.")
def doctor(as_json: bool) -> None:
    """Probe this kernel by loading tiny BPF programs, and report.

    Shows each mechanism (BPF LSM, trampolines, ring buffer, cgroup hooks,
    ...), whether this kernel allows it, why not when it does not, and what
    Manul uses instead. Exit status 1 when something Manul cannot work
    without is missing.
    """
    features, error = safe_probe_all()
    mechanisms = choose_mechanisms(features) if features else []
    try:
        lsms = fs.active_lsms()
    except Exception:  # noqa: BLE001 - doctor reports, never crashes
        lsms = []
    required = {"btf", "cgroup_v2", "ringbuf", "cgroup_skb"}
    fatal = error is not None or any(f.key in required and not f.available for f in features)
    if as_json:
        doc = {
            "kernel": platform.release(),
            "lsms": lsms,
            "features": [f.to_dict() for f in features],
            "mechanisms": [
                {"concern": m.concern, "mechanism": m.mechanism, "degraded": m.degraded,
                 "note": m.note} for m in mechanisms],
            "ok": not fatal,
            "error": error,
        }
        click.echo(json.dumps(doc, indent=2))
        sys.exit(1 if fatal else 0)

    con = Console()
    con.print(f"[bold]Kernel[/] {platform.release()}   [bold]LSMs[/] {','.join(lsms) or '?'}")
    if error:
        con.print(f"[red]The probe itself failed:[/] {error}")
    t = Table(title="Kernel mechanisms", title_justify="left")
    t.add_column("mechanism")
    t.add_column("available")
    t.add_column("detail / what Manul uses instead", overflow="fold")
    for f in features:
        mark = "[green]yes[/]" if f.available else "[red]no[/]"
        text = f.detail if f.available else f"{f.detail}\n[yellow]instead:[/] {f.fallback}"
        t.add_row(f.title, mark, text)
    con.print(t)
    m = Table(title="What Manul will use", title_justify="left")
    m.add_column("concern")
    m.add_column("mechanism")
    m.add_column("note", overflow="fold")
    for mech in mechanisms:
        style = "yellow" if mech.degraded else "green"
        m.add_row(mech.concern, f"[{style}]{mech.mechanism}[/]",
                  ("degraded: " if mech.degraded else "") + mech.note)
    con.print(m)
    if fatal:
        con.print("[red]Manul cannot run here:[/] a required mechanism is missing (see above).")
    sys.exit(1 if fatal else 0)
