"""The baseline's errors."""

from __future__ import annotations

from agent.errors import ManulError


class BaselineError(ManulError):
    """A stored baseline cannot be read or written, or a name is not known."""
