"""The audit log: one JSON object per line, one line per auditable event.

Sandbox denials, newly seen (workload, provider) pairs and authorization
decisions all go through `AuditLog.write`. Records carry `time`, `node`,
`kind` and whatever fields the caller gives; the writer adds nothing else
and never raises into the caller's hot path (an I/O error is counted and
logged once).
"""

from __future__ import annotations

import json
import logging
import os
import socket
import sys
import threading
import time
from pathlib import Path
from typing import Any, TextIO

log = logging.getLogger(__name__)


class AuditLog:
    def __init__(self, path: str | Path | None = None, node: str | None = None) -> None:
        """`path=None` writes to stdout; `"-"` too."""
        self.node = node or socket.gethostname()
        self._lock = threading.Lock()
        self.errors = 0
        self._stream: TextIO
        if path is None or str(path) == "-":
            self._stream = sys.stdout
            self._own = False
        else:
            p = Path(path)
            p.parent.mkdir(parents=True, exist_ok=True)
            fd = os.open(p, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o640)
            self._stream = os.fdopen(fd, "a", buffering=1)
            self._own = True

    def write(self, kind: str, /, **fields: Any) -> dict[str, Any]:
        rec = {"time": time.time(), "node": self.node, "kind": kind, **fields}
        line = json.dumps(rec, separators=(",", ":"), default=str)
        with self._lock:
            try:
                self._stream.write(line + "\n")
            except OSError as e:
                self.errors += 1
                if self.errors == 1:
                    log.error("cannot write the audit log: %s", e)
        return rec

    def close(self) -> None:
        if self._own:
            self._stream.close()
