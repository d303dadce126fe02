"""The reference evaluator's LPM lookup agrees with the kernel's LPM trie.

`compiler.evaluate.LpmTrie` is what the differential tests trust to behave
like `BPF_MAP_TYPE_LPM_TRIE`. Here the real kernel is asked: every compiled
entry of the corpus goes into real LPM maps (created with the key and value
sizes of `compiler.layout`), and the kernel's longest-prefix lookup (the
same `trie_lookup_elem` a BPF program calls) must return the same value as
the evaluator for the keys the BPF side builds. Needs CAP_BPF; without it
the test says so and skips.
"""

from __future__ import annotations

import ctypes
import ctypes.util
import ipaddress
import os
import platform

import pytest
from cedar_corpus import CASES
from cedar_oracle import Case, requests
from hypothesis import HealthCheck, Phase, given, settings
from hypothesis import strategies as st

from compiler import layout
from compiler.evaluate import LpmTrie
from compiler.regions import normalize_address
from compiler.result import MapEntry

_NR_BPF = {"x86_64": 321, "aarch64": 280}.get(platform.machine())
_libc = ctypes.CDLL(ctypes.util.find_library("c"), use_errno=True)
BPF_MAP_CREATE, BPF_MAP_LOOKUP_ELEM, BPF_MAP_UPDATE_ELEM = 0, 1, 2
BPF_MAP_TYPE_LPM_TRIE, BPF_F_NO_PREALLOC = 11, 1


def _bpf(cmd: int, attr: ctypes.Array[ctypes.c_char]) -> int:
    assert _NR_BPF is not None
    rc = int(_libc.syscall(_NR_BPF, cmd, attr, ctypes.sizeof(attr)))
    if rc < 0:
        err = ctypes.get_errno()
        raise OSError(err, os.strerror(err))
    return rc


class KernelLpm:
    def __init__(self, key_size: int, value_size: int, entries: list[MapEntry]):
        attr = ctypes.create_string_buffer(128)
        ctypes.memmove(
            attr,
            (ctypes.c_uint32 * 5)(
                BPF_MAP_TYPE_LPM_TRIE, key_size, value_size, max(len(entries), 1), BPF_F_NO_PREALLOC
            ),
            20,
        )
        self.fd = _bpf(BPF_MAP_CREATE, attr)
        self.value_size = value_size
        for e in entries:
            self._op(BPF_MAP_UPDATE_ELEM, e.key, ctypes.create_string_buffer(e.value, len(e.value)))

    def _op(self, cmd: int, key: bytes, value: ctypes.Array[ctypes.c_char]) -> int:
        k = ctypes.create_string_buffer(key, len(key))
        attr = ctypes.create_string_buffer(128)
        base = ctypes.addressof(attr)
        ctypes.memmove(base, ctypes.byref(ctypes.c_uint32(self.fd)), 4)  # map_fd
        ctypes.memmove(base + 8, ctypes.byref(ctypes.c_uint64(ctypes.addressof(k))), 8)  # key
        ctypes.memmove(base + 16, ctypes.byref(ctypes.c_uint64(ctypes.addressof(value))), 8)
        return _bpf(cmd, attr)

    def lookup(self, key: bytes) -> bytes | None:
        out = ctypes.create_string_buffer(self.value_size)
        try:
            self._op(BPF_MAP_LOOKUP_ELEM, key, out)
        except FileNotFoundError:
            return None
        return out.raw

    def close(self) -> None:
        os.close(self.fd)


def _kernel_available() -> str | None:
    if _NR_BPF is None:
        return f"no bpf syscall number for {platform.machine()}"
    try:
        KernelLpm(8, 4, []).close()
    except OSError as e:
        return f"cannot create an LPM trie here ({e.strerror}): needs CAP_BPF"
    return None


_WHY = _kernel_available()
pytestmark = pytest.mark.skipif(_WHY is not None, reason=_WHY or "")

PATH_KEY = ctypes.sizeof(layout.manul_path_key)
PATH_VAL = ctypes.sizeof(layout.manul_path_val)
NET_KEY = ctypes.sizeof(layout.manul_net_key)
NET_VAL = ctypes.sizeof(layout.manul_net_val)


@pytest.mark.parametrize("case", CASES[::3], ids=[c.name for c in CASES[::3]])
def test_kernel_lpm_agrees(case: Case) -> None:
    comp = case.compile()
    paths = [e for s in comp.sandboxes for e in s.maps["sandbox_paths"]]
    nets = [e for s in comp.sandboxes for e in s.maps["sandbox_net"]]
    ids = {s.name: s.sandbox_id for s in comp.sandboxes}
    kpaths, knet = KernelLpm(PATH_KEY, PATH_VAL, paths), KernelLpm(NET_KEY, NET_VAL, nets)
    ppaths, pnet = LpmTrie(paths, layout.PATH_BYTES + 4), LpmTrie(nets, 24)
    try:

        @settings(
            max_examples=4,
            deadline=None,
            database=None,
            phases=(Phase.generate,),  # a failure lists the request; shrinking adds nothing
            suppress_health_check=list(HealthCheck),
        )
        @given(st.lists(requests(case, comp), min_size=100, max_size=100))
        def check(reqs: list) -> None:  # type: ignore[type-arg]
            for r in reqs:
                sid = ids[r.sandbox]
                if r.action == "connectNetwork":
                    key = layout.net_lookup_key(sid, normalize_address(r.ip))
                    assert knet.lookup(key) == pnet.lookup(key), r
                else:
                    key = layout.path_lookup_key(sid, r.path.encode())
                    assert kpaths.lookup(key) == ppaths.lookup(key), r

        check()
        # And every entry's own key finds itself (no entry is shadowed).
        for e in paths:
            assert kpaths.lookup(e.key) == e.value == ppaths.lookup(e.key)
        for e in nets:
            assert knet.lookup(e.key) == e.value == pnet.lookup(e.key)
        # An unknown sandbox misses: the BPF side denies.
        assert kpaths.lookup(layout.path_lookup_key(999, b"/")) is None
        assert knet.lookup(layout.net_lookup_key(999, ipaddress.ip_address("1.2.3.4"))) is None
    finally:
        kpaths.close()
        knet.close()
