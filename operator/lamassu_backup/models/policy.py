"""LamassuBackupPolicy: what to back up, when, where to, and how long to keep it."""

from __future__ import annotations

from datetime import datetime, timedelta
from enum import StrEnum
from typing import Any, Literal

from pydantic import Field, field_validator

from ..components.aws_kms.spec import AwsKmsComponent
from ..components.config.spec import ConfigComponent
from ..components.postgres.spec import PostgresComponent
from ..components.vault.spec import VaultComponent
from ..components.volumes.spec import MAX_VOLUMES, VolumeSource
from .base import CRModel, Rule, StatusModel
from .common import (
    OBJECT_NAME,
    AwsCredentialsSecretRef,
    ComponentName,
    Condition,
    ObjectName,
    SecretKeyRef,
)
from .types import CronSchedule, Duration, Quantity, TimeZone


def _unique(values: list[Any]) -> bool:
    return len(values) == len(set(values))


class ConcurrencyPolicy(StrEnum):
    """What to do when a run is due while the previous one is still running."""

    FORBID = "Forbid"
    REPLACE = "Replace"


class Components(CRModel):
    """What one backup set holds. Every run backs up all configured components together."""

    __rules__ = (
        Rule(
            " || ".join(
                f"size(self.{n}) > 0" if n == ComponentName.VOLUMES else f"has(self.{n})"
                for n in ComponentName
            ),
            "a policy needs at least one component: "
            f"{', '.join(list(ComponentName)[:-1])} or {list(ComponentName)[-1]}",
            lambda m: bool(m.names()),
        ),
        Rule(
            "self.volumes.all(v, !has(v.keyStoreEngine) || self.volumes.exists_one(w, "
            "has(w.keyStoreEngine) && w.keyStoreEngine == v.keyStoreEngine))",
            "keyStoreEngine must be unique across volumes: each filesystem engine's storage "
            "directory is on one volume",
            lambda m: _unique([v.key_store_engine for v in m.volumes if v.key_store_engine]),
        ),
        Rule(
            "!has(self.vault) || !has(self.vault.keyStoreEngines) || self.volumes.all(v, "
            "!has(v.keyStoreEngine) || !(v.keyStoreEngine in self.vault.keyStoreEngines))",
            "an engine's keys are either in Vault (vault.keyStoreEngines) or on a volume "
            "(volumes[].keyStoreEngine), not both",
            lambda m: (
                m.vault is None
                or not {v.key_store_engine for v in m.volumes} & set(m.vault.key_store_engines)
            ),
        ),
        Rule(
            "!has(self.awsKms) || !has(self.awsKms.keyStoreEngine) || ("
            "(!has(self.vault) || !has(self.vault.keyStoreEngines) || "
            "!(self.awsKms.keyStoreEngine in self.vault.keyStoreEngines)) && "
            "self.volumes.all(v, !has(v.keyStoreEngine) || "
            "v.keyStoreEngine != self.awsKms.keyStoreEngine))",
            "awsKms.keyStoreEngine names an engine whose keys are in AWS KMS: not one in Vault "
            "(vault.keyStoreEngines) or on a volume (volumes[].keyStoreEngine)",
            lambda m: (
                m.aws_kms is None
                or m.aws_kms.key_store_engine is None
                or (
                    m.aws_kms.key_store_engine
                    not in {v.key_store_engine for v in m.volumes}
                    | set(m.vault.key_store_engines if m.vault is not None else [])
                )
            ),
        ),
    )

    postgres: PostgresComponent | None = None
    """PostgreSQL databases."""

    vault: VaultComponent | None = None
    """Vault/OpenBao raft snapshot and KV exports."""

    volumes: list[VolumeSource] = Field(
        default_factory=list,
        max_length=MAX_VOLUMES,
        json_schema_extra={
            "x-kubernetes-list-type": "map",
            "x-kubernetes-list-map-keys": ["name"],
        },
    )
    """File stores on volumes."""

    config: ConfigComponent | None = None
    """ConfigMaps and Secrets."""

    aws_kms: AwsKmsComponent | None = None
    """AWS KMS key metadata."""

    volumes_recovery_point_objective: Duration = timedelta(hours=25)
    """Stale when the last successful backup of the volumes is older than this."""

    @field_validator("volumes")
    @classmethod
    def _unique_volume_names(cls, volumes: list[VolumeSource]) -> list[VolumeSource]:
        names = [v.name for v in volumes]
        duplicates = sorted({n for n in names if names.count(n) > 1})
        if duplicates:
            raise ValueError(f"duplicate volume name(s): {', '.join(duplicates)}")
        return volumes

    def names(self) -> list[str]:
        """Configured component names, in field order (the order a backup lists them)."""
        wanted = {c.value for c in ComponentName}
        return [
            info.alias or attr
            for attr, info in type(self).model_fields.items()
            if (info.alias or attr) in wanted and getattr(self, attr)
        ]


