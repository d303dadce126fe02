"""Helpers for tests that need real cgroups and processes (see tests/conftest.py)."""

from __future__ import annotations

import contextlib
import json
import os
import signal
import subprocess
import sys
import textwrap
import time
import urllib.error
import urllib.request
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
BPF_DIR = ROOT / "build" / "bpf"
_ENTER = 'echo $$ > "$0/cgroup.procs" && exec "$@"'


class Cgroup:
    def __init__(self, path: Path) -> None:
        self.path = path
        self.id = os.stat(path).st_ino

    def argv(self, cmd: list[str]) -> list[str]:
        return ["sh", "-c", _ENTER, str(self.path), *cmd]

    def run(self, cmd: list[str], **kw: Any) -> subprocess.CompletedProcess[str]:
        kw.setdefault("capture_output", True)
        kw.setdefault("text", True)
        kw.setdefault("timeout", 60)
        return subprocess.run(self.argv(cmd), check=False, **kw)

    def popen(self, cmd: list[str], **kw: Any) -> subprocess.Popen[str]:
        kw.setdefault("text", True)
        return subprocess.Popen(self.argv(cmd), **kw)

    def python(self, code: str) -> Any:
        """Run Python code in this cgroup; it prints one JSON value, returned here."""
        r = self.run([sys.executable, "-c", code])
        if r.returncode != 0:
            raise AssertionError(f"child failed ({r.returncode}): {r.stderr}")
        return json.loads(r.stdout.strip().splitlines()[-1])

    def pids(self) -> list[int]:
        return [int(x) for x in (self.path / "cgroup.procs").read_text().split()]

    def destroy(self) -> None:
        for pid in self.pids():
            with contextlib.suppress(ProcessLookupError):
                os.kill(pid, signal.SIGKILL)
        for _ in range(100):
            try:
                self.path.rmdir()
                return
            except OSError:
                time.sleep(0.02)


def http_get(port: int, path: str) -> tuple[int, str]:
    """GET http://127.0.0.1:<port><path>: (status, body), an error status with its
    body, or (0, "") when nothing listens yet."""
    try:
        with urllib.request.urlopen(f"http://127.0.0.1:{port}{path}", timeout=5) as r:
            return r.status, r.read().decode()
    except urllib.error.HTTPError as e:
        return e.code, e.read().decode()
    except urllib.error.URLError:
        return 0, ""


def cgroup2_root() -> Path:
    with open("/proc/self/mounts") as f:
        for line in f:
            parts = line.split()
            if parts[2] == "cgroup2":
                return Path(parts[1])
    raise AssertionError("no cgroup v2 mount: these tests need cgroup v2")


# ---- sandbox tests: a long-lived syscall worker ------------------------------
#
# Starting a Python interpreter costs seconds in the software-emulated test
# VM, so sandbox tests start one worker per cgroup and drive hundreds of
# real syscalls through it: one JSON command per line on stdin, one JSON
# answer per line on stdout. Everything the worker needs is imported before
# it is sandboxed; after that it only makes the syscalls it is asked for.

