"""Kernel sandboxes: compiled Cedar policies enforced per cgroup by BPF.

Public surface (DESIGN.md: `sandbox/` applies compiled sandboxes to cgroups
and audits denials):

    kernel   load or adopt bpf/sandbox.bpf.c pinned; open its pinned maps
    apply    the atomic apply / remove protocol (generations)
    state    what is enforced where, from the pinned state alone
    hosts    host names in policies resolved, refreshed on TTL
    assign   which workloads (cgroups) get which Agent's sandbox
    events   the audit trail: ring-buffer events -> decisions, log, metric
    service  SandboxService: what the daemon runs

docs/sandbox.md describes the whole; errors are `SandboxError`s.
"""

from agent.sandbox.apply import (
    Applied,
    CgroupRef,
    PolicyInput,
    apply_sandbox,
    compile_sandbox,
    remove_cgroups,
)
from agent.sandbox.errors import (
    CapacityError,
    PolicyError,
    SandboxError,
    StateError,
    TargetError,
)
from agent.sandbox.kernel import SandboxMaps, ensure_loaded, locked, unload
from agent.sandbox.state import Status, read_status

__all__ = [
    "Applied", "CapacityError", "CgroupRef", "PolicyError", "PolicyInput", "SandboxError",
    "SandboxMaps", "StateError", "Status", "TargetError", "apply_sandbox", "compile_sandbox",
    "ensure_loaded", "locked", "read_status", "remove_cgroups", "unload",
]
