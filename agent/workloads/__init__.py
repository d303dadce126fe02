"""Attribution: cgroup id -> workload (a pod in a cluster; a unit, container or cgroup on a host).

Public surface: `WorkloadResolver` (what discovery calls per handshake),
the `Workload` and `ProcessInfo` it returns, `parse_cgroup_path` and
`CgroupInfo` (the layouts, pure), and the pod sources behind the `PodSource`
protocol: `StaticPods` and `KubePods`. `docs/workloads.md` describes the
layouts and the identity rules.
"""

from agent.workloads.cgroups import CgroupInfo, parse_cgroup_path
from agent.workloads.model import DEFAULT_TRUST_DOMAIN, ProcessInfo, Workload
from agent.workloads.pods import KubePods, PodInfo, PodSource, StaticPods, pod_from_dict
from agent.workloads.resolver import WalkResult, WorkloadResolver

__all__ = [
    "DEFAULT_TRUST_DOMAIN", "CgroupInfo", "KubePods", "PodInfo", "PodSource", "ProcessInfo",
    "StaticPods", "WalkResult", "Workload", "WorkloadResolver", "parse_cgroup_path",
    "pod_from_dict",
]
