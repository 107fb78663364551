"""LamassuRestore end to end: the operator orchestrates the real restore runner against the real
PostgreSQL, OpenBao and S3 server, with real Deployments (their Pods created by the control
plane's Deployment and ReplicaSet controllers and run by the pod runner) scaled down and back, a
real PreRestore set, and the policy's runs paused while it works."""

from __future__ import annotations

import base64
import contextlib
import http.server
import signal
import threading
import time
from collections.abc import Callable, Iterator
from typing import Any

import pytest
from kubernetes import client as k8s
from kubernetes.client.exceptions import ApiException

from lamassu_platform import datagen, images
from lamassu_platform.stack import BUCKET, KV_MOUNT, Platform

from .conftest import GROUP, VERSION, Cluster, Operator

pytestmark = [pytest.mark.platform, pytest.mark.e2e]

PART_OF = {"app.kubernetes.io/part-of": "lamassu"}
RESTORES = "lamassurestores"
KEY = {"name": "backup-gpg-private", "key": "private.asc"}
SIGNER = {"name": "backup-gpg-signing-public", "key": "signing-public.asc"}
IN_PLACE_STEPS = [
    "Planning",
    "PausingBackups",
    "PreRestoreBackup",
    "ScalingDown",
    "Restoring",
    "Validating",
    "ScalingUp",
]
"""The steps of an in-place restore with a pre-restore set, in order (the issue's list)."""


class Health:
    """A local HTTP endpoint answering a fixed status (a Lamassu /health stand-in)."""

    def __init__(self, status: int) -> None:
        code = status

        class Handler(http.server.BaseHTTPRequestHandler):
            def do_GET(self) -> None:
                self.send_response(code)
                self.end_headers()
                self.wfile.write(b"{}")

            def log_message(self, *args: Any) -> None:
                pass

        self.server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.url = f"http://127.0.0.1:{self.server.server_address[1]}/health"
        threading.Thread(target=self.server.serve_forever, daemon=True).start()

    def close(self) -> None:
        self.server.shutdown()
        self.server.server_close()


@contextlib.contextmanager
def health(status: int) -> Iterator[Health]:
    server = Health(status)
    try:
        yield server
    finally:
        server.close()


WORKLOAD_IMAGE = "ghcr.io/lamassuiot/lamassu-backup-runner:0.1.0"
"""Any locally built image with a shell (the pod runner on runc runs it; in host-process mode the
image is ignored and the command runs on the host)."""


def deployment(cluster: Cluster, ns: str, name: str, replicas: int) -> None:
    """A Deployment with the part-of label; the control plane's Deployment and ReplicaSet
    controllers create its Pods, the pod runner runs them, and its status is theirs.

    Its Pods ignore SIGTERM and have a long grace period, so a scaled-down Pod stays
    terminating until :class:`DeploymentController` lets it go (``hold`` keeps it): that is how
    a test makes Pods that are slow to stop. Restricted securityContext: the namespace enforces
    Pod Security ``restricted``.
    """
    image = WORKLOAD_IMAGE
    if cluster.platform.images:
        image = images.ref_of(cluster.platform.images, "runner")
    apps = k8s.AppsV1Api(cluster.api)
    labels = {**PART_OF, "app": name}
    apps.create_namespaced_deployment(
        ns,
        {
            "metadata": {"name": name, "labels": labels},
            "spec": {
                "replicas": replicas,
                "selector": {"matchLabels": {"app": name}},
                "template": {
                    "metadata": {"labels": labels},
                    "spec": {
                        "terminationGracePeriodSeconds": 600,
                        "securityContext": {
                            "runAsNonRoot": True,
                            "runAsUser": 65532,
                            "seccompProfile": {"type": "RuntimeDefault"},
                        },
                        "containers": [
                            {
                                "name": "main",
                                "image": image,
                                "imagePullPolicy": "Never",
                                # Ignores SIGTERM, as a slow workload would; Python, as the
                                # runner image has no shell tools.
                                "command": [
                                    "python3",
                                    "-c",
                                    "import signal, time; "
                                    "signal.signal(signal.SIGTERM, signal.SIG_IGN); "
                                    "time.sleep(3600)",
                                ],
                                "securityContext": {
                                    "allowPrivilegeEscalation": False,
                                    "readOnlyRootFilesystem": True,
                                    "capabilities": {"drop": ["ALL"]},
                                },
                            }
                        ],
                    },
                },
            },
        },
    )


