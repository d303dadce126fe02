"""Per-hop tokens: verifiable with the published JWKS, one destination, short, rotating."""

from __future__ import annotations

import json
import os
import stat
import urllib.request
from pathlib import Path
from typing import Any

import pytest
from joserfc import jwt
from joserfc.errors import JoseError
from joserfc.jwk import KeySet

from agent.decision.delegation import DelegationVerifier
from agent.decision.errors import DelegationError, TokenError
from agent.decision.tokens import KeyRing, TokenMinter, nest_actors, unnest_actors
from tests.unit.decision.authz_helpers import FINANCE_MCP, Running, mcp_call


def _published(running: Running) -> KeySet:
    assert running.server.http is not None
    url = f"{running.server.issuer}/.well-known/jwks.json"
    with urllib.request.urlopen(url, timeout=5) as resp:
        return KeySet.import_key_set(json.loads(resp.read()))


def test_minted_token_verifies_with_published_jwks(running: Running) -> None:
    r = running.ask(mcp_call("get_balance"))
    token = r["headers"]["authorization"].removeprefix("Bearer ")
    keys = _published(running)
    verified = jwt.decode(token, keys, algorithms=["ES256"])
    c = verified.claims
    assert verified.header["alg"] == "ES256"
    assert c["iss"] == running.server.issuer
    assert c["sub"] == "finance/analyst"
    assert c["aud"] == FINANCE_MCP  # exactly one destination
    assert 0 < c["exp"] - c["iat"] <= 120
    assert c["jti"] and "act" not in c
    reg = jwt.JWTClaimsRegistry(aud={"essential": True, "value": FINANCE_MCP})
    reg.validate(c)
    other = jwt.JWTClaimsRegistry(aud={"essential": True, "value": "http://other.svc/mcp"})
    with pytest.raises(JoseError):
        other.validate(c)
    # discovery document points at the same keys
    with urllib.request.urlopen(f"{running.server.issuer}/.well-known/openid-configuration",
                                timeout=5) as resp:
        doc = json.loads(resp.read())
    assert doc["jwks_uri"].endswith("/.well-known/jwks.json")


def test_the_same_hop_reuses_its_fresh_token_and_no_other_does(running: Running) -> None:
    a = running.ask(mcp_call("get_balance"))["headers"]["authorization"]
    b = running.ask(mcp_call("get_balance"))["headers"]["authorization"]
    assert a == b  # the same allowed call again, seconds later: the same token
    c = running.ask(mcp_call("list_transactions"))["headers"]["authorization"]
    assert c != a  # another tool: another token (its claims name the tool)


def test_token_reuse_is_bounded_by_time_claims_and_keys() -> None:
    now = [1000.0]
    ring = KeyRing(clock=lambda: now[0])
    minter = TokenMinter(ring, "https://node/manul", lifetime=120, clock=lambda: now[0])
    assert minter.reuse_for == 30

    def mint(**over: Any) -> tuple[str, dict[str, Any]]:
        args: dict[str, Any] = {"subject": "s", "audience": "a", "actors": [], "action": "x",
                                "resource": "r", **over}
        return minter.mint(**args)

    first = mint()[0]
    assert mint()[0] == first
    for over in ({"subject": "t"}, {"audience": "b"}, {"actors": ["s"]}, {"action": "y"},
                 {"resource": "q"}):
        assert mint(**over)[0] != first, over
    now[0] += 29
    token, again = mint()
    assert token == first and again["exp"] - now[0] >= 120 - 30  # >= 90 s left
    now[0] += 1
    assert mint()[0] != first  # reused for 30 s at most
    latest = mint()[0]
    ring.rotate()
    assert mint()[0] != latest  # a new key signs a new token
    minter.issuer = "https://elsewhere/manul"
    assert jwt.decode(mint()[0], KeySet.import_key_set(ring.jwks())).claims["iss"] == \
        "https://elsewhere/manul"
    never = TokenMinter(ring, "iss", reuse_for=0, clock=lambda: now[0])
    assert never.mint(subject="s", audience="a", actors=[], action="x", resource="r")[0] != \
        never.mint(subject="s", audience="a", actors=[], action="x", resource="r")[0]
    with pytest.raises(TokenError):
        TokenMinter(ring, "iss", lifetime=60, reuse_for=60)


