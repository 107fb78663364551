"""Point-in-time restores through a LamassuRestore, end to end: the operator ships WAL for a
policy with ``walArchiving`` (its shipper Deployment and first base backup Job, from the runner
image), rows are written once a second, and restores name a moment by ``source.pointInTime``.

A moment outside the window is refused by the plan Job alone, naming the window, with nothing
else done. A drill to a moment between two writes recovers exactly the rows written by then
(in a scratch server of the platform PostgreSQL's major: the runner image carries the 15 and 17
servers, and with ``LAMASSU_POD_RUNTIME=host`` this machine has the platform's own).
"""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest

from lamassu_platform.stack import Platform

from .conftest import GROUP, VERSION, Cluster, Operator
from .test_restore import PART_OF, restore, restore_jobs, step_names, wait_restore
from .test_wal_archiving import POLICIES, Writer, pitr, wal_policy

pytestmark = [pytest.mark.platform, pytest.mark.e2e]

POLICY = "pitr"


@dataclass
class Archive:
    """A namespace whose policy ships WAL, a table written once a second, its window."""

    ns: str
    database: str
    writer: Writer


def iso(moment: datetime) -> str:
    return moment.astimezone(UTC).isoformat().replace("+00:00", "Z")


def parse(text: str | None) -> datetime | None:
    return datetime.fromisoformat(text.replace("Z", "+00:00")) if text else None


@pytest.fixture(scope="module")
def archive(cluster: Cluster, operator: Operator, platform: Platform) -> Iterator[Archive]:
    with wal_policy(cluster, platform, POLICY) as setup:
        ns, writer = setup.ns, setup.writer
        try:
            cluster.wait(
                "a recoverable window on the policy's status",
                lambda: pitr(cluster, ns, POLICY).get("recoverableUntil"),
                300,
            )
        except AssertionError as exc:
            raise AssertionError(f"{exc}: {diagnosis(cluster, ns)}") from None
        yield Archive(ns, writer.database, writer)


def diagnosis(cluster: Cluster, ns: str) -> str:
    """What the policy, its Jobs and Pods say (for a failure message)."""
    policy = cluster.get(POLICIES, ns, POLICY) or {}
    jobs = [
        (j.metadata.name, j.status.succeeded, j.status.failed)
        for j in cluster.batch.list_namespaced_job(ns).items
    ]
    pods = [
        (
            p.metadata.name,
            p.status.phase,
            [c.state.to_dict() for c in p.status.container_statuses or []],
        )
        for p in cluster.core.list_namespaced_pod(ns).items
    ]
    return f"status={policy.get('status')} jobs={jobs} pods={pods}"


def test_a_point_in_time_outside_the_window_is_refused_by_the_plan_job_alone(
    cluster: Cluster, archive: Archive
) -> None:
    ns = archive.ns
    at = iso(datetime.now(UTC) + timedelta(hours=1))
    restore(
        cluster,
        ns,
        "too-late",
        mode="InPlace",
        source={"policyRef": {"name": POLICY}, "pointInTime": at},
        components=["postgres"],
        databases=[archive.database],
        confirm=POLICY,  # postgres alone: the archive is the source, confirmed by the policy
        workloads={"selector": {"matchLabels": PART_OF}},
    )
    done = wait_restore(cluster, ns, "too-late", ("Failed", "Completed", "RolledBack"), 180)
    status = done["status"]
    assert status["phase"] == "Failed", status
    assert status["reason"] == "OutsideRecoverableWindow"
    message = status["message"]
    assert f"spec.source.pointInTime {at}" in message
    assert "after the last shipped commit" in message
    assert "the recoverable window is from " in message
    assert "nothing was changed" in message
    source = status["resolvedBackup"]["pointInTime"]
    assert source["requested"] == at
    assert source["archive"].endswith(f"/{ns}/{POLICY}/")
    assert status["resolvedBackup"].get("name") is None
    # Refused before anything else happened: the plan Job only, no safety set, nothing scaled.
    assert step_names(done) == ["Planning"]
    assert restore_jobs(cluster, ns) == ["too-late-plan"]
    assert not status.get("preRestoreBackup")
    assert not status.get("scaledWorkloads")
    backups = cluster.custom.list_namespaced_custom_object(GROUP, VERSION, ns, "lamassubackups")
    assert not [b for b in backups["items"] if b["spec"].get("trigger") == "PreRestore"]
    completed = cluster.condition(done, "Completed")
    assert completed["reason"] == "OutsideRecoverableWindow"


