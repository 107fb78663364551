"""The LamassuRestore controller's pure decisions: phases, source choice, the namespace lock,
workload order and replicas, evidence checks, names, and the schema rules of issue 10."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from typing import Any

import pytest
from pydantic import ValidationError

from lamassu_backup.builders import restore_plan as rp
from lamassu_backup.builders.jobs import Owner
from lamassu_backup.builders.restore_jobs import RestoreSource, restore_job
from lamassu_backup.models.policy import BackupPolicySpec
from lamassu_backup.models.restore import RestorePhase as P
from lamassu_backup.models.restore import RestoreSpec
from lamassu_backup.models.runner import RestoreRunConfig

KEY = {"name": "backup-gpg-private", "key": "private.asc"}
T0 = datetime(2026, 11, 24, 10, 0, tzinfo=UTC)


def spec(**fields: Any) -> RestoreSpec:
    body: dict[str, Any] = {"backupRef": {"name": "b1"}, "decryptionKeySecret": KEY, **fields}
    return RestoreSpec.model_validate(body)


def in_place(**fields: Any) -> RestoreSpec:
    return spec(mode="InPlace", confirm="b1", **fields)


WORKLOADS = {"selector": {"matchLabels": {"app.kubernetes.io/part-of": "lamassu"}}}


# -- phases -------------------------------------------------------------------------------------


def test_in_place_walks_every_phase_in_order() -> None:
    s = in_place(workloads=WORKLOADS)
    seen = [P.PENDING]
    while seen[-1] not in rp.DONE:
        seen.append(rp.next_phase(s, seen[-1]))
    assert seen == [
        P.PENDING,
        P.PLANNING,
        P.PAUSING_BACKUPS,
        P.PRE_RESTORE_BACKUP,
        P.SCALING_DOWN,
        P.RESTORING,
        P.VALIDATING,
        P.SCALING_UP,
        P.COMPLETED,
    ]


def test_dry_run_stops_at_planned() -> None:
    s = in_place(dryRun=True, workloads=WORKLOADS)
    assert rp.steps(s) == [P.PLANNING]
    assert rp.next_phase(s, P.PLANNING) == P.PLANNED


def test_no_pre_restore_backup_and_no_workloads_skip_their_phases() -> None:
    s = in_place(preRestoreBackup=False)
    assert rp.steps(s) == [P.PLANNING, P.PAUSING_BACKUPS, P.RESTORING, P.VALIDATING]


def test_drill_never_scales_backs_up_or_pauses() -> None:
    s = spec(mode="Drill", workloads=WORKLOADS)
    assert rp.steps(s) == [P.PLANNING, P.RESTORING]
    assert rp.next_phase(s, P.PLANNING) == P.RESTORING
    assert rp.next_phase(s, P.RESTORING) == P.COMPLETED


def test_only_in_place_restores_and_dry_runs_run_the_plan_job() -> None:
    """The set verifies before anything live changes: in place that is before the pre-restore
    backup and the scale-down, so Planning verifies it; a drill's own Job verifies it first."""
    assert rp.plan_job_needed(in_place())
    assert rp.plan_job_needed(spec(mode="Drill", dryRun=True))
    assert not rp.plan_job_needed(spec(mode="Drill"))


@pytest.mark.parametrize(
    ("phase", "scaled", "swapped", "expected"),
    [
        (P.PLANNING, False, False, P.FAILED),
        (P.PRE_RESTORE_BACKUP, False, False, P.FAILED),
        (P.SCALING_DOWN, True, False, P.SCALING_UP),
        (P.RESTORING, True, False, P.SCALING_UP),
        (P.RESTORING, False, False, P.FAILED),
        (P.VALIDATING, True, True, P.ROLLING_BACK),
        (P.VALIDATING, False, True, P.ROLLING_BACK),
    ],
)
def test_a_failure_rolls_back_then_scales_back(
    phase: P, scaled: bool, swapped: bool, expected: P
) -> None:
    assert rp.failure_path(in_place(), phase, scaled=scaled, swapped=swapped) == expected


# -- source ------------------------------------------------------------------------------------


def cand(name: str, hours: int, phase: str = "Completed") -> rp.Candidate:
    return rp.Candidate(name, phase, T0 + timedelta(hours=hours), f"s3://b/{name}/")


