"""The fault matrix of issue 16, operator side: the operator's Pod killed (SIGKILL: deleted with
grace 0) at each phase of a backup run and each step of an in-place LamassuRestore, and the
kube-apiserver restarted during a run and during a restore; started again, the end state checked.

A step is held in place for real, never faked: an S3 gate (a proxy in front of the real S3
server) keeps the runners' own uploads or downloads waiting until the test opens it, slow Pods
stay terminating, and a ResourceQuota keeps the workloads' new Pods out.

Cell                        How the step is held                  Expected end state
--------------------------  ------------------------------------  ---------------------------------
backup operator-killed-     the component Jobs' uploads wait at   Completed; exactly one Job per
  Running                   the S3 gate                           component and one commit Job,
backup operator-killed-     the commit Job's manifest PUT waits   each succeeded once (no orphan,
  Committing                at the S3 gate                        no second); manifest complete
backup apiserver-restart    the component Jobs' uploads wait at   and naming every component; the
                            the gate; the control plane is        same operator Pod, not restarted
                            SIGKILLed and started again (same     (apiserver cell: it reconnected);
                            port and etcd data)                   a runner Pod that read the API
                                                                  while it was down may have failed
                                                                  and been retried by its Job
backup operator-killed-     keepLast 1: the second run's          after the restart, on the first
  Retention                 retention deletes the first set; its  pass (not after the next run):
                            DeleteObjects of the manifest waits   the old record and every object
                            at the gate (let through after the    of its set deleted; the new set
                            kill: the set has lost its manifest)  intact, Completed
restore operator-killed-    PausingBackups: a backup of the       Completed; every workload back at
  <step>                    namespace runs, its uploads held at   its recorded replicas (none left
                            the gate; PreRestoreBackup: the       at 0); the data as the set; one
                            safety set's uploads held; Scaling-   Job per step (plan, restore,
                            Down: ca's Pods are slow to stop;     finalize: never a second); no step
                            Restoring: the restore Job's          recorded twice; no scratch or kept
                            download held; AfterSwap: killed      database left after finalize
                            while the Job runs, started again
                            once it has swapped and succeeded;
                            ScalingUp: a BestEffort quota (pods:
                            0) keeps the workloads' Pods out (the
                            runner Jobs have requests: admitted)
restore apiserver-restart   the restore Job's downloads wait at   as the restore cells, and the same
                            the gate; the control plane restarts  operator Pod, not restarted
                            (SIGKILL, same port and etcd data)

The figures are printed with the runner cells' (tests/integration/test_fault_matrix.py).
"""

from __future__ import annotations

import contextlib
import json
import signal
import threading
import time
from collections.abc import Callable, Iterator
from typing import Any

import pytest
from kubernetes import client as k8s
from kubernetes.client.exceptions import ApiException

from integration.faults import FaultMatrix, FaultyS3Proxy, fault_matrix
from lamassu_platform.operator_proc import OPERATOR_NAMESPACE
from lamassu_platform.stack import BUCKET, Platform

from .conftest import Cluster, Operator
from .test_restore import (
    PART_OF,
    DeploymentController,
    checksums,
    controller,
    deployment,
    kept_databases,
    pods,
    replicas,
    restore,
    restore_jobs,
    step_names,
    wait_restore,
)

pytestmark = [pytest.mark.platform, pytest.mark.e2e]

__all__ = ["controller", "fault_matrix"]  # fixtures, imported to be used here

ENDED = ("Completed", "Failed", "RolledBack")
RUN_ENDED = ("Completed", "Failed", "PartiallyFailed")
STEPS = ["PausingBackups", "PreRestoreBackup", "ScalingDown", "Restoring", "AfterSwap", "ScalingUp"]
COMPONENTS = ("config", "postgres", "vault")


# ----------------------------------------------------------------------------------- helpers
Picks = Callable[[str, str], bool]


def uploads(method: str, path: str) -> bool:
    """An artifact upload (object PUT or multipart part), not the commit's manifest."""
    return method in ("PUT", "POST") and "manifest.json" not in path and "?delete" not in path


def manifest_put(method: str, path: str) -> bool:
    return method == "PUT" and path.split("?", 1)[0].endswith("/manifest.json")


def bulk_delete(method: str, path: str) -> bool:
    """A DeleteObjects request: retention deletes a set's manifest and signature first."""
    return method == "POST" and "?delete" in path


