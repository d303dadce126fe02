"""`manul sandbox apply | status | remove`: kernel sandboxes by hand.

`apply` compiles Cedar policies (like `manul compile`), picks the sandbox of
one principal, and enforces it on cgroups (`--cgroup`) or on a registered
agent's workloads (`--workload`) through `agent.sandbox`'s atomic protocol:
a new generation beside the old one, one flip per cgroup, the old one
deleted. Everything is pinned under /sys/fs/bpf/manul/sandbox and stays in
force after the command exits. `status` reads that pinned state back;
`remove` ends it for some cgroups or everywhere. Exit status 1 on any error,
with nothing changed.
"""

from __future__ import annotations

import json
import sys
from pathlib import Path
from typing import Any, NoReturn

import click
from rich.console import Console
from rich.table import Table

from agent.commands._options import read_arg
from agent.errors import ManulError
from agent.kernel.fs import PIN_ROOT, cgroup2_root
from agent.registry import Registry, load_directory
from agent.registry.entities import registry_entities
from agent.registry.policyset import PolicyRecords, PolicySet, read_paths
from agent.sandbox import maps as M
from agent.sandbox.apply import (
    MODES,
    Applied,
    CgroupRef,
    PolicyInput,
    apply_sandbox,
    compile_resolving,
    remove_cgroups,
)
from agent.sandbox.errors import PolicyError, SandboxError, TargetError
from agent.sandbox.hosts import HostCache, static_resolver, system_resolver
from agent.sandbox.kernel import SandboxMaps, ensure_loaded, locked, unload
from agent.sandbox.state import Status, read_status

_err = Console(stderr=True, highlight=False, soft_wrap=True)


def _fail(message: str, details: tuple[str, ...] = ()) -> NoReturn:
    _err.print(f"error: {message}", markup=False)
    for d in details:
        _err.print(f"  {d}", markup=False)
    sys.exit(1)


def _hosts_table(path: str) -> dict[str, list[str]]:
    try:
        data = json.loads(read_arg(path))
    except ValueError as e:
        raise click.BadParameter(f"{path}: not JSON: {e}", param_hint="--hosts") from e
    if not (isinstance(data, dict) and all(
            isinstance(v, list) and all(isinstance(a, str) for a in v) for v in data.values())):
        raise click.BadParameter(f"{path}: expected an object of host -> [address, ...]",
                                 param_hint="--hosts")
    return {str(k): [str(a) for a in v] for k, v in data.items()}


@click.group()
@click.option("--pin-root", type=click.Path(path_type=Path), default=PIN_ROOT, hidden=True,
              envvar="MANUL_SANDBOX_PIN_ROOT", help="bpffs directory of the pinned state.")
@click.pass_context
def sandbox(ctx: click.Context, pin_root: Path) -> None:
    """Apply, inspect and remove kernel sandboxes.

    \b
    Examples:
      manul sandbox apply examples/policies --registry examples/registry \\
          --hosts examples/policies/hosts.json \\
          --principal 'Agent::"finance/analyst"' --cgroup /manul.slice/analyst
      manul sandbox apply examples/policies --registry examples/registry \\
          --workload finance/analyst
      manul sandbox status
      manul sandbox remove --cgroup /manul.slice/analyst
    """
    ctx.obj = pin_root


@sandbox.command()
@click.argument("paths", nargs=-1, type=click.Path(exists=True))
@click.option("--entities", "entities_file", type=click.Path(dir_okay=False),
              help="Cedar JSON entities: sets and their members, class nesting "
                   "(default: a folder's entities.json).")
@click.option("--hosts", "hosts_file", type=click.Path(dir_okay=False),
              help="Addresses of the host names the policies use, {host: [address, ...]} "
                   "(default: resolve them now with this node's resolver).")
@click.option("--principal", metavar="ENTITY",
              help='Whose sandbox to enforce: `Agent::"id"`, `AgentClass::"id"` or `default` '
                   '(default: `Agent::"<namespace/name>"` with --workload, else the only '
                   "agent or class the policies sandbox).")
@click.option("--mode", type=click.Choice(MODES),
              help="enforce: deny; audit: allow and report would-denies "
                   "[default: enforce, or the Agent's spec.sandbox.mode].")
@click.option("--cgroup", "cgroups", multiple=True, metavar="PATH",
              help="A cgroup v2 directory (absolute, or relative to the v2 root); repeatable.")
@click.option("--workload", metavar="NAME",
              help="A registered Agent (`name` or `namespace/name`): every cgroup its "
                   "workloads run in now.")
@click.option("--registry", type=click.Path(file_okay=False, path_type=Path, exists=True),
              help="The registry folder: agents' attributes and classes (needed with "
                   "--workload; without PATHS its Policy records are the policies).")
