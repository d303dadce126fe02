"""Writing the pinned sandbox maps: entries, rules, metadata, bindings.

The layouts are manul.h's (policy maps: `compiler.layout`; the rest:
`agent.kernel.abi`). Everything here is one small step of the protocol
`apply.py` runs; none of it decides anything. Entries are written under a
*kernel sandbox id*: the compiler's entries are rebased to it (the id is
`sandbox_id` at byte 4 of both LPM keys, inside the always-matched prefix),
so each applied generation gets its own id and lives beside the previous
one until the bindings are flipped.
"""

from __future__ import annotations

import ctypes
import errno
from collections.abc import Iterable
from dataclasses import dataclass

from agent.errors import KernelError
from agent.kernel import BPF_NOEXIST, Map, abi
from agent.sandbox.errors import CapacityError
from agent.sandbox.kernel import SandboxMaps
from compiler import layout
from compiler.result import CompiledSandbox, MapEntry, Provenance

EFFECTS = {"permit": 1, "forbid": 2}
EFFECT_NAMES = {v: k for k, v in EFFECTS.items()}
_SID = slice(4, 8)  # sandbox_id in manul_path_key and manul_net_key


def _u64(v: int) -> bytes:
    return v.to_bytes(8, "little")


def _u32(v: int) -> bytes:
    return v.to_bytes(4, "little")


def _full(e: KernelError) -> bool:
    return e.errno in (errno.E2BIG, errno.ENOSPC, errno.ENOMEM)


# -- config ---------------------------------------------------------------------

def read_config(maps: SandboxMaps) -> abi.manul_sandbox_config:
    raw = maps.config.lookup(0)
    return abi.manul_sandbox_config.from_buffer_copy(raw)


def write_config(maps: SandboxMaps, cfg: abi.manul_sandbox_config) -> None:
    maps.config.update(0, bytes(cfg))


# -- entries --------------------------------------------------------------------

def rebase(entries: Iterable[MapEntry], sandbox_id: int) -> list[tuple[bytes, bytes]]:
    """(key, value) pairs with the key's sandbox id replaced by `sandbox_id`."""
    sid = _u32(sandbox_id)
    return [(e.key[:4] + sid + e.key[8:], e.value) for e in entries]


POLICY_MAPS = ("sandbox_paths", "sandbox_net", "sandbox_sockets")  # keys: sandbox id at 4..8


def _policy_maps(maps: SandboxMaps) -> tuple[Map, ...]:
    return (maps.paths, maps.net, maps.sockets)


def write_entries(maps: SandboxMaps, sandbox_id: int,
                  sandbox: CompiledSandbox) -> tuple[int, int, int]:
    """Write a compiled sandbox's entries under `sandbox_id` (which must be unused).

    All or nothing: on any failure the entries written so far are deleted
    and CapacityError (map full) or the KernelError is raised. Returns the
    number of path, network and socket entries.
    """
    pairs = [rebase(sandbox.maps.get(name, ()), sandbox_id) for name in POLICY_MAPS]
    done: list[tuple[Map, bytes]] = []
    at = 0
    try:
        for m, entries in zip(_policy_maps(maps), pairs, strict=True):
            for k, v in entries:
                m.update(k, v, BPF_NOEXIST)
                done.append((m, k))
            at += 1
    except KernelError as e:
        for m, k in reversed(done):
            m.delete(k)
        if _full(e):
            full = _policy_maps(maps)[at]
            raise CapacityError(
                f"map `{POLICY_MAPS[at]}` is full ({full.max_entries} entries): the new "
                f"generation ({len(pairs[0])} path, {len(pairs[1])} network and "
                f"{len(pairs[2])} socket entries) does not fit beside what is in force; "
                "nothing was changed") from e
        raise
    return len(pairs[0]), len(pairs[1]), len(pairs[2])


def entry_keys(maps: SandboxMaps, sandbox_id: int) -> list[list[bytes]]:
    """The keys of every path, network and socket entry under `sandbox_id`."""
    sid = _u32(sandbox_id)
    return [[k for k in m if k[_SID] == sid] for m in _policy_maps(maps)]