def test_point_in_time_picks_the_newest_completed_set_at_or_before_it() -> None:
    sets = [cand("a", 0), cand("b", 1), cand("c", 2, "Failed"), cand("d", 3)]
    assert rp.choose_backup(sets, None) == "d"
    assert rp.choose_backup(sets, T0 + timedelta(hours=2, minutes=30)) == "b"
    assert rp.choose_backup(sets, T0 + timedelta(hours=1)) == "b"
    assert rp.choose_backup(sets, T0 - timedelta(seconds=1)) is None
    assert rp.choose_backup([cand("r", 0, "Running")], None) is None


def test_confirm_names_the_backup_or_the_bare_sets_folder() -> None:
    assert rp.confirm_name("good", "s3://b/p/ns/pol/20261124T100000Z-ab/") == "good"
    assert rp.confirm_name(None, "s3://b/p/ns/pol/20261124T100000Z-ab/") == "20261124T100000Z-ab"


def test_in_place_restores_everything_in_the_set_by_default() -> None:
    """Config and the key volumes too: a filesystem engine's keys live on the kms volume, so a
    restore of the databases alone would bring back CAs whose keys are gone."""
    everything = ["awsKms", "volumes", "config", "vault", "postgres"]
    assert rp.restore_components(in_place(), everything) == [
        "postgres",
        "vault",
        "config",
        "volumes",
        "awsKms",
    ]
    assert rp.restore_components(in_place(), ["postgres", "vault"]) == ["postgres", "vault"]
    assert rp.restore_components(in_place(components=["postgres"]), everything) == ["postgres"]


def test_a_drill_leaves_configuration_out() -> None:
    drill = spec(mode="Drill")
    assert rp.restore_components(drill, ["config", "postgres", "volumes"]) == [
        "postgres",
        "volumes",
    ]


def test_a_bare_set_restores_what_has_a_target_and_the_configuration() -> None:
    target = {"postgres": {"host": "pg", "credentialsSecret": {"name": "pg"}}}
    bare = rp.restore_components(in_place(target=target), [], bare_set=True)
    assert bare == ["postgres", "config"]
    assert rp.restore_components(in_place(), [], bare_set=True) == ["config"]


# -- one restore at a time -------------------------------------------------------------------


def ref(name: str, phase: str, minutes: int, dry: bool = False) -> rp.RestoreRef:
    return rp.RestoreRef(name, phase, T0 + timedelta(minutes=minutes), dry)


def test_a_restore_waits_for_the_one_holding_the_namespace() -> None:
    me = ref("second", "Planning", 5)
    assert rp.blocking_restore(me, [ref("first", "Restoring", 10), me]) == "first"
    assert rp.blocking_restore(me, [ref("first", "Completed", 0), me]) is None


def test_among_waiting_restores_the_oldest_goes_first() -> None:
    old, new = ref("old", "Planning", 0), ref("new", "Planning", 1)
    assert rp.blocking_restore(new, [old, new]) == "old"
    assert rp.blocking_restore(old, [old, new]) is None


def test_drills_never_block_and_wait_only_for_an_in_place_restore_at_work() -> None:
    drill = rp.RestoreRef("drill", "Restoring", T0, False, drill=True)
    me = ref("me", "Planning", 5)
    assert rp.blocking_restore(me, [drill, me]) is None
    waiting_drill = rp.RestoreRef("d", "Planning", T0 + timedelta(minutes=6), False, drill=True)
    assert rp.blocking_restore(waiting_drill, [ref("x", "ScalingDown", 0), waiting_drill]) == "x"
    # Never behind an in-place restore that waits itself (or the two could wait on each other).
    assert rp.blocking_restore(waiting_drill, [me, waiting_drill]) is None


def test_dry_runs_neither_wait_nor_block() -> None:
    dry = ref("dry", "Planning", 0, dry=True)
    me = ref("me", "Planning", 1)
    assert rp.blocking_restore(me, [dry, me]) is None
    assert rp.blocking_restore(dry, [ref("x", "Restoring", 0), dry]) is None


# -- workloads ---------------------------------------------------------------------------------


def wl(name: str, kind: str = "Deployment", replicas: int = 1, **ann: str) -> rp.Workload:
    return rp.Workload(kind, name, replicas, replicas, {}, dict(ann))


def test_api_services_stop_first_and_kms_last_and_start_in_reverse() -> None:
    found = [wl("kms"), wl("ca"), wl("va"), wl("db", "StatefulSet"), wl("device-manager")]
    down = [w.name for w in rp.scale_down_order(found)]
    assert down == ["ca", "device-manager", "va", "db", "kms"]
    assert [w.name for w in rp.scale_up_order(found)] == list(reversed(down))


