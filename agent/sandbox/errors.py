"""The sandbox's exceptions: one family, each saying what was refused and why.

Every error here is raised *before* the kernel state changes, or after the
change was rolled back, so the enforcement in force before the call is still
in force after it (`apply.py` documents the order that makes this true).
"""

from __future__ import annotations

from agent.errors import ManulError


class SandboxError(ManulError):
    """Base class: a sandbox operation was refused; nothing was changed."""


class TargetError(SandboxError):
    """The cgroup or workload to sandbox is unknown or unsafe to sandbox."""


class PolicyError(SandboxError):
    """The policies do not compile, or name no sandbox for the principal."""

    def __init__(self, message: str, diagnostics: tuple[str, ...] = ()) -> None:
        self.summary = message
        self.diagnostics = diagnostics
        super().__init__(message if not diagnostics else f"{message}: {diagnostics[0]}")


class CapacityError(SandboxError):
    """A kernel map is full: the new generation did not fit beside the old."""


class StateError(SandboxError):
    """The pinned sandbox state is missing or cannot be read."""
