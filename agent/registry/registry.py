"""An immutable snapshot of the registry, with the lookups the agent needs.

Both backends produce a `Registry`; consumers never see which one. A new
snapshot replaces the old one atomically (one reference assignment), so a
reader always sees one consistent set of records.
"""

from __future__ import annotations

import dataclasses
import fnmatch
import hashlib
from collections.abc import Iterable
from dataclasses import dataclass

from agent.errors import RegistryError
from agent.registry.model import (
    Agent,
    Identity,
    IdentityKind,
    LLMProvider,
    MCPServer,
    Policy,
    Record,
    ServiceIdentity,
)

Caller = Agent | ServiceIdentity


@dataclass(frozen=True)
class Registry:
    agents: tuple[Agent, ...] = ()
    services: tuple[ServiceIdentity, ...] = ()
    providers: tuple[LLMProvider, ...] = ()
    mcp_servers: tuple[MCPServer, ...] = ()
    policies: tuple[Policy, ...] = ()

    @classmethod
    def build(cls, records: Iterable[Record]) -> Registry:
        """Group records by kind; reject duplicate names and ambiguous identities."""
        by_kind: dict[str, dict[str, Record]] = {}
        owners: dict[tuple[IdentityKind, str, str], Record] = {}
        for rec in records:
            names = by_kind.setdefault(rec.kind, {})
            key = rec.meta.key
            if key in names:
                raise RegistryError(
                    f"{rec.meta.source}: {rec.kind} `{key}` is already defined "
                    f"in {names[key].meta.source}")
            names[key] = rec
            for ident in getattr(rec, "identities", ()):
                k = (ident.kind, ident.issuer, ident.value)
                if k in owners:
                    other = owners[k]
                    raise RegistryError(
                        f"{rec.meta.source}: identity `{ident}` of {rec.kind} `{key}` is "
                        f"also claimed by {other.kind} `{other.meta.key}` ({other.meta.source})")
                owners[k] = rec

        def of(kind: str) -> tuple[Record, ...]:
            return tuple(by_kind.get(kind, {}).values())

        reg = cls(
            agents=of("Agent"),  # type: ignore[arg-type]
            services=of("ServiceIdentity"),  # type: ignore[arg-type]
            providers=of("LLMProvider"),  # type: ignore[arg-type]
            mcp_servers=of("MCPServer"),  # type: ignore[arg-type]
            policies=of("Policy"),  # type: ignore[arg-type]
        )
        return reg

    # -- what changed -------------------------------------------------------

    def contents(self) -> dict[str, str]:
        """`<Kind>/<key>` -> the record as read (where it was read from left out),
        so two snapshots compare by what they say."""
        out: dict[str, str] = {}
        records: tuple[Record, ...] = (*self.agents, *self.services, *self.providers,
                                       *self.mcp_servers, *self.policies)
        for rec in records:
            plain = dataclasses.replace(rec, meta=dataclasses.replace(rec.meta, source=""))
            out[f"{rec.kind}/{rec.meta.key}"] = repr(plain)
        return out

    def digest(self) -> str:
        h = hashlib.sha256()
        for k, v in sorted(self.contents().items()):
            h.update(f"{k}\0{v}\0".encode())
        return h.hexdigest()

    # -- lookups -----------------------------------------------------------

    def callers(self) -> tuple[Caller, ...]:
        return (*self.agents, *self.services)

    def agent(self, name: str) -> Agent | None:
        for a in self.agents:
            if name in (a.meta.key, a.meta.name):
                return a
        return None

    def policy(self, name: str) -> Policy | None:
        for p in self.policies:
            if name in (p.meta.key, p.meta.name):
                return p
        return None

    def match(self, presented: Identity) -> Caller | None:
        """The agent or service whose identities include `presented`, if any.

        Cgroup identities match exactly, or the whole subtree when the
        registered path ends in `/*`; everything else matches exactly.
        """
        for rec in self.callers():
            for ident in rec.identities:
                if _matches(ident, presented):
                    return rec
        return None

    def match_any(self, presented: Iterable[Identity]) -> Caller | None:
        for ident in presented:
            rec = self.match(ident)
            if rec is not None:
                return rec
        return None


def _matches(registered: Identity, presented: Identity) -> bool:
    if registered.kind is not presented.kind:
        return False
    if registered.kind is IdentityKind.OIDC and registered.issuer != presented.issuer:
        return False
    if registered.kind is IdentityKind.CGROUP:
        r, p = registered.value.rstrip("/"), presented.value.rstrip("/")
        if r.endswith("/*"):
            base = r[:-2]
            return p == base or p.startswith(base + "/")
        return fnmatch.fnmatchcase(p, r) if "*" in r else p == r
    return registered.value == presented.value
