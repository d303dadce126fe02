"""Decision workers: real processes deciding behind the agent's socket.

The agent keeps the sources, keys, node facts, audit log and metrics; each
worker (`python -m agent.decision.worker`) holds copies and decides. These
tests start a `DecisionServer` with two workers and check what the gateway
and the operator see: the same decisions as in-process, records and
metrics in the agent, every change (policy, registry, facts, keys)
reaching the workers, connections spread over them, a killed worker
started again while the other answers, and no worker outliving its agent.
And the event loop that decides never waits on a slow issuer.
"""

from __future__ import annotations

import contextlib
import dataclasses
import errno
import json
import os
import signal
import subprocess
import sys
import threading
import time
from collections import Counter
from collections.abc import Callable, Iterator
from pathlib import Path

import grpc
import psutil
import pytest
from envoy.service.auth.v3 import external_auth_pb2_grpc
from grpc_health.v1 import health_pb2, health_pb2_grpc
from joserfc import jwt
from joserfc.jwk import KeySet

from agent.decision.client import build_check_request, response_summary
from agent.telemetry.metrics import REGISTRY
from tests.unit.decision.authz_helpers import (
    K8S_ISSUER,
    PAYER,
    Issuer,
    Running,
    mcp_call,
    start_server,
)

ROOT = Path(__file__).parents[3]


def _wait(cond: Callable[[], object], timeout: float = 15.0, what: str = "") -> None:
    deadline = time.monotonic() + timeout
    while not cond():
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out waiting for {what or cond}")
        time.sleep(0.02)


@pytest.fixture
def workers(tmp_path: Path, folders: tuple[Path, Path]) -> Iterator[Running]:
    r = start_server(tmp_path, *folders, workers=2)
    yield r
    r.server.stop()


def _pids(r: Running) -> list[int]:
    pool = r.server.pool
    assert pool is not None
    return [s.pid for s in pool.slots]


def _audit(r: Running) -> list[dict[str, object]]:
    return [json.loads(x) for x in r.audit.read_text().splitlines() if x.strip()]


def test_workers_decide_and_the_agent_records(workers: Running) -> None:
    detail = workers.server.health_detail()[1]
    assert detail["serving"] and detail["workers"]["ready"] == 2
    assert all(psutil.Process(p).cmdline()[1:4] == ["-P", "-m", "agent.decision.worker"]
               for p in _pids(workers))

    def count(decision: str) -> float:
        return REGISTRY.get_sample_value("manul_authz_decisions_total",
                                         {"decision": decision}) or 0.0

    allow0, deny0 = count("allow"), count("deny")
    ok = workers.ask(mcp_call("get_balance"))
    assert ok["allowed"] and ok["headers"]["authorization"].startswith("Bearer ey")
    no = workers.ask(mcp_call("transfer_funds"))
    assert not no["allowed"] and no["body"]["policies"] == ["payments-need-low-risk"]
    # records and counts come back from the worker in batches (50 ms)
    _wait(lambda: len([x for x in _audit(workers) if x["kind"] == "authz"]) >= 2, 5,
          "the workers' audit records")
    # two workers send their batches on their own: the records' times give the order
    authz = sorted((x for x in _audit(workers) if x["kind"] == "authz"),
                   key=lambda x: float(str(x["time"])))
    assert [x["decision"] for x in authz[-2:]] == ["allow", "deny"]
    assert authz[-1]["caller"] == "finance/analyst" and authz[-1]["node"]
    assert authz[-2]["token_jti"] and isinstance(authz[-2]["time"], float)
    _wait(lambda: count("allow") == allow0 + 1 and count("deny") == deny0 + 1, 5,
          "the workers' metrics")
    # the per-hop token verifies against the agent's JWKS (the worker signs with its key)
    token = ok["headers"]["authorization"].removeprefix("Bearer ")
    keys = KeySet.import_key_set(workers.server.keys.jwks())
    claims = jwt.decode(token, keys).claims
    assert claims["sub"] == "finance/analyst"


