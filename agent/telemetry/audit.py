"""The audit log: one JSON object per line, one line per auditable event.

Sandbox denials, newly seen (workload, provider) pairs and authorization
decisions all go through `AuditLog.write`. Records carry `time`, `node`
(`NODE_NAME` from the downward API, else the host name), `kind` and
whatever fields the caller gives; the writer adds nothing else and never
raises into the caller's hot path (an I/O error is counted and logged
once). A file log is rotated by size: past `max_bytes` the file becomes
`<path>.1` (the older ones shift up, the oldest past `backups` is
deleted), so the log never holds more than `max_bytes * (backups + 1)`.

Records that one workload can raise by the thousand (sandbox denials,
quarantine refusals, discovery sightings) go through `event` instead: it
aggregates repeats and spends the workload's record budget
(`agent.telemetry.throttle`); `tick` (once a second) writes the
aggregated records whose window closed.
"""

from __future__ import annotations

import json
import logging
import os
import socket
import sys
import threading
import time
from collections.abc import Callable, Hashable
from pathlib import Path
from typing import Any, TextIO

from agent.telemetry.throttle import RecordThrottle

log = logging.getLogger(__name__)


DEFAULT_MAX_BYTES = 100 << 20
DEFAULT_BACKUPS = 4


def record(kind: str, node: str, fields: dict[str, Any]) -> dict[str, Any]:
    """One audit record: `time` (now, unless `fields` has it), `node`, `kind`, the fields."""
    return {"time": time.time(), "node": node, "kind": kind, **fields}


def encode(rec: dict[str, Any]) -> str:
    """A record as its line in the log."""
    return json.dumps(rec, separators=(",", ":"), default=str) + "\n"


class AuditLog:
    def __init__(self, path: str | Path | None = None, node: str | None = None, *,
                 max_bytes: int = DEFAULT_MAX_BYTES, backups: int = DEFAULT_BACKUPS,
                 throttle: RecordThrottle | None = None) -> None:
        """`path=None` writes to stdout; `"-"` too (never rotated). `throttle`: how
        `event` aggregates and limits (default: `RecordThrottle()`)."""
        if max_bytes < 4096 or backups < 0:
            raise ValueError("an audit log needs max_bytes >= 4096 and backups >= 0")
        self.throttle = throttle if throttle is not None else RecordThrottle()
        self.node = node or os.environ.get("NODE_NAME") or socket.gethostname()
        self._lock = threading.Lock()
        self.errors = 0
        self.rotations = 0
        self.max_bytes = max_bytes
        self.backups = backups
        self._stream: TextIO
        self._path: Path | None = None
        self._size = 0
        if path is None or str(path) == "-":
            self._stream = sys.stdout
            self._own = False
        else:
            self._path = Path(path)
            self._path.parent.mkdir(parents=True, exist_ok=True)
            self._stream = self._open()
            self._own = True

    def _open(self) -> TextIO:
        assert self._path is not None
        fd = os.open(self._path, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o640)
        self._size = os.fstat(fd).st_size
        return os.fdopen(fd, "a", buffering=1)

    def write(self, kind: str, /, **fields: Any) -> dict[str, Any]:
        rec = record(kind, self.node, fields)
        self._append(encode(rec))
        return rec

    def append(self, lines: list[str]) -> None:
        """Records encoded elsewhere (`encode`), as a decision worker sends them: one
        write for the batch unless it crosses the rotation size."""
        if not lines:
            return
        text = "".join(lines)
        size = len(text.encode("utf-8", "replace"))
        with self._lock:
            if not (self._own and self._size and self._size + size > self.max_bytes):
                try:
                    self._stream.write(text)
                    self._size += size
                except (OSError, ValueError) as e:
                    self._failed(e)
                return
        for line in lines:
            self._append(line)

    def _append(self, line: str) -> None:
        size = len(line.encode("utf-8", "replace"))
        with self._lock:
            try:
                if self._own and self._size and self._size + size > self.max_bytes:
                    try:
                        self._rotate()
                    except OSError as e:  # keep writing in place; try again one size later
                        self._failed(e)
                        self._size = 0
                self._stream.write(line)
                self._size += size
            except (OSError, ValueError) as e:  # ValueError: the file could not reopen
                self._failed(e)

    def event(self, kind: str, /, *, budget: str, key: Hashable,
              build: Callable[[], dict[str, Any]] | None = None, **fields: Any) -> None:
        """A record a workload may raise by the thousand: aggregated per (kind,
        budget, key) and limited per `budget` (the workload's name; the module
        docstring). `build` makes the fields only when a record is due (a repeat
        inside the window is only counted)."""
        for k, rec in self.throttle.offer(kind, budget, key,
                                          build if build is not None else fields):
            self.write(k, **rec)

    def suppressed(self, kind: str, workload: str, n: int) -> None:
        """`n` of `workload`'s events never became records (held back in the kernel)."""
        self.throttle.suppress(kind, workload, n)

    def tick(self) -> None:
        """Write the aggregated records due and the suppressions nothing carried."""
        for k, rec in self.throttle.tick():
            self.write(k, **rec)

    def _failed(self, e: Exception) -> None:
        self.errors += 1
        if self.errors == 1:
            log.error("cannot write the audit log: %s", e)

    def _rotate(self) -> None:
        assert self._path is not None
        self._stream.close()
        p = self._path
        try:
            if self.backups == 0:
                p.unlink(missing_ok=True)
            else:
                Path(f"{p}.{self.backups}").unlink(missing_ok=True)
                for i in range(self.backups - 1, 0, -1):
                    older = Path(f"{p}.{i}")
                    if older.exists():
                        older.rename(f"{p}.{i + 1}")
                if p.exists():
                    p.rename(f"{p}.1")
            self.rotations += 1
        finally:
            self._stream = self._open()  # a failed shift: keep writing where we are

    def close(self) -> None:
        for k, rec in self.throttle.drain():
            self.write(k, **rec)
        if self._own:
            self._stream.close()
