"""WAL archiving of a policy, each tick: the shipper Deployment, base-backup Jobs, the
recoverable window on the status, its freshness, metrics, Events, and WAL retention.

Called from the policy tick (one line in :mod:`.policies`), before freshness is assessed, so WAL
shipping gets a ``Stale`` entry of its own (``postgresWal``) measured by the same rules as the
dumps. The window is read from the bucket, never from memory: the records and manifests the
runners committed, and the shipper's heartbeat (``wal-status.json``: lag, caught-up time).
Record bodies are immutable once written (a partial's record changes, and so does its etag), so
they are cached by key and etag: a tick costs two listings and the few records that changed.
"""

from __future__ import annotations

import threading
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from typing import Any, TypeVar

from pydantic import ValidationError

from ..builders import conditions as cond
from ..builders import jobs, layout, wal_jobs
from ..builders import wal as walb
from ..builders.manifest import parse as parse_manifest
from ..builders.staleness import ComponentFreshness
from ..clients.kube import KubeApi
from ..clients.s3 import S3Store
from ..components.postgres.wal.settings import STATUS_KEY, ShipperStatus
from ..errors import IntegrityError, LamassuBackupError, StorageError
from ..models.common import ConditionStatus
from ..models.policy import PointInTimeRecoveryStatus
from ..models.wal import BaseBackupInfo, RecoveryWindow, WalRecord
from . import metrics, wal_slot
from . import secrets as secret_refs
from .common import iso
from .job_state import job_state
from .resources import stored
from .retention import delete_set
from .runs import DEFAULT_RUNNER_ACCOUNT
from .tick import Tick

WAL_ARCHIVING = wal_jobs.WAL_ARCHIVING
"""Condition: True while the shipper runs and the slot's lag is under maxSlotLagBytes; once
walArchiving is off, Unknown then gone while the slot is dropped, False when the drop fails."""

AVAILABLE, UNAVAILABLE, STARTING = "Available", "Unavailable", "Starting"
T = TypeVar("T")


# -- reading the archive -------------------------------------------------------------------------


@dataclass
class _Cache:
    records: dict[str, tuple[str, WalRecord | None]] = field(default_factory=dict)
    bases: dict[str, tuple[str, BaseBackupInfo | None]] = field(default_factory=dict)


_CACHES: dict[str, _Cache] = {}
_LOCK = threading.Lock()


@dataclass(frozen=True)
class Archive:
    """What the bucket holds for one policy."""

    bases: list[BaseBackupInfo]
    records: list[WalRecord]
    heartbeat: ShipperStatus | None


def _read_cached(
    store: S3Store,
    prefix: str,
    suffix: str,
    cache: dict[str, tuple[str, T | None]],
    load: Callable[[str], T | None],
) -> dict[str, tuple[str, T | None]]:
    """Every object under ``prefix`` ending in ``suffix``, parsed; unchanged ones (same etag)
    from ``cache``."""
    out: dict[str, tuple[str, T | None]] = {}
    for obj in store.list_keys(prefix):
        if not obj.key.endswith(suffix):
            continue
        hit = cache.get(obj.key)
        out[obj.key] = hit if hit is not None and hit[0] == obj.etag else (obj.etag, load(obj.key))
    return out


def read_archive(store: S3Store, prefix: str) -> Archive:
    """Base backups with a manifest, every WAL record, and the shipper's heartbeat."""
    with _LOCK:
        cache = _CACHES.setdefault(prefix, _Cache())

    def record(key: str) -> WalRecord | None:
        try:
            return WalRecord.model_validate_json(store.get_bytes(key))
        except StorageError:
            return None  # a superseded partial's record, deleted since the listing

    def base(key: str) -> BaseBackupInfo | None:
        try:
            return walb.base_backup_of(parse_manifest(store.get_bytes(key)))[0]
        except (StorageError, IntegrityError, ValueError):
            return None  # unreadable: not a base a restore can start from

    records = _read_cached(store, prefix + walb.WAL_DIR, ".json", cache.records, record)
    bases = _read_cached(store, prefix + walb.BASE_DIR, "/" + layout.MANIFEST, cache.bases, base)
    heartbeat = None
    if store.head(prefix + STATUS_KEY) is not None:
        try:
            heartbeat = ShipperStatus.model_validate_json(store.get_bytes(prefix + STATUS_KEY))
        except (StorageError, ValidationError):
            heartbeat = None
    with _LOCK:
        cache.records, cache.bases = records, bases
    return Archive(
        bases=[info for _, info in bases.values() if info is not None],
        records=[r for _, r in records.values() if r is not None],
        heartbeat=heartbeat,
    )


