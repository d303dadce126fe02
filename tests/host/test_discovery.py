"""Discovery on the real kernel: real TLS handshakes from real processes in real cgroups.

Clients (Python ssl, curl, openssl s_client) run in cgroups laid out like
kubelet pods (systemd and cgroupfs drivers) and like systemd units, and
talk to a local TLS server with certificates for provider names. Each
handshake is captured by bpf/tls.bpf.c, attributed, and classified.
"""

from __future__ import annotations

import errno
import json
import os
import shutil
import socket
import subprocess
import sys
import time
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from agent.discovery.classify import Classification
from agent.discovery.handshake import Handshake
from agent.discovery.quarantine import Quarantine
from agent.discovery.sensor import TlsSensor
from agent.discovery.service import Discovery, Observation
from agent.registry import load_directory
from agent.telemetry.audit import AuditLog
from agent.workloads import PodInfo, StaticPods, WorkloadResolver
from tests.support import Cgroup, cgroup2_root
from tests.tls_support import PY_CLIENT, SPLIT_CLIENT, TlsServer

NAMES = ["api.openai.com", "api.anthropic.com", "gateway.ai.internal"]
UID_SYSTEMD = "1b2c3d4e-0000-4000-8000-00000000aaaa"
UID_CGROUPFS = "5f6e7d8c-0000-4000-8000-00000000bbbb"
CID = "ab" * 32

REGISTRY = """
apiVersion: manul.dev/v1alpha1
kind: Agent
metadata: {name: analyst, namespace: finance}
spec:
  identities:
    - serviceAccount: {namespace: finance, name: analyst}
---
apiVersion: manul.dev/v1alpha1
kind: Agent
metadata: {name: host-agent}
spec:
  identities:
    - systemdUnit: registered-agent.service
---
apiVersion: manul.dev/v1alpha1
kind: LLMProvider
metadata: {name: ai-gateway}
spec: {gateway: true, hosts: [gateway.ai.internal]}
"""


@pytest.fixture
def tree() -> Iterator[Path]:
    """A private parent under the cgroup v2 root for kubelet- and systemd-like layouts."""
    base = cgroup2_root() / f"manul-test-{uuid.uuid4().hex[:8]}"
    base.mkdir()
    yield base
    for d in sorted(base.rglob("*"), key=lambda p: len(p.parts), reverse=True):
        if d.is_dir():
            for pid in (d / "cgroup.procs").read_text().split():
                subprocess.run(["kill", "-9", pid], check=False)
            for _ in range(50):
                try:
                    d.rmdir()
                    break
                except OSError:
                    time.sleep(0.02)
    base.rmdir()


def _cg(base: Path, rel: str) -> Cgroup:
    p = base / rel
    p.mkdir(parents=True)
    return Cgroup(p)


@pytest.fixture
def server(tmp_path: Path) -> Iterator[TlsServer]:
    with TlsServer(tmp_path, NAMES) as s:
        yield s


@pytest.fixture
def registry_dir(tmp_path: Path) -> Path:
    d = tmp_path / "registry"
    d.mkdir()
    (d / "records.yaml").write_text(REGISTRY)
    return d


def _collect(sensor: TlsSensor, port: int, want: int, timeout: float = 10) -> list[Handshake]:
    got: list[Handshake] = []
    end = time.monotonic() + timeout
    while len(got) < want and time.monotonic() < end:
        got += [h for h in sensor.poll(0.1) if h.dport == port]
    return got


def _discovery(registry_dir: Path, pods: list[PodInfo], **kw: Any) -> Discovery:
    reg = load_directory(registry_dir)
    return Discovery(lambda: reg, WorkloadResolver(pods=StaticPods(pods)), **kw)


def _py(cg: Cgroup, name: str, server: TlsServer) -> None:
    r = cg.run([sys.executable, "-c", PY_CLIENT, name, str(server.port), str(server.ca_file)])
    assert r.returncode == 0, r.stderr


