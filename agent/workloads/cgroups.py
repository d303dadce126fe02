"""What a cgroup v2 path says about its workload: a pod (UID, QoS, container) or a host unit.

Pure string parsing, no file system access. The resolver calls
`parse_cgroup_path` on the first resolve of each cgroup; tests call it with
paths shaped like real nodes'. `docs/workloads.md` lists the layouts.

A path is relative to the cgroup v2 root and starts with `/`. The kubelet's
pod cgroup is recognised wherever it sits (kind and k3s nest `kubepods`
under other parents, e.g. `/system.slice/docker-<node>.scope/kubelet.slice/`):

    systemd driver   .../kubepods[-<qos>]-pod<uid, `-` written `_`>.slice
                     (any prefix: kind's `kubelet-kubepods-...` too)
    cgroupfs driver  .../kubepods[/<qos>]/pod<uid>

where <qos> is `burstable` or `besteffort` (none: guaranteed). The first
container component below the pod cgroup names the container:

    cri-containerd-<id>.scope   containerd (systemd driver)
    crio-<id>[.scope]           CRI-O (a pod's infra cgroup has no `.scope`)
    crio-conmon-<id>[.scope]    CRI-O's container monitor
    docker-<id>.scope           docker / cri-dockerd (systemd driver)
    <id>                        cgroupfs driver, containerd or docker: runtime unknown

Anything deeper (crun's `container` sub-cgroup, a pod's own nested
containers) stays attributed to that container. Outside a pod the path is a
host workload: the innermost `*.service` / `*.scope` component is its unit,
and the outermost container component (also `libpod[-conmon]-<id>[.scope]`
for podman, `nerdctl-<id>.scope`, `/docker/<id>`, containerd's default
`/<namespace>/<id>`) its container.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from typing import Literal

Kind = Literal["pod", "host"]
QoS = Literal["guaranteed", "burstable", "besteffort", ""]
Runtime = Literal["containerd", "crio", "docker", "podman", ""]

_HEX64 = r"[0-9a-f]{64}"
# A pod UID: 36-character RFC 4122 form, or a static pod's 32-hex config hash.
_UID = r"[0-9a-f]{8}[-_][0-9a-f]{4}[-_][0-9a-f]{4}[-_][0-9a-f]{4}[-_][0-9a-f]{12}|[0-9a-f]{32}"
_SYSTEMD_POD = re.compile(rf"kubepods(?:-(burstable|besteffort))?-pod({_UID})\.slice")
_CGROUPFS_POD = re.compile(rf"pod({_UID})")
_QOS_DIRS = ("burstable", "besteffort")

# (pattern, runtime) in the order tried; the first group is the container id.
_CONTAINER: tuple[tuple[re.Pattern[str], Runtime], ...] = (
    (re.compile(rf"cri-containerd-({_HEX64})\.scope"), "containerd"),
    (re.compile(rf"crio-conmon-({_HEX64})(?:\.scope)?"), "crio"),
    (re.compile(rf"crio-({_HEX64})(?:\.scope)?"), "crio"),
    (re.compile(rf"docker-({_HEX64})\.scope"), "docker"),
    (re.compile(rf"libpod-conmon-({_HEX64})(?:\.scope)?"), "podman"),
    (re.compile(rf"libpod-({_HEX64})(?:\.scope)?"), "podman"),
    (re.compile(rf"nerdctl-({_HEX64})\.scope"), "containerd"),
)
_BARE_ID = re.compile(_HEX64)


@dataclass(frozen=True, slots=True)
class CgroupInfo:
    """The workload a cgroup path names. Empty strings mean "not in the path"."""

    kind: Kind
    path: str
    pod_uid: str = ""  # with dashes, lower case; a static pod's 32-hex hash as is
    qos: QoS = ""  # pods only
    container_id: str = ""  # 64 hex
    runtime: Runtime = ""
    unit: str = ""  # host only: innermost `*.service` / `*.scope`


def parse_cgroup_path(path: str) -> CgroupInfo:
    """Classify a cgroup v2 path (relative to the v2 root, e.g. `/kubepods.slice/...`)."""
    if path.endswith(" (deleted)"):  # as /proc/<pid>/cgroup shows a removed cgroup
        path = path[: -len(" (deleted)")]
    parts = [p for p in path.split("/") if p]
    norm = "/" + "/".join(parts)
    for i, part in enumerate(parts):
        pod = _pod_component(parts, i, part)
        if pod is not None:
            uid, qos = pod
            cid, runtime = _first_container(parts[i + 1:], in_pod=True)
            return CgroupInfo("pod", norm, pod_uid=uid, qos=qos, container_id=cid,
                              runtime=runtime)
    cid, runtime = _first_container(parts, in_pod=False)
    unit = next((p for p in reversed(parts) if p.endswith((".service", ".scope"))), "")
    return CgroupInfo("host", norm, container_id=cid, runtime=runtime, unit=unit)


def _pod_component(parts: list[str], i: int, part: str) -> tuple[str, QoS] | None:
    if part.endswith(".slice"):
        at = part.rfind("kubepods")  # after a prefix: kind's `kubelet-kubepods-...`
        if at < 0 or (at > 0 and part[at - 1] != "-"):
            return None
        m = _SYSTEMD_POD.fullmatch(part, at)
        if m is None:
            return None
        return m.group(2).replace("_", "-"), _qos(m.group(1))
    if not part.startswith("pod"):
        return None
    m = _CGROUPFS_POD.fullmatch(part)
    if m is None or i == 0:
        return None
    parent = parts[i - 1]
    if parent == "kubepods":
        return m.group(1).replace("_", "-"), "guaranteed"
    if parent in _QOS_DIRS and i >= 2 and parts[i - 2] == "kubepods":
        return m.group(1).replace("_", "-"), _qos(parent)
    return None


def _qos(name: str | None) -> QoS:
    if name == "burstable":
        return "burstable"
    if name == "besteffort":
        return "besteffort"
    return "guaranteed"


def _first_container(parts: list[str], *, in_pod: bool) -> tuple[str, Runtime]:
    for i, part in enumerate(parts):
        if len(part) < 64:  # every container component holds a 64-hex id
            continue
        for pattern, runtime in _CONTAINER:
            m = pattern.fullmatch(part)
            if m is not None:
                return m.group(1), runtime
        if _BARE_ID.fullmatch(part):
            if in_pod:
                return part, ""  # cgroupfs driver: containerd and docker look alike
            parent = parts[i - 1] if i else ""
            if parent == "docker":
                return part, "docker"
            return part, ("containerd" if parent else "")
    return "", ""