class DeploymentController:
    """How fast the namespace's Pods stop: every 0.2 s, Pods being deleted (they ignore SIGTERM)
    are deleted at once with grace 0, except those of the Deployments in ``hold`` (by their
    ``app`` label), which stay terminating, like Pods that are slow to stop, until released.

    Replicas and status are the real controllers'; a terminating Pod is in the Deployment's
    ``status.terminatingReplicas``, which the operator waits for.
    """

    def __init__(self, cluster: Cluster, ns: str) -> None:
        self.core = k8s.CoreV1Api(cluster.api)
        self.ns = ns
        self.hold: set[str] = set()
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)

    def __enter__(self) -> DeploymentController:
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        self._thread.join(timeout=5)
        self.hold.clear()
        with contextlib.suppress(ApiException):
            self._release()  # nothing is left terminating for 10 minutes

    def _release(self) -> None:
        for pod in self.core.list_namespaced_pod(self.ns).items:
            if pod.metadata.deletion_timestamp is None:
                continue
            if (pod.metadata.labels or {}).get("app") in self.hold:
                continue
            with contextlib.suppress(ApiException):
                self.core.delete_namespaced_pod(pod.metadata.name, self.ns, grace_period_seconds=0)

    def _run(self) -> None:
        while not self._stop.wait(0.2):
            with contextlib.suppress(ApiException):
                self._release()


@pytest.fixture
def controller(cluster: Cluster) -> Iterator[Callable[[str], DeploymentController]]:
    """Start a DeploymentController for a namespace; all stop at the end of the test."""
    started: list[DeploymentController] = []

    def start(ns: str) -> DeploymentController:
        ctl = DeploymentController(cluster, ns).__enter__()
        started.append(ctl)
        return ctl

    yield start
    for ctl in started:
        ctl.__exit__()


def pods(cluster: Cluster, ns: str, name: str) -> int:
    status = k8s.AppsV1Api(cluster.api).read_namespaced_deployment_status(name, ns).status
    return int(status.replicas or 0)


def replicas(cluster: Cluster, ns: str, name: str) -> int:
    apps = k8s.AppsV1Api(cluster.api)
    return int(apps.read_namespaced_deployment(name, ns).spec.replicas)


def restore(cluster: Cluster, ns: str, name: str, **spec: Any) -> dict[str, Any]:
    body = {
        "apiVersion": f"{GROUP}/{VERSION}",
        "kind": "LamassuRestore",
        "metadata": {"name": name, "namespace": ns},
        "spec": {"decryptionKeySecret": KEY, "signerKeySecret": SIGNER, **spec},
    }
    created: dict[str, Any] = cluster.custom.create_namespaced_custom_object(
        GROUP, VERSION, ns, RESTORES, body
    )
    return created


def wait_restore(
    cluster: Cluster, ns: str, name: str, phases: tuple[str, ...], timeout: float = 240
) -> dict[str, Any]:
    def check() -> dict[str, Any] | None:
        obj = cluster.get(RESTORES, ns, name)
        return obj if obj and (obj.get("status") or {}).get("phase") in phases else None

    result: dict[str, Any] = cluster.wait(f"{name} to reach {phases}", check, timeout, 0.5)
    return result


