"""The behavioural baseline on this kernel: real processes in real cgroups.

An agent's workload learns (its steady behaviour: a program, some files,
a TCP peer and a UDP peer), then each detector must fire once with the
right evidence, steady behaviour must raise nothing and stay in the kernel,
and a new service over the same state directory must keep the baseline.
Network probes run in network namespaces of their own where every address
is local (the metadata address, a port scan), so nothing leaves the host.
"""

from __future__ import annotations

import json
import os
import shutil
import socket
import subprocess
import sys
import textwrap
import time
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from agent.baseline.detect import Detector
from agent.baseline.events import Item, Kind
from agent.baseline.service import Anomaly, BaselineConfig, BaselineService, Mode
from agent.decision.facts import ANOMALY_HIGH, ANOMALY_NONE, NodeFacts
from agent.registry import FileSource
from agent.telemetry.audit import AuditLog
from agent.workloads import WorkloadResolver
from tests.support import Cgroup, baseline_agent_registry, cgroup2_root

LEARN = 3.0
AGENT = "bl/agent"

# Run inside the workload's cgroup: the steady behaviour.
STEADY = textwrap.dedent("""
    import os, socket, subprocess, sys
    data = sys.argv[1]
    subprocess.run(["/bin/cat", os.path.join(data, "config.txt")], stdout=subprocess.DEVNULL)
    for i in range(12):
        open(os.path.join(data, "cache", f"f{i}.txt")).read()
    s = socket.create_connection(("127.0.0.1", int(sys.argv[2])), timeout=5)
    s.close()
    u = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    u.sendto(b"x", ("127.0.0.1", int(sys.argv[3])))
    u.close()
    ls = socket.socket()
    ls.bind(("127.0.0.1", 0))
    ls.listen()
    ls.close()
    print("[]")
""")


class World:
    """A cgroup for the agent's workload, its data, a TCP listener and a UDP port."""

    def __init__(self, tmp: Path) -> None:
        self.tmp = tmp
        self.name = f"manul-bl-{uuid.uuid4().hex[:8]}"
        path = cgroup2_root() / self.name
        path.mkdir()
        self.cg = Cgroup(path)
        self.data = tmp / "data"
        (self.data / "cache").mkdir(parents=True)
        (self.data / "config.txt").write_text("x\n")
        for i in range(12):
            (self.data / "cache" / f"f{i}.txt").write_text(str(i))
        self.tcp = socket.socket()
        self.tcp.bind(("127.0.0.1", 0))
        self.tcp.listen(64)
        self.udp = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
        self.udp.bind(("127.0.0.1", 0))
        self.registry = baseline_agent_registry(tmp, self.name)
        self.audits: list[AuditLog] = []

    def steady(self) -> None:
        """The normal: the probes' scaffolding (a shell, a network namespace) and the work."""
        self.shell("true")
        self.shell("ip link set lo up", netns=True)
        self.shell("true", mountns=True)
        self.cg.python(STEADY.replace("sys.argv[1]", repr(str(self.data)))
                       .replace("sys.argv[2]", repr(str(self.tcp.getsockname()[1])))
                       .replace("sys.argv[3]", repr(str(self.udp.getsockname()[1]))))

    def shell(self, script: str, netns: bool = False, mountns: bool = False) -> None:
        unshare = ["unshare", *(["--net"] if netns else []), *(["--mount"] if mountns else [])]
        cmd = [*unshare, "sh", "-c", script] if netns or mountns else ["sh", "-c", script]
        r = self.cg.run(cmd)
        assert r.returncode == 0, r.stderr

    def close(self) -> None:
        for a in self.audits:
            a.close()
        self.tcp.close()
        self.udp.close()
        self.cg.destroy()


@pytest.fixture
def world(tmp_path: Path) -> Iterator[World]:
    w = World(tmp_path)
    try:
        yield w
    finally:
        w.close()


def _service(w: World, facts: NodeFacts | None = None,
             found: list[Anomaly] | None = None) -> BaselineService:
    src = FileSource(w.registry)
    audit = AuditLog(str(w.tmp / "audit.jsonl"))
    w.audits.append(audit)
    return BaselineService(
        lambda: src.registry, WorkloadResolver(),
        config=BaselineConfig(mode=Mode.REGISTERED, learn_seconds=LEARN,
                              state_dir=w.tmp / "state"),
        audit=audit, facts=facts,
        on_anomaly=(found.append if found is not None else None))


def _drain(svc: BaselineService, seconds: float = 0.5) -> None:
    end = time.monotonic() + seconds
    while time.monotonic() < end:
        svc.poll(0.05)
    svc.tick()


