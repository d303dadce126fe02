"""Stage 4, lower: a sandbox's kernel rules to map entries (bytes).

For each LPM map, `regions` cuts the sandbox's resource space into the
regions its entries key on; every rule's formula becomes the set of regions
where it is true. Per action, a region is allowed when some `permit` is
surely true there and no `forbid` may be true there (Cedar: forbid beats
permit, nothing permitted is denied). Each region's verdicts, with the rule
id of the policies that decided them, become one entry's value. Because a
region is everything its entry's key matches *minus* the longer entries,
every entry already carries what all shorter matching prefixes say, and one
LPM lookup decides. Entries identical to the one a lookup would fall back to
are dropped.

Where a formula is not exact (`Unknown`), a permit uses its lower bound
(the kernel allows less) and a forbid its upper bound (the kernel denies
more); each such case is returned as an `Approximation`.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Literal

from compiler import layout
from compiler.errors import Diagnostic, LimitError
from compiler.expr import render_pattern
from compiler.ir import PROTOCOLS, HostLike, Rule, SandboxIR, Unknown, atoms
from compiler.regions import Bounds, NetUniverse, PathUniverse, bits_of, evaluate, path_atoms
from compiler.result import Approximation, MapEntry, Provenance
from compiler.schema import PATH_ACTIONS
from compiler.values import pattern_regex

PROTO_BITS = (layout.PROTO_TCP, layout.PROTO_UDP)  # same order as ir.PROTOCOLS


@dataclass
class RuleTable:
    """Interns (effect, policies) to rule ids, shared by every sandbox."""

    ids: dict[Provenance, int] = field(default_factory=dict)

    def intern(self, p: Provenance) -> int:
        if p not in self.ids:
            self.ids[p] = len(self.ids) + 1  # 0 = no rule: Cedar's default deny
        return self.ids[p]

    def table(self) -> dict[int, Provenance]:
        return {v: k for k, v in self.ids.items()}


@dataclass
class Lowered:
    maps: dict[str, tuple[MapEntry, ...]]
    approximations: list[Approximation]
    notes: list[str]
    hosts: tuple[str, ...]
    rule_ids: set[int]


@dataclass
class _Verdicts:
    """One action's outcome over a universe: allowed regions and rule ids."""

    allowed: int
    rule: dict[int, int]  # region -> rule id (absent: 0)


def lower_sandbox(
    sir: SandboxIR, rules: RuleTable, resolved: Mapping[str, Sequence[str]]
) -> Lowered:
    out = Lowered({}, [], [], (), set())
    path_rules = {a: sir.rules.get(a, ()) for a in PATH_ACTIONS}
    out.maps["sandbox_paths"] = _lower_paths(sir, path_rules, rules, out)
    out.maps["sandbox_net"] = _lower_net(
        sir, sir.rules.get("connectNetwork", ()), rules, resolved, out
    )
    return out


def _verdicts(
    rs: Sequence[Rule], u: PathUniverse | NetUniverse, rules: RuleTable, out: Lowered
) -> _Verdicts:
    bounds: list[tuple[Rule, Bounds]] = []
    permit = forbid = 0
    for r in rs:
        b = evaluate(r.formula, u)
        bounds.append((r, b))
        if r.effect == "permit":
            permit |= b.t_must
        else:
            forbid |= b.t_may
        if b.t_must != b.t_may:
            reasons = sorted({a.reason for a in atoms(r.formula) if isinstance(a, Unknown)})
            out.approximations.append(
                Approximation(
                    r.pid,
                    r.action,
                    "narrowed" if r.effect == "permit" else "widened",
                    "; ".join(reasons) or "not exact",
                )
            )
    allowed = permit & ~forbid
    deciders: dict[int, list[str]] = {}
    for r, b in bounds:
        region = b.t_must & allowed if r.effect == "permit" else b.t_may
        for i in bits_of(region):
            deciders.setdefault(i, []).append(r.pid)
    rule: dict[int, int] = {}
    for i, pids in deciders.items():
        effect: Literal["permit", "forbid"] = "permit" if (allowed >> i) & 1 else "forbid"
        rid = rules.intern(Provenance(effect, tuple(pids)))
        rule[i] = rid
        out.rule_ids.add(rid)
    return _Verdicts(allowed, rule)


def _lower_paths(
    sir: SandboxIR, per_action: dict[str, tuple[Rule, ...]], rules: RuleTable, out: Lowered
) -> tuple[MapEntry, ...]:
    exact, prefixes = path_atoms(r.formula for rs in per_action.values() for r in rs)
    _check_lengths(sir, exact, prefixes)
    u = PathUniverse(exact, prefixes)
    verdicts = [_verdicts(per_action[a], u, rules, out) for a in PATH_ACTIONS]
    values: list[bytes] = []
    for i in range(len(u)):
        mask = 0
        for k, v in enumerate(verdicts):
            if (v.allowed >> i) & 1:
                mask |= 1 << k
        values.append(layout.path_val(mask, tuple(v.rule.get(i, 0) for v in verdicts)))
    entries: list[MapEntry] = []
    for i, (key, kind) in enumerate(u.keys):
        parent = u.parent(i)
        if parent is not None and values[parent] == values[i]:
            continue  # a lookup falls back to an entry that says the same
        text = key.decode("utf-8", "backslashreplace")
        entries.append(
            MapEntry(
                layout.path_key(sir.sandbox_id, key, exact=kind == 1),
                values[i],
                "exact" if kind == 1 else ("root" if not key else "prefix"),
                text if kind == 1 else text + "*",
            )
        )
    return tuple(entries)


