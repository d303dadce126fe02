"""Python mirrors of the runtime structs in bpf/include/manul.h.

Each ctypes structure here has the C struct's name in MIRRORS and its
members under the same names; tests/host/test_abi.py checks every size and
offset against the BTF of the compiled objects. Policy-map layouts are
mirrored in compiler/layout.py instead.
"""

from __future__ import annotations

import ctypes
from ctypes import c_char, c_uint8, c_uint16, c_uint32, c_uint64
from typing import TypeVar

COMM_LEN = 16
PATH_MAX = 256

# enum manul_err
ERR_RINGBUF_FULL, ERR_MAP_UPDATE, ERR_READ, ERR_TRUNCATED = 0, 1, 2, 3
ERR_NO_SCRATCH, ERR_NO_PATH, ERR_NO_STORAGE = 4, 5, 6
ERR_MAX = 8
ERR_NAMES = {ERR_RINGBUF_FULL: "ringbuf_full", ERR_MAP_UPDATE: "map_update",
             ERR_READ: "read", ERR_TRUNCATED: "truncated", ERR_NO_SCRATCH: "no_scratch",
             ERR_NO_PATH: "no_path", ERR_NO_STORAGE: "no_storage"}

# enum manul_event_type
EV_EXEC, EV_BENCH, EV_TEST, EV_TLS, EV_QUARANTINE, EV_SANDBOX = 1, 2, 3, 4, 5, 6
EV_BEHAVIOUR = 7

# TLS capture (manul.h: TLS discovery)
TLS_CAPTURE = 4096
TLS_BUF = 2 * TLS_CAPTURE
TLS_COMPLETE, TLS_TRUNCATED, TLS_MULTISEG, TLS_GAP, TLS_NO_PROC = 1, 2, 4, 8, 16


class manul_event_hdr(ctypes.Structure):
    _fields_ = (("type", c_uint16), ("size", c_uint16), ("cpu", c_uint32),
                ("ktime_ns", c_uint64))


class manul_exec_event(ctypes.Structure):
    _fields_ = (("hdr", manul_event_hdr), ("pid", c_uint32), ("tgid", c_uint32),
                ("ppid", c_uint32), ("uid", c_uint32), ("cgroup_id", c_uint64),
                ("comm", c_char * COMM_LEN), ("filename", c_char * PATH_MAX))


# Behaviour (manul.h: bpf/baseline.bpf.c)
BL_EXEC, BL_READ, BL_WRITE, BL_CONNECT, BL_LISTEN, BL_UNIX = 1, 2, 3, 4, 5, 6
BL_KINDS = 8
BL_F_READ, BL_F_WRITE, BL_F_TRUNCATED, BL_F_PROC_OTHER, BL_F_SECRET = 1, 2, 4, 8, 16
BL_F_ANON = 32
BL_PREFIX_MAX = 240
BL_SCOPE_AGENT = 1 << 63
BL_MAX_LEVEL = 16


class manul_bl_key(ctypes.Structure):
    _fields_ = (("scope", c_uint64), ("kind", c_uint32), ("port", c_uint16),
                ("proto", c_uint8), ("secret", c_uint8), ("addr", c_uint8 * 16),
                ("path", c_char * PATH_MAX))


class manul_bl_prefix(ctypes.Structure):
    _fields_ = (("prefixlen", c_uint32), ("scope", c_uint8 * 8), ("kind", c_uint32),
                ("path", c_char * BL_PREFIX_MAX))


class manul_bl_inode(ctypes.Structure):
    _fields_ = (("ino", c_uint64), ("dev", c_uint32), ("_pad", c_uint32))


class manul_bl_counts(ctypes.Structure):
    _fields_ = (("seen", c_uint64), ("sent", c_uint64), ("known", c_uint64), ("lost", c_uint64))


class manul_bl_file(ctypes.Structure):
    _fields_ = (("scope", c_uint64), ("dentry", c_uint64), ("mnt", c_uint64), ("ino", c_uint64),
                ("generation", c_uint32), ("kind", c_uint32))


class manul_bl_event(ctypes.Structure):
    _fields_ = (("hdr", manul_event_hdr), ("key", manul_bl_key), ("cgroup_id", c_uint64),
                ("pid", c_uint32),
                ("tgid", c_uint32), ("ppid", c_uint32), ("uid", c_uint32),
                ("flags", c_uint32), ("dev", c_uint32), ("ino", c_uint64),
                ("comm", c_char * COMM_LEN),
                ("pcomm", c_char * COMM_LEN))


