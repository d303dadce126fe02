"""Rendering shared by `manul run` and `manul discover`: observation lines and tables."""

from __future__ import annotations

from datetime import datetime

from rich.table import Table
from rich.text import Text

from agent.discovery.classify import Classification
from agent.discovery.inventory import Entry
from agent.discovery.service import Observation

STYLE = {
    Classification.REGISTERED: "green",
    Classification.SHADOW: "bold red",
    Classification.UNATTRIBUTABLE: "yellow",
    Classification.GOVERNED: "cyan",
}


def observation_line(o: Observation) -> Text:
    cls = o.classification
    when = datetime.fromtimestamp(o.handshake.seen_at).strftime("%H:%M:%S")
    proc = o.exe
    who = o.workload.name if o.workload else f"cgroup {o.handshake.cgroup_id}"
    t = Text(f"{when} ")
    t.append(f"{cls.value:<14}", style=STYLE[cls])
    t.append(f" {who}  ")
    t.append(f"{o.match.provider}", style="bold")
    t.append(f" ({o.sni} -> {o.handshake.dst}:{o.handshake.dport})  ")
    t.append(f"{proc}[{o.handshake.tgid}]  {o.ja4}", style="dim")
    if o.first_of_pair:
        t.append("  new", style="bold magenta")
    return t


def inventory_table(entries: list[Entry], title: str = "LLM callers on this node") -> Table:
    t = Table(title=title, title_justify="left", expand=False)
    for col in ("workload", "kind", "class", "agent", "providers", "processes", "count",
                "last seen"):
        t.add_column(col, overflow="fold")
    for e in entries:
        procs = ", ".join(sorted({exe.rsplit("/", 1)[-1] for exe in e.processes.values()}))
        t.add_row(e.workload, e.kind, Text(e.classification.value, style=STYLE[e.classification])
                  + (Text(" quarantined", style="red") if e.quarantined else Text("")),
                  e.agent or "-", ", ".join(sorted(e.providers)), procs, str(e.count),
                  datetime.fromtimestamp(e.last_seen).strftime("%H:%M:%S"))
    return t
