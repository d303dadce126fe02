"""The signing keys of OIDC issuers: fetched, cached, refreshed on an unknown `kid`.

`JWKSCache.key_for(issuer, jwks_uri, kid, alg)` returns the public key a
token names. Keys come from the registration's `jwksUri`, or from OIDC
discovery (`<issuer>/.well-known/openid-configuration`, whose `issuer` must
equal the one asked for). A key set is refetched when it is older than
`max_age`, and when a token names a `kid` the cached set lacks (a rotation
at the issuer), at most once per `min_refresh` seconds per issuer so forged
kids cannot make the node hammer the issuer. Symmetric (`oct`) keys and
keys marked for encryption are dropped on import: a JWKS never yields an
HMAC secret.

A decision running on the gRPC event loop must never wait on the network:
inside `no_fetch()`, a lookup that would fetch raises `FetchNeeded`
instead, and the caller runs that one decision again on a thread
(`agent.decision.front`).

Kubernetes service-account tokens are one such issuer: when the JWKS lives
on the API server (`kubernetes.default.svc`) and this process runs in a pod,
the fetch presents the pod's own token and trusts the cluster CA.
"""

from __future__ import annotations

import json
import logging
import os
import ssl
import threading
import time
import urllib.error
import urllib.request
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from urllib.parse import urlsplit

from joserfc.errors import JoseError
from joserfc.jwk import ECKey, KeySet, OKPKey, RSAKey

from agent.decision.errors import IdentityError

log = logging.getLogger(__name__)

KUBE_SA_DIR = Path("/var/run/secrets/kubernetes.io/serviceaccount")
KUBE_API_HOSTS = ("kubernetes.default.svc", "kubernetes.default.svc.cluster.local",
                  "kubernetes.default", "kubernetes")
MAX_JWKS_BYTES = 1 << 20

_thread = threading.local()


class FetchNeeded(Exception):
    """A key set must be fetched, and this thread may not wait for it (`no_fetch`)."""


@contextmanager
def no_fetch() -> Iterator[None]:
    """On this thread, raise `FetchNeeded` instead of fetching a key set."""
    before = getattr(_thread, "no_fetch", False)
    _thread.no_fetch = True
    try:
        yield
    finally:
        _thread.no_fetch = before


def _may_fetch(uri: str) -> None:
    if getattr(_thread, "no_fetch", False):
        raise FetchNeeded(uri)

PublicKey = RSAKey | ECKey | OKPKey
Fetch = Callable[[str], bytes]


def loopback_or_tls(uri: str) -> bool:
    u = urlsplit(uri)
    return u.scheme == "https" or (u.scheme == "http" and u.hostname in (
        "127.0.0.1", "::1", "localhost"))


class HttpFetcher:
    """GET with a timeout, a size cap, an optional extra CA, and in-pod Kubernetes auth."""

    def __init__(self, timeout: float = 5.0, ca_file: str | None = None,
                 kube_dir: Path = KUBE_SA_DIR) -> None:
        self.timeout = timeout
        self.ca_file = ca_file
        self.kube_dir = kube_dir

    def kube_credentials(self, uri: str) -> tuple[str, str] | None:
        """(bearer token, CA file) when `uri` is this cluster's API server and we run in a pod."""
        host = urlsplit(uri).hostname or ""
        api_host = os.environ.get("KUBERNETES_SERVICE_HOST", "")
        if host not in KUBE_API_HOSTS and not (api_host and host == api_host):
            return None
        token, ca = self.kube_dir / "token", self.kube_dir / "ca.crt"
        if not token.is_file() or not ca.is_file():
            return None
        return token.read_text().strip(), str(ca)

    def __call__(self, uri: str) -> bytes:
        if not loopback_or_tls(uri):
            raise IdentityError(f"refusing to fetch keys from `{uri}`: not https:// "
                                "(http:// only on loopback)")
        headers = {"Accept": "application/json"}
        ctx = ssl.create_default_context(cafile=self.ca_file) if uri.startswith(
            "https://") else None
        kube = self.kube_credentials(uri)
        if kube is not None:
            headers["Authorization"] = f"Bearer {kube[0]}"
            ctx = ssl.create_default_context(cafile=kube[1])
        req = urllib.request.Request(uri, headers=headers)
        try:
            with urllib.request.urlopen(req, timeout=self.timeout, context=ctx) as resp:
                data: bytes = resp.read(MAX_JWKS_BYTES + 1)
        except (urllib.error.URLError, OSError, ValueError) as e:
            raise IdentityError(f"cannot fetch `{uri}`: {e}") from e
        if len(data) > MAX_JWKS_BYTES:
            raise IdentityError(f"`{uri}` answered more than {MAX_JWKS_BYTES} bytes")
        return data


@dataclass
class _Entry:
    keys: dict[str, PublicKey]  # kid -> key ("" for keys without a kid)
    fetched: float
    forced: float  # last refetch caused by an unknown kid
    lock: threading.Lock = field(default_factory=threading.Lock)