def _curl(cg: Cgroup, name: str, server: TlsServer) -> None:
    r = cg.run(["curl", "-sS", "--noproxy", "*", "--cacert", str(server.ca_file), "--resolve",
                f"{name}:{server.port}:127.0.0.1", f"https://{name}:{server.port}/v1/models"])
    assert r.returncode == 0, r.stderr


def _openssl(cg: Cgroup, name: str, server: TlsServer) -> None:
    r = cg.run(["openssl", "s_client", "-connect", f"127.0.0.1:{server.port}", "-servername",
                name, "-CAfile", str(server.ca_file), "-verify_return_error", "-brief"],
               input="")
    assert r.returncode == 0, r.stderr


def test_registered_shadow_unattributable_and_governed(
        tree: Path, server: TlsServer, registry_dir: Path, tmp_path: Path) -> None:
    pods = [PodInfo("finance", "analyst-7d9f", UID_SYSTEMD, "analyst"),
            PodInfo("research", "notebook-0", UID_CGROUPFS, "default")]
    uid_ = UID_SYSTEMD.replace("-", "_")
    registered_pod = _cg(tree, "kubepods.slice/kubepods-burstable.slice/"
                         f"kubepods-burstable-pod{uid_}.slice/cri-containerd-{CID}.scope")
    shadow_pod = _cg(tree, f"kubepods/besteffort/pod{UID_CGROUPFS}/{'cd' * 32}")
    registered_unit = _cg(tree, "system.slice/registered-agent.service")
    shadow_unit = _cg(tree, "system.slice/rogue-script.service")
    gone = _cg(tree, "system.slice/short-lived.scope")
    with TlsSensor() as sensor:
        _py(registered_pod, "api.openai.com", server)
        _curl(shadow_pod, "api.anthropic.com", server)
        _openssl(registered_unit, "api.anthropic.com", server)
        _curl(shadow_unit, "api.openai.com", server)
        _py(shadow_unit, "gateway.ai.internal", server)
        _py(gone, "api.openai.com", server)  # its cgroup is removed before anyone looks
        gone_id = gone.id
        gone.destroy()
        hs = _collect(sensor, server.port, 6)
    assert len(hs) == 6 and all(h.complete for h in hs)
    audit = tmp_path / "audit.jsonl"
    log = AuditLog(audit)
    disco = _discovery(registry_dir, pods, audit=log)
    obs = [disco.handle(h) for h in hs]
    log.close()
    assert all(o is not None for o in obs)
    by = {(o.sni, o.handshake.cgroup_id): o for o in obs if o}

    o = by[("api.openai.com", registered_pod.id)]
    assert o.classification is Classification.REGISTERED
    assert o.workload and o.workload.name == "finance/analyst-7d9f" and o.workload.kind == "pod"
    assert o.verdict.caller and o.verdict.caller.meta.key == "finance/analyst"
    assert o.handshake.comm.startswith("python") and o.handshake.tgid > 0

    o = by[("api.anthropic.com", shadow_pod.id)]
    assert o.classification is Classification.SHADOW
    assert o.workload and o.workload.name == "research/notebook-0"
    assert o.handshake.comm == "curl" and o.match.provider == "anthropic"

    o = by[("api.anthropic.com", registered_unit.id)]
    assert o.classification is Classification.REGISTERED
    assert o.handshake.comm == "openssl" and o.workload and o.workload.unit == \
        "registered-agent.service"

    o = by[("api.openai.com", shadow_unit.id)]
    assert o.classification is Classification.SHADOW and o.handshake.comm == "curl"
    assert o.workload and o.workload.unit == "rogue-script.service"

    o = by[("gateway.ai.internal", shadow_unit.id)]
    assert o.classification is Classification.GOVERNED and o.match.gateway

    o = by[("api.openai.com", gone_id)]
    assert o.classification is Classification.UNATTRIBUTABLE and o.workload is None

    inv = {e["workload"]: e for e in disco.inventory.to_json()}
    assert inv["research/notebook-0"]["classification"] == "shadow"
    assert inv["research/notebook-0"]["providers"] == ["anthropic"]
    assert inv["finance/analyst-7d9f"]["service_account"] == "analyst"
    assert inv["rogue-script.service"]["classification"] == "shadow"  # direct call wins
    assert sorted(inv["rogue-script.service"]["providers"]) == ["ai-gateway", "openai"]
    assert any(k.startswith("unattributable:") for k in inv)
    audit_lines = audit.read_text().splitlines()
    assert len(audit_lines) == 6  # one per new (workload, provider) pair


