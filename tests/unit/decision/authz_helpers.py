"""Helpers for the decision point tests: a local OIDC issuer, a registry, a server.

Everything is real and local: registry YAML in a temporary folder, the
example gateway policies, an OIDC issuer serving its JWKS over HTTP on
127.0.0.1, and a `DecisionServer` on a Unix socket in a temporary folder.
"""

from __future__ import annotations

import json
import threading
import time
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

from joserfc import jwt
from joserfc.jwk import ECKey, RSAKey
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter

from agent.decision.client import ask, build_check_request, response_summary
from agent.decision.facts import NodeFacts
from agent.decision.server import DecisionServer, ServerConfig
from agent.telemetry.tracing import make_provider

ROOT = Path(__file__).parents[3]
EXAMPLE_POLICIES = ROOT / "examples" / "policies"  # the one folder: kernel and gateway
K8S_ISSUER = "https://kubernetes.default.svc.cluster.local"
IDP_ISSUER = "https://idp.example.com"
ANALYST = "spiffe://cluster.local/ns/finance/sa/analyst"
PAYER = "spiffe://cluster.local/ns/finance/sa/payer"
FINANCE_MCP = "http://finance-tools.finance.svc:8080/mcp"


@dataclass
class Issuer:
    """An OIDC issuer on 127.0.0.1: its keys, its JWKS endpoint, a fetch counter."""

    name: str
    keys: list[ECKey | RSAKey] = field(default_factory=list)
    fetches: int = 0
    port: int = 0
    delay: float = 0.0  # seconds the JWKS endpoint takes to answer (a slow issuer)

    @property
    def jwks_uri(self) -> str:
        return f"http://127.0.0.1:{self.port}/{self.name}/jwks"

    def jwks(self) -> dict[str, Any]:
        self.fetches += 1
        return {"keys": [dict(k.as_dict(private=False), use="sig") for k in self.keys]}

    def add_key(self, kind: str = "EC") -> ECKey | RSAKey:
        key: ECKey | RSAKey = (ECKey.generate_key("P-256", auto_kid=True) if kind == "EC"
                               else RSAKey.generate_key(2048, auto_kid=True))
        self.keys.append(key)
        return key

    def token(self, issuer: str, sub: str, *, aud: str | list[str] = "manul",
              lifetime: int = 300, key: ECKey | RSAKey | None = None, **extra: Any) -> str:
        key = key or self.keys[0]
        alg = "ES256" if isinstance(key, ECKey) else "RS256"
        now = int(time.time())
        claims = {"iss": issuer, "sub": sub, "aud": aud, "iat": now, "exp": now + lifetime,
                  **extra}
        return jwt.encode({"alg": alg, "kid": key.kid}, claims, key)


class IssuerHTTP:
    def __init__(self, issuers: dict[str, Issuer]) -> None:
        class Handler(BaseHTTPRequestHandler):
            def log_message(self, format: str, *args: Any) -> None:
                return

            def do_GET(self) -> None:
                name = self.path.strip("/").split("/")[0]
                iss = issuers.get(name)
                if iss is None:
                    self.send_response(404)
                    self.end_headers()
                    return
                time.sleep(iss.delay)
                body = json.dumps(iss.jwks()).encode()
                self.send_response(200)
                self.send_header("Content-Type", "application/json")
                self.send_header("Content-Length", str(len(body)))
                self.end_headers()
                self.wfile.write(body)

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.port = self.server.server_address[1]
        for i in issuers.values():
            i.port = self.port
        self.thread = threading.Thread(target=self.server.serve_forever, daemon=True)
        self.thread.start()

    def close(self) -> None:
        self.server.shutdown()
        self.server.server_close()


