#!/usr/bin/env python3
"""Decision point latency and throughput, against a no-op server and raw cedarpy.

In one run, over the same Unix socket stack (the peer-checked public socket
relaying to grpc.aio servers with the real Envoy protos), for 10, 1,000 and
10,000 policies and 1, 16 and 64 concurrent callers:

- manul: `DecisionServer` as `manul authz serve` runs it (decision worker
  processes behind the gate, BENCH_WORKERS, by default two on two CPUs or
  more), the full decision (SPIFFE identity, MCP body mapping, sliced Cedar
  evaluation, per-hop ES256 token, span, metrics, audit record to a file);
- no-op: the same transport as one Manul decision process (the gate
  relaying to a grpc.aio server in a thread of its own) answering OK at
  once, in one process: the cost of the socket stack alone;
- raw cedarpy: one `cedarpy.is_authorized` on the full policy set and every
  entity (pre-parsed handles), in-process, one caller.

The request set is 2,000 calls drawn from 100 agents x 200 tools (a
working set like an agent fleet's, which repeats its calls); each cell
sends it once untimed before its rounds, so they measure the steady state
(slices parsed, per-hop tokens minted and reused within their 30 s);
BENCH_WARM=0 measures from cold instead.

Each server runs in its own process; the callers are a grpc.aio client in
this one, over BENCH_CONNECTIONS connections (4: Envoy keeps one HTTP/2
connection to the ext_authz cluster per worker thread). The no-op server
is measured right before each manul round, five rounds per cell: the
table shows the median round (by throughput ratio), and each ratio is the
median of the five rounds' own ratios, as these machines are noisy (a
stall of the whole machine lands in one round, not in the result). The
table gives p50/p99 latency, decisions per second, and the ratios the
issues ask about. Aims (issue 13): at 1,000 policies and 16 callers, throughput at
least 0.5x the no-op server's and a p99 within 2x of the no-op's; the
1,000-policy case no more than twice the 10-policy case.

    .venv/bin/python bench/authz.py            # a few minutes
    BENCH_REQUESTS=600 .venv/bin/python bench/authz.py   # quicker
    BENCH_POLICIES=1000 BENCH_CALLERS=16 .venv/bin/python bench/authz.py  # one cell
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import random
import shutil
import signal
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

import cedarpy  # noqa: E402
import grpc  # noqa: E402
from envoy.service.auth.v3 import external_auth_pb2, external_auth_pb2_grpc  # noqa: E402

from agent.decision.client import build_check_request  # noqa: E402

REQUESTS = int(os.environ.get("BENCH_REQUESTS", "2000"))
POLICY_COUNTS = tuple(int(x) for x in os.environ.get("BENCH_POLICIES", "10,1000,10000").split(","))
CONCURRENCY = tuple(int(x) for x in os.environ.get("BENCH_CALLERS", "1,16,64").split(","))
# decision worker processes behind the gate (-1: what `manul authz serve` picks)
WORKERS = int(os.environ.get("BENCH_WORKERS", "-1"))
# gateway connections: Envoy opens one HTTP/2 connection to the ext_authz cluster
# per worker thread (--concurrency, by default one per CPU)
CONNECTIONS = int(os.environ.get("BENCH_CONNECTIONS", "4"))
ROUNDS = int(os.environ.get("BENCH_ROUNDS", "5"))  # per cell: medians over the rounds
# steady state: the cell's requests are sent once, untimed, before its rounds (0: cold)
WARM = os.environ.get("BENCH_WARM", "1") != "0"
AGENTS, GROUPS, SERVERS, TOOLS = 100, 20, 50, 4
WORKERS_SEEN = [0]


# -- the workload -------------------------------------------------------------

def write_registry(folder: Path) -> None:
    docs = []
    for a in range(AGENTS):
        docs.append(
            f"apiVersion: manul.dev/v1alpha1\nkind: Agent\nmetadata: {{name: agent{a}, "
            f"namespace: bench}}\nspec:\n  riskLevel: {('low', 'medium', 'high')[a % 3]}\n"
            f"  groups: [team{a % GROUPS}]\n  authentication: spiffe\n  identities:\n"
            f"    - spiffe: spiffe://bench/agent{a}\n")
    for s in range(SERVERS):
        tools = [f"tool{t}" for t in range(TOOLS)]
        docs.append(
            f"apiVersion: manul.dev/v1alpha1\nkind: MCPServer\nmetadata: {{name: srv{s}, "
            f"namespace: bench}}\nspec:\n  url: http://srv{s}.bench.svc:8080/mcp\n"
            f"  tools: {json.dumps(tools)}\n  toolSets:\n    read: {json.dumps(tools[:2])}\n"
            f"    write: {json.dumps(tools[2:])}\n")
    (folder / "bench.yaml").write_text("---\n".join(docs))


def write_policies(folder: Path, n: int) -> None:
    """n policies: one broad rule, then rules about one team and one tool set each, as a
    large estate would have. The broad rule keeps the share of allowed calls (and so of
    minted tokens) the same for every n."""
    out = ['@id("broad") permit(principal is Agent, action == Action::"invokeTool", '
           'resource) when { principal.risk_score <= 2 && context.delegation_depth < 3 };']
    for i in range(1, n):
        team, server, tset = i % GROUPS, (i // GROUPS) % SERVERS, ("read", "write")[i % 2]
        if i % 10 == 9:
            out.append(
                f'@id("p{i}") forbid(principal in Group::"team{team}", action == '
                f'Action::"invokeTool", resource in ToolSet::"bench/srv{server}/{tset}") '
                f"when {{ context.anomaly_level >= 2 || context.quarantined }};")
        else:
            out.append(
                f'@id("p{i}") permit(principal is Agent in Group::"team{team}", action == '
                f'Action::"invokeTool", resource in ToolSet::"bench/srv{server}/{tset}") '
                f"when {{ principal.risk_score <= 2 && context.delegation_depth < 3 }};")
    (folder / "bench.cedar").write_text("\n".join(out) + "\n")


def request_specs(count: int, seed: int = 7) -> list[dict[str, Any]]:
    rnd = random.Random(seed)
    specs = []
    for _ in range(count):
        a, s, t = rnd.randrange(AGENTS), rnd.randrange(SERVERS), rnd.randrange(TOOLS)
        specs.append({"spiffe": f"spiffe://bench/agent{a}",
                      "url": f"http://srv{s}.bench.svc:8080/mcp",
                      "headers": {"traceparent": f"00-{rnd.getrandbits(128):032x}-"
                                                 f"{rnd.getrandbits(64):016x}-01"},
                      "body": {"jsonrpc": "2.0", "id": 1, "method": "tools/call",
                               "params": {"name": f"tool{t}", "arguments": {}}}})
    return specs


# -- the servers (child processes) ---------------------------------------------

def serve(kind: str, registry: Path, policies: Path, sock: Path, audit: Path) -> None:
    from agent.decision.peer import PeerGate, PeerPolicy
    from agent.decision.server import DecisionServer, ServerConfig
    from agent.telemetry.tracing import make_provider

    if kind == "manul":
        from agent.decision.pool import default_workers

        cfg = ServerConfig(registry=registry, policies=policies, socket=sock, http="",
                           audit_log=str(audit), reload_interval=5.0,
                           workers=default_workers() if WORKERS < 0 else WORKERS)
        server = DecisionServer(cfg, tracer_provider=make_provider()).start()
        print("ready", len(server.sources.snapshot.policies or ()), cfg.workers, flush=True)
        signal.sigwait({signal.SIGTERM})
        server.stop()
        return
    # The no-op: the same transport as one decision process of Manul's (PeerGate
    # relaying to a grpc.aio server in a thread of its own, agent.decision.front),
    # answering OK at once.
    from google.rpc import code_pb2, status_pb2

    ok = external_auth_pb2.CheckResponse(status=status_pb2.Status(code=code_pb2.OK),
                                         ok_response=external_auth_pb2.OkHttpResponse())

    class Noop(external_auth_pb2_grpc.AuthorizationServicer):  # type: ignore[misc]
        async def Check(self, request: Any, context: Any) -> Any:
            return ok

    private = tempfile.mkdtemp(dir=sock.parent)
    inner = os.path.join(private, "grpc.sock")
    started = threading.Event()
    stop: list[Any] = []

    def loop() -> None:
        async def run() -> None:
            g = grpc.aio.server()
            external_auth_pb2_grpc.add_AuthorizationServicer_to_server(Noop(), g)
            g.add_insecure_port(f"unix:{inner}")
            await g.start()
            ev = asyncio.Event()
            stop.append((asyncio.get_running_loop(), ev))
            started.set()
            await ev.wait()
            await g.stop(0)
        asyncio.run(run())

    t = threading.Thread(target=loop, daemon=True)
    t.start()
    started.wait()
    gate = PeerGate(sock, inner, PeerPolicy.default())
    gate.start()
    print("ready 0 0", flush=True)
    signal.sigwait({signal.SIGTERM})
    gate.stop()
    lp, ev = stop[0]
    lp.call_soon_threadsafe(ev.set)
    t.join(5)


class Child:
    def __init__(self, kind: str, registry: Path, policies: Path, sock: Path,
                 audit: Path) -> None:
        self.sock = sock
        self.proc = subprocess.Popen(
            [sys.executable, __file__, "--serve", kind, str(registry), str(policies), str(sock),
             str(audit)], stdout=subprocess.PIPE, text=True)
        assert self.proc.stdout is not None
        line = self.proc.stdout.readline().split()
        if not line or line[0] != "ready":
            raise SystemExit(f"the {kind} server did not start")
        self.loaded = int(line[1])
        self.workers = int(line[2])

    def close(self) -> None:
        self.proc.send_signal(signal.SIGTERM)
        self.proc.wait(timeout=30)


# -- the callers ------------------------------------------------------------------

async def drive(sock: Path, reqs: list[Any], conc: int) -> tuple[list[float], float, int]:
    # one subchannel pool per channel: each channel is a connection of its own
    channels = [grpc.aio.insecure_channel(f"unix:{sock}",
                                          options=[("grpc.use_local_subchannel_pool", 1)])
                for _ in range(min(CONNECTIONS, conc))]
    try:
        stubs = [external_auth_pb2_grpc.AuthorizationStub(ch) for ch in channels]
        for i, r in enumerate(reqs[:50]):  # warm: connections, caches
            await stubs[i % len(stubs)].Check(r)
        lat: list[float] = []
        allowed = 0
        it = iter(reqs)

        async def caller(stub: Any) -> None:
            nonlocal allowed
            for r in it:
                t = time.perf_counter()
                resp = await stub.Check(r)
                lat.append(time.perf_counter() - t)
                allowed += resp.HasField("ok_response")

        t0 = time.perf_counter()
        await asyncio.gather(*(caller(stubs[i % len(stubs)]) for i in range(conc)))
        return lat, time.perf_counter() - t0, allowed
    finally:
        for ch in channels:
            await ch.close()


def pct(xs: list[float], p: float) -> float:
    s = sorted(xs)
    return s[min(len(s) - 1, int(len(s) * p))]


def raw_cedar(registry: Path, policies: Path,
              specs: list[dict[str, Any]]) -> tuple[float, float, float]:
    from agent.decision.checkrequest import Incoming
    from agent.decision.decide import cedar_datetime
    from agent.decision.policies import parse_policies
    from agent.decision.request import map_request
    from agent.decision.schema import schema
    from agent.decision.sources import Snapshot
    from agent.registry import load_directory
    from agent.registry.policyset import PolicyFolder

    ps = PolicyFolder(policies).load()
    snap = Snapshot.build(load_directory(registry),
                          parse_policies([(s.name, s.text) for s in ps.sources]))
    assert snap.policies is not None
    full = snap.policies.policy_set()
    entities = cedarpy.Entities.from_json_str(snap.graph.all_json())
    cedar_reqs = []
    for spec in specs[:300]:
        inc = Incoming.from_proto(build_check_request(spec))
        m = map_request(inc, snap.destinations.resolve(inc))
        key = spec["spiffe"].rsplit("/", 1)[1]
        ctx = {"time": cedar_datetime(time.time()), "authn": "spiffe",
               "on_behalf_of": f"bench/{key}", "chain": [f"bench/{key}"],
               "delegation_depth": 0, "quarantined": False, "anomaly_level": 0, **m.context}
        cedar_reqs.append({"principal": {"type": "Agent", "id": f"bench/{key}"},
                           "action": {"type": "Action", "id": m.action.value},
                           "resource": {"type": m.resource[0], "id": m.resource[1]},
                           "context": ctx})
    lat = []
    sch = schema()
    t0 = time.perf_counter()
    deadline = t0 + 3.0
    for r in cedar_reqs:
        t = time.perf_counter()
        cedarpy.is_authorized(r, full, entities, sch)
        lat.append(time.perf_counter() - t)
        if t > deadline and len(lat) >= 20:
            break
    el = time.perf_counter() - t0
    return pct(lat, 0.5), pct(lat, 0.99), len(lat) / el


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--serve", nargs=5, metavar=("KIND", "REGISTRY", "POLICIES", "SOCK", "AUDIT"))
    args = ap.parse_args()
    if args.serve:
        kind, reg, pol, sock, audit = args.serve
        serve(kind, Path(reg), Path(pol), Path(sock), Path(audit))
        return
    work = Path(tempfile.mkdtemp(prefix="manul-bench-authz-"))
    try:
        run(work)
    finally:
        shutil.rmtree(work, ignore_errors=True)


def run(work: Path) -> None:
    registry = work / "registry"
    registry.mkdir()
    write_registry(registry)
    specs = request_specs(REQUESTS)
    reqs = [build_check_request(s) for s in specs]
    rows = []
    # The no-op server runs for the whole run and is measured right before each
    # manul cell, so each ratio compares two measurements taken side by side.
    noop = Child("noop", registry, work, work / "noop.sock", work / "noop-audit.jsonl")
    try:
        for n in POLICY_COUNTS:
            pol = work / f"policies-{n}"
            pol.mkdir()
            write_policies(pol, n)
            t = time.perf_counter()
            child = Child("manul", registry, pol, work / f"manul-{n}.sock",
                          work / f"audit-{n}.jsonl")
            load_s = time.perf_counter() - t
            try:
                assert child.loaded == n, (child.loaded, n)
                WORKERS_SEEN[0] = child.workers
                raw = raw_cedar(registry, pol, specs)
                for conc in CONCURRENCY:
                    if WARM:
                        asyncio.run(drive(noop.sock, reqs, conc))
                        asyncio.run(drive(child.sock, reqs, conc))
                    rounds = []
                    for _ in range(ROUNDS):
                        nlat, nel, _ = asyncio.run(drive(noop.sock, reqs, conc))
                        lat, el, allowed = asyncio.run(drive(child.sock, reqs, conc))
                        rounds.append((len(lat) / el / (len(nlat) / nel),
                                       pct(lat, 0.99) / pct(nlat, 0.99), (
                            n, conc, pct(lat, 0.5), pct(lat, 0.99), len(lat) / el,
                            allowed / len(lat), raw, load_s,
                            (pct(nlat, 0.5), pct(nlat, 0.99), len(nlat) / nel))))
                    # the figures of the median round by throughput ratio; each ratio
                    # is the median of the rounds' own (a stall of the machine lands
                    # in one round, not in the result)
                    tputs = sorted(r[0] for r in rounds)
                    tails = sorted(r[1] for r in rounds)
                    rounds.sort(key=lambda r: r[0])
                    rows.append((*rounds[len(rounds) // 2][2],
                                 (tputs[len(tputs) // 2], tails[len(tails) // 2], tputs, tails)))
            finally:
                child.close()
    finally:
        noop.close()
    print_table(rows)


def print_table(rows: list[tuple[Any, ...]]) -> None:
    ms = 1e3
    print(f"\nmanul decision point ({WORKERS_SEEN[0]} worker processes) vs no-op ext_authz "
          f"(same socket stack, one process, measured just before each manul round; the "
          f"median round of {ROUNDS} by throughput ratio, and each ratio the median of the "
          f"rounds' own) vs raw cedarpy; {REQUESTS} requests per round over {CONNECTIONS} "
          f"connections, {'warm' if WARM else 'cold'}, {os.cpu_count()} CPUs")
    head = (f"{'policies':>8} {'conc':>4} | {'p50 ms':>7} {'p99 ms':>7} {'dec/s':>7} "
            f"{'allow':>5} | {'noop p50':>8} {'noop p99':>8} {'noop/s':>7} | "
            f"{'manul/noop':>10} {'p99/noop':>8} | {'raw p50':>8} {'raw/s':>7} | {'start s':>7}")
    print(head)
    print("-" * len(head))
    by: dict[tuple[int, int], tuple[Any, ...]] = {}
    for n, conc, p50, p99, rps, allow, raw, load_s, (np50, np99, nrps), ratios in rows:
        by[(n, conc)] = (p50, p99, rps, np50, np99, nrps, ratios)
        print(f"{n:>8} {conc:>4} | {p50 * ms:7.3f} {p99 * ms:7.3f} {rps:7.0f} {allow:5.2f} | "
              f"{np50 * ms:8.3f} {np99 * ms:8.3f} {nrps:7.0f} | {ratios[0]:10.2f} "
              f"{ratios[1]:8.2f} | {raw[0] * ms:8.3f} {raw[2]:7.0f} | {load_s:7.1f}")
    print()
    for conc in CONCURRENCY:
        if (10, conc) in by and (1000, conc) in by and (10000, conc) in by:
            a, b, c = by[(10, conc)], by[(1000, conc)], by[(10000, conc)]
            print(f"conc {conc:>2}: p50 1,000/10 policies = {b[0] / a[0]:.2f}x, "
                  f"10,000/10 = {c[0] / a[0]:.2f}x")
    if (1000, 16) in by:
        p50, p99, rps, np50, np99, nrps, (tput, tail, tputs, tails) = by[(1000, 16)]
        print(f"aims at 1,000 policies, 16 callers: throughput {tput:.2f}x the no-op's "
              f"(median round {rps:.0f} vs {nrps:.0f}/s; rounds "
              f"{', '.join(f'{x:.2f}' for x in tputs)}; aim >= 0.5: "
              f"{'met' if tput >= 0.5 else 'not met'}); p99 {tail:.2f}x the no-op's (median "
              f"round {p99 * ms:.1f} vs {np99 * ms:.1f} ms; rounds "
              f"{', '.join(f'{x:.2f}' for x in tails)}; aim <= 2: "
              f"{'met' if tail <= 2 else 'not met'})")


if __name__ == "__main__":
    main()
