"""Open, configure, load, attach and close a compiled BPF object.

The order is libbpf-tools': open -> configure (`.rodata` settings, map
sizes, pin paths, which programs load) -> load -> attach, with cleanup on
every path. `BpfObject` is a context manager; closing it destroys the
links it made that are not pinned, then the object.

    with BpfObject.open("exec") as obj:
        obj.set_rodata(filter_cgroup_id=cgid)
        obj.load()
        obj.attach_all()
        events = obj.map("exec_events")

Errors are `KernelError`s naming the object, the program and the reason,
with libbpf's messages and the verifier log attached.
"""

from __future__ import annotations

import ctypes
import hashlib
import os
import re
from collections.abc import Iterable
from pathlib import Path
from typing import Any

from agent.errors import KernelError
from agent.kernel import libbpf as L
from agent.kernel.btf import Btf
from agent.kernel.fs import ensure_tracefs
from agent.kernel.links import Link
from agent.kernel.maps import Map

_FAILED_PROG = re.compile(r"prog '([^']+)': (?:failed to load|BPF program load failed)")


def objects_dir() -> Path:
    """Where the compiled objects are: $MANUL_BPF_DIR, else `build/bpf` of the checkout."""
    env = os.environ.get("MANUL_BPF_DIR")
    if env:
        return Path(env)
    return Path(__file__).resolve().parents[2] / "build" / "bpf"


def object_path(name: str) -> Path:
    """`exec` -> <objects_dir>/exec.bpf.o; a path is returned as it is."""
    if "/" in name or name.endswith(".o"):
        return Path(name)
    p = objects_dir() / f"{name}.bpf.o"
    if not p.exists():
        raise KernelError(f"BPF object `{p}` is missing; build it with `make bpf`", obj=name)
    return p


class Program:
    def __init__(self, obj: BpfObject, ptr: int) -> None:
        self._obj = obj
        self._ptr = ptr
        self.name = L.lib.bpf_program__name(ptr).decode()
        self.section = (L.lib.bpf_program__section_name(ptr) or b"").decode()

    @property
    def type(self) -> int:
        return int(L.lib.bpf_program__type(self._ptr))

    @property
    def fd(self) -> int:
        return int(L.lib.bpf_program__fd(self._ptr))

    @property
    def autoload(self) -> bool:
        return bool(L.lib.bpf_program__autoload(self._ptr))

    @autoload.setter
    def autoload(self, on: bool) -> None:
        L.check_rc(L.lib.bpf_program__set_autoload(self._ptr, on), "cannot set autoload",
                   obj=self._obj.name, program=self.name)

    @property
    def is_cgroup(self) -> bool:
        return self.type in L.CGROUP_PROG_TYPES

    def attach(self, *, cgroup: str | Path | None = None, binary: str | None = None,
               func: str | None = None, pid: int = -1) -> Link:
        """Attach by section type: cgroup programs to `cgroup`, uprobes to `binary:func`."""
        where = dict(obj=self._obj.name, program=self.name)
        with L.capture() as log:
            if self.is_cgroup:
                if cgroup is None:
                    raise KernelError("a cgroup program needs a cgroup to attach to", **where)
                try:
                    fd = os.open(cgroup, os.O_RDONLY | os.O_DIRECTORY)
                except OSError as e:
                    raise KernelError(f"cannot open cgroup `{cgroup}`", errno=e.errno or 0,
                                      **where) from e
                try:
                    ptr = L.lib.bpf_program__attach_cgroup(self._ptr, fd)
                    err = L.errno_now()
                finally:
                    os.close(fd)
                target = f"cgroup:{cgroup}"
            elif self.section.startswith(("uprobe", "uretprobe")) and binary:
                opts = L.bpf_uprobe_opts(sz=ctypes.sizeof(L.bpf_uprobe_opts),
                                         retprobe=self.section.startswith("uretprobe"),
                                         func_name=func.encode() if func else None)
                ptr = L.lib.bpf_program__attach_uprobe_opts(self._ptr, pid, binary.encode(), 0,
                                                            ctypes.byref(opts))
                err = L.errno_now()
                target = f"uprobe:{binary}:{func}"
            else:
                if self.section.startswith(("tracepoint/", "tp/")):
                    ensure_tracefs()  # libbpf reads the tracepoint's id there
                ptr = L.lib.bpf_program__attach(self._ptr)
                err = L.errno_now()
                target = self.section
        if not ptr:
            raise KernelError(f"cannot attach to `{target}`", errno=err, log="\n".join(log),
                              **where)
        link = Link(ptr, self.name, target, self._obj.name)
        self._obj._links.append(link)
        return link


