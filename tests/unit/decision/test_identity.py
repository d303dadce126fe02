"""Caller identity: each mechanism accepted when registered, refused when not.

Tokens are real JWTs signed with real keys; the issuers' JWKS are served
over HTTP on 127.0.0.1 and fetched by the decision point.
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import json
import time
from typing import Any

import pytest
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import NameOID
from joserfc import jwt
from joserfc.jwk import ECKey, RSAKey

from agent.decision.checkrequest import BodyState, Incoming
from agent.decision.errors import IdentityError
from agent.decision.identity import Authenticator, CallerIndex
from agent.decision.jwks import HttpFetcher, JWKSCache
from agent.registry import Authentication, load_directory
from tests.unit.decision.authz_helpers import (
    ANALYST,
    IDP_ISSUER,
    K8S_ISSUER,
    Issuer,
    Running,
    mcp_call,
)

SUPPORT_SUB = "system:serviceaccount:support:support-bot"


def _b64(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode()


def _unsigned(header: dict[str, Any], claims: dict[str, Any]) -> str:
    return f"{_b64(json.dumps(header).encode())}.{_b64(json.dumps(claims).encode())}"


def _k8s_claims(**over: Any) -> dict[str, Any]:
    now = int(time.time())
    claims = {"iss": K8S_ISSUER, "sub": SUPPORT_SUB, "aud": ["manul"], "iat": now,
              "nbf": now, "exp": now + 600,
              "kubernetes.io": {"namespace": "support", "serviceaccount": {
                  "name": "support-bot", "uid": "5f6d"}, "pod": {"name": "support-bot-7d9"}}}
    claims.update(over)
    return claims


def _sign(key: ECKey | RSAKey, claims: dict[str, Any], **header: Any) -> str:
    alg = "ES256" if isinstance(key, ECKey) else "RS256"
    return jwt.encode({"alg": alg, "kid": key.kid, **header}, claims, key)


def test_kubernetes_service_account_token_accepted(running: Running,
                                                   issuers: dict[str, Issuer]) -> None:
    token = _sign(issuers["k8s"].keys[0], _k8s_claims())
    r = running.ask(mcp_call("get_balance", spiffe="", bearer=token))
    # authenticated as support/support-bot (oidc); the finance policy then denies it
    assert r["status"] == 403 and r["metadata"]["caller"] == "support/support-bot"
    llm = running.ask({"bearer": token, "url": "https://llm.ml.internal/v1/chat/completions",
                       "body": {"model": "llama-3.1-8b", "messages": []}})
    assert llm["allowed"], llm


@pytest.mark.parametrize(("change", "message"), [
    ({"exp": int(time.time()) - 120}, "expired"),
    ({"aud": ["someone-else"]}, "audience"),
    ({"nbf": int(time.time()) + 3600}, "not valid yet"),
    ({"exp": None}, "no `exp`"),
])
def test_bad_claims_refused(running: Running, issuers: dict[str, Issuer],
                            change: dict[str, Any], message: str) -> None:
    claims = {k: v for k, v in _k8s_claims(**change).items() if v is not None}
    r = running.ask(mcp_call("get_balance", spiffe="", bearer=_sign(issuers["k8s"].keys[0],
                                                                     claims)))
    assert r["status"] == 401 and message in r["body"]["reason"], r["body"]


def test_leeway_accepts_a_token_just_expired(running: Running,
                                             issuers: dict[str, Issuer]) -> None:
    claims = _k8s_claims(exp=int(time.time()) - 5)
    r = running.ask(mcp_call("get_balance", spiffe="", bearer=_sign(issuers["k8s"].keys[0],
                                                                     claims)))
    assert r["status"] == 403 and r["metadata"]["caller"] == "support/support-bot"


def test_forged_signature_refused(running: Running, issuers: dict[str, Issuer]) -> None:
    real = issuers["k8s"].keys[0]
    imposter = RSAKey.generate_key(2048)
    token = jwt.encode({"alg": "RS256", "kid": real.kid}, _k8s_claims(), imposter)
    r = running.ask(mcp_call("get_balance", spiffe="", bearer=token))
    assert r["status"] == 401 and "bad_signature" in r["body"]["reason"].replace(" ", "_")


def test_alg_none_refused(running: Running) -> None:
    token = _unsigned({"alg": "none", "typ": "JWT"}, _k8s_claims()) + "."
    r = running.ask(mcp_call("get_balance", spiffe="", bearer=token))
    assert r["status"] == 401 and "algorithm `none` is refused" in r["body"]["reason"]


def test_hmac_with_the_public_key_refused(running: Running,
                                          issuers: dict[str, Issuer]) -> None:
    """The classic confusion: HS256 keyed with the issuer's public key (which is public)."""
    key = issuers["k8s"].keys[0]
    pem = key.as_pem(private=False)
    signing_input = _unsigned({"alg": "HS256", "kid": key.kid}, _k8s_claims())
    sig = hmac.new(pem, signing_input.encode(), hashlib.sha256).digest()
    r = running.ask(mcp_call("get_balance", spiffe="", bearer=f"{signing_input}.{_b64(sig)}"))
    assert r["status"] == 401 and "algorithm `HS256` is refused" in r["body"]["reason"]


