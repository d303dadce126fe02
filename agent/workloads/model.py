"""What attribution hands to discovery: a `Workload` and, per process, a `ProcessInfo`.

The resolver builds these; discovery's classification calls
`Workload.identities()` and looks the result up in the registry
(`Registry.match_any`), so this module is where the identity rules live:

    pod   serviceAccount `<ns>/<sa>`, spiffe `spiffe://<trust domain>/ns/<ns>/sa/<sa>`
          (none while the pod source does not know the pod yet)
    host  cgroup `<path relative to the v2 root>`, systemdUnit `<unit>` when there is one
"""

from __future__ import annotations

from dataclasses import dataclass

from agent.registry import Identity, IdentityKind
from agent.workloads.cgroups import Kind, QoS, Runtime

DEFAULT_TRUST_DOMAIN = "cluster.local"


@dataclass(frozen=True, slots=True)
class Workload:
    """One attributed workload: a pod (cluster) or a unit / container / cgroup (host)."""

    kind: Kind
    name: str  # display: `ns/pod`; host: unit, `container:<runtime>/<id12>`, or the path
    cgroup_id: int
    cgroup_path: str  # relative to the cgroup v2 root
    namespace: str = ""
    pod: str = ""
    pod_uid: str = ""
    qos: QoS = ""
    container_id: str = ""
    runtime: Runtime = ""
    service_account: str = ""
    labels: tuple[tuple[str, str], ...] = ()
    unit: str = ""
    trust_domain: str = DEFAULT_TRUST_DOMAIN

    @property
    def pod_known(self) -> bool:
        """A pod whose metadata (namespace, name, service account) the pod source gave."""
        return self.kind == "pod" and bool(self.namespace and self.pod)

    def identities(self) -> tuple[Identity, ...]:
        """The identities a registry record may list to claim this workload."""
        if self.kind == "pod":
            if not (self.namespace and self.service_account):
                return ()
            ns, sa = self.namespace, self.service_account
            return (
                Identity(IdentityKind.SERVICE_ACCOUNT, f"{ns}/{sa}"),
                Identity(IdentityKind.SPIFFE, f"spiffe://{self.trust_domain}/ns/{ns}/sa/{sa}"),
            )
        out = [Identity(IdentityKind.CGROUP, self.cgroup_path)]
        if self.unit:
            out.append(Identity(IdentityKind.SYSTEMD_UNIT, self.unit))
        return tuple(out)


def display_name(kind: Kind, *, namespace: str, pod: str, pod_uid: str, unit: str,
                 runtime: Runtime, container_id: str, path: str) -> str:
    """`ns/pod` for a pod (`pod:<uid>` until its metadata is known); for the host the
    unit, unless the unit is just the container's own scope, then
    `container:<runtime>/<short id>`, else the cgroup path."""
    if kind == "pod":
        return f"{namespace}/{pod}" if namespace and pod else f"pod:{pod_uid}"
    if container_id and (not unit or container_id in unit):
        return f"container:{runtime or 'unknown'}/{container_id[:12]}"
    return unit or path


@dataclass(frozen=True, slots=True)
class ProcessInfo:
    """A process as psutil saw it while it was alive (kept after it exits)."""

    pid: int
    tgid: int  # the thread group (process) id; == pid unless `pid` is a thread
    ppid: int
    comm: str
    exe: str  # empty when unreadable (kernel thread, zombie, permission)
    cmdline: tuple[str, ...]  # at most CMDLINE_ARGS arguments of CMDLINE_ARG_CHARS each
    username: str
    uid: int
    start_time: float  # seconds since the epoch (psutil's create_time)
    cmdline_truncated: bool = False
