"""The operator end to end: real apiserver and Job controller, the pod runner executing the real
runner against real PostgreSQL, GnuPG, S3 server and OpenBao."""

from __future__ import annotations

import base64
import contextlib
import signal
import socket
import threading
import time
from datetime import UTC, datetime
from typing import Any

import pytest
from kubernetes.client.exceptions import ApiException

from lamassu_platform.stack import BUCKET, Platform

from .conftest import Cluster, Operator

pytestmark = [pytest.mark.platform, pytest.mark.e2e]


def seconds_to_next_minute() -> float:
    now = datetime.now(UTC)
    return 60 - now.second - now.microsecond / 1e6


def set_keys(platform: Platform, location: str) -> set[str]:
    assert platform.s3 is not None
    prefix = location.split("/", 3)[3]
    pages = (
        platform.s3.client().get_paginator("list_objects_v2").paginate(Bucket=BUCKET, Prefix=prefix)
    )
    return {item["Key"][len(prefix) :] for page in pages for item in page.get("Contents", [])}


def test_on_demand_backup_completes_with_truthful_status(
    cluster: Cluster, operator: Operator, platform: Platform
) -> None:
    ns = cluster.namespace()
    cluster.policy(ns, "lamassu")
    cluster.backup(ns, "now-1", "lamassu")
    done = cluster.wait_phase(ns, "now-1", ("Completed", "PartiallyFailed", "Failed"))
    status = done["status"]
    assert status["phase"] == "Completed", status
    assert status["location"].startswith(f"s3://{BUCKET}/local/{ns}/lamassu/")
    keys = set_keys(platform, status["location"])
    assert "manifest.json" in keys
    assert "manifest.json.asc" in keys
    assert {
        a["key"].rsplit("/", 2)[-2] + "/" + a["key"].rsplit("/", 1)[-1] for a in status["artifacts"]
    } <= keys
    assert {c: v["phase"] for c, v in status["components"].items()} == {
        "postgres": "Completed",
        "vault": "Completed",
        "config": "Completed",
    }
    assert status["sizeBytes"] > 0
    assert status["manifest"]["sha256"]
    assert cluster.condition(done, "Completed")["status"] == "True"
    cluster.wait(
        "Started and Completed events",
        lambda: {"Started", "Completed"} <= {e.reason for e in cluster.events(ns, "now-1")},
        timeout=15,
    )
    jobs = cluster.jobs(ns, "now-1")
    assert sorted(j.metadata.name for j in jobs) == [
        "now-1-commit",
        "now-1-config",
        "now-1-postgres",
        "now-1-vault",
    ]
    pod = jobs[0].spec.template.spec
    assert pod.security_context.run_as_non_root is True
    assert pod.security_context.seccomp_profile.type == "RuntimeDefault"
    container = pod.containers[0]
    assert container.security_context.read_only_root_filesystem is True
    assert container.security_context.capabilities.drop == ["ALL"]
    # No credential in the Job spec: only Secret volumes.
    text = str(jobs[0].to_dict())
    assert platform.pg is not None
    assert platform.s3 is not None
    assert platform.pg.password not in text
    assert platform.s3.secret_key not in text

    # The policy sees the run and the per-component success.
    def fresh() -> dict[str, Any] | None:
        policy = cluster.get("lamassubackuppolicies", ns, "lamassu")
        comps = ((policy or {}).get("status") or {}).get("components") or {}
        return policy if comps.get("postgres", {}).get("lastSuccessfulTime") else None

    policy = cluster.wait("the policy to record the success", fresh, timeout=30)
    assert policy["status"]["lastSuccessfulTime"]
    assert cluster.condition(policy, "LastRunSucceeded")["status"] == "True"
    assert policy["status"]["recentRuns"][0]["name"] == "now-1"
    metrics = operator.metrics()
    assert (
        f'lamassu_backup_last_success_timestamp_seconds{{component="postgres",namespace="{ns}",policy="lamassu"}}'
        in metrics
    )
    assert (
        f'lamassu_backup_runs_total{{namespace="{ns}",outcome="Completed",policy="lamassu"}} 1.0'
        in metrics
    )


