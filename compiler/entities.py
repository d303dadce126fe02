"""The entities file: agent classes, path sets and destination sets.

A Cedar JSON entities list. The compiler reads from it:

* `Agent` and `AgentClass` entities and their parents (who is in which class);
* `FilePath` / `Executable` entities, whose id is the path, with `PathSet`
  parents: `resource in PathSet::"s"` holds for exactly those paths;
* `NetworkDestination` entities named `<host>:<port>/<proto>` or
  `<ip>:<port>/<proto>` (IPv6 in brackets), with `DestinationSet` parents.
  They are *member specifications*, not request resources: a connection to
  (ip, port, proto) is in every set listed for `<ip>:<port>/<proto>` and, if
  the address is one its host resolved to, for `<host>:<port>/<proto>`.
  Their `attrs` must be empty (a connection's attributes come from the
  connection).

Everything but the destination members is also validated by cedarpy against
the sandbox schema. Pure: takes the file's text, returns data.
"""

from __future__ import annotations

import ipaddress
import json
import re
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

import cedarpy

from compiler.errors import Diagnostic, EntitiesError, LimitError, Location
from compiler.expr import EntityUid
from compiler.limits import path_problem, short
from compiler.schema import Schema

RESERVED_PREFIX = "manul:"  # Agent ids the compiler uses for anonymous principals

_MEMBER_RE = re.compile(
    r"^(?P<addr>\[[0-9A-Fa-f:.]+\]|[^:/\[\]\s]+):(?P<port>\d{1,5})/(?P<proto>tcp|udp)$"
)
_HOST_RE = re.compile(
    r"^(?=.{1,253}$)[A-Za-z0-9_]([A-Za-z0-9_-]*[A-Za-z0-9_])?(\.[A-Za-z0-9_]([A-Za-z0-9_-]*[A-Za-z0-9_])?)*\.?$"
)


@dataclass(frozen=True)
class DestMember:
    """A `NetworkDestination` member: by host name or by address."""

    uid: EntityUid
    host: str | None
    address: ipaddress.IPv4Address | ipaddress.IPv6Address | None
    port: int
    protocol: str

    @property
    def canonical(self) -> str:
        """The id a connection's resource has: compressed lowercase IPv6 in brackets,
        decimal port. Cedar compares uids as strings, so only this form matches."""
        if self.address is None:
            return f"{self.host}:{self.port}/{self.protocol}"
        shown = f"[{self.address}]" if self.address.version == 6 else str(self.address)
        return f"{shown}:{self.port}/{self.protocol}"


@dataclass(frozen=True)
class Entities:
    parents: dict[EntityUid, frozenset[EntityUid]] = field(default_factory=dict)
    ancestors: dict[EntityUid, frozenset[EntityUid]] = field(default_factory=dict)
    members: tuple[DestMember, ...] = ()
    # The entities for cedarpy (all but destination members), as JSON objects.
    cedar_json: tuple[dict[str, Any], ...] = ()
    # Attributes of the entities a condition may read statically (agents).
    attrs: dict[EntityUid, dict[str, Any]] = field(default_factory=dict)
    _paths: dict[tuple[str, EntityUid], frozenset[str]] = field(default_factory=dict, compare=False)

    def ancestors_of(self, uid: EntityUid) -> frozenset[EntityUid]:
        return self.ancestors.get(uid, frozenset())

    def of_type(self, type_name: str) -> list[EntityUid]:
        return sorted(u for u in self.parents if u.type == type_name)

    def paths_in(self, resource_type: str, set_uid: EntityUid) -> frozenset[str]:
        """Paths `p` for which `<resource_type>::"p" in set_uid` holds."""
        key = (resource_type, set_uid)
        if key not in self._paths:
            self._paths[key] = frozenset(
                u.id
                for u, anc in self.ancestors.items()
                if u.type == resource_type and set_uid in anc
            )
        return self._paths[key]

    def attrs_of(self, uid: EntityUid) -> dict[str, Any] | None:
        """The entity's attributes, None when the entities do not hold it."""
        return self.attrs.get(uid)

    def members_in(self, set_uid: EntityUid) -> list[DestMember]:
        return [m for m in self.members if set_uid in self.ancestors_of(m.uid)]

    def hosts(self) -> frozenset[str]:
        return frozenset(m.host for m in self.members if m.host is not None)