def test_unregistered_issuer_and_subject_refused(running: Running,
                                                 issuers: dict[str, Issuer]) -> None:
    key = issuers["k8s"].keys[0]
    other_iss = _sign(key, _k8s_claims(iss="https://evil.example.com"))
    r = running.ask(mcp_call("get_balance", spiffe="", bearer=other_iss))
    assert r["status"] == 401 and "the issuer is not registered" in r["body"]["reason"]
    other_sub = _sign(key, _k8s_claims(sub="system:serviceaccount:support:intruder"))
    r = running.ask(mcp_call("get_balance", spiffe="", bearer=other_sub))
    assert r["status"] == 401 and "the subject is not registered" in r["body"]["reason"]


def test_registration_audience_and_unknown_kid_refresh(running: Running,
                                                       issuers: dict[str, Issuer]) -> None:
    idp = issuers["idp"]
    now = int(time.time())
    claims = {"iss": IDP_ISSUER, "sub": "idp-agent", "aud": "gateway", "exp": now + 60}
    r = running.ask(mcp_call("get_balance", spiffe="", bearer=_sign(idp.keys[0], claims)))
    assert r["metadata"]["caller"] == "ops/idp-agent"
    # `manul` is the server default, but this registration lists only `gateway`
    r = running.ask(mcp_call("get_balance", spiffe="", bearer=_sign(
        idp.keys[0], dict(claims, aud="manul"))))
    assert r["status"] == 401
    # the issuer rotates: a token with a new kid makes the decision point refetch
    before = idp.fetches
    new_key = idp.add_key("EC")
    r = running.ask(mcp_call("get_balance", spiffe="", bearer=_sign(new_key, claims)))
    assert r["metadata"]["caller"] == "ops/idp-agent"
    assert idp.fetches == before + 1


def test_unknown_kid_refetch_is_rate_limited(issuers: dict[str, Issuer]) -> None:
    idp = issuers["idp"]
    clock = [1000.0]
    cache = JWKSCache(HttpFetcher(), min_refresh=30, clock=lambda: clock[0])
    cache.key_for(IDP_ISSUER, idp.jwks_uri, idp.keys[0].kid)
    before = idp.fetches
    for _ in range(5):
        with pytest.raises(IdentityError, match="has no key"):
            cache.key_for(IDP_ISSUER, idp.jwks_uri, "forged-kid")
    assert idp.fetches == before + 1
    clock[0] += 31
    with pytest.raises(IdentityError):
        cache.key_for(IDP_ISSUER, idp.jwks_uri, "forged-kid")
    assert idp.fetches == before + 2


