"""Registry records and their backends (a folder of YAML, or Kubernetes CRs).

Public surface: the record types, `Registry` (an immutable snapshot with
lookups), `load_directory` and `FileSource` for the host backend.
"""

from agent.registry.files import FileSource, load_directory
from agent.registry.model import (
    API_VERSION,
    RISK_LEVELS,
    Agent,
    Authentication,
    Identity,
    IdentityKind,
    LLMProvider,
    MCPServer,
    Meta,
    Policy,
    Record,
    SandboxMode,
    SandboxRef,
    ServiceIdentity,
)
from agent.registry.parse import parse_record
from agent.registry.registry import Caller, Registry

__all__ = [
    "API_VERSION", "RISK_LEVELS", "Agent", "Authentication", "Caller", "FileSource", "Identity",
    "IdentityKind", "LLMProvider", "MCPServer", "Meta", "Policy", "Record", "Registry",
    "SandboxMode", "SandboxRef", "ServiceIdentity", "load_directory", "parse_record",
]
