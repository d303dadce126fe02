"""The delegation chain of a call: who it is for, and who passed it on.

An agent that calls onward on someone's behalf sends the per-hop token it
received in `x-manul-delegation`. That token must be one this decision point
(or a Manul issuer it trusts) minted: ES256, signature from the issuer's
keys, unexpired, and with `aud` naming the caller itself, so a token only
works for the agent it was minted for. Its `sub` is the original subject
and its `act` chain the actors before the caller.

    A calls B                            chain [A]           depth 0  (no token)
    B calls C with T1 (sub A)            chain [A, B]        depth 1
    C calls D with T2 (sub A, act B)     chain [A, B, C]     depth 2
    D calls E with T3 (act C, act B)     chain [A, B, C, D]  depth 3

`delegation_depth` is how many agents have acted on the subject's behalf,
the caller included; 0 for a direct call.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any

from joserfc import jwt
from joserfc.errors import JoseError
from joserfc.jwk import ECKey

from agent.decision.errors import DelegationError, IdentityError
from agent.decision.identity import peek_jwt
from agent.decision.jwks import JWKSCache
from agent.decision.tokens import ALG, KeyRing, unnest_actors

DELEGATION_HEADER = "x-manul-delegation"


@dataclass(frozen=True)
class Chain:
    subject: str
    prior: tuple[str, ...]  # actors between subject and caller, oldest first
    caller: str
    delegated: bool
    token_id: str = ""

    @property
    def depth(self) -> int:
        return len(self.prior) + 1 if self.delegated else 0

    @property
    def members(self) -> list[str]:
        out: list[str] = []
        for m in (self.subject, *self.prior, self.caller):
            if m not in out:
                out.append(m)
        return out

    def next_actors(self) -> list[str]:
        """The `act` chain of the token minted for this call, most recent first."""
        if not self.delegated:
            return []
        return [self.caller, *reversed(self.prior)]


def direct(caller: str) -> Chain:
    return Chain(subject=caller, prior=(), caller=caller, delegated=False)


class DelegationVerifier:
    def __init__(self, keys: KeyRing, issuer: str, *, trusted: Mapping[str, str] = {},
                 jwks: JWKSCache | None = None, leeway: int = 30,
                 clock: Callable[[], float] = time.time) -> None:
        """`trusted`: other Manul issuers -> their JWKS URL."""
        self.keys = keys
        self.issuer = issuer
        self.trusted = dict(trusted)
        self.jwks = jwks
        self.leeway = leeway
        self.clock = clock

    def _key(self, iss: str, kid: str) -> ECKey:
        if iss == self.issuer:
            key = self.keys.public_key(kid)
            if key is None:
                raise DelegationError(f"delegation token: no key `{kid}` of this issuer")
            return key
        uri = self.trusted.get(iss)
        if uri is None or self.jwks is None:
            raise DelegationError(f"delegation token: issuer `{iss}` is not trusted")
        try:
            found = self.jwks.key_for(iss, uri, kid)
        except IdentityError as e:
            raise DelegationError(f"delegation token: {e}") from e
        if not isinstance(found, ECKey):
            raise DelegationError(f"delegation token: key `{kid}` is not an EC key")
        return found

    def chain(self, token: str, caller: str, caller_audience: str) -> Chain:
        peeked = peek_jwt(token)
        if peeked is None:
            raise DelegationError("delegation token: not a JWT")
        header, unverified = peeked
        if header.get("alg") != ALG:
            raise DelegationError(f"delegation token: algorithm `{header.get('alg')}` is "
                                  f"refused; only {ALG}")
        iss, kid = unverified.get("iss"), header.get("kid")
        if not isinstance(iss, str) or not isinstance(kid, str):
            raise DelegationError("delegation token: no `iss` or `kid`")
        try:
            claims: dict[str, Any] = dict(jwt.decode(token, self._key(iss, kid),
                                                     algorithms=[ALG]).claims)
        except JoseError as e:
            raise DelegationError(f"delegation token: {e.description or e.error}") from e
        now = self.clock()
        exp = claims.get("exp")
        if not isinstance(exp, int) or exp + self.leeway < now:
            raise DelegationError("delegation token: expired")
        if claims.get("aud") != caller_audience:
            raise DelegationError(f"delegation token: minted for `{claims.get('aud')}`, "
                                  f"not for the caller `{caller_audience}`")
        sub = claims.get("sub")
        if not isinstance(sub, str) or not sub:
            raise DelegationError("delegation token: no `sub`")
        try:
            actors = unnest_actors(claims.get("act"))
        except ValueError as e:
            raise DelegationError(f"delegation token: {e}") from e
        return Chain(subject=sub, prior=tuple(reversed(actors)), caller=caller,
                     delegated=True, token_id=str(claims.get("jti", "")))
