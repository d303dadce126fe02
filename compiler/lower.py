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
from compiler.ir import PROTOCOLS, HostLike, IpNetwork, Rule, SandboxIR, Unknown, atoms
from compiler.regions import Bounds, NetUniverse, PathUniverse, bits_of, evaluate, path_atoms
from compiler.result import Approximation, MapEntry, Provenance
from compiler.schema import PATH_ACTIONS, SOCKET_KINDS
from compiler.values import pattern_regex

PROTO_BITS = (layout.PROTO_TCP, layout.PROTO_UDP)  # same order as ir.PROTOCOLS


@dataclass
class RuleTable:
    """Interns (effect, policies) to rule ids, shared by every sandbox."""

    ids: dict[Provenance, int] = field(default_factory=dict)
    by_id: dict[int, Provenance] = field(default_factory=dict)

    def intern(self, p: Provenance) -> int:
        rid = self.ids.get(p)
        if rid is None:
            rid = self.ids[p] = len(self.ids) + 1  # 0 = no rule: Cedar's default deny
            self.by_id[rid] = p
        return rid


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
    out.maps["sandbox_sockets"] = _lower_sockets(
        sir, sir.rules.get("openRawSocket", ()), rules, out
    )
    return out


def _lower_sockets(
    sir: SandboxIR, rs: tuple[Rule, ...], rules: RuleTable, out: Lowered
) -> tuple[MapEntry, ...]:
    """openRawSocket: one entry per socket kind something permits or forbids.

    A kind is decided like an exact path named by its SocketKind id (the
    formulas are `PathEq` atoms), over a universe of the kernel's kinds and
    any other ids the policies name. A kind with no entry is denied, rule 0.
    """
    exact, prefixes = path_atoms(r.formula for r in rs)
    u = PathUniverse(set(exact) | set(SOCKET_KINDS), prefixes)
    v = _verdicts(rs, u, rules, out)
    entries = []
    for kind in SOCKET_KINDS:
        i = u.index[(kind.encode(), 1)]
        allow, rid = (v.allowed >> i) & 1, v.rule.get(i, 0)
        if allow or rid:
            entries.append(MapEntry(layout.sock_key(sir.sandbox_id, layout.SOCK_KINDS[kind]),
                                    layout.sock_val(allow, rid), "socket",
                                    f'SocketKind::"{kind}"'))
    return tuple(entries)


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
    masks = []
    for i in range(len(u)):
        mask = 0
        for k, v in enumerate(verdicts):
            if (v.allowed >> i) & 1:
                mask |= 1 << k
        masks.append(mask)
    sub_or, sub_and = _subtree_masks(u, masks)
    own = [(masks[i], tuple(v.rule.get(i, 0) for v in verdicts)) for i in range(len(u))]
    entries: list[MapEntry] = []
    for i, (key, kind) in enumerate(u.keys):
        parent = u.parent(i)
        if parent is not None and own[parent] == own[i]:
            continue  # a lookup falls back to an entry that says the same (and whose
            # subtree summary covers this one's)
        text = key.decode("utf-8", "backslashreplace")
        entries.append(
            MapEntry(
                layout.path_key(sir.sandbox_id, key, exact=kind == 1),
                layout.path_val(own[i][0], own[i][1], sub_or[i], sub_and[i]),
                "exact" if kind == 1 else ("root" if not key else "prefix"),
                text if kind == 1 else text + "*",
            )
        )
    return tuple(entries)


def _subtree_masks(u: PathUniverse, masks: list[int]) -> tuple[list[int], list[int]]:
    """Per region: OR and AND of the allow masks of it and every region below it
    (every key that extends its key), for the kernel's directory-rename check.
    The prefix relation is a tree (`u.parent`); children are folded into their
    parents, longest keys first."""
    sub_or, sub_and = list(masks), list(masks)
    for i in sorted(range(len(u)), key=lambda j: (-len(u.keys[j][0]), -u.keys[j][1])):
        p = u.parent(i)
        if p is not None and p != i:
            sub_or[p] |= sub_or[i]
            sub_and[p] &= sub_and[i]
    return sub_or, sub_and


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
    # Slots are sorted so that one network's slots (one per candidate host)
    # are adjacent and every network comes right before the ones inside it.
    groups: list[tuple[IpNetwork, list[int]]] = []
    for s, slot in enumerate(u.slots):
        if groups and groups[-1][0] == slot.network:
            groups[-1][1].append(s)
        else:
            groups.append((slot.network, [s]))
    entries: list[MapEntry] = []
    stack: list[tuple[IpNetwork, bytes]] = []  # enclosing networks and their values
    for net, slots in groups:
        value = layout.net_val(_fit(net, _ranges(u, v, slots), out))
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
        while stack and not _contains(stack[-1][0], net):
            stack.pop()
        parent_value = stack[-1][1] if stack else None
        stack.append((net, value))
        if parent_value == value:
            continue  # a lookup falls back to an entry that says the same
        host = u.slots[slots[0]].host
        kind = "root" if net.prefixlen == 0 else ("host" if host else "cidr")
        what = f"{net} ({host})" if host else str(net)
        entries.append(MapEntry(layout.net_key(sir.sandbox_id, net), value, kind, what))
    return tuple(entries)


def _contains(outer: IpNetwork, inner: IpNetwork) -> bool:
    return (
        outer.version == inner.version
        and outer.prefixlen <= inner.prefixlen
        and int(outer.network_address) <= int(inner.network_address) <= int(outer.broadcast_address)
    )


def _fit(
    net: IpNetwork, ranges: list[tuple[int, int, int, int, int]], out: Lowered
) -> list[tuple[int, int, int, int, int]]:
    """At most NET_RANGES ranges: drop forbid-provenance ranges (they only
    name a rule; gaps deny anyway), then, if still too many, narrow."""
    if len(ranges) > layout.NET_RANGES:
        ranges = [r for r in ranges if r[3]]
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
    return ranges


def _ranges(u: NetUniverse, v: _Verdicts, slots: list[int]) -> list[tuple[int, int, int, int, int]]:
    """Port ranges (lo, hi, protos, allow, rule) for one address, merged.

    With several candidate hosts (slots), a cell is allowed only if it is
    allowed for every one of them; its rule is the first denying slot's, or
    the first slot's when all allow.
    """
    blocks = [((v.allowed >> (s * u.block)) & u.block_mask, s * u.block) for s in slots]
    merged: dict[tuple[int, int, int, int], int] = {}
    for p in range(len(PROTOCOLS)):
        runs: list[tuple[int, int, int, int]] = []  # lo, hi, allow, rule
        for iv, (lo, hi) in enumerate(u.intervals):
            off = 2 * iv + p
            allow, rule = 1, -1
            for bits, base in blocks:
                r = v.rule.get(base + off, 0)
                if not (bits >> off) & 1:
                    allow, rule = 0, r
                    break
                if rule < 0:
                    rule = r
            if runs and runs[-1][2:] == (allow, rule) and runs[-1][1] + 1 == lo:
                runs[-1] = (runs[-1][0], hi, allow, rule)
            else:
                runs.append((lo, hi, allow, rule))
        for run in runs:
            if run[2] or run[3]:
                merged[run] = merged.get(run, 0) | PROTO_BITS[p]
    return sorted((lo, hi, protos, allow, rule) for (lo, hi, allow, rule), protos in merged.items())