def count_entries(maps: SandboxMaps) -> dict[int, tuple[int, int]]:
    """sandbox id -> (path entries, network entries) actually in the maps."""
    out: dict[int, list[int]] = {}
    for i, m in enumerate((maps.paths, maps.net)):
        for k in m:
            out.setdefault(int.from_bytes(k[_SID], "little"), [0, 0])[i] += 1
    return {sid: (c[0], c[1]) for sid, c in out.items()}


def delete_entries(maps: SandboxMaps, sandbox_id: int) -> int:
    n = 0
    for m, keys in zip(_policy_maps(maps), entry_keys(maps, sandbox_id), strict=True):
        for k in keys:
            n += m.delete(k)
    return n


# -- rules and metadata -----------------------------------------------------------

def rule_key(generation: int, rule_id: int) -> bytes:
    return bytes(abi.manul_sandbox_rule_key(generation=generation, rule_id=rule_id))


def write_rules(maps: SandboxMaps, generation: int, rules: dict[int, Provenance]) -> None:
    written: list[bytes] = []
    try:
        for rid, prov in rules.items():
            text = ",".join(prov.policies).encode()
            rec = abi.manul_sandbox_rule(effect=EFFECTS[prov.effect],
                                         truncated=int(len(text) > abi.SBX_POLICIES_LEN),
                                         npolicies=len(prov.policies),
                                         policies=text[:abi.SBX_POLICIES_LEN])
            k = rule_key(generation, rid)
            maps.rules.update(k, bytes(rec))
            written.append(k)
    except KernelError as e:
        for k in written:
            maps.rules.delete(k)
        if _full(e):
            raise CapacityError(f"map `sandbox_rules` is full ({maps.rules.max_entries} "
                                "entries); nothing was changed") from e
        raise


def read_rules(maps: SandboxMaps, generation: int | None = None
               ) -> dict[tuple[int, int], tuple[str, tuple[str, ...]]]:
    """(generation, rule id) -> (effect, policy @ids)."""
    out: dict[tuple[int, int], tuple[str, tuple[str, ...]]] = {}
    for k, v in maps.rules.items():
        key = abi.manul_sandbox_rule_key.from_buffer_copy(k)
        if generation is not None and key.generation != generation:
            continue
        rec = abi.manul_sandbox_rule.from_buffer_copy(v)
        names = tuple(p for p in rec.policies.decode(errors="replace").split(",") if p)
        out[(key.generation, key.rule_id)] = (EFFECT_NAMES.get(rec.effect, "?"), names)
    return out


def delete_rules(maps: SandboxMaps, generation: int) -> int:
    n = 0
    for k in list(maps.rules.keys()):
        if abi.manul_sandbox_rule_key.from_buffer_copy(k).generation == generation:
            n += maps.rules.delete(k)
    return n


@dataclass(frozen=True, slots=True)
class Meta:
    """What a kernel sandbox id stands for (manul_sandbox_meta)."""

    sandbox_id: int
    generation: int
    applied_ns: int
    npaths: int
    nnet: int
    nrules: int
    flags: int
    digest: str
    name: str
    target: str


def _text(s: str) -> bytes:
    raw = s.encode()
    return raw if len(raw) < abi.SBX_NAME_LEN else raw[:abi.SBX_NAME_LEN - 4] + b"..."


def write_meta(maps: SandboxMaps, m: Meta) -> None:
    rec = abi.manul_sandbox_meta(generation=m.generation, applied_ns=m.applied_ns,
                                 npaths=m.npaths, nnet=m.nnet, nrules=m.nrules, flags=m.flags,
                                 name=_text(m.name), target=_text(m.target))
    ctypes.memmove(rec.digest, bytes.fromhex(m.digest), 32)
    try:
        maps.meta.update(_u32(m.sandbox_id), bytes(rec))
    except KernelError as e:
        if _full(e):
            raise CapacityError(f"map `sandbox_meta` is full ({maps.meta.max_entries} "
                                "sandboxes); nothing was changed") from e
        raise


def read_meta(maps: SandboxMaps) -> dict[int, Meta]:
    out = {}
    for k, v in maps.meta.items():
        sid = int.from_bytes(k, "little")
        r = abi.manul_sandbox_meta.from_buffer_copy(v)
        out[sid] = Meta(sid, r.generation, r.applied_ns, r.npaths, r.nnet, r.nrules, r.flags,
                        bytes(r.digest).hex(), r.name.decode(errors="replace"),
                        r.target.decode(errors="replace"))
    return out


