"""BPF maps from Python: lookup, update, delete, iterate, and batches.

A `Map` wraps a map file descriptor with its key and value sizes. Keys and
values are bytes, or anything `bytes()` accepts (ctypes structures from
`agent.kernel.abi` / `compiler.layout`), or ints for 4- and 8-byte keys.
Per-CPU maps return one value per possible CPU.
"""

from __future__ import annotations

import ctypes
import errno
import os
from collections.abc import Iterable, Iterator
from typing import Any

from agent.errors import KernelError
from agent.kernel import libbpf as L

BPF_ANY, BPF_NOEXIST, BPF_EXIST = 0, 1, 2

Keyish = bytes | bytearray | memoryview | int | ctypes.Structure | ctypes.Array[Any]


class _MapInfo(ctypes.Structure):
    _fields_ = (
        ("type", ctypes.c_uint32), ("id", ctypes.c_uint32), ("key_size", ctypes.c_uint32),
        ("value_size", ctypes.c_uint32), ("max_entries", ctypes.c_uint32),
        ("map_flags", ctypes.c_uint32), ("name", ctypes.c_char * 16),
        ("_rest", ctypes.c_uint8 * 64),
    )


class Map:
    """One BPF map. Owns its fd only when created from a pin (`from_pin`)."""

    def __init__(self, fd: int, name: str, map_type: int, key_size: int,
                 value_size: int, max_entries: int, *, owns_fd: bool = False) -> None:
        self.fd = fd
        self.name = name
        self.type = map_type
        self.key_size = key_size
        self.value_size = value_size
        self.max_entries = max_entries
        self._owns_fd = owns_fd
        self.percpu = map_type in L.PERCPU_MAP_TYPES
        self.ncpus = L.possible_cpus() if self.percpu else 1
        # per-CPU values are each rounded up to 8 bytes
        self._slot = (value_size + 7) & ~7 if self.percpu else value_size
        self._vbuf_size = self._slot * self.ncpus

    @classmethod
    def from_fd(cls, fd: int, *, owns_fd: bool = False) -> Map:
        info = _MapInfo()
        n = ctypes.c_uint32(ctypes.sizeof(info))
        L.check_rc(L.lib.bpf_obj_get_info_by_fd(fd, ctypes.byref(info), ctypes.byref(n)),
                   "cannot read map info")
        return cls(fd, info.name.decode(), info.type, info.key_size, info.value_size,
                   info.max_entries, owns_fd=owns_fd)

    @classmethod
    def from_pin(cls, path: str | os.PathLike[str]) -> Map:
        fd = int(L.lib.bpf_obj_get(os.fsencode(path)))
        if fd < 0:
            raise KernelError(f"cannot open pinned map `{os.fspath(path)}`", errno=-fd)
        return cls.from_fd(fd, owns_fd=True)

    def close(self) -> None:
        if self._owns_fd and self.fd >= 0:
            os.close(self.fd)
        self.fd = -1

    def __repr__(self) -> str:
        return f"Map({self.name!r}, type={self.type}, key={self.key_size}, value={self.value_size})"

    # -- encoding ------------------------------------------------------------

    def _key(self, key: Keyish) -> ctypes.Array[ctypes.c_char]:
        return _buf(key, self.key_size, f"map `{self.name}` key")

    def _value(self, value: Keyish | list[Any]) -> ctypes.Array[ctypes.c_char]:
        if self.percpu:
            if not isinstance(value, list):
                value = [value] * self.ncpus
            raw = b"".join(bytes(_buf(v, self.value_size, "value")).ljust(self._slot, b"\0")
                           for v in value)
            return _buf(raw, self._vbuf_size, f"map `{self.name}` value")
        assert not isinstance(value, list)
        return _buf(value, self.value_size, f"map `{self.name}` value")

    def _decode(self, raw: bytes) -> bytes | list[bytes]:
        if not self.percpu:
            return raw
        return [raw[i * self._slot: i * self._slot + self.value_size] for i in range(self.ncpus)]

    # -- single elements -----------------------------------------------------

    def lookup(self, key: Keyish) -> Any:
        """The value for `key` (bytes, or a list per CPU), or None."""
        v = ctypes.create_string_buffer(self._vbuf_size)
        rc = L.lib.bpf_map_lookup_elem(self.fd, self._key(key), v)
        if rc == -errno.ENOENT:
            return None
        self._check(rc, "lookup")
        return self._decode(v.raw)

    def update(self, key: Keyish, value: Any, flags: int = BPF_ANY) -> None:
        self._check(L.lib.bpf_map_update_elem(self.fd, self._key(key), self._value(value),
                                              flags), "update")

    def delete(self, key: Keyish) -> bool:
        rc = L.lib.bpf_map_delete_elem(self.fd, self._key(key))
        if rc == -errno.ENOENT:
            return False
        self._check(rc, "delete")
        return True

    def keys(self) -> Iterator[bytes]:
        cur = ctypes.create_string_buffer(self.key_size)
        nxt = ctypes.create_string_buffer(self.key_size)
        rc = L.lib.bpf_map_get_next_key(self.fd, None, nxt)
        while rc == 0:
            yield nxt.raw
            ctypes.memmove(cur, nxt, self.key_size)
            rc = L.lib.bpf_map_get_next_key(self.fd, cur, nxt)
        if rc != -errno.ENOENT:
            self._check(rc, "iterate")

    def __iter__(self) -> Iterator[bytes]:
        """Iterate over keys, like a dict."""
        return self.keys()

    def items(self) -> list[tuple[bytes, Any]]:
        """Every (key, value); one batch syscall per chunk where the kernel has it."""
        try:
            return self._lookup_batch()
        except KernelError as e:
            if e.errno not in (errno.EINVAL, errno.ENOTSUP, errno.EOPNOTSUPP, 524):
                raise
        out = []
        for k in self.keys():
            v = self.lookup(k)
            if v is not None:
                out.append((k, v))
        return out

    def _lookup_batch(self, chunk: int = 4096) -> list[tuple[bytes, Any]]:
        out: list[tuple[bytes, Any]] = []
        n_max = max(1, min(chunk, self.max_entries))
        keys = ctypes.create_string_buffer(self.key_size * n_max)
        vals = ctypes.create_string_buffer(self._vbuf_size * n_max)
        in_b = ctypes.create_string_buffer(max(self.key_size, 8))
        out_b = ctypes.create_string_buffer(max(self.key_size, 8))
        opts = L.bpf_map_batch_opts(sz=ctypes.sizeof(L.bpf_map_batch_opts))
        first = True
        while True:
            count = ctypes.c_uint32(n_max)
            rc = L.lib.bpf_map_lookup_batch(self.fd, None if first else in_b, out_b, keys,
                                            vals, ctypes.byref(count), ctypes.byref(opts))
            if rc < 0 and rc != -errno.ENOENT:
                self._check(rc, "batch lookup")
            kr, vr = keys.raw, vals.raw
            for i in range(count.value):
                out.append((kr[i * self.key_size:(i + 1) * self.key_size],
                            self._decode(vr[i * self._vbuf_size:(i + 1) * self._vbuf_size])))
            if rc == -errno.ENOENT:
                return out
            ctypes.memmove(in_b, out_b, len(out_b))
            first = False

    def update_batch(self, pairs: Iterable[tuple[Keyish, Any]], flags: int = BPF_ANY) -> int:
        """Write many elements in one syscall (falls back to one at a time)."""
        pairs = list(pairs)
        if not pairs:
            return 0
        keys = b"".join(bytes(self._key(k)) for k, _ in pairs)
        vals = b"".join(bytes(self._value(v)) for _, v in pairs)
        count = ctypes.c_uint32(len(pairs))
        opts = L.bpf_map_batch_opts(sz=ctypes.sizeof(L.bpf_map_batch_opts), elem_flags=flags)
        rc = L.lib.bpf_map_update_batch(self.fd, keys, vals, ctypes.byref(count),
                                        ctypes.byref(opts))
        if rc in (-errno.EINVAL, -errno.ENOTSUP, -524) and count.value == 0:
            for k, v in pairs:
                self.update(k, v, flags)
            return len(pairs)
        self._check(rc, f"batch update (after {count.value} of {len(pairs)} elements)")
        return count.value

    def delete_batch(self, keys: Iterable[Keyish]) -> int:
        ks = list(keys)
        n = 0
        for k in ks:
            n += self.delete(k)
        return n

    def clear(self) -> int:
        return self.delete_batch(list(self.keys()))

    def _check(self, rc: int, op: str) -> None:
        if rc < 0:
            hint = ""
            if rc == -errno.E2BIG:
                hint = f": map is full ({self.max_entries} entries)"
            raise KernelError(f"map `{self.name}`: {op} failed{hint}", errno=-rc)


def _buf(x: Any, size: int, what: str) -> ctypes.Array[ctypes.c_char]:
    if isinstance(x, int):
        if size not in (1, 2, 4, 8):
            raise KernelError(f"{what}: an int needs a 1-, 2-, 4- or 8-byte field, not {size}")
        raw = x.to_bytes(size, "little", signed=x < 0)
    else:
        raw = bytes(x)
    if len(raw) != size:
        raise KernelError(f"{what}: expected {size} bytes, got {len(raw)}")
    return ctypes.create_string_buffer(raw, size)
