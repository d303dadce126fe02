"""The provider catalog: which TLS server names are LLM APIs, and which are the gateway.

Called by discovery's classification for the SNI of every handshake, and by
`manul discover` to name providers. A built-in list of well-known LLM API
hosts is extended and overridden by `LLMProvider` registry records: a record
with the same name as a built-in entry replaces it, and `gateway: true` marks
the AI gateway's own hosts, which are the governed path, not a provider call.

Host patterns (lower-case; matching is case-insensitive and ignores one
trailing dot on the server name):

    api.openai.com                  exact host name
    *.openai.azure.com              leading `*.`: ONE OR MORE whole labels in front
                                    (x.openai.azure.com, a.b.openai.azure.com), never
                                    the bare openai.azure.com
    bedrock-runtime.*.amazonaws.com a `*` label elsewhere: exactly one label
    *-aiplatform.googleapis.com     `*` inside a label: one or more characters of
                                    that label (never a dot)

At most one `*` per label. A pattern with a wildcard must end in at least two
literal labels (`*.com` is refused), so one pattern cannot claim a whole TLD.
Patterns are compiled to prefix/suffix string tests, never to regular
expressions, and indexed by their literal suffix: a lookup tries one dict key
per label of the server name, then tests the few patterns stored there.

When several patterns match, the most specific wins: an exact name, then
more literal labels, then more literal characters; on a tie gateway entries
beat registry records, which beat built-ins.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass

from agent.discovery.errors import CatalogError
from agent.errors import RegistryError
from agent.registry.model import LLMProvider

_LABEL_CHARS = frozenset("abcdefghijklmnopqrstuvwxyz0123456789-_*")
_HOST_CHARS = frozenset("abcdefghijklmnopqrstuvwxyz0123456789-_.")
_CACHE_SIZE = 4096


@dataclass(frozen=True, slots=True)
class Provider:
    """One catalog entry: a provider (or the gateway) and its host patterns."""

    name: str
    hosts: tuple[str, ...]
    gateway: bool = False
    builtin: bool = True


@dataclass(frozen=True, slots=True)
class Match:
    """The answer for one server name."""

    provider: str
    pattern: str
    gateway: bool  # the AI gateway's own host: the governed path
    builtin: bool  # from the built-in list rather than a registry record


# Checked against each provider's API documentation (base URLs of their SDKs).
BUILTIN: tuple[Provider, ...] = (
    Provider("openai", ("api.openai.com",)),
    Provider("azure-openai", ("*.openai.azure.com", "*.cognitiveservices.azure.com")),
    Provider("azure-ai-foundry", ("*.services.ai.azure.com", "*.models.ai.azure.com")),
    Provider("anthropic", ("api.anthropic.com",)),
    Provider("google-gemini", ("generativelanguage.googleapis.com",)),
    Provider("google-vertex-ai", ("aiplatform.googleapis.com", "*-aiplatform.googleapis.com")),
    Provider("aws-bedrock", (
        "bedrock-runtime.*.amazonaws.com",
        "bedrock-runtime-fips.*.amazonaws.com",
        "bedrock-agent-runtime.*.amazonaws.com",
        "bedrock-runtime.*.amazonaws.com.cn",
    )),
    Provider("mistral", ("api.mistral.ai", "codestral.mistral.ai")),
    Provider("cohere", ("api.cohere.ai", "api.cohere.com")),
    Provider("groq", ("api.groq.com",)),
    Provider("together", ("api.together.xyz", "api.together.ai")),
    Provider("deepseek", ("api.deepseek.com",)),
    Provider("xai", ("api.x.ai",)),
    Provider("openrouter", ("openrouter.ai",)),
    Provider("huggingface", (
        "api-inference.huggingface.co", "router.huggingface.co", "*.endpoints.huggingface.cloud",
    )),
    Provider("perplexity", ("api.perplexity.ai",)),
    Provider("fireworks", ("api.fireworks.ai",)),
    Provider("replicate", ("api.replicate.com",)),
    Provider("cerebras", ("api.cerebras.ai",)),
    Provider("nvidia-nim", ("integrate.api.nvidia.com",)),
    Provider("deepinfra", ("api.deepinfra.com",)),
    Provider("sambanova", ("api.sambanova.ai",)),
    Provider("alibaba-dashscope", ("dashscope.aliyuncs.com", "dashscope-intl.aliyuncs.com")),
    Provider("moonshot", ("api.moonshot.ai", "api.moonshot.cn")),
    Provider("zhipu", ("open.bigmodel.cn", "api.z.ai")),
    Provider("ai21", ("api.ai21.com",)),
    Provider("voyage", ("api.voyageai.com",)),
    Provider("github-models", ("models.github.ai", "models.inference.ai.azure.com")),
)


@dataclass(frozen=True, slots=True)
class _Label:
    prefix: str  # the whole label when not wild
    suffix: str
    wild: bool


@dataclass(frozen=True, slots=True)
class _Pattern:
    text: str
    labels: tuple[_Label, ...]  # after the leading `*.`, if any
    any_depth: bool  # leading `*.`: one or more labels in front
    rank: tuple[int, int, int, int, int]
    match: Match


def _normalize(text: str) -> str:
    host = text.lower()
    return host[:-1] if host.endswith(".") else host


def validate_pattern(text: str) -> str:
    """The normalised form of a host pattern; `CatalogError` says what is wrong with it."""
    return _compile(text)[0]


def _compile(text: str) -> tuple[str, tuple[_Label, ...], bool]:
    """(normalised text, labels after a leading `*.`, whether there was one)."""
    pattern = _normalize(text.strip())
    if not pattern or len(pattern) > 253 or not pattern.isascii():
        raise CatalogError(f"host pattern `{text}`: not a host name of 1 to 253 ASCII characters")
    parts = pattern.split(".")
    any_depth = len(parts) > 1 and parts[0] == "*"
    if any_depth:
        parts = parts[1:]
    labels: list[_Label] = []
    for part in parts:
        if not part or len(part) > 63 or not _LABEL_CHARS.issuperset(part):
            raise CatalogError(
                f"host pattern `{text}`: label `{part}` must be 1 to 63 of a-z 0-9 - _ *"
            )
        stars = part.count("*")
        if stars > 1:
            raise CatalogError(f"host pattern `{text}`: label `{part}` has more than one `*`")
        if stars:
            head, _, tail = part.partition("*")
            labels.append(_Label(head, tail, True))
        else:
            labels.append(_Label(part, "", False))
    literal_tail = 0
    for label in reversed(labels):
        if label.wild:
            break
        literal_tail += 1
    wild = any_depth or literal_tail < len(labels)
    if wild and literal_tail < 2:
        raise CatalogError(
            f"host pattern `{text}`: a wildcard pattern must end in two literal labels"
        )
    return pattern, tuple(labels), any_depth


class Catalog:
    """An immutable, indexed set of providers; build once per registry snapshot."""

    __slots__ = ("_cache", "_index", "providers")

    def __init__(self, providers: Iterable[Provider]) -> None:
        self.providers: tuple[Provider, ...] = tuple(providers)
        self._index: dict[str, list[_Pattern]] = {}
        self._cache: dict[str, Match | None] = {}
        for provider in self.providers:
            for host in provider.hosts:
                self._add(provider, host)

    @classmethod
    def builtin(cls) -> Catalog:
        """The built-in list alone."""
        return cls(BUILTIN)

    @classmethod
    def with_records(cls, records: Iterable[LLMProvider]) -> Catalog:
        """The built-in list, extended by `records`; a record replaces a same-name entry.

        Raises `RegistryError` naming the record's source for a host pattern
        the catalog cannot use.
        """
        recs = list(records)
        names = {r.meta.name for r in recs}
        providers = [p for p in BUILTIN if p.name not in names]
        for rec in recs:
            for host in rec.hosts:
                try:
                    _compile(host)
                except CatalogError as e:
                    where = rec.meta.source or rec.meta.key
                    raise RegistryError(f"{where}: LLMProvider `{rec.meta.name}`: {e}") from e
            providers.append(Provider(rec.meta.name, rec.hosts, rec.gateway, builtin=False))
        return cls(providers)

    def _add(self, provider: Provider, host: str) -> None:
        text, labels, any_depth = _compile(host)
        literal = sum(1 for lab in labels if not lab.wild)
        tail = 0
        for lab in reversed(labels):
            if lab.wild:
                break
            tail += 1
        key = ".".join(lab.prefix for lab in labels[len(labels) - tail :])
        rank = (
            int(not any_depth and literal == len(labels)),  # exact name
            literal,
            sum(len(lab.prefix) + len(lab.suffix) for lab in labels),  # literal characters
            int(provider.gateway),
            int(not provider.builtin),
        )
        match = Match(provider.name, text, provider.gateway, provider.builtin)
        self._index.setdefault(key, []).append(_Pattern(text, labels, any_depth, rank, match))

    def match(self, server_name: str) -> Match | None:
        """The provider a TLS server name belongs to, or None."""
        if server_name in self._cache:
            return self._cache[server_name]
        found = self._lookup(server_name)
        if len(self._cache) >= _CACHE_SIZE:
            self._cache.clear()
        self._cache[server_name] = found
        return found

    def _lookup(self, server_name: str) -> Match | None:
        host = _normalize(server_name)
        if not host or len(host) > 253 or not _HOST_CHARS.issuperset(host):
            return None
        labels = host.split(".")
        best: _Pattern | None = None
        start = 0
        for i in range(len(labels)):
            candidates = self._index.get(host[start:])
            if candidates:
                for pat in candidates:
                    if (best is None or pat.rank > best.rank) and _fits(pat, labels):
                        best = pat
            start += len(labels[i]) + 1
        return None if best is None else best.match


def _fits(pat: _Pattern, host: list[str]) -> bool:
    want = len(pat.labels)
    have = len(host)
    if have < want or (have == want and pat.any_depth) or (have > want and not pat.any_depth):
        return False
    off = have - want
    for i, lab in enumerate(pat.labels):
        label = host[off + i]
        if not lab.wild:
            if label != lab.prefix:
                return False
        elif (
            len(label) <= len(lab.prefix) + len(lab.suffix)
            or not label.startswith(lab.prefix)
            or not label.endswith(lab.suffix)
        ):
            return False
    return not pat.any_depth or all(host[:off])
