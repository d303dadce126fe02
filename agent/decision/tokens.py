"""Per-hop credentials: ES256 JWTs minted on allow, and the keys that sign them.

A minted token says: this call, from the caller, on behalf of the original
subject, to exactly one destination, for at most two minutes:

    header  {"alg": "ES256", "typ": "JWT", "kid": <RFC 7638 thumbprint>}
    claims  iss  the decision point's issuer URL
            sub  the original subject's registry key
            aud  the destination (its URL, else `manul:<Kind>/<key>`)
            act  the delegation chain so far, RFC 8693 style: {"sub": <caller>,
                 "act": {"sub": <previous actor>, ...}}; absent on a direct call
            iat, nbf, exp (exp - iat <= 120 s), jti (random, 128 bits)
            manul_action, manul_resource: what was allowed, for the destination's logs

`KeyRing` holds the signing key, the next one (already published, so a
verifier with a cached JWKS knows it before it signs anything) and retired
ones, kept and published until every token they signed has expired: a
rotation never strands a token in flight. With a `path`, the ring is saved
(mode 0600) and reloaded, so a restart does not strand them either.
"""

from __future__ import annotations

import base64
import functools
import json
import os
import secrets
import threading
import time
from collections import OrderedDict
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.hazmat.primitives.asymmetric.utils import decode_dss_signature
from joserfc.errors import JoseError
from joserfc.jwk import ECKey

from agent.decision.errors import TokenError

MAX_LIFETIME = 120
ALG = "ES256"