def backed_up(
    cluster: Cluster, ns: str, name: str = "good", *, config: bool = False
) -> dict[str, Any]:
    """A policy (postgres + vault, and config if asked) and one completed set of the current
    data."""
    spec = cluster.platform.sample_policy()["spec"]
    components = {"postgres": spec["components"]["postgres"], "vault": spec["components"]["vault"]}
    if config:
        components["config"] = spec["components"]["config"]
    cluster.policy(ns, "lamassu", components=components)
    cluster.backup(ns, name, "lamassu")
    return cluster.wait_phase(ns, name, ("Completed", "Failed", "PartiallyFailed"), timeout=180)


def checksums(platform: Platform) -> dict[str, dict[str, str]]:
    assert platform.pg is not None
    assert platform.dataset is not None
    return {db: datagen.table_checksums(platform.pg, db) for db in platform.dataset.databases}


def damage(platform: Platform) -> str:
    """Delete rows and a CA key from the key store; returns the key id removed."""
    assert platform.pg is not None
    assert platform.openbao is not None
    assert platform.dataset is not None
    platform.pg.psql("DELETE FROM certificates WHERE NOT is_ca;", "ca")
    platform.pg.psql("DELETE FROM dms;", "dmsmanager")
    doomed = platform.dataset.ca_key_ids[0]
    platform.openbao.client().secrets.kv.v2.delete_metadata_and_all_versions(
        path=doomed, mount_point=KV_MOUNT
    )
    return doomed


def kv_state(platform: Platform) -> tuple[list[str], dict[str, Any]]:
    """The whole KV mount: every path listed (deleted versions included) and each live value."""
    assert platform.openbao is not None
    kv = platform.openbao.client().secrets.kv.v2
    paths = platform.openbao.list_key_ids(KV_MOUNT)
    live: dict[str, Any] = {}
    for path in paths:
        with contextlib.suppress(Exception):  # a deleted latest version reads as absent
            live[path] = kv.read_secret_version(
                path=path, mount_point=KV_MOUNT, raise_on_deleted_version=True
            )["data"]["data"]
    return paths, live


def config_state(cluster: Cluster, ns: str) -> dict[str, Any]:
    """The Lamassu ConfigMaps and Secrets of a namespace (part-of label): data as bytes, labels,
    type."""
    core = k8s.CoreV1Api(cluster.api)
    selector = ",".join(f"{k}={v}" for k, v in PART_OF.items())
    out: dict[str, Any] = {}
    for cm in core.list_namespaced_config_map(ns, label_selector=selector).items:
        out[f"ConfigMap/{cm.metadata.name}"] = (
            {k: v.encode() for k, v in (cm.data or {}).items()},
            cm.metadata.labels,
        )
    for secret in core.list_namespaced_secret(ns, label_selector=selector).items:
        out[f"Secret/{secret.metadata.name}"] = (
            {k: base64.b64decode(v) for k, v in (secret.data or {}).items()},
            secret.metadata.labels,
            secret.type,
        )
    return out


def kept_databases(platform: Platform) -> list[str]:
    assert platform.pg is not None
    return [d for d in platform.pg.databases() if "__" in d]


def restore_jobs(cluster: Cluster, ns: str) -> list[str]:
    return sorted(
        j.metadata.name
        for j in cluster.batch.list_namespaced_job(ns, label_selector=f"{GROUP}/restore").items
    )


def run_now(backup: dict[str, Any]) -> bool:
    """A backup started by the policy's run-now annotation (not the test's own "good")."""
    return bool(backup["spec"]["trigger"] == "Manual" and backup["metadata"]["name"] != "good")


def step_names(obj: dict[str, Any]) -> list[str]:
    return [s["name"] for s in obj["status"]["steps"]]


