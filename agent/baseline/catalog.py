"""What the `credential-access` and `metadata-endpoint` detectors look for.

The credential catalogue is a list of path patterns (`fnmatch` globs over
resolved paths, `*` spanning `/`), each with what it is; an agent's
`spec.baseline.credentials` adds patterns of its own. A workload's own
service-account token (`/run/secrets/kubernetes.io/serviceaccount/...`,
what its pod mounts for it) is not in it: another pod's token, read
through the kubelet's volume directories on the node, is.

Paths are as the kernel resolves them (symlinks followed), so each
`/var/run/...` socket is listed under `/run/...` too.
"""

from __future__ import annotations

import glob as globbing
import ipaddress
import os
from dataclasses import dataclass
from fnmatch import fnmatchcase

from agent.baseline.events import Item, Kind


@dataclass(frozen=True, slots=True)
class Pattern:
    what: str
    glob: str
    kinds: frozenset[Kind] = frozenset({Kind.READ, Kind.WRITE})

    def matches(self, item: Item) -> bool:
        return item.kind in self.kinds and fnmatchcase(item.path, self.glob)


_FILES = frozenset({Kind.READ, Kind.WRITE})
_SOCKETS = frozenset({Kind.UNIX, Kind.READ, Kind.WRITE})

CREDENTIALS: tuple[Pattern, ...] = (
    Pattern("another workload's service-account token",
            "/var/lib/kubelet/pods/*/volumes/kubernetes.io~projected/*/token"),
    Pattern("another workload's secret volume",
            "/var/lib/kubelet/pods/*/volumes/kubernetes.io~secret/*"),
    Pattern("AWS credentials", "*/.aws/credentials"),
    Pattern("AWS configuration", "*/.aws/config"),
    Pattern("Google Cloud credentials", "*/.config/gcloud/*"),
    Pattern("Azure credentials", "*/.azure/*"),
    Pattern("cloud provider configuration", "/etc/kubernetes/azure.json"),
    Pattern("SSH private key", "*/.ssh/id_*"),
    Pattern("SSH host key", "/etc/ssh/ssh_host_*_key"),
    Pattern("kubeconfig", "*/.kube/config"),
    Pattern("kubeconfig", "/etc/kubernetes/*.conf"),
    Pattern("kubelet kubeconfig", "/var/lib/kubelet/kubeconfig"),
    Pattern("cluster PKI", "/etc/kubernetes/pki/*"),
    Pattern("password hashes", "/etc/shadow"),
    Pattern("password hashes", "/etc/gshadow"),
    Pattern("kubelet client certificates", "/var/lib/kubelet/pki/*"),
    Pattern("container registry credentials", "*/.docker/config.json"),
    Pattern("container registry credentials", "*/.config/containers/auth.json"),
    # dot files of a home directory (a pattern `*/.netrc` would make every directory
    # one that may hold a credential: none could be generalised)
    *(Pattern(what, f"{home}/{name}") for what, name in (
        ("git credentials", ".git-credentials"), ("netrc credentials", ".netrc"),
        ("PostgreSQL passwords", ".pgpass"), ("Vault token", ".vault-token"))
      for home in ("/root", "/home/*")),
    Pattern("another process's environment", "/proc/pid/environ"),
    Pattern("container runtime socket", "/run/containerd/containerd.sock", _SOCKETS),
    Pattern("container runtime socket", "/var/run/containerd/containerd.sock", _SOCKETS),
    Pattern("container runtime socket", "/run/k3s/containerd/containerd.sock", _SOCKETS),
    Pattern("container runtime socket", "/run/docker.sock", _SOCKETS),
    Pattern("container runtime socket", "/var/run/docker.sock", _SOCKETS),
    Pattern("container runtime socket", "/run/crio/crio.sock", _SOCKETS),
    Pattern("container runtime socket", "/var/run/crio/crio.sock", _SOCKETS),
    Pattern("container runtime socket", "/run/podman/podman.sock", _SOCKETS),
    Pattern("container runtime socket (rootless)", "/run/user/*/docker.sock", _SOCKETS),
    Pattern("container runtime socket (rootless)", "/run/user/*/podman/podman.sock", _SOCKETS),
)