def test_clienthello_in_two_segments_is_reassembled(
        cgroup: Cgroup, server: TlsServer) -> None:
    with TlsSensor() as sensor:
        r = cgroup.run([sys.executable, "-c", SPLIT_CLIENT, "api.openai.com", str(server.port),
                        str(server.ca_file)])
        assert r.returncode == 0, r.stderr
        size = int(r.stdout.strip())
        hs = _collect(sensor, server.port, 1)
    assert size > 1400
    (h,) = hs
    assert h.multisegment and h.complete and len(h.data) == size
    from agent.discovery import parse_client_hello
    hello = parse_client_hello(h.data)
    assert hello.server_name == "api.openai.com" and not hello.truncated
    assert len(hello.alpn) == 32


def test_plain_http_and_other_tcp_produce_nothing(cgroup: Cgroup, tmp_path: Path) -> None:
    srv = socket.socket()
    srv.bind(("127.0.0.1", 0))
    srv.listen(16)
    port = srv.getsockname()[1]
    # -u: its "Serving HTTP on ..." line must reach the pipe before it serves
    http = subprocess.Popen([sys.executable, "-u", "-m", "http.server", "0", "--bind", "127.0.0.1"],
                            stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
                            cwd=tmp_path)
    assert http.stdout is not None
    line = http.stdout.readline()
    http_port = int(line.split("port ")[1].split()[0])
    try:
        with TlsSensor() as sensor:
            cgroup.run(["curl", "-s", "--noproxy", "*", f"http://127.0.0.1:{http_port}/"])
            code = ("import socket, os\n"
                    f"s = socket.create_connection(('127.0.0.1', {port}))\n"
                    "s.sendall(b'\\x16\\x03\\x01\\x00\\x00garbage' + os.urandom(4000))\n"
                    "s.close()\n"
                    f"s = socket.create_connection(('127.0.0.1', {port}))\n"
                    "s.sendall(b'SSH-2.0-OpenSSH_9.2\\r\\n'); s.close()\n"
                    "print(1)")
            cgroup.python(code)
            time.sleep(0.3)
            seen = [h for h in sensor.poll(0.3) if h.dport in (port, http_port)]
            errors = sensor.errors()
        assert seen == []
        assert errors["ringbuf_full"] == 0
    finally:
        http.terminate()
        http.wait()
        http.stdout.close()
        srv.close()


CONNECT = ("import json, socket\ns = socket.socket()\ns.settimeout(2)\n"
           "print(json.dumps(s.connect_ex(({host!r}, {port}))))")