def test_workloads_stop_in_groups_api_services_together_kms_alone_last() -> None:
    found = [wl("kms"), wl("ca"), wl("va"), wl("db", "StatefulSet"), wl("device-manager")]
    groups = [[w.name for w in g] for g in rp.stop_groups(found)]
    assert groups == [["ca", "device-manager", "va"], ["db"], ["kms"]]
    assert rp.stop_groups([]) == []


def test_replicas_recorded_on_an_earlier_pass_survive_a_restart() -> None:
    assert rp.recorded_replicas(wl("ca", replicas=3), "r1") == 3
    already = wl("ca", replicas=0, **{rp.SCALED_BY_ANNOTATION: "r1", rp.REPLICAS_ANNOTATION: "3"})
    assert rp.recorded_replicas(already, "r1") == 3
    # Another restore's marks are not ours to trust.
    assert rp.recorded_replicas(already, "r2") == 0


# -- validation --------------------------------------------------------------------------------


def test_evidence_problems() -> None:
    good = {"postgres": {"ca": {"verified": True}}, "keyConsistency": {"missing": []}}
    assert rp.evidence_problems(good, ["postgres", "vault"]) == []
    assert rp.evidence_problems({}, ["postgres"]) == ["the runner reported no PostgreSQL evidence"]
    bad = {"postgres": {"ca": {"verified": False}}, "keyConsistency": {"missing": ["k1"]}}
    assert len(rp.evidence_problems(bad, ["postgres"])) == 2
    assert rp.evidence_problems({}, ["vault"]) == []


# -- names and Jobs ----------------------------------------------------------------------------


def test_names_are_deterministic_and_bounded() -> None:
    long = "r" * 200
    assert rp.job_name("r1", "restore") == "r1-restore"
    assert rp.job_name(long, "restore") == rp.job_name(long, "restore")
    assert len(rp.job_name(long, "restore")) <= 63
    assert rp.pre_restore_backup_name("r1", "0a1b2c3d-4e5f") == "r1-prerestore-0a1b2c3d"
    assert rp.pre_restore_backup_name("r1", "99999999-0000") != rp.pre_restore_backup_name(
        "r1", "0a1b2c3d-4e5f"
    )
    assert rp.swap_suffix(T0) == "20261124100000"


POLICY = BackupPolicySpec.model_validate(
    {
        "components": {
            "postgres": {"host": "db", "credentialsSecret": {"name": "pg"}},
            "vault": {
                "address": "https://vault:8200",
                "auth": {"tokenSecret": {"name": "vt", "key": "token"}},
            },
        },
        "destination": {"s3": {"bucket": "bkt", "credentialsSecret": {"name": "s3"}}},
        "encryption": {"gpg": {"recipientsSecret": {"name": "gpg", "key": "recipients.asc"}}},
    }
)


def test_the_restore_job_runs_the_runner_with_files_only() -> None:
    job = restore_job(
        in_place(),
        RestoreSource("s3://bkt/local/ns/lamassu/20261124T100000Z/", "b1", POLICY),
        namespace="ns",
        restore="r1",
        step="restore",
        components=["postgres", "vault"],
        swap_suffix="20261124100000",
        owner=Owner("backup.lamassu.io/v1alpha1", "LamassuRestore", "r1", "uid"),
    )
    assert job["metadata"]["name"] == "r1-restore"
    assert job["metadata"]["labels"][rp.LABEL_RESTORE] == "r1"
    assert job["spec"]["backoffLimit"] == 0
    container = job["spec"]["template"]["spec"]["containers"][0]
    assert container["command"] == ["lamassu-backup", "runner", "restore"]
    env = {e["name"]: e["value"] for e in container["env"]}
    cfg = RestoreRunConfig.model_validate_json(env["LAMASSU_RESTORE_CONFIG"])
    assert cfg.mode == "InPlace"
    assert cfg.step == "restore"
    assert cfg.set_prefix == "local/ns/lamassu/20261124T100000Z/"
    assert cfg.source.bucket == "bkt"
    assert cfg.swap_suffix == "20261124100000"
    assert cfg.postgres is not None
    assert cfg.postgres.password_file.startswith("/var/run/lamassu-backup/secrets/pg/")
    assert cfg.vault is not None
    assert cfg.vault.token_file
    assert cfg.require_signature is True


# -- schema rules (issue 10) --------------------------------------------------------------------