def forget(prefix: str) -> None:
    """Drop a policy's cached records."""
    with _LOCK:
        _CACHES.pop(prefix, None)


# -- retention -----------------------------------------------------------------------------------


def apply_retention(store: S3Store, prefix: str, archive: Archive, keep: int) -> tuple[int, int]:
    """Delete the base backups past ``keep`` (manifest first) and the WAL no kept one needs
    (record first: an object without its record does not exist for a restore); returns
    (base backups deleted, WAL objects deleted)."""
    plan = wal_jobs.plan_wal_retention(archive.bases, archive.records, keep)
    for base in plan.bases:
        delete_set(store, prefix + walb.base_backup_prefix(base.set_time))
    if plan.wal:
        store.delete_keys([prefix + wal_jobs.record_key(r) for r in plan.wal])
        store.delete_keys([prefix + r.key for r in plan.wal])
    return len(plan.bases), len(plan.wal)


# -- the tick ------------------------------------------------------------------------------------


def _previous(t: Tick) -> PointInTimeRecoveryStatus | None:
    return t.status.point_in_time_recovery


def _disable(kube: KubeApi, t: Tick) -> None:
    """walArchiving off: the shipper stops, then its replication slot is dropped on the server
    (:mod:`.wal_slot`), the condition saying where that is until it is done."""
    before = cond.get_condition(t.conditions, WAL_ARCHIVING)
    if _previous(t) is None and before is None:
        return
    if _previous(t) is not None:  # the first pass since it was turned off
        t.patch["pointInTimeRecovery"] = None
        t.event(
            "Normal",
            "WalShipperRemoved",
            "walArchiving is disabled: the WAL shipper is removed and its replication slot dropped",
        )
        metrics.forget_wal(t.namespace, t.name)
        for metric in (metrics.STALE, metrics.AGE):
            for labels in list(metric._metrics):
                if labels == (t.namespace, t.name, wal_jobs.COMPONENT):
                    metric.remove(*labels)
        forget(layout.policy_prefix(t.spec.destination.s3.prefix, t.namespace, t.name))
    body = {
        "apiVersion": t.policy.api_version,
        "kind": t.policy.kind,
        "metadata": t.policy.metadata,
    }
    step = wal_slot.advance(kube, wal_slot.Subject.of(body), before, t.now)
    t.result.events += step.events
    if step.done:
        t.conditions = [c for c in t.conditions if c.type != WAL_ARCHIVING]
        return
    t.condition(WAL_ARCHIVING, step.status, step.reason, step.message)
    t.wake.append(step.wake or t.now + wal_slot.POLL)


def _ensure_account(kube: KubeApi, t: Tick) -> None:
    """The runner ServiceAccount, as a backup run makes it (only the default one)."""
    if t.spec.runner.service_account_name == DEFAULT_RUNNER_ACCOUNT:
        kube.ensure_runner_account(t.namespace, DEFAULT_RUNNER_ACCOUNT)


def _owner(t: Tick) -> jobs.Owner:
    return jobs.Owner(t.policy.api_version, t.policy.kind, t.name, t.policy.uid)