def refetch() -> Picks:
    """A second download of a postgres artifact: the plan Job verifies each once, so the next
    GET of the same key is the restore Job's (the manifest and its signature pass)."""
    seen: set[str] = set()

    def picks(method: str, path: str) -> bool:
        key = path.split("?", 1)[0]
        if method != "GET" or "/postgres/" not in key:
            return False
        if key in seen:
            return True
        seen.add(key)
        return False

    return picks


class S3Gate:
    """A proxy in front of the real S3 server that holds the requests ``picks`` chooses while
    closed: the runner blocks on its own request, so its Job is running for as long as the test
    needs (under boto3's 60 s read timeout)."""

    def __init__(self, upstream: str) -> None:
        self.picks: Picks = lambda method, path: False
        self.held = threading.Event()
        self._open = threading.Event()
        self._open.set()
        self.proxy = FaultyS3Proxy(upstream, self._rule)

    def _rule(self, method: str, path: str) -> bool:
        if not self._open.is_set() and self.picks(method, path):
            self.held.set()
            self._open.wait(50)
        return False  # forward it: nothing is refused, only delayed

    @property
    def endpoint(self) -> str:
        return self.proxy.endpoint

    def close(self, picks: Picks) -> None:
        self.picks = picks
        self.held.clear()
        self._open.clear()

    def open(self) -> None:
        self._open.set()

    def wait_held(self, timeout: float = 60) -> None:
        assert self.held.wait(timeout), "no request reached the S3 gate"


@pytest.fixture
def gate(platform: Platform) -> Iterator[S3Gate]:
    assert platform.s3 is not None
    g = S3Gate(platform.s3.endpoint)
    with g.proxy:
        try:
            yield g
        finally:
            g.open()


def gated_policy(
    cluster: Cluster, ns: str, gate: S3Gate, *components: str, **spec_overrides: Any
) -> None:
    """The sample policy (only ``components``, if named), its bucket reached through the gate."""
    spec = cluster.platform.sample_policy()["spec"]
    chosen = {c: spec["components"][c] for c in components or COMPONENTS}
    destination = {"s3": {**spec["destination"]["s3"], "endpoint": gate.endpoint}}
    cluster.policy(ns, "lamassu", components=chosen, destination=destination, **spec_overrides)


def operator_pod(cluster: Cluster, operator: Operator) -> tuple[str, int]:
    """The operator Pod's name and its container's restart count."""
    pod = cluster.core.read_namespaced_pod(operator.pod_name, OPERATOR_NAMESPACE)
    restarts = sum(s.restart_count or 0 for s in pod.status.container_statuses or [])
    return pod.metadata.name, restarts


def restart_apiserver(platform: Platform) -> float:
    """The control plane SIGKILLed and started again on its port and etcd data (a graceful
    stop waits out the apiserver's shutdown: 40 s here, for the same reconnects)."""
    assert platform.control_plane is not None
    return platform.control_plane.restart(kill=True)


def assert_one_complete_set(cluster: Cluster, platform: Platform, ns: str, run: str) -> str:
    """The run Completed with exactly one Job per component and one commit Job, each succeeded
    once, and a committed manifest naming every component; returns the Jobs' short names (and
    their failed Pods, which the Job controller retried: a runner that reads the API fails while
    it is down)."""
    assert platform.s3 is not None
    done = cluster.wait_phase(ns, run, RUN_ENDED, timeout=180)
    assert done["status"]["phase"] == "Completed", done["status"]
    jobs = cluster.jobs(ns, run)
    names = sorted(j.metadata.name.removeprefix(f"{run}-") for j in jobs)
    assert names == sorted(["commit", *COMPONENTS]), names
    retried = []
    for job in jobs:
        assert (job.status.succeeded or 0) == 1, job.metadata.name
        if job.status.failed:
            retried.append(f"{job.metadata.name.removeprefix(f'{run}-')} {job.status.failed}")
    prefix = done["status"]["location"].split("/", 3)[3]
    manifest = json.loads(
        platform.s3.client().get_object(Bucket=BUCKET, Key=prefix + "manifest.json")["Body"].read()
    )
    assert manifest["complete"] is True
    assert {a["component"] for a in manifest["artifacts"]} == set(COMPONENTS)
    return ", ".join(names) + (f" (failed Pods retried: {', '.join(retried)})" if retried else "")