def rows_at(platform: Platform, database: str) -> list[tuple[int, datetime]]:
    assert platform.pg is not None
    out = platform.pg.rows("SELECT n, at FROM ticks ORDER BY n;", database)
    return [(int(n), datetime.fromisoformat(at).astimezone(UTC)) for n, at in out]


@dataclass
class Moment:
    """A target between two recent writes (after the base backup), shipped: the rows written
    at or before it, the one before it and the one after."""

    target: datetime
    before: int
    after: int
    expected: set[int]


def between_two_writes(cluster: Cluster, platform: Platform, archive: Archive) -> Moment:
    start = parse(pitr(cluster, archive.ns, POLICY)["recoverableFrom"])
    assert start is not None

    def two_writes_after_the_base() -> Any:
        after = [(n, t) for n, t in rows_at(platform, archive.database) if t > start]
        return after[-3:-1] if len(after) >= 3 else None

    (n1, t1), (n2, t2) = cluster.wait(
        "two writes after the base backup", two_writes_after_the_base, 60
    )
    target = t1 + (t2 - t1) / 2
    cluster.wait(
        "the window to reach the second write",
        lambda: (parse(pitr(cluster, archive.ns, POLICY).get("recoverableUntil")) or start) > t2,
        60,
    )
    expected = {n for n, t in rows_at(platform, archive.database) if t <= target}
    return Moment(target, n1, n2, expected)


def test_a_point_in_time_drill_recovers_exactly_the_rows_written_by_then(
    cluster: Cluster, platform: Platform, archive: Archive
) -> None:
    moment = between_two_writes(cluster, platform, archive)
    ns, target, expected = archive.ns, moment.target, moment.expected
    window = pitr(cluster, ns, POLICY)
    restore(
        cluster,
        ns,
        "drill-at",
        mode="Drill",
        source={"policyRef": {"name": POLICY}, "pointInTime": iso(target)},
        components=["postgres"],
        databases=[archive.database],
    )
    done = wait_restore(cluster, ns, "drill-at", ("Failed", "Completed", "RolledBack"), 240)
    status = done["status"]
    assert status["phase"] == "Completed", status
    evidence = status["evidence"]
    assert evidence["postgres"][archive.database]["rows"] == len(expected)
    assert moment.before in expected
    assert moment.after not in expected
    assert evidence["pitr"]["rows"] == len(expected)
    assert evidence["teardown"] == {"left": []}
    source = status["resolvedBackup"]["pointInTime"]
    assert source["baseBackup"]
    assert source["walFiles"] >= 1
    assert parse(source["recoverableFrom"]) == parse(window["recoverableFrom"])
    assert status["recoveryTimeSeconds"] > 0
    assert platform.pg is not None
    assert not [d for d in platform.pg.databases() if "__drill_" in d]


def test_an_in_place_point_in_time_restore_and_the_archive_going_on_after_it(
    cluster: Cluster, platform: Platform, archive: Archive
) -> None:
    moment = between_two_writes(cluster, platform, archive)
    assert platform.pg is not None
    ns, database, target, expected = archive.ns, archive.database, moment.target, moment.expected
    restore(
        cluster,
        ns,
        "in-place-at",
        mode="InPlace",
        source={"policyRef": {"name": POLICY}, "pointInTime": iso(target)},
        components=["postgres"],
        databases=[database],
        confirm=POLICY,
        preRestoreBackup=False,
    )
    try:
        done = wait_restore(cluster, ns, "in-place-at", ("Failed", "Completed", "RolledBack"), 240)
        status = done["status"]
        assert status["phase"] == "Completed", status
        live = {n for n, _ in rows_at(platform, database)}
        assert expected <= live
        assert moment.before in live
        assert moment.after not in live, "a row committed after the target, before the restore"
        assert step_names(done) == ["Planning", "PausingBackups", "Restoring", "Validating"]
        source = status["resolvedBackup"]["pointInTime"]
        assert parse(source["target"]) == target
        assert "same prefix and timeline" in source["archiveAfter"]
        assert status["evidence"]["kept"] == [f"{database}__pre_restore_{status['swapSuffix']}"]
        # The archive goes on after the restore, on the same prefix: the window's end passes it.
        finished = parse(status["completedAt"])
        assert finished is not None
        cluster.wait(
            "the window's end to pass the restore",
            lambda: (parse(pitr(cluster, ns, POLICY).get("recoverableUntil")) or target) > finished,
            90,
        )
    finally:
        for name in [d for d in platform.pg.databases() if d.startswith(f"{database}__")]:
            platform.pg.drop_database(name)
