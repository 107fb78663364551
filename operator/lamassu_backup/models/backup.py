"""LamassuBackup: one backup run, the record a person inspects and a restore points at."""

from __future__ import annotations

from datetime import UTC, datetime
from enum import StrEnum
from typing import Any

from pydantic import Field

from .base import CRModel, Rule, StatusModel
from .common import ComponentName, Condition, LocalObjectRef


def _aware(moment: datetime) -> datetime:
    return moment if moment.tzinfo else moment.replace(tzinfo=UTC)


class Trigger(StrEnum):
    """Why a backup run exists."""

    SCHEDULED = "Scheduled"
    MANUAL = "Manual"
    PRE_RESTORE = "PreRestore"
    ON_CHANGE = "OnChange"
    DISCOVERED = "Discovered"


class BackupPhase(StrEnum):
    """Lifecycle of a backup run. Completed means every artifact and the manifest are stored and
    verified.
    """

    PENDING = "Pending"
    RUNNING = "Running"
    COMPLETED = "Completed"
    PARTIALLY_FAILED = "PartiallyFailed"
    FAILED = "Failed"
    LOST = "Lost"
    """The run completed, but its set is no longer in the bucket as recorded (deleted or
    replaced outside the operator): nothing may be restored from this record."""


TERMINAL_BACKUP_PHASES = frozenset(
    {BackupPhase.COMPLETED, BackupPhase.PARTIALLY_FAILED, BackupPhase.FAILED, BackupPhase.LOST}
)


_EARLIEST = datetime(2000, 1, 1, tzinfo=UTC)
_LATEST = datetime(2100, 1, 1, tzinfo=UTC)


class BackupSpec(CRModel):
    """Desired state of a LamassuBackup."""

    __rules__ = (
        Rule(
            "!has(self.scheduledTime) || (timestamp(self.scheduledTime) >= "
            "timestamp('2000-01-01T00:00:00Z') && timestamp(self.scheduledTime) < "
            "timestamp('2100-01-01T00:00:00Z'))",
            "spec.scheduledTime must be a time between 2000-01-01 and 2100-01-01 (it names the "
            "set's folder); leave it out for an on-demand backup",
            lambda m: m.scheduled_time is None or _EARLIEST <= _aware(m.scheduled_time) < _LATEST,
        ),
        Rule(
            "self.trigger != 'Discovered' || has(self.location)",
            "spec.trigger Discovered is set by the operator for sets it finds in the bucket (with "
            "spec.location); for a backup now use trigger Manual",
            lambda m: m.trigger != Trigger.DISCOVERED or m.location is not None,
        ),
    )

    policy_ref: LocalObjectRef
    """The policy whose settings (components, destination, encryption) this run uses."""

    components: list[ComponentName] = Field(
        default_factory=list, json_schema_extra={"x-kubernetes-list-type": "set"}
    )
    """Only these components; empty means every component of the policy."""

    trigger: Trigger = Trigger.MANUAL
    """Why the run exists; set by the operator except for Manual."""

    scheduled_time: datetime | None = None
    """The cron tick a Scheduled run belongs to."""

    pinned: bool = False
    """Retention never deletes a pinned set."""

    location: str | None = None
    """For Discovered runs: the s3:// URL of the set found in the bucket."""


class Artifact(StatusModel):
    """One stored object of a backup set."""

    component: ComponentName
    """Component the artifact belongs to."""

    name: str
    """Database, mount, volume or archive name."""

    kind: str
    """pg-dump, raft-snapshot, kv-export, config-archive, volume-archive, kms-metadata."""

    key: str
    """Object key in the bucket."""

    size_bytes: int
    """Stored (encrypted) size."""

    plaintext_size_bytes: int | None = None
    """Size of the plain content before compression and encryption."""

    sha256: str
    """SHA-256 of the stored object, re-checked before any restore."""

    plaintext_sha256: str
    """SHA-256 of the plain content (the .sha256 sidecar, sha256sum -c compatible)."""

    encryption: str
    """e.g. gpg+aws:kms."""

    compression: str | None = None
    """zstd-1, lz4-1, gzip-6 or none."""

    details: dict[str, Any] = Field(
        default_factory=dict,
        json_schema_extra={"x-kubernetes-preserve-unknown-fields": True},
    )
    """Component facts: server version, goose version, row counts, key ids..."""


class ManifestRef(StatusModel):
    """Where the set's manifest is; a set without a manifest is incomplete."""

    key: str
    """Object key of manifest.json."""

    sha256: str
    """SHA-256 of manifest.json."""

    signature_key: str | None = None
    """Object key of the detached signature (manifest.json.asc), when signed."""

    etag: str | None = None
    """The manifest object's ETag when last checked: the bucket audit re-reads the manifest only
    when it changes."""


class ComponentResult(StatusModel):
    """Outcome of one component's Job."""

    phase: BackupPhase
    """Pending, Running, Completed or Failed."""

    job_name: str | None = None
    """The Job that ran it."""

    reason: str | None = None
    """Why it failed (a short CamelCase reason)."""

    message: str | None = None
    """What happened, for a person."""

    started_at: datetime | None = None
    """When the Job started."""

    completed_at: datetime | None = None
    """When the Job ended."""


class VerificationPhase(StrEnum):
    """State of a test restore of this set."""

    PENDING = "Pending"
    RUNNING = "Running"
    VERIFIED = "Verified"
    FAILED = "Failed"


class VerificationStatus(StatusModel):
    """The newest test restore of this set."""

    phase: VerificationPhase
    """Pending, Running, Verified or Failed."""

    restore_name: str | None = None
    """The drill: a LamassuRestore with mode Drill (``kubectl get lrs``)."""

    job_name: str | None = None
    """The drill Job, for a drill an operator before LamassuRestore drills started."""

    started_at: datetime | None = None
    """When the drill started."""

    verified_at: datetime | None = None
    """When the drill succeeded."""

    message: str | None = None
    """Summary or failure reason."""

    evidence: dict[str, Any] = Field(
        default_factory=dict,
        json_schema_extra={"x-kubernetes-preserve-unknown-fields": True},
    )
    """Checksums, row counts, goose versions, key consistency, measured restore time."""


class BackupStatus(StatusModel):
    """Observed state of a LamassuBackup."""

    phase: BackupPhase = BackupPhase.PENDING
    """Lifecycle phase."""

    started_at: datetime | None = None
    """When the first Job started."""

    completed_at: datetime | None = None
    """When the run ended."""

    duration_seconds: float | None = None
    """Wall time of the run."""

    duration: str | None = None
    """The same, for people (e.g. 5m3s)."""

    location: str | None = None
    """s3:// URL of the set's folder."""

    lost_at: datetime | None = None
    """When the bucket audit found the set missing or replaced (phase Lost)."""

    set_time: str | None = None
    """The set's folder name (UTC time), fixed when the run starts."""

    manifest: ManifestRef | None = None
    """The set's manifest; present only when the set is complete."""

    size_bytes: int | None = None
    """Total stored bytes."""

    size: str | None = None
    """The same, for people (e.g. 1.2 GiB)."""

    artifacts: list[Artifact] = Field(default_factory=list)
    """Every stored object with both checksums."""

    components: dict[str, ComponentResult] = Field(default_factory=dict)
    """Outcome per component."""

    verification: VerificationStatus | None = None
    """The newest test restore of this set."""

    conditions: list[Condition] = Field(default_factory=list)
    """Completed, Verified."""

    observed_generation: int | None = None
    """The spec generation acted on."""
