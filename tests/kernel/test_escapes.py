"""The escape suite: every way around a sandbox an attacker tries first.

One sandbox (ESCAPER below) over a root laid out for the attacks: a
workspace it may read and write (with `.git/` write-protected and `bin/`
executable), a read-only tree, a secret it may not touch, a scratch
directory with uniform rights, and this machine's /usr. Each test drives
one operation class through a long-lived worker *inside* the sandbox and
the same probe through a worker *outside* it (the positive control: the
probe works, only the sandbox stops it), and checks the errno the
docs promise (docs/sandbox.md, "Threat model"). The audit-mode test makes
the same attempts allowed and checks each would-deny against cedarpy.
"""

from __future__ import annotations

import errno
import json
import os
import shutil
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from agent.sandbox.apply import compile_all
from agent.sandbox.events import Decision
from tests.kernel.test_sandbox import ANALYST, cedar_says, drain, pin_root, start  # noqa: F401
from tests.support import (
    EXAMPLES,
    ROOT,
    SyscallWorker,
    apply_to,
    make_root,
    policy_input,
    unmake_root,
)

sys.path.insert(0, str(ROOT / "tests" / "unit" / "compiler"))
from cedar_oracle import Case, Oracle

LDSO = os.path.realpath("/lib64/ld-linux-x86-64.so.2")
LIBC = os.path.realpath("/lib/x86_64-linux-gnu/libc.so.6")
ESCAPER = f"""
@id("ws")
permit (principal == {ANALYST}, action in [Action::"readFile", Action::"writeFile"], resource)
when {{ resource.path like "/workspace/*" || resource.path like "/scratch/*" }};
@id("ws-bin")
permit (principal == {ANALYST}, action == Action::"exec", resource)
when {{ resource.path like "/workspace/bin/*" }};
@id("no-git-writes")
forbid (principal, action == Action::"writeFile", resource)
when {{ resource.path like "/workspace/.git/*" }};
@id("read-only")
permit (principal == {ANALYST}, action == Action::"readFile", resource)
when {{ resource.path like "/ro/*" || resource.path like "/usr/*" }};
@id("secret")
forbid (principal, action in Action::"fileAccess", resource)
when {{ resource.path like "/secret/*" }};
@id("tools")
permit (principal == {ANALYST}, action == Action::"exec", resource)
when {{ resource.path == "/usr/bin/true" || resource.path == "{LDSO}" }};
@id("libs")
permit (principal == {ANALYST}, action == Action::"loadLibrary", resource)
when {{ resource.path like "/usr/lib/*" }};
@id("net")
permit (principal == {ANALYST}, action == Action::"connectNetwork", resource)
when {{ resource.ip == ip("127.0.0.2") && resource.port == 443 }};
"""
RAW_ALLOWED = f"""
@id("raw-ok")
permit (principal == {ANALYST}, action == Action::"openRawSocket", resource == SocketKind::"raw");
"""
FILES = {
    "/workspace/a": "a", "/workspace/.git/config": "[core]", "/workspace/bin/.keep": "",
    "/workspace/d/f": "f", "/scratch/d/f": "f", "/ro/f": "ro", "/ro/g": "ro",
    "/ro/dir/.keep": "", "/secret/key": "s3cret", "/tmp/.keep": "",
}


@pytest.fixture
def root(tmp_path: Path) -> Iterator[Path]:
    r = make_root(tmp_path, FILES, usr=True)
    (r / "ro/dir/.keep").unlink()
    shutil.copy("/usr/bin/true", r / "workspace/tool")  # a binary nothing lets it run
    yield r
    unmake_root(r)


def inputs(extra: str = "") -> Any:
    return policy_input(text=ESCAPER + extra)


@pytest.fixture
def pair(make_cgroup: Any, pin_root: Path,  # noqa: F811
         root: Path) -> Iterator[tuple[SyscallWorker, SyscallWorker]]:
    """(inside, outside): workers in the same root, one in the sandbox."""
    inside, outside = make_cgroup(), make_cgroup()
    with start(inside, root) as w, start(outside, root) as o:
        apply_to(pin_root, inputs(), ANALYST, [inside])
        yield w, o


