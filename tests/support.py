"""Helpers for tests that need real cgroups and processes (see tests/conftest.py)."""

from __future__ import annotations

import contextlib
import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
BPF_DIR = ROOT / "build" / "bpf"
_ENTER = 'echo $$ > "$0/cgroup.procs" && exec "$@"'


class Cgroup:
    def __init__(self, path: Path) -> None:
        self.path = path
        self.id = os.stat(path).st_ino

    def argv(self, cmd: list[str]) -> list[str]:
        return ["sh", "-c", _ENTER, str(self.path), *cmd]

    def run(self, cmd: list[str], **kw: Any) -> subprocess.CompletedProcess[str]:
        kw.setdefault("capture_output", True)
        kw.setdefault("text", True)
        kw.setdefault("timeout", 60)
        return subprocess.run(self.argv(cmd), check=False, **kw)

    def popen(self, cmd: list[str], **kw: Any) -> subprocess.Popen[str]:
        kw.setdefault("text", True)
        return subprocess.Popen(self.argv(cmd), **kw)

    def python(self, code: str) -> Any:
        """Run Python code in this cgroup; it prints one JSON value, returned here."""
        r = self.run([sys.executable, "-c", code])
        if r.returncode != 0:
            raise AssertionError(f"child failed ({r.returncode}): {r.stderr}")
        return json.loads(r.stdout.strip().splitlines()[-1])

    def pids(self) -> list[int]:
        return [int(x) for x in (self.path / "cgroup.procs").read_text().split()]

    def destroy(self) -> None:
        for pid in self.pids():
            with contextlib.suppress(ProcessLookupError):
                os.kill(pid, signal.SIGKILL)
        for _ in range(100):
            try:
                self.path.rmdir()
                return
            except OSError:
                time.sleep(0.02)


def cgroup2_root() -> Path:
    with open("/proc/self/mounts") as f:
        for line in f:
            parts = line.split()
            if parts[2] == "cgroup2":
                return Path(parts[1])
    raise AssertionError("no cgroup v2 mount: these tests need cgroup v2")
