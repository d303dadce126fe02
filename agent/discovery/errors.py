"""Errors raised by the discovery pipeline (ClientHello parsing, provider catalog).

`ClientHelloError` is the only exception `clienthello.parse_client_hello` lets
out, whatever bytes it is fed: the callers (the ring-buffer consumer in
`agent.discovery`, the fuzz tests) catch exactly this type, count it, and move
on. `CatalogError` is raised for a host pattern the catalog cannot use.
"""

from __future__ import annotations

from agent.errors import ManulError


class ClientHelloError(ManulError):
    """Bytes that are not a well-formed (or parseable prefix of a) TLS ClientHello.

    `truncated` is true when the input ended before anything useful (the
    fields up to the extensions) could be read, as opposed to being malformed:
    the capture bound cut it, or the caller handed over too little.
    """

    def __init__(self, message: str, *, truncated: bool = False) -> None:
        self.truncated = truncated
        super().__init__(message)


class CatalogError(ManulError):
    """A host pattern is not valid in the provider catalog."""