@pytest.mark.parametrize(
    "value",
    ["2026-13-45T99:99:99Z", "2026-02-30T10:00:00Z", "2026-11-24T10:00:00", "yesterday", ""],
)
def test_point_in_time_must_be_a_real_rfc3339_time(value: str) -> None:
    with pytest.raises(ValidationError, match="pointInTime must be latest or an RFC 3339"):
        RestoreSpec.model_validate(
            {
                "decryptionKeySecret": KEY,
                "source": {"policyRef": {"name": "p"}, "pointInTime": value},
            }
        )


@pytest.mark.parametrize(
    "value",
    ["latest", "2026-11-24T10:00:00Z", "2026-11-24T10:00:00.5+01:00", "2024-02-29t00:00:00z"],
)
def test_point_in_time_accepts_latest_and_times(value: str) -> None:
    RestoreSpec.model_validate(
        {"decryptionKeySecret": KEY, "source": {"policyRef": {"name": "p"}, "pointInTime": value}}
    )


@pytest.mark.parametrize("name", ["", "; DROP DATABASE ca", "ca;", "1ca", "a" * 64, 'c"a'])
def test_database_names_must_be_identifiers(name: str) -> None:
    with pytest.raises(ValidationError, match="must be a PostgreSQL identifier"):
        spec(databases=["ca", name])


def test_database_names_accept_identifiers_and_schemas() -> None:
    assert spec(databases=["ca", "device_manager", "lamassu.ca", "_x$"]).databases


@pytest.mark.parametrize("ns", ["Bad NS!", "-a", "a-", "UPPER", "a" * 64, ""])
def test_target_namespace_must_be_a_dns_label(ns: str) -> None:
    with pytest.raises(ValidationError, match=r"must be a namespace name|at most 63 characters"):
        spec(target={"namespace": ns})


def test_finalize_after_defaults_to_an_hour() -> None:
    assert in_place().finalize_after == timedelta(hours=1)


# -- the pause and retention hooks ---------------------------------------------------------------


class FakeKube:
    def __init__(self, restores: list[dict[str, Any]]) -> None:
        self.restores = restores

    def list_custom(self, kind: str, namespace: str) -> list[dict[str, Any]]:
        assert kind == "LamassuRestore"
        return self.restores


def lrs(name: str, phase: str, **status: Any) -> dict[str, Any]:
    return {
        "metadata": {"name": name},
        "spec": {"mode": status.pop("mode", "InPlace"), "backupRef": {"name": f"{name}-set"}},
        "status": {"phase": phase, **status},
    }


def test_backups_pause_only_while_a_restore_holds_the_namespace() -> None:
    from lamassu_backup.services import restore_guard

    for phase in ("Pending", "Planning", "Planned", "Completed", "Failed", "RolledBack"):
        assert restore_guard.pause_reason(FakeKube([lrs("r", phase)]), "ns") is None  # type: ignore[arg-type]
    for phase in ("PausingBackups", "PreRestoreBackup", "ScalingDown", "Restoring", "ScalingUp"):
        reason = restore_guard.pause_reason(FakeKube([lrs("r", phase)]), "ns")  # type: ignore[arg-type]
        assert reason is not None
        assert "LamassuRestore r" in reason
        # A drill pauses nothing: a scheduled drill must not stop the backups.
        drill = lrs("d", phase, mode="Drill")
        assert restore_guard.pause_reason(FakeKube([drill]), "ns") is None  # type: ignore[arg-type]


def test_retention_keeps_the_restored_and_the_safety_sets() -> None:
    from lamassu_backup.services import restore_guard

    kube = FakeKube(
        [
            lrs("active", "Restoring", preRestoreBackup="active-prerestore"),
            lrs("done", "Completed", finalizedAt="2026-11-24T10:00:00Z"),
            lrs("unfinalized", "Completed", swapSuffix="x"),
            lrs("rolled", "RolledBack", preRestoreBackup="rolled-prerestore"),
        ]
    )
    protected = restore_guard.protected_sets(kube, "ns")  # type: ignore[arg-type]
    assert protected == {
        "active-set",
        "active-prerestore",
        "unfinalized-set",
        "rolled-prerestore",
    }


def test_health_check_urls_lose_their_credentials() -> None:
    from lamassu_backup.services.restores import _redact_url

    assert _redact_url("https://user:pw@ca.lamassu.svc/health") == "https://ca.lamassu.svc/health"
    assert _redact_url("http://ca:8085/health") == "http://ca:8085/health"


