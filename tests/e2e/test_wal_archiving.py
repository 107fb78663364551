"""WAL archiving through the operator, end to end: a policy with ``walArchiving`` gets its shipper
Deployment (its Pod made by the control plane's Deployment and ReplicaSet controllers, run from
the runner image by runc), WAL from rows written once a second lands encrypted in the bucket, the
first base backup's Job completes, the policy's status shows a window whose end moves forward,
and disabling archiving removes the Deployment and drops its replication slot on the server.
Deleting a WAL policy waits until the slot is dropped; a drop that fails says so (Event,
condition) and the keep annotation lets the policy go with the slot left.

The platform's PostgreSQL gets what the README asks of a user's server: a role with REPLICATION
and a ``host replication`` pg_hba line (wal_level is ``replica`` by default).
"""

from __future__ import annotations

import base64
import contextlib
import secrets
import threading
import uuid
from collections.abc import Iterator
from dataclasses import dataclass
from datetime import datetime
from typing import Any

import pytest
from kubernetes import client as k8s
from kubernetes.client.exceptions import ApiException

from lamassu_platform.postgres import PostgresServer
from lamassu_platform.stack import BUCKET, Platform

from .conftest import GROUP, VERSION, Cluster, Operator

pytestmark = [pytest.mark.platform, pytest.mark.e2e]

POLICIES = "lamassubackuppolicies"


@contextlib.contextmanager
def replication_role(pg: PostgresServer, slot: str) -> Iterator[tuple[str, str]]:
    """A REPLICATION role allowed by pg_hba (and pg_switch_wal), dropped with its slot after."""
    user, password = f"wal_{uuid.uuid4().hex[:6]}", secrets.token_urlsafe(18)
    pg.create_replication_role(user, password)
    try:
        yield user, password
    finally:
        with contextlib.suppress(RuntimeError):
            drop = "SELECT pg_drop_replication_slot(slot_name) FROM pg_replication_slots WHERE "
            pg.psql(f"{drop}slot_name = '{slot}' AND NOT active;")
        with contextlib.suppress(RuntimeError):
            pg.psql(f"DROP ROLE IF EXISTS {user};")


class Writer:
    """A row a second into a table of its own database, until closed."""

    def __init__(self, pg: PostgresServer, database: str) -> None:
        self.pg, self.database = pg, database
        pg.create_database(database)
        pg.psql(
            "CREATE TABLE ticks (n integer PRIMARY KEY, at timestamptz DEFAULT now());", database
        )
        self.count = 0
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)
        self._thread.start()

    def _run(self) -> None:
        while not self._stop.wait(1.0):
            self.count += 1
            with contextlib.suppress(RuntimeError):
                self.pg.psql(f"INSERT INTO ticks VALUES ({self.count});", self.database)  # noqa: S608

    def close(self) -> None:
        self._stop.set()
        self._thread.join(timeout=5)
        with contextlib.suppress(RuntimeError):
            self.pg.drop_database(self.database)


@dataclass
class WalPolicy:
    """A namespace whose policy ships WAL from the platform's PostgreSQL (see wal_policy)."""

    ns: str
    writer: Writer
    slot: str
    password: str


@contextlib.contextmanager
def wal_policy(
    cluster: Cluster, platform: Platform, name: str, **settings: Any
) -> Iterator[WalPolicy]:
    """A fresh namespace with policy ``name`` shipping WAL (1 s partials, a base backup at once)
    as its own replication role and slot, and a table written once a second; the writer stops,
    the shipper goes and its Pods are waited for on the way out, the role and slot dropped."""
    pg = platform.pg
    assert pg is not None
    ns = cluster.namespace()
    slot = f"e2e_{ns.replace('-', '_')}"
    apps = k8s.AppsV1Api(cluster.api)
    with replication_role(pg, slot) as (user, password):
        cluster.core.create_namespaced_secret(
            ns,
            {
                "metadata": {"name": "wal-replication"},
                "stringData": {"username": user, "password": password},
            },
        )
        writer = Writer(pg, f"{name}_{ns.replace('-', '_')}")
        try:
            body = platform.sample_policy(name)
            body["metadata"]["namespace"] = ns
            body["spec"]["components"]["postgres"]["walArchiving"] = {
                "enabled": True,
                "replicationCredentialsSecret": {"name": "wal-replication"},
                "slotName": slot,
                "partialInterval": "1s",
                "baseBackupSchedule": "0 0 1 1 *",  # the first base backup starts at once
                **settings,
            }
            cluster.custom.create_namespaced_custom_object(GROUP, VERSION, ns, POLICIES, body)
            yield WalPolicy(ns, writer, slot, password)
        finally:
            writer.close()
            with contextlib.suppress(ApiException):
                cluster.custom.delete_namespaced_custom_object(GROUP, VERSION, ns, POLICIES, name)
            with contextlib.suppress(ApiException):
                apps.delete_namespaced_deployment(f"{name}-wal-shipper", ns)
            cluster.wait(
                "the shipper's Pods to stop",
                lambda: (
                    not cluster.core.list_namespaced_pod(
                        ns, label_selector="backup.lamassu.io/role=wal-shipper"
                    ).items
                ),
                60,
            )