@click.option("--json", "as_json", is_flag=True, help="Print what was applied as JSON.")
@click.pass_obj
def apply(root: Path, paths: tuple[str, ...], entities_file: str | None, hosts_file: str | None,
          principal: str | None, mode: str | None, cgroups: tuple[str, ...],
          workload: str | None, registry: Path | None, as_json: bool) -> None:
    """Enforce Cedar policies on cgroups, now and until removed.

    PATHS are .cedar files or folders of them (a folder brings its
    entities.json); without PATHS, the registry's Policy records. Agents'
    attributes and classes come from --registry. The policies are compiled
    first; a policy that does not compile, an unknown or unsafe cgroup, or a
    kernel map too full for the new generation changes nothing. On a kernel
    without BPF LSM, network rules are still enforced (cgroup hooks); file
    and exec rules are only reported.
    """
    if bool(cgroups) == bool(workload):
        raise click.UsageError("give either --cgroup PATH or --workload NAME")
    try:
        reg = load_directory(registry) if registry is not None else None
        policy_set = _policy_set(paths, entities_file, reg)
        if workload:
            target, refs, inputs, principal, mode = _workload(
                workload, reg, policy_set, principal, mode)
        else:
            refs = [CgroupRef.resolve(c) for c in cgroups]
            target = "cgroup:" + ",".join("/" + r.path for r in refs)
            inputs = PolicyInput(policy_set.sources, policy_set.entities, {},
                                 tuple(registry_entities(reg)) if reg is not None else ())
        resolver = static_resolver(_hosts_table(hosts_file)) if hosts_file else system_resolver
        inputs, compiled = compile_resolving(inputs, principal, HostCache(resolver))
        mode = mode or "enforce"
        with locked(root):
            lsm, _ = ensure_loaded(root)
            with SandboxMaps.open(root) as maps:
                done = apply_sandbox(maps, compiled, target=target, cgroups=refs, mode=mode,
                                     digest=inputs.digest(f"{compiled.name}|{mode}"))
    except PolicyError as e:
        _fail(e.summary, e.diagnostics)
    except ManulError as e:
        _fail(str(e))
    if as_json:
        click.echo(json.dumps(_applied_json(done, lsm), indent=2))
        return
    _print_applied(done, lsm)


def _policy_set(paths: tuple[str, ...], entities_file: str | None,
                reg: Registry | None) -> PolicySet:
    """PATHS as one policy set, else the registry's Policy records."""
    if paths:
        return read_paths(list(paths), entities_file)
    if reg is None or not reg.policies:
        raise click.UsageError("name the policy files or folders (or give --registry with "
                               "Policy records)")
    return PolicyRecords(lambda: reg).load()


def _workload(name: str, reg: Registry | None, policy_set: PolicySet, principal: str | None,
              mode: str | None) -> tuple[str, list[CgroupRef], PolicyInput, str | None,
                                         str | None]:
    from agent.sandbox.assign import agent_cgroups, agent_inputs, principal_of
    from agent.workloads import WorkloadResolver

    if reg is None:
        raise click.UsageError("--workload needs --registry DIR")
    agent = reg.agent(name)
    if agent is None:
        raise TargetError(f"workload `{name}`: no Agent of that name in the registry")
    refs = agent_cgroups(reg, WorkloadResolver(), sandboxed_only=False).get(agent.meta.key, [])
    if not refs:
        raise TargetError(f"workload `{name}`: no cgroup on this node matches the identities "
                          f"of Agent `{agent.meta.key}`")
    if mode is None and agent.sandbox is not None:
        mode = agent.sandbox.mode.value
    return (f"workload:{agent.meta.key}", refs, agent_inputs(reg, agent, policy_set),
            principal or principal_of(agent), mode)


def _applied_json(a: Applied, lsm: bool) -> dict[str, Any]:
    return {
        "target": a.target, "sandbox": a.sandbox, "sandbox_id": a.sandbox_id,
        "generation": a.generation, "mode": a.mode,
        "cgroups": [{"path": "/" + r.path, "id": r.id} for r in a.cgroups],
        "entries": {"paths": a.npaths, "net": a.nnet}, "rules": a.nrules,
        "retired": list(a.retired), "mechanism": "lsm" if lsm else "fallback",
        "approximations": list(a.approximations), "gateway": list(a.gateway),
    }


def _print_applied(a: Applied, lsm: bool) -> None:
    out = Console(highlight=False, soft_wrap=True)
    where = ", ".join("/" + r.path for r in a.cgroups)
    out.print(f"sandbox {a.sandbox}: generation {a.generation} (kernel id {a.sandbox_id}) in "
              f"{a.mode} mode on {where}", markup=False)
    out.print(f"  {a.npaths} path and {a.nnet} network entries, {a.nrules} rules", markup=False)
    if not lsm:
        out.print("  degraded: no BPF LSM here: network rules are enforced (cgroup hooks); "
                  "file and exec rules are reported, not enforced", markup=False)
    for x in a.approximations:
        out.print(f"  approximation: {x}", markup=False)
    for g in a.gateway:
        out.print(f"  gateway only: {g}", markup=False)
    if a.retired:
        out.print(f"  replaced generation(s) removed (kernel ids {list(a.retired)})",
                  markup=False)


