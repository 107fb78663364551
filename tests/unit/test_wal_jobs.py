"""The WAL shipper Deployment, the base-backup Job, their schedule, the status and retention:
the pure side of point-in-time recovery through the operator."""

from __future__ import annotations

import json
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest
from test_wal import SEG, T0, base, seg  # type: ignore[import-not-found]  # tests/unit

from lamassu_backup.builders import jobs, wal_jobs
from lamassu_backup.builders import wal as walb
from lamassu_backup.components.base import SecretMounts
from lamassu_backup.components.postgres.wal.settings import (
    SPOOL_ROOT,
    WAL_CONFIG_ENV,
    ShipperStatus,
    WalRunConfig,
)
from lamassu_backup.models.policy import BackupPolicySpec, BackupPolicyStatus
from lamassu_backup.models.runner import SECRETS_ROOT
from lamassu_backup.models.wal import WalRecord

POLICY: dict[str, Any] = {
    "components": {
        "postgres": {
            "host": "db",
            "credentialsSecret": {"name": "pg", "usernameKey": "user", "passwordKey": "pass"},
            "walArchiving": {
                "enabled": True,
                "replicationCredentialsSecret": {
                    "name": "pg-repl",
                    "usernameKey": "u",
                    "passwordKey": "p",
                },
                "slotName": "lamassu_pitr",
                "partialInterval": "5s",
                "baseBackupSchedule": "0 */6 * * *",
            },
        },
    },
    "destination": {
        "s3": {
            "bucket": "lamassu-backups",
            "prefix": "prod",
            "credentialsSecret": {"name": "s3", "accessKeyIdKey": "id", "secretAccessKeyKey": "k"},
        }
    },
    "encryption": {
        "gpg": {
            "recipientsSecret": {"name": "gpg-pub", "key": "r.asc"},
            "signingKeySecret": {"name": "gpg-sign", "key": "s.asc"},
        }
    },
    "runner": {"nodeSelector": {"pool": "backup"}},
}
OWNER = jobs.Owner("backup.lamassu.io/v1alpha1", "LamassuBackupPolicy", "lamassu", "uid-p")


def spec(**wal: Any) -> BackupPolicySpec:
    data = json.loads(json.dumps(POLICY))
    data["components"]["postgres"]["walArchiving"].update(wal)
    return BackupPolicySpec.model_validate(data)


def deployment(policy: BackupPolicySpec | None = None) -> dict[str, Any]:
    return wal_jobs.shipper_deployment(
        policy or spec(), namespace="lamassu", policy_name="lamassu", owner=OWNER
    )


def config_of(obj: dict[str, Any]) -> WalRunConfig:
    container = obj["spec"]["template"]["spec"]["containers"][0]
    value = next(e["value"] for e in container["env"] if e["name"] == WAL_CONFIG_ENV)
    return WalRunConfig.model_validate_json(value)


def mounted(obj: dict[str, Any]) -> dict[str, tuple[str, str]]:
    out = {}
    for volume in obj["spec"]["template"]["spec"]["volumes"]:
        secret = volume.get("secret")
        for item in (secret or {}).get("items", []):
            out[f"{SECRETS_ROOT}/{secret['secretName']}/{item['path']}"] = (
                secret["secretName"],
                item["key"],
            )
    return out


def test_the_shipper_is_one_recreated_replica_owned_by_the_policy_and_labelled() -> None:
    dep = deployment()
    assert dep == deployment(), "deterministic"
    assert dep["kind"] == "Deployment"
    assert dep["metadata"]["name"] == "lamassu-wal-shipper"
    assert dep["metadata"]["ownerReferences"][0]["uid"] == "uid-p"
    assert dep["spec"]["replicas"] == 1
    assert dep["spec"]["strategy"] == {"type": "Recreate"}
    labels = dep["spec"]["selector"]["matchLabels"]
    assert labels == {
        "backup.lamassu.io/policy": "lamassu",
        "backup.lamassu.io/component": "postgresWal",
        "backup.lamassu.io/role": "wal-shipper",
    }
    template = dep["spec"]["template"]
    assert labels.items() <= template["metadata"]["labels"].items()
    assert template["spec"]["restartPolicy"] == "Always"
    assert template["spec"]["nodeSelector"] == {"pool": "backup"}
    assert template["spec"]["containers"][0]["command"] == ["lamassu-backup", "runner", "wal-ship"]
    assert "activeDeadlineSeconds" not in dep["spec"]


