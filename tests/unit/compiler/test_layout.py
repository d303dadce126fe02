"""compiler/layout.py mirrors bpf/include/manul.h: constants, names, sizes.

Two checks: the header text (constants, enum order, member names and array
lengths of every mirrored struct), and the BTF clang emits for
bpf/sandbox_maps.bpf.c (sizes and member offsets), as the lead's ABI test
does for every object.
"""

from __future__ import annotations

import ctypes
import json
import re
import shutil
import subprocess
from pathlib import Path

import pytest

from compiler import layout
from compiler.schema import PATH_ACTIONS

ROOT = Path(__file__).resolve().parents[3]
HEADER = (ROOT / "bpf" / "include" / "manul.h").read_text()
SECTION = HEADER.split("/* ---- Sandbox policy maps (compiler/layout.py) ----", 1)[1]


def define(name: str) -> int:
    m = re.search(rf"#define {name}\s+(\d+)", SECTION)
    assert m, name
    return int(m.group(1))


def test_constants() -> None:
    assert define("MANUL_SBX_LPM_DATA_MAX") == layout.LPM_DATA_MAX
    assert define("MANUL_SBX_PATH_BYTES") == layout.PATH_BYTES
    assert define("MANUL_SBX_PATH_ACTIONS") == layout.PATH_ACTIONS == len(PATH_ACTIONS)
    assert define("MANUL_SBX_NET_RANGES") == layout.NET_RANGES
    assert define("MANUL_SBX_PROTO_TCP") == layout.PROTO_TCP
    assert define("MANUL_SBX_PROTO_UDP") == layout.PROTO_UDP
    assert define("MANUL_SBX_F_ENFORCE") == layout.BINDING_ENFORCE


def test_path_slots_match_the_enum() -> None:
    enum = dict(re.findall(r"(MANUL_SBX_[A-Z_]+) = (\d+),", SECTION))
    slots = {
        "readFile": "READ",
        "writeFile": "WRITE",
        "exec": "EXEC",
        "loadLibrary": "LOAD_LIBRARY",
    }
    for i, action in enumerate(PATH_ACTIONS):
        assert int(enum[f"MANUL_SBX_{slots[action]}"]) == i


def _members(struct: str) -> list[tuple[str, int]]:
    body = re.search(rf"struct {struct} \{{(.*?)\n\}};", SECTION, re.S)
    assert body, struct
    out = []
    for m in re.finditer(r"^\s*(?:struct )?\w+ (\w+)(?:\[(\w+)\])?;", body.group(1), re.M):
        n = m.group(2)
        out.append((m.group(1), 1 if n is None else (int(n) if n.isdigit() else define(n))))
    return out


@pytest.mark.parametrize("name", sorted(layout.MIRRORS))
def test_members_match_the_header(name: str) -> None:
    cls = layout.MIRRORS[name]
    fields = []
    for fname, ftype in cls._fields_:  # type: ignore[misc]
        fields.append((fname, getattr(ftype, "_length_", 1)))
    assert _members(name) == fields


@pytest.mark.skipif(
    not (shutil.which("clang") and shutil.which("bpftool")), reason="needs clang and bpftool"
)
def test_btf_sizes_and_offsets(tmp_path: Path) -> None:
    obj = tmp_path / "sandbox_maps.bpf.o"
    subprocess.run(
        [
            "clang", "-O2", "-g", "-target", "bpf", "-D__TARGET_ARCH_x86", "-Wall", "-Werror",
            "-Wno-unused-function", "-Ibpf/include", "-Ibpf/lib", "-mcpu=v3",
            "-c", "bpf/sandbox_maps.bpf.c", "-o", str(obj),
        ],
        cwd=ROOT,
        check=True,
    )  # fmt: skip
    btf = json.loads(
        subprocess.run(
            ["bpftool", "btf", "dump", "file", str(obj), "format", "raw", "-j"],
            check=True,
            capture_output=True,
            text=True,
        ).stdout
    )
    structs = {t["name"]: t for t in btf["types"] if t["kind"] == "STRUCT"}
    for name, cls in layout.MIRRORS.items():
        t = structs[name]
        assert t["size"] == ctypes.sizeof(cls), name
        got = [(m["name"], m["bits_offset"] // 8) for m in t["members"]]
        want = [(f, getattr(cls, f).offset) for f, _ in cls._fields_]  # type: ignore[misc]
        assert got == want, name
    maps = {t["name"] for t in btf["types"] if t["kind"] == "VAR"}
    assert {"sandbox_cgroups", "sandbox_paths", "sandbox_net"} <= maps
    assert set(layout.MAPS) <= maps
