"""Baselines on disk: one JSON file per agent under `<state-dir>/baseline/`.

Writes are atomic and durable (a temporary file, fsync, rename, fsync of
the directory), so a `kill -9` at any moment leaves the previous or the
new profile, never half of one. A file that cannot be read is moved aside
(`.corrupt`) and reported, and that agent learns again.

`manul baseline reset` deletes an agent's file and leaves a `.reset`
marker: a running agent sees it within a second, forgets the baseline in
the kernel too and starts learning again; an agent that is not running has
nothing to forget.
"""

from __future__ import annotations

import contextlib
import json
import logging
import os
from pathlib import Path
from urllib.parse import quote, unquote

from agent.baseline.errors import BaselineError
from agent.baseline.profile import Profile

log = logging.getLogger(__name__)

# `--state-dir`'s default; MANUL_STATE_DIR moves it (tests, unprivileged trials).
DEFAULT_STATE_DIR = Path(os.environ.get("MANUL_STATE_DIR") or "/var/lib/manul")


class Store:
    def __init__(self, state_dir: Path = DEFAULT_STATE_DIR) -> None:
        self.dir = Path(state_dir) / "baseline"

    def path(self, name: str) -> Path:
        return self.dir / (quote(name, safe="") + ".json")

    def names(self) -> list[str]:
        if not self.dir.is_dir():
            return []
        return sorted(unquote(p.name[:-len(".json")]) for p in self.dir.glob("*.json"))

    def load(self, name: str) -> Profile | None:
        """The stored profile of `name`, None when there is none; BaselineError when
        the file is there but is not one (the caller decides what to do)."""
        p = self.path(name)
        try:
            raw = p.read_bytes()
        except FileNotFoundError:
            return None
        except OSError as e:
            raise BaselineError(f"cannot read baseline `{p}`: {e.strerror}") from e
        try:
            data = json.loads(raw.decode("utf-8"))
        except (UnicodeDecodeError, json.JSONDecodeError) as e:
            raise BaselineError(f"baseline `{p}` is not JSON: {e}") from None
        return Profile.from_json(data, str(p))

    def load_or_quarantine(self, name: str) -> Profile | None:
        """load(), but a bad file is moved aside (`.corrupt`) and logged: learn again."""
        try:
            return self.load(name)
        except BaselineError as e:
            bad = self.path(name).with_suffix(".corrupt")
            log.error("%s; moved to `%s`, the agent learns again", e, bad)
            with contextlib.suppress(OSError):
                os.replace(self.path(name), bad)
            return None

    def save(self, profile: Profile) -> None:
        self.dir.mkdir(parents=True, exist_ok=True, mode=0o700)
        target = self.path(profile.name)
        tmp = target.with_name(f".{target.name}.{os.getpid()}.tmp")
        data = json.dumps(profile.to_json(), indent=1, sort_keys=False).encode()
        try:
            fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
            try:
                os.write(fd, data)
                os.fsync(fd)
            finally:
                os.close(fd)
            os.replace(tmp, target)
            dfd = os.open(self.dir, os.O_RDONLY | os.O_DIRECTORY)
            try:
                os.fsync(dfd)
            finally:
                os.close(dfd)
        except OSError as e:
            raise BaselineError(f"cannot write baseline `{target}`: {e.strerror}") from e

    def reset(self, name: str) -> bool:
        """Delete `name`'s baseline and tell a running agent; True if there was one."""
        self.dir.mkdir(parents=True, exist_ok=True, mode=0o700)
        existed = self.path(name).exists()
        try:
            self.path(name).unlink(missing_ok=True)
            self._marker(name).touch()
        except OSError as e:
            raise BaselineError(f"cannot reset baseline `{self.path(name)}`: "
                                f"{e.strerror}") from e
        return existed

    def resets(self) -> list[str]:
        """Names reset since the last call (their markers are removed)."""
        if not self.dir.is_dir():
            return []
        out = []
        for m in self.dir.glob("*.reset"):
            out.append(unquote(m.name[:-len(".reset")]))
            m.unlink(missing_ok=True)
        return sorted(out)

    def _marker(self, name: str) -> Path:
        return self.dir / (quote(name, safe="") + ".reset")