def test_connections_spread_over_the_workers(workers: Running) -> None:
    channels = [grpc.insecure_channel(f"unix:{workers.socket}",
                                      options=[("grpc.use_local_subchannel_pool", 1)])
                for _ in range(4)]
    try:
        for ch in channels:
            resp = external_auth_pb2_grpc.AuthorizationStub(ch).Check(
                build_check_request(mcp_call("get_balance")), timeout=10)
            assert response_summary(resp)["allowed"]
        with workers.server.gate._lock:
            load = Counter(r.upstream for r in workers.server.gate._relays)
        pool = workers.server.pool
        assert pool is not None
        assert sorted(load.values()) == [2, 2] and set(load) == {s.socket for s in pool.slots}
    finally:
        for ch in channels:
            ch.close()


def test_policy_registry_and_facts_changes_reach_every_worker(
        workers: Running, folders: tuple[Path, Path]) -> None:
    reg, pol = folders

    def every_worker(spec: dict[str, object], check: Callable[[dict[str, object]], bool]
                     ) -> bool:
        # a fresh connection each time: over several, both workers answer
        return all(check(workers.ask(spec)) for _ in range(6))

    workers.server.point.facts.set_quarantined("finance/analyst")
    _wait(lambda: every_worker(mcp_call("get_balance"), lambda r: not r["allowed"] and r.get(
        "body", {}).get("policies") == ["quarantined-callers"]), what="the quarantine")
    workers.server.point.facts.set_quarantined("finance/analyst", False)
    workers.server.point.facts.set_anomaly_level("finance/payer", 2)
    _wait(lambda: every_worker(mcp_call("transfer_funds", spiffe=PAYER), lambda r: r.get(
        "body", {}).get("policies") == ["anomalous-callers-no-payments"]), what="anomaly level")
    _wait(lambda: every_worker(mcp_call("get_balance"), lambda r: bool(r["allowed"])),
          what="the release")

    (pol / "zz.cedar").write_text(
        '@id("deny-all-tools") forbid(principal, action == Action::"invokeTool", resource);')
    _wait(lambda: every_worker(mcp_call("get_balance"), lambda r: r.get(
        "body", {}).get("policies") == ["deny-all-tools"]), what="the new policy in the workers")
    (pol / "zz.cedar").unlink()
    text = (reg / "all.yaml").read_text().replace("name: analyst, namespace: finance",
                                                  "name: analyst2, namespace: finance")
    (reg / "all.yaml").write_text(text)
    _wait(lambda: every_worker(mcp_call("get_balance"), lambda r: r["metadata"].get(
        "caller") == "finance/analyst2"), what="the new registry in the workers")


def test_a_key_rotation_reaches_the_workers(workers: Running) -> None:
    def kid() -> str:
        token = workers.ask(mcp_call("get_balance"))["headers"]["authorization"]
        header = token.removeprefix("Bearer ").split(".")[0]
        return str(json.loads(_unb64(header))["kid"])

    old = workers.server.keys.current.kid
    assert kid() == old
    workers.server.keys.rotate()
    new = workers.server.keys.current.kid
    assert new != old
    _wait(lambda: all(kid() == new for _ in range(6)), what="the new signing key")


def _unb64(s: str) -> bytes:
    import base64

    return base64.urlsafe_b64decode(s + "=" * (-len(s) % 4))