WORKER = r'''
import ctypes, errno, fcntl, json, mmap, os, socket, subprocess, sys, time
libc = ctypes.CDLL(None, use_errno=True)
libc.mmap.restype = ctypes.c_void_p
libc.mmap.argtypes = (ctypes.c_void_p, ctypes.c_size_t, ctypes.c_int, ctypes.c_int,
                      ctypes.c_int, ctypes.c_long)
libc.mprotect.argtypes = (ctypes.c_void_p, ctypes.c_size_t, ctypes.c_int)
libc.munmap.argtypes = (ctypes.c_void_p, ctypes.c_size_t)
libc.ptrace.argtypes = (ctypes.c_long, ctypes.c_long, ctypes.c_void_p, ctypes.c_void_p)
libc.ptrace.restype = ctypes.c_long
libc.process_vm_readv.restype = ctypes.c_ssize_t
BUF = ctypes.create_string_buffer(b"manul", 64)
FDS = {}  # path -> a descriptor opened before the sandbox applied ("preopen")
MAP_FAILED = ctypes.c_void_p(-1).value


class IOVec(ctypes.Structure):
    _fields_ = (("base", ctypes.c_void_p), ("len", ctypes.c_size_t))
CLONE_NEWNET = 0x40000000
SIOCGIFFLAGS, SIOCSIFFLAGS, IFF_UP = 0x8913, 0x8914, 0x1
MODES = {"r": os.O_RDONLY, "w": os.O_WRONLY, "rw": os.O_RDWR}
listeners = []


def err(e):
    return e.errno if isinstance(e, OSError) and e.errno else -1


def do_open(path, mode):
    try:
        os.close(os.open(path, MODES[mode] | os.O_CLOEXEC | os.O_NOCTTY))
        return 0
    except OSError as e:
        return err(e)


def do_exec(path, args=None):
    """posix_spawn: 0 and the exit status, or the errno execve failed with."""
    try:
        pid = os.posix_spawn(path, [path] + list(args or []), {})
    except OSError as e:
        return err(e), None
    _, status = os.waitpid(pid, 0)
    return 0, os.waitstatus_to_exitcode(status)


def do_connect(family, addr, port, proto, timeout=2.0):
    fam = socket.AF_INET6 if family == 6 else socket.AF_INET
    kind = socket.SOCK_STREAM if proto == "tcp" else socket.SOCK_DGRAM
    with socket.socket(fam, kind) as s:
        s.settimeout(timeout)
        try:
            s.connect((addr, port))
            return 0
        except OSError as e:
            return err(e)


def do_sendto(family, addr, port):
    fam = socket.AF_INET6 if family == 6 else socket.AF_INET
    with socket.socket(fam, socket.SOCK_DGRAM) as s:
        try:
            s.sendto(b"x", (addr, port))
            return 0
        except OSError as e:
            return err(e)


def guard(fn, *args):
    """0, or the errno an OSError carried."""
    try:
        fn(*args)
        return 0
    except OSError as e:
        return err(e)


def path_op(c):
    """One operation that reaches a path (the escape suite's probes)."""
    op, p = c["op"], c.get("path")
    if op == "link":
        return guard(os.link, c["src"], c["dst"])
    if op == "rename":
        if c.get("exchange"):
            r = libc.renameat2(-100, c["src"].encode(), -100, c["dst"].encode(), 2)
            return 0 if r == 0 else ctypes.get_errno()
        return guard(os.rename, c["src"], c["dst"])
    if op == "unlink":
        return guard(os.unlink, p)
    if op == "rmdir":
        return guard(os.rmdir, p)
    if op == "mkdir":
        return guard(os.mkdir, p)
    if op == "mkfifo":
        return guard(os.mkfifo, p)
    if op == "symlink":
        return guard(os.symlink, c["target"], p)
    if op == "create":
        return guard(lambda: os.close(os.open(p, os.O_CREAT | os.O_EXCL | os.O_WRONLY, 0o644)))
    if op == "truncate":
        return guard(os.truncate, p, 0)
    if op == "chmod":
        return guard(os.chmod, p, 0o777)
    if op == "chown":
        return guard(os.chown, p, 1, 1)
    if op == "utime":  # with "fd": futimens through a read-only descriptor
        return guard(on_fd, p, lambda f: os.utime(f, (1, 1))) if c.get("fd") else \
            guard(os.utime, p, (1, 1))
    if op == "setxattr":  # trusted.*: what tmpfs takes on every kernel (root only)
        return guard(on_fd, p, lambda f: os.setxattr(f, "trusted.manul", b"1")) \
            if c.get("fd") else guard(os.setxattr, p, "trusted.manul", b"1")
    if op == "removexattr":
        return guard(os.removexattr, p, "trusted.manul")
    if op == "setflags":  # chattr(1): the inode flags, set again as they are, through
        return guard(set_flags, p)  # a read-only descriptor
    raise ValueError(op)


def on_fd(path, fn):
    """fn(fd) on a read-only descriptor of path (the f* form of a call)."""
    fd = os.open(path, os.O_RDONLY)
    try:
        fn(fd)
    finally:
        os.close(fd)


def set_flags(path):
    fd = os.open(path, os.O_RDONLY)
    try:
        buf = bytearray(8)
        fcntl.ioctl(fd, 0x80086601, buf)  # FS_IOC_GETFLAGS
        fcntl.ioctl(fd, 0x40086602, bytes(buf))  # FS_IOC_SETFLAGS
    finally:
        os.close(fd)


def map_exec(path, how):
    """mmap a file PROT_EXEC ("mmap"), or PROT_READ then mprotect PROT_EXEC; through
    a descriptor opened before the sandbox applied when there is one (so that only
    the mapping is decided, not the open)."""
    try:
        fd = os.dup(FDS[path]) if path in FDS else os.open(path, os.O_RDONLY)
    except OSError as e:
        return err(e)
    try:
        prot = mmap.PROT_READ | (mmap.PROT_EXEC if how == "mmap" else 0)
        addr = libc.mmap(None, 4096, prot, mmap.MAP_PRIVATE, fd, 0)
        if addr in (None, MAP_FAILED):
            return ctypes.get_errno()
        try:
            if how == "mprotect" and libc.mprotect(addr, 4096, mmap.PROT_READ | mmap.PROT_EXEC):
                return ctypes.get_errno()
            return 0
        finally:
            libc.munmap(addr, 4096)
    finally:
        os.close(fd)


def fastopen(family, addr, port):
    """sendto(MSG_FASTOPEN) on a fresh TCP socket: connects without connect()."""
    fam = socket.AF_INET6 if family == 6 else socket.AF_INET
    with socket.socket(fam, socket.SOCK_STREAM) as s:  # blocking: the connect completes
        try:
            s.sendto(b"x", socket.MSG_FASTOPEN, (addr, port))
            return 0
        except OSError as e:
            return err(e)


class UringParams(ctypes.Structure):
    _fields_ = (("sq_entries", ctypes.c_uint32), ("cq_entries", ctypes.c_uint32),
                ("flags", ctypes.c_uint32), ("sq_thread_cpu", ctypes.c_uint32),
                ("sq_thread_idle", ctypes.c_uint32), ("features", ctypes.c_uint32),
                ("wq_fd", ctypes.c_uint32), ("resv", ctypes.c_uint32 * 3),
                ("sq_off", ctypes.c_uint32 * 10), ("cq_off", ctypes.c_uint32 * 10))


def uring_submit(sqe, *, personality=False):
    """One submission through io_uring, by raw syscalls: the completion's
    result as an errno (0: done; 1000+errno: io_uring itself failed). With
    `personality`, the ring runs it with the credentials this process had
    before a credentials change (IORING_REGISTER_PERSONALITY, then
    setgroups): the cred override a stacked file system's own work has."""
    p = UringParams()
    fd = libc.syscall(425, 4, ctypes.byref(p))  # io_uring_setup
    if fd < 0:
        return 1000 + ctypes.get_errno()  # io_uring itself unavailable: not a decision
    try:
        if personality:
            pid = libc.syscall(427, fd, 9, None, 0)  # io_uring_register, REGISTER_PERSONALITY
            if pid < 0:
                return 1000 + ctypes.get_errno()
            os.setgroups(os.getgroups())  # a new cred: the registered one is now an override
            sqe[42:44] = pid.to_bytes(2, "little")
        sq_sz = p.sq_off[6] + p.sq_entries * 4  # array offset + entries
        cq_sz = p.cq_off[5] + p.cq_entries * 16  # cqes offset + entries
        sq = mmap.mmap(fd, max(sq_sz, cq_sz), mmap.MAP_SHARED,
                       mmap.PROT_READ | mmap.PROT_WRITE, offset=0)
        sqes = mmap.mmap(fd, p.sq_entries * 64, mmap.MAP_SHARED,
                         mmap.PROT_READ | mmap.PROT_WRITE, offset=0x10000000)
        cq = sq  # IORING_FEAT_SINGLE_MMAP (5.4+): one mapping for both rings
        sqes[0:64] = bytes(sqe)
        tail_off, mask_off, array_off = p.sq_off[1], p.sq_off[2], p.sq_off[6]
        tail = int.from_bytes(sq[tail_off:tail_off + 4], "little")
        idx = tail & int.from_bytes(sq[mask_off:mask_off + 4], "little")
        sq[array_off + 4 * idx:array_off + 4 * idx + 4] = (0).to_bytes(4, "little")
        sq[tail_off:tail_off + 4] = (tail + 1).to_bytes(4, "little")
        if libc.syscall(426, fd, 1, 1, 1, None, 0) < 0:  # io_uring_enter, GETEVENTS
            return 1000 + ctypes.get_errno()
        head = int.from_bytes(cq[p.cq_off[0]:p.cq_off[0] + 4], "little")
        cidx = head & int.from_bytes(cq[p.cq_off[2]:p.cq_off[2] + 4], "little")
        at = p.cq_off[5] + 16 * cidx
        res = int.from_bytes(cq[at + 8:at + 12], "little", signed=True)
        sqes.close()
        sq.close()
        return -res if res < 0 else 0
    finally:
        os.close(fd)


def uring_connect(family, addr, port):
    """connect() through io_uring (IORING_OP_CONNECT)."""
    fam = socket.AF_INET6 if family == 6 else socket.AF_INET
    sock = socket.socket(fam, socket.SOCK_STREAM)
    if family == 6:
        sa = (ctypes.c_ubyte * 28)()
        packed = (socket.AF_INET6).to_bytes(2, "little") + port.to_bytes(2, "big") + bytes(4) \
            + socket.inet_pton(socket.AF_INET6, addr) + bytes(4)
    else:
        sa = (ctypes.c_ubyte * 16)()
        packed = (socket.AF_INET).to_bytes(2, "little") + port.to_bytes(2, "big") \
            + socket.inet_aton(addr) + bytes(8)
    ctypes.memmove(sa, packed, len(packed))
    sqe = bytearray(64)
    sqe[0] = 16  # IORING_OP_CONNECT
    sqe[4:8] = sock.fileno().to_bytes(4, "little", signed=True)
    sqe[8:16] = len(packed).to_bytes(8, "little")  # off: addrlen
    sqe[16:24] = ctypes.addressof(sa).to_bytes(8, "little")  # addr
    try:
        return uring_submit(sqe)
    finally:
        sock.close()


def uring_setxattr(path, personality):
    """setxattr() through io_uring (IORING_OP_SETXATTR, 5.19+), optionally
    with an earlier cred as the ring's personality."""
    name = ctypes.create_string_buffer(b"trusted.manul")
    value = ctypes.create_string_buffer(b"1", 1)
    cpath = ctypes.create_string_buffer(path.encode())
    sqe = bytearray(64)
    sqe[0] = 42  # IORING_OP_SETXATTR
    sqe[8:16] = ctypes.addressof(value).to_bytes(8, "little")  # addr2: the value
    sqe[16:24] = ctypes.addressof(name).to_bytes(8, "little")  # addr: the name
    sqe[24:28] = (1).to_bytes(4, "little")  # len: the value's
    sqe[48:56] = ctypes.addressof(cpath).to_bytes(8, "little")  # addr3: the path
    return uring_submit(sqe, personality=personality)


def raw_socket(kind):
    try:
        if kind == "packet":
            s = socket.socket(socket.AF_PACKET, socket.SOCK_RAW, 0)
        else:
            s = socket.socket(socket.AF_INET, socket.SOCK_RAW, socket.IPPROTO_UDP)
        s.close()
        return 0
    except OSError as e:
        return err(e)


def vm_read(pid, addr):
    """process_vm_readv of 5 bytes at `addr` in `pid` (PTRACE_MODE_ATTACH)."""
    buf = ctypes.create_string_buffer(8)
    local, remote = IOVec(ctypes.addressof(buf), 5), IOVec(addr, 5)
    n = libc.process_vm_readv(pid, ctypes.byref(local), 1, ctypes.byref(remote), 1, 0)
    return ctypes.get_errno() if n < 0 else 0


def ptrace_attach(pid):
    if libc.ptrace(16, pid, None, None) != 0:  # PTRACE_ATTACH
        return ctypes.get_errno()
    os.waitpid(pid, 0)
    libc.ptrace(17, pid, None, None)  # PTRACE_DETACH
    return 0


def in_child(what):
    """Fork; the child tries `what` in namespaces of its own and exits with the errno.
    (The mount goes on /tmp of a mount namespace of its own, which dies with it.)"""
    pid = os.fork()
    if pid == 0:
        code = 0
        try:
            if what == "userns":
                if libc.unshare(0x10000000) != 0:  # CLONE_NEWUSER
                    code = ctypes.get_errno()
            elif what == "mount":
                if libc.unshare(0x00020000) != 0:  # CLONE_NEWNS
                    code = 100 + ctypes.get_errno()
                elif libc.mount(b"tmpfs", b"/tmp", b"tmpfs", 0, None) != 0:
                    code = ctypes.get_errno()
            elif what == "chroot":
                os.chroot("/tmp")
        except OSError as e:
            code = err(e)
        os._exit(code)
    _, status = os.waitpid(pid, 0)
    return os.waitstatus_to_exitcode(status)


def netns(anyip):
    """A network namespace of our own with lo up (and every address local)."""
    if libc.unshare(CLONE_NEWNET) != 0:
        return ctypes.get_errno()
    import fcntl, struct
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as s:
        req = struct.pack("16sh14x", b"lo", 0)
        flags = struct.unpack("16sh14x", fcntl.ioctl(s, SIOCGIFFLAGS, req))[1]
        fcntl.ioctl(s, SIOCSIFFLAGS, struct.pack("16sh14x", b"lo", flags | IFF_UP))
    if anyip:
        for cmd in (["ip", "route", "add", "local", "0.0.0.0/0", "dev", "lo"],
                    ["ip", "-6", "route", "add", "local", "::/0", "dev", "lo"]):
            subprocess.run(cmd, check=True)
    return 0


def listen(ports, addr="::"):
    for p in ports:
        s = socket.socket(socket.AF_INET6, socket.SOCK_STREAM)
        s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        s.setsockopt(socket.IPPROTO_IPV6, socket.IPV6_V6ONLY, 0)
        s.bind((addr, p))
        s.listen(4096)
        listeners.append(s)
    return 0


def open_loop(path, seconds):
    """Open `path` for reading as fast as possible; count the opens that got through."""
    n = ok = 0
    end = time.monotonic() + seconds
    while True:
        for _ in range(64):
            try:
                os.close(os.open(path, os.O_RDONLY))
                ok += 1
            except OSError:
                pass
        n += 64
        if time.monotonic() >= end:
            return n, ok


def run(c):
    op = c["op"]
    if op == "pid":
        return {"pid": os.getpid()}
    if op == "chroot":
        os.chroot(c["path"])
        os.chdir("/")
        return {"errno": 0}
    if op == "netns":
        return {"errno": netns(c.get("anyip", False))}
    if op == "listen":
        return {"errno": listen(c["ports"], c.get("addr", "::"))}
    if op == "open":
        return {"errno": do_open(c["path"], c.get("mode", "r"))}
    if op == "exec":
        e, code = do_exec(c["path"], c.get("args"))
        return {"errno": e, "exit": code}
    if op == "connect":
        return {"errno": do_connect(c["family"], c["addr"], c["port"], c.get("proto", "tcp"))}
    if op == "sendto":
        return {"errno": do_sendto(c["family"], c["addr"], c["port"])}
    if op == "open_loop":
        n, ok = open_loop(c["path"], c["seconds"])
        return {"n": n, "ok": ok}
    if op in ("link", "rename", "unlink", "rmdir", "mkdir", "mkfifo", "symlink", "create",
              "truncate", "chmod", "chown", "utime", "setxattr", "removexattr", "setflags"):
        return {"errno": path_op(c)}
    if op == "preopen":
        for p in c["paths"]:
            FDS[p] = os.open(p, os.O_RDONLY | os.O_CLOEXEC)
        return {"errno": 0}
    if op in ("mmap", "mprotect"):
        return {"errno": map_exec(c["path"], op)}
    if op == "fastopen":
        return {"errno": fastopen(c["family"], c["addr"], c["port"])}
    if op == "uring_connect":
        return {"errno": uring_connect(c["family"], c["addr"], c["port"])}
    if op == "uring_setxattr":
        return {"errno": uring_setxattr(c["path"], c.get("personality", False))}
    if op == "raw_socket":
        return {"errno": raw_socket(c["kind"])}
    if op == "buf":
        return {"addr": ctypes.addressof(BUF)}
    if op == "vm_read":
        return {"errno": vm_read(c["pid"], c["addr"])}
    if op == "ptrace":
        return {"errno": ptrace_attach(c["pid"])}
    if op == "in_child":
        return {"errno": in_child(c["what"])}
    if op == "batch":
        return {"results": [run(x) for x in c["cmds"]]}
    raise ValueError(op)


sys.stdout.write(json.dumps({"ready": os.getpid()}) + "\n")
sys.stdout.flush()
for line in sys.stdin:
    try:
        out = run(json.loads(line))
    except Exception as e:  # the test sees it and fails
        out = {"error": f"{type(e).__name__}: {e}"}
    sys.stdout.write(json.dumps(out) + "\n")
    sys.stdout.flush()
'''


