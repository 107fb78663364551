"""Retention: delete expired sets from the bucket and their records, and say so.

A set is deleted manifest first: from that moment it is incomplete by definition, so a pass cut
short (crash, S3 outage) never leaves something that looks like a good backup. Failures become a
condition and an Event, never silence (CNPG #8599, Stash #1235).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any

from ..builders import layout
from ..builders.retention import BackupInfo, select_expired
from ..clients.kube import KubeApi
from ..clients.s3 import S3Store
from ..errors import LamassuBackupError
from ..models.backup import BackupPhase
from ..models.resources import LamassuBackupPolicy
from . import metrics, restore_guard
from . import secrets as secret_refs
from .common import Event, RunSummary, iso, ref


@dataclass
class RetentionReport:
    """One pass."""

    deleted: list[str] = field(default_factory=list)
    errors: list[str] = field(default_factory=list)
    kept: int = 0
    events: list[Event] = field(default_factory=list)

    def status(self, now: datetime) -> dict[str, Any]:
        """For the policy's status.retention."""
        return {
            "lastRun": iso(now),
            "deleted": self.deleted[-20:],
            "kept": self.kept,
            "errors": self.errors[-5:],
        }


def delete_set(store: S3Store, prefix: str) -> int:
    """Delete one set: the manifest and its signature first, then everything else."""
    store.delete_keys([prefix + layout.MANIFEST, prefix + layout.SIGNATURE])
    rest = [o.key for o in store.list_keys(prefix)]
    if rest:
        store.delete_keys(rest)
    return len(rest) + 2


def apply(
    kube: KubeApi, policy: LamassuBackupPolicy, runs: Sequence[RunSummary], now: datetime
) -> RetentionReport:
    """Select and delete expired sets of one policy."""
    namespace, name, spec = policy.namespace, policy.name, policy.spec
    report = RetentionReport()
    infos = [
        BackupInfo(
            name=r.name,
            phase=r.phase
            if r.phase in {p.value for p in BackupPhase}
            else BackupPhase.PENDING.value,
            completed_at=r.completed_at,
            verified=r.verification_phase == "Verified",
            pinned=r.pinned,
            size_bytes=r.size_bytes,
        )
        for r in runs
    ]
    plan = select_expired(infos, spec.retention, now, spec.time_zone)
    report.kept = len(plan.keep)
    # -- LamassuRestore hook: no pass while a restore holds the namespace, and never the set a
    # restore reads or the safety set it took (services/restore_guard).
    if plan.delete and restore_guard.pause_reason(kube, namespace):
        return report
    protected = restore_guard.protected_sets(kube, namespace) if plan.delete else set()
    victims = [v for v in plan.delete if v not in protected]
    report.kept += len(plan.delete) - len(victims)
    # -- end of the LamassuRestore hook
    if not victims:
        return report
    try:
        store = secret_refs.operator_store(kube, namespace, spec)
    except LamassuBackupError as exc:
        report.errors.append(exc.message)
        report.events.append(
            Event(
                ref(policy),
                "Warning",
                "RetentionFailed",
                f"retention could not reach the bucket: {exc.message}",
            )
        )
        metrics.RETENTION_ERRORS.labels(namespace, name).inc()
        return report
    by_name = {r.name: r for r in runs}
    for victim in victims:
        run = by_name[victim]
        try:
            # A Lost record's folder is gone or holds something this run did not write:
            # retention removes the record only, never what is there now.
            if run.location and run.phase != BackupPhase.LOST.value:
                prefix = (
                    layout.Location.parse(run.location).prefix
                    if run.location.startswith("s3://")
                    else run.location
                )
                delete_set(store, prefix)
            kube.delete_custom("LamassuBackup", namespace, victim)
        except LamassuBackupError as exc:
            report.errors.append(f"{victim}: {exc.message}")
            metrics.RETENTION_ERRORS.labels(namespace, name).inc()
            report.events.append(
                Event(
                    ref(policy),
                    "Warning",
                    "RetentionFailed",
                    f"could not delete {victim}: {exc.message}",
                )
            )
            continue
        report.deleted.append(victim)
        metrics.RETENTION_DELETED.labels(namespace, name).inc()
        report.events.append(
            Event(
                ref(policy),
                "Normal",
                "RetentionDeleted",
                f"deleted {victim} ({plan.deleted_reasons.get(victim, 'expired')})",
            )
        )
    return report
