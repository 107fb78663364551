"""Kubernetes API access: one place that imports the kubernetes client and converts its errors."""

from __future__ import annotations

import base64
import json
import os
import time
from collections.abc import Callable
from typing import Any, TypeVar

from kubernetes import client, config
from kubernetes.client.exceptions import ApiException
from urllib3.exceptions import HTTPError

from ..errors import KubernetesError
from ..models.resources import GROUP, PLURALS, VERSION

T = TypeVar("T")

RESTORE_CLUSTER_ROLE = "lamassu-backup-restore"
"""The chart's ClusterRole for restore Jobs that write ConfigMaps and Secrets (bound per namespace)."""


def load_config(kubeconfig: str | None = None) -> client.ApiClient:
    """In-cluster configuration when running in a Pod, else a kubeconfig (``KUBECONFIG``)."""
    if kubeconfig is None and os.environ.get("KUBERNETES_SERVICE_HOST"):
        config.load_incluster_config()
        return client.ApiClient()
    cfg = client.Configuration()
    config.load_kube_config(config_file=kubeconfig, client_configuration=cfg)
    return client.ApiClient(cfg)


SERVICE_ACCOUNT_NAMESPACE = "/var/run/secrets/kubernetes.io/serviceaccount/namespace"


def connect(
    kubeconfig: str | None = None, context: str | None = None
) -> tuple[client.ApiClient, str]:
    """A client and the default namespace, as kubectl chooses them (for the kubectl plugin).

    ``kubeconfig`` (else ``$KUBECONFIG``, else ``~/.kube/config``) and ``context`` (else its
    current context); in a Pod without either, the in-cluster account and its namespace. A missing
    or unusable configuration is a KubernetesError naming it, never the client's own exception.
    """
    path = kubeconfig or os.environ.get("KUBECONFIG") or None
    try:
        if path is None and context is None and os.environ.get("KUBERNETES_SERVICE_HOST"):
            config.load_incluster_config()
            try:
                with open(SERVICE_ACCOUNT_NAMESPACE) as f:
                    namespace = f.read().strip() or "default"
            except OSError:
                namespace = "default"
            return client.ApiClient(), namespace
        cfg = client.Configuration()
        config.load_kube_config(config_file=path, context=context, client_configuration=cfg)
        contexts, active = config.list_kube_config_contexts(config_file=path)
    except (config.ConfigException, OSError, ValueError) as exc:
        where = path or "~/.kube/config"
        raise KubernetesError(
            f"cannot use the kubeconfig {where}"
            + (f" (context {context})" if context else "")
            + f": {exc}",
            reason="InvalidKubeconfig",
        ) from None
    chosen = next((c for c in contexts if c.get("name") == context), None) if context else active
    namespace = str(((chosen or {}).get("context") or {}).get("namespace") or "default")
    return client.ApiClient(cfg), namespace


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


def read_or_none(what: str, call: Callable[[], T]) -> T | None:
    """Like guard, but a 404 is an answer (None), not an error."""
    try:
        return guard(what, call)
    except KubernetesError as exc:
        if not_found(exc):
            return None
        raise


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


APPLY_CONTENT_TYPE = "application/apply-patch+yaml"


