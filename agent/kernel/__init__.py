"""libbpf from Python: objects, maps, links, ring buffers, pins and probes.

`agent.kernel` imports nothing else of Manul but `agent.errors`; the rest of
the agent reaches the kernel only through this package's public surface.
"""

from agent.kernel.btf import Btf, Struct
from agent.kernel.links import Link
from agent.kernel.maps import BPF_ANY, BPF_EXIST, BPF_NOEXIST, Map
from agent.kernel.obj import BpfObject, Program, object_path, objects_dir
from agent.kernel.pins import Adoption, attach_pinned, pinned_names, remove_pinned
from agent.kernel.ringbuf import RingBuffer

__all__ = [
    "BPF_ANY", "BPF_EXIST", "BPF_NOEXIST", "Adoption", "BpfObject", "Btf", "Link", "Map",
    "Program", "RingBuffer", "Struct", "attach_pinned", "object_path", "objects_dir",
    "pinned_names", "remove_pinned",
]
