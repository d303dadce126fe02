"""Applying a compiled sandbox to cgroups atomically, and removing it.

The protocol (under the pinned state's lock, `kernel.locked`):

1. Check every input first: the cgroups exist and are safe to sandbox,
   the policies compile and name a sandbox for the principal. Any problem
   raises before the kernel is touched.
2. Claim a fresh kernel sandbox id (its `sandbox_meta` record first, so a
   crash mid-way leaves an orphan that `gc` finds) and write the new
   generation's entries and rule table under it, *beside* the old ones.
   A full map deletes what was written and raises: nothing changed.
3. Flip each cgroup with one update of `sandbox_cgroups`: every hook
   invocation sees either the old id, whose entries are all there, or the
   new one, whose entries are all there. There is no instant at which a
   cgroup has neither or a mix.
4. Wait for hooks already running to finish (an RCU grace period,
   `membarrier(MEMBARRIER_CMD_GLOBAL)`: BPF programs run under RCU), then
   delete the generations no binding uses any more.

Removing is steps 3 and 4 with the binding deleted instead of replaced.
Callers: the CLI (`manul sandbox apply/remove`) and `service.py`.
"""

from __future__ import annotations

import contextlib
import ctypes
import ctypes.util
import hashlib
import json
import os
import time
from collections.abc import Collection, Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from agent.errors import KernelError, WorkloadError
from agent.kernel import abi, fs
from agent.sandbox import maps as M
from agent.sandbox.errors import PolicyError, SandboxError, TargetError
from agent.sandbox.hosts import HostCache
from agent.sandbox.kernel import SandboxMaps
from compiler import (
    Compilation,
    CompiledSandbox,
    CompileError,
    EntitiesSource,
    PolicySource,
    compile_policies,
)
from compiler.layout import BINDING_ENFORCE

MODES = ("audit", "enforce")
RULES_KEPT = 16  # rule tables of retired generations kept for late events
_libc = ctypes.CDLL(ctypes.util.find_library("c"), use_errno=True)
_NR_MEMBARRIER = 324  # x86_64
_MEMBARRIER_CMD_GLOBAL = 1


@dataclass(frozen=True)
class PolicyInput:
    """What the compiler gets: Cedar sources, the entities file, resolved host
    names, and the registry's entities (agents with their attributes)."""

    sources: tuple[PolicySource, ...]
    entities: EntitiesSource | None = None
    hosts: Mapping[str, tuple[str, ...]] = field(default_factory=dict)
    registry: tuple[dict[str, Any], ...] = ()

    def digest(self, principal: str) -> str:
        h = hashlib.sha256()
        for s in self.sources:
            h.update(f"{s.name}\0{s.text}\0".encode())
        if self.entities is not None:
            h.update(self.entities.text.encode())
        h.update(json.dumps({k: sorted(v) for k, v in sorted(self.hosts.items())}).encode())
        h.update(json.dumps(self.registry, sort_keys=True).encode())
        h.update(principal.encode())
        return h.hexdigest()

    def with_hosts(self, hosts: Mapping[str, tuple[str, ...]]) -> PolicyInput:
        return PolicyInput(self.sources, self.entities, hosts, self.registry)


@dataclass(frozen=True, slots=True)
class CgroupRef:
    """A cgroup v2 directory: its path relative to the root, id and level."""

    path: str
    id: int
    level: int

    @classmethod
    def resolve(cls, path: str | Path) -> CgroupRef:
        """A live cgroup, checked safe to sandbox; TargetError otherwise."""
        root, _ = fs.cgroup2_root()
        try:
            abs_path = fs.resolve_cgroup(path)
        except WorkloadError as e:
            raise TargetError(f"cgroup `{path}`: does not exist under `{root}`") from e
        rel = os.path.relpath(abs_path.resolve(), root.resolve())
        if rel == "." or rel.startswith(".."):
            raise TargetError(f"cgroup `{path}`: refusing to sandbox the cgroup v2 root "
                              "(every process on the node)")
        level = len(Path(rel).parts)
        if level > abi.SBX_MAX_LEVEL:
            raise TargetError(f"cgroup `{path}`: level {level} is deeper than the "
                              f"{abi.SBX_MAX_LEVEL} levels the hooks look at")
        own = fs.cgroup_of_pid(os.getpid()).strip("/")
        if own == rel or own.startswith(rel + "/"):
            raise TargetError(f"cgroup `{path}`: it contains this process (pid {os.getpid()}, "
                              f"cgroup `/{own}`): refusing to sandbox the agent itself")
        return cls(rel, fs.cgroup_id(abs_path), level)

    def alive(self) -> bool:
        root, _ = fs.cgroup2_root()
        try:
            return os.stat(root / self.path).st_ino == self.id
        except OSError:
            return False