def test_killed_workers_are_started_again_and_health_says_so_meanwhile(
        workers: Running) -> None:
    pool = workers.server.pool
    assert pool is not None
    old = _pids(workers)
    os.kill(old[0], signal.SIGKILL)
    # A connection relayed to it as it dies is lost, as in any crash (the gateway
    # reconnects); once it is gone, new connections go to the other one, which
    # answers while the first comes back.
    _wait(lambda: len(pool.live()) == 1, 5, "the agent to see the worker gone")
    for _ in range(4):
        assert workers.ask(mcp_call("get_balance"))["allowed"]
    os.kill(old[1], signal.SIGKILL)
    _wait(lambda: not workers.server.serving, 5, "NOT_SERVING with no worker")
    # no worker: the gate closes the connection at once (the gateway's failure mode)
    with grpc.insecure_channel(f"unix:{workers.socket}") as ch, pytest.raises(grpc.RpcError):
        external_auth_pb2_grpc.AuthorizationStub(ch).Check(
            build_check_request(mcp_call("get_balance")), timeout=2)
    _wait(lambda: workers.server.serving and len(pool.live()) == 2, 30, "the restarts")
    assert set(_pids(workers)).isdisjoint(old)
    detail = workers.server.health_detail()[1]["workers"]
    assert detail["ready"] == 2 and all(w["restarts"] >= 1 for w in detail["workers"])
    assert "signal 9" in detail["workers"][0]["last_exit"]
    assert workers.ask(mcp_call("get_balance"))["allowed"]
    with grpc.insecure_channel(f"unix:{workers.socket}") as ch:
        resp = health_pb2_grpc.HealthStub(ch).Check(health_pb2.HealthCheckRequest(), timeout=5)
        assert resp.status == health_pb2.HealthCheckResponse.SERVING


def test_workers_do_not_outlive_the_agent(tmp_path: Path, folders: tuple[Path, Path]) -> None:
    reg, pol = folders
    sock = tmp_path / "run" / "authz.sock"
    log = tmp_path / "agent.log"
    with log.open("w") as err:
        agent = subprocess.Popen(
            [sys.executable, "-m", "agent.cli", "authz", "serve", "--socket", str(sock),
             "--registry", str(reg), "--policies", str(pol), "--http", "", "--workers", "2"],
            cwd=ROOT, stderr=err)
    try:
        _wait(lambda: sock.exists() or agent.poll() is not None, 60, "the decision point")
        assert agent.poll() is None, log.read_text()
        children = psutil.Process(agent.pid).children()
        assert len(children) == 2
        agent.kill()  # no chance to stop them: the kernel must (PR_SET_PDEATHSIG)
        agent.wait()
        _, alive = psutil.wait_procs(children, timeout=10)
        assert not alive
    finally:
        if agent.poll() is None:
            agent.kill()
            agent.wait()


def test_a_slow_issuer_never_stalls_the_other_decisions(
        tmp_path: Path, folders: tuple[Path, Path], issuers: dict[str, Issuer]) -> None:
    """In the agent's process (workers=0) the decisions run on one event loop: a
    request whose issuer keys must be fetched is decided on a thread instead."""
    running = start_server(tmp_path, *folders)  # a fresh JWKS cache
    k8s = issuers["k8s"]
    k8s.delay = 2.0
    try:
        now = int(time.time())
        token = jwt.encode({"alg": "RS256", "kid": k8s.keys[0].kid}, {
            "iss": K8S_ISSUER, "sub": "system:serviceaccount:support:support-bot",
            "aud": ["manul"], "iat": now, "exp": now + 600}, k8s.keys[0])
        slow: dict[str, object] = {}
        t0 = time.monotonic()
        t = threading.Thread(target=lambda: slow.update(running.ask(
            mcp_call("get_balance", spiffe="", bearer=token))))
        t.start()
        time.sleep(0.3)  # the slow request is waiting for the issuer now
        fast = running.ask(mcp_call("get_balance"))
        fast_at = time.monotonic() - t0
        t.join(10)
        assert fast["allowed"] and fast_at < 1.5, fast_at  # answered during the fetch
        assert slow["metadata"]["caller"] == "support/support-bot"  # ... which completed
        assert time.monotonic() - t0 >= 2.0
    finally:
        k8s.delay = 0.0
        running.server.stop()