def test_annotation_runs_a_backup_once(cluster: Cluster, operator: Operator) -> None:
    ns = cluster.namespace()
    cluster.policy(ns, "lamassu")
    patch = {"metadata": {"annotations": {"backup.lamassu.io/run-now": "before-upgrade"}}}
    cluster.custom.patch_namespaced_custom_object(
        "backup.lamassu.io", "v1alpha1", ns, "lamassubackuppolicies", "lamassu", patch
    )
    runs = cluster.wait("a manual run", lambda: cluster.backups(ns, "lamassu"), timeout=30)
    assert len(runs) == 1
    assert runs[0]["spec"]["trigger"] == "Manual"
    cluster.wait_phase(ns, runs[0]["metadata"]["name"], ("Completed",))
    time.sleep(6)  # the policy ticks again: the same annotation value must not run again
    assert len(cluster.backups(ns, "lamassu")) == 1


def test_scheduled_run(cluster: Cluster, operator: Operator) -> None:
    ns = cluster.namespace()
    if seconds_to_next_minute() < 5:
        time.sleep(6)
    cluster.policy(
        ns,
        "lamassu",
        schedule="* * * * *",
        components={"postgres": cluster.platform.sample_policy()["spec"]["components"]["postgres"]},
    )
    runs = cluster.wait(
        "a scheduled run",
        lambda: [b for b in cluster.backups(ns, "lamassu") if b["spec"]["trigger"] == "Scheduled"],
        timeout=75,
    )
    run = runs[0]
    assert run["spec"]["scheduledTime"].endswith(":00Z")
    done = cluster.wait_phase(
        ns, run["metadata"]["name"], ("Completed", "Failed", "PartiallyFailed")
    )
    assert done["status"]["phase"] == "Completed"
    policy = cluster.get("lamassubackuppolicies", ns, "lamassu")
    assert policy is not None
    assert policy["status"]["lastScheduleTime"] == run["spec"]["scheduledTime"]
    assert policy["status"]["nextScheduleTime"] > run["spec"]["scheduledTime"]


def test_config_change_triggers_a_config_backup(cluster: Cluster, operator: Operator) -> None:
    ns = cluster.namespace()
    spec = cluster.platform.sample_policy()["spec"]
    components = dict(spec["components"])
    components["config"] = {**components["config"], "backupOnChange": True}
    cluster.policy(ns, "lamassu", components=components)
    time.sleep(3)  # let the operator index the policy
    cluster.core.patch_namespaced_config_map(
        "ca-config", ns, {"data": {"config": "logs: {level: debug}\n"}}
    )
    runs = cluster.wait(
        "an on-change run",
        lambda: [b for b in cluster.backups(ns, "lamassu") if b["spec"]["trigger"] == "OnChange"],
        timeout=30,
    )
    assert runs[0]["spec"]["components"] == ["config"]
    done = cluster.wait_phase(ns, runs[0]["metadata"]["name"], ("Completed", "Failed"))
    assert done["status"]["phase"] == "Completed"
    assert [a["component"] for a in done["status"]["artifacts"]] == ["config"]


class HangingServer:
    """Accepts TCP connections and never answers (a Vault that hangs)."""

    def __init__(self) -> None:
        self.sock = socket.socket()
        self.sock.bind(("127.0.0.1", 0))
        self.sock.listen(16)
        self.port = self.sock.getsockname()[1]
        self.conns: list[socket.socket] = []
        self._thread = threading.Thread(target=self._accept, daemon=True)
        self._thread.start()

    def _accept(self) -> None:
        while True:
            try:
                conn, _ = self.sock.accept()
            except OSError:
                return
            self.conns.append(conn)

    def close(self) -> None:
        for conn in self.conns:
            conn.close()
        self.sock.close()


def test_forbid_records_a_skipped_run(cluster: Cluster, operator: Operator) -> None:
    ns = cluster.namespace()
    hang = HangingServer()
    try:
        components = dict(cluster.platform.sample_policy()["spec"]["components"])
        components["vault"] = {
            **components["vault"],
            "address": f"http://127.0.0.1:{hang.port}",
            "caSecret": None,
        }
        components["vault"] = {k: v for k, v in components["vault"].items() if v is not None}
        cluster.policy(
            ns, "lamassu", schedule="* * * * *", concurrencyPolicy="Forbid", components=components
        )
        cluster.backup(ns, "long-run", "lamassu", components=["vault"])
        cluster.wait_phase(ns, "long-run", ("Running",), timeout=30)

        def skipped() -> list[dict[str, Any]]:
            policy = cluster.get("lamassubackuppolicies", ns, "lamassu") or {}
            return [
                r
                for r in (policy.get("status") or {}).get("recentRuns", [])
                if r["phase"] == "Skipped"
            ]

        records = cluster.wait("a Skipped record", skipped, timeout=80)
        assert "long-run" in records[0]["reason"]
        assert "Forbid" in records[0]["reason"]
        assert not [
            b for b in cluster.backups(ns, "lamassu") if b["spec"]["trigger"] == "Scheduled"
        ]
        cluster.wait(
            "a SkippedSchedule event",
            lambda: "SkippedSchedule" in {e.reason for e in cluster.events(ns, "lamassu")},
            timeout=15,
        )
    finally:
        hang.close()
    done = cluster.wait_phase(
        ns, "long-run", ("Failed", "PartiallyFailed", "Completed"), timeout=120
    )
    assert done["status"]["phase"] == "Failed"


