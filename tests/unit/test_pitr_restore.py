"""Point-in-time restores through a LamassuRestore: the pure decisions (which restores are one,
which set they still need, what the runner is told, what status shows, how a refusal reads)."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from typing import Any

import pytest

from lamassu_backup.builders import restore_pitr as rpitr
from lamassu_backup.builders import restore_plan as rp
from lamassu_backup.builders.jobs import Owner
from lamassu_backup.builders.restore_jobs import RestoreSource, restore_job
from lamassu_backup.components import registry
from lamassu_backup.components.postgres.wal.pitr_restore import wait_caught_up, whole_databases
from lamassu_backup.errors import ConfigurationError
from lamassu_backup.models.policy import BackupPolicySpec
from lamassu_backup.models.restore import RestoreSpec
from lamassu_backup.models.runner import PointInTimeSettings, RestoreRunConfig

KEY = {"name": "backup-gpg-private", "key": "private.asc"}


def policy(*, wal: bool = True, **postgres: Any) -> BackupPolicySpec:
    return BackupPolicySpec.model_validate(
        {
            "components": {
                "postgres": {
                    "host": "db",
                    "credentialsSecret": {"name": "pg"},
                    "walArchiving": {"enabled": wal},
                    **postgres,
                },
                "vault": {
                    "address": "https://vault:8200",
                    "auth": {"tokenSecret": {"name": "vt", "key": "token"}},
                },
            },
            "destination": {
                "s3": {"bucket": "bkt", "prefix": "prod", "credentialsSecret": {"name": "s3"}}
            },
            "encryption": {"gpg": {"recipientsSecret": {"name": "gpg", "key": "recipients.asc"}}},
        }
    )


def restore(at: str = "2026-12-01T10:30:00Z", **fields: Any) -> RestoreSpec:
    body: dict[str, Any] = {
        "source": {"policyRef": {"name": "lamassu"}, "pointInTime": at},
        "decryptionKeySecret": KEY,
        **fields,
    }
    return RestoreSpec.model_validate(body)


# -- which restores are point-in-time ------------------------------------------------------------


@pytest.mark.parametrize(
    ("spec", "wal", "expected"),
    [
        (restore(), True, True),  # every component by default: postgres included
        (restore(components=["postgres"]), True, True),
        (restore(components=["postgres", "vault"]), True, True),
        (restore(components=["vault"]), True, False),  # postgres not restored
        (restore(), False, False),  # the policy ships no WAL: the dumps, as before
        (
            RestoreSpec.model_validate({"backupRef": {"name": "b1"}, "decryptionKeySecret": KEY}),
            True,
            False,  # a named set is that set, never the archive
        ),
    ],
)
def test_a_restore_is_point_in_time_when_the_policy_ships_wal_and_postgres_is_restored(
    spec: RestoreSpec, wal: bool, expected: bool
) -> None:
    assert rpitr.is_point_in_time(spec, policy(wal=wal)) is expected


def test_no_policy_means_no_archive() -> None:
    assert not rpitr.is_point_in_time(restore(), None)


def test_postgres_alone_needs_no_set_the_others_come_from_the_newest_set_before_the_target() -> (
    None
):
    assert rpitr.set_needs(restore(components=["postgres"])) is None
    assert rpitr.set_needs(restore(components=["postgres", "vault"])) == ["vault"]
    # Nothing named: a full run, as choose_backup decides for a restore of everything.
    assert rpitr.set_needs(restore()) == []
    sets = [
        rp.Candidate("before", "Completed", datetime(2026, 12, 1, 10, tzinfo=UTC), "s3://b/1/"),
        rp.Candidate("after", "Completed", datetime(2026, 12, 1, 11, tzinfo=UTC), "s3://b/2/"),
    ]
    target = datetime(2026, 12, 1, 10, 30, tzinfo=UTC)
    assert rp.choose_backup(sets, target, rpitr.set_needs(restore()) or []) == "before"


def test_postgres_alone_resolves_to_the_archive_and_is_confirmed_by_the_policy_name() -> None:
    source = rpitr.source_status(
        restore(components=["postgres"]),
        policy(),
        "lamassu",
        "lamassu",
        datetime(2026, 12, 1, 10, 30, tzinfo=UTC),
    )
    assert source.archive == "s3://bkt/prod/lamassu/lamassu/"
    resolved = rpitr.archive_only(source, "lamassu")
    assert resolved.name is None
    assert resolved.components == ["postgres"]
    assert rp.confirm_name(resolved.name, resolved.location) == "lamassu"
    api = resolved.to_api()
    assert api["pointInTime"]["requested"] == "2026-12-01T10:30:00Z"
    assert api["pointInTime"]["target"] == "2026-12-01T10:30:00Z"


# -- what the runner is told ---------------------------------------------------------------------


def test_the_runner_gets_the_archive_prefix_the_target_and_the_policys_databases() -> None:
    settings = rpitr.run_settings(restore(at="latest"), policy(), "lamassu", "lamassu")
    assert settings == PointInTimeSettings(
        archive_prefix="prod/lamassu/lamassu/",
        point_in_time="latest",
        databases=["ca", "devicemanager", "dmsmanager", "alerts", "va", "kms"],
    )
    one = rpitr.run_settings(
        restore(), policy(layout="Schemas", database="lamassu"), "lamassu", "lamassu"
    )
    assert one.databases == ["lamassu"]


def test_the_plan_job_carries_the_point_in_time_settings() -> None:
    spec = restore(mode="InPlace", confirm="lamassu-20261201t100000z")
    pol = policy()
    job = restore_job(
        spec,
        RestoreSource(
            "s3://bkt/prod/lamassu/lamassu/20261201T100000Z/",
            "lamassu-20261201t100000z",
            pol,
            rpitr.run_settings(spec, pol, "lamassu", "lamassu"),
        ),
        namespace="lamassu",
        restore="r1",
        step="plan",
        components=["postgres", "vault"],
        swap_suffix=None,
        owner=Owner("backup.lamassu.io/v1alpha1", "LamassuRestore", "r1", "uid"),
    )
    env = {e["name"]: e["value"] for e in job["spec"]["template"]["spec"]["containers"][0]["env"]}
    cfg = RestoreRunConfig.model_validate_json(env["LAMASSU_RESTORE_CONFIG"])
    assert cfg.pitr is not None
    assert cfg.pitr.archive_prefix == "prod/lamassu/lamassu/"
    assert cfg.pitr.point_in_time == "2026-12-01T10:30:00Z"
    assert cfg.set_prefix == "prod/lamassu/lamassu/20261201T100000Z/"


def run_config(**fields: Any) -> RestoreRunConfig:
    base: dict[str, Any] = {
        "namespace": "n",
        "restore": "r",
        "source": {"bucket": "b"},
        "setPrefix": "p/",
        "decryptionKeyFile": "/k",
    }
    return RestoreRunConfig.model_validate({**base, **fields})


def test_the_runner_loads_the_point_in_time_hooks_only_for_a_point_in_time_restore() -> None:
    postgres = registry.get("postgres")
    dumps = run_config()
    pitr = run_config(pitr={"archivePrefix": "p/"})
    assert postgres.restore_module(dumps) == "lamassu_backup.components.postgres.restore"
    assert postgres.restore_module(pitr) == "lamassu_backup.components.postgres.wal.pitr_restore"
    assert registry.get("vault").restore_module(pitr).endswith("vault.restore")


def test_a_point_in_time_restore_brings_back_whole_databases_only() -> None:
    pitr = {"archivePrefix": "p/", "databases": ["ca", "kms"]}
    assert whole_databases(run_config(pitr=pitr)) == ["ca", "kms"]
    assert whole_databases(run_config(pitr=pitr, databases=["va"])) == ["va"]
    with pytest.raises(ConfigurationError, match=r"whole databases.*not <database>\.<schema>"):
        whole_databases(run_config(pitr=pitr, databases=["lamassu.ca"]))


# -- what status shows ---------------------------------------------------------------------------


def test_status_takes_the_base_backup_window_and_target_from_the_runners_evidence() -> None:
    source = rpitr.source_status(restore(at="latest"), policy(), "lamassu", "lamassu", None)
    assert source.target is None
    evidence = {
        "pitr": {
            "requested": "latest",
            "target": None,
            "baseBackup": "20261201T020000Z",
            "walFiles": 42,
            "recoverableFrom": "2026-12-01T02:00:13+00:00",
            "recoverableUntil": "2026-12-01T10:41:07+00:00",
            "lastShippedWal": "00000001000000A3000000F2",
            "archiveAfter": "WAL shipping continues ...",
        }
    }
    updated = rpitr.with_evidence(source, evidence)
    assert updated.base_backup == "20261201T020000Z"
    assert updated.wal_files == 42
    assert updated.recoverable_from == datetime(2026, 12, 1, 2, 0, 13, tzinfo=UTC)
    assert updated.recoverable_until == datetime(2026, 12, 1, 10, 41, 7, tzinfo=UTC)
    assert updated.last_shipped_wal == "00000001000000A3000000F2"
    assert updated.archive_after
    assert updated.target is None  # latest: everything shipped
    # A later step without the evidence (a failed one) keeps what was known.
    assert rpitr.with_evidence(updated, {}) == updated
    assert rpitr.with_evidence(updated, {"pitr": "garbage"}) == updated


def test_a_refused_point_in_time_says_so_and_a_damaged_set_still_says_it_did_not_verify() -> None:
    window = (
        "spec.source.pointInTime 2026-12-01T12:00:00Z: point in time 2026-12-01T12:00:00+00:00 is "
        "after the last shipped commit: the recoverable window is from 2026-12-01T02:00:13+00:00 "
        "until 2026-12-01T10:41:07+00:00; pick a time inside it (or 'latest')"
    )
    reason, message = rpitr.planning_failure("OutsideRecoverableWindow", window)
    assert reason == "OutsideRecoverableWindow"
    assert message.startswith("refused before anything was done, nothing was changed: ")
    assert "from 2026-12-01T02:00:13+00:00 until 2026-12-01T10:41:07+00:00" in message
    assert "spec.source.pointInTime" in message
    reason, message = rpitr.planning_failure("IntegrityError", "checksum mismatch")
    assert (reason, message) == (
        "IntegrityError",
        "the set did not verify, nothing was changed: checksum mismatch",
    )
    assert rpitr.planning_failure(None, None)[0] == "VerificationFailed"


# -- latest, in place: the shipper catches up first -------------------------------------------


def test_latest_in_place_waits_until_the_archive_holds_what_the_server_had() -> None:
    since = datetime(2026, 12, 1, 10, 0, tzinfo=UTC)
    beats = iter([None, since - timedelta(seconds=5), since + timedelta(seconds=1)])
    slept: list[float] = []
    reached, seen = wait_caught_up(lambda: next(beats), since, sleep=slept.append)
    assert reached
    assert seen == since + timedelta(seconds=1)
    assert slept == [1.0, 1.0]


def test_a_shipper_that_is_gone_holds_a_disaster_recovery_up_only_briefly() -> None:
    since = datetime(2026, 12, 1, 10, 0, tzinfo=UTC)
    stale = since - timedelta(minutes=3)
    slept: list[float] = []
    reached, seen = wait_caught_up(lambda: stale, since, timeout=5, sleep=slept.append)
    assert not reached
    assert seen == stale
    assert sum(slept) == 5