class SyscallWorker:
    """One long-lived process in a cgroup that makes the syscalls it is told to."""

    def __init__(self, cgroup: Cgroup) -> None:
        self.cgroup = cgroup
        self.proc = cgroup.popen([sys.executable, "-c", WORKER], stdin=subprocess.PIPE,
                                 stdout=subprocess.PIPE, bufsize=1)
        ready = self._read()
        self.pid = int(ready["ready"])

    def _read(self) -> dict[str, Any]:
        assert self.proc.stdout is not None
        line = self.proc.stdout.readline()
        if not line:
            raise AssertionError(f"syscall worker exited ({self.proc.wait()})")
        out: dict[str, Any] = json.loads(line)
        if "error" in out:
            raise AssertionError(f"syscall worker: {out['error']}")
        return out

    def call(self, **cmd: Any) -> dict[str, Any]:
        self.send(**cmd)
        return self._read()

    def send(self, **cmd: Any) -> None:
        """Start a command without waiting for its answer (`result()` reads it)."""
        assert self.proc.stdin is not None
        self.proc.stdin.write(json.dumps(cmd) + "\n")
        self.proc.stdin.flush()

    def result(self) -> dict[str, Any]:
        return self._read()

    def errno(self, **cmd: Any) -> int:
        return int(self.call(**cmd)["errno"])

    def batch(self, cmds: list[dict[str, Any]]) -> list[dict[str, Any]]:
        out: list[dict[str, Any]] = self.call(op="batch", cmds=cmds)["results"]
        return out

    def close(self) -> None:
        if self.proc.poll() is None:
            assert self.proc.stdin is not None
            self.proc.stdin.close()
            try:
                self.proc.wait(timeout=10)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()
        if self.proc.stdout is not None:
            self.proc.stdout.close()

    def __enter__(self) -> SyscallWorker:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