def test_stale_is_set_then_cleared(cluster: Cluster, operator: Operator) -> None:
    ns = cluster.namespace()
    components = {
        "postgres": {
            **cluster.platform.sample_policy()["spec"]["components"]["postgres"],
            "recoveryPointObjective": "15s",
        }
    }
    cluster.policy(ns, "lamassu", components=components)
    policy = cluster.wait(
        "the first evaluation",
        lambda: (
            cluster.condition(cluster.get("lamassubackuppolicies", ns, "lamassu"), "Stale") or None
        ),
        timeout=20,
    )
    assert policy["reason"] == "AwaitingFirstBackup"
    stale = cluster.wait(
        "Stale=True",
        lambda: (
            (
                c := cluster.condition(cluster.get("lamassubackuppolicies", ns, "lamassu"), "Stale")
            ).get("status")
            == "True"
            and c
        ),
        timeout=40,
    )
    assert stale["reason"] == "ObjectiveExceeded"
    assert "postgres" in stale["message"]
    cluster.wait(
        "a BackupStale event",
        lambda: "BackupStale" in {e.reason for e in cluster.events(ns, "lamassu")},
        timeout=15,
    )
    metrics = operator.metrics()
    assert (
        f'lamassu_backup_stale{{component="postgres",namespace="{ns}",policy="lamassu"}} 1.0'
        in metrics
    )
    cluster.backup(ns, "catch-up", "lamassu")
    cluster.wait_phase(ns, "catch-up", ("Completed",))
    cleared = cluster.wait(
        "Stale=False",
        lambda: (
            (
                c := cluster.condition(cluster.get("lamassubackuppolicies", ns, "lamassu"), "Stale")
            ).get("status")
            == "False"
            and c.get("reason") == "WithinObjective"
            and c
        ),
        timeout=20,
    )
    assert cleared["reason"] == "WithinObjective"
    cluster.wait(
        "a BackupFresh event",
        lambda: "BackupFresh" in {e.reason for e in cluster.events(ns, "lamassu")},
        timeout=15,
    )


def test_retention_deletes_exactly_the_expired_sets(
    cluster: Cluster, operator: Operator, platform: Platform
) -> None:
    ns = cluster.namespace()
    components = {"postgres": cluster.platform.sample_policy()["spec"]["components"]["postgres"]}
    retention = {
        "keepLast": 2,
        "keepDaily": 0,
        "keepWeekly": 0,
        "keepMonthly": 0,
        "keepVerified": 0,
    }
    cluster.policy(ns, "lamassu", components=components, retention=retention)
    locations = {}
    for i in range(4):
        name = f"run-{i}"
        cluster.backup(ns, name, "lamassu")
        done = cluster.wait_phase(ns, name, ("Completed", "Failed"))
        assert done["status"]["phase"] == "Completed"
        locations[name] = done["status"]["location"]
        time.sleep(1.1)  # distinct set times
    try:
        remaining = cluster.wait(
            "retention to leave two runs",
            lambda: (
                (names := sorted(b["metadata"]["name"] for b in cluster.backups(ns, "lamassu")))
                == ["run-2", "run-3"]
                and names
            ),
            timeout=40,
        )
    except AssertionError as exc:
        policy = cluster.get("lamassubackuppolicies", ns, "lamassu") or {}
        names = sorted(b["metadata"]["name"] for b in cluster.backups(ns, "lamassu"))
        events = [(e.reason, e.message) for e in cluster.events(ns, "lamassu")]
        raise AssertionError(
            f"{exc}: left {names}; retention status {policy.get('status', {}).get('retention')}; events {events}"
        ) from None
    assert remaining == ["run-2", "run-3"]
    for name in ("run-0", "run-1"):
        assert set_keys(platform, locations[name]) == set(), f"{name} still has objects"
    for name in ("run-2", "run-3"):
        assert "manifest.json" in set_keys(platform, locations[name])
    cluster.wait(
        "a RetentionDeleted event",
        lambda: "RetentionDeleted" in {e.reason for e in cluster.events(ns, "lamassu")},
        timeout=15,
    )