@dataclass(frozen=True)
class Applied:
    """What one apply did."""

    target: str
    sandbox: str  # the compiled sandbox's name, e.g. AgentClass::"data-analyst"
    sandbox_id: int
    generation: int
    mode: str
    cgroups: tuple[CgroupRef, ...]
    npaths: int
    nnet: int
    nrules: int
    retired: tuple[int, ...]  # kernel sandbox ids no binding uses any more, deleted
    approximations: tuple[str, ...] = ()
    gateway: tuple[str, ...] = ()


# -- compile ----------------------------------------------------------------------

def compile_all(inputs: PolicyInput, only: Collection[str] | None = None) -> Compilation:
    """Every sandbox of the policies (or those named in `only`); PolicyError
    when they do not compile."""
    hosts = {k: list(v) for k, v in inputs.hosts.items()}
    try:
        return compile_policies(list(inputs.sources), inputs.entities, resolved=hosts,
                                registry=inputs.registry, only=only)
    except CompileError as e:
        diags = tuple(str(d) for d in e.diagnostics)
        raise PolicyError("the policies do not compile; nothing was changed", diags) from e


def select(comp: Compilation, principal: str | None) -> CompiledSandbox:
    """The sandbox `principal` acts in: `Agent::"id"`, `AgentClass::"id"` or
    `default`; None picks the only non-default sandbox the policies define."""
    names = [s.name for s in comp.sandboxes]
    if principal is None:
        named = [s for s in comp.sandboxes if s.name != "default"]
        if len(named) != 1:
            raise PolicyError("say which sandbox applies with `--principal`: the policies "
                              f"define {', '.join(f'`{n}`' for n in names)}")
        return named[0]
    if principal == "default":
        found = comp.sandbox("default")
    else:
        found = next((s for s in comp.sandboxes
                      if s.name == principal or str(s.principal) == principal), None)
        if found is None and principal.startswith("Agent::"):
            # an agent the entities know but no policy names: the default
            # sandbox; one nobody knows is a typo, not a reason to deny all
            if principal not in _known_agents(comp):
                raise PolicyError(
                    f"no Agent {principal[len('Agent::'):]} in the entities or policies: "
                    "check the name (`Agent::\"<namespace>/<name>\"`), give its entity with "
                    "--entities, or say `--principal default` for the default sandbox")
            found = comp.sandbox("default")
    if found is None:
        raise PolicyError(f"no sandbox for principal `{principal}`: the policies define "
                          + ", ".join(f"`{n}`" for n in names))
    return found


def _known_agents(comp: Compilation) -> set[str]:
    """`Agent::"id"` of every agent the entities define."""
    out = set()
    for e in comp.entities_json:
        uid = e.get("uid", {})
        if isinstance(uid, dict) and uid.get("type") == "Agent":
            out.add(f'Agent::{json.dumps(str(uid.get("id", "")))}')
    return out


def compile_sandbox(inputs: PolicyInput, principal: str | None) -> CompiledSandbox:
    """Compile with `inputs.hosts` as given and pick `principal`'s sandbox."""
    return select(compile_all(inputs), principal)


def compile_resolving(inputs: PolicyInput, principal: str | None, cache: HostCache
                      ) -> tuple[PolicyInput, CompiledSandbox]:
    """Compile once to learn the host names the policies need, resolve them
    (through `cache`), and compile again with their addresses."""
    comp = compile_all(inputs)
    if comp.hosts:
        inputs = inputs.with_hosts(cache.resolve(comp.hosts))
        comp = compile_all(inputs)
    return inputs, select(comp, principal)


# -- the protocol -----------------------------------------------------------------

def wait_for_readers() -> None:
    """Return once every BPF program that was running has finished (RCU grace period)."""
    rc = _libc.syscall(_NR_MEMBARRIER, _MEMBARRIER_CMD_GLOBAL, 0, 0)
    if rc != 0 or (os.cpu_count() or 1) == 1:
        time.sleep(0.05)  # no membarrier (nohz_full) or one CPU: hooks last microseconds


def _free_id(maps: SandboxMaps) -> int:
    used = set(M.read_meta(maps)) | {b.sandbox_id for b in M.read_bindings(maps).values()}
    used |= set(M.count_entries(maps))
    sid = 1
    while sid in used:
        sid += 1
    return sid


