"""`manul quarantine list | add | release`: quarantine by hand, and release.

A quarantined cgroup may connect only to the quarantine's allow-list (the
gateway's addresses): every other connection is refused with EPERM and
reported. The pinned `quarantined` map under /sys/fs/bpf/manul/quarantine
is the one record of who is quarantined, whoever put them there (discovery
with `--quarantine-shadow`, or this command): a running agent reads it back
every second and its decision point sees `context.quarantined` for the
registered callers whose workloads are in it, so a release here is a
release there. Everything stays in force after the command exits.
"""

from __future__ import annotations

import json
import sys
from pathlib import Path
from typing import Any, NoReturn

import click
from rich.console import Console

from agent.discovery.quarantine import PIN_NAME, Quarantine, addr_key, pinned_cgroups
from agent.errors import ManulError
from agent.kernel.fs import PIN_ROOT
from agent.kernel.pins import pin_dir
from agent.registry import Registry, load_directory
from agent.sandbox.apply import CgroupRef
from agent.workloads import WorkloadResolver

_err = Console(stderr=True, highlight=False, soft_wrap=True)


def _fail(message: str) -> NoReturn:
    _err.print(f"error: {message}", markup=False)
    sys.exit(1)


@click.group()
@click.option("--pin-root", type=click.Path(path_type=Path), default=PIN_ROOT, hidden=True,
              envvar="MANUL_PIN_ROOT", help="bpffs directory of the pinned state.")
@click.pass_context
def quarantine(ctx: click.Context, pin_root: Path) -> None:
    """Quarantine workloads (egress only to the gateway), list them, release them.

    \b
    Examples:
      manul quarantine add --cgroup /system.slice/rogue.service --allow 10.96.0.20
      manul quarantine add --workload finance/analyst --registry examples/registry
      manul quarantine list --registry examples/registry
      manul quarantine release --cgroup /system.slice/rogue.service
    """
    ctx.obj = pin_root


def _targets(cgroups: tuple[str, ...], workload: str | None,
             registry: Path | None) -> list[CgroupRef]:
    if bool(cgroups) == bool(workload):
        raise click.UsageError("give either --cgroup PATH or --workload NAME")
    if cgroups:
        return [CgroupRef.resolve(c) for c in cgroups]
    from agent.sandbox.assign import agent_cgroups

    if registry is None:
        raise click.UsageError("--workload needs --registry DIR")
    reg = load_directory(registry)
    agent = reg.agent(str(workload))
    if agent is None:
        raise click.UsageError(f"workload `{workload}`: no Agent of that name in `{registry}`")
    refs = agent_cgroups(reg, WorkloadResolver(), sandboxed_only=False).get(agent.meta.key, [])
    if not refs:
        _fail(f"workload `{workload}`: no cgroup on this node matches the identities of "
              f"Agent `{agent.meta.key}`")
    return refs


_TARGET = [
    click.option("--cgroup", "cgroups", multiple=True, metavar="PATH",
                 help="A cgroup v2 directory (absolute, or relative to the v2 root); "
                      "repeatable."),
    click.option("--workload", metavar="NAME",
                 help="A registered Agent: every cgroup its workloads run in now."),
    click.option("--registry", type=click.Path(file_okay=False, path_type=Path, exists=True),
                 help="The registry folder (with --workload; with list: who each one is)."),
]


def _target_options(f: Any) -> Any:
    for opt in reversed(_TARGET):
        f = opt(f)
    return f


@quarantine.command()
@_target_options
@click.option("--allow", multiple=True, metavar="ADDR",
              help="Also allow this address or CIDR (the gateway's); repeatable.")
@click.pass_obj
def add(root: Path, cgroups: tuple[str, ...], workload: str | None, registry: Path | None,
        allow: tuple[str, ...]) -> None:
    """Quarantine cgroups: they may connect only to the allow-list."""
    try:
        for a in allow:
            addr_key(a)  # a bad address changes nothing
        refs = _targets(cgroups, workload, registry)
        q = Quarantine(root=root)
        q.start()
        try:
            if allow:
                q.set_allowed(sorted(set(q.allowed()) | set(allow)))
            for r in refs:
                q.add(r.id)
            allowed = q.allowed()
        finally:
            q.close()
    except ManulError as e:
        _fail(str(e))
    for r in refs:
        click.echo(f"quarantined /{r.path} (cgroup {r.id})")
    if allowed:
        click.echo("it may connect only to " + ", ".join(allowed))
    else:
        _err.print("warning: the allow-list is empty: it can connect nowhere (give --allow "
                   "with the gateway's address)", markup=False)


@quarantine.command()
@_target_options
@click.option("--all", "everything", is_flag=True, help="Release every quarantined cgroup.")
@click.pass_obj
def release(root: Path, cgroups: tuple[str, ...], workload: str | None, registry: Path | None,
            everything: bool) -> None:
    """Release quarantined cgroups."""
    if pinned_cgroups(root) is None:
        _fail("nothing is quarantined on this node (no quarantine was ever started)")
    try:
        q = Quarantine(root=root)
        q.start()
        try:
            if everything:
                ids = q.cgroups()
            else:
                ids = [r.id for r in _targets(cgroups, workload, registry)]
            released = [i for i in ids if q.remove(i)]
        finally:
            q.close()
    except ManulError as e:
        _fail(str(e))
    missing = sorted(set(ids) - set(released))
    for i in released:
        click.echo(f"released cgroup {i}")
    if missing:
        _fail("not quarantined: " + ", ".join(f"cgroup {i}" for i in missing))


@quarantine.command("list")
@click.option("--registry", type=click.Path(file_okay=False, path_type=Path, exists=True),
              help="The registry folder: which registered caller each workload is.")
@click.option("--json", "as_json", is_flag=True, help="Print JSON.")
@click.pass_obj
def list_cmd(root: Path, registry: Path | None, as_json: bool) -> None:
    """What is quarantined on this node, and what it may still reach."""
    try:
        ids = pinned_cgroups(root) or []
        reg: Registry | None = load_directory(registry) if registry is not None else None
        resolver = WorkloadResolver()
        rows = []
        for i in ids:
            w = resolver.resolve(i)
            rec = reg.match_any(w.identities()) if reg is not None and w is not None else None
            rows.append({"cgroup_id": i, "cgroup": "/" + w.cgroup_path.lstrip("/") if w else None,
                         "workload": w.name if w else None,
                         "caller": rec.meta.key if rec is not None else None})
        allowed = _allowed(root) if ids else []
    except ManulError as e:
        _fail(str(e))
    if as_json:
        click.echo(json.dumps({"quarantined": rows, "allowed": allowed}, indent=2))
        return
    if not rows:
        click.echo("nothing is quarantined")
        return
    for r in rows:
        who = f" (caller `{r['caller']}`)" if r["caller"] else ""
        where = r["cgroup"] or "a cgroup that no longer exists"
        click.echo(f"cgroup {r['cgroup_id']}: {where}{who}")
    click.echo("allowed: " + (", ".join(allowed) or "nothing"))


def _allowed(root: Path) -> list[str]:
    from agent.discovery.quarantine import describe_allowed

    return describe_allowed(pin_dir(PIN_NAME, root) / "maps" / "quarantine_allow")