def pitr(cluster: Cluster, ns: str, name: str) -> dict[str, Any]:
    policy = cluster.get(POLICIES, ns, name) or {}
    return dict((policy.get("status") or {}).get("pointInTimeRecovery") or {})


def keys_under(platform: Platform, prefix: str) -> list[str]:
    assert platform.s3 is not None
    pages = platform.s3.client().get_paginator("list_objects_v2")
    return [
        item["Key"]
        for page in pages.paginate(Bucket=BUCKET, Prefix=prefix)
        for item in page.get("Contents", [])
    ]


def slot_exists(platform: Platform, slot: str) -> bool:
    """Whether the server has the replication slot (what keeps its WAL)."""
    assert platform.pg is not None
    found = platform.pg.psql(
        f"SELECT slot_type FROM pg_replication_slots WHERE slot_name = '{slot}';"  # noqa: S608
    )
    return bool(found.strip())


def diagnose(cluster: Cluster, ns: str, name: str = "pitr") -> str:
    """What a failed wait needs: the policy's status, the namespace's Events, the Pods."""
    policy = cluster.get(POLICIES, ns, name) or {}
    events = [
        f"{e.involved_object.kind}/{e.involved_object.name} {e.reason}: {e.message}"
        for e in cluster.core.list_namespaced_event(ns).items
    ]
    pods = [
        f"{p.metadata.name} {p.status.phase}" for p in cluster.core.list_namespaced_pod(ns).items
    ]
    return f"status: {policy.get('status')}\nevents: {events[-20:]}\npods: {pods}"


def test_wal_archiving_ships_takes_a_base_backup_shows_the_window_and_is_removed_when_disabled(
    cluster: Cluster, operator: Operator, platform: Platform
) -> None:
    apps = k8s.AppsV1Api(cluster.api)
    with wal_policy(cluster, platform, "pitr", recoveryPointObjective="1m") as setup:
        ns, password = setup.ns, setup.password

        def shipper_up() -> Any:
            try:
                dep = apps.read_namespaced_deployment("pitr-wal-shipper", ns)
            except ApiException:
                return None
            return dep if (dep.status.available_replicas or 0) >= 1 else None

        try:
            dep = cluster.wait("the shipper Deployment to have its Pod up", shipper_up, 60)
        except AssertionError as exc:
            raise AssertionError(f"{exc}\n{diagnose(cluster, ns)}") from None
        assert dep.spec.strategy.type == "Recreate"
        assert dep.metadata.owner_references[0].kind == "LamassuBackupPolicy"
        pods = cluster.core.list_namespaced_pod(
            ns, label_selector="backup.lamassu.io/role=wal-shipper"
        ).items
        assert pods
        assert pods[0].metadata.owner_references[0].kind == "ReplicaSet"
        assert pods[0].spec.security_context.run_as_non_root is True

        prefix = f"local/{ns}/pitr/"
        cluster.wait(
            "encrypted WAL in the bucket",
            lambda: [k for k in keys_under(platform, prefix + "wal/") if k.endswith(".gpg")],
            40,
        )

        def base_done() -> Any:
            done = cluster.batch.list_namespaced_job(
                ns, label_selector="backup.lamassu.io/role=base-backup"
            ).items
            return [j for j in done if (j.status.succeeded or 0) >= 1]

        job = cluster.wait("the first base backup Job to complete", base_done, 60)[0]
        assert keys_under(platform, f"{prefix}basebackups/")
        first = cluster.wait(
            "a recoverable window on the policy's status",
            lambda: pitr(cluster, ns, "pitr").get("recoverableUntil") and pitr(cluster, ns, "pitr"),
            40,
        )
        assert first["baseBackups"] == 1
        assert first["lastBaseBackup"] == job.metadata.name
        assert first["shipper"] == "Available"
        assert first["lastShippedWal"]
        start = datetime.fromisoformat(first["recoverableFrom"].replace("Z", "+00:00"))
        end = datetime.fromisoformat(first["recoverableUntil"].replace("Z", "+00:00"))
        assert start <= end

        def advanced() -> Any:
            now = pitr(cluster, ns, "pitr")
            return now if now.get("recoverableUntil", "") > first["recoverableUntil"] else None

        later = cluster.wait("the window's end to move forward", advanced, 40)
        assert later["recoverableFrom"] == first["recoverableFrom"]
        policy = cluster.get(POLICIES, ns, "pitr") or {}
        wal_status = policy["status"]["components"]["postgresWal"]
        assert wal_status["stale"] is False
        assert cluster.condition(policy, "WalArchiving")["status"] == "True"
        text = str(policy["status"])
        assert password not in text
        assert slot_exists(platform, setup.slot)

        cluster.custom.patch_namespaced_custom_object(
            GROUP,
            VERSION,
            ns,
            POLICIES,
            "pitr",
            {"spec": {"components": {"postgres": {"walArchiving": {"enabled": False}}}}},
        )

        def removed() -> bool:
            try:
                apps.read_namespaced_deployment("pitr-wal-shipper", ns)
            except ApiException as exc:
                return bool(exc.status == 404)
            return False

        cluster.wait(
            "pointInTimeRecovery to leave the status", lambda: not pitr(cluster, ns, "pitr"), 30
        )
        try:  # the shipper stops, then a Job drops its slot, then the Deployment goes
            cluster.wait(
                "the shipper's slot to be dropped",
                lambda: not slot_exists(platform, setup.slot),
                120,
            )
            cluster.wait("the shipper Deployment to be removed", removed, 30)
        except AssertionError as exc:
            raise AssertionError(f"{exc}\n{diagnose(cluster, ns)}") from None
        assert not drop_jobs(cluster, ns)
        reasons = [e.reason for e in cluster.events(ns, "pitr")]
        assert "WalSlotDropped" in reasons
        policy = cluster.get(POLICIES, ns, "pitr") or {}
        assert not cluster.condition(policy, "WalArchiving")