def test_links_cannot_widen_access(pair: tuple[SyscallWorker, SyscallWorker],
                                   root: Path) -> None:
    w, o = pair
    # a hard link to the secret from a readable directory: refused, nothing made
    assert w.errno(op="link", src="/secret/key", dst="/workspace/k") == errno.ENOENT
    assert not (root / "workspace/k").exists()
    # a link that grants nothing new is fine; so is the attack outside the sandbox
    assert w.errno(op="link", src="/workspace/a", dst="/workspace/a2") == 0
    assert o.errno(op="link", src="/secret/key", dst="/workspace/k") == 0
    # a link into bin/ would make the workspace file executable
    assert w.errno(op="link", src="/workspace/tool", dst="/workspace/bin/t") == errno.ENOENT
    # a symlink is only a name: it is resolved (and decided) at use
    assert w.errno(op="symlink", target="/secret/key", path="/workspace/s") == 0
    assert w.errno(op="open", path="/workspace/s") == errno.ENOENT


def test_renames_cannot_widen_access(pair: tuple[SyscallWorker, SyscallWorker],
                                     root: Path) -> None:
    w, o = pair
    assert w.errno(op="rename", src="/secret/key", dst="/workspace/k") == errno.ENOENT
    assert w.errno(op="rename", src="/ro/f", dst="/workspace/f") == errno.ENOENT
    assert (root / "secret/key").exists() and (root / "ro/f").exists()
    # writable on both sides, but the new name would be executable
    assert w.errno(op="rename", src="/workspace/tool", dst="/workspace/bin/tool") == errno.ENOENT
    # renaming over a protected name is a write to it
    assert w.errno(op="rename", src="/workspace/a", dst="/workspace/.git/config") == errno.ENOENT
    # RENAME_EXCHANGE moves both ways
    assert w.errno(op="rename", src="/workspace/a", dst="/workspace/bin/.keep",
                   exchange=True) == errno.ENOENT
    # a directory whose subtree's rights differ: EXDEV, so that mv(1) copies file by file
    assert w.errno(op="rename", src="/workspace/d", dst="/workspace/e") == errno.EXDEV
    # positive controls: same rights on both sides, a uniform subtree, and outside
    assert w.errno(op="rename", src="/workspace/a", dst="/workspace/a3") == 0
    assert w.errno(op="rename", src="/scratch/d", dst="/scratch/e") == 0
    assert o.errno(op="rename", src="/ro/f", dst="/workspace/f") == 0


def test_every_path_change_is_a_write(pair: tuple[SyscallWorker, SyscallWorker],
                                      root: Path) -> None:
    w, o = pair
    for probe in ({"op": "unlink", "path": "/ro/f"}, {"op": "truncate", "path": "/ro/f"},
                  {"op": "chmod", "path": "/ro/f"}, {"op": "chown", "path": "/ro/f"},
                  {"op": "mkdir", "path": "/ro/d"}, {"op": "rmdir", "path": "/ro/dir"},
                  {"op": "mkfifo", "path": "/ro/p"}, {"op": "create", "path": "/ro/new"},
                  {"op": "symlink", "target": "x", "path": "/ro/s"},
                  {"op": "utime", "path": "/ro/f"}, {"op": "setxattr", "path": "/ro/f"},
                  # the f* forms, through a descriptor the sandbox let it open read-only
                  {"op": "utime", "path": "/ro/f", "fd": True},
                  {"op": "setxattr", "path": "/ro/f", "fd": True},
                  {"op": "unlink", "path": "/workspace/.git/config"},
                  {"op": "open", "path": "/workspace/.git/config", "mode": "w"}):
        assert w.errno(**probe) == errno.ENOENT, probe
    # nothing was left behind by a refused create (decided before the file exists)
    assert not (root / "ro/new").exists() and not (root / "ro/p").exists()
    assert (root / "ro/f").read_text() == "ro" and (root / "ro/dir").is_dir()
    assert (root / "ro/f").stat().st_mode & 0o777 != 0o777
    # the same operations where writeFile is permitted, and outside the sandbox
    for probe in ({"op": "create", "path": "/workspace/new"},
                  {"op": "truncate", "path": "/workspace/new"},
                  {"op": "chmod", "path": "/workspace/new"},
                  {"op": "chown", "path": "/workspace/new"},
                  {"op": "utime", "path": "/workspace/new"},
                  {"op": "setxattr", "path": "/workspace/new"},
                  {"op": "removexattr", "path": "/workspace/new"},
                  {"op": "mkdir", "path": "/workspace/nd"},
                  {"op": "rmdir", "path": "/workspace/nd"},
                  {"op": "mkfifo", "path": "/workspace/p"},
                  {"op": "unlink", "path": "/workspace/new"}):
        assert w.errno(**probe) == 0, probe
    # chattr through a read-only descriptor: EPERM (an ioctl on an open file)
    assert w.errno(op="setflags", path="/ro/f") == errno.EPERM
    assert w.errno(op="setflags", path="/workspace/a") == 0
    assert o.errno(op="setflags", path="/ro/g") == 0
    assert o.errno(op="chmod", path="/ro/g") == 0
    assert o.errno(op="utime", path="/ro/g") == 0
    assert o.errno(op="utime", path="/ro/g", fd=True) == 0
    assert o.errno(op="setxattr", path="/ro/g", fd=True) == 0
    assert o.errno(op="setxattr", path="/ro/g") == 0
    assert o.errno(op="unlink", path="/ro/g") == 0
    assert o.errno(op="create", path="/ro/new") == 0