def test_in_place_restore_brings_rows_and_keys_back(
    cluster: Cluster,
    operator: Operator,
    platform: Platform,
    controller: Callable[[str], DeploymentController],
) -> None:
    ns = cluster.namespace()
    controller(ns)
    good = backed_up(cluster, ns)
    assert good["status"]["phase"] == "Completed", good["status"]
    before = checksums(platform)
    deployment(cluster, ns, "ca", 2)
    deployment(cluster, ns, "kms", 1)
    doomed = damage(platform)
    assert checksums(platform) != before
    assert platform.openbao is not None
    assert doomed not in platform.openbao.read_keys(KV_MOUNT)
    with health(200) as ok:
        restore(
            cluster,
            ns,
            "fix",
            backupRef={"name": "good"},
            mode="InPlace",
            confirm="good",
            workloads={"selector": {"matchLabels": PART_OF}},
            validation={"healthChecks": [ok.url]},
            finalizeAfter="3s",
        )
        wait_restore(cluster, ns, "fix", ("PausingBackups", "PreRestoreBackup", "ScalingDown"))
        # The policy's runs are paused: a run-now request waits for the restore to end.
        cluster.custom.patch_namespaced_custom_object(
            GROUP,
            VERSION,
            ns,
            "lamassubackuppolicies",
            "lamassu",
            {"metadata": {"annotations": {"backup.lamassu.io/run-now": "during-restore"}}},
        )
        seen_down = cluster.wait(
            "the workloads at zero",
            lambda: replicas(cluster, ns, "ca") == 0 and replicas(cluster, ns, "kms") == 0,
            timeout=120,
            interval=0.3,
        )
        assert seen_down
        manual_during = [b for b in cluster.backups(ns, "lamassu") if run_now(b)]
        done = wait_restore(cluster, ns, "fix", ("Completed", "Failed", "RolledBack"))
    status = done["status"]
    assert status["phase"] == "Completed", status
    assert manual_during == []
    # Rows and the key are back, byte for byte.
    assert checksums(platform) == before
    assert doomed in platform.openbao.read_keys(KV_MOUNT)
    # Workloads back at their recorded replicas, marks removed.
    assert replicas(cluster, ns, "ca") == 2
    assert replicas(cluster, ns, "kms") == 1
    assert {(w["name"], w["replicas"]) for w in status["scaledWorkloads"]} == {
        ("ca", 2),
        ("kms", 1),
    }
    assert [w["name"] for w in status["scaledWorkloads"]] == ["ca", "kms"]  # kms last
    # A PreRestore set exists and completed.
    pre = cluster.get("lamassubackups", ns, status["preRestoreBackup"])
    assert pre is not None
    assert pre["spec"]["trigger"] == "PreRestore"
    assert pre["status"]["phase"] == "Completed"
    # Status: every step in order, the plan, evidence, the RTO, conditions with the generation.
    assert step_names(done) == IN_PLACE_STEPS
    assert all(s["phase"] == "Succeeded" and s["completedAt"] for s in status["steps"])
    assert any(p["component"] == "postgres" for p in status["plan"])
    assert status["recoveryTimeSeconds"] > 0
    assert status["evidence"]["healthChecks"][0]["status"] == 200
    assert status["resolvedBackup"]["name"] == "good"
    completed = cluster.condition(done, "Completed")
    assert completed["status"] == "True"
    assert completed["observedGeneration"] == done["metadata"]["generation"]
    # The Events of the last reconcile are posted just after its status patch: wait for them.
    every_step = {"Planning", "ScalingDown", "Restoring", "Validating", "ScalingUp", "Completed"}
    cluster.wait(
        "an Event for every step",
        lambda: every_step <= {e.reason for e in cluster.events(ns, "fix")},
        timeout=30,
    )
    assert restore_jobs(cluster, ns) == ["fix-plan", "fix-restore"] or "fix-finalize" in (
        restore_jobs(cluster, ns)
    )
    # Backups resume: the run-now request held during the restore runs now.
    cluster.wait(
        "the held run-now backup",
        lambda: [b for b in cluster.backups(ns, "lamassu") if run_now(b)],
        timeout=60,
    )
    # finalizeAfter: the kept databases are dropped.
    cluster.wait(
        "finalize",
        lambda: (cluster.get(RESTORES, ns, "fix") or {}).get("status", {}).get("finalizedAt"),
        timeout=120,
    )
    assert kept_databases(platform) == []


