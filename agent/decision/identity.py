"""Who is calling: exactly one authentication mechanism per call, as registered.

A caller's registry record names its mechanism (`spec.authentication`):

- `spiffe`: the SPIFFE ID the proxy took from the mTLS peer
  (`attributes.source.principal`). With `include_peer_certificate` the
  certificate is checked too: the ID must be one of its URI SANs.
- `oidc`: a JWT bearer token (`Authorization: Bearer`). Its unverified
  `iss`/`sub` only select the registration; then the registration's issuer
  is the allow-list (there is no "any issuer"), the signature is checked
  with that issuer's JWKS, `aud` must name one of the registered audiences
  (or the decision point's own), `exp` is required (small leeway), and only
  asymmetric algorithms pass: `none` and every HMAC `HS*` are refused, and
  the key's type must fit the algorithm. Kubernetes service-account tokens
  are this case with the cluster's issuer.
- `jwtMetadata`: the proxy's `jwt_authn` filter verified the token and put
  its payload in `metadata_context`; `iss`/`sub` select the registration,
  and `exp`/`aud` are checked again.

Each presented credential is tried against the registration it claims, and
counts only if that registration names its mechanism. A credential that
claims a registration and fails verification denies the call (a forgery is
not "no credential"); two credentials naming two callers deny it too.
A non-JWT bearer (an API key for the upstream) is simply not an identity.
"""

from __future__ import annotations

import base64
import binascii
import json
import re
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import Any
from urllib.parse import unquote

from cryptography import x509
from joserfc import jwt
from joserfc.errors import JoseError
from joserfc.jwk import ECKey, OKPKey, RSAKey

from agent.decision.checkrequest import Incoming
from agent.decision.errors import IdentityError
from agent.decision.jwks import JWKSCache, PublicKey
from agent.registry import Authentication, Caller, Identity, IdentityKind, Registry

SPIFFE_RE = re.compile(r"^spiffe://[a-z0-9._-]+(/[A-Za-z0-9._-]+)*$")
ALGORITHMS: dict[str, tuple[type[PublicKey], str | None]] = {
    "RS256": (RSAKey, None), "RS384": (RSAKey, None), "RS512": (RSAKey, None),
    "PS256": (RSAKey, None), "PS384": (RSAKey, None), "PS512": (RSAKey, None),
    "ES256": (ECKey, "P-256"), "ES384": (ECKey, "P-384"), "ES512": (ECKey, "P-521"),
    "EdDSA": (OKPKey, "Ed25519"),
}
MAX_TOKEN = 16384


@dataclass(frozen=True)
class Authenticated:
    caller: Caller
    mechanism: Authentication
    presented: str  # the SPIFFE ID, or `issuer#subject`
    claims: Mapping[str, Any] = field(default_factory=dict)  # verified JWT claims


class CallerIndex:
    """(kind, issuer, value) -> (caller, the identity it registered), for one snapshot."""

    def __init__(self, reg: Registry) -> None:
        self._by: dict[tuple[IdentityKind, str, str], tuple[Caller, Identity]] = {}
        for rec in reg.callers():
            for ident in rec.identities:
                self._by[(ident.kind, ident.issuer, ident.value)] = (rec, ident)
        self.issuers = frozenset(i for k, i, _ in self._by if k is IdentityKind.OIDC)

    def get(self, kind: IdentityKind, value: str,
            issuer: str = "") -> tuple[Caller, Identity] | None:
        return self._by.get((kind, issuer, value))


def _b64json(part: str) -> Any:
    pad = "=" * (-len(part) % 4)
    return json.loads(base64.urlsafe_b64decode(part + pad))


def peek_jwt(token: str) -> tuple[dict[str, Any], dict[str, Any]] | None:
    """Header and claims of a compact JWS, unverified; None if it is not one."""
    parts = token.split(".")
    if len(parts) != 3 or len(token) > MAX_TOKEN:
        return None
    try:
        header, claims = _b64json(parts[0]), _b64json(parts[1])
    except (ValueError, binascii.Error):
        return None
    if not isinstance(header, dict) or not isinstance(claims, dict):
        return None
    return header, claims


