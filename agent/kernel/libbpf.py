"""ctypes binding to the system libbpf (Debian's libbpf1, 1.1 or newer).

Covers what Manul needs and no more: objects, programs, maps, links, BTF
and the low-level map syscalls. Everything else in `agent.kernel` calls
through here; nothing outside `agent.kernel` imports it.

libbpf 1.x returns NULL/negative errno and sets `errno`; `check_ptr` and
`check_rc` turn both into `KernelError`. libbpf's own messages (including
the verifier log on a failed load) are captured per operation with
`capture()` so that an error can carry them.
"""

from __future__ import annotations

import contextlib
import ctypes
import ctypes.util
import threading
from collections.abc import Iterator
from ctypes import (
    CFUNCTYPE,
    POINTER,
    c_bool,
    c_char_p,
    c_int,
    c_size_t,
    c_uint32,
    c_uint64,
    c_void_p,
)

from agent.errors import KernelError

_NAME = "libbpf.so.1"
try:
    lib = ctypes.CDLL(_NAME, use_errno=True)
except OSError as e:  # pragma: no cover - depends on the machine
    raise KernelError(
        f"cannot load `{_NAME}`: install Debian's `libbpf1` package ({e})") from e
_libc = ctypes.CDLL(ctypes.util.find_library("c"), use_errno=True)


class bpf_uprobe_opts(ctypes.Structure):
    _fields_ = (
        ("sz", c_size_t),
        ("ref_ctr_offset", c_size_t),
        ("bpf_cookie", c_uint64),
        ("retprobe", c_bool),
        ("func_name", c_char_p),
    )


class bpf_map_batch_opts(ctypes.Structure):
    _fields_ = (("sz", c_size_t), ("elem_flags", c_uint64), ("flags", c_uint64))


def _fn(name: str, restype: object, *argtypes: object) -> None:
    f = getattr(lib, name)
    f.restype = restype
    f.argtypes = argtypes


P = c_void_p
# objects
_fn("bpf_object__open_file", P, c_char_p, P)
_fn("bpf_object__load", c_int, P)
_fn("bpf_object__close", None, P)
_fn("bpf_object__name", c_char_p, P)
_fn("bpf_object__next_program", P, P, P)
_fn("bpf_object__next_map", P, P, P)
_fn("bpf_object__btf", P, P)
# programs
_fn("bpf_program__name", c_char_p, P)
_fn("bpf_program__section_name", c_char_p, P)
_fn("bpf_program__type", c_int, P)
_fn("bpf_program__expected_attach_type", c_int, P)
_fn("bpf_program__set_autoload", c_int, P, c_bool)
_fn("bpf_program__autoload", c_bool, P)
_fn("bpf_program__fd", c_int, P)
_fn("bpf_program__attach", P, P)
_fn("bpf_program__attach_cgroup", P, P, c_int)
_fn("bpf_program__attach_tracepoint", P, P, c_char_p, c_char_p)
_fn("bpf_program__attach_raw_tracepoint", P, P, c_char_p)
_fn("bpf_program__attach_uprobe_opts", P, P, c_int, c_char_p, c_size_t,
    POINTER(bpf_uprobe_opts))
# maps
_fn("bpf_map__name", c_char_p, P)
_fn("bpf_map__fd", c_int, P)
_fn("bpf_map__type", c_int, P)
_fn("bpf_map__key_size", c_uint32, P)
_fn("bpf_map__value_size", c_uint32, P)
_fn("bpf_map__max_entries", c_uint32, P)
_fn("bpf_map__set_max_entries", c_int, P, c_uint32)
_fn("bpf_map__set_pin_path", c_int, P, c_char_p)
_fn("bpf_map__is_pinned", c_bool, P)
_fn("bpf_map__initial_value", P, P, POINTER(c_size_t))
_fn("bpf_map__set_initial_value", c_int, P, c_void_p, c_size_t)
# links
_fn("bpf_link__fd", c_int, P)
_fn("bpf_link__pin", c_int, P, c_char_p)
_fn("bpf_link__unpin", c_int, P)
_fn("bpf_link__open", P, c_char_p)
_fn("bpf_link__destroy", c_int, P)
_fn("bpf_link__update_program", c_int, P, P)
# BTF
_fn("btf__parse", P, c_char_p, P)
_fn("btf__free", None, P)
_fn("btf__type_cnt", c_uint32, P)
_fn("btf__type_by_id", P, P, c_uint32)
_fn("btf__name_by_offset", c_char_p, P, c_uint32)
_fn("btf__find_by_name_kind", c_int, P, c_char_p, c_uint32)
_fn("btf__resolve_size", ctypes.c_long, P, c_uint32)
# low-level syscalls (bpf.h)
_fn("bpf_map_lookup_elem", c_int, c_int, c_void_p, c_void_p)
_fn("bpf_map_update_elem", c_int, c_int, c_void_p, c_void_p, c_uint64)
_fn("bpf_map_delete_elem", c_int, c_int, c_void_p)
_fn("bpf_map_get_next_key", c_int, c_int, c_void_p, c_void_p)
_fn("bpf_map_lookup_batch", c_int, c_int, c_void_p, c_void_p, c_void_p, c_void_p,
    POINTER(c_uint32), POINTER(bpf_map_batch_opts))
_fn("bpf_map_update_batch", c_int, c_int, c_void_p, c_void_p, POINTER(c_uint32),
    POINTER(bpf_map_batch_opts))