def _learn(svc: BaselineService, w: World) -> None:
    svc.start()
    w.steady()
    _drain(svc)
    p = svc.profiles[AGENT]
    time.sleep(max(0.0, p.started + LEARN - time.time()) + 0.1)
    svc.tick()
    assert not p.learning(time.time())


def _records(w: World) -> list[dict]:
    path = w.tmp / "audit.jsonl"
    return [json.loads(x) for x in path.read_text().splitlines()] if path.exists() else []


def test_learns_then_each_detector_fires_once(world: World) -> None:
    facts = NodeFacts()
    found: list[Anomaly] = []
    svc = _service(world, facts, found)
    try:
        _learn(svc, world)
        p = svc.profiles[AGENT]
        tcp_port = world.tcp.getsockname()[1]
        assert Item(Kind.EXEC, path="/usr/bin/cat") in p.items
        assert Item(Kind.CONNECT, addr="127.0.0.1", port=tcp_port, proto="tcp") in p.items
        assert (Kind.READ, str(world.data / "cache")) in p.prefixes  # 12 files: generalised
        assert Item(Kind.LISTEN, port=0, proto="tcp") in p.items  # an ephemeral port
        assert not found, [a.finding for a in found]

        # Steady behaviour after learning: nothing, and it stays in the kernel.
        before = svc.sensor.stats()
        world.steady()
        _drain(svc)
        after = svc.sensor.stats()
        assert not found, [a.finding.summary for a in found]
        seen = sum(after[k].seen - before[k].seen for k in after)
        sent = sum(after[k].sent - before[k].sent for k in after)
        assert seen > 20 and sent == 0, (seen, sent)

        # Each detector, once, with its evidence.
        world.shell("/usr/bin/id >/dev/null")
        world.shell("cat /etc/shadow >/dev/null")
        py = sys.executable
        world.shell(f"{py} -c 'import socket; socket.socket().connect_ex((\"127.0.0.1\", "
                    f"{_free_port()}))'")
        world.shell("ip link set lo up && ip addr add 169.254.169.254/32 dev lo && "
                    f"{py} -c 'import socket; socket.socket().connect_ex("
                    "(\"169.254.169.254\", 80))'", netns=True)
        world.shell(f"ip link set lo up && ip route add local 0.0.0.0/0 dev lo && {py} -c '"
                    "import socket\nfor p in range(2000, 2030):\n"
                    "    socket.socket().connect_ex((\"10.9.8.7\", p))'", netns=True)
        _drain(svc, 1.0)
        by = {}
        for a in found:
            by.setdefault(a.finding.detector, []).append(a)
        assert [a.finding.evidence["path"] for a in by[Detector.NEW_EXEC]] == ["/usr/bin/id"]
        cred = by[Detector.CREDENTIAL_ACCESS]
        assert len(cred) == 1 and cred[0].finding.evidence["path"] == "/etc/shadow"
        assert cred[0].record["process"]["comm"] == "cat"
        assert cred[0].record["parent"]["comm"] == "sh"
        meta = by[Detector.METADATA_ENDPOINT]
        assert len(meta) == 1 and meta[0].finding.evidence["destination"] == "169.254.169.254:80"
        scan = by[Detector.PORT_SCAN]
        assert len(scan) == 1 and scan[0].finding.evidence["busiest_address"] == "10.9.8.7"
        dests = [a.finding.evidence["destination"] for a in by[Detector.NEW_DESTINATION]]
        assert any(d.startswith("127.0.0.1:") for d in dests)
        # the scan's peers are rate-limited records, every one counted
        assert sum(1 for a in by[Detector.NEW_DESTINATION] if a.written) <= 6
        assert len(by[Detector.NEW_DESTINATION]) >= 30
        # the decision point sees the level; the audit log has one record per written finding
        assert facts.get(AGENT).anomaly_level == ANOMALY_HIGH
        recs = [r for r in _records(world) if r["kind"] == "anomaly"]
        assert len(recs) == sum(1 for a in found if a.written)
        shadow = next(r for r in recs if r["detector"] == "credential-access")
        assert shadow["agent"] == AGENT and shadow["severity"] == "high"
        assert shadow["cgroup"].strip("/") == world.name
        assert shadow["evidence"]["credential"] == "password hashes"
    finally:
        svc.close()


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def test_credential_access_while_learning_is_reported_not_learned(world: World) -> None:
    found: list[Anomaly] = []
    svc = _service(world, found=found)
    try:
        svc.start()
        world.shell("cat /etc/shadow >/dev/null")
        _drain(svc)
        assert svc.profiles[AGENT].learning(time.time())
        assert [a.finding.detector for a in found] == [Detector.CREDENTIAL_ACCESS]
        assert Item(Kind.READ, path="/etc/shadow") not in svc.profiles[AGENT].items
    finally:
        svc.close()