def test_the_shipper_pod_is_restricted_like_the_jobs_and_has_a_disk_spool() -> None:
    pod = deployment()["spec"]["template"]["spec"]
    job_pod = jobs.job_manifest(
        name="x",
        namespace="lamassu",
        owner=OWNER,
        runner=spec().runner,
        labels={},
        command=[],
        env={},
        mounts=SecretMounts(),
    )["spec"]["template"]["spec"]
    assert pod["securityContext"] == job_pod["securityContext"]
    container = pod["containers"][0]
    assert container["securityContext"] == job_pod["containers"][0]["securityContext"]
    spool = next(v for v in pod["volumes"] if v["name"] == "spool")
    assert spool["emptyDir"] == {"sizeLimit": wal_jobs.SPOOL_SIZE}  # on disk, not in memory
    assert {"name": "spool", "mountPath": SPOOL_ROOT} in container["volumeMounts"]
    assert config_of(deployment()).spool.startswith(SPOOL_ROOT + "/")


def test_every_credential_is_a_mounted_file_and_the_replication_role_is_used() -> None:
    dep = deployment()
    cfg = config_of(dep)
    files = mounted(dep)
    assert files[cfg.postgres.username_file] == ("pg-repl", "u")
    assert files[cfg.postgres.password_file] == ("pg-repl", "p")
    assert files[cfg.gpg.recipients_file] == ("gpg-pub", "r.asc")
    assert cfg.destination.secret_access_key_file is not None
    assert files[cfg.destination.secret_access_key_file] == ("s3", "k")
    assert cfg.prefix == "prod/lamassu/lamassu/"
    assert cfg.slot_name == "lamassu_pitr"
    assert cfg.partial_interval_seconds == 5
    text = json.dumps(dep)
    assert "pg-repl" in text
    assert '"p"' not in text.replace('"key": "p"', "")


def test_without_a_replication_secret_the_component_credentials_are_used() -> None:
    cfg = config_of(deployment(spec(replicationCredentialsSecret=None)))
    assert cfg.postgres.username_file == f"{SECRETS_ROOT}/pg/postgres-username"
    assert wal_jobs.references(spec(replicationCredentialsSecret=None)) == []
    assert [r.secret for r in wal_jobs.references(spec())] == ["pg-repl", "pg-repl"]


def test_the_spec_hash_changes_with_the_spec_only() -> None:
    hash_of = wal_jobs.SPEC_HASH
    first = deployment()["metadata"]["annotations"][hash_of]
    assert deployment()["metadata"]["annotations"][hash_of] == first
    assert deployment(spec(partialInterval="7s"))["metadata"]["annotations"][hash_of] != first
    assert deployment(spec(baseBackupRetention=5))["metadata"]["annotations"][hash_of] == first


def test_the_base_backup_job_runs_once_per_tick_without_retry() -> None:
    job = wal_jobs.base_backup_job(
        spec(), namespace="lamassu", policy_name="lamassu", set_time="20261201T120000Z", owner=OWNER
    )
    assert job["kind"] == "Job"
    assert job["metadata"]["name"] == "lamassu-basebackup-20261201t120000z"
    assert job["spec"]["backoffLimit"] == 0
    assert job["spec"]["template"]["spec"]["restartPolicy"] == "Never"
    assert config_of(job).set_time == "20261201T120000Z"
    assert job["metadata"]["labels"]["backup.lamassu.io/role"] == "base-backup"
    assert not any(v["name"] == "spool" for v in job["spec"]["template"]["spec"]["volumes"])


def test_a_base_backup_job_names_its_policy_and_other_jobs_do_not() -> None:
    job = wal_jobs.base_backup_job(
        spec(), namespace="lamassu", policy_name="lamassu", set_time="20261201T120000Z", owner=OWNER
    )
    assert wal_jobs.base_backup_policy(job) == "lamassu"
    assert wal_jobs.base_backup_policy({"metadata": {"labels": {}}}) is None