def _check_lengths(sir: SandboxIR, exact: set[str], prefixes: set[str]) -> None:
    too_long = [
        (p, layout.EXACT_PATH_MAX) for p in exact if len(p.encode()) > layout.EXACT_PATH_MAX
    ] + [(p, layout.PREFIX_PATH_MAX) for p in prefixes if len(p.encode()) > layout.PREFIX_PATH_MAX]
    if too_long:
        raise LimitError(
            [
                Diagnostic(
                    f"sandbox `{sir.name}`: path `{p[:40]}...` is {len(p.encode())} bytes: "
                    f"the kernel key holds at most {limit}"
                )
                for p, limit in sorted(too_long)
            ]
        )


def _lower_net(
    sir: SandboxIR,
    rs: tuple[Rule, ...],
    rules: RuleTable,
    resolved: Mapping[str, Sequence[str]],
    out: Lowered,
) -> tuple[MapEntry, ...]:
    u = NetUniverse([r.formula for r in rs], resolved)
    out.hosts = u.hosts
    patterns = sorted(
        {a.pattern for r in rs for a in atoms(r.formula) if isinstance(a, HostLike)}, key=str
    )
    for p in patterns:
        rx = pattern_regex(p)
        hits = ", ".join(f"`{h}`" for h in u.hosts if rx.fullmatch(h)) or "none"
        out.notes.append(
            f"host pattern `{render_pattern(p)}` matches the resolved hosts {hits}: the kernel "
            "cannot match a name nobody resolved"
        )
    v = _verdicts(rs, u, rules, out)
    by_net: dict[object, list[int]] = {}
    for s, slot in enumerate(u.slots):
        by_net.setdefault(slot.network, []).append(s)
    values: dict[object, bytes] = {}
    for net, slots in by_net.items():
        if len(slots) > 1:
            hosts = ", ".join(f"`{u.slots[s].host}`" for s in slots)
            out.approximations.append(
                Approximation(
                    "*",
                    "connectNetwork",
                    "narrowed",
                    f"address `{net}` resolves from hosts {hosts}: the kernel cannot tell them "
                    "apart and allows only what every one of them is allowed",
                )
            )
        ranges = _ranges(u, v, slots)
        allow_ranges = [r for r in ranges if r[3]]
        if len(ranges) > layout.NET_RANGES:
            ranges = allow_ranges  # forbid-provenance ranges only name a rule; drop those
        if len(ranges) > layout.NET_RANGES:
            out.approximations.append(
                Approximation(
                    "*",
                    "connectNetwork",
                    "narrowed",
                    f"address `{net}` has {len(ranges)} allowed port ranges: "
                    f"only {layout.NET_RANGES} fit an entry, the rest are denied",
                )
            )
            ranges = ranges[: layout.NET_RANGES]
        values[net] = layout.net_val(ranges)
    entries: list[MapEntry] = []
    nets = list(by_net)
    present = set(nets)
    for net in nets:
        parent = _parent_network(net, present)
        if parent is not None and values[parent] == values[net]:
            continue
        host = u.slots[by_net[net][0]].host
        kind = "root" if net.prefixlen == 0 else ("host" if host else "cidr")  # type: ignore[attr-defined]
        what = f"{net} ({host})" if host else str(net)
        entries.append(MapEntry(layout.net_key(sir.sandbox_id, net), values[net], kind, what))  # type: ignore[arg-type]
    return tuple(entries)


def _ranges(u: NetUniverse, v: _Verdicts, slots: list[int]) -> list[tuple[int, int, int, int, int]]:
    """Port ranges (lo, hi, protos, allow, rule) for one address, merged."""
    per_proto: list[list[tuple[int, int, int, int]]] = []
    for p in range(len(PROTOCOLS)):
        runs: list[tuple[int, int, int, int]] = []  # lo, hi, allow, rule
        for iv, (lo, hi) in enumerate(u.intervals):
            allow, rule = _cell(u, v, slots, iv, p)
            if runs and runs[-1][2:] == (allow, rule) and runs[-1][1] + 1 == lo:
                runs[-1] = (runs[-1][0], hi, allow, rule)
            else:
                runs.append((lo, hi, allow, rule))
        per_proto.append([r for r in runs if r[2] or r[3]])
    merged: dict[tuple[int, int, int, int], int] = {}
    for p, runs in enumerate(per_proto):
        for r in runs:
            merged[r] = merged.get(r, 0) | PROTO_BITS[p]
    return sorted((lo, hi, protos, allow, rule) for (lo, hi, allow, rule), protos in merged.items())


def _cell(u: NetUniverse, v: _Verdicts, slots: list[int], iv: int, p: int) -> tuple[int, int]:
    """Verdict of one port interval and protocol for an address; with several
    candidate hosts, allowed only if allowed for every one of them."""
    first_allow: tuple[int, int] | None = None
    for s in slots:
        c = u.cell(s, iv, p)
        rule = v.rule.get(c, 0)
        if not (v.allowed >> c) & 1:
            return 0, rule
        if first_allow is None:
            first_allow = (1, rule)
    assert first_allow is not None
    return first_allow


def _parent_network(net: object, present: set[object]) -> object | None:
    prefixlen: int = net.prefixlen  # type: ignore[attr-defined]
    for n in range(prefixlen - 1, -1, -1):
        sup = net.supernet(new_prefix=n)  # type: ignore[attr-defined]
        if sup in present:
            return sup  # type: ignore[no-any-return]
    return None