def registry_yaml(issuers: dict[str, Issuer]) -> str:
    k8s, idp = issuers["k8s"], issuers["idp"]
    agents = [
        ("analyst", "finance", "medium", ["finance-agents"], "spiffe",
         f"- spiffe: {ANALYST}"),
        ("payer", "finance", "low", ["finance-agents"], "spiffe", f"- spiffe: {PAYER}"),
        ("risky", "finance", "high", ["finance-agents"], "spiffe",
         "- spiffe: spiffe://cluster.local/ns/finance/sa/risky"),
        ("support-bot", "support", "low", ["support-agents"], "oidc",
         f"- oidc: {{issuer: '{K8S_ISSUER}', subject: 'system:serviceaccount:support:"
         f"support-bot', audiences: [manul], jwksUri: '{k8s.jwks_uri}'}}"),
        ("reporter", "ops", "low", ["ops-agents"], "jwtMetadata",
         f"- oidc: {{issuer: '{IDP_ISSUER}', subject: reporter}}"),
        ("idp-agent", "ops", "low", ["ops-agents"], "oidc",
         f"- oidc: {{issuer: '{IDP_ISSUER}', subject: idp-agent, audiences: [gateway],"
         f" jwksUri: '{idp.jwks_uri}'}}"),
        ("spiffe-but-oidc", "ops", "low", [], "oidc",
         "- spiffe: spiffe://cluster.local/ns/ops/sa/spiffe-but-oidc"),
    ]
    agents += [(f"a{i}", "a2a", "medium", ["a2a-agents"], "spiffe",
                f"- spiffe: spiffe://cluster.local/ns/a2a/sa/a{i}") for i in range(1, 6)]
    docs = []
    for name, ns, risk, groups, authn, ident in agents:
        url = f"  url: http://{name}.{ns}.svc:9000/a2a\n" if ns == "a2a" else ""
        docs.append(
            f"apiVersion: manul.dev/v1alpha1\nkind: Agent\nmetadata: {{name: {name}, "
            f"namespace: {ns}}}\nspec:\n  riskLevel: {risk}\n  groups: {json.dumps(groups)}\n"
            f"  authentication: {authn}\n{url}  identities:\n    {ident}\n")
    docs.append(
        "apiVersion: manul.dev/v1alpha1\nkind: ServiceIdentity\nmetadata: {name: nightly, "
        "namespace: finance}\nspec:\n  authentication: spiffe\n  groups: [finance-agents]\n"
        "  identities:\n    - spiffe: spiffe://cluster.local/ns/finance/sa/nightly\n")
    docs.append(
        "apiVersion: manul.dev/v1alpha1\nkind: MCPServer\nmetadata: {name: finance-tools, "
        f"namespace: finance}}\nspec:\n  url: {FINANCE_MCP}\n  riskLevel: high\n"
        "  tools: [get_balance, list_transactions, transfer_funds]\n"
        "  toolSets:\n    read-only: [get_balance, list_transactions]\n"
        "    payments: [transfer_funds]\n")
    docs.append(
        "apiVersion: manul.dev/v1alpha1\nkind: LLMProvider\nmetadata: {name: internal-vllm}\n"
        "spec:\n  hosts: [llm.ml.internal]\n  models: [llama-3.3-70b, llama-3.1-8b]\n")
    docs.append(
        "apiVersion: manul.dev/v1alpha1\nkind: LLMProvider\nmetadata: {name: openai}\n"
        "spec:\n  hosts: [api.openai.com]\n")
    return "---\n".join(docs)


@dataclass
class Running:
    server: DecisionServer
    spans: InMemorySpanExporter
    facts: NodeFacts
    audit: Path

    @property
    def socket(self) -> str:
        return str(self.server.config.socket)

    def ask(self, spec: dict[str, Any]) -> dict[str, Any]:
        return response_summary(ask(self.socket, build_check_request(spec)))


def start_server(tmp_path: Path, reg: Path, pol: Path, **overrides: Any) -> Running:
    spans = InMemorySpanExporter()
    facts = NodeFacts()
    audit = tmp_path / "audit.jsonl"
    cfg = ServerConfig(registry=reg, policies=pol, socket=tmp_path / "run" / "authz.sock",
                       http="127.0.0.1:0", audit_log=str(audit), reload_interval=0.05,
                       **overrides)
    server = DecisionServer(cfg, facts=facts,
                            tracer_provider=make_provider(exporter=spans, batch=False))
    server.start()
    return Running(server, spans, facts, audit)


def mcp_call(tool: str, spiffe: str = ANALYST, **extra: Any) -> dict[str, Any]:
    return {"spiffe": spiffe, "url": FINANCE_MCP, **extra,
            "body": {"jsonrpc": "2.0", "id": 1, "method": "tools/call",
                     "params": {"name": tool, "arguments": {}}}}
