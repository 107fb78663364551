"""Kubernetes API access: one place that imports the kubernetes client and converts its errors."""

from __future__ import annotations

import os
from collections.abc import Callable
from typing import Any, TypeVar

from kubernetes import client, config
from kubernetes.client.exceptions import ApiException
from urllib3.exceptions import HTTPError

from ..errors import KubernetesError

T = TypeVar("T")


def load_config(kubeconfig: str | None = None) -> client.ApiClient:
    """In-cluster configuration when running in a Pod, else a kubeconfig (``KUBECONFIG``)."""
    if kubeconfig is None and os.environ.get("KUBERNETES_SERVICE_HOST"):
        config.load_incluster_config()
        return client.ApiClient()
    cfg = client.Configuration()
    config.load_kube_config(config_file=kubeconfig, client_configuration=cfg)
    return client.ApiClient(cfg)


def guard(what: str, call: Callable[[], T]) -> T:
    """Run an API call, converting client errors into KubernetesError naming the operation."""
    try:
        return call()
    except ApiException as exc:
        raise KubernetesError(
            f"{what}: HTTP {exc.status} {exc.reason}", reason=_reason(exc.status)
        ) from None
    except HTTPError as exc:
        raise KubernetesError(f"{what}: {type(exc).__name__}") from None


def _reason(status: int | None) -> str:
    return {403: "Forbidden", 404: "NotFound", 409: "Conflict"}.get(status or 0, "KubernetesError")


def not_found(exc: BaseException) -> bool:
    """True for a KubernetesError that is a 404."""
    return isinstance(exc, KubernetesError) and exc.reason == "NotFound"


class ConfigReader:
    """Reads ConfigMaps and Secrets for the config component."""

    def __init__(self, api: client.ApiClient) -> None:
        self.core = client.CoreV1Api(api)
        self.api = api

    def _plain(self, obj: Any) -> dict[str, Any]:
        data: dict[str, Any] = self.api.sanitize_for_serialization(obj)
        return data

    def config_map(self, namespace: str, name: str) -> dict[str, Any]:
        """One ConfigMap as a plain dict."""
        return self._plain(
            guard(
                f"reading ConfigMap {namespace}/{name}",
                lambda: self.core.read_namespaced_config_map(name, namespace),
            )
        )

    def secret(self, namespace: str, name: str) -> dict[str, Any]:
        """One Secret as a plain dict (data stays base64, as the API gives it)."""
        return self._plain(
            guard(
                f"reading Secret {namespace}/{name}",
                lambda: self.core.read_namespaced_secret(name, namespace),
            )
        )

    def select(self, namespace: str, selector: str) -> list[dict[str, Any]]:
        """ConfigMaps and Secrets matching a label selector."""
        cms = guard(
            f"listing ConfigMaps in {namespace} ({selector})",
            lambda: self.core.list_namespaced_config_map(namespace, label_selector=selector),
        )
        secrets = guard(
            f"listing Secrets in {namespace} ({selector})",
            lambda: self.core.list_namespaced_secret(namespace, label_selector=selector),
        )
        out = []
        for item in cms.items:
            obj = self._plain(item)
            obj.setdefault("kind", "ConfigMap")
            out.append(obj)
        for item in secrets.items:
            obj = self._plain(item)
            obj.setdefault("kind", "Secret")
            out.append(obj)
        return out