def drop_jobs(cluster: Cluster, ns: str) -> list[Any]:
    return list(
        cluster.batch.list_namespaced_job(
            ns, label_selector="backup.lamassu.io/role=wal-drop-slot"
        ).items
    )


def wait_for_slot(cluster: Cluster, platform: Platform, setup: WalPolicy, name: str) -> None:
    try:
        cluster.wait(
            "the shipper's slot on the server", lambda: slot_exists(platform, setup.slot), 90
        )
    except AssertionError as exc:
        raise AssertionError(f"{exc}\n{diagnose(cluster, setup.ns, name)}") from None


def test_deleting_a_wal_policy_drops_its_slot_before_the_policy_goes(
    cluster: Cluster, operator: Operator, platform: Platform
) -> None:
    with wal_policy(cluster, platform, "slotdel") as setup:
        ns = setup.ns
        wait_for_slot(cluster, platform, setup, "slotdel")
        policy = cluster.get(POLICIES, ns, "slotdel") or {}
        assert f"{GROUP}/finalizer" in policy["metadata"].get("finalizers", [])
        cluster.custom.delete_namespaced_custom_object(GROUP, VERSION, ns, POLICIES, "slotdel")
        try:
            cluster.wait(
                "the policy to go", lambda: cluster.get(POLICIES, ns, "slotdel") is None, 180
            )
        except AssertionError as exc:
            raise AssertionError(f"{exc}\n{diagnose(cluster, ns, 'slotdel')}") from None
        # the finalizer held the policy until the slot was dropped: it is gone already
        assert not slot_exists(platform, setup.slot)
        assert "WalSlotDropped" in [e.reason for e in cluster.events(ns, "slotdel")]
        assert not cluster.core.list_namespaced_pod(
            ns, label_selector="backup.lamassu.io/role=wal-shipper"
        ).items


def test_a_failed_drop_is_said_and_the_keep_annotation_lets_the_policy_go_with_its_slot(
    cluster: Cluster, operator: Operator, platform: Platform
) -> None:
    pg = platform.pg
    assert pg is not None
    with wal_policy(cluster, platform, "slotkeep") as setup:
        ns = setup.ns
        wait_for_slot(cluster, platform, setup, "slotkeep")
        user = (cluster.core.read_namespaced_secret("wal-replication", ns).data or {}).get(
            "username"
        )
        assert user
        role = base64.b64decode(user).decode()
        pg.psql(f"ALTER ROLE {role} NOREPLICATION;")  # the drop is refused from now on
        cluster.custom.delete_namespaced_custom_object(GROUP, VERSION, ns, POLICIES, "slotkeep")

        def failed() -> Any:
            policy = cluster.get(POLICIES, ns, "slotkeep") or {}
            found = cluster.condition(policy, "WalArchiving")
            return found if found.get("reason") == "SlotDropFailed" else None

        try:
            found = cluster.wait("the failed drop on the condition", failed, 120)
        except AssertionError as exc:
            raise AssertionError(f"{exc}\n{diagnose(cluster, ns, 'slotkeep')}") from None
        assert found["status"] == "False"
        assert setup.slot in found["message"]
        assert "keep-replication-slot" in found["message"]
        assert setup.password not in found["message"]
        warnings = [e for e in cluster.events(ns, "slotkeep") if e.reason == "WalSlotDropFailed"]
        assert warnings
        assert warnings[0].type == "Warning"
        assert cluster.get(POLICIES, ns, "slotkeep") is not None  # held while the slot is there
        assert slot_exists(platform, setup.slot)

        cluster.custom.patch_namespaced_custom_object(
            GROUP,
            VERSION,
            ns,
            POLICIES,
            "slotkeep",
            {"metadata": {"annotations": {"backup.lamassu.io/keep-replication-slot": "true"}}},
        )
        cluster.wait("the policy to go", lambda: cluster.get(POLICIES, ns, "slotkeep") is None, 90)
        assert slot_exists(platform, setup.slot)  # left, as asked (the fixture drops it)
        assert "WalSlotKept" in [e.reason for e in cluster.events(ns, "slotkeep")]
        assert not drop_jobs(cluster, ns)
