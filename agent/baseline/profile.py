"""One agent's learned normal: what it runs, reads, writes and talks to.

A `Profile` holds exact items (`events.Item`) and generalised directories:
once a directory holds `GENERALISE_AT` distinct files read (or written),
the files are replaced by the directory, and every file directly in it of that
kind is known (not its subdirectories: a new subdirectory is still novel).
A directory is never generalised when it is too shallow (`/etc`, `/home`,
except the scratch directories `/tmp`, `/var/tmp`, `/dev/shm`) or when a
credential pattern could match a file in it (`catalog.may_hold_credentials`),
nor one longer than the kernel's prefixes. Programs run and sockets
connected to are never generalised: a new tool in `/usr/bin` is new-exec.

Learning lasts `learn_seconds` from the first event; after it the profile
is frozen and novelties are judged by the detectors, not added. Items seen
after learning that no detector flags are kept apart (`novel`, capped) so
`manul baseline show` can list them. Serialises to JSON (`to_json`).
"""

from __future__ import annotations

import posixpath
from dataclasses import dataclass, field
from typing import Any

from agent.baseline.catalog import may_hold_credentials
from agent.baseline.errors import BaselineError
from agent.baseline.events import Item, Kind
from agent.kernel import abi

FORMAT = 1
GENERALISE_AT = 8  # distinct files of one kind directly in one directory
SCRATCH_DIRS = frozenset({"/tmp", "/var/tmp", "/dev/shm"})
NOVEL_KEPT = 200
HOSTS_KEPT = 8  # TLS server names kept per peer address


@dataclass
class Seen:
    first: float
    last: float
    count: int = 1

    def see(self, when: float, n: int = 1) -> None:
        self.first = min(self.first, when)
        self.last = max(self.last, when)
        self.count += n

    def to_json(self) -> list[float | int]:
        return [round(self.first, 3), round(self.last, 3), self.count]

    @classmethod
    def from_json(cls, v: Any) -> Seen:
        return cls(float(v[0]), float(v[1]), int(v[2]))


def generalisable(directory: str, extra_credentials: tuple[str, ...] = ()) -> bool:
    if len(directory.encode("utf-8", "surrogateescape")) + 1 > abi.BL_PREFIX_MAX:
        return False  # longer than the kernel's prefixes: its files stay exact
    if directory in SCRATCH_DIRS:
        return True
    depth = len([p for p in directory.split("/") if p])
    return depth >= 2 and not may_hold_credentials(directory, extra_credentials)


@dataclass
class Profile:
    name: str  # the agent's registry key, or the workload's name (--baseline all)
    learn_seconds: float
    started: float  # wall-clock time of the first event
    learned_at: float | None = None  # when learning ended
    items: dict[Item, Seen] = field(default_factory=dict)
    prefixes: dict[tuple[Kind, str], Seen] = field(default_factory=dict)
    novel: dict[Item, Seen] = field(default_factory=dict)  # after learning, not anomalous
    hosts: dict[str, set[str]] = field(default_factory=dict)  # peer address -> TLS names
    credentials: tuple[str, ...] = ()  # the agent's extra credential patterns

    def learning(self, now: float) -> bool:
        if self.learned_at is not None:
            return False
        if now - self.started >= self.learn_seconds:
            self.learned_at = self.started + self.learn_seconds
            return False
        return True

    def covers(self, item: Item) -> bool:
        if item in self.items:
            return True
        if item.kind.has_path:
            return (item.kind, posixpath.dirname(item.path)) in self.prefixes
        return False

    def learn(self, item: Item, when: float) -> tuple[Kind, str] | None:
        """Add `item`; the directory it generalised, if it did."""
        seen = self.items.get(item)
        if seen is not None:
            seen.see(when)
            return None
        if item.kind.has_path:
            d = posixpath.dirname(item.path)
            prefix = self.prefixes.get((item.kind, d))
            if prefix is not None:
                prefix.see(when)
                return None
        self.items[item] = Seen(when, when)
        if item.kind in (Kind.READ, Kind.WRITE):  # programs and sockets stay exact
            return self._generalise(item.kind, posixpath.dirname(item.path))
        return None

    def _generalise(self, kind: Kind, d: str) -> tuple[Kind, str] | None:
        siblings = [i for i in self.items if i.kind is kind and posixpath.dirname(i.path) == d]
        if len(siblings) < GENERALISE_AT or not generalisable(d, self.credentials):
            return None
        merged = Seen(min(self.items[i].first for i in siblings),
                      max(self.items[i].last for i in siblings),
                      sum(self.items[i].count for i in siblings))
        for i in siblings:
            del self.items[i]
        self.prefixes[(kind, d)] = merged
        return (kind, d)

    def note_novel(self, item: Item, when: float) -> None:
        seen = self.novel.get(item)
        if seen is not None:
            seen.see(when)
        elif len(self.novel) < NOVEL_KEPT:
            self.novel[item] = Seen(when, when)

    def name_peer(self, addr: str, host: str) -> bool:
        """`host` (a TLS server name) was reached at `addr`; True if that is news."""
        names = self.hosts.setdefault(addr, set())
        if host in names or len(names) >= HOSTS_KEPT:
            return False
        names.add(host)
        return True

    def counts(self) -> dict[str, int]:
        out: dict[str, int] = {}
        for i in self.items:
            out[str(i.kind)] = out.get(str(i.kind), 0) + 1
        for kind, _ in self.prefixes:
            out[f"{kind} dirs"] = out.get(f"{kind} dirs", 0) + 1
        return out

    def to_json(self) -> dict[str, Any]:
        return {
            "format": FORMAT,
            "name": self.name,
            "learn_seconds": self.learn_seconds,
            "started": round(self.started, 3),
            "learned_at": round(self.learned_at, 3) if self.learned_at is not None else None,
            "items": {str(i): s.to_json() for i, s in sorted(self.items.items())},
            "directories": {f"{k} {d}/": s.to_json()
                            for (k, d), s in sorted(self.prefixes.items())},
            "novel_after_learning": {str(i): s.to_json() for i, s in sorted(self.novel.items())},
            "hosts": {a: sorted(n) for a, n in sorted(self.hosts.items())},
        }

    @classmethod
    def from_json(cls, data: Any, where: str) -> Profile:
        """A stored profile; BaselineError naming `where` and the field when it is not one."""
        if not isinstance(data, dict) or data.get("format") != FORMAT:
            raise BaselineError(f"{where}: not a Manul baseline (format {FORMAT})")
        field_name = "name"
        try:
            p = cls(name=str(data["name"]), learn_seconds=float(data["learn_seconds"]),
                    started=float(data["started"]),
                    learned_at=(None if data.get("learned_at") is None
                                else float(data["learned_at"])))
            field_name = "items"
            for text, s in data.get("items", {}).items():
                p.items[Item.parse(text)] = Seen.from_json(s)
            field_name = "directories"
            for text, s in data.get("directories", {}).items():
                kind, _, d = text.partition(" ")
                p.prefixes[(Kind(kind), d.rstrip("/") or "/")] = Seen.from_json(s)
            field_name = "novel_after_learning"
            for text, s in data.get("novel_after_learning", {}).items():
                p.novel[Item.parse(text)] = Seen.from_json(s)
            field_name = "hosts"
            for addr, names in data.get("hosts", {}).items():
                p.hosts[str(addr)] = {str(n) for n in names}
        except (KeyError, TypeError, ValueError, IndexError, BaselineError) as e:
            raise BaselineError(f"{where}: field `{field_name}`: {e}") from None
        return p