def test_jwt_metadata_mechanism(running: Running) -> None:
    payload = {"iss": IDP_ISSUER, "sub": "reporter", "exp": int(time.time()) + 60}
    r = running.ask(mcp_call("get_balance", spiffe="", jwt_payload=payload))
    assert r["status"] == 403 and r["metadata"]["caller"] == "ops/reporter"
    stale = dict(payload, exp=int(time.time()) - 600)
    r = running.ask(mcp_call("get_balance", spiffe="", jwt_payload=stale))
    assert r["status"] == 401 and "expired" in r["body"]["reason"]
    # the idp-agent registration says oidc, so a proxy-verified payload is not accepted
    r = running.ask(mcp_call("get_balance", spiffe="",
                             jwt_payload={"iss": IDP_ISSUER, "sub": "idp-agent"}))
    assert r["status"] == 401 and "authenticates with `oidc`" in r["body"]["reason"]


def test_two_callers_in_one_request_refused(running: Running,
                                            issuers: dict[str, Issuer]) -> None:
    token = _sign(issuers["k8s"].keys[0], _k8s_claims())
    r = running.ask(mcp_call("get_balance", bearer=token))  # SPIFFE analyst + support-bot JWT
    assert r["status"] == 401 and "more than one caller" in r["body"]["reason"]


def test_api_key_bearer_is_not_an_identity(running: Running) -> None:
    r = running.ask(mcp_call("get_balance", bearer="sk-not-a-jwt"))
    assert r["allowed"] and r["metadata"]["caller"] == "finance/analyst"


def _cert(uri: str) -> str:
    key = ec.generate_private_key(ec.SECP256R1())
    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "workload")])
    now = time.time()
    import datetime as dt
    cert = (x509.CertificateBuilder().subject_name(name).issuer_name(name)
            .public_key(key.public_key()).serial_number(x509.random_serial_number())
            .not_valid_before(dt.datetime.fromtimestamp(now - 60, dt.UTC))
            .not_valid_after(dt.datetime.fromtimestamp(now + 3600, dt.UTC))
            .add_extension(x509.SubjectAlternativeName(
                [x509.UniformResourceIdentifier(uri)]), critical=False)
            .sign(key, hashes.SHA256()))
    return cert.public_bytes(serialization.Encoding.PEM).decode()


def test_spiffe_id_must_match_the_peer_certificate(running: Running) -> None:
    assert running.ask(mcp_call("get_balance", certificate=_cert(ANALYST)))["allowed"]
    r = running.ask(mcp_call("get_balance",
                             certificate=_cert("spiffe://cluster.local/ns/x/sa/other")))
    assert r["status"] == 401 and "not a URI SAN" in r["body"]["reason"]


def test_no_credential(running: Running) -> None:
    r = running.ask(mcp_call("get_balance", spiffe=""))
    assert r["status"] == 401 and "no credential" in r["body"]["reason"]


def test_authenticator_unit(folders: tuple[Any, Any], issuers: dict[str, Issuer]) -> None:
    reg = load_directory(folders[0])
    auth = Authenticator(JWKSCache(HttpFetcher()))
    inc = Incoming(headers={"authorization": "Bearer " + _sign(issuers["k8s"].keys[0],
                                                               _k8s_claims())},
                   body_state=BodyState.EMPTY)
    got = auth.authenticate(inc, CallerIndex(reg))
    assert got.mechanism is Authentication.OIDC
    assert got.claims["kubernetes.io"]["namespace"] == "support"


def test_kubernetes_jwks_fetch_uses_the_pod_credentials(tmp_path: Any) -> None:
    (tmp_path / "token").write_text("pod-token\n")
    (tmp_path / "ca.crt").write_text("")
    f = HttpFetcher(kube_dir=tmp_path)
    assert f.kube_credentials("https://kubernetes.default.svc/openid/v1/jwks") == (
        "pod-token", str(tmp_path / "ca.crt"))
    assert f.kube_credentials("https://idp.example.com/jwks") is None
    with pytest.raises(IdentityError, match="not https"):
        f("http://keys.example.com/jwks")
