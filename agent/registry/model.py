"""Registry records: what the platform knows about agents and services.

The records look like Kubernetes objects (`apiVersion: manul.dev/v1alpha1`,
`kind`, `metadata`, `spec`) in both backends, so a folder of YAML that works
on a host applies unchanged to a cluster as custom resources. This module
holds only the frozen dataclasses; `parse` turns dicts into them and the
backends (`files`, `kube`) produce them.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from enum import StrEnum

API_VERSION = "manul.dev/v1alpha1"


class IdentityKind(StrEnum):
    """How a caller or workload is recognised."""

    SERVICE_ACCOUNT = "serviceAccount"  # namespace/name of a pod's service account
    SPIFFE = "spiffe"  # spiffe://trust-domain/path (from the mTLS peer)
    OIDC = "oidc"  # issuer + subject of a verified JWT
    CGROUP = "cgroup"  # host mode: a cgroup v2 path relative to the root
    SYSTEMD_UNIT = "systemdUnit"  # host mode: a systemd unit name


@dataclass(frozen=True, slots=True)
class Identity:
    """One way a workload proves it is a given agent.

    `value` is the canonical string: `ns/name` for a service account, the
    SPIFFE ID, the subject for OIDC (with `issuer` set), a cgroup path
    (trailing `/*` matches the subtree) or a unit name.
    """

    kind: IdentityKind
    value: str
    issuer: str = ""
    audiences: tuple[str, ...] = ()
    # OIDC only: where the issuer's signing keys are; empty means OIDC
    # discovery at `<issuer>/.well-known/openid-configuration`.
    jwks_uri: str = ""

    def __str__(self) -> str:
        if self.kind is IdentityKind.OIDC:
            return f"oidc:{self.issuer}#{self.value}"
        return f"{self.kind.value}:{self.value}"


class Authentication(StrEnum):
    """The one mechanism the decision point accepts per call for a caller."""

    SPIFFE = "spiffe"
    OIDC = "oidc"
    JWT_METADATA = "jwtMetadata"  # the proxy's jwt_authn filter already verified it


# Risk levels an Agent or MCPServer may declare, least risky first. Cedar sees
# the level as `risk_level` and its 1-based rank as `risk_score`.
RISK_LEVELS = ("low", "medium", "high", "critical")


class SandboxMode(StrEnum):
    AUDIT = "audit"
    ENFORCE = "enforce"


@dataclass(frozen=True, slots=True)
class Meta:
    name: str
    namespace: str = ""
    labels: tuple[tuple[str, str], ...] = ()
    source: str = ""  # where the record came from: `file.yaml#2` or `ns/name`

    @property
    def key(self) -> str:
        return f"{self.namespace}/{self.name}" if self.namespace else self.name


@dataclass(frozen=True, slots=True)
class SandboxRef:
    """An agent's workloads are sandboxed in the kernel, and how.

    The policies are the node's one policy set (the `--policies` folder, or
    the Policy records), compiled for principal `Agent::"<key>"`.
    """

    mode: SandboxMode = SandboxMode.ENFORCE


class OnAnomaly(StrEnum):
    NONE = "none"
    QUARANTINE = "quarantine"


@dataclass(frozen=True, slots=True)
class BaselineRef:
    """What an agent's behavioural baseline does beyond reporting (agent/baseline).

    `on_anomaly: quarantine` cuts the workload's egress except the gateway
    when an anomaly is found; `credentials` adds path patterns (globs, `*`
    spans `/`) to the built-in credential catalogue for this agent.
    """

    on_anomaly: OnAnomaly = OnAnomaly.NONE
    credentials: tuple[str, ...] = ()


@dataclass(frozen=True, slots=True)
class Agent:
    meta: Meta
    owner: str = ""
    team: str = ""
    risk_level: str = "medium"
    classes: tuple[str, ...] = ()  # AgentClass memberships (Cedar parents)
    capabilities: tuple[str, ...] = ()
    groups: tuple[str, ...] = ()
    identities: tuple[Identity, ...] = ()
    authentication: Authentication | None = None
    sandbox: SandboxRef | None = None
    url: str = ""  # the agent's A2A endpoint, when other agents may call it
    baseline: BaselineRef = BaselineRef()
    kind: str = field(default="Agent", init=False)


@dataclass(frozen=True, slots=True)
class ServiceIdentity:
    """A non-agent caller (a batch job, a human-facing app) governed like an agent."""

    meta: Meta
    owner: str = ""
    team: str = ""
    groups: tuple[str, ...] = ()
    identities: tuple[Identity, ...] = ()
    authentication: Authentication | None = None
    kind: str = field(default="ServiceIdentity", init=False)


@dataclass(frozen=True, slots=True)
class LLMProvider:
    """An LLM API: its host names (wildcards `*.x`), and whether it is the gateway."""

    meta: Meta
    hosts: tuple[str, ...]
    gateway: bool = False  # these hosts are the governed path (the AI gateway)
    models: tuple[str, ...] = ()
    kind: str = field(default="LLMProvider", init=False)


@dataclass(frozen=True, slots=True)
class MCPServer:
    meta: Meta
    url: str = ""
    tools: tuple[str, ...] = ()
    tool_sets: tuple[tuple[str, tuple[str, ...]], ...] = ()  # set name -> tools
    owner: str = ""
    risk_level: str = "medium"
    kind: str = field(default="MCPServer", init=False)


@dataclass(frozen=True, slots=True)
class Policy:
    """Cedar policy text (inline, or read from `file` by the host backend).

    All Policy records together are the policy set in cluster mode (and on a
    host run without `--policies`): both the kernel sandboxes and the
    decision point enforce them. `entities` adds sets and class nesting.
    """

    meta: Meta
    cedar: str
    entities: str = ""  # optional Cedar entities JSON (sets, classes)
    kind: str = field(default="Policy", init=False)


Record = Agent | ServiceIdentity | LLMProvider | MCPServer | Policy
KINDS = ("Agent", "ServiceIdentity", "LLMProvider", "MCPServer", "Policy")