def _pinned_channels(r: Running) -> tuple[list[grpc.Channel], dict[str, int]]:
    """Four long-lived connections (two per worker) and, per worker socket, the
    index of one of them."""
    channels = [grpc.insecure_channel(f"unix:{r.socket}",
                                      options=[("grpc.use_local_subchannel_pool", 1)])
                for _ in range(4)]
    which: dict[str, int] = {}
    for i, ch in enumerate(channels):
        with r.server.gate._lock:
            before = set(r.server.gate._relays)
        external_auth_pb2_grpc.AuthorizationStub(ch).Check(
            build_check_request(mcp_call("get_balance")), timeout=10)
        with r.server.gate._lock:
            new = set(r.server.gate._relays) - before
        for relay in new:  # the connection this channel opened
            which.setdefault(relay.upstream, i)
    return channels, which


def _ask_on(ch: grpc.Channel, spec: dict[str, object]) -> dict[str, object]:
    return response_summary(external_auth_pb2_grpc.AuthorizationStub(ch).Check(
        build_check_request(spec), timeout=5))


def test_a_wedged_worker_holds_back_no_update_and_is_restarted(workers: Running,
                                                              folders: tuple[Path, Path]
                                                              ) -> None:
    pool = workers.server.pool
    assert pool is not None
    pool.liveness_timeout = 2.0
    channels, which = _pinned_channels(workers)
    try:
        stuck, healthy = pool.slots[0], pool.slots[1]
        assert set(which) == {stuck.socket, healthy.socket}
        old = stuck.pid
        os.kill(old, signal.SIGSTOP)  # wedged: alive, its socket pair never read
        _, pol = folders
        # more than a socket pair's buffer for the stuck one, then a quarantine
        (pol / "zz-big.cedar").write_text("".join(
            f'@id("big{i}") forbid(principal, action == Action::"invokeTool", resource) '
            f'when {{ context.delegation_depth > {1000 + i} }};\n' for i in range(3000)))
        time.sleep(1.0)
        t0 = time.monotonic()
        workers.server.point.facts.set_quarantined("finance/analyst")
        ch = channels[which[healthy.socket]]
        _wait(lambda: not _ask_on(ch, mcp_call("get_balance"))["allowed"], 3,
              "the quarantine on the healthy worker")
        assert time.monotonic() - t0 < 3
        # the wedged one stops answering pings: killed and started again
        _wait(lambda: stuck.pid != old and stuck.ready.is_set(), 30, "the restart")
        assert "no answer" in stuck.failure or stuck.restarts >= 1
        assert psutil.Process(stuck.pid).is_running()
        r = workers.ask(mcp_call("get_balance"))
        assert r["body"]["policies"] == ["quarantined-callers"]
    finally:
        for c in channels:
            c.close()
        with contextlib.suppress(ProcessLookupError):
            os.kill(old, signal.SIGCONT)


def test_a_worker_that_cannot_apply_an_update_is_restarted(workers: Running) -> None:
    pool = workers.server.pool
    assert pool is not None
    real = pool.state
    broken = dataclasses.replace(workers.server.sources.inputs,
                                 policies=(("bad.cedar", "permit(principal"),), version=999)
    once = {"done": False}

    def state(kind: str) -> object:
        if kind == "snapshot" and not once["done"]:
            once["done"] = True
            return broken
        return real(kind)

    pool.state = state
    old = _pids(workers)
    pool.push("snapshot")
    _wait(lambda: all(s.restarts >= 1 for s in pool.slots) or any(
        s.restarts >= 1 for s in pool.slots), 20, "a restart")
    _wait(lambda: len(pool.live()) == 2, 30, "both ready again")
    assert set(_pids(workers)) != set(old)
    assert workers.ask(mcp_call("get_balance"))["allowed"]


def test_workers_do_not_import_from_the_agents_directory(workers: Running) -> None:
    for pid in _pids(workers):
        p = psutil.Process(pid)
        assert p.cmdline()[1:4] == ["-P", "-m", "agent.decision.worker"]
        assert p.cwd() == "/"


