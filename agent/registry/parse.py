"""Turn one registry document (a dict from YAML or the Kubernetes API) into a record.

Strict on purpose: an unknown field is an error (a typo would otherwise
silently widen or narrow what an agent may do). Every error names the source
and the field path, e.g. ``examples/registry/agents.yaml#2: spec.identities[0]:
unknown identity kind `serviceacount```.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from typing import Any
from urllib.parse import urlsplit

from agent.errors import RegistryError
from agent.registry.model import (
    API_VERSION,
    KINDS,
    RISK_LEVELS,
    Agent,
    Authentication,
    BaselineRef,
    Identity,
    IdentityKind,
    LLMProvider,
    MCPServer,
    Meta,
    OnAnomaly,
    Policy,
    Record,
    SandboxMode,
    SandboxRef,
    ServiceIdentity,
)


class _Fields:
    """Typed access to a mapping that remembers its path for error messages."""

    def __init__(self, data: Any, source: str, path: str) -> None:
        if not isinstance(data, Mapping):
            raise RegistryError(f"{source}: {path or 'document'}: expected a mapping")
        self.data = data
        self.source = source
        self.path = path
        self.seen: set[str] = set()

    def fail(self, name: str, msg: str) -> RegistryError:
        where = f"{self.path}.{name}" if self.path else name
        return RegistryError(f"{self.source}: {where}: {msg}")

    def text(self, name: str, default: str | None = None) -> str:
        self.seen.add(name)
        v = self.data.get(name, default)
        if v is None:
            raise self.fail(name, "required field is missing")
        if not isinstance(v, str):
            raise self.fail(name, f"expected a string, got `{v!r}`")
        return v

    def flag(self, name: str, default: bool) -> bool:
        self.seen.add(name)
        v = self.data.get(name, default)
        if not isinstance(v, bool):
            raise self.fail(name, f"expected true or false, got `{v!r}`")
        return v

    def texts(self, name: str) -> tuple[str, ...]:
        self.seen.add(name)
        v = self.data.get(name, [])
        if not isinstance(v, list) or not all(isinstance(x, str) for x in v):
            raise self.fail(name, "expected a list of strings")
        return tuple(v)

    def sub(self, name: str) -> _Fields | None:
        self.seen.add(name)
        v = self.data.get(name)
        if v is None:
            return None
        return _Fields(v, self.source, f"{self.path}.{name}" if self.path else name)

    def items(self, name: str) -> list[Any]:
        self.seen.add(name)
        v = self.data.get(name, [])
        if not isinstance(v, list):
            raise self.fail(name, "expected a list")
        return v

    def done(self) -> None:
        extra = sorted(set(self.data) - self.seen)
        if extra:
            raise self.fail(extra[0], "unknown field")

    def enum(self, name: str, kind: type[Any], default: Any = None) -> Any:
        self.seen.add(name)
        v = self.data.get(name)
        if v is None:
            return default
        try:
            return kind(v)
        except ValueError:
            allowed = ", ".join(f"`{m.value}`" for m in kind)
            raise self.fail(name, f"`{v}` is not one of {allowed}") from None


def _identity(raw: Any, source: str, path: str) -> Identity:
    f = _Fields(raw, source, path)
    kinds = [k for k in raw if k in {m.value for m in IdentityKind}]
    if len(kinds) != 1 or len(raw) != 1:
        allowed = ", ".join(f"`{m.value}`" for m in IdentityKind)
        raise RegistryError(f"{source}: {path}: an identity has exactly one of {allowed}")
    kind = IdentityKind(kinds[0])
    if kind is IdentityKind.SERVICE_ACCOUNT:
        sa = f.sub(kind.value)
        assert sa is not None
        ident = Identity(kind, f"{sa.text('namespace')}/{sa.text('name')}")
        sa.done()
        return ident
    if kind is IdentityKind.OIDC:
        o = f.sub(kind.value)
        assert o is not None
        issuer = o.text("issuer")
        if not issuer.startswith("https://"):
            raise o.fail("issuer", f"issuer `{issuer}` must be an https:// URL")
        jwks_uri = o.text("jwksUri", "")
        if jwks_uri and not _safe_jwks_uri(jwks_uri):
            raise o.fail("jwksUri", f"`{jwks_uri}` must be an https:// URL "
                                    "(http:// only on a loopback address)")
        ident = Identity(kind, o.text("subject"), issuer=issuer,
                         audiences=o.texts("audiences"), jwks_uri=jwks_uri)
        o.done()
        return ident
    value = f.text(kind.value)
    if kind is IdentityKind.SPIFFE and not value.startswith("spiffe://"):
        raise f.fail(kind.value, f"`{value}` is not a spiffe:// ID")
    if kind is IdentityKind.CGROUP and not value.startswith("/"):
        raise f.fail(kind.value,
                     f"`{value}` must be an absolute cgroup path, e.g. `/manul.slice/x`")
    return Identity(kind, value)


def _safe_jwks_uri(uri: str) -> bool:
    """Keys must come over TLS, except from this machine (tests, a local proxy)."""
    if uri.startswith("https://"):
        return True
    host = urlsplit(uri).hostname if uri.startswith("http://") else None
    return host in ("127.0.0.1", "::1", "localhost")


def _risk(s: _Fields) -> str:
    level = s.text("riskLevel", "medium")
    if level not in RISK_LEVELS:
        allowed = ", ".join(f"`{r}`" for r in RISK_LEVELS)
        raise s.fail("riskLevel", f"`{level}` is not one of {allowed}")
    return level


def _identities(f: _Fields) -> tuple[Identity, ...]:
    base = f"{f.path}.identities"
    raw = f.items("identities")
    return tuple(_identity(r, f.source, f"{base}[{i}]") for i, r in enumerate(raw))


def _meta(doc: _Fields) -> Meta:
    m = doc.sub("metadata")
    if m is None:
        raise doc.fail("metadata", "required field is missing")
    name = m.text("name")
    namespace = m.text("namespace", "")
    for field, value in (("name", name), ("namespace", namespace)):
        if "/" in value:  # keys are `<namespace>/<name>`, tools `<key>/<tool>`: one way to split
            raise m.fail(field, f"`{value}` contains `/`, which Kubernetes names never do")
    labels_f = m.sub("labels")
    labels: tuple[tuple[str, str], ...] = ()
    if labels_f is not None:
        labels = tuple(sorted((k, str(v)) for k, v in labels_f.data.items()))
        labels_f.seen.update(labels_f.data)
    # Kubernetes adds these; they carry nothing the agent needs.
    m.seen.update({"uid", "resourceVersion", "generation", "creationTimestamp",
                   "managedFields", "annotations", "selfLink", "finalizers"})
    m.done()
    return Meta(name=name, namespace=namespace, labels=labels, source=doc.source)


def _agent(meta: Meta, s: _Fields) -> Agent:
    sandbox = None
    sb = s.sub("sandbox")
    if sb is not None:
        if "policies" in sb.data:
            raise sb.fail("policies", "is no longer read: every sandbox compiles from the one "
                          "policy set (the `--policies` folder on a host, the Policy records in "
                          "a cluster); a policy's principal scope says whom it applies to")
        sandbox = SandboxRef(mode=sb.enum("mode", SandboxMode, SandboxMode.ENFORCE))
        sb.done()
    baseline = BaselineRef()
    bl = s.sub("baseline")
    if bl is not None:
        creds = bl.texts("credentials")
        for i, pattern in enumerate(creds):
            if not pattern.startswith(("/", "*")):
                raise bl.fail(f"credentials[{i}]", f"`{pattern}` is not an absolute path "
                              "pattern (start it with `/`, or `*` for any directory)")
        baseline = BaselineRef(on_anomaly=bl.enum("onAnomaly", OnAnomaly, OnAnomaly.NONE),
                               credentials=creds)
        bl.done()
    return Agent(
        meta=meta,
        owner=s.text("owner", ""),
        team=s.text("team", ""),
        risk_level=_risk(s),
        classes=s.texts("classes"),
        capabilities=s.texts("capabilities"),
        groups=s.texts("groups"),
        identities=_identities(s),
        authentication=s.enum("authentication", Authentication),
        sandbox=sandbox,
        url=s.text("url", ""),
        baseline=baseline,
    )


def _service(meta: Meta, s: _Fields) -> ServiceIdentity:
    return ServiceIdentity(
        meta=meta,
        owner=s.text("owner", ""),
        team=s.text("team", ""),
        groups=s.texts("groups"),
        identities=_identities(s),
        authentication=s.enum("authentication", Authentication),
    )


def _provider(meta: Meta, s: _Fields) -> LLMProvider:
    hosts = s.texts("hosts")
    if not hosts:
        raise s.fail("hosts", "name at least one host, e.g. `api.example.com` or `*.example.com`")
    for h in hosts:
        if "*" in h and not h.startswith("*."):
            raise s.fail("hosts", f"`{h}`: a wildcard is only allowed as a leading `*.`")
    return LLMProvider(meta=meta, hosts=tuple(h.lower() for h in hosts),
                       gateway=s.flag("gateway", False), models=s.texts("models"))


def _mcp(meta: Meta, s: _Fields) -> MCPServer:
    sets: list[tuple[str, tuple[str, ...]]] = []
    ts = s.sub("toolSets")
    if ts is not None:
        for name in ts.data:
            tools = ts.texts(str(name))
            _tool_names(ts, str(name), (str(name), *tools))
            sets.append((str(name), tools))
    tools = s.texts("tools")
    _tool_names(s, "tools", tools)
    return MCPServer(meta=meta, url=s.text("url", ""), tools=tools,
                     tool_sets=tuple(sets), owner=s.text("owner", ""),
                     risk_level=_risk(s))


def _tool_names(s: _Fields, key: str, names: tuple[str, ...]) -> None:
    """A tool's Cedar id is `<server>/<tool>`: a `/` in a tool (or tool set)
    name would let server `a`'s tool `b/c` be server `a/b`'s tool `c`."""
    for n in names:
        if "/" in n:
            raise s.fail(key, f"`{n}`: a tool or tool set name may not contain `/`")


def _policy(meta: Meta, s: _Fields, read_file: Callable[[str], str] | None) -> Policy:
    cedar = s.text("cedar", "")
    path = s.text("file", "")
    entities = s.text("entities", "")
    if bool(cedar) == bool(path):
        raise s.fail("cedar", "give exactly one of `cedar` (inline text) or `file`")
    if path:
        if read_file is None:
            raise s.fail("file", "`file` only works in host mode; inline the policy as `cedar`")
        cedar = read_file(path)
    return Policy(meta=meta, cedar=cedar, entities=entities)


def parse_record(doc: Any, source: str,
                 read_file: Callable[[str], str] | None = None) -> Record:
    """Parse one document. `read_file` resolves `Policy.spec.file` (host backend only)."""
    f = _Fields(doc, source, "")
    api = f.text("apiVersion")
    if api != API_VERSION:
        raise f.fail("apiVersion", f"`{api}` is not supported; use `{API_VERSION}`")
    kind = f.text("kind")
    if kind not in KINDS:
        raise f.fail("kind", f"unknown kind `{kind}`; expected one of {', '.join(KINDS)}")
    meta = _meta(f)
    s = f.sub("spec")
    if s is None:
        raise f.fail("spec", "required field is missing")
    f.seen.add("status")
    f.done()
    rec: Record
    if kind == "Agent":
        rec = _agent(meta, s)
    elif kind == "ServiceIdentity":
        rec = _service(meta, s)
    elif kind == "LLMProvider":
        rec = _provider(meta, s)
    elif kind == "MCPServer":
        rec = _mcp(meta, s)
    else:
        rec = _policy(meta, s, read_file)
    s.done()
    return rec
