"""cgroup v2 path -> CgroupInfo, on paths shaped like those real nodes and hosts produce.

Sources of the shapes: the kubelet's systemd/cgroupfs naming (pod UID with
`_` for `-` in slice names), `systemctl status` of CRI-O's conmon scopes, NRI
plugin logs from CRI-O on OpenShift (pod infra cgroup without `.scope`),
`tree /sys/fs/cgroup` of containerd nodes (static pods under their 32-hex
config hash), kind nodes seen from the host, crun's `container` sub-cgroup.
"""

from __future__ import annotations

import pytest

from agent.workloads import CgroupInfo, parse_cgroup_path

UID = "207aaad1-659f-4db8-88e0-46e0cdcc3004"
U_ = UID.replace("-", "_")
STATIC = "03671a0313f5acf27bef3683009923f8"  # a static pod: md5 of its manifest
C1 = "32da98c8522068be05a7510a3eddb09cad6ed2f03286180d0e931d0d0b6224a6"
C2 = "805b902ed98fdc1409c76e9aa94964787a904c80f46fc3ee74283509108f5e73"
NODE = "3350ade4226f0adcd9e4e9545d7c2a16a5aa362d12315f2a88e2024cea1246cf"
BURST = f"/kubepods.slice/kubepods-burstable.slice/kubepods-burstable-pod{U_}.slice"

# (path, kind, pod_uid, qos, container_id, runtime, unit)
POD_CASES = [
    # systemd driver, containerd
    (f"{BURST}/cri-containerd-{C1}.scope", UID, "burstable", C1, "containerd"),
    (f"/kubepods.slice/kubepods-besteffort.slice/kubepods-besteffort-pod{U_}.slice/"
     f"cri-containerd-{C2}.scope", UID, "besteffort", C2, "containerd"),
    (f"/kubepods.slice/kubepods-pod{U_}.slice/cri-containerd-{C1}.scope",
     UID, "guaranteed", C1, "containerd"),
    (f"/kubepods.slice/kubepods-burstable.slice/kubepods-burstable-pod{STATIC}.slice/"
     f"cri-containerd-{C1}.scope", STATIC, "burstable", C1, "containerd"),
    # the pod-level cgroup itself
    (BURST, UID, "burstable", "", ""),
    (f"/kubepods.slice/kubepods-pod{U_}.slice", UID, "guaranteed", "", ""),
    # systemd driver, CRI-O: container, conmon, the infra cgroup without `.scope`
    (f"{BURST}/crio-{C2}.scope", UID, "burstable", C2, "crio"),
    (f"{BURST}/crio-conmon-{C1}.scope", UID, "burstable", C1, "crio"),
    (f"{BURST}/crio-{C1}", UID, "burstable", C1, "crio"),
    # crun's sub-cgroup under the scope stays the container's
    (f"{BURST}/crio-{C2}.scope/container", UID, "burstable", C2, "crio"),
    # systemd driver, docker (cri-dockerd)
    (f"{BURST}/docker-{C1}.scope", UID, "burstable", C1, "docker"),
    # kind: kubelet's cgroup root `/kubelet`, inside the node container, seen from the host
    (f"/system.slice/docker-{NODE}.scope/kubelet.slice/kubelet-kubepods.slice/"
     f"kubelet-kubepods-besteffort.slice/kubelet-kubepods-besteffort-pod{U_}.slice/"
     f"cri-containerd-{C1}.scope", UID, "besteffort", C1, "containerd"),
    (f"/kubelet.slice/kubelet-kubepods.slice/kubelet-kubepods-pod{U_}.slice/"
     f"cri-containerd-{C2}.scope", UID, "guaranteed", C2, "containerd"),
    (f"/docker/{NODE}/kubelet.slice/kubelet-kubepods.slice/kubelet-kubepods-burstable.slice/"
     f"kubelet-kubepods-burstable-pod{U_}.slice/cri-containerd-{C1}.scope",
     UID, "burstable", C1, "containerd"),
    # cgroupfs driver (containerd and docker both name the container by its bare id)
    (f"/kubepods/burstable/pod{UID}/{C1}", UID, "burstable", C1, ""),
    (f"/kubepods/besteffort/pod{UID}/{C2}", UID, "besteffort", C2, ""),
    (f"/kubepods/pod{UID}/{C1}", UID, "guaranteed", C1, ""),
    (f"/kubepods/pod{STATIC}/{C1}", STATIC, "guaranteed", C1, ""),
    (f"/kubepods/burstable/pod{UID}", UID, "burstable", "", ""),
    # cgroupfs driver, CRI-O names its cgroups crio-<id>
    (f"/kubepods/burstable/pod{UID}/crio-{C1}", UID, "burstable", C1, "crio"),
    (f"/kubepods/besteffort/pod{UID}/crio-conmon-{C2}", UID, "besteffort", C2, "crio"),
    # kubepods under other parents: kubelet --cgroup-root, k3d (k3s in docker), a test root
    (f"/kubelet/kubepods/burstable/pod{UID}/{C1}", UID, "burstable", C1, ""),
    (f"/docker/{NODE}/kubepods/besteffort/pod{UID}/{C2}", UID, "besteffort", C2, ""),
    (f"/manul-test-1234/kubepods/pod{UID}/{C1}", UID, "guaranteed", C1, ""),
    (f"/manul-test-1234/kubepods.slice/kubepods-burstable.slice/"
     f"kubepods-burstable-pod{U_}.slice/cri-containerd-{C1}.scope",
     UID, "burstable", C1, "containerd"),
    # a pod running its own containers (docker in docker): the pod's container wins
    (f"/kubepods/burstable/pod{UID}/{C1}/docker/{C2}", UID, "burstable", C1, ""),
]