class BpfObject:
    """One `.bpf.o`: its programs, maps and the links made from it."""

    def __init__(self, ptr: int, path: Path, name: str) -> None:
        self._ptr = ptr
        self.path = path
        self.name = name
        self.loaded = False
        self._links: list[Link] = []
        self.programs: dict[str, Program] = {}
        p = L.lib.bpf_object__next_program(ptr, None)
        while p:
            prog = Program(self, p)
            self.programs[prog.name] = prog
            p = L.lib.bpf_object__next_program(ptr, p)
        self._maps: dict[str, int] = {}
        m = L.lib.bpf_object__next_map(ptr, None)
        while m:
            self._maps[L.lib.bpf_map__name(m).decode()] = m
            m = L.lib.bpf_object__next_map(ptr, m)
        self._btf = Btf(L.lib.bpf_object__btf(ptr), False, str(path))

    @classmethod
    def open(cls, name_or_path: str | Path) -> BpfObject:
        path = object_path(str(name_or_path))
        name = path.name.removesuffix(".o").removesuffix(".bpf")
        if not path.is_file():
            raise KernelError(f"BPF object `{path}` does not exist", obj=name)
        with L.capture() as log:
            ptr = L.lib.bpf_object__open_file(str(path).encode(), None)
            err = L.errno_now()
        if not ptr:
            raise KernelError("cannot open: not a valid BPF object", errno=err, obj=name,
                              log="\n".join(log))
        return cls(ptr, path, name)

    # -- configure (before load) ---------------------------------------------

    def _before_load(self, what: str) -> None:
        if self.loaded:
            raise KernelError(f"{what} must happen before load", obj=self.name)

    def set_rodata(self, **values: int | bytes) -> None:
        """Set `const volatile` globals by name (ints little-endian, sized from BTF)."""
        self._before_load("setting .rodata")
        m = self._find_rodata()
        size = ctypes.c_size_t()
        src = L.lib.bpf_map__initial_value(m, ctypes.byref(size))
        data = bytearray(ctypes.string_at(src, size.value))
        layout = self._btf.datasec_vars(".rodata")
        for key, val in values.items():
            if key not in layout:
                raise KernelError(f"no `const volatile {key}` in .rodata", obj=self.name)
            off, n = layout[key]
            raw = val.to_bytes(n, "little", signed=val < 0) if isinstance(val, int) else val
            if len(raw) > n:
                raise KernelError(f"`{key}` takes {n} bytes, got {len(raw)}", obj=self.name)
            data[off: off + len(raw)] = raw
        buf = ctypes.create_string_buffer(bytes(data), len(data))
        L.check_rc(L.lib.bpf_map__set_initial_value(m, buf, len(data)),
                   "cannot set .rodata", obj=self.name)

    def _find_rodata(self) -> int:
        for n, m in self._maps.items():
            if n.endswith(".rodata"):
                return m
        raise KernelError("object has no .rodata (no `const volatile` settings)", obj=self.name)

    def set_max_entries(self, map_name: str, n: int) -> None:
        self._before_load("resizing a map")
        L.check_rc(L.lib.bpf_map__set_max_entries(self._map_ptr(map_name), n),
                   f"cannot resize map `{map_name}`", obj=self.name)

    def pin_maps(self, directory: str | Path, names: Iterable[str] | None = None) -> None:
        """Pin maps under `directory`; an existing pin is reused at load (state survives)."""
        self._before_load("pinning maps")
        d = Path(directory)
        d.mkdir(parents=True, exist_ok=True)
        for n in names if names is not None else self.map_names():
            L.check_rc(L.lib.bpf_map__set_pin_path(self._map_ptr(n), str(d / n).encode()),
                       f"cannot set pin path of map `{n}`", obj=self.name)

    def only(self, *programs: str) -> None:
        """Load just these programs (the rest of the object stays unloaded)."""
        self._before_load("choosing programs")
        for name, prog in self.programs.items():
            prog.autoload = name in programs
        missing = set(programs) - set(self.programs)
        if missing:
            raise KernelError(f"no program `{sorted(missing)[0]}`", obj=self.name)

    def fingerprint(self) -> str:
        """A hash of the object file and its settings (.rodata, map sizes).

        Two objects with the same fingerprint load the same programs with the
        same configuration; pinned links are adopted only on a match.
        """
        h = hashlib.sha256(self.path.read_bytes())
        for name, m in sorted(self._maps.items()):
            h.update(name.encode())
            h.update(int(L.lib.bpf_map__max_entries(m)).to_bytes(4, "little"))
            if name.endswith(".rodata"):
                size = ctypes.c_size_t()
                src = L.lib.bpf_map__initial_value(m, ctypes.byref(size))
                h.update(ctypes.string_at(src, size.value))
        for name, prog in sorted(self.programs.items()):
            h.update(f"{name}:{prog.autoload}".encode())
        return h.hexdigest()[:16]

    # -- load ------------------------------------------------------------------

    def load(self) -> None:
        with L.capture() as log:
            rc = L.lib.bpf_object__load(self._ptr)
        if rc < 0:
            text = "\n".join(log)
            m = _FAILED_PROG.search(text)
            prog = m.group(1) if m else None
            what = "the kernel refused to load it" if prog else "cannot load"
            raise KernelError(what, errno=-rc, obj=self.name, program=prog, log=text)
        self.loaded = True

    # -- maps and attach -------------------------------------------------------

    def map_names(self) -> list[str]:
        return [n for n in self._maps if not n.startswith(".") and ".rodata" not in n
                and ".bss" not in n and ".data" not in n]

    def _map_ptr(self, name: str) -> int:
        try:
            return self._maps[name]
        except KeyError:
            raise KernelError(f"no map `{name}`", obj=self.name) from None

    def map(self, name: str) -> Map:
        if not self.loaded:
            raise KernelError(f"map `{name}` has no fd before load", obj=self.name)
        m = self._map_ptr(name)
        return Map(int(L.lib.bpf_map__fd(m)), name, int(L.lib.bpf_map__type(m)),
                   int(L.lib.bpf_map__key_size(m)), int(L.lib.bpf_map__value_size(m)),
                   int(L.lib.bpf_map__max_entries(m)))

    def attach_all(self, *, cgroup: str | Path | None = None,
                   uprobes: dict[str, tuple[str, str]] | None = None) -> list[Link]:
        """Attach every loaded program; on any failure detach what this call attached."""
        made: list[Link] = []
        try:
            for prog in self.programs.values():
                if not prog.autoload:
                    continue
                if prog.section.startswith(("uprobe", "uretprobe")) and ":" not in prog.section:
                    if not uprobes or prog.name not in uprobes:
                        continue
                    binary, func = uprobes[prog.name]
                    made.append(prog.attach(binary=binary, func=func))
                else:
                    made.append(prog.attach(cgroup=cgroup))
        except KernelError:
            for link in made:
                link.detach()
                self._links.remove(link)
            raise
        return made

    def detach_all(self) -> int:
        """Destroy every unpinned link this object made (its programs stay loaded)."""
        n = len(self._links)
        for link in self._links:
            link.destroy()
        self._links.clear()
        return n

    def own(self, link: Link) -> None:
        """Close `link`'s handle together with this object."""
        self._links.append(link)

    @property
    def links(self) -> list[Link]:
        return list(self._links)

    def close(self) -> None:
        """Destroy this object's unpinned links, then the object itself."""
        for link in self._links:
            link.destroy()
        self._links.clear()
        if self._ptr:
            L.lib.bpf_object__close(self._ptr)
            self._ptr = 0

    def __enter__(self) -> BpfObject:
        return self

    def __exit__(self, *exc: Any) -> None:
        self.close()
