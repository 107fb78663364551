"""Point-in-time restores through a LamassuRestore: the controller's decisions, as pure functions.

A restore whose ``spec.source.policyRef`` names a policy with WAL archiving
(``spec.components.postgres.walArchiving.enabled``) and which restores postgres is a
point-in-time restore: postgres comes from the policy's archive (a base backup and the WAL up to
``pointInTime``), the other components from the newest completed set taken at or before it, as
for any ``pointInTime``. Restoring postgres alone needs no set at all: the archive is then the
resolved source, and ``spec.confirm`` is the policy's name (the archive folder's last part).
"""

from __future__ import annotations

from collections.abc import Mapping
from datetime import datetime
from typing import Any

from ..models.policy import BackupPolicySpec
from ..models.restore import PointInTimeSource, ResolvedBackup, RestoreSpec
from ..models.runner import PointInTimeSettings
from . import layout

POSTGRES = "postgres"

REFUSALS = frozenset({"OutsideRecoverableWindow"})
"""Runner reasons that refuse the request itself (not a damaged set): said as such in status."""


def wal_enabled(policy: BackupPolicySpec | None) -> bool:
    """Whether the policy ships WAL (its archive can serve a point in time)."""
    pg = policy.components.postgres if policy is not None else None
    return pg is not None and pg.wal_archiving.enabled


def is_point_in_time(spec: RestoreSpec, policy: BackupPolicySpec | None) -> bool:
    """A restore by ``source.policyRef`` of a WAL-archiving policy that restores postgres (named,
    or every component by default)."""
    source = spec.source
    if source is None or source.policy_ref is None or not wal_enabled(policy):
        return False
    return not spec.components or POSTGRES in [str(c) for c in spec.components]


def set_needs(spec: RestoreSpec) -> list[str] | None:
    """What the set of a point-in-time restore must hold complete: None when no set is needed
    (postgres alone), else the named components less postgres (empty: a full run, as
    :func:`.restore_plan.choose_backup` decides for a restore of everything)."""
    named = [str(c) for c in spec.components]
    others = [c for c in named if c != POSTGRES]
    if named and not others:
        return None
    return others


def archive_prefix(policy: BackupPolicySpec, namespace: str, name: str) -> str:
    """The policy prefix the WAL archive lives under (``wal/``, ``basebackups/``)."""
    return layout.policy_prefix(policy.destination.s3.prefix, namespace, name)


def archive_url(policy: BackupPolicySpec, namespace: str, name: str) -> str:
    """``s3://bucket/<policy prefix>``."""
    return layout.Location(
        policy.destination.s3.bucket, archive_prefix(policy, namespace, name)
    ).url


def databases(policy: BackupPolicySpec) -> list[str]:
    """The databases recovery brings back by default: the policy's (one, in the Schemas layout)."""
    pg = policy.components.postgres
    if pg is None:
        return []
    return [pg.database] if pg.layout.value == "Schemas" else list(pg.databases)


def source_status(
    spec: RestoreSpec, policy: BackupPolicySpec, namespace: str, name: str, target: datetime | None
) -> PointInTimeSource:
    """What status says before the plan step has read the archive."""
    assert spec.source is not None
    return PointInTimeSource(
        requested=spec.source.point_in_time,
        target=target,
        archive=archive_url(policy, namespace, name),
    )


def archive_only(source: PointInTimeSource, policy: str) -> ResolvedBackup:
    """The resolved source of a restore of postgres alone: the archive, no set."""
    return ResolvedBackup(
        name=None,
        location=source.archive,
        policy=policy,
        components=[POSTGRES],
        point_in_time=source,
    )


def run_settings(
    spec: RestoreSpec, policy: BackupPolicySpec, namespace: str, name: str
) -> PointInTimeSettings:
    """The runner's part of a point-in-time restore."""
    assert spec.source is not None
    return PointInTimeSettings(
        archive_prefix=archive_prefix(policy, namespace, name),
        point_in_time=spec.source.point_in_time,
        databases=databases(policy),
    )


def _time(value: Any) -> datetime | None:
    if not value:
        return None
    try:
        return datetime.fromisoformat(str(value).replace("Z", "+00:00"))
    except ValueError:
        return None


def with_evidence(source: PointInTimeSource, evidence: Mapping[str, Any]) -> PointInTimeSource:
    """The status updated with what a runner step found (``evidence.pitr``): the base backup,
    the window, the target recovery stopped at."""
    found = evidence.get("pitr")
    if not isinstance(found, Mapping):
        return source
    wal_files = found.get("walFiles")
    return source.model_copy(
        update={
            "target": _time(found.get("target")) or source.target,
            "base_backup": found.get("baseBackup") or source.base_backup,
            "wal_files": wal_files if isinstance(wal_files, int) else source.wal_files,
            "recoverable_from": _time(found.get("recoverableFrom")) or source.recoverable_from,
            "recoverable_until": _time(found.get("recoverableUntil")) or source.recoverable_until,
            "last_shipped_wal": found.get("lastShippedWal") or source.last_shipped_wal,
            "archive_after": found.get("archiveAfter") or source.archive_after,
        }
    )


def planning_failure(reason: str | None, message: str | None) -> tuple[str, str]:
    """(reason, message) of a failed plan step: a refused point in time says so, not that the
    set did not verify."""
    text = message or "plan failed"
    if reason in REFUSALS:
        return reason, f"refused before anything was done, nothing was changed: {text}"
    return reason or "VerificationFailed", f"the set did not verify, nothing was changed: {text}"