def _b64(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode()


@functools.lru_cache(maxsize=16)
def _header(kid: str) -> str:
    return _b64(json.dumps({"alg": ALG, "typ": "JWT", "kid": kid},
                           separators=(",", ":")).encode())


@dataclass(frozen=True)
class RingKey:
    key: ECKey
    created: float
    retired: float | None = None

    @property
    def kid(self) -> str:
        return str(self.key.kid)


@dataclass(frozen=True)
class _State:
    current: RingKey
    next: RingKey
    retired: tuple[RingKey, ...]


def _new_key(now: float) -> RingKey:
    key = ECKey.generate_key("P-256", auto_kid=True)
    return RingKey(key, now)


class KeyRing:
    def __init__(self, *, rotate_every: float = 3600.0, keep_for: float = MAX_LIFETIME + 60,
                 path: str | Path | None = None, clock: Callable[[], float] = time.time) -> None:
        self.rotate_every = rotate_every
        self.keep_for = keep_for  # how long a retired key stays: >= token lifetime + leeway
        self.path = Path(path) if path else None
        self.clock = clock
        self._lock = threading.Lock()
        self.changes = 0  # counts rotations and prunes: a replica must follow
        loaded = self._load() if self.path and self.path.exists() else None
        now = clock()
        self._state = loaded or _State(_new_key(now), _new_key(now), ())
        if loaded is None:
            self._save()

    @property
    def current(self) -> RingKey:
        return self._state.current

    def rotate(self) -> None:
        """The next key signs from now on; the current one retires but stays published."""
        with self._lock:
            now = self.clock()
            s = self._state
            old = RingKey(s.current.key, s.current.created, now)
            keep = tuple(k for k in s.retired if k.retired is not None
                         and now - k.retired < self.keep_for)
            self._state = _State(RingKey(s.next.key, now), _new_key(now), (old, *keep))
            self.changes += 1
            self._save()

    def maybe_rotate(self) -> bool:
        if self.clock() - self._state.current.created >= self.rotate_every:
            self.rotate()
            return True
        self._prune()
        return False

    def _prune(self) -> None:
        now = self.clock()
        s = self._state
        keep = tuple(k for k in s.retired
                     if k.retired is not None and now - k.retired < self.keep_for)
        if len(keep) != len(s.retired):
            with self._lock:
                self._state = _State(s.current, s.next, keep)
                self.changes += 1
                self._save()

    def public_key(self, kid: str) -> ECKey | None:
        s = self._state
        for k in (s.current, s.next, *s.retired):
            if k.kid == kid:
                return ECKey.import_key(k.key.as_dict(private=False))
        return None

    def jwks(self) -> dict[str, Any]:
        s = self._state
        keys = []
        for k in (s.current, s.next, *s.retired):
            d = k.key.as_dict(private=False)
            d.update({"kid": k.kid, "use": "sig", "alg": ALG})
            keys.append(d)
        return {"keys": keys}

    def sign(self, claims: dict[str, Any]) -> str:
        """A compact JWS (RFC 7515) over `claims`, ES256 with the current key.

        Written out rather than through joserfc.jwt.encode, which costs several
        times the signature itself on this hot path; tests verify every minted
        token with joserfc against the published JWKS.
        """
        k = self._state.current
        priv = k.key.private_key
        if not isinstance(priv, ec.EllipticCurvePrivateKey):
            raise TokenError(f"key `{k.kid}` has no private part")
        header = _header(k.kid)
        body = _b64(json.dumps(claims, separators=(",", ":")).encode())
        signing_input = f"{header}.{body}".encode()
        r, s = decode_dss_signature(priv.sign(signing_input, ec.ECDSA(hashes.SHA256())))
        return f"{header}.{body}.{_b64(r.to_bytes(32, 'big') + s.to_bytes(32, 'big'))}"

    # -- persistence -------------------------------------------------------

    def document(self) -> dict[str, Any]:
        """The ring, private keys included, as saved (and as sent to a decision worker)."""
        s = self._state
        return {"keys": [{"jwk": k.key.as_dict(private=True), "created": k.created,
                          "retired": k.retired, "role": role}
                         for role, ks in (("current", [s.current]), ("next", [s.next]),
                                          ("retired", s.retired)) for k in ks]}

    @classmethod
    def replica(cls, doc: dict[str, Any]) -> KeyRing:
        """A ring that signs and verifies with the keys of another's `document()` and
        never rotates, prunes or saves by itself (a decision worker's)."""
        ring = cls.__new__(cls)
        ring.rotate_every = float("inf")
        ring.keep_for = float("inf")
        ring.path = None
        ring.clock = time.time
        ring._lock = threading.Lock()
        ring._state = _parse(doc, "the agent's signing keys")
        ring.changes = 0
        return ring

    def replace(self, doc: dict[str, Any]) -> None:
        """Take the keys of another ring's `document()` (a replica follows its agent)."""
        state = _parse(doc, "the agent's signing keys")
        with self._lock:
            self._state = state
            self.changes += 1

    def _save(self) -> None:
        if self.path is None:
            return
        doc = self.document()
        self.path.parent.mkdir(parents=True, exist_ok=True)
        tmp = self.path.with_name(self.path.name + ".tmp")
        try:
            fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
            with os.fdopen(fd, "w") as f:
                json.dump(doc, f)
            os.replace(tmp, self.path)
        except OSError as e:
            raise TokenError(f"{self.path}: cannot save the signing keys: {e.strerror}") from e

    def _load(self) -> _State | None:
        assert self.path is not None
        try:
            doc = json.loads(self.path.read_text())
        except (OSError, ValueError) as e:
            raise TokenError(f"{self.path}: cannot load the signing keys: {e}") from e
        return _parse(doc, str(self.path))


def _parse(doc: Any, where: str) -> _State:
    try:
        by_role: dict[str, list[RingKey]] = {"current": [], "next": [], "retired": []}
        for item in doc["keys"]:
            key = ECKey.import_key(item["jwk"])
            key.ensure_kid()
            by_role[item["role"]].append(RingKey(key, float(item["created"]),
                                                 item["retired"]))
    except (ValueError, KeyError, TypeError, JoseError) as e:
        raise TokenError(f"{where}: cannot load the signing keys: {e}") from e
    if len(by_role["current"]) != 1 or len(by_role["next"]) != 1:
        raise TokenError(f"{where}: expected one current and one next key")
    return _State(by_role["current"][0], by_role["next"][0], tuple(by_role["retired"]))


def nest_actors(actors: Sequence[str]) -> dict[str, Any] | None:
    """RFC 8693 `act` from actors, most recent first."""
    act: dict[str, Any] | None = None
    for a in reversed(actors):
        act = {"sub": a, "act": act} if act else {"sub": a}
    return act


def unnest_actors(act: Any, limit: int = 32) -> list[str]:
    """Actors from an `act` claim, most recent first; ValueError when malformed."""
    out: list[str] = []
    while act is not None:
        if not isinstance(act, dict) or not isinstance(act.get("sub"), str) or len(out) >= limit:
            raise ValueError("malformed `act` claim")
        out.append(act["sub"])
        act = act.get("act")
    return out


class TokenMinter:
    """Mints per-hop tokens, and reuses a fresh one for the same hop.

    A token says who (subject and chain), to whom (audience) and what
    (action, resource); the same allowed call made again within `reuse_for`
    seconds of a token's `iat` gets that same token (so the same `jti`),
    which then has at least `lifetime - reuse_for` seconds left: signing is
    a third of a decision's cost, and an agent calls the same tool again
    and again. Every call is still decided; only an allowed one gets a
    token, and a token is never shared between two hops that differ in any
    claim, nor across a key rotation or an issuer change. `reuse_for=0`
    mints one per call.
    """

    def __init__(self, keys: KeyRing, issuer: str, lifetime: int = MAX_LIFETIME,
                 clock: Callable[[], float] = time.time, *, reuse_for: int | None = None,
                 cache_size: int = 4096) -> None:
        if not 0 < lifetime <= MAX_LIFETIME:
            raise TokenError(f"token lifetime `{lifetime}` s: must be 1..{MAX_LIFETIME} s")
        self.keys = keys
        self.issuer = issuer
        self.lifetime = lifetime
        self.clock = clock
        self.reuse_for = lifetime // 4 if reuse_for is None else reuse_for
        if not 0 <= self.reuse_for < lifetime:
            raise TokenError(f"token reuse `{self.reuse_for}` s: must be below the "
                             f"lifetime ({lifetime} s)")
        self._cache: OrderedDict[tuple[Any, ...], tuple[str, dict[str, Any]]] = OrderedDict()
        self._cache_size = cache_size
        self._lock = threading.Lock()
        self.reused = 0

    def mint(self, *, subject: str, audience: str, actors: Sequence[str], action: str,
             resource: str) -> tuple[str, dict[str, Any]]:
        now = int(self.clock())
        key = (self.keys.current.kid, self.issuer, subject, audience, tuple(actors), action,
               resource)
        if self.reuse_for:
            with self._lock:
                hit = self._cache.get(key)
                if hit is not None and 0 <= now - hit[1]["iat"] < self.reuse_for:
                    self._cache.move_to_end(key)
                    self.reused += 1
                    return hit
        claims: dict[str, Any] = {
            "iss": self.issuer, "sub": subject, "aud": audience, "iat": now, "nbf": now,
            "exp": now + self.lifetime, "jti": secrets.token_urlsafe(16),
            "manul_action": action, "manul_resource": resource}
        act = nest_actors(actors)
        if act is not None:
            claims["act"] = act
        minted = self.keys.sign(claims), claims
        if self.reuse_for:
            with self._lock:
                self._cache[key] = minted
                self._cache.move_to_end(key)
                if len(self._cache) > self._cache_size:
                    self._cache.popitem(last=False)
        return minted
