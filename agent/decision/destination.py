"""Which registered thing a request goes to: an MCP server, an agent, an LLM provider.

In order: the route's `context_extensions["manul.destination"]` (set in
the gateway's route config, so trusted), e.g. `MCPServer/finance/finance-tools`,
`Agent/support/support-bot` or `LLMProvider/internal-vllm`; else the
request's host and path against the records' URLs (longest path prefix
wins) and the providers' host names (exact before `*.` wildcards). The
destination fixes the protocol the body is read as, and the audience of
the per-hop token.
"""

from __future__ import annotations

from dataclasses import dataclass
from enum import StrEnum
from urllib.parse import urlsplit

from agent.decision.checkrequest import Incoming
from agent.decision.errors import RequestError
from agent.registry import Agent, LLMProvider, MCPServer, Registry

DESTINATION_KEY = "manul.destination"


class Protocol(StrEnum):
    MCP = "mcp"
    A2A = "a2a"
    LLM = "llm"


@dataclass(frozen=True)
class Destination:
    protocol: Protocol
    record: MCPServer | Agent | LLMProvider

    @property
    def key(self) -> str:
        return self.record.meta.key

    @property
    def audience(self) -> str:
        """The per-hop token's `aud`: the record's URL, else `manul:<Kind>/<key>`."""
        url = getattr(self.record, "url", "")
        if url:
            return str(url)
        if isinstance(self.record, LLMProvider) and self.record.hosts:
            host = self.record.hosts[0]
            if not host.startswith("*."):
                return f"https://{host}"
        return f"manul:{self.record.kind}/{self.key}"


def audience_of(record: MCPServer | Agent | LLMProvider) -> str:
    proto = {"MCPServer": Protocol.MCP, "Agent": Protocol.A2A}.get(record.kind, Protocol.LLM)
    return Destination(proto, record).audience


@dataclass(frozen=True)
class _Route:
    host: str
    port: int | None
    prefix: str
    dest: Destination


def _split_host(hostport: str) -> tuple[str, int | None]:
    if hostport.startswith("["):
        end = hostport.find("]")
        host, rest = hostport[1:end], hostport[end + 1:]
        return host, int(rest[1:]) if rest.startswith(":") and rest[1:].isdigit() else None
    host, _, port = hostport.partition(":")
    return host, int(port) if port.isdigit() else None


class Destinations:
    """Lookup tables over one registry snapshot."""

    def __init__(self, reg: Registry) -> None:
        self._by_key: dict[str, Destination] = {}
        routes: list[_Route] = []
        pairs: list[tuple[MCPServer | Agent, Protocol]] = [
            *((m, Protocol.MCP) for m in reg.mcp_servers),
            *((a, Protocol.A2A) for a in reg.agents)]
        for rec, proto in pairs:
            dest = Destination(proto, rec)
            self._by_key[f"{rec.kind}/{rec.meta.key}"] = dest
            if rec.url:
                u = urlsplit(rec.url)
                port = u.port or (443 if u.scheme == "https" else 80)
                routes.append(_Route((u.hostname or "").lower(), port,
                                     u.path.rstrip("/") or "", dest))
        self._routes = sorted(routes, key=lambda r: -len(r.prefix))
        self._hosts: dict[str, Destination] = {}
        self._wild: list[tuple[str, Destination]] = []
        for p in reg.providers:
            dest = Destination(Protocol.LLM, p)
            self._by_key[f"LLMProvider/{p.meta.key}"] = dest
            for h in p.hosts:
                if h.startswith("*."):
                    self._wild.append((h[1:], dest))
                else:
                    self._hosts.setdefault(h, dest)
        self._wild.sort(key=lambda w: -len(w[0]))

    def resolve(self, inc: Incoming) -> Destination:
        named = inc.context_extensions.get(DESTINATION_KEY, "")
        if named:
            dest = self._by_key.get(named)
            if dest is None:
                raise RequestError(f"route names destination `{named}`, which is not in "
                                   "the registry (use `MCPServer/<key>`, `Agent/<key>` "
                                   "or `LLMProvider/<name>`)")
            return dest
        host, port = _split_host(inc.host)
        for r in self._routes:
            if r.host != host or (port is not None and r.port != port):
                continue
            if not r.prefix or inc.path == r.prefix or inc.path.startswith(r.prefix + "/"):
                return r.dest
        dest = self._hosts.get(host)
        if dest is not None:
            return dest
        for suffix, d in self._wild:
            if host.endswith(suffix):
                return d
        raise RequestError(f"`{inc.host}{inc.path}` is not a registered MCP server, agent "
                           "or LLM provider")
