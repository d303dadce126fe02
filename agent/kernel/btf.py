"""Read struct layouts and global-variable offsets from BTF.

Used for two things: setting `const volatile` settings in an object's
`.rodata` by name (the offsets come from the object's DATASEC), and the ABI
test that checks each Python mirror of a `manul.h` struct against the
compiled objects.
"""

from __future__ import annotations

import ctypes
from dataclasses import dataclass
from pathlib import Path

from agent.errors import KernelError
from agent.kernel import libbpf as L


class _Type(ctypes.Structure):
    _fields_ = (("name_off", ctypes.c_uint32), ("info", ctypes.c_uint32),
                ("size_type", ctypes.c_uint32))


class _Triple(ctypes.Structure):  # btf_member, btf_var_secinfo and btf_array share a shape
    _fields_ = (("a", ctypes.c_uint32), ("b", ctypes.c_uint32), ("c", ctypes.c_uint32))


@dataclass(frozen=True, slots=True)
class Member:
    name: str
    offset: int  # bytes
    size: int  # bytes


@dataclass(frozen=True, slots=True)
class Struct:
    name: str
    size: int
    members: tuple[Member, ...]

    def member(self, name: str) -> Member:
        for m in self.members:
            if m.name == name:
                return m
        raise KeyError(name)


class Btf:
    """A parsed BTF blob; either owned (from a file) or borrowed from an object."""

    def __init__(self, ptr: int, owned: bool, origin: str) -> None:
        self._ptr = ptr
        self._owned = owned
        self.origin = origin

    @classmethod
    def from_file(cls, path: str | Path) -> Btf:
        ptr = L.lib.btf__parse(str(path).encode(), None)
        L.check_ptr(ptr, "cannot parse BTF", obj=str(path))
        return cls(ptr, True, str(path))

    def close(self) -> None:
        if self._owned and self._ptr:
            L.lib.btf__free(self._ptr)
        self._ptr = 0

    def __enter__(self) -> Btf:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def _type(self, tid: int) -> tuple[_Type, int]:
        p = L.lib.btf__type_by_id(self._ptr, tid)
        if not p:
            raise KernelError(f"no BTF type with id {tid}", obj=self.origin)
        return _Type.from_address(p), p

    def _name(self, off: int) -> str:
        n = L.lib.btf__name_by_offset(self._ptr, off)
        return n.decode() if n else ""

    def _find(self, name: str, kind: int) -> int:
        tid = int(L.lib.btf__find_by_name_kind(self._ptr, name.encode(), kind))
        if tid < 0:
            raise KeyError(name)
        return tid

    def _size(self, tid: int) -> int:
        n = int(L.lib.btf__resolve_size(self._ptr, tid))
        return L.check_rc(n, f"cannot resolve the size of BTF type {tid}", obj=self.origin)

    def has_struct(self, name: str) -> bool:
        try:
            self._find(name, L.BTF_KIND_STRUCT)
        except KeyError:
            return False
        return True

    def struct(self, name: str) -> Struct:
        """The layout of `struct name`; KeyError when the BTF has none."""
        tid = self._find(name, L.BTF_KIND_STRUCT)
        t, addr = self._type(tid)
        vlen = t.info & 0xFFFF
        kflag = t.info >> 31
        members = []
        base = addr + ctypes.sizeof(_Type)
        for i in range(vlen):
            m = _Triple.from_address(base + i * ctypes.sizeof(_Triple))
            bit_off = m.c & 0xFFFFFF if kflag else m.c
            if bit_off % 8:
                raise KernelError(f"struct `{name}` has a bitfield; manul.h forbids them",
                                  obj=self.origin)
            members.append(Member(self._name(m.a), bit_off // 8, self._size(m.b)))
        return Struct(name, t.size_type, tuple(members))

    def func_params(self, name: str) -> tuple[str, ...]:
        """The parameter names of function `name` (a kernel function in vmlinux
        BTF: how many arguments an LSM hook passes); KeyError when absent."""
        t, _ = self._type(self._find(name, L.BTF_KIND_FUNC))
        proto, addr = self._type(t.size_type)
        base = addr + ctypes.sizeof(_Type)
        return tuple(self._name(_Triple.from_address(base + i * 8).a)  # btf_param: 8 bytes
                     for i in range(proto.info & 0xFFFF))

    def datasec_vars(self, section: str) -> dict[str, tuple[int, int]]:
        """Variables of a data section (`.rodata`, `.bss`): name -> (offset, size)."""
        try:
            tid = self._find(section, L.BTF_KIND_DATASEC)
        except KeyError:
            return {}
        t, addr = self._type(tid)
        out = {}
        base = addr + ctypes.sizeof(_Type)
        for i in range(t.info & 0xFFFF):
            v = _Triple.from_address(base + i * ctypes.sizeof(_Triple))
            var, _ = self._type(v.a)
            out[self._name(var.name_off)] = (v.b, v.c)
        return out
