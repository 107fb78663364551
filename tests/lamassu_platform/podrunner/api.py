"""Talking to the kube-apiserver: plain JSON requests, watch streams, Pod paths and deletion.

Why apart: the runner (watching, binding, reporting lost Pods) and the worker (status patches,
Secret/ConfigMap reads, TokenRequests) share one connection pool and one way to call the API.
"""

from __future__ import annotations

import json
from collections.abc import Iterator, Mapping
from datetime import UTC, datetime
from pathlib import Path
from typing import Any
from urllib.parse import quote

from kubernetes import client as k8s_client
from kubernetes import config as k8s_config
from kubernetes.client.exceptions import ApiException

JSON = dict[str, Any]


def rfc3339_now() -> str:
    """An RFC 3339 timestamp with seconds precision, as the API stores metav1.Time."""
    return datetime.now(UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


class Api:
    """Plain JSON requests on the client's connection pool.

    Objects stay dicts (camelCase, as on the wire): the generated models are not needed, and
    their deserialization is what breaks ``create_namespaced_pod_binding`` (python client #825).
    """

    def __init__(self, kubeconfig: Path) -> None:
        cfg = k8s_client.Configuration()
        k8s_config.load_kube_config(config_file=str(kubeconfig), client_configuration=cfg)
        cfg.connection_pool_maxsize = 64  # one worker thread per Pod shares the pool
        self.client = k8s_client.ApiClient(cfg)
        self.host = cfg.host.rstrip("/")
        # A bearer token from the kubeconfig, if it has one (the admin kubeconfig uses a cert).
        bearer = cfg.auth_settings().get("BearerToken") or {}
        self._auth: str | None = bearer.get("value")

    def _headers(self, content_type: str) -> dict[str, str]:
        headers = {"Accept": "application/json", "Content-Type": content_type}
        if self._auth:
            headers["Authorization"] = self._auth
        return headers

    def request(
        self,
        method: str,
        path: str,
        *,
        body: Any = None,
        query: Mapping[str, str] | None = None,
        content_type: str = "application/json",
        timeout: float = 30.0,
    ) -> JSON:
        """One request; raises ApiException on a non-2xx answer."""
        resp = self.client.rest_client.request(
            method,
            self.host + path,
            query_params=list((query or {}).items()),
            headers=self._headers(content_type),
            body=body,
            _request_timeout=timeout,
        )
        data = resp.data
        return json.loads(data) if data else {}

    def stream(self, path: str, query: Mapping[str, str], read_timeout: float) -> Any:
        """A streaming GET (a watch); the caller iterates and closes the urllib3 response."""
        return self.client.rest_client.request(
            "GET",
            self.host + path,
            query_params=list(query.items()),
            headers=self._headers("application/json"),
            _preload_content=False,
            _request_timeout=(10.0, read_timeout),
        )

    def close(self) -> None:
        self.client.close()


def pod_path(namespace: str, name: str, sub: str = "") -> str:
    return f"/api/v1/namespaces/{quote(namespace)}/pods/{quote(name)}{sub}"


def iter_events(resp: Any) -> Iterator[JSON]:
    """Newline-delimited JSON watch events from a streaming response."""
    buf = b""
    for chunk in resp.stream(64 * 1024, decode_content=True):
        buf += chunk
        while b"\n" in buf:
            line, buf = buf.split(b"\n", 1)
            if line.strip():
                yield json.loads(line)


def delete_now(api: Api, pod: JSON) -> None:
    """DELETE with grace 0 and a UID precondition: never a newer Pod with the same name."""
    meta = pod["metadata"]
    try:
        api.request(
            "DELETE",
            pod_path(meta["namespace"], meta["name"]),
            body={
                "apiVersion": "v1",
                "kind": "DeleteOptions",
                "gracePeriodSeconds": 0,
                "preconditions": {"uid": meta["uid"]},
            },
        )
    except ApiException as exc:
        if exc.status not in (404, 409):
            raise
