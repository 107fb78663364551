"""The shipper's replication slot once the shipper goes: the drop Job copied from the shipper,
the decision of what to do next, and which slot is whose. Pure side of services/wal_slot."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from typing import Any

import pytest
from test_wal_jobs import OWNER, config_of, deployment, mounted, spec  # type: ignore[import-not-found]

from lamassu_backup.builders import jobs, wal_jobs
from lamassu_backup.cli import build_parser

NOW = datetime(2026, 12, 1, 12, 0, tzinfo=UTC)


def drop_job(source: dict[str, Any] | None = None, attempt: int = 1) -> dict[str, Any]:
    return wal_jobs.drop_slot_job(source or deployment(), policy_name="lamassu", attempt=attempt)


def test_the_drop_job_is_the_shippers_pod_running_the_drop_once() -> None:
    shipper = deployment()
    job = drop_job(shipper, attempt=2)
    pod = job["spec"]["template"]["spec"]
    container = pod["containers"][0]
    assert job["kind"] == "Job"
    assert job["metadata"]["name"] == "lamassu-wal-dropslot-2"
    assert job["metadata"]["annotations"][wal_jobs.ATTEMPT] == "2"
    assert container["command"] == ["lamassu-backup", "runner", "wal-drop-slot"]
    assert pod["restartPolicy"] == "Never"
    assert job["spec"]["backoffLimit"] == 1
    assert job["spec"]["activeDeadlineSeconds"] == wal_jobs.DROP_DEADLINE_SECONDS
    # exactly the shipper's configuration (server, slot) and credentials (the replication role)
    assert config_of(job) == config_of(shipper)
    assert config_of(job).slot_name == "lamassu_pitr"
    assert mounted(job) == mounted(shipper)
    assert container["image"] == shipper["spec"]["template"]["spec"]["containers"][0]["image"]
    assert container["securityContext"]["readOnlyRootFilesystem"] is True
    assert pod["nodeSelector"] == {"pool": "backup"}
    # no spool: the drop writes nothing
    assert "spool" not in [v["name"] for v in pod["volumes"]]
    assert "spool" not in [m["name"] for m in container["volumeMounts"]]
    # owned by the policy, and not a shipper Pod (the wait for the shipper's Pods must not see it)
    assert job["metadata"]["ownerReferences"] == [OWNER.reference()]
    labels = job["spec"]["template"]["metadata"]["labels"]
    assert labels[jobs.LABEL_ROLE] == wal_jobs.ROLE_DROP_SLOT
    assert job["metadata"]["labels"][jobs.LABEL_ROLE] == wal_jobs.ROLE_DROP_SLOT
    assert job["metadata"]["labels"]["app.kubernetes.io/managed-by"] == jobs.MANAGED_BY
    # the shipper itself is untouched (a copy)
    assert shipper["spec"]["template"]["spec"]["restartPolicy"] == "Always"
    assert wal_jobs.base_backup_policy(job) == "lamassu"


def test_a_retry_copied_from_the_previous_try_drops_the_job_controllers_labels() -> None:
    first = drop_job()
    for labels in (first["metadata"]["labels"], first["spec"]["template"]["metadata"]["labels"]):
        labels.update(
            {"controller-uid": "u1", "batch.kubernetes.io/job-name": first["metadata"]["name"]}
        )
    first["spec"]["selector"] = {"matchLabels": {"controller-uid": "u1"}}
    second = drop_job(first, attempt=2)
    for labels in (second["metadata"]["labels"], second["spec"]["template"]["metadata"]["labels"]):
        assert "controller-uid" not in labels
        assert "batch.kubernetes.io/job-name" not in labels
    assert "selector" not in second["spec"]
    assert config_of(second) == config_of(first)


def test_the_slot_is_read_from_the_shippers_own_configuration() -> None:
    target = wal_jobs.slot_target(deployment())
    assert target == wal_jobs.SlotTarget("db", 5432, "lamassu_pitr")
    assert target.describe() == "replication slot lamassu_pitr on db:5432"
    assert wal_jobs.slot_target(drop_job()) == target
    assert wal_jobs.slot_target({"spec": {"template": {"spec": {"containers": [{}]}}}}) is None
    bad = deployment()
    bad["spec"]["template"]["spec"]["containers"][0]["env"][0]["value"] = "{not json"
    assert (
        bad["spec"]["template"]["spec"]["containers"][0]["env"][0]["name"] == "LAMASSU_WAL_CONFIG"
    )
    assert wal_jobs.slot_target(bad) is None


def test_scaled_down_keeps_the_shipper_as_the_record_and_a_re_enable_replaces_it() -> None:
    shipper = deployment()
    down = wal_jobs.scaled_down(shipper)
    assert down["spec"]["replicas"] == 0
    assert shipper["spec"]["replicas"] == 1
    assert wal_jobs.slot_target(down) == wal_jobs.slot_target(shipper)
    assert down["metadata"]["ownerReferences"] == shipper["metadata"]["ownerReferences"]
    wanted = shipper["metadata"]["annotations"][wal_jobs.SPEC_HASH]
    assert down["metadata"]["annotations"][wal_jobs.SPEC_HASH] != wanted


def test_the_keep_annotation() -> None:
    assert wal_jobs.keep_slot({wal_jobs.KEEP_SLOT: "true"})
    assert wal_jobs.keep_slot({wal_jobs.KEEP_SLOT: " True "})
    assert not wal_jobs.keep_slot({wal_jobs.KEEP_SLOT: "false"})
    assert not wal_jobs.keep_slot({wal_jobs.KEEP_SLOT: "yes-please"})
    assert not wal_jobs.keep_slot({})


def policy_body(**over: Any) -> dict[str, Any]:
    wal = {"enabled": True, "slotName": "lamassu_pitr", **over.pop("wal", {})}
    pg = {"host": "db", "walArchiving": wal, **over.pop("pg", {})}
    return {
        "metadata": {"namespace": "other", "name": "b", **over},
        "spec": {"components": {"postgres": pg}},
    }


def test_a_slot_another_live_policy_ships_through_is_shared() -> None:
    target = wal_jobs.SlotTarget("db", 5432, "lamassu_pitr")
    assert wal_jobs.shares_slot(policy_body(), target)
    assert not wal_jobs.shares_slot(policy_body(wal={"enabled": False}), target)
    assert not wal_jobs.shares_slot(policy_body(wal={"slotName": "x"}), target)
    assert not wal_jobs.shares_slot(policy_body(pg={"host": "db2"}), target)
    assert not wal_jobs.shares_slot(policy_body(pg={"port": 5433}), target)
    assert not wal_jobs.shares_slot(policy_body(deletionTimestamp="2026-12-01T00:00:00Z"), target)
    default = wal_jobs.SlotTarget("db", 5432, "lamassu_backup")
    assert wal_jobs.shares_slot(policy_body(wal={"slotName": None}), default)
    assert not wal_jobs.shares_slot({"spec": {}}, default)


def decide(**kw: Any) -> wal_jobs.SlotDropDecision:
    args: dict[str, Any] = {
        "keep": False,
        "replicas": 0,
        "shipper_pods": 0,
        "drop": None,
        "now": NOW,
    }
    args.update(kw)
    return wal_jobs.slot_drop_decision(**args)


def tried(
    attempt: int = 1, *, done: bool = True, ok: bool = False, ago: float = 0
) -> wal_jobs.DropTry:
    return wal_jobs.DropTry(attempt, done, ok, NOW - timedelta(seconds=ago) if done else None)


def test_nothing_to_drop_without_a_shipper_or_a_try() -> None:
    assert decide(replicas=None).action == "none"
    assert decide(replicas=None, keep=True).action == "none"


def test_the_keep_annotation_wins_at_every_step() -> None:
    for kw in ({"replicas": 1}, {"shipper_pods": 1}, {"drop": tried(ok=True)}, {"drop": tried()}):
        assert decide(keep=True, **kw).action == "keep"


def test_the_drop_starts_only_once_the_shipper_and_its_pods_are_gone() -> None:
    assert decide(replicas=1).action == "scale-down"
    assert decide(replicas=1, drop=tried(ok=True)).action == "scale-down"  # a stale try is void
    assert decide(replicas=0, shipper_pods=1).action == "wait-shipper"
    assert decide(replicas=None, shipper_pods=1, drop=tried(done=False)).action == "wait-shipper"
    start = decide(replicas=0)
    assert (start.action, start.attempt) == ("start", 1)


def test_a_running_try_is_waited_for_and_a_finished_one_ends_it() -> None:
    assert decide(drop=tried(2, done=False)).action == "wait-drop"
    assert decide(drop=tried(done=True, ok=True)).action == "finish"
    assert (
        decide(replicas=None, drop=tried(ok=True)).action == "finish"
    )  # crash after the shipper went


@pytest.mark.parametrize(
    ("attempt", "delay"), [(1, 30), (2, 60), (3, 120), (5, 480), (6, 600), (40, 600)]
)
def test_a_failed_try_is_retried_with_a_growing_delay(attempt: int, delay: int) -> None:
    assert wal_jobs.drop_retry_delay(attempt) == timedelta(seconds=delay)
    waiting = decide(drop=tried(attempt, ago=delay - 1))
    assert waiting.action == "failed"
    assert waiting.retry_at == NOW + timedelta(seconds=1)
    again = decide(drop=tried(attempt, ago=delay))
    assert (again.action, again.attempt) == ("retry", attempt + 1)


def test_a_failed_try_without_an_end_time_is_retried() -> None:
    assert decide(drop=wal_jobs.DropTry(1, True, False, None)).action == "retry"


def test_the_runner_has_a_drop_slot_command() -> None:
    args = build_parser().parse_args(["runner", "wal-drop-slot", "--config", "c.json"])
    assert args.runner_command == "wal-drop-slot"
    assert args.config == "c.json"


def test_a_spec_change_of_the_slot_name_still_drops_what_the_shipper_used() -> None:
    """The spec can lose its walArchiving block (the slot name falls back to the default) when
    archiving is turned off; the drop goes by the shipper's own configuration."""
    shipper = deployment(spec(slotName="lamassu_pitr"))
    assert wal_jobs.slot_target(drop_job(shipper)) == wal_jobs.SlotTarget(
        "db", 5432, "lamassu_pitr"
    )