class ServerSideEncryption(CRModel):
    """S3 server-side encryption, on top of the client-side GPG encryption."""

    type: Literal["aws:kms", "AES256", "none"] = "aws:kms"
    """aws:kms (SSE-KMS, as the runbook), AES256 (SSE-S3) or none."""

    kms_key_id: str | None = None
    """KMS key id or ARN for aws:kms; the bucket's default key when empty."""


class S3Destination(CRModel):
    """An S3 bucket (AWS or S3-compatible)."""

    bucket: str = Field(min_length=3, max_length=63)
    """Bucket name."""

    prefix: str = Field(default="", pattern=r"^([^/].*[^/]|[^/])?$")
    """Key prefix without leading or trailing slash; sets go under
    <prefix>/<namespace>/<policy>/<time>/.
    """

    region: str = "us-east-1"
    """Bucket region."""

    endpoint: str | None = Field(default=None, pattern=r"^https?://")
    """Endpoint URL for S3-compatible stores; empty for AWS."""

    force_path_style: bool = False
    """Use path-style addressing (most S3-compatible servers need it)."""

    ca_secret: SecretKeyRef | None = None
    """CA certificate for a private endpoint."""

    credentials_secret: AwsCredentialsSecretRef | None = None
    """Credentials; when absent, the runner Pod's ambient credentials (IRSA) are used."""

    server_side_encryption: ServerSideEncryption = Field(default_factory=ServerSideEncryption)
    """Server-side encryption applied to every object."""

    storage_class: str | None = None
    """S3 storage class, e.g. STANDARD_IA."""


class Destination(CRModel):
    """Where backup sets are stored."""

    s3: S3Destination
    """The S3 bucket."""


class GpgEncryption(CRModel):
    """Client-side OpenPGP encryption: only holders of the private key can read a set."""

    recipients_secret: SecretKeyRef
    """ASCII-armoured PUBLIC keys; every artifact is encrypted to all of them."""

    signing_key_secret: SecretKeyRef | None = None
    """ASCII-armoured private key that signs each manifest (detached signature manifest.json.asc).
    """

    signing_key_passphrase_secret: SecretKeyRef | None = None
    """Passphrase of the signing key, if it has one."""


class Encryption(CRModel):
    """Encryption of every artifact. Mandatory: config backups carry credentials in plain text."""

    gpg: GpgEncryption
    """GPG settings."""


class Retention(CRModel):
    """Which sets to keep: the union of every rule, minus sets older than maxAge.

    The newest completed set and the newest ``keepVerified`` verified sets are never deleted.
    """

    keep_last: int | None = Field(default=24, ge=0)
    """Keep the N newest completed sets."""

    keep_hourly: int | None = Field(default=None, ge=0)
    """Keep the newest set of each of the last N hours that have one."""

    keep_daily: int | None = Field(default=30, ge=0)
    """Keep the newest set of each of the last N days that have one."""

    keep_weekly: int | None = Field(default=12, ge=0)
    """Keep the newest set of each of the last N ISO weeks that have one."""

    keep_monthly: int | None = Field(default=12, ge=0)
    """Keep the newest set of each of the last N months that have one."""

    keep_yearly: int | None = Field(default=None, ge=0)
    """Keep the newest set of each of the last N years that have one."""

    max_age: Duration | None = None
    """Delete sets older than this even when a keep rule matches (verified and newest excepted)."""

    keep_verified: int = Field(default=1, ge=0)
    """The N newest sets whose verification succeeded are never deleted."""

    keep_failed: int = Field(default=3, ge=0)
    """Failed or partially failed run records kept for inspection (their objects are removed)."""