class ConfigWriter(ConfigReader):
    """Reads and server-side-applies ConfigMaps and Secrets for the restore's config step."""

    def get(self, kind: str, namespace: str, name: str) -> dict[str, Any] | None:
        """The live object, or None when it does not exist."""
        read = self.config_map if kind == "ConfigMap" else self.secret
        try:
            return read(namespace, name)
        except KubernetesError as exc:
            if not_found(exc):
                return None
            raise

    def apply(
        self, obj: dict[str, Any], *, field_manager: str, dry_run: bool = False
    ) -> dict[str, Any]:
        """Server-side apply of one ConfigMap or Secret (forcing conflicts: the backup wins).

        ``dry_run`` asks the apiserver to validate and admit the object without persisting it.
        """
        kind = obj["kind"]
        meta = obj["metadata"]
        patch = (
            self.core.patch_namespaced_config_map
            if kind == "ConfigMap"
            else self.core.patch_namespaced_secret
        )
        extra: dict[str, Any] = {"dry_run": "All"} if dry_run else {}
        result = guard(
            f"applying {kind} {meta['namespace']}/{meta['name']}",
            lambda: patch(
                meta["name"],
                meta["namespace"],
                obj,
                field_manager=field_manager,
                force=True,
                _content_type=APPLY_CONTENT_TYPE,
                **extra,
            ),
        )
        return self._plain(result)

    def replace(self, obj: dict[str, Any]) -> dict[str, Any]:
        """Put one ConfigMap or Secret back exactly as ``obj`` holds it (the undo of a restore:
        keys the restore added go too), over whatever version is live now."""
        kind = obj["kind"]
        meta = obj["metadata"]
        name, namespace = meta["name"], meta["namespace"]
        live = self.get(kind, namespace, name)
        if live is None:
            body = {**obj, "metadata": {k: v for k, v in meta.items() if k != "resourceVersion"}}
            create = (
                self.core.create_namespaced_config_map
                if kind == "ConfigMap"
                else self.core.create_namespaced_secret
            )
            return self._plain(
                guard(f"creating {kind} {namespace}/{name}", lambda: create(namespace, body))
            )
        body = {
            **obj,
            "metadata": {**meta, "resourceVersion": live["metadata"]["resourceVersion"]},
        }
        put = (
            self.core.replace_namespaced_config_map
            if kind == "ConfigMap"
            else self.core.replace_namespaced_secret
        )
        return self._plain(
            guard(f"replacing {kind} {namespace}/{name}", lambda: put(name, namespace, body))
        )

    def delete(self, kind: str, namespace: str, name: str) -> None:
        """Delete one ConfigMap or Secret (absent already is fine)."""
        remove = (
            self.core.delete_namespaced_config_map
            if kind == "ConfigMap"
            else self.core.delete_namespaced_secret
        )
        read_or_none(f"deleting {kind} {namespace}/{name}", lambda: remove(name, namespace))


ACCOUNT_RECHECK_SECONDS = 300.0


