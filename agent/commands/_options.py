"""Options and plumbing shared by `manul run` and `manul discover`: where workloads and
records come from, quarantine, signals. One definition, so the two cannot drift apart."""

from __future__ import annotations

import ipaddress
import signal
import threading
from collections.abc import Callable
from pathlib import Path
from types import FrameType
from typing import Any, TypeVar

import click

F = TypeVar("F", bound=Callable[..., Any])

def _networks(ctx: click.Context, param: click.Parameter,
              values: tuple[str, ...]) -> tuple[str, ...]:
    """--allow values, checked before anything is loaded or pinned."""
    for v in values:
        try:
            ipaddress.ip_network(v, strict=False)
        except ValueError:
            raise click.BadParameter(f"`{v}` is not an IP address or CIDR") from None
    return values


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
    click.option("--allow", "allow", multiple=True, metavar="CIDR", callback=_networks,
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