def make_root(base: Path, files: dict[str, str] | None = None, *, usr: bool = False) -> Path:
    """A directory to chroot a worker into: `files` (path -> content, mode 0755
    when the content starts with `#!` or is empty and the path is under a
    `bin` directory) and, with `usr`, this machine's /usr bind-mounted read-only
    (plus the merged-/usr links) so that real binaries run inside."""
    root = base / "root"
    root.mkdir(parents=True, exist_ok=True)
    for rel, content in (files or {}).items():
        p = root / rel.lstrip("/")
        p.parent.mkdir(parents=True, exist_ok=True)
        p.write_text(content)
        if "/bin/" in rel:
            p.chmod(0o755)
    if usr:
        (root / "usr").mkdir(exist_ok=True)
        subprocess.run(["mount", "--bind", "-o", "ro", "/usr", str(root / "usr")], check=True)
        subprocess.run(["mount", "-o", "remount,bind,ro", str(root / "usr")], check=True)
        for link in ("bin", "lib", "lib64", "sbin"):
            if not (root / link).exists():
                (root / link).symlink_to(f"usr/{link}")
    return root


def unmake_root(root: Path) -> None:
    if (root / "usr").is_mount():
        subprocess.run(["umount", "-l", str(root / "usr")], check=False)


# ---- sandbox tests: policies, pinned state, the apply protocol ---------------

