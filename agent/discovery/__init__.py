"""Discovery: which workloads talk to which LLM providers, seen from TLS handshakes.

Public surface so far: `parse_client_hello` / `looks_like_client_hello` and
the `ClientHello` they produce, the JA4 fingerprint functions, and the
provider `Catalog`. The kernel capture (`bpf/tls.bpf.c`), attribution and
classification build on these; `docs/discovery.md` describes the whole.
"""

from agent.discovery.catalog import BUILTIN, Catalog, Match, Provider, validate_pattern
from agent.discovery.clienthello import (
    ClientHello,
    is_grease,
    looks_like_client_hello,
    normalize_hostname,
    parse_client_hello,
)
from agent.discovery.errors import CatalogError, ClientHelloError
from agent.discovery.ja4 import ja4, ja4_o, ja4_r, ja4_ro

__all__ = [
    "BUILTIN", "Catalog", "CatalogError", "ClientHello", "ClientHelloError", "Match",
    "Provider", "is_grease", "ja4", "ja4_o", "ja4_r", "ja4_ro", "looks_like_client_hello",
    "normalize_hostname", "parse_client_hello", "validate_pattern",
]