def parse_member(uid: EntityUid) -> DestMember | None:
    """Parse `host:port/proto` or `ip:port/proto`; None if malformed."""
    m = _MEMBER_RE.match(uid.id)
    if m is None or int(m.group("port")) > 65535:
        return None
    addr_text = m.group("addr")
    host: str | None = None
    address: ipaddress.IPv4Address | ipaddress.IPv6Address | None = None
    try:
        if addr_text.startswith("["):
            address = ipaddress.IPv6Address(addr_text[1:-1])
        else:
            address = ipaddress.IPv4Address(addr_text)
    except ValueError:
        if addr_text.startswith("[") or not _HOST_RE.match(addr_text):
            return None
        host = addr_text
    return DestMember(uid, host, address, int(m.group("port")), m.group("proto"))


def merge_entities(
    base: Sequence[dict[str, Any]], name: str, text: str
) -> list[dict[str, Any]]:
    """`base` (the registry's entities, from the caller's one builder) plus an
    entities file's, merged by uid.

    The file adds sets and their members, and parents (a class nested in
    another); an entity both name gets the union of the parents. The
    registry owns attributes: the file may not give one of its entities
    other attributes. Raises `EntitiesError` located in the file.
    """
    raw = _read_list(name, text)
    out = [dict(e) for e in base]
    index = {_key(e): i for i, e in enumerate(out)}
    errors: list[Diagnostic] = []
    for obj in raw:
        try:
            key = _key(obj)
        except (KeyError, TypeError):
            out.append(obj)  # parse_entities says what is wrong with it
            continue
        at = index.get(key)
        if at is None:
            index[key] = len(out)
            out.append(obj)
            continue
        have = out[at]
        attrs = obj.get("attrs") or {}
        if attrs and attrs != have.get("attrs"):
            uid = EntityUid(*key)
            errors.append(
                Diagnostic(
                    f"entity `{uid}` is a registry record: its attributes come from the "
                    "registry; leave `attrs` empty",
                    locate_id(name, text, key[1]),
                )
            )
            continue
        parents = list(have.get("parents") or [])
        for p in obj.get("parents") or []:
            if p not in parents:
                parents.append(p)
        out[at] = {**have, "parents": parents}
    if errors:
        raise EntitiesError(errors)
    return out


def _key(obj: Any) -> tuple[str, str]:
    return (str(obj["uid"]["type"]), str(obj["uid"]["id"]))


def _read_list(name: str, text: str) -> list[Any]:
    try:
        raw = json.loads(text) if text.strip() else []
    except json.JSONDecodeError as e:
        raise EntitiesError(
            Diagnostic(f"not JSON: {e.msg}", Location(name, e.lineno, e.colno))
        ) from e
    if not isinstance(raw, list):
        raise EntitiesError(Diagnostic("expected a JSON list of entities", Location(name)))
    return raw


def parse_entities(
    name: str, text: str, schema: Schema, base: Sequence[dict[str, Any]] = ()
) -> Entities:
    """Read an entities file, merged over `base` (the registry's entities, see
    `merge_entities`); raise `EntitiesError` with the file and entity."""
    where = Location(name)
    raw = merge_entities(base, name, text) if base else _read_list(name, text)
    errors: list[Diagnostic] = []
    limit_errors: list[Diagnostic] = []
    parents: dict[EntityUid, frozenset[EntityUid]] = {}
    members: list[DestMember] = []
    cedar_json: list[dict[str, Any]] = []
    for i, obj in enumerate(raw):
        try:
            uid = EntityUid.from_json(obj.get("uid") if isinstance(obj, dict) else None)
            ps = frozenset(EntityUid.from_json(p) for p in obj.get("parents", []))
        except (ValueError, AttributeError, TypeError) as e:
            errors.append(Diagnostic(f"entity #{i}: {e}", where))
            continue
        attrs = obj.get("attrs") or {}
        at = locate_id(name, text, uid.id)
        if uid in parents:
            errors.append(Diagnostic(f"entity `{uid}`: listed twice", at))
        parents[uid] = ps
        errors.extend(_check(uid, ps, attrs, schema, at))
        if uid.type == "NetworkDestination":
            member = parse_member(uid)
            if member is None:
                errors.append(
                    Diagnostic(
                        f"entity `{uid}`: expected `<host>:<port>/<tcp|udp>` or "
                        "`<ip>:<port>/<tcp|udp>` (IPv6 in brackets)",
                        at,
                    )
                )
            elif member.canonical != uid.id:
                errors.append(Diagnostic(f"entity `{uid}`: write it `{member.canonical}`", at))
            else:
                members.append(member)
            continue
        if uid.type in ("FilePath", "Executable"):
            problem = path_problem(uid.id, None)
            if problem is not None:
                limit_errors.append(
                    Diagnostic(f"entity `{EntityUid(uid.type, short(uid.id))}`: {problem}", at)
                )
            attrs = {"path": uid.id}
        cedar_json.append(
            {
                "uid": {"type": uid.type, "id": uid.id},
                "attrs": attrs,
                "parents": [{"type": p.type, "id": p.id} for p in sorted(ps)],
            }
        )
    if errors:
        raise EntitiesError(errors)
    if limit_errors:
        raise LimitError(limit_errors)
    try:
        cedarpy.Entities.from_json_str(json.dumps(cedar_json), schema.cedar)
    except ValueError as e:
        raise EntitiesError(Diagnostic(f"does not match the schema: {e}", where)) from e
    attrs_by_uid = {
        EntityUid(e["uid"]["type"], e["uid"]["id"]): e["attrs"]
        for e in cedar_json
        if e["uid"]["type"] not in ("FilePath", "Executable")
    }
    return Entities(
        parents, _closure(parents), tuple(members), tuple(cedar_json), attrs_by_uid
    )