class manul_bench_event(ctypes.Structure):
    _fields_ = (("hdr", manul_event_hdr), ("seq", c_uint64), ("payload", c_uint64 * 4))


class manul_test_event(ctypes.Structure):
    _fields_ = (("hdr", manul_event_hdr), ("pid", c_uint32), ("tgid", c_uint32),
                ("cgroup_id", c_uint64), ("kind", c_uint32), ("value", c_uint32),
                ("comm", c_char * COMM_LEN))


class manul_tls_sk(ctypes.Structure):
    _fields_ = (("state", c_uint32), ("isn", c_uint32), ("got", c_uint32),
                ("next_rec", c_uint32), ("hs_total", c_uint32), ("hs_seen", c_uint32))


class manul_sock_proc(ctypes.Structure):
    _fields_ = (("pid", c_uint32), ("tgid", c_uint32), ("uid", c_uint32), ("_pad", c_uint32),
                ("cgroup_id", c_uint64), ("comm", c_char * COMM_LEN))


class manul_tls_event(ctypes.Structure):
    _fields_ = (("hdr", manul_event_hdr), ("cookie", c_uint64), ("cgroup_id", c_uint64),
                ("pid", c_uint32), ("tgid", c_uint32), ("uid", c_uint32), ("flags", c_uint32),
                ("family", c_uint16), ("sport", c_uint16), ("dport", c_uint16),
                ("len", c_uint16), ("saddr", c_uint8 * 16), ("daddr", c_uint8 * 16),
                ("comm", c_char * COMM_LEN), ("data", c_uint8 * TLS_BUF))


TLS_DATA_OFFSET = manul_tls_event.data.offset


class manul_addr_key(ctypes.Structure):
    _fields_ = (("prefixlen", c_uint32), ("addr", c_uint8 * 16))


class manul_quarantine_event(ctypes.Structure):
    _fields_ = (("hdr", manul_event_hdr), ("cgroup_id", c_uint64), ("pid", c_uint32),
                ("tgid", c_uint32), ("family", c_uint16), ("dport", c_uint16),
                ("_pad", c_uint32), ("daddr", c_uint8 * 16), ("comm", c_char * COMM_LEN))


# Sandbox enforcement (manul.h: Sandbox enforcement; policy maps: compiler/layout.py)
SBX_NAME_LEN = 128
SBX_POLICIES_LEN = 240
SBX_MAX_LEVEL = 63
SBX_CONNECT = 4  # manul_sandbox_event.action after the path slots 0..3
SBX_RAW_SOCKET = 5  # openRawSocket
SBX_CONFINE = 6  # Manul's built-in confinement (ptrace, mount, chroot, user namespaces)
# enum manul_sbx_op, by value: the operation that asked
SBX_OPS = ("open", "exec", "mmap", "mprotect", "create", "mkdir", "unlink", "rmdir",
           "symlink", "link", "rename", "truncate", "chmod", "chown", "connect", "sendmsg",
           "socket", "ptrace", "mount", "chroot", "userns", "setxattr", "utimes", "ioctl")
SBX_SOCK_RAW, SBX_SOCK_PACKET = 1, 2  # enum manul_sbx_sock_kind
SBX_DENIED, SBX_WOULD_DENY = 1, 2  # enum manul_sbx_verdict_kind
SBX_M_LSM, SBX_M_CGROUP, SBX_M_TRACEPOINT = 1, 2, 3  # enum manul_sbx_mechanism
SBX_EV_TRUNCATED, SBX_EV_NO_PATH, SBX_EV_DEGRADED = 1, 2, 4  # enum manul_sbx_event_flags
SBX_EV_REFER, SBX_EV_SUBTREE = 8, 16


class manul_sandbox_event(ctypes.Structure):
    _fields_ = (("hdr", manul_event_hdr), ("cgroup_id", c_uint64), ("bound_cgroup_id", c_uint64),
                ("generation", c_uint64), ("pid", c_uint32), ("tgid", c_uint32),
                ("ppid", c_uint32), ("uid", c_uint32), ("sandbox_id", c_uint32),
                ("rule_id", c_uint32), ("action", c_uint8), ("verdict", c_uint8),
                ("enforce", c_uint8), ("mechanism", c_uint8), ("proto", c_uint8),
                ("flags", c_uint8), ("family", c_uint16), ("port", c_uint16),
                ("path_len", c_uint16), ("op", c_uint8), ("_pad", c_uint8 * 3),
                ("addr", c_uint8 * 16),
                ("comm", c_char * COMM_LEN), ("path", c_char * PATH_MAX))