@pytest.fixture
def layered(root: Path, tmp_path: Path) -> Iterator[Path]:
    """A container's root file system: overlayfs over image layers at
    /workspace/ov (writable) and /ro/ov (read-only), each lower file with an
    xattr, so that a change copies it up (overlayfs then sets times, modes
    and xattrs on its layers with its mounter's credentials)."""
    base = tmp_path / "layers"  # a tmpfs: an upper layer cannot be on the VM's overlay /tmp
    base.mkdir()
    subprocess.run(["mount", "-t", "tmpfs", "layers", str(base)], check=True)
    mounted = []
    for where in ("workspace/ov", "ro/ov"):
        layers = base / where.replace("/", "-")
        lower, upper, work = layers / "lower", layers / "upper", layers / "work"
        for d in (lower, upper, work):
            d.mkdir(parents=True)
        for name in ("a", "b", "c", "d", "e"):
            (lower / name).write_text(name)
            os.setxattr(lower / name, "trusted.image", b"1")
        target = root / where
        target.mkdir()
        subprocess.run(["mount", "-t", "overlay", "overlay", "-o",
                        f"lowerdir={lower},upperdir={upper},workdir={work}", str(target)],
                       check=True)
        mounted.append(target)
    yield root
    for target in (*mounted, base):
        subprocess.run(["umount", "-l", str(target)], check=False)


def test_container_layers_copy_up_and_stay_decided(
        layered: Path, pair: tuple[SyscallWorker, SyscallWorker], tmp_path: Path) -> None:
    w, o = pair
    # where writeFile is permitted, changing an image file works (copy-up)
    for probe in ({"op": "open", "path": "/workspace/ov/a", "mode": "w"},
                  {"op": "utime", "path": "/workspace/ov/b"},
                  {"op": "setxattr", "path": "/workspace/ov/c"},
                  {"op": "chmod", "path": "/workspace/ov/d"},
                  {"op": "setflags", "path": "/workspace/ov/e"}):
        assert w.errno(**probe) == 0, probe
    upper = tmp_path / "layers" / "workspace-ov" / "upper"
    assert {p.name for p in upper.iterdir()} == {"a", "b", "c", "d", "e"}  # all copied up
    # where it is not, the overlay's own work does not make it so
    for probe in ({"op": "open", "path": "/ro/ov/a", "mode": "w"},
                  {"op": "utime", "path": "/ro/ov/b"},
                  {"op": "setxattr", "path": "/ro/ov/c"},
                  {"op": "chmod", "path": "/ro/ov/d"}):
        assert w.errno(**probe) == errno.ENOENT, probe
    assert w.errno(op="setflags", path="/ro/ov/e") == errno.EPERM
    assert not any((tmp_path / "layers" / "ro-ov" / "upper").iterdir())  # nothing copied up
    # the positive control: outside the sandbox, the same changes work
    assert o.errno(op="utime", path="/ro/ov/b") == 0
    assert o.errno(op="setxattr", path="/ro/ov/c") == 0
    # overridden credentials are not enough to pass for the overlay's own
    # work: io_uring runs a setxattr with an earlier cred of the caller's
    for where in ("/ro/ov/a", "/ro/f"):
        assert w.errno(op="uring_setxattr", path=where, personality=True) == errno.ENOENT
        assert w.errno(op="uring_setxattr", path=where) == errno.ENOENT
    assert w.errno(op="uring_setxattr", path="/workspace/a", personality=True) == 0
    assert o.errno(op="uring_setxattr", path="/ro/f", personality=True) == 0