def apply_sandbox(maps: SandboxMaps, sandbox: CompiledSandbox, *, target: str,
          cgroups: Sequence[CgroupRef], mode: str, digest: str,
          now: float | None = None) -> Applied:
    """Run the protocol above for one sandbox and its cgroups. Hold `kernel.locked`."""
    if mode not in MODES:
        raise SandboxError(f"mode `{mode}`: expected `audit` or `enforce`")
    if not cgroups:
        raise TargetError(f"`{target}`: no cgroup to sandbox")
    for ref in cgroups:
        if not ref.alive():
            raise TargetError(f"cgroup `{ref.path}` (id {ref.id}) is gone; nothing was changed")
    flags = BINDING_ENFORCE if mode == "enforce" else 0
    stamp = int((time.time() if now is None else now) * 1e9)
    cfg = M.read_config(maps)
    generation = cfg.generation + 1
    sid = _free_id(maps)
    npaths = len(sandbox.maps.get("sandbox_paths", ()))
    nnet = len(sandbox.maps.get("sandbox_net", ()))
    M.write_meta(maps, M.Meta(sid, generation, stamp, npaths, nnet, len(sandbox.rules), flags,
                              digest, sandbox.name, target))
    try:
        M.write_entries(maps, sid, sandbox)
        try:
            M.write_rules(maps, generation, sandbox.rules)
        except SandboxError:
            M.delete_entries(maps, sid)
            raise
    except BaseException:
        M.delete_meta(maps, sid)
        raise
    cfg = M.read_config(maps)
    cfg.generation = generation
    M.write_config(maps, cfg)
    _flip(maps, sid, flags, cgroups, target, stamp)
    wait_for_readers()
    retired = retire_unused(maps)
    return Applied(target, sandbox.name, sid, generation, mode, tuple(cgroups), npaths, nnet,
                   len(sandbox.rules), tuple(retired),
                   tuple(str(a) for a in sandbox.approximations),
                   tuple(str(g) for g in sandbox.gateway))


def _flip(maps: SandboxMaps, sid: int, flags: int, cgroups: Sequence[CgroupRef], target: str,
          stamp: int) -> None:
    """Bind each cgroup to `sid`; if one cannot be bound, put the others back."""
    before = M.read_bindings(maps)
    done: list[CgroupRef] = []
    try:
        for ref in cgroups:
            M.bind(maps, M.Binding(ref.id, sid, flags, ref.level, ref.path, target, stamp))
            done.append(ref)
    except (SandboxError, KernelError):
        for ref in done:
            old = before.get(ref.id)
            if old is None:
                M.unbind(maps, ref.id)
            else:
                M.bind(maps, old)
        M.delete_rules(maps, M.read_meta(maps)[sid].generation)
        M.delete_entries(maps, sid)
        M.delete_meta(maps, sid)
        raise


def remove_cgroups(maps: SandboxMaps, cgroup_ids: Iterable[int]) -> tuple[list[int], list[int]]:
    """Unbind cgroups; returns (cgroups unbound, kernel sandbox ids retired)."""
    gone = [cg for cg in cgroup_ids if M.unbind(maps, cg)]
    wait_for_readers()
    return gone, retire_unused(maps)


def retire_unused(maps: SandboxMaps) -> list[int]:
    """Delete every generation no binding uses (and orphans of interrupted applies).

    Rule tables of the last RULES_KEPT generations stay, so events still in
    the ring buffer can be named after their generation is gone.
    """
    live = {b.sandbox_id for b in M.read_bindings(maps).values()}
    meta = M.read_meta(maps)
    retired = []
    for sid in sorted((set(meta) | set(M.count_entries(maps))) - live):
        M.delete_entries(maps, sid)
        M.delete_meta(maps, sid)
        retired.append(sid)
    cfg = M.read_config(maps)
    live_gens = {m.generation for sid, m in meta.items() if sid in live}
    for gen in {g for g, _ in M.read_rules(maps)}:
        if gen not in live_gens and gen + RULES_KEPT <= cfg.generation:
            M.delete_rules(maps, gen)
    return retired


def drop_stale(maps: SandboxMaps) -> list[int]:
    """Unbind cgroups that no longer exist (their ids are never reused)."""
    stale = [b.cgroup_id for b in M.read_bindings(maps).values()
             if not CgroupRef(b.path, b.cgroup_id, b.level).alive()]
    if not stale:
        return []
    with contextlib.suppress(SandboxError):
        remove_cgroups(maps, stale)
    return stale
