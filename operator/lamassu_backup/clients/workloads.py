"""Deployments and StatefulSets a restore stops and starts, and the HTTP health checks after it.

Kept apart from :mod:`clients.kube` (the custom resources and Jobs): a restore is the only thing
that changes Lamassu's own workloads, and this module is the only place that does.
"""

from __future__ import annotations

import ssl
import urllib.error
import urllib.request
from typing import Any

from kubernetes import client

from ..errors import KubernetesError
from .kube import guard, read_or_none

KINDS = ("Deployment", "StatefulSet")


class WorkloadApi:
    """Read and scale Deployments and StatefulSets."""

    def __init__(self, api: client.ApiClient) -> None:
        self.api = api
        self.apps = client.AppsV1Api(api)

    def _plain(self, obj: Any) -> dict[str, Any]:
        data: dict[str, Any] = self.api.sanitize_for_serialization(obj)
        return data

    def list(self, namespace: str, selector: str) -> list[dict[str, Any]]:
        """Deployments and StatefulSets matching a label selector."""
        out: list[dict[str, Any]] = []
        for kind, call in (
            ("Deployment", self.apps.list_namespaced_deployment),
            ("StatefulSet", self.apps.list_namespaced_stateful_set),
        ):
            resp = guard(
                f"listing {kind}s in {namespace}",
                lambda call=call: call(namespace, label_selector=selector),  # type: ignore[misc]
            )
            for item in resp.items:
                obj = self._plain(item)
                obj["kind"] = kind
                out.append(obj)
        return out

    def get(self, kind: str, namespace: str, name: str) -> dict[str, Any] | None:
        """One workload, or None."""
        read = (
            self.apps.read_namespaced_deployment
            if kind == "Deployment"
            else self.apps.read_namespaced_stateful_set
        )
        obj = read_or_none(f"reading {kind} {namespace}/{name}", lambda: read(name, namespace))
        if obj is None:
            return None
        data = self._plain(obj)
        data["kind"] = kind
        return data

    def scale(
        self,
        kind: str,
        namespace: str,
        name: str,
        replicas: int,
        annotations: dict[str, str | None],
    ) -> None:
        """Set replicas and annotations in one merge patch (a None annotation is removed)."""
        if kind not in KINDS:
            raise KubernetesError(f"cannot scale a {kind}")
        patch = {"metadata": {"annotations": annotations}, "spec": {"replicas": replicas}}
        call = (
            self.apps.patch_namespaced_deployment
            if kind == "Deployment"
            else self.apps.patch_namespaced_stateful_set
        )
        guard(
            f"scaling {kind} {namespace}/{name} to {replicas}", lambda: call(name, namespace, patch)
        )


def http_status(url: str, timeout: float = 5.0, ca_file: str | None = None) -> tuple[int, str]:
    """GET a URL: the status code (0 when it could not connect) and a short reason."""
    context = ssl.create_default_context(cafile=ca_file) if url.startswith("https") else None
    request = urllib.request.Request(url, method="GET")  # noqa: S310 - http(s) only, by the schema
    try:
        with urllib.request.urlopen(request, timeout=timeout, context=context) as resp:  # noqa: S310
            return int(resp.status), "OK"
    except urllib.error.HTTPError as exc:
        return int(exc.code), str(exc.reason)[:80]
    except (urllib.error.URLError, OSError, ValueError) as exc:
        reason = getattr(exc, "reason", exc)
        return 0, f"{type(reason).__name__}"