def test_executable_mappings_need_exec_or_load_library(
        pair: tuple[SyscallWorker, SyscallWorker]) -> None:
    w, o = pair
    # the ELF loader bypass: the loader is permitted, the binary it maps is not
    got = w.call(op="exec", path=LDSO, args=["/workspace/tool"])
    assert got["errno"] == 0 and got["exit"] == 127, got
    assert w.errno(op="exec", path="/workspace/tool") == errno.EPERM
    # controls: the loader runs a permitted binary; the attack works outside
    assert w.call(op="exec", path=LDSO, args=["/usr/bin/true"]) == {"errno": 0, "exit": 0}
    assert w.call(op="exec", path="/usr/bin/true") == {"errno": 0, "exit": 0}
    assert o.call(op="exec", path=LDSO, args=["/workspace/tool"]) == {"errno": 0, "exit": 0}
    # mmap(PROT_EXEC) and mprotect(+PROT_EXEC) of a file: loadLibrary
    assert w.errno(op="mmap", path="/workspace/tool") == errno.EPERM
    assert w.errno(op="mprotect", path="/workspace/tool") == errno.EPERM
    assert w.errno(op="mmap", path=LIBC) == 0
    assert w.errno(op="mprotect", path=LIBC) == 0
    assert o.errno(op="mmap", path="/workspace/tool") == 0


def test_every_way_to_a_peer_is_decided(pair: tuple[SyscallWorker, SyscallWorker]) -> None:
    w, o = pair
    # TCP Fast Open connects from sendto(): socket_connect never runs
    assert w.errno(op="fastopen", family=4, addr="127.0.0.3", port=443) == errno.ECONNREFUSED
    assert w.errno(op="fastopen", family=6, addr="::ffff:127.0.0.3",
                   port=443) == errno.ECONNREFUSED
    assert w.errno(op="fastopen", family=4, addr="127.0.0.2", port=443) == 0
    assert o.errno(op="fastopen", family=4, addr="127.0.0.3", port=443) == 0
    # io_uring's connect goes through the same kernel path as connect()
    assert w.errno(op="uring_connect", family=4, addr="127.0.0.3",
                   port=443) == errno.ECONNREFUSED
    assert w.errno(op="uring_connect", family=4, addr="127.0.0.2", port=443) == 0
    assert o.errno(op="uring_connect", family=4, addr="127.0.0.3", port=443) == 0
    # raw IP and packet sockets forge any peer: refused at socket()
    assert w.errno(op="raw_socket", kind="raw") == errno.EPERM
    assert w.errno(op="raw_socket", kind="packet") == errno.EPERM
    assert o.errno(op="raw_socket", kind="raw") == 0
    assert o.errno(op="raw_socket", kind="packet") == 0
    # the classics still hold
    assert w.errno(op="connect", family=4, addr="127.0.0.3", port=443) == errno.ECONNREFUSED
    assert w.errno(op="sendto", family=4, addr="127.0.0.3", port=53) == errno.ECONNREFUSED


def test_raw_sockets_when_a_policy_permits_them(make_cgroup: Any, pin_root: Path,  # noqa: F811
                                                root: Path) -> None:
    cg = make_cgroup()
    with start(cg, root) as w:
        apply_to(pin_root, inputs(RAW_ALLOWED), ANALYST, [cg])
        assert w.errno(op="raw_socket", kind="raw") == 0
        assert w.errno(op="raw_socket", kind="packet") == errno.EPERM


