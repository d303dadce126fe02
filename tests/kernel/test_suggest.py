"""`manul suggest` for real (in the VM, BPF LSM): a workload under its own suggested sandbox.

The workload (bash and coreutils: a configuration file, a dozen cache
files, an output file, a TCP peer through bash's /dev/tcp) runs in a real
cgroup while the baseline learns it on this kernel. The suggested Cedar
text is compiled and applied to the same cgroup in enforce mode; then the
steady behaviour must run with zero denials (nothing in the sandbox's
audit trail), and each new action must be refused: a file never read
(ENOENT), a program never run (EPERM), a peer never contacted
(ECONNREFUSED). The positive control is the learning run itself, where
each of those actions succeeds.
"""

from __future__ import annotations

import socket
import textwrap
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from agent.baseline.service import BaselineConfig, BaselineService, Mode
from agent.baseline.suggest import interpreters_for, suggest
from agent.registry import Agent, FileSource, Meta
from agent.registry.entities import agent_entity
from agent.sandbox import PolicyInput
from agent.workloads import WorkloadResolver
from compiler import PolicySource
from tests.support import (
    Cgroup,
    apply_to,
    baseline_agent_registry,
    drop_pin_root,
    sandbox_decisions,
    sandbox_pin_root,
)

AGENT = "bl/agent"


@pytest.fixture
def pin_root() -> Iterator[Path]:
    root = sandbox_pin_root()
    yield root
    drop_pin_root(root)


def _bash(cg: Cgroup, script: str) -> Any:
    return cg.run(["bash", "-c", script], timeout=120)


def test_a_workload_runs_under_its_suggested_sandbox(tmp_path: Path, make_cgroup: Any,
                                                     pin_root: Path) -> None:
    cg: Cgroup = make_cgroup()
    data = tmp_path / "data"
    (data / "cache").mkdir(parents=True)
    (data / "config.txt").write_text("setting=1\n")
    for i in range(12):
        (data / "cache" / f"f{i}.txt").write_text(f"{i}\n")
    other = tmp_path / "other.txt"
    other.write_text("not in the baseline\n")
    peer = socket.socket()
    peer.bind(("127.0.0.1", 0))
    peer.listen(64)
    port = peer.getsockname()[1]
    stranger = socket.socket()
    stranger.bind(("127.0.0.1", 0))
    stranger.listen(64)
    steady = textwrap.dedent(f"""
        set -e
        cat {data}/config.txt > /dev/null
        for i in 0 1 2 3 4 5 6 7 8 9 10 11; do head -n1 {data}/cache/f$i.txt > /dev/null; done
        echo done > {data}/out.txt
        exec 3<>/dev/tcp/127.0.0.1/{port}
        echo hello >&3
        echo ok
        """)
    registry = baseline_agent_registry(tmp_path, cg.path.name)
    src = FileSource(registry)
    svc = BaselineService(lambda: src.registry, WorkloadResolver(),
                          config=BaselineConfig(mode=Mode.REGISTERED, learn_seconds=3600.0,
                                                state_dir=tmp_path / "state"))
    svc.start()
    try:
        for _ in range(2):
            r = _bash(cg, steady)
            assert r.returncode == 0 and r.stdout.strip() == "ok", r.stderr
            end = time.monotonic() + 1.0
            while time.monotonic() < end:
                svc.poll(0.05)
        profile = svc.profiles[AGENT]
        assert profile.learning(time.time())  # what it learned is all the suggestion knows
    finally:
        svc.close()
    # positive controls (not observed): before the sandbox, the new actions work
    r = _bash(cg, f"cat {other} && /usr/bin/id -u && "
                  f"exec 3<>/dev/tcp/127.0.0.1/{stranger.getsockname()[1]}")
    assert r.returncode == 0, r.stderr
    text = suggest(profile, AGENT, interpreters=interpreters_for(profile))
    (tmp_path / "suggested.cedar").write_text(text)
    entity = agent_entity(Agent(meta=Meta(name="agent", namespace="bl")))
    inputs = PolicyInput((PolicySource("suggested.cedar", text),), None, {}, (entity,))
    apply_to(pin_root, inputs, f'Agent::"{AGENT}"', [cg])
    sandbox_decisions(pin_root)

    for _ in range(2):
        r = _bash(cg, steady)
        assert r.returncode == 0 and r.stdout.strip() == "ok", (r.stderr, text)
    denials = sandbox_decisions(pin_root)
    assert denials == [], [(d.action, d.resource, d.operation) for d in denials]

    r = _bash(cg, f"cat {other}")
    assert r.returncode != 0 and "No such file or directory" in r.stderr, r
    r = _bash(cg, "/usr/bin/id -u")
    assert r.returncode == 126 and "Operation not permitted" in r.stderr, r
    r = _bash(cg, f"exec 3<>/dev/tcp/127.0.0.1/{stranger.getsockname()[1]}")
    assert r.returncode != 0 and "Connection refused" in r.stderr, r
    denied = {(d.action, d.resource) for d in sandbox_decisions(pin_root)}
    assert ("readFile", str(other)) in denied
    assert ("exec", "/usr/bin/id") in denied
    assert ("connectNetwork", f"127.0.0.1:{stranger.getsockname()[1]}/tcp") in denied
    peer.close()
    stranger.close()