def test_a_slow_fetch_by_another_request_never_stalls_the_loop(
        tmp_path: Path, folders: tuple[Path, Path], issuers: dict[str, Issuer]) -> None:
    """A forged `kid` makes a thread refetch the issuer's keys (2 s here); a valid
    token of that issuer arriving meanwhile must not wait on the loop for that
    fetch, nor make a SPIFFE call wait."""
    running = start_server(tmp_path, *folders)
    k8s = issuers["k8s"]

    def token(kid: str) -> str:
        now = int(time.time())
        return jwt.encode({"alg": "RS256", "kid": kid}, {
            "iss": K8S_ISSUER, "sub": "system:serviceaccount:support:support-bot",
            "aud": ["manul"], "iat": now, "exp": now + 600}, k8s.keys[0])

    try:
        good = token(k8s.keys[0].kid)
        assert running.ask(mcp_call("get_balance", spiffe="", bearer=good))["metadata"][
            "caller"] == "support/support-bot"  # the issuer's keys are cached now
        k8s.delay = 2.0
        done: dict[str, float] = {}
        t0 = time.monotonic()

        def timed(name: str, spec: dict[str, object]) -> None:
            running.ask(spec)
            done[name] = time.monotonic() - t0

        threads = [threading.Thread(target=timed, args=("forged", mcp_call(
            "get_balance", spiffe="", bearer=token("no-such-kid"))))]
        threads[0].start()
        time.sleep(0.3)
        threads.append(threading.Thread(target=timed, args=("valid", mcp_call(
            "get_balance", spiffe="", bearer=good))))
        threads[-1].start()
        time.sleep(0.2)
        threads.append(threading.Thread(target=timed, args=("spiffe", mcp_call(
            "get_balance"))))
        threads[-1].start()
        for t in threads:
            t.join(15)
        assert done["spiffe"] < 1.2, done  # sent at 0.5 s: answered at once
        assert done["forged"] >= 2.0
    finally:
        k8s.delay = 0.0
        running.server.stop()


def _connect_as(uid: int, path: str) -> str:
    """Connect to the Unix socket `path` from a child running as `uid`: "ok" or the errno."""
    code = ("import os, socket, sys\n"
            f"os.setgroups([]); os.setgid({uid}); os.setuid({uid})\n"
            "s = socket.socket(socket.AF_UNIX)\n"
            "try:\n    s.connect(sys.argv[1]); print('ok')\n"
            "except OSError as e:\n    print(e.errno)\n")
    return subprocess.run([sys.executable, "-c", code, path], capture_output=True, text=True,
                          timeout=30, check=True).stdout.strip()


def test_nobody_reaches_a_worker_around_the_gate(workers: Running) -> None:
    """A worker's socket answers without a peer check: only the agent may reach it."""
    pool = workers.server.pool
    assert pool is not None
    target = pool.slots[0].socket
    assert _connect_as(0, target) == "ok"  # positive control: the probe works
    assert _connect_as(65534, target) == str(errno.EACCES)  # the private 0700 directory


def test_a_module_planted_in_the_agents_directory_never_runs(
        tmp_path: Path, folders: tuple[Path, Path], monkeypatch: pytest.MonkeyPatch) -> None:
    plant = tmp_path / "cwd"
    marker = tmp_path / "planted-ran"
    (plant / "agent" / "decision").mkdir(parents=True)
    (plant / "agent" / "__init__.py").write_text("")
    (plant / "agent" / "decision" / "__init__.py").write_text("")
    (plant / "agent" / "decision" / "worker.py").write_text(
        f"open({str(marker)!r}, 'w').write('ran')\n")
    # positive control: `python -m` from that directory runs the planted module
    subprocess.run([sys.executable, "-m", "agent.decision.worker"], cwd=plant,
                   capture_output=True, timeout=30, check=False)
    assert marker.exists()
    marker.unlink()
    monkeypatch.chdir(plant)
    r = start_server(tmp_path, *folders, workers=1)
    try:
        assert r.ask(mcp_call("get_balance"))["allowed"]
    finally:
        r.server.stop()
    assert not marker.exists()