def test_latest_never_picks_a_config_only_set_for_a_full_restore() -> None:
    """A ConfigMap change makes a config-only set a minute after the hourly full backup: a
    restore of "latest" must still get the databases (the kubectl plugin chooses the same)."""
    from datetime import UTC, datetime

    from lamassu_backup.builders.restore_plan import Candidate, choose_backup

    full = Candidate(
        "full",
        "Completed",
        datetime(2026, 12, 1, 10, tzinfo=UTC),
        "s3://b/f/",
        frozenset({"postgres", "vault", "config"}),
    )
    config_only = Candidate(
        "config-only",
        "Completed",
        datetime(2026, 12, 1, 10, 1, tzinfo=UTC),
        "s3://b/c/",
        frozenset({"config"}),
        subset=True,
    )
    assert choose_backup([full, config_only], None) == "full"
    assert choose_backup([full, config_only], None, ["config"]) == "config-only"
    assert choose_backup([full, config_only], None, ["postgres"]) == "full"
    assert choose_backup([config_only], None) is None
    assert choose_backup([full, config_only], datetime(2026, 12, 1, 9, tzinfo=UTC)) is None


# -- a runner Job's end, from its Pod ------------------------------------------------------------


class PodsKube:
    def __init__(self, pods: list[dict[str, Any]]) -> None:
        self.pods = pods

    def job_pods(self, namespace: str, job_name: str) -> list[dict[str, Any]]:
        return self.pods


def runner_job(backoff: int = 0) -> dict[str, Any]:
    return {
        "metadata": {"name": "r-restore", "namespace": "ns"},
        "spec": {"backoffLimit": backoff},
        "status": {"active": 1},
    }


def pod(exit_code: int | None, message: str = "") -> dict[str, Any]:
    state = (
        {"running": {}}
        if exit_code is None
        else {"terminated": {"exitCode": exit_code, "message": message}}
    )
    return {"metadata": {}, "status": {"containerStatuses": [{"state": state}]}}


def test_a_runner_that_reported_and_exited_is_done_before_the_job_controller_says_so() -> None:
    from lamassu_backup.services.job_state import ended_pod_state

    ok = '{"ok": true, "action": "restore", "evidence": {"postgres": {"ca": {}}}}'
    failed = '{"ok": false, "action": "restore", "error": "bad checksum", "reason": "Integrity"}'

    def state(job: dict[str, Any], *pods: dict[str, Any]) -> Any:
        return ended_pod_state(PodsKube(list(pods)), job)  # type: ignore[arg-type]

    done = state(runner_job(), pod(0, ok))
    assert done is not None
    assert (done.done, done.ok, done.result.evidence["postgres"]) == (True, True, {"ca": {}})
    bad = state(runner_job(), pod(1, failed))
    assert bad is not None
    assert (bad.ok, bad.reason, bad.message) == (False, "Integrity", "bad checksum")
    # Still running, no result written, or a Job that may retry: the Job's conditions decide.
    assert state(runner_job(), pod(None)) is None
    assert state(runner_job(), pod(137)) is None
    assert state(runner_job(), pod(0, failed)) is None
    assert state(runner_job(backoff=2), pod(0, ok)) is None


def test_a_bare_set_takes_its_runner_settings_from_the_restore() -> None:
    """No policy to take them from: spec.runner gives the image and the scratch size; the
    account that writes live config is still the restore account."""
    bare = RestoreSpec.model_validate(
        {
            "source": {"s3": {"bucket": "bkt", "path": "local/ns/lamassu/20261124T100000Z/"}},
            "mode": "InPlace",
            "confirm": "20261124T100000Z",
            "decryptionKeySecret": KEY,
            "target": {"postgres": {"host": "pg", "credentialsSecret": {"name": "pg"}}},
            "runner": {"image": "registry.local/runner:1", "scratch": {"sizeLimit": "20Gi"}},
        }
    )
    job = restore_job(
        bare,
        RestoreSource("s3://bkt/local/ns/lamassu/20261124T100000Z/", None, None),
        namespace="ns",
        restore="r1",
        step="restore",
        components=["postgres", "config"],
        swap_suffix="20261124100000",
        owner=Owner("backup.lamassu.io/v1alpha1", "LamassuRestore", "r1", "uid"),
    )
    pod = job["spec"]["template"]["spec"]
    assert pod["containers"][0]["image"] == "registry.local/runner:1"
    scratch = next(v for v in pod["volumes"] if v["name"] == "scratch")
    assert scratch["emptyDir"]["sizeLimit"] == "20Gi"
    assert pod["serviceAccountName"] == "lamassu-backup-restore"