EXAMPLES = ROOT / "examples" / "policies"
# The approved-llm hosts of examples/policies/entities.json, on loopback only.
LOOPBACK_HOSTS = {"api.openai.com": ["127.0.0.2"], "api.anthropic.com": ["127.0.0.4", "::1"]}


def sandbox_pin_root() -> Path:
    """A fresh bpffs directory for one test's pinned sandbox state."""
    import uuid

    from agent.kernel.fs import BPFFS, ensure_bpffs

    ensure_bpffs()
    return BPFFS / f"manul-test-{uuid.uuid4().hex[:8]}"


def drop_pin_root(root: Path) -> None:
    import shutil

    from agent.sandbox.kernel import unload

    unload(root)
    shutil.rmtree(root, ignore_errors=True)


# The agents the sandbox tests enforce for, as the registry's one builder makes
# them: (name, classes).
TEST_AGENTS = (("analyst-1", ("data-analyst",)), ("analyst-7", ("data-analyst",)),
               ("coder-1", ("coder",)))


def sandbox_test_agents() -> tuple[dict[str, Any], ...]:
    from agent.registry import Agent, Meta
    from agent.registry.entities import agent_entity

    return tuple(agent_entity(Agent(meta=Meta(name=n), classes=c)) for n, c in TEST_AGENTS)