def test_operator_killed_mid_run_resumes_without_duplicates(
    cluster: Cluster, operator: Operator
) -> None:
    ns = cluster.namespace()
    cluster.policy(ns, "lamassu")
    cluster.backup(ns, "crash", "lamassu")
    cluster.wait(
        "component Jobs", lambda: len(cluster.jobs(ns, "crash")) >= 3, timeout=30, interval=0.2
    )
    operator.stop(signal.SIGKILL)
    try:
        time.sleep(10)  # the component Jobs finish while nobody watches
    finally:
        operator.start()
    done = cluster.wait_phase(ns, "crash", ("Completed", "Failed", "PartiallyFailed"), timeout=120)
    assert done["status"]["phase"] == "Completed"
    names = sorted(j.metadata.name for j in cluster.jobs(ns, "crash"))
    assert names == ["crash-commit", "crash-config", "crash-postgres", "crash-vault"]
    for job in cluster.jobs(ns, "crash"):
        assert (job.status.succeeded or 0) == 1, job.metadata.name


def test_missed_run_is_recorded_not_fired(cluster: Cluster, operator: Operator) -> None:
    ns = cluster.namespace()
    operator.stop()
    try:
        if seconds_to_next_minute() < 5:
            time.sleep(6)
        cluster.policy(ns, "lamassu", schedule="* * * * *", startingDeadline="5s")
        time.sleep(seconds_to_next_minute() + 8)  # a tick passes, and its deadline too
    finally:
        operator.start()

    def missed() -> list[dict[str, Any]]:
        policy = cluster.get("lamassubackuppolicies", ns, "lamassu") or {}
        return [
            r for r in (policy.get("status") or {}).get("recentRuns", []) if r["phase"] == "Missed"
        ]

    records = cluster.wait("a Missed record", missed, timeout=30)
    assert records[0]["reason"].startswith("StartingDeadlineExceeded")
    fired = [
        b
        for b in cluster.backups(ns, "lamassu")
        if b["spec"].get("scheduledTime") == records[0]["scheduledTime"]
    ]
    assert fired == []
    cluster.wait(
        "a MissedSchedule event",
        lambda: "MissedSchedule" in {e.reason for e in cluster.events(ns, "lamassu")},
        timeout=15,
    )


def test_discovery_rebuilds_records_in_a_fresh_namespace(
    cluster: Cluster, operator: Operator, platform: Platform
) -> None:
    ns = cluster.namespace()
    components = {"postgres": cluster.platform.sample_policy()["spec"]["components"]["postgres"]}
    cluster.policy(ns, "lamassu", components=components)
    cluster.backup(ns, "original", "lamassu")
    done = cluster.wait_phase(ns, "original", ("Completed",))
    location = done["status"]["location"]
    cluster.core.delete_namespace(ns)
    cluster.wait(
        "the namespace to go",
        lambda: ns not in [n.metadata.name for n in cluster.core.list_namespace().items],
        timeout=90,
    )
    cluster.install(ns)  # a fresh cluster, as far as this namespace knows
    cluster.policy(ns, "lamassu", components=components)
    found = cluster.wait(
        "a Discovered record",
        lambda: [b for b in cluster.backups(ns, "lamassu") if b["spec"]["trigger"] == "Discovered"],
        timeout=60,
    )
    record = found[0]
    assert record["status"]["location"] == location
    assert record["status"]["phase"] == "Completed"
    assert record["status"]["manifest"]["sha256"] == done["status"]["manifest"]["sha256"]
    assert "signature verified" in cluster.condition(record, "Completed")["message"]


