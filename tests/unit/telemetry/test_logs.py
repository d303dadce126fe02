"""Log and console output formats: JSON lines for a pipeline, text for a person."""

from __future__ import annotations

import io
import json
import logging
from collections.abc import Iterator

import pytest

from agent.telemetry.logs import JsonFormatter, Output, resolve, setup_logging


@pytest.fixture(autouse=True)
def _restore_root_logger() -> Iterator[None]:
    root = logging.getLogger()
    handlers, level = list(root.handlers), root.level
    yield
    for h in list(root.handlers):
        root.removeHandler(h)
    for h in handlers:
        root.addHandler(h)
    root.setLevel(level)


class _Tty(io.StringIO):
    def isatty(self) -> bool:
        return True


def test_auto_is_json_unless_stdout_is_a_terminal() -> None:
    assert resolve("auto", io.StringIO()) == "json"
    assert resolve("auto", _Tty()) == "text"
    assert resolve("text", io.StringIO()) == "text"
    assert resolve("json", _Tty()) == "json"


def test_a_log_record_is_one_json_line_with_its_fields() -> None:
    stream = io.StringIO()
    setup_logging(logging.INFO, "json", stream)
    log = logging.getLogger("manul.test")
    log.info("policy set loaded:\nsecond line", extra={"policies": 31, "origin": "folder"})
    try:
        raise ValueError("boom")
    except ValueError:
        log.exception("reload failed")
    lines = stream.getvalue().splitlines()
    assert len(lines) == 2  # a message or traceback with newlines stays on its line
    first, second = (json.loads(x) for x in lines)
    assert first["level"] == "info" and first["logger"] == "manul.test"
    assert first["message"] == "policy set loaded:\nsecond line"
    assert first["policies"] == 31 and first["origin"] == "folder"
    assert first["time"].endswith("Z") and "T" in first["time"]
    assert second["level"] == "error" and "ValueError: boom" in second["exception"]


def test_text_logs_stay_text() -> None:
    stream = io.StringIO()
    setup_logging(logging.INFO, "text", stream)
    logging.getLogger("manul.test").warning("careful")
    line = stream.getvalue()
    assert "WARNING manul.test careful" in line
    with pytest.raises(json.JSONDecodeError):
        json.loads(line)


def test_output_events() -> None:
    stream = io.StringIO()
    Output("json", stream).event("started", "[bold]Manul[/] text", agents=3, http=None)
    rec = json.loads(stream.getvalue())
    assert rec["event"] == "started" and rec["agents"] == 3 and rec["http"] is None
    text = io.StringIO()
    long = "x" * 300
    Output("text", text).event("started", f"[bold]Manul[/] {long}", agents=3)
    assert text.getvalue() == f"Manul {long}\n"  # markup rendered, one line, not wrapped


def test_json_formatter_skips_private_attributes() -> None:
    rec = logging.LogRecord("n", logging.INFO, "f", 1, "m", None, None)
    rec._private = 1
    assert "_private" not in json.loads(JsonFormatter().format(rec))