def _ensure_shipper(kube: KubeApi, t: Tick) -> tuple[str, str | None]:
    """Create or update the Deployment when the wanted one differs; (shipper state, problem)."""
    desired = wal_jobs.shipper_deployment(
        t.spec, namespace=t.namespace, policy_name=t.name, owner=_owner(t)
    )
    live = kube.get_deployment(t.namespace, desired["metadata"]["name"])
    wanted = desired["metadata"]["annotations"][wal_jobs.SPEC_HASH]
    have = ((live or {}).get("metadata") or {}).get("annotations") or {}
    if live is None or have.get(wal_jobs.SPEC_HASH) != wanted:
        dropping = wal_slot.clear_drops(kube, t.namespace, t.name)
        if dropping is not None:  # it would drop the new shipper's slot: it ends first
            return STARTING, None
        try:
            secret_refs.check(
                kube,
                t.namespace,
                secret_refs.references(t.spec, ["postgres"]) + wal_jobs.references(t.spec),
            )
        except LamassuBackupError as exc:
            return UNAVAILABLE, f"{exc.reason}: {exc.message}"
        _ensure_account(kube, t)
        kube.put_deployment(desired)
        verb = "started" if live is None else "updated (the spec changed)"
        t.event("Normal", "WalShipperApplied", f"WAL shipper {desired['metadata']['name']} {verb}")
        return STARTING, None
    previous = _previous(t)
    assert live is not None
    return wal_jobs.shipper_state(live, previous.shipper if previous else None, t.now), None


def _base_backups(kube: KubeApi, t: Tick, archive: Archive | None) -> dict[str, Any]:
    """Follow the base-backup Jobs and start the one that is due; the status fields."""
    wal = t.spec.components.postgres.wal_archiving  # type: ignore[union-attr]
    previous = _previous(t)
    found = kube.list_jobs(t.namespace, wal_jobs.selector(t.name, wal_jobs.ROLE_BASE_BACKUP))
    found.sort(key=lambda j: str(j["metadata"].get("creationTimestamp") or ""))
    states = {j["metadata"]["name"]: j for j in found}
    running = []
    out: dict[str, Any] = {
        "lastBaseBackupSchedule": iso(previous.last_base_backup_schedule) if previous else None,
        "lastBaseBackup": previous.last_base_backup if previous else None,
        "lastBaseBackupPhase": previous.last_base_backup_phase if previous else None,
    }
    for name, job in states.items():
        status = job.get("status") or {}
        finished = any(
            c.get("status") == "True" and c.get("type") in ("Complete", "Failed")
            for c in status.get("conditions") or []
        )
        if not finished:
            running.append(name)
    newest = found[-1]["metadata"]["name"] if found else None
    if newest is not None and newest not in running:
        reported = (previous.last_base_backup, previous.last_base_backup_phase) if previous else ()
        if reported[:1] != (newest,) or reported[1:] == ("Running",):
            state = job_state(kube, states[newest])
            phase = "Completed" if state.ok else f"Failed: {state.reason}"
            out["lastBaseBackup"], out["lastBaseBackupPhase"] = newest, phase
            if state.ok:
                t.event("Normal", "BaseBackupCompleted", f"base backup {newest} completed")
            else:
                t.event(
                    "Warning",
                    "BaseBackupFailed",
                    f"base backup {newest} failed: {state.message or state.reason}",
                )
    elif newest is not None:
        out["lastBaseBackup"], out["lastBaseBackupPhase"] = newest, "Running"
    decision = wal_jobs.base_backup_decision(
        wal,
        time_zone=t.spec.time_zone,
        last_tick=previous.last_base_backup_schedule if previous else None,
        created_at=t.created_at,
        now=t.now,
        base_backups=len(archive.bases) if archive is not None else 1,
        jobs_existing=list(states),
        running=running,
        paused=t.paused,
    )
    out["lastBaseBackupSchedule"] = iso(decision.watermark)
    t.wake.append(decision.next_due)
    if decision.start is not None:
        job = wal_jobs.base_backup_job(
            t.spec,
            namespace=t.namespace,
            policy_name=t.name,
            set_time=decision.start,
            owner=_owner(t),
        )
        _ensure_account(kube, t)
        _, created = kube.create_job(job)
        if created:
            name = job["metadata"]["name"]
            out["lastBaseBackup"], out["lastBaseBackupPhase"] = name, "Running"
            why = "the archive has none yet" if decision.reason == "FirstBaseBackup" else "due"
            t.event("Normal", "BaseBackupStarted", f"started base backup {name} ({why})")
    elif decision.reason == "RestoreInProgress" and decision.watermark != (
        previous.last_base_backup_schedule if previous else None
    ):
        t.event("Normal", "BaseBackupSkipped", f"base backup skipped: {t.paused}")
    return out


