"""The real Lamassu services as the chart runs them: kms and va StatefulSets, the others
Deployments.

Why: a restore scales Lamassu's workloads down and brings them back, and waits on what their
controllers report; a kill of a Pod is brought back by its controller. So the services run as
Lamassu's Helm chart (lamassuiot/lamassu-helm, ``templates/_lib.tpl``, ``kms-statefulset.yml``,
``ca-deployment.yml``, ``va-statefulset.yml``, ``dms-manager-deployment.yml``) renders them,
from the ``lamassu`` image (``images/lamassu/Dockerfile``,
the binaries of ``scripts/build-lamassu.sh``), run by the pod runner through runc:

- name and selector ``app: <service>``, one replica; the config from ConfigMap
  ``<service>-config`` (key ``config``) mounted at ``/etc/lamassuiot/config.yml`` (subPath);
- kms: a StatefulSet (the chart makes it one when the filesystem engine is configured) with
  ``serviceName: kms`` and the volumeClaimTemplate ``golang-engine-storage`` (1Gi,
  ReadWriteOnce) mounted at ``/crypto/fs``: the PVC is ``golang-engine-storage-kms-0``, which the
  pod runner keeps under ``pvc/<namespace>/<claim>/`` across Pods;
- va: a StatefulSet with the volumeClaimTemplate ``local-crl-file-storage`` at ``/data/crl``
  (its CRL store; PVC ``local-crl-file-storage-va-0``) and ``TMPDIR`` there, as the chart's;
- dms-manager: the ``downstream-cert`` Secret's root certificate as ``downstream_cert_file``;
- probes: the chart's httpGet ``/health`` on the service port (the pod runner does not run
  probes; :meth:`LamassuPods.wait_healthy` asks ``/health`` itself);
- migrations: one Job ``migration-db-<db>`` per database running ``goose-lamassu <dsn> up``
  (``migration-job.yaml``, a pre-install/pre-upgrade hook deleted when it succeeds), all six
  at once, before any service starts.

Differences from the chart, each because the pod runner is not a full kubelet: the Pods share
the host's network, so each service listens on a free loopback port and the ca reaches the kms
at ``127.0.0.1:<port>`` instead of a Service's DNS name; the Pods are ``restricted`` (the sample
namespace enforces it); the Vault engine's CA certificate is a ConfigMap mounted beside the
config, and ``SSL_CERT_FILE`` names it (v3.8.0 never hands ``ca_cert_file`` to its TLS config);
the dms-manager mounts the Secret's ``ca.crt`` directly where the chart's init container
(a toolbox image) bundles ``tls.crt`` and ``ca.crt`` and extracts the root into an emptyDir; the
migration Jobs take the database password from a Secret through ``PGPASSWORD`` (the chart puts
it in the container's args, where ``ps`` and the Pod spec show it) and fail at once
(``backoffLimit: 0``) so a broken migration says why instead of retrying.
"""

from __future__ import annotations

import base64
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import requests
from kubernetes import client
from kubernetes.client.exceptions import ApiException

from .podrunner import PodRunner

KMS_CLAIM_TEMPLATE = "golang-engine-storage"
KMS_PVC = f"{KMS_CLAIM_TEMPLATE}-kms-0"
"""The PVC the StatefulSet creates for its one Pod (what a ``volumes`` backup names)."""
FS_MOUNT = "/crypto/fs"
VA_CLAIM_TEMPLATE = "local-crl-file-storage"
VA_PVC = f"{VA_CLAIM_TEMPLATE}-va-0"
"""The va's CRL store (what a ``volumes`` backup names besides the kms's)."""
CRL_MOUNT = "/data/crl"
DOWNSTREAM_SECRET = "downstream-cert"
DOWNSTREAM_DIR = "/certs"
DOWNSTREAM_CERT = f"{DOWNSTREAM_DIR}/root.crt"
STATEFUL = ("kms", "va")
"""The services the chart runs as StatefulSets (each with one volumeClaimTemplate)."""
CONFIG_MOUNT = "/etc/lamassuiot/config.yml"
VAULT_CA_DIR = "/etc/lamassuiot/vault"
VAULT_CA_CONFIGMAP = "kms-vault-ca"
UID = 65532
PART_OF = {"app.kubernetes.io/part-of": "lamassu"}
MIGRATION_SECRET = "lamassu-db-migrations"
"""The database password for the migration Jobs (deleted with them once they succeed)."""
POD_SECURITY: dict[str, Any] = {
    "runAsNonRoot": True,
    "runAsUser": UID,
    "runAsGroup": UID,
    "fsGroup": UID,
    "seccompProfile": {"type": "RuntimeDefault"},
}
CONTAINER_SECURITY: dict[str, Any] = {
    "allowPrivilegeEscalation": False,
    "readOnlyRootFilesystem": True,
    "capabilities": {"drop": ["ALL"]},
}


