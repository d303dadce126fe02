"""Every Python mirror of a manul.h struct matches the compiled objects' BTF.

The mirrors live in agent/kernel/abi.py (runtime, events) and
compiler/layout.py (policy maps). For each one, some object under
build/bpf must carry the struct in its BTF, with the same size and the
same members at the same offsets with the same sizes. This is what keeps
C and Python from drifting apart silently.
"""

from __future__ import annotations

import ctypes
import importlib

import pytest

from agent.kernel import Btf, Struct
from tests.support import BPF_DIR

MIRROR_MODULES = ("agent.kernel.abi", "compiler.layout")


def _mirrors() -> dict[str, type[ctypes.Structure]]:
    out: dict[str, type[ctypes.Structure]] = {}
    for mod in MIRROR_MODULES:
        out.update(importlib.import_module(mod).MIRRORS)
    return out


def _btf_structs() -> dict[str, Struct]:
    found: dict[str, Struct] = {}
    objects = sorted(BPF_DIR.glob("*.bpf.o")) + sorted((BPF_DIR / "tests").glob("*.bpf.o"))
    assert objects, f"no compiled objects under {BPF_DIR}: run `make bpf`"
    for path in objects:
        with Btf.from_file(path) as btf:
            for name in _mirrors():
                if name not in found and btf.has_struct(name):
                    found[name] = btf.struct(name)
    return found


BTF = _btf_structs()


@pytest.mark.parametrize("name", sorted(_mirrors()))
def test_mirror_matches_btf(name: str) -> None:
    cls = _mirrors()[name]
    assert name in BTF, (
        f"struct {name} is in no compiled object's BTF; use it in a map or MANUL_BTF_EXPORT it")
    c = BTF[name]
    assert ctypes.sizeof(cls) == c.size, f"{name}: Python {ctypes.sizeof(cls)} B, C {c.size} B"
    py = {f[0]: (getattr(cls, f[0]).offset, getattr(cls, f[0]).size) for f in cls._fields_}
    btf = {m.name: (m.offset, m.size) for m in c.members}
    assert py == btf, f"{name}: Python (offset, size) {py} != C {btf}"


def test_every_mirror_module_has_mirrors() -> None:
    for mod in MIRROR_MODULES:
        assert importlib.import_module(mod).MIRRORS, f"{mod}.MIRRORS is empty"
