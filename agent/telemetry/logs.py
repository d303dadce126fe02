"""Log and console output: text for a person at a terminal, JSON lines otherwise.

A DaemonSet's output is read by a log pipeline, not a person: one JSON
object per line, never wrapped. `manul --log-format auto` (the default)
picks JSON when stdout is not a terminal and text when it is;
`--log-format json|text` (or `MANUL_LOG_FORMAT`) forces one. The choice
covers both streams: Python logging (stderr) through `JsonFormatter`, and
what a command prints on stdout through `Output` (`manul run`'s banner and
events).

A JSON log line carries `time` (RFC 3339, UTC), `level`, `logger`,
`message`, the record's `extra=` fields, and `exception` when there is one.
"""

from __future__ import annotations

import json
import logging
import sys
import time
from typing import Any, Literal, TextIO

LogFormat = Literal["json", "text"]
FORMATS = ("auto", "json", "text")

# LogRecord attributes that are not `extra=` fields
_STANDARD = frozenset(vars(logging.LogRecord("", 0, "", 0, "", None, None))) | {
    "message", "asctime", "taskName"}


def resolve(choice: str, stream: TextIO | None = None) -> LogFormat:
    """`auto` -> json unless `stream` (stdout) is a terminal."""
    if choice == "json":
        return "json"
    if choice == "text":
        return "text"
    s = stream if stream is not None else sys.stdout
    return "text" if s.isatty() else "json"


def rfc3339(t: float) -> str:
    return time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(t)) + f".{int(t % 1 * 1000):03d}Z"


class JsonFormatter(logging.Formatter):
    """One JSON object per record, on one line."""

    def format(self, record: logging.LogRecord) -> str:
        out: dict[str, Any] = {
            "time": rfc3339(record.created), "level": record.levelname.lower(),
            "logger": record.name, "message": record.getMessage()}
        for k, v in vars(record).items():
            if k not in _STANDARD and not k.startswith("_"):
                out[k] = v
        if record.exc_info:
            out["exception"] = self.formatException(record.exc_info)
        return json.dumps(out, default=str, separators=(",", ":"))


def setup_logging(level: int, fmt: LogFormat, stream: TextIO | None = None) -> None:
    """Configure the root logger once, for the whole process."""
    handler = logging.StreamHandler(stream if stream is not None else sys.stderr)
    if fmt == "json":
        handler.setFormatter(JsonFormatter())
    else:
        handler.setFormatter(logging.Formatter("%(asctime)s %(levelname)s %(name)s %(message)s"))
    root = logging.getLogger()
    for h in list(root.handlers):
        root.removeHandler(h)
    root.addHandler(handler)
    root.setLevel(level)


class Output:
    """What a long-running command prints on stdout, in the chosen format.

    `event(kind, text, **fields)`: in text mode `text` (rich markup, or a
    rich renderable) goes to the console; in JSON mode one line
    `{"time", "event": kind, **fields}` is written and flushed.
    """

    def __init__(self, fmt: LogFormat, stream: TextIO | None = None) -> None:
        self.format = fmt
        self._stream = stream if stream is not None else sys.stdout
        from rich.console import Console  # here: `manul --help` need not import rich

        # text mode: never wrap a line that is not going to a terminal either
        self.console = Console(file=self._stream, highlight=False,
                               soft_wrap=not self._stream.isatty())

    def event(self, kind: str, text: Any = None, /, **fields: Any) -> None:
        if self.format == "json":
            rec = {"time": rfc3339(time.time()), "event": kind, **fields}
            self._stream.write(json.dumps(rec, default=str, separators=(",", ":")) + "\n")
            self._stream.flush()
        elif text is not None:
            self.console.print(text)