@pytest.mark.parametrize(("path", "uid", "qos", "cid", "runtime"), POD_CASES)
def test_pod_layouts(path: str, uid: str, qos: str, cid: str, runtime: str) -> None:
    assert parse_cgroup_path(path) == CgroupInfo(
        "pod", path, pod_uid=uid, qos=qos, container_id=cid, runtime=runtime)  # type: ignore[arg-type]


HOST_CASES = [
    # systemd services, nested cgroups of a service, scopes
    ("/system.slice/sshd.service", "sshd.service", "", ""),
    ("/system.slice/analyst-agent.service/worker", "analyst-agent.service", "", ""),
    ("/system.slice/kubelet.service", "kubelet.service", "", ""),
    ("/init.scope", "init.scope", "", ""),
    ("/system.slice/system-getty.slice/getty@tty1.service", "getty@tty1.service", "", ""),
    # user sessions and user services
    ("/user.slice/user-1000.slice/session-3.scope", "session-3.scope", "", ""),
    ("/user.slice/user-1000.slice/user@1000.service/app.slice/foo.service",
     "foo.service", "", ""),
    ("/user.slice/user-1000.slice/user@1000.service/app.slice/"
     "app-gnome-org.gnome.Terminal-1234.scope", "app-gnome-org.gnome.Terminal-1234.scope", "", ""),
    # docker on the host: systemd driver (a scope) and cgroupfs driver
    (f"/system.slice/docker-{C1}.scope", f"docker-{C1}.scope", C1, "docker"),
    (f"/docker/{C1}", "", C1, "docker"),
    # podman: container and conmon scopes, rootless, crun's sub-cgroup, cgroupfs
    (f"/machine.slice/libpod-{C1}.scope", f"libpod-{C1}.scope", C1, "podman"),
    (f"/machine.slice/libpod-conmon-{C2}.scope", f"libpod-conmon-{C2}.scope", C2, "podman"),
    (f"/machine.slice/libpod-{C1}.scope/container", f"libpod-{C1}.scope", C1, "podman"),
    (f"/user.slice/user-1000.slice/user@1000.service/user.slice/libpod-{C2}.scope",
     f"libpod-{C2}.scope", C2, "podman"),
    (f"/libpod_parent/libpod-{C1}", "", C1, "podman"),
    # containerd outside Kubernetes: nerdctl's scope, the default /<namespace>/<id>
    (f"/system.slice/nerdctl-{C1}.scope", f"nerdctl-{C1}.scope", C1, "containerd"),
    (f"/default/{C2}", "", C2, "containerd"),
    (f"/system.slice/cri-containerd-{C1}.scope", f"cri-containerd-{C1}.scope", C1, "containerd"),
    # plain paths
    ("/", "", "", ""),
    ("/manul.slice/analyst/worker-1", "", "", ""),
    ("/agents/a1", "", "", ""),
    # kubepods parts without a pod are not pods
    ("/kubepods.slice/kubepods-burstable.slice", "", "", ""),
    ("/kubepods/burstable", "", "", ""),
    (f"/pods/pod{UID}", "", "", ""),  # a pod<uid> not under kubepods
    ("/kubepods/burstable/podnot-a-uid", "", "", ""),
    ("/kubepods.slice/kubepods-burstable.slice/kubepods-burstable-podxyz.slice", "", "", ""),
    (f"/kubepods/burstable/pod{UID}extra/{C1}", "", C1, "containerd"),
]


@pytest.mark.parametrize(("path", "unit", "cid", "runtime"), HOST_CASES)
def test_host_layouts(path: str, unit: str, cid: str, runtime: str) -> None:
    assert parse_cgroup_path(path) == CgroupInfo(
        "host", path, container_id=cid, runtime=runtime, unit=unit)  # type: ignore[arg-type]


@pytest.mark.parametrize(("raw", "norm"), [
    ("/system.slice/foo.service (deleted)", "/system.slice/foo.service"),
    ("system.slice//foo.service/", "/system.slice/foo.service"),
    ("", "/"),
])
def test_paths_are_normalised(raw: str, norm: str) -> None:
    assert parse_cgroup_path(raw).path == norm


def test_short_or_upper_case_ids_are_not_containers() -> None:
    assert parse_cgroup_path(f"/docker/{C1[:12]}").container_id == ""
    assert parse_cgroup_path(f"/docker/{C1.upper()}").container_id == ""
    assert parse_cgroup_path(f"{BURST}/cri-containerd-{C1[:-1]}.scope").container_id == ""