class Verification(CRModel):
    """Scheduled test restores (drills) of the newest set into scratch targets."""

    __rules__ = (
        Rule(
            "!has(self.schedule) || has(self.decryptionKeySecret)",
            "verification.schedule needs verification.decryptionKeySecret "
            "(the private key that decrypts the sets)",
            lambda m: m.schedule is None or m.decryption_key_secret is not None,
        ),
    )

    schedule: CronSchedule | None = None
    """When to test-restore the newest set; none disables scheduled verification."""

    decryption_key_secret: SecretKeyRef | None = None
    """ASCII-armoured private key that decrypts the sets."""

    decryption_key_passphrase_secret: SecretKeyRef | None = None
    """Its passphrase, if any."""

    signer_key_secret: SecretKeyRef | None = None
    """Public key that must have signed the manifest (defaults to not checking signatures)."""

    key_consistency: bool = True
    """Check that every kms_keys row with a private key resolves in the restored key store."""

    max_age: Duration = timedelta(days=8)
    """Verified turns False when the last successful verification is older than this."""


class Toleration(CRModel):
    """A Pod toleration."""

    key: str | None = None
    """Taint key."""

    operator: Literal["Exists", "Equal"] | None = None
    """Exists or Equal."""

    value: str | None = None
    """Taint value for Equal."""

    effect: Literal["NoSchedule", "PreferNoSchedule", "NoExecute"] | None = None
    """Taint effect."""

    toleration_seconds: int | None = None
    """For NoExecute: how long the Pod stays bound."""


class Resources(CRModel):
    """Container resource requests and limits."""

    requests: dict[str, Quantity] = Field(
        default_factory=lambda: {"cpu": "250m", "memory": "256Mi"}
    )
    """Requested resources."""

    limits: dict[str, Quantity] = Field(default_factory=lambda: {"memory": "512Mi"})
    """Limits; the runner streams, so memory stays flat whatever the database size."""


class Scratch(CRModel):
    """The runner's only writable directory (an emptyDir at /tmp)."""

    size_limit: Quantity = "64Mi"
    """Its size limit. The runner streams, so 64Mi is enough unless a restore spools dumps to
    disk (``options.postgres.jobs`` above 1 needs the largest dump) or a drill extracts volumes."""

    medium: Literal["Memory", "Disk"] = "Memory"
    """Memory (tmpfs, counted against the container's memory limit) or Disk (the node's)."""


_UNDER_A_MINUTE = "'^(0+[smhdw])*(0*[0-5]?[0-9]s)?$'"