def test_dry_run_shows_the_plan_and_changes_nothing(
    cluster: Cluster,
    operator: Operator,
    platform: Platform,
    controller: Callable[[str], DeploymentController],
) -> None:
    ns = cluster.namespace()
    controller(ns)
    backed_up(cluster, ns)
    deployment(cluster, ns, "ca", 1)
    platform.pg.psql("DELETE FROM dms;", "dmsmanager")  # type: ignore[union-attr]
    before = checksums(platform)
    assert platform.openbao is not None
    keys_before = platform.openbao.read_keys(KV_MOUNT)
    restore(
        cluster,
        ns,
        "look",
        backupRef={"name": "good"},
        mode="InPlace",
        dryRun=True,
        workloads={"selector": {"matchLabels": PART_OF}},
    )
    done = wait_restore(cluster, ns, "look", ("Planned", "Failed"))
    assert done["status"]["phase"] == "Planned", done["status"]
    plan = done["status"]["plan"]
    assert any(p["target"] == "database dmsmanager" for p in plan), plan
    assert checksums(platform) == before
    assert platform.openbao.read_keys(KV_MOUNT) == keys_before
    assert replicas(cluster, ns, "ca") == 1
    assert not [b for b in cluster.backups(ns) if b["spec"]["trigger"] == "PreRestore"]
    assert restore_jobs(cluster, ns) == ["look-plan"]
    # Put the data back for the next tests.
    real = restore(
        cluster,
        ns,
        "undo",
        backupRef={"name": "good"},
        mode="InPlace",
        confirm="good",
        preRestoreBackup=False,
        finalizeAfter="0s",
    )
    assert real
    assert wait_restore(cluster, ns, "undo", ("Completed", "Failed"))["status"]["phase"] == (
        "Completed"
    )


def test_wrong_confirm_is_refused(cluster: Cluster, operator: Operator, platform: Platform) -> None:
    ns = cluster.namespace()
    backed_up(cluster, ns)
    # By the apiserver, for a backupRef ...
    with pytest.raises(ApiException) as refused:
        restore(cluster, ns, "bad", backupRef={"name": "good"}, mode="InPlace", confirm="other")
    assert "spec.confirm must equal spec.backupRef.name" in str(refused.value.body)
    # ... and by the controller, for a backup it resolves itself.
    before = checksums(platform)
    restore(
        cluster,
        ns,
        "latest",
        source={"policyRef": {"name": "lamassu"}},
        mode="InPlace",
        confirm="not-the-one",
    )
    done = wait_restore(cluster, ns, "latest", ("Failed", "Completed"))
    assert done["status"]["phase"] == "Failed"
    assert done["status"]["reason"] == "ConfirmMismatch"
    assert "spec.confirm" in done["status"]["message"]
    assert "'good'" in done["status"]["message"]
    assert checksums(platform) == before
    assert restore_jobs(cluster, ns) == []


