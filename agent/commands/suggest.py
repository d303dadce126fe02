"""`manul suggest AGENT`: a least-privilege Cedar sandbox from AGENT's learned baseline.

Reads the baseline `manul run` learned (`--state-dir`), the programs'
interpreters from this host's files (or `--root`, a container's root), and
prints Cedar policy text for `Agent::"AGENT"` (agent/baseline/suggest.py).
With `--registry`, AGENT must be one of its agents (a typo is caught
before anything is printed). Review it, then put it in the policy set.
"""

from __future__ import annotations

import sys
from pathlib import Path
from typing import NoReturn

import click

from agent.baseline.store import Store
from agent.baseline.suggest import interpreters_for
from agent.baseline.suggest import suggest as suggest_text
from agent.commands.baseline import load_profile, state_dir_option
from agent.errors import ManulError
from agent.registry import load_directory


def _fail(message: str) -> NoReturn:
    click.echo(f"error: {message}", err=True)
    sys.exit(1)


@click.command()
@click.argument("agent")
@click.option("--registry", type=click.Path(path_type=Path, file_okay=False, exists=True),
              help="Check AGENT against this registry folder (its Agent records).")
@state_dir_option
@click.option("--root", default="/", show_default=True,
              help="Where the agent's programs are, to read their interpreters (a "
                   "container's root, e.g. /proc/PID/root).")
@click.option("-o", "--output", type=click.Path(path_type=Path, dir_okay=False),
              help="Write the policy here instead of stdout.")
def suggest(agent: str, registry: Path | None, state_dir: Path, root: str,
            output: Path | None) -> None:
    """Print a Cedar sandbox that permits AGENT's learned baseline and nothing else.

    \b
    AGENT is the registry key (e.g. finance/analyst). Example:
      manul suggest finance/analyst > policies/analyst-sandbox.cedar
      manul compile policies --registry examples/registry
    """
    if registry is not None:
        try:
            reg = load_directory(registry)
        except ManulError as e:
            _fail(str(e))
        keys = sorted(a.meta.key for a in reg.agents)
        if agent not in keys:
            _fail(f"`{agent}` is not an Agent of the registry `{registry}` "
                  f"(its agents: {', '.join(keys) or 'none'})")
    profile = load_profile(Store(state_dir), agent)
    text = suggest_text(profile, agent, interpreters=interpreters_for(profile, root=root))
    if output is None:
        sys.stdout.write(text)
        return
    try:
        output.write_text(text)
    except OSError as e:
        _fail(f"cannot write `{output}`: {e.strerror}")
    click.echo(f"wrote {output}", err=True)