def assert_restored(
    cluster: Cluster, platform: Platform, ns: str, expected: dict[str, Any]
) -> list[str]:
    """The restore ``kill`` Completed: workloads at their replicas, one Job per step, no step
    twice, the data as the set, the kept databases finalized; returns the Jobs' short names."""
    done = wait_restore(cluster, ns, "kill", ENDED, 300)
    status = done["status"]
    assert status["phase"] == "Completed", status
    assert replicas(cluster, ns, "ca") == 2
    assert replicas(cluster, ns, "kms") == 1
    names = step_names(done)
    assert len(names) == len(set(names)), names  # no step twice
    jobs = restore_jobs(cluster, ns)
    assert len(jobs) == len(set(jobs)), jobs
    assert set(jobs) <= {"kill-plan", "kill-restore", "kill-finalize"}, jobs
    assert jobs.count("kill-restore") == 1
    assert checksums(platform) == expected
    cluster.wait(
        "the kept databases finalized", lambda: kept_databases(platform) == [], timeout=120
    )
    return [j.removeprefix("kill-") for j in jobs]


def restore_setup(
    cluster: Cluster, platform: Platform, ctl: Callable[[str], DeploymentController], ns: str
) -> tuple[DeploymentController, dict[str, Any]]:
    """Workloads ca (2) and kms (1) running, a completed set "good", then the data damaged;
    returns the namespace's Pod controller and the data as the set."""
    assert platform.pg is not None
    controller_ = ctl(ns)
    cluster.backup(ns, "good", "lamassu")
    done = cluster.wait_phase(ns, "good", RUN_ENDED, timeout=180)
    assert done["status"]["phase"] == "Completed", done["status"]
    expected = checksums(platform)
    deployment(cluster, ns, "ca", 2)
    deployment(cluster, ns, "kms", 1)
    cluster.wait("the Pods", lambda: pods(cluster, ns, "ca") == 2, timeout=60)
    platform.pg.psql("DELETE FROM dms;", "dmsmanager")
    return controller_, expected


def start_restore(cluster: Cluster, ns: str, *, pre_restore_backup: bool = False) -> None:
    restore(
        cluster,
        ns,
        "kill",
        backupRef={"name": "good"},
        mode="InPlace",
        confirm="good",
        preRestoreBackup=pre_restore_backup,
        finalizeAfter="0s",
        workloads={"selector": {"matchLabels": PART_OF}},
    )


@contextlib.contextmanager
def no_new_pods(core: k8s.CoreV1Api, ns: str) -> Iterator[None]:
    """A ResourceQuota admitting no BestEffort Pod: the test workloads (no requests) cannot get
    Pods back, the runner Jobs (requests set) still can. The real quota admission refuses them
    and the ReplicaSet controller retries, as on a cluster whose quota is exhausted.

    Admission enforces only what the quota's status says, and the test control plane runs no
    resourcequota controller: the status is written here as that controller would write it
    (without it, the quota admits everything, which is why this cell once looked racy)."""
    name = "no-workload-pods"
    core.create_namespaced_resource_quota(
        ns, {"metadata": {"name": name}, "spec": {"hard": {"pods": "0"}, "scopes": ["BestEffort"]}}
    )
    core.patch_namespaced_resource_quota_status(
        name, ns, {"status": {"hard": {"pods": "0"}, "used": {"pods": "0"}}}
    )
    try:
        yield
    finally:
        with contextlib.suppress(ApiException):
            core.delete_namespaced_resource_quota(name, ns)


# ----------------------------------------------------------------------------- backup cells
@pytest.mark.parametrize("when", ["Running", "Committing"])
def test_operator_killed_at_each_backup_phase(
    cluster: Cluster,
    operator: Operator,
    platform: Platform,
    gate: S3Gate,
    fault_matrix: FaultMatrix,
    when: str,
) -> None:
    with fault_matrix.cell(f"backup-operator-killed-{when}") as cell:
        ns = cluster.namespace()
        gated_policy(cluster, ns, gate)
        gate.close(uploads if when == "Running" else manifest_put)
        cluster.backup(ns, "crash", "lamassu")
        gate.wait_held()
        if when == "Running":
            cluster.wait(
                "the component Jobs", lambda: len(cluster.jobs(ns, "crash")) == 3, timeout=30
            )
            cell.at = "operator Pod deleted (grace 0), the component Jobs mid-upload"
        else:
            cell.at = "operator Pod deleted (grace 0), the commit Job writing manifest.json"
        operator.stop(signal.SIGKILL)
        try:
            time.sleep(1)
            gate.open()  # the Jobs end while nobody watches
            time.sleep(3)
        finally:
            operator.start()
        jobs = assert_one_complete_set(cluster, platform, ns, "crash")
        cell.end = f"Completed; jobs {jobs}, each succeeded once; manifest complete"