def import_public_keys(data: bytes, source: str) -> dict[str, PublicKey]:
    try:
        doc = json.loads(data)
    except ValueError as e:
        raise IdentityError(f"`{source}` is not a JSON Web Key Set: {e}") from e
    if not isinstance(doc, dict) or not isinstance(doc.get("keys"), list):
        raise IdentityError(f"`{source}` is not a JSON Web Key Set: no `keys` list")
    out: dict[str, PublicKey] = {}
    for raw in doc["keys"]:
        if not isinstance(raw, dict) or raw.get("kty") not in ("RSA", "EC", "OKP"):
            continue  # oct (HMAC) keys are never accepted from a key set
        if raw.get("use", "sig") != "sig":
            continue
        public = {k: v for k, v in raw.items() if k not in ("d", "p", "q", "dp", "dq", "qi")}
        try:
            key = KeySet.import_key_set({"keys": [public]}).keys[0]
        except (JoseError, ValueError, TypeError) as e:
            log.warning("%s: skipping a key that does not import: %s", source, e)
            continue
        assert isinstance(key, RSAKey | ECKey | OKPKey)
        out[str(raw.get("kid", ""))] = key
    return out


class JWKSCache:
    def __init__(self, fetch: Fetch | None = None, *, min_refresh: float = 30.0,
                 max_age: float = 3600.0, clock: Callable[[], float] = time.monotonic) -> None:
        self.fetch = fetch or HttpFetcher()
        self.min_refresh = min_refresh
        self.max_age = max_age
        self.clock = clock
        self._entries: dict[str, _Entry] = {}
        self._lock = threading.Lock()
        self._discovered: dict[str, str] = {}
        self._discovery_failed: dict[str, tuple[float, str]] = {}  # issuer -> (when, why)

    def jwks_uri(self, issuer: str, configured: str) -> str:
        if configured:
            return configured
        found = self._discovered.get(issuer)
        if found:
            return found
        failed = self._discovery_failed.get(issuer)
        if failed is not None and self.clock() - failed[0] < self.min_refresh:
            raise IdentityError(failed[1])  # at most one attempt per min_refresh
        url = issuer.rstrip("/") + "/.well-known/openid-configuration"
        _may_fetch(url)
        try:
            uri = self._discover(issuer, url)
        except IdentityError as e:
            self._discovery_failed[issuer] = (self.clock(), str(e))
            raise
        self._discovery_failed.pop(issuer, None)
        self._discovered[issuer] = uri
        return uri

    def _discover(self, issuer: str, url: str) -> str:
        try:
            doc = json.loads(self.fetch(url))
        except ValueError as e:
            raise IdentityError(f"issuer `{issuer}`: discovery document is not JSON") from e
        if not isinstance(doc, dict) or doc.get("issuer") != issuer:
            raise IdentityError(f"issuer `{issuer}`: discovery names a different issuer")
        uri = doc.get("jwks_uri")
        if not isinstance(uri, str) or not loopback_or_tls(uri):
            raise IdentityError(f"issuer `{issuer}`: discovery gives no usable `jwks_uri`")
        return uri

    def _entry(self, uri: str) -> _Entry:
        with self._lock:
            e = self._entries.get(uri)
            if e is None:
                e = self._entries[uri] = _Entry({}, fetched=-1e18, forced=-1e18)
            return e

    def _refresh(self, uri: str, e: _Entry, *, forced: bool) -> None:
        now = self.clock()
        if forced and now - e.forced < self.min_refresh:
            return
        _may_fetch(uri)
        if forced:
            e.forced = now
        try:
            e.keys = import_public_keys(self.fetch(uri), uri)
            e.fetched = now
        except IdentityError:
            if not e.keys:
                raise
            log.warning("keeping the cached keys of %s: refresh failed", uri, exc_info=True)

    def key_for(self, issuer: str, configured_uri: str, kid: str) -> PublicKey:
        uri = self.jwks_uri(issuer, configured_uri)
        e = self._entry(uri)
        if getattr(_thread, "no_fetch", False):
            # on the event loop: never wait for another thread's fetch either
            if not e.lock.acquire(blocking=False):
                raise FetchNeeded(uri)
        else:
            e.lock.acquire()
        try:
            if self.clock() - e.fetched > self.max_age:
                self._refresh(uri, e, forced=False)
            key = _pick(e.keys, kid)
            if key is None:
                self._refresh(uri, e, forced=True)
                key = _pick(e.keys, kid)
        finally:
            e.lock.release()
        if key is None:
            raise IdentityError(f"issuer `{issuer}` has no key `{kid}`")
        return key


def _pick(keys: dict[str, PublicKey], kid: str) -> PublicKey | None:
    """The key named `kid`; a token without a kid may only use a set of one key."""
    if kid:
        return keys.get(kid)
    return next(iter(keys.values())) if len(keys) == 1 else None