def test_missing_secret_unreachable_database_and_wrong_key(
    cluster: Cluster, operator: Operator
) -> None:
    ns = cluster.namespace()
    spec = cluster.platform.sample_policy()["spec"]
    postgres = {**spec["components"]["postgres"], "credentialsSecret": {"name": "does-not-exist"}}
    cluster.policy(ns, "missing", components={"postgres": postgres})
    ready = cluster.wait(
        "Ready=False",
        lambda: (
            (
                c := cluster.condition(cluster.get("lamassubackuppolicies", ns, "missing"), "Ready")
            ).get("status")
            == "False"
            and c
        ),
        timeout=30,
    )
    assert ready["reason"] == "SecretNotFound"
    assert "does-not-exist" in ready["message"]
    assert "spec.components.postgres.credentialsSecret" in ready["message"]
    cluster.wait(
        "a SecretNotFound event",
        lambda: "SecretNotFound" in {e.reason for e in cluster.events(ns, "missing")},
        timeout=15,
    )

    unreachable = {**spec["components"]["postgres"], "port": 1}
    cluster.policy(ns, "unreachable", components={"postgres": unreachable})
    cluster.backup(ns, "to-nowhere", "unreachable")
    failed = cluster.wait_phase(ns, "to-nowhere", ("Failed",))
    message = failed["status"]["components"]["postgres"]["message"]
    assert "PostgreSQL" in message
    cluster.wait(
        "a ComponentFailed event",
        lambda: "ComponentFailed" in {e.reason for e in cluster.events(ns, "to-nowhere")},
        timeout=15,
    )

    cluster.core.create_namespaced_secret(
        ns,
        {
            "metadata": {"name": "bad-recipients"},
            "data": {"recipients.asc": base64.b64encode(b"not a key").decode()},
        },
    )
    wrong = dict(spec)
    wrong["encryption"] = {
        "gpg": {"recipientsSecret": {"name": "bad-recipients", "key": "recipients.asc"}}
    }
    cluster.policy(
        ns,
        "wrongkey",
        components={"postgres": spec["components"]["postgres"]},
        encryption=wrong["encryption"],
    )
    cluster.backup(ns, "bad-key", "wrongkey")
    failed = cluster.wait_phase(ns, "bad-key", ("Failed",))
    assert "recipientsSecret" in failed["status"]["components"]["postgres"]["message"]
    assert operator.running


def test_scheduled_verification_records_evidence(cluster: Cluster, operator: Operator) -> None:
    ns = cluster.namespace()
    spec = cluster.platform.sample_policy()["spec"]
    verification = {**spec["verification"], "schedule": "* * * * *"}
    components = {"postgres": spec["components"]["postgres"], "vault": spec["components"]["vault"]}
    cluster.policy(ns, "lamassu", components=components, verification=verification)
    cluster.backup(ns, "to-verify", "lamassu")
    cluster.wait_phase(ns, "to-verify", ("Completed",))

    def verified() -> dict[str, Any] | None:
        backup = cluster.get("lamassubackups", ns, "to-verify") or {}
        v = (backup.get("status") or {}).get("verification") or {}
        return backup if v.get("phase") in ("Verified", "Failed") else None

    backup = cluster.wait("the drill's result", verified, timeout=150)
    verification_status = backup["status"]["verification"]
    assert verification_status["phase"] == "Verified", verification_status
    evidence = verification_status["evidence"]
    assert evidence, "a drill records its evidence"
    assert cluster.condition(backup, "Verified")["status"] == "True"
    # The drill ran as a LamassuRestore (mode Drill) of the set: owned by it, labelled with the
    # policy, its evidence the one the set records.
    drill = cluster.get("lamassurestores", ns, verification_status["restoreName"])
    assert drill is not None
    assert drill["metadata"]["name"].startswith("lamassu-drill-")
    assert drill["metadata"]["labels"]["backup.lamassu.io/scheduled-drill"] == "lamassu"
    assert [o["name"] for o in drill["metadata"]["ownerReferences"]] == ["to-verify"]
    assert (drill["spec"]["mode"], drill["spec"]["backupRef"]["name"]) == ("Drill", "to-verify")
    assert drill["status"]["phase"] == "Completed"
    assert drill["status"]["evidence"]["keyConsistency"] == evidence["keyConsistency"]
    policy = cluster.wait(
        "Verified=True on the policy",
        lambda: (
            (p := cluster.get("lamassubackuppolicies", ns, "lamassu"))
            and cluster.condition(p, "Verified").get("status") == "True"
            and p
        ),
        timeout=30,
    )
    assert policy["status"]["lastVerifiedTime"]
    assert (
        f'lamassu_backup_last_verification_timestamp_seconds{{namespace="{ns}",policy="lamassu"}}'
        in operator.metrics()
    )
    # The drill left nothing behind: no scratch database.
    assert cluster.platform.pg is not None
    leftovers = [d for d in cluster.platform.pg.databases() if "__drill" in d or "__restoring" in d]
    assert leftovers == []


