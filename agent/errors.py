"""The agent's exception hierarchy: every error Manul raises on purpose.

Library errors are chained (`raise ... from e`) so the cause stays visible.
Messages are sentences a person can act on: lowercase, user input in
backticks, related parts joined with colons.
"""

from __future__ import annotations

import errno as _errno
import os


class ManulError(Exception):
    """Base class for every error the agent raises deliberately."""


class ConfigError(ManulError):
    """A setting, file or command-line value is wrong; nothing was changed."""


class KernelError(ManulError):
    """The kernel or libbpf refused something.

    Carries the errno, the object and program involved, and the verifier log
    when the kernel produced one.
    """

    def __init__(
        self,
        message: str,
        *,
        errno: int = 0,
        obj: str | None = None,
        program: str | None = None,
        log: str = "",
    ) -> None:
        self.errno = abs(errno)
        self.obj = obj
        self.program = program
        self.log = log
        self.message = message
        parts = []
        if obj:
            parts.append(f"object `{obj}`")
        if program:
            parts.append(f"program `{program}`")
        parts.append(message)
        if self.errno:
            name = _errno.errorcode.get(self.errno, "?")
            parts.append(f"{name} ({os.strerror(self.errno)})")
        self.reason = ": ".join(parts)
        self.errname = _errno.errorcode.get(self.errno, "") if self.errno else ""
        super().__init__(self.reason)

    def __str__(self) -> str:
        if not self.log:
            return self.reason
        tail = "\n".join(self.log.rstrip().splitlines()[-30:])
        return f"{self.reason}\n--- kernel log (last lines) ---\n{tail}"


class RegistryError(ManulError):
    """A registry record is malformed; names the file and the field."""


class WorkloadError(ManulError):
    """A workload (cgroup, pod, unit) could not be resolved."""