def on_tick(kube: KubeApi, t: Tick) -> None:
    """WAL archiving's part of one policy tick (nothing when it is not enabled)."""
    if t.policy.metadata.get("deletionTimestamp"):
        return  # being deleted: the shipper and its slot are the delete handler's (wal_slot)
    if not wal_jobs.enabled(t.spec):
        _disable(kube, t)
        return
    wal = t.spec.components.postgres.wal_archiving  # type: ignore[union-attr]
    previous = _previous(t)
    prefix = layout.policy_prefix(t.spec.destination.s3.prefix, t.namespace, t.name)
    try:
        shipper, problem = _ensure_shipper(kube, t)
    except LamassuBackupError as exc:  # the API refused (RBAC?): said, and the dumps go on
        shipper, problem = UNAVAILABLE, f"{exc.reason}: {exc.message}"
    archive: Archive | None = None
    message = problem
    try:
        store = secret_refs.operator_store(kube, t.namespace, t.spec)
        archive = read_archive(store, prefix)
        if not t.paused:
            deleted = apply_retention(store, prefix, archive, wal.base_backup_retention)
            if any(deleted):
                t.event(
                    "Normal",
                    "WalRetentionDeleted",
                    f"deleted {deleted[0]} base backup(s) and {deleted[1]} WAL object(s) no kept "
                    f"base backup needs (baseBackupRetention {wal.base_backup_retention})",
                )
                archive = read_archive(store, prefix)
    except LamassuBackupError as exc:
        message = message or f"the archive could not be read: {exc.message}"
    try:
        base_fields = _base_backups(kube, t, archive)
    except LamassuBackupError as exc:
        base_fields = {}
        problem = problem or f"{exc.reason}: {exc.message}"
    heartbeat = archive.heartbeat if archive else None
    lag = heartbeat.lag_bytes if heartbeat else None
    if archive is not None:
        window = walb.recovery_window(archive.bases, archive.records)
        status = wal_jobs.pitr_status(
            window,
            archive.records,
            now=t.now,
            caught_up_at=heartbeat.caught_up_at if heartbeat else None,
            lag_bytes=lag,
            shipper=shipper,
            message=message,
        )
        point = wal_jobs.recovery_point(archive.records, status_time(heartbeat))
        _metrics(t, window, archive, lag, shipper)
    else:
        status = previous.to_api() if previous else {}
        status.update({"shipper": shipper, "message": message})
        point = previous.caught_up_at or previous.last_shipped_at if previous else None
    status.update({k: v for k, v in base_fields.items() if v is not None})
    status.update(_last_drill(kube, t))
    # A merge patch keeps keys it does not name: a field that no longer applies is nulled.
    before = stored(t.status).get("pointInTimeRecovery") or {}
    status.update({k: None for k in before if k not in status})
    t.patch["pointInTimeRecovery"] = status
    t.freshness[wal_jobs.COMPONENT] = ComponentFreshness(point, wal.recovery_point_objective)
    _condition(t, shipper, problem or (None if archive is not None else message), lag, wal)
    refresh = min(max(3 * wal.partial_interval.total_seconds(), 10.0), 60.0)
    t.wake.append(t.now + timedelta(seconds=refresh))