class KubeApi:
    """What the operator's services do through the API, each call guarded and named."""

    def __init__(self, api: client.ApiClient) -> None:
        self.api = api
        self.core = client.CoreV1Api(api)
        self.batch = client.BatchV1Api(api)
        self.apps = client.AppsV1Api(api)
        self.rbac = client.RbacAuthorizationV1Api(api)
        self.custom = client.CustomObjectsApi(api)
        self._accounts: dict[tuple[str, str], float] = {}  # (namespace, name) -> when ensured

    def close(self) -> None:
        """Release the connection pool (and its threads) when the operator stops."""
        self.api.close()

    def plain(self, obj: Any) -> dict[str, Any]:
        """A client model as a plain dict (camelCase keys, as the API speaks)."""
        data: dict[str, Any] = self.api.sanitize_for_serialization(obj)
        return data

    # -- custom resources ------------------------------------------------------------------

    def get_custom(self, kind: str, namespace: str, name: str) -> dict[str, Any] | None:
        """One of our objects, or None."""
        obj: dict[str, Any] | None = read_or_none(
            f"reading {kind} {namespace}/{name}",
            lambda: self.custom.get_namespaced_custom_object(
                GROUP, VERSION, namespace, PLURALS[kind], name
            ),
        )
        return obj

    def list_custom(
        self, kind: str, namespace: str, selector: str | None = None
    ) -> list[dict[str, Any]]:
        """Our objects in a namespace."""
        resp = guard(
            f"listing {kind} in {namespace}",
            lambda: self.custom.list_namespaced_custom_object(
                GROUP, VERSION, namespace, PLURALS[kind], label_selector=selector or ""
            ),
        )
        items: list[dict[str, Any]] = resp.get("items", [])
        return items

    def list_custom_all(self, kind: str) -> list[dict[str, Any]]:
        """Our objects in every namespace."""
        resp = guard(
            f"listing {kind} in every namespace",
            lambda: self.custom.list_cluster_custom_object(GROUP, VERSION, PLURALS[kind]),
        )
        items: list[dict[str, Any]] = resp.get("items", [])
        return items

    def create_custom(
        self, kind: str, namespace: str, body: dict[str, Any]
    ) -> tuple[dict[str, Any], bool]:
        """Create; returns (object, created). An existing object with the name is returned as is."""
        name = body["metadata"]["name"]
        try:
            obj: dict[str, Any] = self.custom.create_namespaced_custom_object(
                GROUP, VERSION, namespace, PLURALS[kind], body
            )
        except ApiException as exc:
            if exc.status == 409:
                existing = self.get_custom(kind, namespace, name)
                if existing is not None:
                    return existing, False
            raise KubernetesError(
                f"creating {kind} {namespace}/{name}: HTTP {exc.status} {exc.reason}"
            ) from None
        return obj, True

    def create_new_custom(self, kind: str, namespace: str, body: dict[str, Any]) -> dict[str, Any]:
        """Create, or fail: an existing name is a Conflict, an unknown field is refused (never
        silently pruned), and a refusal carries the apiserver's own message (it names the field or
        the validation rule).
        """
        name = body["metadata"].get("name") or body["metadata"].get("generateName", "")
        try:
            obj: dict[str, Any] = self.custom.create_namespaced_custom_object(
                GROUP, VERSION, namespace, PLURALS[kind], body, field_validation="Strict"
            )
        except ApiException as exc:
            raise KubernetesError(
                f"creating {kind} {namespace}/{name}: HTTP {exc.status} {_api_message(exc)}",
                reason=_reason(exc.status),
            ) from None
        except HTTPError as exc:
            raise KubernetesError(
                f"creating {kind} {namespace}/{name}: {type(exc).__name__}"
            ) from None
        return obj

    def patch_status(self, kind: str, namespace: str, name: str, status: dict[str, Any]) -> None:
        """Merge-patch the status subresource."""
        guard(
            f"updating the status of {kind} {namespace}/{name}",
            lambda: self.custom.patch_namespaced_custom_object_status(
                GROUP, VERSION, namespace, PLURALS[kind], name, {"status": status}
            ),
        )

    def patch_custom(
        self, kind: str, namespace: str, name: str, patch: dict[str, Any]
    ) -> dict[str, Any]:
        """Merge-patch one of our objects (metadata or spec; status has patch_status)."""
        obj: dict[str, Any] = guard(
            f"updating {kind} {namespace}/{name}",
            lambda: self.custom.patch_namespaced_custom_object(
                GROUP, VERSION, namespace, PLURALS[kind], name, patch
            ),
        )
        return obj

    def delete_custom(self, kind: str, namespace: str, name: str) -> None:
        """Delete (missing is fine)."""
        read_or_none(
            f"deleting {kind} {namespace}/{name}",
            lambda: self.custom.delete_namespaced_custom_object(
                GROUP, VERSION, namespace, PLURALS[kind], name, propagation_policy="Background"
            ),
        )

    # -- jobs and pods -----------------------------------------------------------------------

    def create_job(self, body: dict[str, Any]) -> tuple[dict[str, Any], bool]:
        """Create a Job; an existing one of the same name is adopted, never duplicated."""
        namespace, name = body["metadata"]["namespace"], body["metadata"]["name"]
        try:
            return self.plain(self.batch.create_namespaced_job(namespace, body)), True
        except ApiException as exc:
            if exc.status == 409:
                existing = self.get_job(namespace, name)
                if existing is not None:
                    return existing, False
            raise KubernetesError(
                f"creating Job {namespace}/{name}: HTTP {exc.status} {_api_message(exc)}",
                reason=_reason(exc.status),
            ) from None

    def get_job(self, namespace: str, name: str) -> dict[str, Any] | None:
        """A Job, or None."""
        job = read_or_none(
            f"reading Job {namespace}/{name}",
            lambda: self.batch.read_namespaced_job(name, namespace),
        )
        return None if job is None else self.plain(job)

    def list_jobs(self, namespace: str, selector: str) -> list[dict[str, Any]]:
        """Jobs matching a label selector."""
        resp = guard(
            f"listing Jobs in {namespace}",
            lambda: self.batch.list_namespaced_job(namespace, label_selector=selector),
        )
        return [self.plain(j) for j in resp.items]

    def delete_job(self, namespace: str, name: str) -> None:
        """Delete a Job and its Pods."""
        read_or_none(
            f"deleting Job {namespace}/{name}",
            lambda: self.batch.delete_namespaced_job(
                name, namespace, propagation_policy="Background"
            ),
        )

    def warning_events(self, namespace: str, kind: str, name: str) -> list[dict[str, Any]]:
        """Warning Events about one object, oldest first (what a controller said went wrong)."""
        resp = guard(
            f"listing Events of {kind} {namespace}/{name}",
            lambda: self.core.list_namespaced_event(
                namespace,
                field_selector=f"involvedObject.kind={kind},involvedObject.name={name},type=Warning",
            ),
        )
        events = [self.plain(e) for e in resp.items]
        return sorted(events, key=lambda e: str(e.get("lastTimestamp") or e.get("eventTime") or ""))

    def job_pods(self, namespace: str, job_name: str) -> list[dict[str, Any]]:
        """The Pods of a Job, newest first."""
        resp = guard(
            f"listing Pods of Job {namespace}/{job_name}",
            lambda: self.core.list_namespaced_pod(namespace, label_selector=f"job-name={job_name}"),
        )
        pods = [self.plain(p) for p in resp.items]
        return sorted(pods, key=lambda p: p["metadata"].get("creationTimestamp", ""), reverse=True)

    def pods(self, namespace: str, selector: str) -> list[dict[str, Any]]:
        """Pods matching a label selector (terminating ones included)."""
        resp = guard(
            f"listing Pods in {namespace}",
            lambda: self.core.list_namespaced_pod(namespace, label_selector=selector),
        )
        return [self.plain(p) for p in resp.items]

    def namespace_terminating(self, namespace: str) -> bool:
        """Whether a namespace is being deleted (no new Job can be created in it then)."""
        found = read_or_none(
            f"reading Namespace {namespace}", lambda: self.core.read_namespace(namespace)
        )
        return found is not None and getattr(found.status, "phase", None) == "Terminating"

    # -- deployments (the WAL shipper) -------------------------------------------------------

    def get_deployment(self, namespace: str, name: str) -> dict[str, Any] | None:
        """A Deployment, or None."""
        found = read_or_none(
            f"reading Deployment {namespace}/{name}",
            lambda: self.apps.read_namespaced_deployment(name, namespace),
        )
        return None if found is None else self.plain(found)

    def put_deployment(self, body: dict[str, Any]) -> dict[str, Any]:
        """Create a Deployment, or replace the one of that name (its spec becomes ``body``'s)."""
        namespace, name = body["metadata"]["namespace"], body["metadata"]["name"]
        live = self.get_deployment(namespace, name)
        if live is None:
            created = guard(
                f"creating Deployment {namespace}/{name}",
                lambda: self.apps.create_namespaced_deployment(namespace, body),
            )
            return self.plain(created)
        meta = {**body["metadata"], "resourceVersion": live["metadata"]["resourceVersion"]}
        replaced = guard(
            f"replacing Deployment {namespace}/{name}",
            lambda: self.apps.replace_namespaced_deployment(
                name, namespace, {**body, "metadata": meta}
            ),
        )
        return self.plain(replaced)

    def delete_deployment(self, namespace: str, name: str) -> None:
        """Delete a Deployment and its Pods (absent already is fine)."""
        read_or_none(
            f"deleting Deployment {namespace}/{name}",
            lambda: self.apps.delete_namespaced_deployment(
                name, namespace, propagation_policy="Background"
            ),
        )

    # -- volumes -----------------------------------------------------------------------------

    def claim_access_modes(self, namespace: str, claim: str) -> list[str] | None:
        """A PersistentVolumeClaim's access modes, or None when it does not exist."""
        pvc = read_or_none(
            f"reading PersistentVolumeClaim {namespace}/{claim}",
            lambda: self.core.read_namespaced_persistent_volume_claim(claim, namespace),
        )
        return None if pvc is None else list(pvc.spec.access_modes or [])

    def claim_nodes(self, namespace: str) -> dict[str, set[str]]:
        """For each claim mounted by a scheduled, unfinished Pod of the namespace: its nodes."""
        resp = guard(
            f"listing Pods in {namespace}",
            lambda: self.core.list_namespaced_pod(
                namespace, field_selector="status.phase!=Succeeded,status.phase!=Failed"
            ),
        )
        out: dict[str, set[str]] = {}
        for pod in resp.items:
            node = pod.spec.node_name
            if not node:
                continue
            for vol in pod.spec.volumes or []:
                if vol.persistent_volume_claim is not None:
                    out.setdefault(vol.persistent_volume_claim.claim_name, set()).add(node)
        return out

    # -- secrets and RBAC --------------------------------------------------------------------

    def secret_data(self, namespace: str, name: str) -> dict[str, bytes] | None:
        """A Secret's decoded data, or None when it does not exist."""
        secret = read_or_none(
            f"reading Secret {namespace}/{name}",
            lambda: self.core.read_namespaced_secret(name, namespace),
        )
        if secret is None:
            return None
        return {k: base64.b64decode(v) for k, v in (secret.data or {}).items()}

    def ensure_runner_account(self, namespace: str, name: str) -> bool:
        """ServiceAccount, Role and RoleBinding the runner needs in a namespace; True if created.

        Every run starts with this: done at most once per ``ACCOUNT_RECHECK_SECONDS`` per
        namespace (three requests each time), so an account deleted by hand is back within that.
        """
        if time.monotonic() - self._accounts.get((namespace, name), -1e9) < ACCOUNT_RECHECK_SECONDS:
            return False
        labels = {"app.kubernetes.io/managed-by": "lamassu-backup-operator"}
        created = False
        try:
            self.core.create_namespaced_service_account(
                namespace, {"metadata": {"name": name, "labels": labels}}
            )
            created = True
        except ApiException as exc:
            if exc.status != 409:
                raise KubernetesError(
                    f"creating ServiceAccount {namespace}/{name}: HTTP {exc.status} {exc.reason}",
                    reason=_reason(exc.status),
                ) from None
        role = {
            "metadata": {"name": name, "labels": labels},
            "rules": [
                {
                    "apiGroups": [""],
                    "resources": ["configmaps", "secrets"],
                    "verbs": ["get", "list"],
                }
            ],
        }
        binding = {
            "metadata": {"name": name, "labels": labels},
            "roleRef": {"apiGroup": "rbac.authorization.k8s.io", "kind": "Role", "name": name},
            "subjects": [{"kind": "ServiceAccount", "name": name, "namespace": namespace}],
        }
        creators: list[tuple[str, Callable[[], object]]] = [
            ("Role", lambda: self.rbac.create_namespaced_role(namespace, role)),
            ("RoleBinding", lambda: self.rbac.create_namespaced_role_binding(namespace, binding)),
        ]
        for what, create in creators:
            try:
                create()
                created = True
            except ApiException as exc:
                if exc.status != 409:
                    raise KubernetesError(
                        f"creating {what} {namespace}/{name}: HTTP {exc.status} {exc.reason}",
                        reason=_reason(exc.status),
                    ) from None
        self._accounts[(namespace, name)] = time.monotonic()
        return created

    def ensure_restore_account(self, namespace: str, name: str, targets: list[str]) -> bool:
        """The ServiceAccount of the restore Jobs that change live state, bound in each target
        namespace (only there) to the chart's ClusterRole ``RESTORE_CLUSTER_ROLE`` (ConfigMaps
        and Secrets: read, create, patch, update, delete). The operator holds ``bind`` on that
        one ClusterRole, not its rights; True if something was created."""
        labels = {"app.kubernetes.io/managed-by": "lamassu-backup-operator"}
        created = False
        creators: list[tuple[str, str, Callable[[], object]]] = [
            (
                "ServiceAccount",
                namespace,
                lambda: self.core.create_namespaced_service_account(
                    namespace, {"metadata": {"name": name, "labels": labels}}
                ),
            )
        ]
        for target in sorted(set(targets)):
            # Bound elsewhere, the binding names the account's namespace: two restore namespaces
            # writing into one target each get their own.
            bound = name if target == namespace else f"{name}-{namespace}"[:253]
            binding = {
                "metadata": {"name": bound, "labels": labels},
                "roleRef": {
                    "apiGroup": "rbac.authorization.k8s.io",
                    "kind": "ClusterRole",
                    "name": RESTORE_CLUSTER_ROLE,
                },
                "subjects": [{"kind": "ServiceAccount", "name": name, "namespace": namespace}],
            }
            creators.append(
                (
                    "RoleBinding",
                    target,
                    lambda t=target, b=binding: self.rbac.create_namespaced_role_binding(t, b),  # type: ignore[misc]
                )
            )
        for what, where, create in creators:
            try:
                create()
                created = True
            except ApiException as exc:
                if exc.status != 409:
                    raise KubernetesError(
                        f"creating {what} {where}/{name}: HTTP {exc.status} {exc.reason}"
                        + (
                            f" (the operator needs bind on ClusterRole {RESTORE_CLUSTER_ROLE}, "
                            "which the chart grants)"
                            if what == "RoleBinding" and exc.status == 403
                            else ""
                        ),
                        reason=_reason(exc.status),
                    ) from None
        return created


def _api_message(exc: ApiException) -> str:
    """The apiserver's own message (it names the field), else the HTTP reason."""
    try:
        return str(json.loads(exc.body or "{}").get("message") or exc.reason)
    except ValueError:
        return str(exc.reason)