def test_apiserver_restarted_during_a_backup_run(
    cluster: Cluster,
    operator: Operator,
    platform: Platform,
    gate: S3Gate,
    fault_matrix: FaultMatrix,
) -> None:
    with fault_matrix.cell("backup-apiserver-restart") as cell:
        ns = cluster.namespace()
        gated_policy(cluster, ns, gate)
        before = operator_pod(cluster, operator)
        gate.close(uploads)
        cluster.backup(ns, "crash", "lamassu")
        gate.wait_held()
        cluster.wait("the component Jobs", lambda: len(cluster.jobs(ns, "crash")) == 3, timeout=30)
        down = restart_apiserver(platform)
        cell.at = f"control plane restarted (down {down:.1f} s), the component Jobs mid-upload"
        gate.open()
        jobs = assert_one_complete_set(cluster, platform, ns, "crash")
        assert operator_pod(cluster, operator) == before, "the operator restarted"
        cell.end = (
            f"Completed; jobs {jobs}, each succeeded once; manifest complete; same operator Pod"
        )


def set_objects(platform: Platform, location: str) -> list[str]:
    assert platform.s3 is not None
    prefix = location.split("/", 3)[3]
    listed = platform.s3.client().list_objects_v2(Bucket=BUCKET, Prefix=prefix)
    return sorted(o["Key"][len(prefix) :] for o in listed.get("Contents", []))


def test_operator_killed_during_retention(
    cluster: Cluster,
    operator: Operator,
    platform: Platform,
    gate: S3Gate,
    fault_matrix: FaultMatrix,
) -> None:
    with fault_matrix.cell("backup-operator-killed-Retention") as cell:
        ns = cluster.namespace()
        keep = dict.fromkeys(("keepDaily", "keepWeekly", "keepMonthly", "keepVerified"), 0)
        gated_policy(cluster, ns, gate, "config", retention={**keep, "keepLast": 1})
        cluster.backup(ns, "old", "lamassu")
        old = cluster.wait_phase(ns, "old", RUN_ENDED)
        assert old["status"]["phase"] == "Completed", old["status"]
        time.sleep(1.1)  # distinct set times
        gate.close(bulk_delete)
        cluster.backup(ns, "new", "lamassu")
        gate.wait_held()  # retention's first delete: the old set's manifest and signature
        cell.at = "operator Pod deleted (grace 0), retention deleting the old set (manifest first)"
        operator.stop(signal.SIGKILL)
        try:
            time.sleep(1)
            gate.open()  # the held delete goes on: the old set has lost its manifest
        finally:
            operator.start()
        lingering: list[str] = []

        def gone() -> bool:
            run = cluster.get("lamassubackups", ns, "old")
            if run is not None and "manifest.json" not in set_objects(
                platform, old["status"]["location"]
            ):
                lingering.append(run["status"]["phase"])
            return run is None and not set_objects(platform, old["status"]["location"])

        # On the first pass after the restart, not once the next run succeeds (an hour later):
        # by then discovery has called the record Lost, and retention drops a Lost record only,
        # never the objects in its folder, which would stay in the bucket for good.
        cluster.wait("the old set and its record deleted", gone, timeout=60)
        new = cluster.get("lamassubackups", ns, "new")
        assert new is not None
        assert new["status"]["phase"] == "Completed"
        assert "manifest.json" in set_objects(platform, new["status"]["location"])
        cell.end = (
            f"old set: record and every object deleted after the restart (seen without its "
            f"manifest {len(lingering)}x, as {sorted(set(lingering)) or '-'}); new set intact"
        )