def delete_meta(maps: SandboxMaps, sandbox_id: int) -> bool:
    return maps.meta.delete(_u32(sandbox_id))


# -- bindings ---------------------------------------------------------------------

@dataclass(frozen=True, slots=True)
class Binding:
    """One bound cgroup: sandbox_cgroups plus its sandbox_bound record."""

    cgroup_id: int
    sandbox_id: int
    flags: int
    level: int
    path: str
    target: str
    bound_ns: int

    @property
    def enforce(self) -> bool:
        return bool(self.flags & layout.BINDING_ENFORCE)


def read_bindings(maps: SandboxMaps) -> dict[int, Binding]:
    bound = {int.from_bytes(k, "little"): abi.manul_sandbox_bound.from_buffer_copy(v)
             for k, v in maps.bound.items()}
    out = {}
    for k, v in maps.cgroups.items():
        cg = int.from_bytes(k, "little")
        b = layout.manul_sandbox_binding.from_buffer_copy(v)
        rec = bound.get(cg)
        out[cg] = Binding(cg, b.sandbox_id, b.flags, rec.level if rec else -1,
                          rec.path.decode(errors="replace") if rec else "",
                          rec.target.decode(errors="replace") if rec else "",
                          rec.bound_ns if rec else 0)
    return out


def binding_of(maps: SandboxMaps, cgroup_id: int) -> tuple[int, int] | None:
    raw = maps.cgroups.lookup(_u64(cgroup_id))
    if raw is None:
        return None
    b = layout.manul_sandbox_binding.from_buffer_copy(raw)
    return int(b.sandbox_id), int(b.flags)


def bind(maps: SandboxMaps, b: Binding) -> None:
    """Make `b.cgroup_id` decide with `b.sandbox_id`: one update of sandbox_cgroups.

    Its level is added to sandbox_config first and its sandbox_bound record
    written, so the hooks look at that level before the binding exists.
    """
    if not 0 < b.level <= abi.SBX_MAX_LEVEL:
        raise ValueError(f"cgroup level {b.level} out of range")
    cfg = read_config(maps)
    bit = 1 << b.level
    if not cfg.level_mask & bit:
        cfg.min_level = min(cfg.min_level, b.level) if cfg.level_mask else b.level
        cfg.max_level = max(cfg.max_level, b.level) if cfg.level_mask else b.level
        cfg.level_mask |= bit
        write_config(maps, cfg)
    rec = abi.manul_sandbox_bound(bound_ns=b.bound_ns, level=b.level, path=_text(b.path),
                                  target=_text(b.target))
    value = bytes(layout.manul_sandbox_binding(sandbox_id=b.sandbox_id, flags=b.flags))
    try:
        maps.bound.update(_u64(b.cgroup_id), bytes(rec))
        maps.cgroups.update(_u64(b.cgroup_id), value)
    except KernelError as e:
        if _full(e):
            raise CapacityError(f"map `sandbox_cgroups` is full ({maps.cgroups.max_entries} "
                                "cgroups)") from e
        raise


def unbind(maps: SandboxMaps, cgroup_id: int) -> bool:
    """Stop sandboxing a cgroup (its processes fall back to an ancestor's binding)."""
    gone = maps.cgroups.delete(_u64(cgroup_id))
    maps.bound.delete(_u64(cgroup_id))
    recompute_levels(maps)
    return gone


def recompute_levels(maps: SandboxMaps) -> None:
    """Shrink sandbox_config's levels to the bindings that remain."""
    bindings = read_bindings(maps).values()
    if any(b.level <= 0 for b in bindings):
        return  # a binding of unknown level: keep every level looked at
    levels = {b.level for b in bindings}
    cfg = read_config(maps)
    mask = 0
    for lvl in levels:
        mask |= 1 << lvl
    if mask == cfg.level_mask:
        return
    cfg.level_mask = mask
    cfg.min_level = min(levels, default=0)
    cfg.max_level = max(levels, default=0)
    write_config(maps, cfg)
