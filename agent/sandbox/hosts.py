"""Host names in sandbox policies, resolved to addresses and kept fresh.

The compiler never resolves anything: it compiles `resource.host` rules to
the addresses it is handed (`compile_policies(resolved=...)`) and lists the
names it needs (`Compilation.hosts`). `HostCache` resolves those names with
a resolver function (DNS by default; tests inject their own, loopback
only), remembers each answer for its TTL, and says when one has expired, so
`service.py` re-resolves and, when the addresses changed, applies a new
generation. Patterns (`*.example.com`) are never resolved: they match only
the names that are. A name that fails to resolve keeps its last addresses;
one that never resolved has none, and so matches no address (fail closed).
A failure is logged as a warning once per name and error (a closed network
would otherwise say the same thing every few seconds), then at debug level;
a name that resolves again is logged as recovered.
"""

from __future__ import annotations

import logging
import socket
import time
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass

log = logging.getLogger(__name__)

DEFAULT_TTL = 60.0  # getaddrinfo does not say; re-resolve every minute
MIN_TTL = 5.0

# host -> (addresses, seconds they stay valid); raises OSError when it cannot
Resolver = Callable[[str], tuple[list[str], float]]


def system_resolver(host: str) -> tuple[list[str], float]:
    """The node's resolver (getaddrinfo), TCP addresses of both families."""
    infos = socket.getaddrinfo(host, None, proto=socket.IPPROTO_TCP)
    return sorted({str(i[4][0]) for i in infos}), DEFAULT_TTL


def static_resolver(table: Mapping[str, Sequence[str]]) -> Resolver:
    """A fixed table (`manul sandbox apply --hosts F`); never expires."""

    def resolve(host: str) -> tuple[list[str], float]:
        if host not in table:
            raise OSError(f"`{host}` is not in the hosts file")
        return list(table[host]), float("inf")

    return resolve


@dataclass(frozen=True, slots=True)
class _Answer:
    addresses: tuple[str, ...]
    expires: float


class HostCache:
    def __init__(self, resolver: Resolver = system_resolver, *,
                 clock: Callable[[], float] = time.monotonic) -> None:
        self.resolver = resolver
        self.clock = clock
        self._answers: dict[str, _Answer] = {}
        self._failing: dict[str, str] = {}  # host -> the error last warned about
        self.failures = 0

    def resolve(self, hosts: Iterable[str]) -> dict[str, tuple[str, ...]]:
        """Addresses of each literal host name, resolving the missing and expired."""
        now = self.clock()
        out: dict[str, tuple[str, ...]] = {}
        for h in sorted(set(hosts)):
            if "*" in h:
                continue
            ans = self._answers.get(h)
            if ans is None or ans.expires <= now:
                ans = self._lookup(h, ans, now)
            if ans.addresses:
                out[h] = ans.addresses
        return out

    def _lookup(self, host: str, old: _Answer | None, now: float) -> _Answer:
        try:
            addrs, ttl = self.resolver(host)
        except OSError as e:
            self.failures += 1
            level = logging.DEBUG if self._failing.get(host) == str(e) else logging.WARNING
            self._failing[host] = str(e)
            log.log(level, "cannot resolve `%s` for a sandbox policy: %s%s", host, e,
                    " (keeping the last addresses)" if old else
                    " (it matches no address until it resolves)")
            ans = _Answer(old.addresses if old else (), now + MIN_TTL)
        else:
            if self._failing.pop(host, None) is not None:
                log.info("`%s` resolves again for the sandbox policies", host)
            ans = _Answer(tuple(sorted(set(addrs))), now + max(ttl, MIN_TTL))
        self._answers[host] = ans
        return ans

    def due(self, hosts: Iterable[str]) -> bool:
        """Whether any of `hosts` has expired (a refresh may change addresses)."""
        now = self.clock()
        for h in hosts:
            if "*" in h:
                continue
            ans = self._answers.get(h)
            if ans is None or ans.expires <= now:
                return True
        return False