@sandbox.command()
@click.option("--json", "as_json", is_flag=True, help="Machine-readable output.")
@click.pass_obj
def status(root: Path, as_json: bool) -> None:
    """What is enforced where: cgroups, sandboxes, generations, mechanisms.

    Reads the pinned state only; works whether or not an agent runs.
    """
    try:
        st = read_status(root)
    except ManulError as e:
        _fail(str(e))
    if as_json:
        click.echo(json.dumps(st.to_json() if st else {"loaded": False}, indent=2))
        return
    if st is None:
        click.echo("no sandbox was applied on this node")
        return
    _print_status(st)


def _print_status(st: Status) -> None:
    out = Console(highlight=False, soft_wrap=True)
    if not st.loaded:
        out.print("[yellow]sandbox programs are not attached[/]: maps are pinned, nothing "
                  "is enforced", markup=True)
    m = Table(title="mechanism per action", title_justify="left")
    for col in ("action", "mechanism", "enforced"):
        m.add_column(col)
    for mech in st.mechanisms:
        m.add_row(mech.action, mech.mechanism,
                  "[green]yes[/]" if mech.enforced else "[yellow]no (audit only)[/]")
    out.print(m)
    t = Table(title=f"bound cgroups (last generation {st.generation})", title_justify="left")
    for col in ("cgroup", "target", "sandbox", "generation", "mode"):
        t.add_column(col, overflow="fold")
    for b in st.bindings:
        gone = "" if b.alive else " [red](gone)[/]"
        t.add_row(f"/{b.path}{gone}", b.target, b.sandbox, str(b.generation), b.mode)
    out.print(t)
    if not st.bindings:
        out.print("no cgroup is sandboxed", markup=False)
    if st.counts.decisions:
        per = ", ".join(f"{a} {v} ({m}) {n}"
                        for (a, v, m), n in sorted(st.counts.decisions.items()))
        out.print(f"decisions counted in the kernel: {st.counts.total} ({per})", markup=False)
    eb = st.event_budget
    budget = (f"{eb.rate} a second per workload and CPU, {eb.burst} at once" if eb.rate
              else "no limit per workload")
    budget += f"; {eb.node_rate} a second for the node" if eb.node_rate else "; none for the node"
    out.print(f"event budget: {budget}; {st.counts.held} events held back (counted, not sent)",
              markup=False)
    if st.ringbuf_drops:
        out.print(f"[red]{st.ringbuf_drops} events lost[/] (ring buffer full)", markup=True)


@sandbox.command()
@click.option("--cgroup", "cgroups", multiple=True, metavar="PATH",
              help="Stop sandboxing this cgroup (repeatable).")
@click.option("--workload", metavar="NAME",
              help="Stop sandboxing what `apply --workload NAME` (or the agent) bound.")
@click.option("--all", "everything", is_flag=True,
              help="Remove every sandbox and detach the programs.")
@click.pass_obj
def remove(root: Path, cgroups: tuple[str, ...], workload: str | None, everything: bool) -> None:
    """Stop enforcing sandboxes on some cgroups, or everywhere.

    A cgroup whose binding is removed falls back to its nearest sandboxed
    ancestor, if any. A running agent re-applies the sandboxes its registry
    asks for at its next reconcile.
    """
    if sum(map(bool, (cgroups, workload, everything))) != 1:
        raise click.UsageError("give one of --cgroup PATH, --workload NAME or --all")
    try:
        if everything:
            with locked(root):
                gone = unload(root)
            click.echo("removed every sandbox" if gone else "no sandbox was applied")
            return
        with locked(root), SandboxMaps.open(root) as maps:
            bindings = M.read_bindings(maps)
            ids = _pick(bindings, cgroups, workload)
            unbound, retired = remove_cgroups(maps, ids)
    except SandboxError as e:
        _fail(str(e))
    except ManulError as e:
        _fail(str(e))
    click.echo(f"unbound {len(unbound)} cgroup(s); removed {len(retired)} generation(s)")


def _pick(bindings: dict[int, M.Binding], cgroups: tuple[str, ...],
          workload: str | None) -> list[int]:
    if workload:
        keys = {f"workload:{workload}", f"agent:{workload}"}
        ids = [cg for cg, b in bindings.items()
               if b.target in keys or b.target.partition(":")[2].endswith("/" + workload)]
        if not ids:
            raise TargetError(f"workload `{workload}` is not sandboxed")
        return ids
    root = str(cgroup2_root()[0]).strip("/") + "/"
    ids = []
    for c in cgroups:
        rel = c.strip("/").removeprefix(root)
        found = [cg for cg, b in bindings.items() if b.path == rel]
        if not found:
            raise TargetError(f"cgroup `{c}` is not sandboxed")
        ids.extend(found)
    return ids