# Cloud instance metadata services (any port, any protocol).
METADATA_ADDRESSES: dict[str, str] = {
    "169.254.169.254": "cloud instance metadata (AWS, GCP, Azure, OpenStack, ...)",
    "fd00:ec2::254": "cloud instance metadata (AWS, IPv6)",
    "169.254.170.2": "container credentials endpoint (AWS ECS)",
    "169.254.170.23": "EKS Pod Identity agent",
    "100.100.100.200": "cloud instance metadata (Alibaba Cloud)",
    "169.254.0.23": "cloud instance metadata (Tencent Cloud)",
    "fd20:ce::254": "cloud instance metadata (Google Cloud, IPv6)",
    "168.63.129.16": "Azure WireServer (host agent, extensions' settings)",
    "64:ff9b::a9fe:a9fe": "cloud instance metadata through NAT64 (169.254.169.254)",
}


def credential(item: Item, extra: tuple[str, ...] = ()) -> str | None:
    """What credential `item` touches (the catalogue's words), or None."""
    if not item.kind.has_path:
        return None
    for p in CREDENTIALS:
        if p.matches(item):
            return p.what
    for glob in extra:
        if item.kind in _SOCKETS and fnmatchcase(item.path, glob):
            return f"credential listed for this agent (`{glob}`)"
    return None


def metadata(item: Item) -> str | None:
    """Which metadata service `item` connects to, or None."""
    if item.kind is not Kind.CONNECT:
        return None
    addr = item.addr
    ip = ipaddress.ip_address(addr)
    if ip.version == 6 and ip.ipv4_mapped is not None:  # pragma: no cover - decode maps it
        addr = str(ip.ipv4_mapped)
    return METADATA_ADDRESSES.get(addr)


def may_hold_credentials(directory: str, extra: tuple[str, ...] = ()) -> bool:
    """Could a file directly in `directory` be a catalogued credential? Such a
    directory is never generalised (its files stay exact, so a new one is seen)."""
    d = directory.rstrip("/") or "/"
    for glob in [p.glob for p in CREDENTIALS] + list(extra):
        parent, _, name = glob.rpartition("/")
        # the pattern's own directory, or (`*` spans `/`) a file named like its
        # last component directly in `d` (`/etc/kubernetes/*.conf` reaches
        # `/etc/kubernetes/manifests/x.conf`)
        if fnmatchcase(d, parent or "/") or fnmatchcase(f"{d.rstrip('/')}/{name}", glob):
            return True
    return False


HOME_DIRS = ("/root", "/home/*")  # where `*/...` patterns are looked for on the node
MAX_FILES = 4096  # catalogued files indexed by inode, at most


def _expansions(pattern: str) -> list[str]:
    """Shell globs for the files on this node that `pattern` (an fnmatch glob whose
    `*` spans `/`) names: a leading `*/` is the home directories; a trailing `/*`
    any depth below."""
    bases = [pattern]
    if pattern.startswith("*/"):
        bases = [f"{h}/{pattern[2:]}" for h in HOME_DIRS]
    out = []
    for b in bases:
        out.append(b)
        if b.endswith("/*"):
            out.append(b[:-2] + "/**/*")
    return out


def kernel_dev(st_dev: int) -> int:
    """A stat's st_dev in the kernel's own encoding (MKDEV: major << 20 | minor)."""
    return (os.major(st_dev) << 20) | os.minor(st_dev)


def credential_files(extra: tuple[str, ...] = ()) -> dict[tuple[int, int], tuple[str, str]]:
    """(kernel dev, inode) -> (path, what) of every catalogued credential that exists
    on this node, symlinks followed: a hard link, a bind mount or a /proc/<pid>/root
    path to one of them is the same inode (bpf/baseline.bpf.c, `bl_secrets`)."""
    out: dict[tuple[int, int], tuple[str, str]] = {}
    patterns = [(p.glob, p.what) for p in CREDENTIALS] + [
        (g, f"credential listed for an agent (`{g}`)") for g in extra]
    for pattern, what in patterns:
        for shell_glob in _expansions(pattern):
            for path in sorted(globbing.glob(shell_glob, recursive=True)):
                if not fnmatchcase(path, pattern) and not pattern.startswith("*/"):
                    continue
                try:
                    st = os.stat(path)
                except OSError:
                    continue
                if os.path.isdir(path):
                    continue
                out.setdefault((kernel_dev(st.st_dev), st.st_ino), (path, what))
                if len(out) >= MAX_FILES:
                    return out
    return out
