"""`manul`: the command line, one lazily imported module per subcommand.

Each subcommand lives in `agent/commands/<name>.py` and is imported only
when it runs, so `manul --help` stays fast and a broken optional dependency
of one command cannot break the others.
"""

from __future__ import annotations

import importlib
import logging
import sys

import click

from agent import __version__
from agent.telemetry.logs import FORMATS, resolve, setup_logging

# name -> (module, attribute, one-line help shown by `manul --help`)
COMMANDS: dict[str, tuple[str, str, str]] = {
    "run": ("agent.commands.run", "run", "Run the node agent in the foreground."),
    "doctor": ("agent.commands.doctor", "doctor", "Report what this kernel supports."),
    "discover": ("agent.commands.discover", "discover",
                 "Watch which workloads call LLM providers, and classify them."),
    "compile": ("agent.commands.compile", "compile_cmd",
                "Compile a policy set: what the kernel enforces, what the gateway does."),
    "authz": ("agent.commands.authz", "authz", "Serve Envoy ext_authz decisions on a Unix socket."),
    "check": ("agent.commands.check", "check",
              "Ask the decision point for a decision and its explanation."),
    "sandbox": ("agent.commands.sandbox", "sandbox", "Apply, inspect and remove kernel sandboxes."),
    "quarantine": ("agent.commands.quarantine", "quarantine",
                   "Quarantine workloads (egress only to the gateway); list; release."),
    "baseline": ("agent.commands.baseline", "baseline",
                 "Show and reset the behaviour baselines learned on this node."),
    "suggest": ("agent.commands.suggest", "suggest",
                "Print a least-privilege Cedar sandbox from an agent's baseline."),
}


class LazyGroup(click.Group):
    """A click group whose commands are imported on first use."""

    def list_commands(self, ctx: click.Context) -> list[str]:
        return list(COMMANDS)

    def get_command(self, ctx: click.Context, cmd_name: str) -> click.Command | None:
        spec = COMMANDS.get(cmd_name)
        if spec is None:
            return None
        module = importlib.import_module(spec[0])
        cmd = getattr(module, spec[1])
        assert isinstance(cmd, click.Command)
        return cmd

    def format_commands(self, ctx: click.Context, formatter: click.HelpFormatter) -> None:
        rows = [(name, spec[2]) for name, spec in COMMANDS.items()]
        with formatter.section("Commands"):
            formatter.write_dl(rows)


@click.group(cls=LazyGroup, context_settings={"help_option_names": ["-h", "--help"]})
@click.version_option(__version__, prog_name="manul")
@click.option("-v", "--verbose", count=True, help="More log output (-vv for debug).")
@click.option("--log-format", type=click.Choice(FORMATS), default="auto", show_default=True,
              envvar="MANUL_LOG_FORMAT",
              help="Logs and `manul run` output: JSON lines (one event per line, never "
                   "wrapped) or text; auto is JSON when stdout is not a terminal.")
@click.pass_context
def cli(ctx: click.Context, verbose: int, log_format: str) -> None:
    """Manul: kernel-level governance for AI agents.

    \b
    Start here:
      manul doctor            what this node's kernel can enforce and observe
      manul run               the node agent (host mode: examples/registry/)
      manul discover          who on this node calls LLM providers
    """
    fmt = resolve(log_format)
    ctx.obj = {"log_format": fmt}
    setup_logging(max(logging.WARNING - 10 * verbose, logging.DEBUG), fmt, sys.stderr)


def main() -> None:
    """Console-script entry point."""
    cli(prog_name="manul")


if __name__ == "__main__":
    main()