def test_a_restarted_service_keeps_the_baseline(world: World) -> None:
    svc = _service(world)
    try:
        _learn(svc, world)
    finally:
        svc.close()
    stored = json.loads((world.tmp / "state" / "baseline" / "bl%2Fagent.json").read_text())
    assert stored["learned_at"] is not None and "exec /usr/bin/cat" in stored["items"]

    found: list[Anomaly] = []
    facts = NodeFacts()
    again = _service(world, facts, found)
    try:
        again.start()
        world.steady()
        _drain(again)
        assert not found, [a.finding.summary for a in found]
        st = again.sensor.stats()
        # seeded from disk: the learned program and peers never left the kernel
        assert st["exec"].sent == 0 and st["exec"].known >= 1
        world.shell("/usr/bin/id >/dev/null")
        _drain(again)
        assert [a.finding.detector for a in found] == [Detector.NEW_EXEC]
    finally:
        again.close()


def test_reset_forgets_in_the_kernel_and_learns_again(world: World) -> None:
    svc = _service(world)
    try:
        _learn(svc, world)
        assert svc.store.reset(AGENT)
        svc.tick()
        assert AGENT not in svc.profiles
        world.shell("/usr/bin/id >/dev/null")
        _drain(svc)
        p = svc.profiles[AGENT]
        assert p.learning(time.time()) and Item(Kind.EXEC, path="/usr/bin/id") in p.items
        # the kernel forgot too: the old program is novel again
        world.steady()
        _drain(svc)
        assert Item(Kind.EXEC, path="/usr/bin/cat") in p.items
    finally:
        svc.close()


def test_unwatched_workloads_cost_no_events(world: World, tmp_path: Path) -> None:
    path = cgroup2_root() / f"manul-bl-other-{uuid.uuid4().hex[:6]}"
    path.mkdir()
    other = Cgroup(path)
    try:
        svc = _service(world)
        try:
            svc.start()
            r = other.run(["sh", "-c", "cat /etc/shadow >/dev/null; /usr/bin/id >/dev/null"])
            assert r.returncode == 0
            _drain(svc)
            st = svc.sensor.stats()
            assert sum(s.seen for s in st.values()) == 0
        finally:
            svc.close()
    finally:
        other.destroy()


def test_anomaly_level_falls_back(world: World) -> None:
    facts = NodeFacts()
    svc = _service(world, facts)
    try:
        _learn(svc, world)
        world.shell("cat /etc/shadow >/dev/null")
        _drain(svc)
        assert facts.get(AGENT).anomaly_level == ANOMALY_HIGH
        svc.tick(time.time() + svc.config.level_seconds + 1)
        assert facts.get(AGENT).anomaly_level == ANOMALY_NONE
    finally:
        svc.close()


@pytest.mark.parametrize("missing", ["unshare", "ip"])
def test_probe_tools_are_installed(missing: str) -> None:
    assert shutil.which(missing), f"`{missing}` is needed by these tests (util-linux, iproute2)"


def test_cli_show_and_reset(world: World) -> None:
    svc = _service(world)
    try:
        _learn(svc, world)
    finally:
        svc.close()
    manul = [sys.executable, "-m", "agent.cli"]
    state = str(world.tmp / "state")
    r = subprocess.run([*manul, "baseline", "show", AGENT, "--state-dir", state],
                       capture_output=True, text=True, check=False)
    assert r.returncode == 0, r.stderr
    assert "/usr/bin/cat" in r.stdout and "detecting since" in r.stdout
    assert f"{world.data / 'cache'}/*" in r.stdout
    r = subprocess.run([*manul, "baseline", "show", AGENT, "--state-dir", state, "--json"],
                       capture_output=True, text=True, check=False)
    assert json.loads(r.stdout)["name"] == AGENT
    r = subprocess.run([*manul, "baseline", "show", "nobody", "--state-dir", state],
                       capture_output=True, text=True, check=False)
    assert r.returncode == 1 and "no baseline for `nobody`" in r.stderr and AGENT in r.stderr
    r = subprocess.run([*manul, "baseline", "reset", AGENT, "--state-dir", state],
                       capture_output=True, text=True, check=False)
    assert r.returncode == 0 and "deleted" in r.stdout
    assert not (world.tmp / "state" / "baseline" / "bl%2Fagent.json").exists()