@dataclass(frozen=True)
class LamassuPods:
    """Where the workloads go: the API, the namespace, the pod runner that runs them, the image."""

    api: client.ApiClient
    namespace: str
    pod_runner: PodRunner
    image: str

    @property
    def fs_dir(self) -> Path:
        """The host folder behind the kms's PVC (the filesystem engine's keys)."""
        return self.pod_runner.pvc_path(self.namespace, KMS_PVC)

    @property
    def crl_dir(self) -> Path:
        """The host folder behind the va's PVC (its CRLs)."""
        return self.pod_runner.pvc_path(self.namespace, VA_PVC)

    # ------------------------------------------------------------------------- manifests
    def _pod_spec(self, name: str, port: int, *, vault_ca: bool) -> dict[str, Any]:
        mounts: list[dict[str, Any]] = [
            {"name": "api-config", "mountPath": CONFIG_MOUNT, "subPath": "config"}
        ]
        volumes: list[dict[str, Any]] = [
            {"name": "api-config", "configMap": {"name": f"{name}-config"}}
        ]
        env: list[dict[str, str]] = []
        if name == "kms":
            mounts.append({"name": KMS_CLAIM_TEMPLATE, "mountPath": FS_MOUNT})
            if vault_ca:
                mounts.append({"name": "vault-ca", "mountPath": VAULT_CA_DIR, "readOnly": True})
                volumes.append({"name": "vault-ca", "configMap": {"name": VAULT_CA_CONFIGMAP}})
                env.append({"name": "SSL_CERT_FILE", "value": f"{VAULT_CA_DIR}/ca.crt"})
        elif name == "va":
            mounts.append({"name": VA_CLAIM_TEMPLATE, "mountPath": CRL_MOUNT})
            env.append({"name": "TMPDIR", "value": CRL_MOUNT})
        elif name == "dms-manager":
            mounts.append({"name": "downstream", "mountPath": DOWNSTREAM_DIR, "readOnly": True})
            volumes.append(
                {
                    "name": "downstream",
                    "secret": {
                        "secretName": DOWNSTREAM_SECRET,
                        "items": [{"key": "ca.crt", "path": "root.crt"}],
                    },
                }
            )
        probe = {"httpGet": {"path": "/health", "port": port}, "periodSeconds": 5}
        return {
            # The kms's key files are 0600 of their writer: fsGroup lets a restarted Pod read
            # what a restore (run as another user) put back.
            "securityContext": POD_SECURITY,
            "terminationGracePeriodSeconds": 10,
            "automountServiceAccountToken": False,  # Lamassu never calls the Kubernetes API
            "containers": [
                {
                    "name": name,
                    "image": self.image,
                    "imagePullPolicy": "Never",
                    "command": [f"/usr/local/bin/{name}"],
                    "env": env,
                    "ports": [{"containerPort": port, "name": "http"}],
                    "livenessProbe": probe,
                    "readinessProbe": probe,
                    "volumeMounts": mounts,
                    "securityContext": CONTAINER_SECURITY,
                }
            ],
            "restartPolicy": "Always",
            "volumes": volumes,
        }

    def manifest(self, name: str, port: int, *, vault_ca: bool = False) -> dict[str, Any]:
        """The chart's workload for ``name`` (kms, va: StatefulSet, else Deployment)."""
        labels = {"app": name, **PART_OF}
        spec: dict[str, Any] = {
            "replicas": 1,
            "selector": {"matchLabels": {"app": name}},
            "template": {
                "metadata": {"labels": labels},
                "spec": self._pod_spec(name, port, vault_ca=vault_ca),
            },
        }
        kind = "Deployment"
        if name in STATEFUL:
            kind = "StatefulSet"
            spec["serviceName"] = name
            spec["volumeClaimTemplates"] = [
                {
                    "metadata": {
                        "name": KMS_CLAIM_TEMPLATE if name == "kms" else VA_CLAIM_TEMPLATE
                    },
                    "spec": {
                        "accessModes": ["ReadWriteOnce"],
                        "resources": {"requests": {"storage": "1Gi"}},
                    },
                }
            ]
        return {
            "apiVersion": "apps/v1",
            "kind": kind,
            "metadata": {"name": name, "namespace": self.namespace, "labels": labels},
            "spec": spec,
        }

    def migration_job(self, db: str, host: str, port: int, user: str) -> dict[str, Any]:
        """The chart's ``migration-db-<db>`` Job: ``goose-lamassu <dsn> up`` from the image."""
        dsn = f"host={host} port={port} user={user} dbname={db} sslmode=disable"
        password = {"secretKeyRef": {"name": MIGRATION_SECRET, "key": "password"}}
        return {
            "apiVersion": "batch/v1",
            "kind": "Job",
            "metadata": {
                "name": f"migration-db-{db}",
                "namespace": self.namespace,
                # Not part-of lamassu: a backup's selectors never pick a migration up.
                "labels": {"app": "migration"},
            },
            "spec": {
                "backoffLimit": 0,
                "template": {
                    "metadata": {"labels": {"app": "migration", "database": db}},
                    "spec": {
                        "securityContext": POD_SECURITY,
                        "automountServiceAccountToken": False,
                        "restartPolicy": "Never",
                        "containers": [
                            {
                                "name": "migrate",
                                "image": self.image,
                                "imagePullPolicy": "Never",
                                "command": ["/usr/local/bin/goose-lamassu"],
                                "args": [dsn, "up"],
                                "env": [{"name": "PGPASSWORD", "valueFrom": password}],
                                "securityContext": CONTAINER_SECURITY,
                            }
                        ],
                    },
                },
            },
        }

    def migrate(
        self,
        databases: tuple[str, ...],
        *,
        host: str,
        port: int,
        user: str,
        password: str,
        timeout: float = 120,
    ) -> None:
        """Run the migration Jobs (all at once) and wait for each; delete them and their
        Secret when all succeed, as the chart's ``hook-succeeded`` delete policy does. A failed
        Job raises with its container's log (the password never appears in it)."""
        core = client.CoreV1Api(self.api)
        batch = client.BatchV1Api(self.api)
        secret = {
            "metadata": {"name": MIGRATION_SECRET},
            "type": "Opaque",
            "data": {"password": base64.b64encode(password.encode()).decode()},
        }
        try:
            core.create_namespaced_secret(self.namespace, secret)
        except ApiException as exc:
            if exc.status != 409:
                raise
            core.replace_namespaced_secret(MIGRATION_SECRET, self.namespace, secret)
        names = []
        for db in databases:
            job = self.migration_job(db, host, port, user)
            names.append(job["metadata"]["name"])
            self._delete_job(batch, job["metadata"]["name"])
            batch.create_namespaced_job(self.namespace, job)
        deadline = time.monotonic() + timeout
        pending = set(names)
        while pending:
            for name in sorted(pending):
                status = batch.read_namespaced_job_status(name, self.namespace).status
                if status.succeeded:
                    pending.discard(name)
                elif status.failed:
                    raise RuntimeError(
                        f"Lamassu migration Job {name} failed:\n{self._job_log(name)}"
                    )
            if pending and time.monotonic() > deadline:
                raise TimeoutError(
                    f"Lamassu migration Jobs not done in {timeout:.0f}s: {sorted(pending)}"
                )
            time.sleep(0.2)
        for name in names:
            self._delete_job(batch, name)
        core.delete_namespaced_secret(MIGRATION_SECRET, self.namespace)

    def _delete_job(self, batch: client.BatchV1Api, name: str) -> None:
        try:
            batch.delete_namespaced_job(name, self.namespace, propagation_policy="Background")
        except ApiException as exc:
            if exc.status != 404:
                raise

    def _job_log(self, job: str) -> str:
        core = client.CoreV1Api(self.api)
        pods = core.list_namespaced_pod(self.namespace, label_selector=f"job-name={job}").items
        for pod in pods:
            path = self.pod_runner.log_path(self.namespace, pod.metadata.name, "migrate")
            if path.exists():
                return "\n".join(path.read_text(errors="replace").splitlines()[-10:])
        return "(no log)"

    # ---------------------------------------------------------------------------- objects
    def apply_configmaps(self, maps: list[dict[str, Any]]) -> None:
        core = client.CoreV1Api(self.api)
        for cm in maps:
            name = cm["metadata"]["name"]
            try:
                core.replace_namespaced_config_map(name, self.namespace, cm)
            except ApiException as exc:
                if exc.status != 404:
                    raise
                core.create_namespaced_config_map(self.namespace, cm)

    def ensure_downstream_secret(self, ca_pem: bytes) -> None:
        """The chart's ``downstream-cert`` Secret (cert-manager's in a real install), made only
        where none exists: an installed one (the sample's) is what the dms-manager reads."""
        core = client.CoreV1Api(self.api)
        body = {
            "metadata": {"name": DOWNSTREAM_SECRET, "labels": dict(PART_OF)},
            "type": "Opaque",
            "data": {"ca.crt": base64.b64encode(ca_pem).decode()},
        }
        try:
            core.create_namespaced_secret(self.namespace, body)
        except ApiException as exc:
            if exc.status != 409:
                raise

    def ensure(self, name: str, port: int, *, vault_ca: bool) -> None:
        """Create the workload, or scale it back to one replica."""
        body = self.manifest(name, port, vault_ca=vault_ca)
        apps = client.AppsV1Api(self.api)
        create, scale = (
            (apps.create_namespaced_stateful_set, apps.patch_namespaced_stateful_set_scale)
            if body["kind"] == "StatefulSet"
            else (apps.create_namespaced_deployment, apps.patch_namespaced_deployment_scale)
        )
        try:
            create(self.namespace, body)
        except ApiException as exc:
            if exc.status != 409:
                raise
            scale(name, self.namespace, {"spec": {"replicas": 1}})

    def scale(self, name: str, replicas: int) -> None:
        apps = client.AppsV1Api(self.api)
        call = (
            apps.patch_namespaced_stateful_set_scale
            if name in STATEFUL
            else apps.patch_namespaced_deployment_scale
        )
        try:
            call(name, self.namespace, {"spec": {"replicas": replicas}})
        except ApiException as exc:
            if exc.status != 404:
                raise

    def pods(self, name: str) -> list[Any]:
        core = client.CoreV1Api(self.api)
        return list(core.list_namespaced_pod(self.namespace, label_selector=f"app={name}").items)

    def wait_gone(self, name: str, timeout: float = 60) -> None:
        """Until no Pod of the workload is left (terminating ones included)."""
        deadline = time.monotonic() + timeout
        while self.pods(name):
            if time.monotonic() > deadline:
                raise TimeoutError(f"the Pods of Lamassu {name} did not stop in {timeout:.0f}s")
            time.sleep(0.2)

    def stop(self, name: str) -> None:
        """Scale to 0 and wait until its Pod is gone (what a restore's ScalingDown does)."""
        self.scale(name, 0)
        self.wait_gone(name)

    def running(self, name: str) -> bool:
        return any(
            p.status.phase == "Running" and not p.metadata.deletion_timestamp
            for p in self.pods(name)
        )

    def log_path(self, name: str) -> Path | None:
        """The container log of the workload's newest Pod."""
        pods = sorted(self.pods(name), key=lambda p: p.metadata.creation_timestamp)
        if not pods:
            found = sorted(
                (self.pod_runner.state_dir / "logs").glob(f"{self.namespace}_{name}-*_{name}.log"),
                key=lambda p: p.stat().st_mtime,
            )
            return found[-1] if found else None
        return self.pod_runner.log_path(self.namespace, pods[-1].metadata.name, name)

    def wait_healthy(self, name: str, port: int, timeout: float) -> None:
        """Until ``/health`` answers on the service's port; a Pod that cannot start says why."""
        deadline = time.monotonic() + timeout
        url = f"http://127.0.0.1:{port}/health"
        why = "no Pod yet"
        while time.monotonic() < deadline:
            try:
                if requests.get(url, timeout=2).json().get("health") is True:
                    return
            except (requests.RequestException, ValueError):
                pass
            for pod in self.pods(name):
                for st in pod.status.container_statuses or []:
                    state = st.state.waiting or st.state.terminated
                    if state is not None and state.reason not in (None, "ContainerCreating"):
                        why = f"{pod.metadata.name}: {state.reason} {state.message or ''}".strip()
                        if state.reason in ("ErrImageNeverPull", "CreateContainerConfigError"):
                            raise RuntimeError(f"Lamassu {name} cannot start: {why}")
            time.sleep(0.2)
        raise TimeoutError(f"Lamassu {name} /health did not answer in {timeout:.0f}s ({why})")