_fn("bpf_map_delete_batch", c_int, c_int, c_void_p, POINTER(c_uint32),
    POINTER(bpf_map_batch_opts))
_fn("bpf_obj_pin", c_int, c_int, c_char_p)
_fn("bpf_obj_get", c_int, c_char_p)
_fn("bpf_obj_get_info_by_fd", c_int, c_int, c_void_p, POINTER(c_uint32))
_fn("bpf_prog_get_fd_by_id", c_int, c_uint32)
_fn("bpf_prog_query", c_int, c_int, c_int, c_uint32, POINTER(c_uint32), POINTER(c_uint32),
    POINTER(c_uint32))
_fn("libbpf_num_possible_cpus", c_int)

_libc.vsnprintf.restype = c_int
_libc.vsnprintf.argtypes = (c_char_p, c_size_t, c_char_p, c_void_p)

# -- libbpf's log, captured per operation ------------------------------------

_PRINT_FN = CFUNCTYPE(c_int, c_int, c_char_p, c_void_p)
_capture_lock = threading.RLock()
_captured: list[str] = []
# One buffer, reused under _capture_lock: a verifier log can be megabytes and
# its last lines (the error) are the ones that matter.
_print_buf = ctypes.create_string_buffer(8 << 20)
_capturing = threading.Event()
LIBBPF_WARN, LIBBPF_INFO, LIBBPF_DEBUG = 0, 1, 2


def _print_py(level: int, fmt: bytes, args: int) -> int:
    if not _capturing.is_set() or level == LIBBPF_DEBUG:
        return 0
    n = _libc.vsnprintf(_print_buf, len(_print_buf), fmt, args)
    text = _print_buf.raw[: max(0, min(n, len(_print_buf) - 1))].decode(errors="replace")
    if n >= len(_print_buf):
        text += f"\n[... {n - len(_print_buf) + 1} more bytes of libbpf output cut]"
    _captured.append(text)
    return 0


_print = _PRINT_FN(_print_py)  # kept referenced for the life of the process
_fn("libbpf_set_print", c_void_p, _PRINT_FN)
lib.libbpf_set_print(_print)


@contextlib.contextmanager
def capture() -> Iterator[list[str]]:
    """Collect libbpf's messages while the block runs (one block at a time)."""
    with _capture_lock:
        _captured.clear()
        _capturing.set()
        out: list[str] = []
        try:
            yield out
        finally:
            _capturing.clear()
            out.extend(_captured)
            _captured.clear()


def errno_now() -> int:
    return ctypes.get_errno()


def check_ptr(ptr: int | None, what: str, **ctx: str | None) -> int:
    """Raise KernelError when a libbpf call returned NULL (errno says why)."""
    if not ptr:
        raise KernelError(what, errno=errno_now(), obj=ctx.get("obj"),
                          program=ctx.get("program"), log=ctx.get("log") or "")
    return ptr


def check_rc(rc: int, what: str, **ctx: str | None) -> int:
    """Raise KernelError when a libbpf call returned a negative errno."""
    if rc < 0:
        raise KernelError(what, errno=-rc, obj=ctx.get("obj"),
                          program=ctx.get("program"), log=ctx.get("log") or "")
    return rc


def possible_cpus() -> int:
    n = int(lib.libbpf_num_possible_cpus())
    return check_rc(n, "cannot count possible CPUs")


# Program types Manul uses (linux/bpf.h, enum bpf_prog_type).
PROG_TYPE_TRACEPOINT = 5
PROG_TYPE_CGROUP_SKB = 8
PROG_TYPE_CGROUP_SOCK = 9
PROG_TYPE_CGROUP_DEVICE = 15
PROG_TYPE_RAW_TRACEPOINT = 17
PROG_TYPE_CGROUP_SOCK_ADDR = 18
PROG_TYPE_CGROUP_SYSCTL = 23
PROG_TYPE_CGROUP_SOCKOPT = 25
PROG_TYPE_TRACING = 26
PROG_TYPE_LSM = 29
CGROUP_PROG_TYPES = frozenset({
    PROG_TYPE_CGROUP_SKB, PROG_TYPE_CGROUP_SOCK, PROG_TYPE_CGROUP_DEVICE,
    PROG_TYPE_CGROUP_SOCK_ADDR, PROG_TYPE_CGROUP_SYSCTL, PROG_TYPE_CGROUP_SOCKOPT,
})

# Map types (enum bpf_map_type) with special handling.
MAP_TYPE_HASH = 1
MAP_TYPE_ARRAY = 2
MAP_TYPE_PERCPU_HASH = 5
MAP_TYPE_PERCPU_ARRAY = 6
MAP_TYPE_LRU_PERCPU_HASH = 10
MAP_TYPE_LPM_TRIE = 11
MAP_TYPE_RINGBUF = 27
PERCPU_MAP_TYPES = frozenset({MAP_TYPE_PERCPU_HASH, MAP_TYPE_PERCPU_ARRAY,
                              MAP_TYPE_LRU_PERCPU_HASH})

# BTF kinds (linux/btf.h).
BTF_KIND_INT, BTF_KIND_PTR, BTF_KIND_ARRAY, BTF_KIND_STRUCT, BTF_KIND_UNION = 1, 2, 3, 4, 5
BTF_KIND_TYPEDEF, BTF_KIND_VAR, BTF_KIND_DATASEC = 8, 14, 15
BTF_KIND_FUNC, BTF_KIND_FUNC_PROTO = 12, 13