class manul_sandbox_config(ctypes.Structure):
    _fields_ = (("level_mask", c_uint64), ("min_level", c_uint32), ("max_level", c_uint32),
                ("generation", c_uint64), ("_reserved", c_uint64))


class manul_event_budget(ctypes.Structure):
    _fields_ = (("rate", c_uint32), ("burst", c_uint32))


class manul_sbx_count_key(ctypes.Structure):
    _fields_ = (("bound_cgroup_id", c_uint64), ("generation", c_uint64),
                ("sandbox_id", c_uint32), ("rule_id", c_uint32), ("action", c_uint8),
                ("verdict", c_uint8), ("enforce", c_uint8), ("mechanism", c_uint8),
                ("_pad", c_uint32))


SBX_TOTAL_SLOTS = 64


class manul_sbx_totals(ctypes.Structure):
    _fields_ = (("decisions", c_uint64 * SBX_TOTAL_SLOTS), ("held", c_uint64),
                ("untracked", c_uint64))


class manul_rate_bucket(ctypes.Structure):
    _fields_ = (("stamp_ns", c_uint64), ("tokens", c_uint64), ("held", c_uint64))


class manul_sandbox_meta(ctypes.Structure):
    _fields_ = (("generation", c_uint64), ("applied_ns", c_uint64), ("npaths", c_uint32),
                ("nnet", c_uint32), ("nrules", c_uint32), ("flags", c_uint32),
                ("digest", c_uint8 * 32), ("name", c_char * SBX_NAME_LEN),
                ("target", c_char * SBX_NAME_LEN))


class manul_sandbox_rule_key(ctypes.Structure):
    _fields_ = (("generation", c_uint64), ("rule_id", c_uint32), ("_pad", c_uint32))


class manul_sandbox_rule(ctypes.Structure):
    _fields_ = (("effect", c_uint8), ("truncated", c_uint8), ("npolicies", c_uint16),
                ("policies", c_char * SBX_POLICIES_LEN))


class manul_sandbox_bound(ctypes.Structure):
    _fields_ = (("bound_ns", c_uint64), ("level", c_uint32), ("_pad", c_uint32),
                ("path", c_char * SBX_NAME_LEN), ("target", c_char * SBX_NAME_LEN))


MIRRORS: dict[str, type[ctypes.Structure]] = {
    "manul_event_hdr": manul_event_hdr,
    "manul_exec_event": manul_exec_event,
    "manul_bench_event": manul_bench_event,
    "manul_test_event": manul_test_event,
    "manul_tls_sk": manul_tls_sk,
    "manul_sock_proc": manul_sock_proc,
    "manul_tls_event": manul_tls_event,
    "manul_addr_key": manul_addr_key,
    "manul_quarantine_event": manul_quarantine_event,
    "manul_sandbox_event": manul_sandbox_event,
    "manul_sandbox_config": manul_sandbox_config,
    "manul_sandbox_meta": manul_sandbox_meta,
    "manul_sbx_count_key": manul_sbx_count_key,
    "manul_sbx_totals": manul_sbx_totals,
    "manul_rate_bucket": manul_rate_bucket,
    "manul_event_budget": manul_event_budget,
    "manul_sandbox_rule_key": manul_sandbox_rule_key,
    "manul_sandbox_rule": manul_sandbox_rule,
    "manul_sandbox_bound": manul_sandbox_bound,
    "manul_bl_key": manul_bl_key,
    "manul_bl_prefix": manul_bl_prefix,
    "manul_bl_event": manul_bl_event,
    "manul_bl_inode": manul_bl_inode,
    "manul_bl_file": manul_bl_file,
    "manul_bl_counts": manul_bl_counts,
}


def event_type(record: bytes) -> int:
    """The `type` of a ring-buffer record (first two bytes, little-endian)."""
    return int.from_bytes(record[:2], "little")


T = TypeVar("T", bound=ctypes.Structure)


def decode(cls: type[T], record: bytes) -> T:
    """A ring-buffer record as its struct (copies; short records are zero-padded)."""
    n = ctypes.sizeof(cls)
    return cls.from_buffer_copy(record[:n].ljust(n, b"\0"))
