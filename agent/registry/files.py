"""The host backend: a folder of YAML records (`examples/registry/`).

Every `*.yaml`/`*.yml` under the folder is read, each may hold several
documents. Errors name the file and the line where the document starts.
`FileSource.poll()` reloads when a file changed and keeps the previous
snapshot when the new one is invalid.
"""

from __future__ import annotations

import logging
from pathlib import Path
from typing import Any

import yaml

from agent.errors import RegistryError
from agent.registry.model import Record
from agent.registry.parse import parse_record
from agent.registry.registry import Registry
from agent.textfile import read_text

log = logging.getLogger(__name__)


class _StrictLoader(yaml.SafeLoader):
    """SafeLoader that refuses a key given twice in one mapping: PyYAML's
    default is last-one-wins, and `riskLevel: medium` followed by
    `riskLevel: low` would silently flip a decision."""

    def construct_mapping(self, node: yaml.MappingNode, deep: bool = False) -> dict[Any, Any]:
        if isinstance(node, yaml.MappingNode):  # the base class reports anything else
            seen: dict[Any, int] = {}
            for key_node, _ in node.value:
                if key_node.tag == "tag:yaml.org,2002:merge":
                    continue
                key = self.construct_object(key_node, deep=True)
                try:
                    first = seen.get(key)
                    seen[key] = key_node.start_mark.line + 1
                except TypeError:
                    continue  # an unhashable key: the base class reports it
                if first is not None:
                    raise yaml.constructor.ConstructorError(
                        None, None, f"`{key}` is given twice in one mapping (first on line "
                        f"{first}); remove one", key_node.start_mark)
        return super().construct_mapping(node, deep=deep)


def _documents(path: Path, text: str) -> list[tuple[int, Any]]:
    docs: list[tuple[int, Any]] = []
    loader = _StrictLoader(text)
    try:
        while loader.check_node():
            node = loader.get_node()
            if node is None:
                continue
            docs.append((node.start_mark.line + 1, loader.construct_document(node)))
    except yaml.MarkedYAMLError as e:
        mark = e.problem_mark or e.context_mark
        where = f"{path}:{mark.line + 1}" if mark is not None else str(path)
        raise RegistryError(f"{where}: invalid YAML: {e.problem or e.context}") from e
    except yaml.YAMLError as e:
        raise RegistryError(f"{path}: invalid YAML: {e}") from e
    finally:
        loader.dispose()
    return docs


def read_records(path: Path) -> list[Record]:
    """Parse one YAML file into records."""
    text = read_text(path, RegistryError)
    base = path.parent

    def read_file(rel: str) -> str:
        return read_text((base / rel).resolve(), RegistryError, f"{path}: spec.file")

    return [parse_record(doc, f"{path}:{line}", read_file)
            for line, doc in _documents(path, text) if doc is not None]


def _files(root: Path) -> list[Path]:
    if not root.is_dir():
        raise RegistryError(f"{root}: the registry must be a directory of YAML files")
    return sorted(p for p in root.rglob("*") if p.suffix in (".yaml", ".yml") and p.is_file())


def load_directory(root: str | Path) -> Registry:
    """Load every record under `root`; raise RegistryError on the first bad one."""
    records: list[Record] = []
    for p in _files(Path(root)):
        records.extend(read_records(p))
    return Registry.build(records)


class FileSource:
    """A registry folder watched by modification time."""

    def __init__(self, root: str | Path) -> None:
        self.root = Path(root)
        self._stamp: tuple[tuple[str, int], ...] = ()
        self.registry = load_directory(self.root)
        self._stamp = self._current_stamp()
        self.last_error: str | None = None

    def _current_stamp(self) -> tuple[tuple[str, int], ...]:
        out = []
        for p in _files(self.root):
            try:
                out.append((str(p), p.stat().st_mtime_ns))
            except OSError:
                continue
        return tuple(out)

    def poll(self) -> bool:
        """Reload if anything changed. Returns True when a new snapshot is in force."""
        try:
            stamp = self._current_stamp()
            if stamp == self._stamp:
                return False
            self._stamp = stamp
            new = load_directory(self.root)
        except RegistryError as e:
            self.last_error = str(e)
            log.error("registry reload failed, keeping the previous one: %s", e)
            return False
        self.last_error = None
        self.registry = new
        return True
