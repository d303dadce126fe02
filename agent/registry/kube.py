"""The cluster backend: registry records as `manul.dev/v1alpha1` custom resources.

Same model and same interface as the host backend (`FileSource`): a
`registry` snapshot and `poll()` that swaps in a new one when something
changed, keeping the previous snapshot when the new one is invalid. It
lists each kind with the `kubernetes` client's `CustomObjectsApi` (all
namespaces) and compares the lists' resourceVersions, so an unchanged
cluster costs one list call per kind and no parsing. The CRDs are in
`charts/manul/crds/`.
"""

from __future__ import annotations

import logging
from typing import Any

from agent.errors import ManulError, RegistryError
from agent.registry.model import API_VERSION, Record
from agent.registry.parse import parse_record
from agent.registry.registry import Registry

log = logging.getLogger(__name__)

GROUP, VERSION = API_VERSION.split("/")
PLURALS = {
    "Agent": "agents",
    "ServiceIdentity": "serviceidentities",
    "LLMProvider": "llmproviders",
    "MCPServer": "mcpservers",
    "Policy": "policies",
}


def load_credentials(error: type[ManulError] = RegistryError) -> None:
    """Configure the `kubernetes` client: in-cluster service account, else kubeconfig.

    Shared by both cluster backends (this one and `agent.workloads.KubePods`);
    `error` is the caller's error class.
    """
    from kubernetes import config

    try:
        config.load_incluster_config()  # type: ignore[no-untyped-call]
    except config.ConfigException:
        try:
            config.load_kube_config()  # type: ignore[no-untyped-call]
        except (config.ConfigException, OSError) as e:
            raise error(f"no Kubernetes credentials (in-cluster or kubeconfig): {e}") from e


def _custom_api() -> Any:
    from kubernetes import client

    load_credentials()
    return client.CustomObjectsApi()


class KubeSource:
    """Registry records from the API server; `api` is a `CustomObjectsApi`."""

    def __init__(self, api: Any = None) -> None:
        self.api = api if api is not None else _custom_api()
        self._versions: dict[str, str] = {}
        self.last_error: str | None = None
        self.registry = self._load()

    def _list(self, kind: str) -> tuple[str, list[dict[str, Any]]]:
        from kubernetes.client.exceptions import ApiException

        try:
            doc = self.api.list_cluster_custom_object(GROUP, VERSION, PLURALS[kind])
        except ApiException as e:
            if e.status == 404:
                raise RegistryError(
                    f"the `{PLURALS[kind]}.{GROUP}` CRD is not installed; install the chart's "
                    "CRDs (charts/manul/crds/)") from e
            raise RegistryError(f"cannot list {PLURALS[kind]}.{GROUP}: {e.status} "
                                f"{e.reason}") from e
        except OSError as e:
            raise RegistryError(f"cannot reach the API server: {e}") from e
        items = doc.get("items", [])
        return str(doc.get("metadata", {}).get("resourceVersion", "")), items

    def _load(self) -> Registry:
        records: list[Record] = []
        versions: dict[str, str] = {}
        for kind, plural in PLURALS.items():
            version, items = self._list(kind)
            versions[kind] = version
            for item in items:
                obj = {"apiVersion": API_VERSION, "kind": kind, **item}
                meta = obj.get("metadata", {})
                where = f"{plural}.{GROUP}/{meta.get('namespace', '')}/" \
                        f"{meta.get('name', '?')}".replace("//", "/")
                records.append(parse_record(obj, where))
        reg = Registry.build(records)
        self._versions = versions
        return reg

    def poll(self) -> bool:
        """Reload when any kind changed. True when a new snapshot is in force."""
        try:
            current = {kind: self._list(kind)[0] for kind in PLURALS}
            if current == self._versions:
                return False
            new = self._load()
        except RegistryError as e:
            self.last_error = str(e)
            log.error("registry reload from the cluster failed, keeping the previous one: %s",
                      e)
            return False
        self.last_error = None
        self.registry = new
        return True