def test_on_anomaly_quarantine_cuts_egress_except_the_gateway(world: World) -> None:
    """`spec.baseline.onAnomaly: quarantine`: after an anomaly, the workload may
    connect only to the gateway (positive control: before it, anywhere)."""
    import errno

    from agent.discovery.quarantine import Quarantine
    from agent.kernel.fs import BPFFS, ensure_bpffs

    (world.registry / "agent.yaml").write_text(
        (world.registry / "agent.yaml").read_text()
        + "  baseline: {onAnomaly: quarantine}\n")
    ensure_bpffs()
    pin = BPFFS / f"manul-test-{uuid.uuid4().hex[:8]}"
    q = Quarantine(root=pin)
    q.start()
    q.set_allowed(["127.0.0.1/32"])  # the gateway
    other = socket.socket()
    other.bind(("127.0.0.2", 0))
    other.listen(8)
    connect = ("import json, socket\ns = socket.socket()\ns.settimeout(2)\n"
               "print(json.dumps(s.connect_ex(({host!r}, {port}))))")
    found: list[Anomaly] = []
    src = FileSource(world.registry)
    audit = AuditLog(str(world.tmp / "audit.jsonl"))
    world.audits.append(audit)
    svc = BaselineService(
        lambda: src.registry, WorkloadResolver(),
        config=BaselineConfig(learn_seconds=60, state_dir=world.tmp / "state"), audit=audit,
        quarantine=lambda w: (q.add(w.cgroup_id), True)[1], on_anomaly=found.append)
    try:
        svc.start()
        port2 = other.getsockname()[1]
        assert world.cg.python(connect.format(host="127.0.0.2", port=port2)) == 0
        world.shell("cat /etc/shadow > /dev/null")
        _drain(svc)
        assert [a.finding.detector for a in found] == [Detector.CREDENTIAL_ACCESS]
        assert q.cgroups() == [world.cg.id]
        assert world.cg.python(connect.format(host="127.0.0.2", port=port2)) == errno.EPERM
        gw = world.tcp.getsockname()[1]
        assert world.cg.python(connect.format(host="127.0.0.1", port=gw)) == 0
        recs = [r for r in _records(world) if r["kind"] == "quarantine"]
        assert len(recs) == 1 and recs[0]["agent"] == AGENT
    finally:
        svc.close()
        q.close()
        other.close()
        shutil.rmtree(pin, ignore_errors=True)


def test_a_credential_under_another_name_is_still_credential_access(world: World) -> None:
    """The catalogue is matched by inode too: a hard link to a credential, placed in a
    directory the baseline generalised, and a bind mount of it in a private mount
    namespace, are both `credential-access` (positive control: the reads succeed)."""
    vault = world.tmp / "vault"
    vault.mkdir()
    (vault / "key").write_text("s3cret\n")
    (world.registry / "agent.yaml").write_text(
        (world.registry / "agent.yaml").read_text()
        + f"  baseline: {{credentials: ['{vault}/*']}}\n")
    found: list[Anomaly] = []
    svc = _service(world, found=found)
    try:
        _learn(svc, world)
        assert (Kind.READ, str(world.data / "cache")) in svc.profiles[AGENT].prefixes
        os.link(vault / "key", world.data / "cache" / "notes.txt")
        r = world.cg.run(["cat", str(world.data / "cache" / "notes.txt")])
        assert r.returncode == 0 and r.stdout == "s3cret\n"
        world.shell(f"mount --bind {vault / 'key'} {world.data / 'config.txt'} && "
                    f"cat {world.data / 'config.txt'} | grep -q s3cret", mountns=True)
        _drain(svc)
        cred = [a for a in found if a.finding.detector is Detector.CREDENTIAL_ACCESS]
        seen = {a.finding.evidence["path"]: a.finding.evidence for a in cred}
        link = seen[str(world.data / "cache" / "notes.txt")]
        assert link["same_file_as"] == str(vault / "key")
        assert seen[str(world.data / "config.txt")]["same_file_as"] == str(vault / "key")
        assert len(cred) == 2, [a.finding.summary for a in found]
    finally:
        svc.close()


