"""The node's one policy set: a folder on a host, the Policy records in a cluster.

Both enforcement points read the same set: the sandbox service compiles its
kernel part for every sandboxed agent, the decision point indexes it for
gateway calls. Where it comes from is one choice per agent:

* `PolicyFolder(dir)` (host mode, `--policies DIR`): every `*.cedar` under
  the folder, in path order, and the folder's `entities.json` (path and
  destination sets, class and group nesting), if it has one;
* `PolicyRecords(registry)` (cluster mode, or a host run without
  `--policies`): every `Policy` record's `cedar`, named by the record's
  source, and their `entities` concatenated.

A source says what it would load now (`stamp()`, cheap, compared by the
callers to notice changes) and loads it (`load()`, a frozen `PolicySet`).
Reading is all this module does: parsing, validation and the layer split
are the compiler's (`compiler.load_policies`).
"""

from __future__ import annotations

import hashlib
import json
import threading
from collections.abc import Callable, Hashable
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Protocol

from agent.errors import ConfigError, ManulError
from agent.registry.registry import Registry
from agent.textfile import read_text
from compiler import EntitiesSource, PolicySource

ENTITIES_FILE = "entities.json"


class PolicySetError(ConfigError):
    """The policy set cannot be read; the previous one stays in force."""


@dataclass(frozen=True)
class PolicySet:
    origin: str  # "folder `examples/policies`" or "Policy records"
    sources: tuple[PolicySource, ...]
    entities: EntitiesSource | None = None

    def __len__(self) -> int:
        return len(self.sources)

    def digest(self) -> str:
        h = hashlib.sha256()
        for s in self.sources:
            h.update(f"{s.name}\0{s.text}\0".encode())
        if self.entities is not None:
            h.update(f"{self.entities.name}\0{self.entities.text}".encode())
        return h.hexdigest()


class PolicySetSource(Protocol):
    origin: str

    def stamp(self) -> Hashable: ...

    def load(self) -> PolicySet: ...


class PolicyFolder:
    """`*.cedar` files and `entities.json` under one folder."""

    def __init__(self, root: str | Path) -> None:
        # A folder that does not exist (yet) loads as an error, not at all: the
        # decision point then denies with the reason, and picks it up once it does.
        self.root = Path(root)
        self.origin = f"folder `{self.root}`"

    def _files(self) -> list[Path]:
        return sorted(self.root.rglob("*.cedar"))

    def stamp(self) -> Hashable:
        out = []
        for path in [*self._files(), self.root / ENTITIES_FILE]:
            try:
                st = path.stat()
            except OSError:
                continue
            out.append((str(path), st.st_mtime_ns, st.st_size))
        return tuple(out)

    def load(self) -> PolicySet:
        if not self.root.is_dir():
            raise PolicySetError(f"`{self.root}`: the policy folder does not exist")
        sources = tuple(
            PolicySource(str(p.relative_to(self.root)), read_text(p, PolicySetError))
            for p in self._files())
        ents_path = self.root / ENTITIES_FILE
        entities = (EntitiesSource(ENTITIES_FILE, read_text(ents_path, PolicySetError))
                    if ents_path.is_file() else None)
        return PolicySet(self.origin, sources, entities)


class PolicyRecords:
    """Every Policy record of the registry (cluster mode)."""

    origin = "Policy records"

    def __init__(self, registry: Callable[[], Registry]) -> None:
        self.registry = registry

    def stamp(self) -> Hashable:
        return self.registry().policies

    def load(self) -> PolicySet:
        records = sorted(self.registry().policies, key=lambda p: p.meta.key)
        sources = tuple(PolicySource(p.meta.source or f"Policy {p.meta.key}", p.cedar)
                        for p in records)
        entities: list[Any] = []
        for p in records:
            if not p.entities.strip():
                continue
            try:
                more = json.loads(p.entities)
            except ValueError as e:
                raise PolicySetError(f"Policy `{p.meta.key}`: `entities` is not JSON: {e}"
                                     ) from e
            if not isinstance(more, list):
                raise PolicySetError(f"Policy `{p.meta.key}`: `entities` must be a JSON array")
            entities.extend(more)
        ents = EntitiesSource("Policy records (entities)", json.dumps(entities, indent=1))
        return PolicySet(self.origin, sources, ents if entities else None)


def read_paths(paths: list[str], entities: str | None = None) -> PolicySet:
    """Policy files and folders named on a command line, as one set.

    A folder contributes its `*.cedar` files and, unless `entities` names a
    file, its `entities.json`. Raises `ConfigError` naming the path.
    """
    sources: list[PolicySource] = []
    found: list[Path] = []
    for arg in paths:
        p = Path(arg)
        if p.is_dir():
            folder = PolicyFolder(p).load()
            sources.extend(PolicySource(str(p / s.name), s.text) for s in folder.sources)
            if folder.entities is not None:
                found.append(p / ENTITIES_FILE)
        else:
            sources.append(PolicySource(arg, read_text(p)))
    ents: EntitiesSource | None = None
    if entities is not None:
        ents = EntitiesSource(entities, read_text(entities))
    elif len(found) > 1:
        raise ConfigError(f"{found[0]} and {found[1]}: give one entities file with --entities")
    elif found:
        ents = EntitiesSource(str(found[0]), read_text(found[0]))
    return PolicySet(", ".join(paths), tuple(sources), ents)


class CachedPolicySet:
    """A source read once per change, whoever asks: the agent's sandbox service
    and decision point share one, so both enforce the same reading."""

    def __init__(self, source: PolicySetSource, *,
                 on_change: Callable[[PolicySet | None, PolicySet], None] | None = None,
                 on_error: Callable[[str], None] | None = None) -> None:
        """`on_change(previous, new)`: a new reading (its digest differs);
        `on_error(message)`: a reading failed (once per distinct message)."""
        self.source = source
        self.origin = source.origin
        self.on_change = on_change
        self.on_error = on_error
        self._lock = threading.Lock()
        self._stamp: Hashable = None
        self._set: PolicySet | None = None
        self._error = ""

    def stamp(self) -> Hashable:
        return self.source.stamp()

    def load(self) -> PolicySet:
        stamp = self.source.stamp()
        with self._lock:
            if self._set is None or stamp != self._stamp:
                previous = self._set
                try:
                    self._set = self.source.load()  # an error is raised, never cached
                except ManulError as e:
                    if str(e) != self._error and self.on_error is not None:
                        self.on_error(str(e))
                    self._error = str(e)
                    raise
                self._stamp = stamp
                self._error = ""
                if self.on_change is not None and (
                        previous is None or previous.digest() != self._set.digest()):
                    self.on_change(previous, self._set)
            return self._set
