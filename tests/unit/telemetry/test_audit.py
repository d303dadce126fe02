"""The audit log: JSON lines, rotated by size so it never outgrows its cap."""

from __future__ import annotations

import json
import os
from pathlib import Path

import click
import pytest

from agent.commands._options import parse_size
from agent.telemetry.audit import AuditLog


def test_rotation_keeps_the_total_under_the_cap(tmp_path: Path) -> None:
    path = tmp_path / "audit.jsonl"
    log = AuditLog(path, node="n1", max_bytes=4096, backups=2)
    try:
        for i in range(400):  # about 80 bytes a record: ~32 KiB written in all
            log.write("sandbox-deny", seq=i, resource="/etc/shadow")
    finally:
        log.close()
    files = sorted(tmp_path.iterdir())
    assert [f.name for f in files] == ["audit.jsonl", "audit.jsonl.1", "audit.jsonl.2"]
    assert all(f.stat().st_size <= 4096 for f in files)
    assert log.rotations > 2 and log.errors == 0
    # nothing lost or torn within what is kept: whole records, in order, newest last
    seqs = [json.loads(line)["seq"] for f in reversed(files) for line in f.read_text().splitlines()]
    assert seqs == list(range(seqs[0], 400))
    assert json.loads(path.read_text().splitlines()[-1])["node"] == "n1"


def test_no_backups_starts_over(tmp_path: Path) -> None:
    path = tmp_path / "audit.jsonl"
    log = AuditLog(path, max_bytes=4096, backups=0)
    for i in range(200):
        log.write("x", seq=i)
    log.close()
    assert [f.name for f in tmp_path.iterdir()] == ["audit.jsonl"]
    assert path.stat().st_size <= 4096


def test_an_existing_file_counts_toward_the_cap(tmp_path: Path) -> None:
    path = tmp_path / "audit.jsonl"
    path.write_text("{}\n" * 1400)  # 4200 bytes from before a restart
    log = AuditLog(path, max_bytes=4096, backups=1)
    log.write("x")
    log.close()
    assert (tmp_path / "audit.jsonl.1").stat().st_size == 4200
    assert len(path.read_text().splitlines()) == 1


def test_node_comes_from_the_downward_api(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("NODE_NAME", "worker-7")
    log = AuditLog(tmp_path / "a.jsonl")
    assert log.write("x")["node"] == "worker-7"
    log.close()


def test_a_failed_rotation_keeps_writing(tmp_path: Path) -> None:
    """A rename that fails (here: the backup name is a directory) is an error
    counted once; records keep coming and the caller never sees it."""
    path = tmp_path / "audit.jsonl"
    (tmp_path / "audit.jsonl.1").mkdir()
    (tmp_path / "audit.jsonl.1" / "keep").write_text("")
    log = AuditLog(path, max_bytes=4096, backups=1)
    for i in range(100):
        log.write("x", seq=i)
    log.close()
    assert log.errors >= 1 and path.exists()
    assert json.loads(path.read_text().splitlines()[-1])["seq"] == 99
    assert os.access(path, os.W_OK)


@pytest.mark.parametrize(("text", "size"), [("100M", 100 << 20), ("512k", 512 << 10),
                                            ("1GiB", 1 << 30), ("8192", 8192)])
def test_sizes(text: str, size: int) -> None:
    assert parse_size(None, None, text) == size  # type: ignore[arg-type]


@pytest.mark.parametrize("text", ["", "M", "12X", "1K", "-5M", "1.5M"])
def test_bad_sizes_say_what_to_give(text: str) -> None:
    with pytest.raises(click.BadParameter, match="at least 4K"):
        parse_size(None, None, text)  # type: ignore[arg-type]