def test_shadow_agent_quarantined_except_gateway(
        tree: Path, server: TlsServer, registry_dir: Path, bpffs_root: Path) -> None:
    shadow = _cg(tree, "system.slice/rogue-script.service")
    bystander = _cg(tree, "system.slice/bystander.service")
    q = Quarantine(root=bpffs_root)
    assert set(q.start().values()) == {"attached"}
    try:
        q.set_allowed([f"{server.host}/32"])  # the gateway's address
        with TlsSensor() as sensor:
            _curl(shadow, "api.openai.com", server)
            (h,) = _collect(sensor, server.port, 1)
        disco = _discovery(registry_dir, [], quarantine=q, quarantine_shadow=True)
        o: Observation | None = disco.handle(h)
        assert o and o.classification is Classification.SHADOW
        assert q.cgroups() == [shadow.id]
        other = socket.socket()
        other.bind(("127.0.0.2", 0))
        other.listen(4)
        oport = other.getsockname()[1]
        with other:
            assert shadow.python(CONNECT.format(host="127.0.0.2", port=oport)) == errno.EPERM
            assert shadow.python(CONNECT.format(host=server.host, port=server.port)) == 0
            assert bystander.python(CONNECT.format(host="127.0.0.2", port=oport)) == 0
        refused = q.refusals(timeout=1.0)
        assert [(r.cgroup_id, r.dst, r.dport) for r in refused] == [
            (shadow.id, "127.0.0.2", oport)]
        assert disco.inventory.entries()[0].quarantined
    finally:
        q.close()


def test_discover_json_reports_handshakes_and_kernel_counters(
        cgroup: Cgroup, server: TlsServer) -> None:
    """`manul discover --json`: the inventory, the handshake statistics and
    every object's ring-buffer deliveries and losses, in one object."""
    root = Path(__file__).resolve().parents[2]
    proc = subprocess.Popen([sys.executable, "-m", "agent.cli", "discover", "--duration", "6",
                             "--json"], cwd=root, stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE, text=True,
                            env={**os.environ, "PYTHONPATH": str(root)})
    time.sleep(3)  # the sensor is attached
    _py(cgroup, "api.openai.com", server)
    out, err = proc.communicate(timeout=60)
    assert proc.returncode == 0, err
    doc = json.loads(out)
    assert set(doc) == {"workloads", "handshakes", "kernel"}
    assert doc["handshakes"]["handshakes"] >= 1 and doc["handshakes"]["llm"] >= 1
    tls = doc["kernel"]["tls"]
    assert tls["ringbuf"] == "tls_events" and tls["delivered"] >= 1
    assert tls["ringbuf_full"] == 0
    assert any(w["providers"] for w in doc["workloads"]), doc["workloads"]


def test_a_quarantine_that_fails_to_start_leaves_nothing_attached(
        bpffs_root: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """The programs are attached before the ring buffer opens: if that (or
    anything after the attach) fails, what this start pinned is unpinned, so
    no quarantine is left in force that nobody manages."""
    import agent.discovery.quarantine as quarantine_mod
    from agent.errors import KernelError
    from agent.kernel.fs import cgroup2_root
    from agent.kernel.links import BPF_CGROUP_INET4_CONNECT, cgroup_programs

    root = cgroup2_root()[0]
    before = cgroup_programs(root, BPF_CGROUP_INET4_CONNECT)

    def attached_settles_to(want: list[int]) -> list[int]:
        # Unpinning drops the link's last reference only when the bpffs inode
        # is freed, after an RCU grace period: the detach is asynchronous.
        deadline = time.monotonic() + 5
        while (now := cgroup_programs(root, BPF_CGROUP_INET4_CONNECT)) != want \
                and time.monotonic() < deadline:
            time.sleep(0.02)
        return now

    # positive control: a start that succeeds attaches one more program
    q = Quarantine(root=bpffs_root)
    q.start()
    assert len(cgroup_programs(root, BPF_CGROUP_INET4_CONNECT)) == len(before) + 1
    q.close()
    shutil.rmtree(bpffs_root)
    assert attached_settles_to(before) == before

    def broken(*args: object) -> None:
        raise KernelError("the ring buffer cannot be opened (test)")

    monkeypatch.setattr(quarantine_mod, "RingBuffer", broken)
    with pytest.raises(KernelError, match="test"):
        Quarantine(root=bpffs_root).start()
    assert not (bpffs_root / quarantine_mod.PIN_NAME).exists()
    assert attached_settles_to(before) == before