def test_act_chain_in_delegated_tokens(running: Running) -> None:
    token = ""
    for hop in (1, 2, 3):
        spec = {"spiffe": f"spiffe://cluster.local/ns/a2a/sa/a{hop}",
                "url": f"http://a{hop + 1}.a2a.svc:9000/a2a", "delegation": token,
                "body": {"jsonrpc": "2.0", "id": 1, "method": "message/send", "params": {}}}
        r = running.ask(spec)
        token = r["headers"]["authorization"].removeprefix("Bearer ")
    claims = jwt.decode(token, _published(running), algorithms=["ES256"]).claims
    assert claims["sub"] == "a2a/a1"
    assert claims["aud"] == "http://a4.a2a.svc:9000/a2a"
    assert claims["act"] == {"sub": "a2a/a3", "act": {"sub": "a2a/a2"}}


def test_rotation_keeps_tokens_in_flight_verifiable() -> None:
    now = [1000.0]
    ring = KeyRing(rotate_every=60, keep_for=150, clock=lambda: now[0])
    minter = TokenMinter(ring, "https://node/manul", clock=lambda: now[0])
    first_kid = ring.current.kid
    first_next = ring.jwks()["keys"][1]["kid"]
    old, _ = minter.mint(subject="s", audience="a", actors=[], action="x", resource="r")
    now[0] += 61
    assert ring.maybe_rotate()
    assert ring.current.kid == first_next  # the pre-published key signs now
    new, _ = minter.mint(subject="s", audience="a", actors=[], action="x", resource="r")
    published = KeySet.import_key_set(ring.jwks())
    for t in (old, new):
        jwt.decode(t, published, algorithms=["ES256"])
    verifier = DelegationVerifier(ring, "https://node/manul", clock=lambda: now[0])
    assert verifier.chain(old, "a", "a").subject == "s"
    now[0] += 151  # every token of the first key has expired by now
    assert ring.maybe_rotate()
    kids = {k["kid"] for k in ring.jwks()["keys"]}
    assert first_kid not in kids  # pruned: nothing it signed is still valid
    assert first_next in kids  # retired just now: `new` may still be in flight
    jwt.decode(new, KeySet.import_key_set(ring.jwks()), algorithms=["ES256"])


def test_keys_persist_across_restarts(tmp_path: Path) -> None:
    path = tmp_path / "keys.json"
    ring = KeyRing(path=path)
    token, _ = TokenMinter(ring, "iss").mint(subject="s", audience="a", actors=[],
                                             action="x", resource="r")
    assert stat.S_IMODE(os.stat(path).st_mode) == 0o600
    again = KeyRing(path=path)
    assert again.current.kid == ring.current.kid
    jwt.decode(token, KeySet.import_key_set(again.jwks()), algorithms=["ES256"])


def test_lifetime_is_capped() -> None:
    with pytest.raises(TokenError, match=r"1\.\.120"):
        TokenMinter(KeyRing(), "iss", lifetime=600)


def test_act_nesting_round_trip() -> None:
    assert nest_actors([]) is None
    act = nest_actors(["c", "b"])
    assert act == {"sub": "c", "act": {"sub": "b"}}
    assert unnest_actors(act) == ["c", "b"]
    with pytest.raises(ValueError, match="malformed"):
        unnest_actors({"act": {"sub": 3}})


def test_delegation_token_from_an_untrusted_issuer_is_refused() -> None:
    other = KeyRing()
    token, _ = TokenMinter(other, "https://other/manul").mint(
        subject="s", audience="a", actors=[], action="x", resource="r")
    verifier = DelegationVerifier(KeyRing(), "https://me/manul")
    with pytest.raises(DelegationError, match="not trusted"):
        verifier.chain(token, "a", "a")
    mine = KeyRing()
    forged, _ = TokenMinter(other, "https://me/manul").mint(
        subject="s", audience="a", actors=[], action="x", resource="r")
    with pytest.raises(DelegationError, match="no key"):
        DelegationVerifier(mine, "https://me/manul").chain(forged, "a", "a")
