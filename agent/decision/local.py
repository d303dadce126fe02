"""A decision point without a server: for `manul check --local` and tests.

Same pipeline as the socket (`Incoming` from the same CheckRequest, the
same `DecisionPoint`), with an ephemeral signing key and the decision's
explanation kept: the Cedar request and the text of the policies that
decided it.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any

import cedarpy

from agent.decision.client import build_check_request
from agent.decision.decide import DecisionPoint, Outcome
from agent.decision.delegation import DelegationVerifier
from agent.decision.facts import NodeFacts
from agent.decision.identity import Authenticator
from agent.decision.jwks import JWKSCache
from agent.decision.sources import Sources
from agent.decision.tokens import KeyRing, TokenMinter
from agent.registry import FileSource
from agent.registry.policyset import PolicyFolder

LOCAL_ISSUER = "https://localhost/manul-check"


@dataclass(frozen=True)
class Explained:
    outcome: Outcome
    policy_text: dict[str, str]  # determining policy id -> its Cedar text
    policy_error: str


class LocalDecider:
    def __init__(self, registry: str | Path, policies: str | Path, *,
                 audiences: tuple[str, ...] = ("manul",), facts: NodeFacts | None = None,
                 jwks: JWKSCache | None = None) -> None:
        self.sources = Sources(FileSource(registry), PolicyFolder(policies))
        keys = KeyRing()
        jwks = jwks or JWKSCache()
        self.point = DecisionPoint(
            lambda: self.sources.snapshot,
            authenticator=Authenticator(jwks, audiences=audiences),
            delegation=DelegationVerifier(keys, LOCAL_ISSUER, jwks=jwks),
            minter=TokenMinter(keys, LOCAL_ISSUER), facts=facts)

    def explain(self, spec: dict[str, Any]) -> Explained:
        outcome = self.point.check_proto(build_check_request(spec))
        snap = self.sources.snapshot
        texts: dict[str, str] = {}
        if snap.policies is not None:
            for pid in outcome.policies:
                if pid in snap.policies.policies:
                    text = str(snap.policies.policy_set([pid]))
                    texts[pid] = cedarpy.format_policies(text, 88, 2).strip()
        return Explained(outcome, texts, snap.policy_error)
