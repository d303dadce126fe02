"""The Dockerfile, read (no container builder exists here): what it copies exists,
the Debian packages it installs are the project's own list, the objects it
builds are every bpf/*.bpf.c, and the image's command is one `manul` has."""

from __future__ import annotations

import re
from pathlib import Path

from click.testing import CliRunner

from agent.cli import cli

ROOT = Path(__file__).parents[3]
DOCKERFILE = (ROOT / "Dockerfile").read_text()


def test_what_it_copies_exists() -> None:
    sources = [s for line in re.findall(r"^COPY (?!--from)(.+)$", DOCKERFILE, re.M)
               for s in line.split()[:-1]]
    assert sources and all((ROOT / s).exists() for s in sources), sources


def test_its_packages_are_the_projects() -> None:
    listed = {p.strip() for p in (ROOT / "scripts" / "apt-packages.txt").read_text().splitlines()
              if p.strip() and not p.startswith("#")}
    installed = {p for m in re.findall(r"--no-install-recommends ([^\\&\n]+(?:\\\n[^&\n]+)*)",
                                       DOCKERFILE)
                 for p in m.replace("\\", " ").split()}
    assert installed - {"ca-certificates"} <= listed, installed - listed


def test_the_entrypoint_is_a_manul_command() -> None:
    assert 'ENTRYPOINT ["manul"]' in DOCKERFILE
    assert 'CMD ["run", "--kubernetes"]' in DOCKERFILE
    r = CliRunner().invoke(cli, ["run", "--help"])
    assert r.exit_code == 0 and "--kubernetes" in r.output
    assert "MANUL_BPF_DIR=/opt/manul/bpf" in DOCKERFILE