def test_a_unix_socket_credential_is_reported_when_connected_to(world: World) -> None:
    """Runtime sockets are credentials: a Unix stream connect to one is
    `credential-access` (here a socket the Agent lists), by its resolved path."""
    vault = world.tmp / "vault"
    vault.mkdir()
    (world.registry / "agent.yaml").write_text(
        (world.registry / "agent.yaml").read_text()
        + f"  baseline: {{credentials: ['{vault}/*']}}\n")
    server = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    server.bind(str(vault / "runtime.sock"))
    server.listen(8)
    found: list[Anomaly] = []
    svc = _service(world, found=found)
    try:
        _learn(svc, world)
        # relative to its directory: the kernel resolves the name, not the caller
        code = (f"import os, socket; os.chdir({str(vault)!r}); "
                "socket.socket(socket.AF_UNIX).connect('runtime.sock'); print('ok')")
        r = world.cg.run([sys.executable, "-c", code])
        assert r.returncode == 0 and r.stdout.strip() == "ok", r.stderr
        _drain(svc)
        cred = [a for a in found if a.finding.detector is Detector.CREDENTIAL_ACCESS]
        assert [a.finding.evidence["path"] for a in cred] == [str(vault / "runtime.sock")]
        assert cred[0].finding.evidence["access"] == "unix"
    finally:
        svc.close()
        server.close()


def test_a_program_run_from_memory_is_new_exec(world: World) -> None:
    """A memfd run with execveat(AT_EMPTY_PATH) has no path from the root: it is still
    new-exec, as /(anonymous)/memfd:<name> (positive control: it ran)."""
    found: list[Anomaly] = []
    svc = _service(world, found=found)
    try:
        _learn(svc, world)
        code = ("import os; fd = os.memfd_create('dropper'); "
                "os.write(fd, open('/usr/bin/echo', 'rb').read()); "
                "os.execve(fd, ['echo', 'ran'], {})")
        r = world.cg.run([sys.executable, "-c", code])
        assert (r.returncode, r.stdout) == (0, "ran\n"), r.stderr
        _drain(svc)
        paths = [a.finding.evidence["path"] for a in found
                 if a.finding.detector is Detector.NEW_EXEC]
        assert paths == ["/(anonymous)/memfd:dropper"], [a.finding.summary for a in found]
    finally:
        svc.close()


def test_baseline_all_learns_every_workload_but_the_agent(world: World, make_cgroup: Any) -> None:
    """`--baseline all`: an unregistered workload gets a baseline of its own, named
    after it; the agent's own cgroup is never watched."""
    import os as _os

    from agent.kernel import fs

    stranger = make_cgroup()
    src = FileSource(world.registry)
    audit = AuditLog(str(world.tmp / "audit.jsonl"))
    world.audits.append(audit)
    own = fs.cgroup_id(fs.resolve_cgroup(fs.cgroup_of_pid(_os.getpid())))
    svc = BaselineService(
        lambda: src.registry, WorkloadResolver(),
        config=BaselineConfig(mode=Mode.ALL, learn_seconds=60, state_dir=world.tmp / "state"),
        audit=audit, protect_cgroups=frozenset({own}))
    try:
        svc.start()
        r = stranger.run(["cat", "/etc/hostname"])
        assert r.returncode == 0
        world.steady()
        with open("/etc/hostname") as f:  # the agent itself: never watched
            f.read()
        _drain(svc)
        names = set(svc.profiles)
        assert AGENT in names
        mine = [n for n in names if stranger.path.name in n]
        assert len(mine) == 1, names
        assert Item(Kind.EXEC, path="/usr/bin/cat") in svc.profiles[mine[0]].items
        assert all(svc.profiles[n].items for n in names)
        mine_too = WorkloadResolver().resolve(own, _os.getpid())
        own_name = mine_too.name if mine_too is not None else f"cgroup:{own}"
        assert own_name not in names, (own_name, names)
    finally:
        svc.close()


def test_hooks_are_attached_only_while_a_workload_is_watched(tmp_path: Path) -> None:
    """A node with no registered agent's workload pays nothing: the behaviour hooks
    attach when the first one appears, and detach when the last one goes."""
    name = f"manul-bl-late-{uuid.uuid4().hex[:6]}"
    src = FileSource(baseline_agent_registry(tmp_path, name))
    svc = BaselineService(lambda: src.registry, WorkloadResolver(),
                          config=BaselineConfig(learn_seconds=60, state_dir=tmp_path / "state"))
    svc.start()
    path = cgroup2_root() / name
    try:
        assert not svc.sensor.attached and not svc.sensor.obj.links
        path.mkdir()
        cg = Cgroup(path)
        svc.resolver.refresh()
        svc.sync()
        assert svc.sensor.attached and svc.sensor.obj.links
        r = cg.run(["cat", "/etc/hostname"])
        assert r.returncode == 0
        _drain(svc)
        assert Item(Kind.EXEC, path="/usr/bin/cat") in svc.profiles[AGENT].items
        cg.destroy()
        svc.resolver.refresh()
        svc.sync()
        assert not svc.sensor.attached and not svc.sensor.obj.links
    finally:
        svc.close()
        if path.exists():
            Cgroup(path).destroy()