def _last_drill(kube: KubeApi, t: Tick) -> dict[str, Any]:
    """The newest scheduled point-in-time drill's name, phase (with its reason) and target."""
    selector = f"{jobs.LABEL_PITR_DRILL}={layout.label_value(t.name)}"
    try:
        drills = kube.list_custom("LamassuRestore", t.namespace, selector)
    except LamassuBackupError:
        return {}
    if not drills:
        return {}
    newest = max(
        drills,
        key=lambda d: (
            str((d.get("metadata") or {}).get("creationTimestamp") or ""),
            str(d["metadata"]["name"]),
        ),
    )
    status = newest.get("status") or {}
    phase = str(status.get("phase") or "Pending")
    if status.get("reason") and phase == "Failed":
        phase = f"Failed ({status['reason']})"
    return {
        "lastDrill": newest["metadata"]["name"],
        "lastDrillPhase": phase,
        "lastDrillTarget": ((newest.get("spec") or {}).get("source") or {}).get("pointInTime"),
    }


def status_time(heartbeat: ShipperStatus | None) -> datetime | None:
    """The heartbeat's caught-up time (None without one)."""
    return heartbeat.caught_up_at if heartbeat else None


def _metrics(
    t: Tick, window: RecoveryWindow, archive: Archive, lag: int | None, shipper: str
) -> None:
    labels = (t.namespace, t.name)
    start, until = window.recoverable_from, window.recoverable_until
    if start is not None:
        metrics.WAL_RECOVERABLE_FROM.labels(*labels).set(start.timestamp())
    if until is not None:
        metrics.WAL_RECOVERABLE_UNTIL.labels(*labels).set(until.timestamp())
    newest = wal_jobs.newest_shipped(archive.records)
    if newest is not None:
        metrics.WAL_LAST_SHIPPED.labels(*labels).set(newest.shipped_at.timestamp())
    if lag is not None:
        metrics.WAL_LAG_BYTES.labels(*labels).set(lag)
    usable, _ = walb.usable_base_backups(archive.bases, walb.build_chain(archive.records))
    metrics.WAL_BASE_BACKUPS.labels(*labels).set(len(usable))
    metrics.WAL_SHIPPER_UP.labels(*labels).set(1 if shipper == AVAILABLE else 0)


def _condition(t: Tick, shipper: str, problem: str | None, lag: int | None, wal: Any) -> None:
    """WalArchiving True/False, with an Event when the stream stops or the lag passes the limit."""
    before = cond.get_condition(t.conditions, WAL_ARCHIVING)
    if problem:
        reason, _, text = problem.partition(": ")
        status, reason, message = ConditionStatus.FALSE, reason or "ArchiveUnreadable", text
    elif shipper == UNAVAILABLE:
        status, reason = ConditionStatus.FALSE, "ShipperUnavailable"
        message = (
            f"the WAL shipper Deployment {wal_jobs.shipper_name(t.name)} has no available "
            "replica: WAL is not being shipped (the slot keeps it on the server meanwhile)"
        )
    elif lag is not None and lag > wal.max_slot_lag_bytes:
        status, reason = ConditionStatus.FALSE, "SlotLagHigh"
        message = (
            f"the server keeps {lag} bytes of WAL not yet in the bucket for slot "
            f"{wal.slot_name}, more than maxSlotLagBytes {wal.max_slot_lag_bytes}: check the "
            "shipper's log and the bucket; the server's disk fills while this grows"
        )
    elif shipper == STARTING:
        status, reason, message = ConditionStatus.UNKNOWN, "Starting", "the WAL shipper is starting"
    else:
        status, reason, message = ConditionStatus.TRUE, "Shipping", "WAL is being shipped"
    t.condition(WAL_ARCHIVING, status, reason, message)
    if status == ConditionStatus.FALSE and (
        before is None or before.status != ConditionStatus.FALSE or before.reason != reason
    ):
        event_reason = {"ShipperUnavailable": "WalShippingStopped", "SlotLagHigh": "WalSlotLagHigh"}
        t.event("Warning", event_reason.get(reason, reason), message)
    elif (
        status == ConditionStatus.TRUE
        and before is not None
        and before.status == ConditionStatus.FALSE
    ):
        t.event("Normal", "WalShipping", message)