def test_no_driving_an_outsider(pair: tuple[SyscallWorker, SyscallWorker]) -> None:
    w, o = pair
    w_buf, o_buf = w.call(op="buf")["addr"], o.call(op="buf")["addr"]
    assert w.errno(op="vm_read", pid=o.pid, addr=o_buf) == errno.EPERM
    assert w.errno(op="ptrace", pid=o.pid) == errno.EPERM
    # controls: the sandbox may read itself; the outsider may read the sandbox
    assert w.errno(op="vm_read", pid=w.pid, addr=w_buf) == 0
    assert o.errno(op="vm_read", pid=w.pid, addr=w_buf) == 0


def test_no_changing_what_paths_mean(pair: tuple[SyscallWorker, SyscallWorker]) -> None:
    w, o = pair
    for what in ("mount", "chroot"):
        assert w.errno(op="in_child", what=what) == errno.EPERM, what
        assert o.errno(op="in_child", what=what) == 0, what


def test_no_user_namespaces(make_cgroup: Any, pin_root: Path) -> None:  # noqa: F811
    # not chrooted: the kernel itself refuses CLONE_NEWUSER to a chrooted caller
    inside, outside = make_cgroup(), make_cgroup()
    with SyscallWorker(inside) as w, SyscallWorker(outside) as o:
        apply_to(pin_root, inputs(), ANALYST, [inside])
        assert w.errno(op="in_child", what="userns") == errno.EPERM
        assert o.errno(op="in_child", what="userns") == 0
    (d,) = [d for d in drain(pin_root) if d.operation == "userns"]
    assert (d.action, d.verdict, d.policies) == ("confinement", "deny", ("manul:confinement",))


def test_audit_mode_reports_every_class_with_its_policies(
        make_cgroup: Any, pin_root: Path, root: Path) -> None:  # noqa: F811
    cg, other = make_cgroup(), make_cgroup()
    with start(cg, root) as w, start(other, root) as o:
        apply_to(pin_root, inputs(), ANALYST, [cg], mode="audit")
        o_buf = o.call(op="buf")["addr"]
        probes = [
            ({"op": "link", "src": "/secret/key", "dst": "/workspace/k"}, "link"),
            ({"op": "unlink", "path": "/ro/g"}, "unlink"),
            ({"op": "create", "path": "/ro/new"}, "create"),
            ({"op": "mmap", "path": "/workspace/tool"}, "mmap"),
            ({"op": "fastopen", "family": 4, "addr": "127.0.0.3", "port": 443}, "sendmsg"),
            ({"op": "raw_socket", "kind": "raw"}, "socket"),
            ({"op": "vm_read", "pid": o.pid, "addr": o_buf}, "ptrace"),
            ({"op": "in_child", "what": "mount"}, "mount"),
        ]
        for probe, _ in probes:
            assert w.errno(**probe) == 0, probe  # audit: allowed
    got: dict[str, Decision] = {}
    for d in drain(pin_root):
        got.setdefault(d.operation, d)
    entities = json.loads((EXAMPLES / "entities.json").read_text())
    oracle = Oracle(Case("escaper", ESCAPER, entities, {}), compile_all(inputs()))
    for probe, operation in probes:
        d = got.get(operation)
        assert d is not None, f"no would-deny reported for {probe}"
        assert (d.verdict, d.mode) == ("would-deny", "audit"), d
        if d.action in ("readFile", "writeFile", "exec", "loadLibrary", "connectNetwork"):
            allow, policies = cedar_says(oracle, d)
            assert not allow and set(d.policies) == set(policies), (d, policies)
    assert got["link"].action == "readFile" and got["link"].refer
    assert got["link"].resource == "/secret/key" and got["link"].policies == ("secret",)
    assert got["mmap"].action == "loadLibrary" and got["mmap"].resource == "/workspace/tool"
    assert got["socket"].action == "openRawSocket" and got["socket"].policies == ()
    assert got["ptrace"].action == "confinement"
    assert got["ptrace"].policies == ("manul:confinement",)
