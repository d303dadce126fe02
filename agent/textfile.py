"""Reading a file a person named (registry YAML, policies, pods, request
JSON) as UTF-8 text, with one sentence for every way it can fail: missing,
a directory, unreadable, or not text at all (a binary)."""

from __future__ import annotations

from pathlib import Path

from agent.errors import ConfigError, ManulError


def read_text(path: str | Path, error: type[ManulError] = ConfigError, what: str = "") -> str:
    """The file's text; `error` (prefixed with `what:`) saying why not."""
    p = Path(path)
    prefix = f"{what}: " if what else ""
    try:
        data = p.read_bytes()
    except IsADirectoryError:
        raise error(f"{prefix}`{p}` is a directory, not a file") from None
    except FileNotFoundError:
        raise error(f"{prefix}`{p}` does not exist") from None
    except OSError as e:
        raise error(f"{prefix}cannot read `{p}`: {e.strerror}") from e
    try:
        return data.decode("utf-8")
    except UnicodeDecodeError as e:
        raise error(f"{prefix}`{p}` is not UTF-8 text (byte {e.start} is "
                    f"0x{data[e.start]:02x}); is it a binary file?") from None


__all__ = ["read_text"]