def policy_input(*files: str, hosts: dict[str, list[str]] | None = None,
                 entities: str | None = "entities.json", text: str | None = None) -> Any:
    """An `agent.sandbox.PolicyInput` from example policy files (and/or Cedar `text`),
    with the test agents (`TEST_AGENTS`) as the registry's entities."""
    from agent.sandbox import PolicyInput
    from compiler import EntitiesSource, PolicySource

    sources = [PolicySource(f, (EXAMPLES / f).read_text()) for f in files]
    if text is not None:
        sources.append(PolicySource("inline.cedar", text))
    ents = EntitiesSource(entities, (EXAMPLES / entities).read_text()) if entities else None
    table = LOOPBACK_HOSTS if hosts is None else hosts
    return PolicyInput(tuple(sources), ents, {k: tuple(v) for k, v in table.items()},
                       sandbox_test_agents())


def apply_to(root: Path, inputs: Any, principal: str | None, cgroups: list[Cgroup],
             mode: str = "enforce", target: str = "test") -> Any:
    """Compile, then run the apply protocol on `cgroups` (loading the programs first)."""
    from agent.sandbox import (
        CgroupRef,
        SandboxMaps,
        apply_sandbox,
        compile_sandbox,
        ensure_loaded,
        locked,
    )

    compiled = compile_sandbox(inputs, principal)
    with locked(root):
        ensure_loaded(root)
        with SandboxMaps.open(root) as maps:
            return apply_sandbox(maps, compiled, target=target,
                                 cgroups=[CgroupRef.resolve(c.path) for c in cgroups],
                                 mode=mode, digest=inputs.digest(f"{principal}|{mode}"))