def locate_id(name: str, text: str, ident: str) -> Location:
    """Where `"<ident>"` first appears in the file (Cedar gives no positions)."""
    pos = text.find(json.dumps(ident))
    if pos < 0:
        return Location(name)
    line = text.count("\n", 0, pos) + 1
    return Location(name, line, pos - (text.rfind("\n", 0, pos) + 1) + 1)


def _check(
    uid: EntityUid,
    ps: frozenset[EntityUid],
    attrs: Any,
    schema: Schema,
    where: Location,
) -> list[Diagnostic]:
    out: list[Diagnostic] = []
    info = schema.entity_types.get(uid.type)
    if info is None:
        return [Diagnostic(f"entity `{uid}`: unknown entity type `{uid.type}`", where)]
    if uid.type == "Agent" and uid.id.startswith(RESERVED_PREFIX):
        out.append(
            Diagnostic(
                f"entity `{uid}`: agent ids starting with `{RESERVED_PREFIX}` are reserved", where
            )
        )
    for p in ps:
        if p.type not in info.parents:
            out.append(Diagnostic(f"entity `{uid}`: a `{uid.type}` cannot be in `{p}`", where))
    if uid.type == "NetworkDestination" and attrs:
        out.append(
            Diagnostic(
                f"entity `{uid}`: destination-set members take their attributes from the "
                "connection: leave `attrs` empty",
                where,
            )
        )
    if isinstance(attrs, dict) and uid.type not in ("NetworkDestination", "FilePath", "Executable"):
        for name in sorted(set(attrs) - info.attrs):
            out.append(Diagnostic(f"entity `{uid}`: `{uid.type}` has no attribute `{name}`", where))
        for name in sorted(set(attrs) & info.attrs):
            if _implicit(attrs[name]):
                out.append(Diagnostic(
                    f"entity `{uid}`: attribute `{name}`: write an entity reference as "
                    '`{"__entity": {"type": ..., "id": ...}}` and an extension value as '
                    '`{"__extn": {"fn": ..., "arg": ...}}` '
                    "(no attribute of the schema is a record)",
                    where))
    if uid.type in ("FilePath", "Executable"):
        if not isinstance(attrs, dict) or attrs.get("path", uid.id) != uid.id:
            out.append(Diagnostic(f"entity `{uid}`: the `path` attribute must equal the id", where))
        if not uid.id.startswith("/"):
            out.append(Diagnostic(f"entity `{uid}`: a path must be absolute", where))
    return out


def _implicit(value: Any) -> bool:
    """Whether `value` holds an object that is neither `__entity` nor `__extn`.

    Cedar reads `{"type": T, "id": I}` as a reference when the schema says
    so; the compiler folds attribute values without the schema, so it would
    read a record. The schema has no record attributes: refuse the object.
    """
    if isinstance(value, list):
        return any(_implicit(v) for v in value)
    if isinstance(value, dict):
        return not ({"__entity", "__extn"} & value.keys())
    return False


def _closure(
    parents: dict[EntityUid, frozenset[EntityUid]],
) -> dict[EntityUid, frozenset[EntityUid]]:
    out: dict[EntityUid, frozenset[EntityUid]] = {}
    for uid, direct in parents.items():
        seen: set[EntityUid] = set()
        todo = list(direct)
        while todo:
            p = todo.pop()
            if p not in seen:
                seen.add(p)
                todo.extend(parents.get(p, ()))
        out[uid] = frozenset(seen)
    return out
