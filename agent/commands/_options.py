"""Options and plumbing shared by the commands: `manul run` and `manul discover`'s
workload, record and quarantine options and signals, and every command's reading of
a file named on the command line. One definition, so they cannot drift apart."""

from __future__ import annotations

import grp
import signal
import threading
from collections.abc import Callable
from pathlib import Path
from types import FrameType
from typing import Any, TypeVar

import click

from agent.errors import ConfigError
from agent.textfile import read_text

F = TypeVar("F", bound=Callable[..., Any])


def read_arg(path: str, what: str = "") -> str:
    """A file named on the command line, as text; a bad parameter naming the
    flag (`what`) and saying why not (agent.textfile)."""
    try:
        return read_text(path, ConfigError, what)
    except ConfigError as e:
        raise click.BadParameter(str(e)) from None


_OPTIONS = [
    click.option("--kubernetes", is_flag=True,
                 help="Cluster mode: registry records (manul.dev CRs) and this node's pods "
                      "from the API server (in-cluster credentials, else kubeconfig)."),
    click.option("--node", default="",
                 help="This node's name in cluster mode (default $NODE_NAME)."),
    click.option("--pods-file", type=click.Path(path_type=Path, dir_okay=False, exists=True),
                 help="Pods from a file (`kubectl get pods -o yaml`), to attribute pod "
                      "cgroups offline."),
    click.option("--trust-domain", default="cluster.local", show_default=True,
                 help="SPIFFE trust domain of pod identities."),
    click.option("--quarantine-shadow", is_flag=True,
                 help="Deny shadow agents' egress except to the gateway (and --allow)."),
    click.option("--allow", "allow", multiple=True, metavar="CIDR",
                 help="With --quarantine-shadow: also allow this address or CIDR."),
]


def agent_options(f: F) -> F:
    """Add --kubernetes, --node, --pods-file, --trust-domain, --quarantine-shadow, --allow."""
    for option in reversed(_OPTIONS):
        f = option(f)
    return f


def stop_on_signals(stop: threading.Event) -> None:
    """SIGINT and SIGTERM set `stop` (the daemon then winds down cleanly)."""

    def handler(signum: int, frame: FrameType | None) -> None:
        stop.set()

    signal.signal(signal.SIGINT, handler)
    signal.signal(signal.SIGTERM, handler)


_UNITS = {"": 1, "K": 1 << 10, "M": 1 << 20, "G": 1 << 30}


def parse_size(ctx: click.Context, param: click.Parameter, value: str) -> int:
    """`100M`, `512K`, `1G` or bytes; at least 4 KiB."""
    text = value.strip().upper().removesuffix("IB").removesuffix("B")
    unit = text[-1:] if text[-1:] in _UNITS and text[-1:] else ""
    number = text[: len(text) - len(unit)]
    if not number.isdigit() or int(number) * _UNITS[unit] < 4096:
        raise click.BadParameter(f"`{value}`: give a size of at least 4K, e.g. 100M")
    return int(number) * _UNITS[unit]



_DURATION_UNITS = {"s": 1, "m": 60, "h": 3600, "d": 86400}


def parse_duration(ctx: click.Context | None, param: click.Parameter | None,
                   value: str) -> float:
    """`30m`, `90s`, `2h`, `1d` or seconds; more than zero."""
    text = value.strip().lower()
    unit = text[-1:] if text[-1:] in _DURATION_UNITS else "s"
    number = text[:-1] if text[-1:] in _DURATION_UNITS else text
    try:
        seconds = float(number) * _DURATION_UNITS[unit]
    except ValueError:
        seconds = -1.0
    if not 0 < seconds < float("inf"):
        raise click.BadParameter(f"`{value}`: give a duration such as 90s, 30m, 2h or 1d")
    return seconds


def group_id(value: str) -> int:
    """A group by name or gid (click.BadParameter when there is no such group)."""
    if value.isdigit():
        return int(value)
    try:
        return grp.getgrnam(value).gr_gid
    except KeyError:
        raise click.BadParameter(f"no group `{value}`") from None