def test_enabled_only_with_postgres_and_the_flag() -> None:
    assert wal_jobs.enabled(spec())
    assert not wal_jobs.enabled(spec(enabled=False))


NOW = datetime(2026, 12, 1, 12, 30, tzinfo=UTC)
CREATED = datetime(2026, 12, 1, 9, 0, tzinfo=UTC)


def decide(**kw: Any) -> wal_jobs.BaseBackupDecision:
    args: dict[str, Any] = {
        "time_zone": "Etc/UTC",
        "last_tick": datetime(2026, 12, 1, 6, 0, tzinfo=UTC),
        "created_at": CREATED,
        "now": NOW,
        "base_backups": 1,
        "jobs_existing": ["old"],
        "running": [],
        "paused": None,
    } | kw
    wal = spec().components.postgres.wal_archiving  # type: ignore[union-attr]
    return wal_jobs.base_backup_decision(wal, **args)


def test_a_due_tick_starts_a_base_backup_named_after_it() -> None:
    decision = decide()
    assert decision.start == "20261201T120000Z"
    assert decision.watermark == datetime(2026, 12, 1, 12, 0, tzinfo=UTC)
    assert decision.next_due == datetime(2026, 12, 1, 18, 0, tzinfo=UTC)


def test_nothing_due_nothing_started() -> None:
    decision = decide(last_tick=datetime(2026, 12, 1, 12, 0, tzinfo=UTC))
    assert decision.start is None
    assert decision.reason == "NotDue"


def test_the_first_base_backup_starts_at_once_but_a_failed_first_is_not_retried_in_a_loop() -> None:
    last = datetime(2026, 12, 1, 12, 0, tzinfo=UTC)
    first = decide(last_tick=last, base_backups=0, jobs_existing=[])
    assert first.start == "20261201T123000Z"
    assert first.reason == "FirstBaseBackup"
    assert decide(last_tick=last, base_backups=0, jobs_existing=["failed-one"]).start is None


def test_one_at_a_time_and_none_while_a_restore_holds_the_namespace() -> None:
    running = decide(running=["lamassu-basebackup-x"])
    assert running.start is None
    assert running.reason.startswith("Running")
    paused = decide(paused="LamassuRestore r is restoring this namespace")
    assert paused.start is None
    assert paused.reason == "RestoreInProgress"
    assert paused.watermark == datetime(2026, 12, 1, 12, 0, tzinfo=UTC)  # the tick is skipped


def test_shipper_state() -> None:
    made = {"creationTimestamp": "2026-12-01T12:28:00Z"}
    assert wal_jobs.shipper_state({"status": {"availableReplicas": 1}}, None, NOW) == "Available"
    assert wal_jobs.shipper_state({"metadata": made}, None, NOW) == "Starting"
    assert wal_jobs.shipper_state({"metadata": made}, "Available", NOW) == "Unavailable"
    old = {"creationTimestamp": "2026-12-01T10:00:00Z"}
    assert wal_jobs.shipper_state({"metadata": old}, "Starting", NOW) == "Unavailable"
    rolled = {
        "metadata": old,
        "status": {
            "conditions": [
                {
                    "type": "Progressing",
                    "reason": "ReplicaSetUpdated",
                    "lastUpdateTime": "2026-12-01T12:29:00Z",
                }
            ]
        },
    }
    assert wal_jobs.shipper_state(rolled, "Starting", NOW) == "Starting"


def test_the_status_shows_the_window_and_the_age_of_the_recovery_point() -> None:
    records = [seg(n, commit=10.0 * n) for n in range(2, 6)]
    bases = [base("T2", 2, stop=25)]
    window = walb.recovery_window(bases, records)
    now = T0 + timedelta(seconds=100)
    status = wal_jobs.pitr_status(
        window,
        records,
        now=now,
        caught_up_at=T0 + timedelta(seconds=90),
        lag_bytes=4096,
        shipper="Available",
    )
    assert status["recoverableFrom"] == "2026-12-01T10:00:25Z"
    assert status["recoverableUntil"] == "2026-12-01T10:00:50Z"
    assert status["lastShippedWal"] == walb.segment_name(1, 5, SEG)
    assert status["lastShippedAge"] == "10s"
    assert status["baseBackups"] == 1
    assert status["lagBytes"] == 4096
    parsed = BackupPolicyStatus.model_validate({"pointInTimeRecovery": status})
    assert parsed.point_in_time_recovery is not None
    assert parsed.point_in_time_recovery.base_backups == 1