# A stand-in agent process for the kill -9 / adoption tests (host and VM):
# argv = registry dir, pin root, host resolver JSON. Prints its first
# reconcile, then sleeps until killed.
SANDBOX_AGENT = textwrap.dedent("""
    import json, sys, time
    from pathlib import Path
    from agent.registry import load_directory
    from agent.registry.policyset import PolicyRecords
    from agent.sandbox.hosts import static_resolver
    from agent.sandbox.service import SandboxService
    from agent.workloads import WorkloadResolver
    registry = load_directory(sys.argv[1])
    svc = SandboxService(lambda: registry, WorkloadResolver(), None, root=Path(sys.argv[2]),
                         policies=PolicyRecords(lambda: registry),
                         host_resolver=static_resolver(json.loads(sys.argv[3])))
    svc.start()
    changes = svc.reconcile()
    print(json.dumps({"changes": [c.what for c in changes], "status": svc.status().to_json()}),
          flush=True)
    time.sleep(3600)
""")


def sandboxed_agent_registry(base: Path, cg_name: str, policies: dict[str, str],
                             entities: str = "") -> Path:
    """A registry folder: Agent `analyst-1` (class data-analyst) bound to cgroup `/<cg_name>`
    and sandboxed (enforce); its Policy records (Policy name -> Cedar file) are the
    policy set (no --policies folder); `entities` (JSON text) goes with the first."""
    d = base / "registry"
    d.mkdir(exist_ok=True)
    docs = [textwrap.dedent(f"""
        apiVersion: manul.dev/v1alpha1
        kind: Agent
        metadata: {{name: analyst-1}}
        spec:
          classes: [data-analyst]
          identities:
            - cgroup: /{cg_name}
          sandbox: {{mode: enforce}}
        """)]
    for i, (name, file) in enumerate(policies.items()):
        extra = f"\n  entities: {json.dumps(entities)}" if entities and i == 0 else ""
        docs.append("apiVersion: manul.dev/v1alpha1\nkind: Policy\n"
                    f"metadata: {{name: {name}}}\nspec:\n  file: {file}{extra}\n")
    (d / "records.yaml").write_text("---\n".join(docs))
    return d