class RunnerSettings(CRModel):
    """How backup, verification and restore Jobs run."""

    __rules__ = (
        Rule(
            f"!has(self.activeDeadline) || !self.activeDeadline.matches({_UNDER_A_MINUTE})",
            "spec.runner.activeDeadline must be at least 1m: a shorter deadline stops every Job "
            "before it can finish",
            lambda m: m.active_deadline >= timedelta(minutes=1),
        ),
        Rule(
            f"!has(self.ttlAfterFinished) || !self.ttlAfterFinished.matches({_UNDER_A_MINUTE})",
            "spec.runner.ttlAfterFinished must be at least 1m: the operator reads each finished "
            "Job's result before it is garbage-collected",
            lambda m: m.ttl_after_finished >= timedelta(minutes=1),
        ),
    )

    image: str = "ghcr.io/lamassuiot/lamassu-backup-runner:0.1.0"
    """Runner image: the operator image, which holds pg_dump, gpg, zstd and the runner."""

    image_pull_policy: Literal["Always", "IfNotPresent", "Never"] = "IfNotPresent"
    """Image pull policy."""

    image_pull_secrets: list[ObjectName] = Field(default_factory=list)
    """Names of image pull Secrets."""

    service_account_name: str = Field(
        default="lamassu-backup-runner", max_length=253, pattern=OBJECT_NAME
    )
    """ServiceAccount of the runner Pods (needs read access to the config component's objects)."""

    resources: Resources = Field(default_factory=Resources)
    """Resources of the runner container."""

    node_selector: dict[str, str] = Field(default_factory=dict)
    """Node selector for the runner Pods."""

    tolerations: list[Toleration] = Field(default_factory=list)
    """Tolerations for the runner Pods."""

    priority_class_name: str | None = Field(default=None, max_length=253, pattern=OBJECT_NAME)
    """Priority class of the runner Pods."""

    active_deadline: Duration = timedelta(hours=2)
    """A Job running longer than this is stopped and the run marked Failed (DeadlineExceeded)."""

    backoff_limit: int = Field(default=1, ge=0, le=10)
    """Retries of a failed runner Pod before the component fails."""

    ttl_after_finished: Duration = timedelta(days=1)
    """Finished Jobs are garbage-collected after this; results live on in LamassuBackup status."""

    run_as_user: int = Field(default=65532, ge=1)
    """Non-root user of the runner; for the volumes component, the owner of the files it reads."""

    run_as_group: int = Field(default=65532, ge=1)
    """Group of the runner process."""

    fs_group: int | None = Field(default=65532, ge=1)
    """Group owning mounted volumes (lets the runner read Secret files and PVCs)."""

    scratch: Scratch = Field(default_factory=Scratch)
    """The scratch volume at /tmp."""

    pod_labels: dict[str, str] = Field(default_factory=dict)
    """Extra labels on runner Pods (e.g. for NetworkPolicies)."""

    pod_annotations: dict[str, str] = Field(default_factory=dict)
    """Extra annotations on runner Pods."""


class BackupPolicySpec(CRModel):
    """Desired state of a LamassuBackupPolicy."""

    schedule: CronSchedule = "0 * * * *"
    """Cron schedule (5 fields) or a macro such as @hourly. Default: hourly, as in the runbook."""

    time_zone: TimeZone = "Etc/UTC"
    """IANA time zone the schedule is read in."""

    jitter: Duration = timedelta(0)
    """Up to this much delay, fixed per policy (derived from its identity): spreads load without
    randomness.
    """

    starting_deadline: Duration = timedelta(minutes=30)
    """A run not started within this of its scheduled time is recorded as Missed, not fired late."""

    concurrency_policy: ConcurrencyPolicy = ConcurrencyPolicy.FORBID
    """Forbid: a due run while one is running is recorded as Skipped. Replace: the running one is
    stopped.
    """

    suspend: bool = False
    """Stop scheduling; resuming does not fire the runs missed meanwhile."""

    components: Components
    """What to back up."""

    destination: Destination
    """Where to store the sets."""

    encryption: Encryption
    """Client-side encryption."""

    retention: Retention = Field(default_factory=Retention)
    """What to keep."""

    verification: Verification = Field(default_factory=Verification)
    """Scheduled test restores."""

    runner: RunnerSettings = Field(default_factory=RunnerSettings)
    """Job settings."""

    recent_runs_limit: int = Field(default=10, ge=1, le=50)
    """How many recent runs (including Skipped and Missed) the status lists."""


class ComponentStatus(StatusModel):
    """Freshness of one component."""

    last_successful_time: datetime | None = None
    """When the component was last backed up successfully."""

    recovery_point_objective: str | None = None
    """The objective it is measured against."""

    stale: bool = False
    """True when the last success is older than the objective (or there is none yet)."""


class RunPhase(StrEnum):
    """Outcome of a scheduled tick."""

    PENDING = "Pending"
    RUNNING = "Running"
    COMPLETED = "Completed"
    PARTIALLY_FAILED = "PartiallyFailed"
    FAILED = "Failed"
    SKIPPED = "Skipped"
    MISSED = "Missed"


