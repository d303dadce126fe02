"""`manul baseline list | show | reset`: the learned baselines on this node.

Baselines are files under `<state-dir>/baseline/` (agent/baseline/store.py),
written by `manul run`. `show` prints one (what it runs, reads, writes,
connects to, listens on; generalised directories; what was novel after
learning); `reset` deletes it, and a running agent forgets it in the kernel
within a second and learns again.
"""

from __future__ import annotations

import json
import sys
import time
from pathlib import Path
from typing import Any, NoReturn

import click
from rich.console import Console
from rich.markup import escape

from agent.baseline.errors import BaselineError
from agent.baseline.events import Kind
from agent.baseline.profile import Profile
from agent.baseline.store import DEFAULT_STATE_DIR, Store

_out = Console(highlight=False, soft_wrap=True)
_err = Console(stderr=True, highlight=False, soft_wrap=True)

state_dir_option = click.option(
    "--state-dir", type=click.Path(path_type=Path, file_okay=False),
    default=DEFAULT_STATE_DIR, show_default=True, envvar="MANUL_STATE_DIR",
    help="Where `manul run` keeps learned baselines (its --state-dir).")


def _fail(message: str) -> NoReturn:
    _err.print(f"error: {message}", markup=False)
    sys.exit(1)


def load_profile(store: Store, name: str) -> Profile:
    """`name`'s stored baseline; exits with a sentence when there is none."""
    try:
        p = store.load(name)
    except BaselineError as e:
        _fail(str(e))
    if p is None:
        known = ", ".join(f"`{n}`" for n in store.names()) or "none"
        _fail(f"no baseline for `{name}` under `{store.dir}` (baselines there: {known}); "
              "`manul run` learns one for each registered agent it sees")
    return p


@click.group()
def baseline() -> None:
    """Show and reset the behavioural baselines `manul run` learned.

    \b
    Examples:
      manul baseline list
      manul baseline show finance/analyst
      manul baseline show finance/analyst --json
      manul baseline reset finance/analyst
      manul suggest finance/analyst > analyst.cedar
    """


@baseline.command("list")
@state_dir_option
@click.option("--json", "as_json", is_flag=True, help="Print JSON.")
def list_cmd(state_dir: Path, as_json: bool) -> None:
    """List the baselines kept on this node."""
    store = Store(state_dir)
    rows: list[dict[str, Any]] = []
    now = time.time()
    for name in store.names():
        try:
            p = store.load(name)
        except BaselineError as e:
            rows.append({"name": name, "error": str(e)})
            continue
        if p is not None:
            rows.append({"name": name, "learning": p.learning(now), "items": p.counts()})
    if as_json:
        print(json.dumps(rows, indent=2))
        return
    if not rows:
        _out.print(f"no baselines under `{escape(str(store.dir))}`")
    for r in rows:
        if "error" in r:
            _out.print(f"{escape(r['name'])}  [red]{escape(r['error'])}[/]")
            continue
        state = "learning" if r["learning"] else "detecting"
        counts = ", ".join(f"{v} {k}" for k, v in sorted(r["items"].items()))
        _out.print(f"{escape(r['name'])}  {state}  {escape(counts)}")


def _when(t: float | None) -> str:
    if t is None:
        return "-"
    return time.strftime("%Y-%m-%d %H:%M:%S UTC", time.gmtime(t))


@baseline.command()
@click.argument("agent")
@state_dir_option
@click.option("--json", "as_json", is_flag=True, help="Print the stored JSON.")
def show(agent: str, state_dir: Path, as_json: bool) -> None:
    """Show AGENT's baseline (its registry key, e.g. finance/analyst)."""
    p = load_profile(Store(state_dir), agent)
    if as_json:
        print(json.dumps(p.to_json(), indent=2))
        return
    now = time.time()
    state = (f"learning until {_when(p.started + p.learn_seconds)}" if p.learning(now)
             else f"detecting since {_when(p.learned_at)}")
    _out.print(f"[bold]{escape(p.name)}[/]: {state} (learning began {_when(p.started)})")
    for kind in Kind:
        items = sorted(i for i in p.items if i.kind is kind)
        dirs = sorted(d for k, d in p.prefixes if k is kind)
        if not items and not dirs:
            continue
        _out.print(f"  [bold]{kind}[/] ({len(items)} exact, {len(dirs)} directories)")
        for d in dirs:
            _out.print(f"    {escape(d)}/*  [dim](every file directly in it)[/]")
        for i in items:
            text = str(i).split(" ", 1)[1]
            names = ", ".join(sorted(p.hosts.get(i.addr, ()))) if i.addr else ""
            named = f"  ({escape(names)})" if names else ""
            _out.print(f"    {escape(text)}{named}  [dim]x{p.items[i].count}[/]")
    if p.novel:
        _out.print(f"  [bold]novel after learning, not anomalous[/] ({len(p.novel)})")
        for i in sorted(p.novel):
            _out.print(f"    {escape(str(i))}")


@baseline.command()
@click.argument("agent")
@state_dir_option
def reset(agent: str, state_dir: Path) -> None:
    """Forget AGENT's baseline: a running `manul run` learns it again."""
    store = Store(state_dir)
    try:
        existed = store.reset(agent)
    except BaselineError as e:
        _fail(str(e))
    if existed:
        _out.print(f"baseline of `{escape(agent)}` deleted; a running agent learns it again")
    else:
        _out.print(f"no baseline of `{escape(agent)}` was kept; a running agent that is "
                   "learning it starts again")