# ---------------------------------------------------------------------------- restore cells
@pytest.mark.parametrize("when", STEPS)
def test_operator_killed_at_each_restore_step(
    cluster: Cluster,
    operator: Operator,
    platform: Platform,
    controller: Callable[[str], DeploymentController],
    gate: S3Gate,
    fault_matrix: FaultMatrix,
    when: str,
) -> None:
    with fault_matrix.cell(f"operator-killed-{when}") as cell, contextlib.ExitStack() as stack:
        ns = cluster.namespace()
        gated_policy(cluster, ns, gate, "postgres", "vault")
        ctl, expected = restore_setup(cluster, platform, controller, ns)
        if when == "ScalingDown":
            ctl.hold.add("ca")  # its Pods are slow to stop: ScalingDown waits
        if when == "PausingBackups":  # a backup of the namespace runs (held): the restore waits
            gate.close(uploads)
            cluster.backup(ns, "running", "lamassu")
            gate.wait_held()
        if when == "PreRestoreBackup":
            gate.close(uploads)  # the safety set's Jobs mid-upload
        if when == "Restoring":
            gate.close(refetch())  # the restore Job mid-download
        if when == "ScalingUp":
            stack.enter_context(no_new_pods(cluster.core, ns))
        start_restore(cluster, ns, pre_restore_backup=when == "PreRestoreBackup")
        phase = "Restoring" if when == "AfterSwap" else when
        seen = wait_restore(cluster, ns, "kill", (phase, *ENDED), timeout=180)
        assert seen["status"]["phase"] == phase, seen["status"]
        if when in ("PreRestoreBackup", "Restoring"):
            gate.wait_held(120)  # its Job is mid-transfer
        cell.at = f"operator Pod deleted (grace 0) in {phase}"
        operator.stop(signal.SIGKILL)
        try:
            time.sleep(1)
            gate.open()
            if when == "ScalingDown":
                time.sleep(1)
                assert replicas(cluster, ns, "kms") == 1  # the order holds across the kill
                ctl.hold.discard("ca")
            elif when == "AfterSwap":
                cluster.wait(
                    "the restore Job to swap and succeed",
                    lambda: _job_succeeded(cluster, ns, "kill-restore"),
                    timeout=180,
                )
                cell.at = "operator Pod deleted in Restoring; back after the Job swapped"
            else:
                time.sleep(2)
        finally:
            operator.start()
        if when == "ScalingUp":
            time.sleep(3)  # the restarted operator meets the quota first: still waiting
            held = wait_restore(cluster, ns, "kill", ("ScalingUp", *ENDED), timeout=10)
            assert held["status"]["phase"] == "ScalingUp", held["status"]
            assert pods(cluster, ns, "ca") == 0
            stack.close()
        jobs = assert_restored(cluster, platform, ns, expected)
        cell.end = f"Completed; ca=2 kms=1; jobs {', '.join(jobs)}; data = set"


def test_apiserver_restarted_during_a_restore(
    cluster: Cluster,
    operator: Operator,
    platform: Platform,
    controller: Callable[[str], DeploymentController],
    gate: S3Gate,
    fault_matrix: FaultMatrix,
) -> None:
    with fault_matrix.cell("restore-apiserver-restart") as cell:
        ns = cluster.namespace()
        gated_policy(cluster, ns, gate, "postgres", "vault")
        ctl, expected = restore_setup(cluster, platform, controller, ns)
        before = operator_pod(cluster, operator)
        gate.close(refetch())
        start_restore(cluster, ns)
        gate.wait_held(120)
        seen = wait_restore(cluster, ns, "kill", ("Restoring", *ENDED), timeout=30)
        assert seen["status"]["phase"] == "Restoring", seen["status"]
        ctl.__exit__()  # scaled down already; the test's Pod reaper is no API client to test
        down = restart_apiserver(platform)
        cell.at = f"control plane restarted (down {down:.1f} s), the restore Job downloading"
        gate.open()
        jobs = assert_restored(cluster, platform, ns, expected)
        assert operator_pod(cluster, operator) == before, "the operator restarted"
        cell.end = f"Completed; ca=2 kms=1; jobs {', '.join(jobs)}; data = set; same operator Pod"


def _job_succeeded(cluster: Cluster, ns: str, name: str) -> bool:
    try:
        job = cluster.batch.read_namespaced_job(name, ns)
    except ApiException:
        return False
    return bool(job.status.succeeded)