class RunRecord(StatusModel):
    """One entry of the policy's recent runs."""

    name: str | None = None
    """The LamassuBackup of the run (none for Skipped and Missed ticks)."""

    phase: RunPhase
    """Outcome."""

    trigger: str | None = None
    """Scheduled, Manual, OnChange..."""

    scheduled_time: datetime | None = None
    """The cron tick, for scheduled runs."""

    started_at: datetime | None = None
    """When it started."""

    completed_at: datetime | None = None
    """When it ended."""

    location: str | None = None
    """s3:// URL of the set."""

    size_bytes: int | None = None
    """Total stored bytes."""

    reason: str | None = None
    """Why it was skipped, missed or failed."""


class PointInTimeRecoveryStatus(StatusModel):
    """The recoverable window of WAL archiving (``spec.components.postgres.walArchiving``), as
    the bucket holds it when the operator last looked."""

    recoverable_from: datetime | None = None
    """End of the oldest base backup with an unbroken WAL chain to now: the earliest target."""

    recoverable_until: datetime | None = None
    """The last commit in the shipped WAL: the latest target."""

    last_shipped_wal: str | None = None
    """The newest WAL file shipped (a segment, or the segment in progress)."""

    last_shipped_at: datetime | None = None
    """When it was stored."""

    last_shipped_age: str | None = None
    """Age of the recovery point (the shipper's caught-up time, else the last upload)."""

    caught_up_at: datetime | None = None
    """Everything the server had written at this time is in the bucket (the shipper measures it)."""

    base_backups: int = 0
    """Base backups a restore can start from."""

    lag_bytes: int | None = None
    """WAL the server keeps for the slot that the bucket does not hold yet."""

    shipper: str | None = None
    """Available, Unavailable or Starting: the shipper Deployment."""

    last_base_backup_schedule: datetime | None = None
    """The last baseBackupSchedule tick acted on."""

    last_base_backup: str | None = None
    """The Job of the newest base backup."""

    last_base_backup_phase: str | None = None
    """Running, Completed or Failed (with the runner's reason)."""

    gaps: list[str] = Field(default_factory=list)
    """Why older base backups cannot be restored from (missing WAL), if any."""

    last_drill: str | None = None
    """The newest scheduled point-in-time drill (a LamassuRestore): postgres recovered into
    scratch to a moment five minutes before the verification tick, checked, torn down."""

    last_drill_phase: str | None = None
    """Its phase (Completed, Failed, or still running), with its reason when it failed."""

    last_drill_target: datetime | None = None
    """The moment it recovered to."""

    message: str | None = None
    """What keeps the window from being read or extended, if anything."""


class BackupPolicyStatus(StatusModel):
    """Observed state of a LamassuBackupPolicy."""

    observed_generation: int | None = None
    """The spec generation last acted on."""

    conditions: list[Condition] = Field(default_factory=list)
    """Ready, Stale, LastRunSucceeded, Verified."""

    last_schedule_time: datetime | None = None
    """The last cron tick acted on (fired, skipped or missed)."""

    next_schedule_time: datetime | None = None
    """When the next run is due (jitter included)."""

    last_successful_time: datetime | None = None
    """When the last fully successful run completed."""

    last_verified_time: datetime | None = None
    """When a set was last verified by a test restore."""

    components: dict[str, ComponentStatus] = Field(default_factory=dict)
    """Freshness per component."""

    recent_runs: list[RunRecord] = Field(default_factory=list)
    """Newest first, bounded by spec.recentRunsLimit."""

    last_verification_schedule_time: datetime | None = None
    """The last verification tick acted on."""

    run_now_handled: str | None = None
    """The last value of the backup.lamassu.io/run-now annotation acted on."""

    retention: dict[str, Any] | None = Field(
        default=None, json_schema_extra={"x-kubernetes-preserve-unknown-fields": True}
    )
    """The last retention pass: when, what was deleted, errors."""

    point_in_time_recovery: PointInTimeRecoveryStatus | None = None
    """WAL archiving's recoverable window (only when walArchiving is enabled)."""