def _claim(cluster: Cluster, ns: str, name: str) -> None:
    cluster.core.create_namespaced_persistent_volume_claim(
        ns,
        {
            "metadata": {"name": name},
            "spec": {
                "accessModes": ["ReadWriteOnce"],
                "resources": {"requests": {"storage": "1Mi"}},
            },
        },
    )


def _holder(cluster: Cluster, ns: str, name: str, claim: str, node: str | None = None) -> None:
    """A Pod that mounts a claim (as Lamassu's KMS does its key store); on ``node`` if given."""
    spec: dict[str, Any] = {
        "containers": [
            {
                "name": "app",
                "image": "lamassu/kms",
                "command": ["sleep", "300"],
                "volumeMounts": [{"name": "data", "mountPath": "/data"}],
                # The namespace enforces the restricted Pod Security level.
                "securityContext": {
                    "allowPrivilegeEscalation": False,
                    "capabilities": {"drop": ["ALL"]},
                },
            }
        ],
        "securityContext": {
            "runAsNonRoot": True,
            "runAsUser": 65532,
            "seccompProfile": {"type": "RuntimeDefault"},
        },
        "volumes": [{"name": "data", "persistentVolumeClaim": {"claimName": claim}}],
    }
    if node:
        spec["nodeName"] = node
    cluster.core.create_namespaced_pod(ns, {"metadata": {"name": name}, "spec": spec})


def test_volumes_job_follows_its_readwriteonce_claim(cluster: Cluster, operator: Operator) -> None:
    ns = cluster.namespace()
    _claim(cluster, ns, "hsm-tokens")
    _holder(cluster, ns, "kms-0", "hsm-tokens")
    holder = cluster.wait(
        "the claim's Pod to be placed",
        lambda: cluster.core.read_namespaced_pod("kms-0", ns).spec.node_name,
        timeout=30,
    )
    config = cluster.platform.sample_policy()["spec"]["components"]["config"]
    volumes = [{"name": "softhsm-tokens", "claimName": "hsm-tokens"}]
    try:
        cluster.policy(ns, "lamassu", components={"config": config, "volumes": volumes})
        cluster.backup(ns, "pinned", "lamassu")
        done = cluster.wait_phase(ns, "pinned", ("Completed", "PartiallyFailed", "Failed"))
        assert done["status"]["phase"] == "Completed", done["status"]
        assert "volumes" in {a["component"] for a in done["status"]["artifacts"]}
        job = next(j for j in cluster.jobs(ns, "pinned") if j.metadata.name == "pinned-volumes")
        terms = job.spec.template.spec.affinity.node_affinity
        term = terms.required_during_scheduling_ignored_during_execution.node_selector_terms[0]
        assert term.match_fields[0].key == "metadata.name"
        assert term.match_fields[0].values == [holder]

        # A second ReadWriteOnce claim held on another node: no Pod can mount both. The volumes
        # component fails at once, naming both; the other components still run.
        _claim(cluster, ns, "fs-keys")
        _holder(cluster, ns, "va-0", "fs-keys", node="other-node")
        volumes.append({"name": "fs-keys", "claimName": "fs-keys"})
        cluster.custom.patch_namespaced_custom_object(
            "backup.lamassu.io",
            "v1alpha1",
            ns,
            "lamassubackuppolicies",
            "lamassu",
            {"spec": {"components": {"volumes": volumes}}},
        )
        cluster.backup(ns, "split", "lamassu")
        done = cluster.wait_phase(ns, "split", ("Completed", "PartiallyFailed", "Failed"))
        status = done["status"]
        assert status["phase"] == "PartiallyFailed", status
        assert status["components"]["config"]["phase"] == "Completed"
        vol = status["components"]["volumes"]
        assert vol["phase"] == "Failed"
        assert vol["reason"] == "ClaimsOnDifferentNodes"
        assert f"hsm-tokens on {holder}" in vol["message"]
        assert "fs-keys on other-node" in vol["message"]
        assert "split-volumes" not in {j.metadata.name for j in cluster.jobs(ns, "split")}
        cluster.wait(
            "a ComponentFailed event",
            lambda: any(
                e.reason == "ComponentFailed" and "fs-keys on other-node" in e.message
                for e in cluster.events(ns, "split")
            ),
            timeout=15,
        )
    finally:
        for pod in ("kms-0", "va-0"):
            with contextlib.suppress(ApiException):
                cluster.core.delete_namespaced_pod(pod, ns, grace_period_seconds=0)