def test_the_recovery_point_is_the_caught_up_time_else_the_last_upload() -> None:
    records = [seg(3, commit=1)]
    assert wal_jobs.recovery_point(records, None) == T0
    later = T0 + timedelta(minutes=3)
    assert wal_jobs.recovery_point(records, later) == later
    assert wal_jobs.recovery_point([], None) is None


def test_the_heartbeat_round_trips() -> None:
    beat = ShipperStatus(updated_at=T0, caught_up_at=T0, lag_bytes=0, receiver_running=True)
    again = ShipperStatus.model_validate_json(beat.model_dump_json(by_alias=True))
    assert again == beat


# -- retention: the chain from the oldest kept base backup to now is never broken -------------


def _after(plan: wal_jobs.WalRetentionPlan, records: list[WalRecord]) -> list[WalRecord]:
    gone = {id(r) for r in plan.wal}
    return [r for r in records if id(r) not in gone]


@pytest.mark.parametrize(("keep", "deleted"), [(1, ["T2", "T5"]), (2, ["T2"]), (3, []), (4, [])])
def test_retention_keeps_the_newest_bases_and_their_whole_chain(
    keep: int, deleted: list[str]
) -> None:
    records = [seg(n, commit=10.0 * n) for n in range(1, 12)]
    records.append(seg(12, commit=125, kind="partial"))
    bases = [base(f"T{s}", s, stop=10.0 * s + 5) for s in (2, 5, 9)]
    plan = wal_jobs.plan_wal_retention(bases, records, keep)
    assert [b.set_time for b in plan.bases] == deleted
    left = _after(plan, records)
    chain = walb.build_chain(left)
    usable, reasons = walb.usable_base_backups(plan.kept, chain)
    assert usable == plan.kept, reasons  # every kept base still restores
    assert len(plan.kept) == 3 - len(deleted)
    oldest = min(walb.parse_segment(b.start_wal, SEG)[1] for b in plan.kept)
    assert chain is not None
    assert chain.missing(oldest) == []
    assert min(walb.parse_segment(r.name, SEG)[1] for r in left) == oldest
    window = walb.recovery_window(plan.kept, left)
    assert window.recoverable_until == T0 + timedelta(seconds=125)
    assert window.recoverable_from == min(b.stop_time for b in plan.kept)


def test_retention_deletes_no_base_while_fewer_than_kept_are_usable() -> None:
    records = [seg(n, commit=10.0 * n) for n in range(1, 6)]
    # the newest base's WAL is not shipped yet: only one usable, two to keep
    bases = [base("T2", 2, stop=25), base("T9", 9, stop=95)]
    plan = wal_jobs.plan_wal_retention(bases, records, 2)
    assert plan.bases == []
    assert [r.name for r in plan.wal] == [walb.segment_name(1, 1, SEG)]  # older than every base


def test_retention_keeps_a_newer_base_whose_wal_is_still_arriving() -> None:
    records = [seg(n, commit=10.0 * n) for n in range(1, 8)]
    bases = [base("T2", 2, stop=25), base("T5", 5, stop=55), base("T9", 9, stop=95)]
    plan = wal_jobs.plan_wal_retention(bases, records, 1)
    assert [b.set_time for b in plan.bases] == ["T2"]
    assert {b.set_time for b in plan.kept} == {"T5", "T9"}
    assert min(walb.parse_segment(r.name, SEG)[1] for r in _after(plan, records)) == 5


def test_record_keys_of_each_kind() -> None:
    segment, partial = seg(3, commit=1), seg(4, commit=2, kind="partial")
    assert wal_jobs.record_key(segment) == f"wal/00000001/{segment.name}.json"
    assert wal_jobs.record_key(partial) == f"wal/00000001/{partial.name}.partial.json"
    history = segment.model_copy(update={"name": "00000002.history", "kind": "history"})
    assert wal_jobs.record_key(history) == "wal/00000001/00000002.history.json"