def test_corrupted_set_fails_before_anything_changes(
    cluster: Cluster,
    operator: Operator,
    platform: Platform,
    controller: Callable[[str], DeploymentController],
) -> None:
    ns = cluster.namespace()
    controller(ns)
    good = backed_up(cluster, ns)
    deployment(cluster, ns, "ca", 1)
    artifact = next(a for a in good["status"]["artifacts"] if a["component"] == "postgres")
    assert platform.s3 is not None
    s3 = platform.s3.client()
    data = bytearray(s3.get_object(Bucket=BUCKET, Key=artifact["key"])["Body"].read())
    data[len(data) // 2] ^= 0x01
    s3.put_object(Bucket=BUCKET, Key=artifact["key"], Body=bytes(data))
    platform.pg.psql("DELETE FROM dms;", "dmsmanager")  # type: ignore[union-attr]
    before = checksums(platform)
    restore(
        cluster,
        ns,
        "broken",
        backupRef={"name": "good"},
        mode="InPlace",
        confirm="good",
        workloads={"selector": {"matchLabels": PART_OF}},
    )
    done = wait_restore(cluster, ns, "broken", ("Failed", "Completed", "RolledBack"))
    assert done["status"]["phase"] == "Failed", done["status"]
    assert "nothing was changed" in done["status"]["message"]
    assert checksums(platform) == before
    assert replicas(cluster, ns, "ca") == 1
    assert not [b for b in cluster.backups(ns) if b["spec"]["trigger"] == "PreRestore"]
    assert "Failed" in {e.reason for e in cluster.events(ns, "broken")}


def test_failing_health_check_rolls_back(
    cluster: Cluster,
    operator: Operator,
    platform: Platform,
    controller: Callable[[str], DeploymentController],
) -> None:
    ns = cluster.namespace()
    controller(ns)
    backed_up(cluster, ns, config=True)
    deployment(cluster, ns, "ca", 2)
    assert platform.pg is not None
    assert platform.openbao is not None
    assert platform.dataset is not None
    platform.pg.psql("DELETE FROM dms;", "dmsmanager")
    # Since the backup: a key gone from the store, a config changed, a TLS Secret deleted. The
    # restore writes all three back; the rollback must undo all three.
    lost = platform.dataset.ca_key_ids[-1]
    platform.openbao.client().secrets.kv.v2.delete_metadata_and_all_versions(
        path=lost, mount_point=KV_MOUNT
    )
    core = k8s.CoreV1Api(cluster.api)
    core.patch_namespaced_config_map("ca-config", ns, {"data": {"config": "changed: true\n"}})
    core.delete_namespaced_secret("root-downstream-cert", ns)
    before = checksums(platform)
    kv_before, config_before = kv_state(platform), config_state(cluster, ns)
    try:
        with health(503) as bad:
            restore(
                cluster,
                ns,
                "sick",
                backupRef={"name": "good"},
                mode="InPlace",
                confirm="good",
                components=["postgres", "vault", "config"],
                preRestoreBackup=False,
                workloads={"selector": {"matchLabels": PART_OF}},
                validation={"healthChecks": [bad.url], "timeout": "4s"},
            )
            done = wait_restore(cluster, ns, "sick", ("Failed", "Completed", "RolledBack"))
        status = done["status"]
        assert status["phase"] == "RolledBack", status
        assert status["reason"] == "HealthCheckFailed"
        assert "503" in status["message"]
        assert checksums(platform) == before  # the live data as before the restore
        assert kv_state(platform) == kv_before  # every KV path, as before
        assert lost not in platform.openbao.read_keys(KV_MOUNT)
        assert config_state(cluster, ns) == config_before  # every object, as before
        assert replicas(cluster, ns, "ca") == 2
        assert kept_databases(platform) == []
        assert "RollingBack" in step_names(done)
        assert status["components"]["vault"] == "RolledBack"
        assert status["components"]["config"] == "RolledBack"
        secrets = {s.metadata.name for s in core.list_namespaced_secret(ns).items}
        assert "sick-undo" not in secrets  # the undo journal is gone once used
    finally:  # the shared key store as the other tests expect it
        platform.openbao.write_keys(KV_MOUNT, {lost: platform.dataset.private_keys[lost]})


@pytest.mark.parametrize("when", ["ScalingDown", "Restoring"])
def test_operator_killed_mid_restore_ends_correctly(
    cluster: Cluster,
    operator: Operator,
    platform: Platform,
    controller: Callable[[str], DeploymentController],
    when: str,
) -> None:
    ns = cluster.namespace()
    ctl = controller(ns)
    backed_up(cluster, ns)
    deployment(cluster, ns, "ca", 2)
    deployment(cluster, ns, "kms", 1)
    cluster.wait("ca's Pods", lambda: pods(cluster, ns, "ca") == 2, timeout=30)
    if when == "ScalingDown":
        ctl.hold.add("ca")  # its Pods are slow to stop: ScalingDown waits
    platform.pg.psql("DELETE FROM dms;", "dmsmanager")  # type: ignore[union-attr]
    restore(
        cluster,
        ns,
        "kill",
        backupRef={"name": "good"},
        mode="InPlace",
        confirm="good",
        preRestoreBackup=False,
        finalizeAfter="0s",
        workloads={"selector": {"matchLabels": PART_OF}},
    )
    wait_restore(cluster, ns, "kill", (when,), timeout=180)
    if when == "ScalingDown":
        cluster.wait("ca scaled to 0", lambda: replicas(cluster, ns, "ca") == 0, timeout=30)
    operator.stop(signal.SIGKILL)
    try:
        time.sleep(3)
        if when == "ScalingDown":
            # kms is not touched before ca has stopped (the order holds across the restart).
            assert replicas(cluster, ns, "kms") == 1
            ctl.hold.discard("ca")
    finally:
        operator.start()
    done = wait_restore(cluster, ns, "kill", ("Completed", "Failed", "RolledBack"))
    assert done["status"]["phase"] == "Completed", done["status"]
    assert replicas(cluster, ns, "ca") == 2
    assert replicas(cluster, ns, "kms") == 1
    names = step_names(done)
    assert len(names) == len(set(names)), names  # no step twice
    jobs = restore_jobs(cluster, ns)
    assert jobs.count("kill-restore") == 1
    assert set(jobs) <= {"kill-plan", "kill-restore", "kill-finalize"}


def test_drill_records_evidence(cluster: Cluster, operator: Operator, platform: Platform) -> None:
    ns = cluster.namespace()
    backed_up(cluster, ns)
    before = checksums(platform)
    restore(cluster, ns, "drill", source={"policyRef": {"name": "lamassu"}}, mode="Drill")
    done = wait_restore(cluster, ns, "drill", ("Completed", "Failed"))
    status = done["status"]
    assert status["phase"] == "Completed", status
    assert status["resolvedBackup"]["name"] == "good"
    evidence = status["evidence"]
    assert evidence["postgres"], evidence
    assert evidence["keyConsistency"]
    assert evidence["teardown"] == {"left": []}
    assert status["recoveryTimeSeconds"] > 0
    assert checksums(platform) == before
    assert [d for d in platform.pg.databases() if "__drill" in d] == []  # type: ignore[union-attr]


def test_one_restore_at_a_time_and_a_deleted_one_gives_its_workloads_back(
    cluster: Cluster,
    operator: Operator,
    platform: Platform,
    controller: Callable[[str], DeploymentController],
) -> None:
    ns = cluster.namespace()
    ctl = controller(ns)
    backed_up(cluster, ns)
    deployment(cluster, ns, "ca", 3)
    cluster.wait("ca's Pods", lambda: pods(cluster, ns, "ca") == 3, timeout=30)
    ctl.hold.add("ca")  # its Pods do not stop: the first restore stays in ScalingDown
    common: dict[str, Any] = {
        "backupRef": {"name": "good"},
        "mode": "InPlace",
        "confirm": "good",
        "preRestoreBackup": False,
        "finalizeAfter": "0s",
        "workloads": {"selector": {"matchLabels": PART_OF}},
    }
    restore(cluster, ns, "first", **common)
    wait_restore(cluster, ns, "first", ("ScalingDown",), timeout=120)
    restore(cluster, ns, "second", **common)

    def waiting() -> dict[str, Any] | None:
        obj = cluster.get(RESTORES, ns, "second")
        return (
            obj
            if cluster.condition(obj, "Progressing").get("reason") == "WaitingForRestore"
            else None
        )

    second = cluster.wait("the second restore to wait", waiting, timeout=120)
    assert second["status"]["phase"] == "Planning"
    assert "LamassuRestore first" in cluster.condition(second, "Progressing")["message"]
    assert "WaitingForRestore" in {e.reason for e in cluster.events(ns, "second")}
    assert replicas(cluster, ns, "ca") == 0
    # Deleting the first restore mid-way gives the workload its replicas back ...
    cluster.custom.delete_namespaced_custom_object(GROUP, VERSION, ns, RESTORES, "first")
    cluster.wait(
        "the first restore gone", lambda: cluster.get(RESTORES, ns, "first") is None, timeout=60
    )
    ctl.hold.discard("ca")
    cluster.wait(
        "the deleted restore's ScaledUp event",
        lambda: any(
            e.reason == "ScaledUp" and "deleted" in e.message for e in cluster.events(ns, "first")
        ),
        timeout=30,
    )
    # ... and the second one goes on (it found ca at 3 again), and ends with it back too.
    done = wait_restore(cluster, ns, "second", ("Completed", "Failed", "RolledBack"))
    assert done["status"]["phase"] == "Completed", done["status"]
    assert [(w["name"], w["replicas"]) for w in done["status"]["scaledWorkloads"]] == [("ca", 3)]
    assert replicas(cluster, ns, "ca") == 3


def test_disaster_recovery_from_the_bucket_alone(
    cluster: Cluster, operator: Operator, platform: Platform
) -> None:
    """A namespace with no policy, no backup record and no Lamassu configuration: only the
    bucket, the credentials and the GPG key. source.s3 and target servers bring the databases,
    the key store and the configuration (ConfigMaps, TLS Secrets) back."""
    source_ns = cluster.namespace()
    good = backed_up(cluster, source_ns, config=True)
    originals = config_state(cluster, source_ns)
    assert any(k.startswith("Secret/") for k in originals)
    assert any(k.startswith("ConfigMap/") for k in originals)
    before = checksums(platform)
    doomed = damage(platform)
    spec = platform.sample_policy()["spec"]
    pg, vault, s3 = (
        spec["components"]["postgres"],
        spec["components"]["vault"],
        spec["destination"]["s3"],
    )
    ns = cluster.namespace()  # fresh: the restore's Secrets only, no Lamassu configuration
    core = k8s.CoreV1Api(cluster.api)
    for what in config_state(cluster, ns):
        kind, name = what.split("/", 1)
        if kind == "ConfigMap":
            core.delete_namespaced_config_map(name, ns)
        else:
            core.delete_namespaced_secret(name, ns)
    assert config_state(cluster, ns) == {}
    assert cluster.backups(ns) == []
    location = good["status"]["location"]
    folder = location.rstrip("/").rsplit("/", 1)[-1]
    restore(
        cluster,
        ns,
        "dr",
        source={
            "s3": {
                "bucket": BUCKET,
                "path": location.split("/", 3)[3],
                "endpoint": s3["endpoint"],
                "forcePathStyle": True,
                "credentialsSecret": {"name": "backup-s3"},
            }
        },
        target={
            "postgres": {
                "host": pg["host"],
                "port": pg["port"],
                "sslMode": "disable",
                "credentialsSecret": {"name": "lamassu-postgres"},
            },
            "vault": {
                "address": vault["address"],
                "caSecret": vault["caSecret"],
                "auth": vault["auth"],
            },
        },
        components=["postgres", "vault", "config"],
        mode="InPlace",
        confirm=folder,
        finalizeAfter="0s",
    )
    done = wait_restore(cluster, ns, "dr", ("Completed", "Failed", "RolledBack"))
    status = done["status"]
    assert status["phase"] == "Completed", status
    assert status["resolvedBackup"]["location"] == location
    assert "PreRestoreBackup" not in [s["name"] for s in status["steps"] if s["phase"] != "Skipped"]
    assert checksums(platform) == before
    assert platform.openbao is not None
    assert doomed in platform.openbao.read_keys(KV_MOUNT)
    # The configuration, byte for byte as it was in the lost namespace (data, labels, type).
    assert config_state(cluster, ns) == originals
    assert status["components"]["config"] == "Completed"
    jobs = k8s.BatchV1Api(cluster.api)
    pod = jobs.read_namespaced_job("dr-restore", ns).spec.template.spec
    assert pod.service_account_name == "lamassu-backup-restore"
    plan = jobs.read_namespaced_job("dr-plan", ns).spec.template.spec
    assert plan.service_account_name == "lamassu-backup-runner"