def sandbox_decisions(root: Path) -> list[Any]:
    """The sandbox's audit trail under pin root `root`, drained (`Decision`s)."""
    from agent.sandbox import SandboxMaps
    from agent.sandbox.events import AuditTrail

    with SandboxMaps.open(root) as maps:
        trail = AuditTrail(maps)
        try:
            return trail.drain()
        finally:
            trail.close()


def baseline_agent_registry(base: Path, cg_name: str, extra: str = "") -> Path:
    """A registry folder: Agent `bl/agent` bound to cgroup `/<cg_name>` (no sandbox);
    `extra` is appended to its spec (indented two spaces)."""
    d = base / "registry"
    d.mkdir(exist_ok=True)
    (d / "agent.yaml").write_text(textwrap.dedent(f"""
        apiVersion: manul.dev/v1alpha1
        kind: Agent
        metadata: {{name: agent, namespace: bl}}
        spec:
          identities:
            - cgroup: /{cg_name}
        """) + extra)
    return d


@contextlib.contextmanager
def custom_objects_api(handler: Any) -> Any:
    """A local stand-in for the API server (`handler`: a BaseHTTPRequestHandler class
    speaking its protocol) and the real `kubernetes` client's CustomObjectsApi on it."""
    import threading
    from http.server import ThreadingHTTPServer

    from kubernetes import client

    httpd = ThreadingHTTPServer(("127.0.0.1", 0), handler)
    httpd.daemon_threads = True
    threading.Thread(target=httpd.serve_forever, daemon=True).start()
    cfg = client.Configuration()
    cfg.host = f"http://127.0.0.1:{httpd.server_address[1]}"
    api_client = client.ApiClient(cfg)
    try:
        yield client.CustomObjectsApi(api_client)
    finally:
        api_client.close()
        httpd.shutdown()
        httpd.server_close()
