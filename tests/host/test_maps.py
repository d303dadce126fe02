"""Map operations on real kernel maps: hash, per-CPU array, LPM trie, batches, full maps."""

from __future__ import annotations

import errno
import struct
from collections.abc import Iterator

import pytest

from agent.errors import KernelError
from agent.kernel import BPF_NOEXIST, BpfObject, Map
from agent.kernel import libbpf as L
from tests.support import BPF_DIR


@pytest.fixture
def obj() -> Iterator[BpfObject]:
    with BpfObject.open(BPF_DIR / "tests" / "maps_test.bpf.o") as o:
        o.load()
        yield o


def test_hash_single_ops(obj: BpfObject) -> None:
    m = obj.map("t_hash")
    assert (m.key_size, m.value_size, m.max_entries) == (4, 8, 8192)
    assert m.lookup(7) is None
    m.update(7, 70)
    assert m.lookup(7) == (70).to_bytes(8, "little")
    with pytest.raises(KernelError) as err:
        m.update(7, 71, BPF_NOEXIST)
    assert err.value.errno == errno.EEXIST and "map `t_hash`" in str(err.value)
    assert m.delete(7) is True
    assert m.delete(7) is False


def test_hash_batch_and_iterate(obj: BpfObject) -> None:
    m = obj.map("t_hash")
    pairs = [(i, i * 3) for i in range(5000)]
    assert m.update_batch(pairs) == 5000
    items = dict(m.items())
    assert len(items) == 5000
    assert items[(4999).to_bytes(4, "little")] == (4999 * 3).to_bytes(8, "little")
    assert sorted(int.from_bytes(k, "little") for k in m) == list(range(5000))
    assert m.clear() == 5000
    assert m.items() == []


def test_full_map_says_so(obj: BpfObject) -> None:
    m = obj.map("t_hash")
    m.update_batch((i, 0) for i in range(m.max_entries))
    with pytest.raises(KernelError) as err:
        m.update(10**6, 1)
    assert err.value.errno == errno.E2BIG and "map is full (8192 entries)" in str(err.value)


def test_wrong_sizes_are_refused(obj: BpfObject) -> None:
    m = obj.map("t_hash")
    with pytest.raises(KernelError, match="expected 4 bytes, got 3"):
        m.lookup(b"abc")


def test_percpu_values_per_cpu(obj: BpfObject) -> None:
    m = obj.map("t_percpu")
    ncpu = L.possible_cpus()
    m.update(1, [i.to_bytes(4, "little") for i in range(ncpu)])
    v = m.lookup(1)
    assert [int.from_bytes(x, "little") for x in v] == list(range(ncpu))


def _lpm(prefix_bits: int, data: bytes) -> bytes:
    return struct.pack("<I", prefix_bits) + data.ljust(8, b"\0")


def test_lpm_longest_prefix(obj: BpfObject) -> None:
    m = obj.map("t_lpm")
    m.update(_lpm(16, b"\x0a\x00"), 1)  # 10.0/16
    m.update(_lpm(24, b"\x0a\x00\x05"), 2)  # 10.0.5/24
    assert m.lookup(_lpm(64, b"\x0a\x00\x05\x09")) == (2).to_bytes(4, "little")
    assert m.lookup(_lpm(64, b"\x0a\x00\x06\x09")) == (1).to_bytes(4, "little")
    assert m.lookup(_lpm(64, b"\x0b\x00\x00\x00")) is None
    assert len(m.items()) == 2


def test_map_from_pin(obj: BpfObject, tmp_path: object) -> None:
    from agent.kernel.fs import BPFFS, ensure_bpffs
    ensure_bpffs()
    path = BPFFS / "manul-test-map-pin"
    rc = L.lib.bpf_obj_pin(obj.map("t_hash").fd, str(path).encode())
    assert rc == 0
    try:
        obj.map("t_hash").update(1, 11)
        pinned = Map.from_pin(path)
        assert pinned.name == "t_hash" and pinned.lookup(1) == (11).to_bytes(8, "little")
        pinned.close()
    finally:
        path.unlink()
    with pytest.raises(KernelError, match="cannot open pinned map"):
        Map.from_pin(path)