def bearer(inc: Incoming) -> str:
    scheme, _, value = inc.header("authorization").strip().partition(" ")
    return value.strip() if scheme.lower() == "bearer" else ""


def _spiffe_in_cert(spiffe: str, pem_urlencoded: str) -> bool:
    try:
        cert = x509.load_pem_x509_certificate(unquote(pem_urlencoded).encode())
        san = cert.extensions.get_extension_for_class(x509.SubjectAlternativeName)
    except (ValueError, x509.ExtensionNotFound):
        return False
    return spiffe in san.value.get_values_for_type(x509.UniformResourceIdentifier)


class Authenticator:
    def __init__(self, jwks: JWKSCache, *, audiences: tuple[str, ...] = ("manul",),
                 leeway: int = 30, jwt_metadata_key: str = "jwt_payload",
                 clock: Callable[[], float] = time.time) -> None:
        self.jwks = jwks
        self.audiences = audiences
        self.leeway = leeway
        self.jwt_metadata_key = jwt_metadata_key
        self.clock = clock

    def authenticate(self, inc: Incoming, callers: CallerIndex) -> Authenticated:
        found: list[Authenticated] = []
        notes: list[str] = []
        if inc.source_principal:
            self._spiffe(inc, callers, found, notes)
        payload = inc.jwt_payloads.get(self.jwt_metadata_key)
        if payload is not None:
            self._metadata(payload, callers, found, notes)
        token = bearer(inc)
        if token:
            self._oidc(token, callers, found, notes)
        keys = {a.caller.meta.key for a in found}
        if len(keys) > 1:
            raise IdentityError("credentials name more than one caller: "
                                + ", ".join(f"`{k}`" for k in sorted(keys)))
        if found:
            return found[0]
        if not notes:
            notes.append("no credential: no SPIFFE ID from mTLS, no bearer JWT, "
                         "no jwt_authn payload")
        raise IdentityError("; ".join(notes))

    @staticmethod
    def _registered(rec: Caller, mechanism: Authentication, presented: str,
                    notes: list[str]) -> bool:
        if rec.authentication is mechanism:
            return True
        how = f"`{rec.authentication.value}`" if rec.authentication else "no mechanism"
        notes.append(f"{presented} is registered to {rec.kind} `{rec.meta.key}`, which "
                     f"authenticates with {how}, not `{mechanism.value}`")
        return False

    def _spiffe(self, inc: Incoming, callers: CallerIndex, found: list[Authenticated],
                notes: list[str]) -> None:
        spiffe = inc.source_principal
        if not SPIFFE_RE.match(spiffe):
            notes.append(f"peer principal `{spiffe[:200]}` is not a SPIFFE ID")
            return
        hit = callers.get(IdentityKind.SPIFFE, spiffe)
        if hit is None:
            notes.append(f"SPIFFE ID `{spiffe}` is not registered")
            return
        rec = hit[0]
        if not self._registered(rec, Authentication.SPIFFE, f"SPIFFE ID `{spiffe}`", notes):
            return
        if inc.source_certificate and not _spiffe_in_cert(spiffe, inc.source_certificate):
            raise IdentityError(f"SPIFFE ID `{spiffe}` is not a URI SAN of the peer certificate")
        found.append(Authenticated(rec, Authentication.SPIFFE, spiffe))

    def _metadata(self, payload: Any, callers: CallerIndex, found: list[Authenticated],
                  notes: list[str]) -> None:
        if not isinstance(payload, dict) or not isinstance(payload.get("iss"), str) \
                or not isinstance(payload.get("sub"), str):
            raise IdentityError("the jwt_authn payload has no string `iss` and `sub`")
        iss, sub = payload["iss"], payload["sub"]
        hit = callers.get(IdentityKind.OIDC, sub, iss)
        presented = f"verified JWT `{iss}#{sub}`"
        if hit is None:
            notes.append(f"{presented} is not registered")
            return
        rec, ident = hit
        if not self._registered(rec, Authentication.JWT_METADATA, presented, notes):
            return
        self._claims(payload, ident, proxy_verified=True)
        found.append(Authenticated(rec, Authentication.JWT_METADATA, f"{iss}#{sub}", payload))

    def _oidc(self, token: str, callers: CallerIndex, found: list[Authenticated],
              notes: list[str]) -> None:
        peeked = peek_jwt(token)
        if peeked is None:
            notes.append("the bearer credential is not a JWT")
            return
        header, unverified = peeked
        iss, sub = unverified.get("iss"), unverified.get("sub")
        if not isinstance(iss, str) or not isinstance(sub, str):
            notes.append("the bearer JWT has no string `iss` and `sub`")
            return
        hit = callers.get(IdentityKind.OIDC, sub, iss)
        presented = f"bearer JWT `{iss}#{sub}`"
        if hit is None:
            why = "subject" if iss in callers.issuers else "issuer"
            notes.append(f"{presented}: the {why} is not registered")
            return
        rec, ident = hit
        if not self._registered(rec, Authentication.OIDC, presented, notes):
            return
        claims = self._verify(token, header, ident)
        found.append(Authenticated(rec, Authentication.OIDC, f"{iss}#{sub}", claims))

    def _verify(self, token: str, header: dict[str, Any], ident: Identity) -> dict[str, Any]:
        alg = header.get("alg")
        spec = ALGORITHMS.get(alg) if isinstance(alg, str) else None
        if spec is None or not isinstance(alg, str):
            raise IdentityError(f"token of `{ident.issuer}`: algorithm `{alg}` is refused; "
                                f"accepted: {', '.join(ALGORITHMS)}")
        kid = header.get("kid", "")
        if not isinstance(kid, str):
            raise IdentityError(f"token of `{ident.issuer}`: `kid` is not a string")
        key = self.jwks.key_for(ident.issuer, ident.jwks_uri, kid)
        key_type, curve = spec
        if not isinstance(key, key_type) or (curve and getattr(key, "curve_name", curve) != curve):
            raise IdentityError(f"token of `{ident.issuer}`: key `{kid}` does not fit "
                                f"algorithm `{alg}`")
        try:
            verified = jwt.decode(token, key, algorithms=[alg])
        except JoseError as e:
            raise IdentityError(f"token of `{ident.issuer}`: {e.description or e.error}") from e
        claims = dict(verified.claims)
        self._claims(claims, ident, proxy_verified=False)
        return claims

    def _claims(self, claims: Mapping[str, Any], ident: Identity, *,
                proxy_verified: bool) -> None:
        """iss/sub/exp/nbf/iat/aud; a payload the proxy verified need not carry `exp`."""
        now = int(self.clock())
        who = f"token of `{ident.issuer}`"
        if claims.get("iss") != ident.issuer or claims.get("sub") != ident.value:
            raise IdentityError(f"{who}: `iss`/`sub` do not match the registration")
        exp = claims.get("exp")
        if exp is None and not proxy_verified:
            raise IdentityError(f"{who}: no `exp` claim")
        if exp is not None and (not isinstance(exp, int | float) or exp + self.leeway < now):
            raise IdentityError(f"{who}: expired")
        nbf = claims.get("nbf")
        if nbf is not None and (not isinstance(nbf, int | float) or nbf - self.leeway > now):
            raise IdentityError(f"{who}: not valid yet (`nbf`)")
        iat = claims.get("iat")
        if iat is not None and (not isinstance(iat, int | float) or iat - self.leeway > now):
            raise IdentityError(f"{who}: issued in the future (`iat`)")
        if proxy_verified and not ident.audiences:
            return  # the proxy's jwt_authn checked the audiences it was configured with
        wanted = ident.audiences or self.audiences
        aud = claims.get("aud")
        got = [aud] if isinstance(aud, str) else aud if isinstance(aud, list) else []
        if not any(a in wanted for a in got):
            raise IdentityError(f"{who}: audience {got!r} is not one of {list(wanted)!r}")
