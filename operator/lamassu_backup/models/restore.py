"""LamassuRestore: a restore (in place) or a drill (into scratch targets) of one backup set."""

from __future__ import annotations

import re
from datetime import datetime, timedelta
from enum import StrEnum
from typing import Any, Literal

from pydantic import Field, field_validator

from ..components.postgres.spec import PostgresOptions, PostgresTarget
from ..components.vault.spec import VaultOptions, VaultTarget
from .base import CRModel, Rule, StatusModel
from .common import (
    DNS_LABEL,
    AwsCredentialsSecretRef,
    ComponentName,
    Condition,
    LabelSelector,
    LocalObjectRef,
    SecretKeyRef,
)
from .policy import RunnerSettings
from .types import Duration


class RestoreMode(StrEnum):
    """Where the data goes."""

    IN_PLACE = "InPlace"
    DRILL = "Drill"


class S3Source(CRModel):
    """A set read straight from a bucket (a fresh cluster after a disaster)."""

    bucket: str = Field(min_length=3)
    """Bucket name."""

    path: str = Field(min_length=1, pattern=r"^[^/].*/$")
    """Key prefix of the set, ending in a slash: <prefix>/<namespace>/<policy>/<time>/."""

    region: str = "us-east-1"
    """Bucket region."""

    endpoint: str | None = Field(default=None, pattern=r"^https?://")
    """Endpoint for S3-compatible stores."""

    force_path_style: bool = False
    """Path-style addressing."""

    ca_secret: SecretKeyRef | None = None
    """CA certificate for a private endpoint."""

    credentials_secret: AwsCredentialsSecretRef | None = None
    """Credentials; ambient ones when absent."""


RFC3339 = (
    r"^[0-9]{4}-(0[1-9]|1[0-2])-(0[1-9]|[12][0-9]|3[01])[Tt]([01][0-9]|2[0-3]):[0-5][0-9]:"
    r"([0-5][0-9]|60)([.][0-9]{1,9})?([Zz]|[+-]([01][0-9]|2[0-3]):[0-5][0-9])$"
)
"""An RFC 3339 date-time, field ranges checked (the model also checks the day of the month)."""

PG_IDENTIFIER = r"^[A-Za-z_][A-Za-z0-9_$]{0,62}([.][A-Za-z_][A-Za-z0-9_$]{0,62})?$"
"""A plain (unquoted) PostgreSQL identifier, optionally <database>.<schema>: what the runner can
name without quoting games, and nothing an attacker can smuggle SQL through."""


def parse_point_in_time(value: str) -> datetime | None:
    """None for latest, else the aware time; ValueError for a time that does not exist."""
    if value == "latest":
        return None
    moment = datetime.fromisoformat(value.replace("z", "Z").replace("t", "T"))
    if moment.tzinfo is None:
        raise ValueError("pointInTime needs a time zone offset (Z or +hh:mm)")
    return moment


def _valid_point_in_time(value: str) -> bool:
    if value == "latest":
        return True
    if not re.match(RFC3339, value):
        return False
    try:
        parse_point_in_time(value)
    except ValueError:
        return False
    return True


class RestoreSource(CRModel):
    """Where the set comes from when it is not a LamassuBackup in this namespace."""

    __rules__ = (
        Rule(
            "has(self.policyRef) != has(self.s3)",
            "source needs exactly one of policyRef or s3",
            lambda m: (m.policy_ref is None) != (m.s3 is None),
        ),
        Rule(
            f"self.pointInTime == 'latest' || self.pointInTime.matches('{RFC3339}')",
            "spec.source.pointInTime must be latest or an RFC 3339 time with a zone, "
            "e.g. 2026-11-24T10:00:00Z",
            lambda m: _valid_point_in_time(m.point_in_time),
        ),
    )

    policy_ref: LocalObjectRef | None = None
    """Choose among a policy's sets (see pointInTime)."""

    point_in_time: str = Field(default="latest", max_length=64)
    """latest, or an RFC 3339 time: the newest completed set taken at or before it."""

    s3: S3Source | None = None
    """A set in a bucket, by path."""


_NAMESPACE_MESSAGE = (
    "spec.target.namespace must be a namespace name (DNS-1123 label): lowercase letters, "
    "digits and '-', starting and ending with a letter or digit, at most 63 characters"
)


class RestoreTarget(CRModel):
    """Overrides of where each component is restored; the policy's servers otherwise."""

    postgres: PostgresTarget | None = None
    """PostgreSQL target."""

    vault: VaultTarget | None = None
    """Vault target."""

    namespace: str | None = Field(
        default=None,
        max_length=63,
        json_schema_extra={
            "x-kubernetes-validations": [
                {"rule": f"self.matches('{DNS_LABEL}')", "message": _NAMESPACE_MESSAGE}
            ]
        },
    )
    """Namespace for restored ConfigMaps and Secrets (default: the restore's namespace)."""

    @field_validator("namespace")
    @classmethod
    def _namespace_is_a_label(cls, value: str | None) -> str | None:
        if value is not None and re.match(DNS_LABEL, value) is None:
            raise ValueError(_NAMESPACE_MESSAGE)
        return value


class WorkloadRef(CRModel):
    """A workload to scale down during the restore."""

    kind: Literal["Deployment", "StatefulSet"]
    """Deployment or StatefulSet."""

    name: str = Field(min_length=1)
    """Its name."""


class Workloads(CRModel):
    """Lamassu workloads scaled to zero before an in-place restore and back after, come what may."""

    selector: LabelSelector | None = None
    """Deployments and StatefulSets with these labels."""

    names: list[WorkloadRef] = Field(default_factory=list)
    """Workloads by name."""

    timeout: Duration = timedelta(minutes=5)
    """How long to wait for Pods to stop before giving up (the restore then fails untouched)."""


class RestoreOptions(CRModel):
    """Per-component options."""

    postgres: PostgresOptions = Field(default_factory=PostgresOptions)
    """PostgreSQL options."""

    vault: VaultOptions = Field(default_factory=VaultOptions)
    """Vault options."""


class Validation(CRModel):
    """Checks run after the data is restored; a failed check rolls an in-place restore back."""

    health_checks: list[str] = Field(
        default_factory=list,
        json_schema_extra={"items": {"type": "string", "pattern": "^https?://"}},
    )
    """URLs that must answer 2xx after the workloads are back (e.g. http://ca.lamassu.svc:8085/health).
    """

    key_consistency: bool = True
    """Every kms_keys row with a private key, and every CA's subject key id, resolves in the
    restored key store.
    """

    timeout: Duration = timedelta(minutes=5)
    """How long health checks may take to pass."""


class RestoreSpec(CRModel):
    """Desired state of a LamassuRestore."""

    __rules__ = (
        Rule(
            "has(self.backupRef) != has(self.source)",
            "a restore names exactly one source: spec.backupRef or spec.source",
            lambda m: (m.backup_ref is None) != (m.source is None),
        ),
        Rule(
            "self.mode != 'InPlace' || self.dryRun || has(self.confirm)",
            "an in-place restore that is not a dry run needs spec.confirm set to the name of "
            "the backup being restored (run it with dryRun: true first to see that name)",
            lambda m: m.mode != RestoreMode.IN_PLACE or m.dry_run or m.confirm is not None,
        ),
        Rule(
            "!has(self.confirm) || !has(self.backupRef) || self.confirm == self.backupRef.name",
            "spec.confirm must equal spec.backupRef.name",
            lambda m: m.confirm is None or m.backup_ref is None or m.confirm == m.backup_ref.name,
        ),
        Rule(
            f"self.databases.all(d, d.matches('{PG_IDENTIFIER}'))",
            "spec.databases: each entry must be a PostgreSQL identifier (letters, digits, _ "
            "and $, starting with a letter or _, at most 63 characters) or <database>.<schema>, "
            "e.g. ca or lamassu.ca",
            lambda m: all(re.match(PG_IDENTIFIER, d) for d in m.databases),
        ),
    )

    backup_ref: LocalObjectRef | None = None
    """The LamassuBackup to restore."""

    source: RestoreSource | None = None
    """Or: a policy's newest set / a point in time / a set in a bucket."""

    components: list[ComponentName] = Field(
        default_factory=list, json_schema_extra={"x-kubernetes-list-type": "set"}
    )
    """Only these components; empty means every component in the set."""

    databases: list[str] = Field(
        default_factory=list,
        max_length=64,
        json_schema_extra={"items": {"type": "string", "maxLength": 127}},
    )
    """Only these databases (or schemas); empty means all in the set."""

    mode: RestoreMode = RestoreMode.DRILL
    """Drill (default, touches nothing live) or InPlace."""

    target: RestoreTarget | None = None
    """Restore somewhere else than the policy's servers."""

    workloads: Workloads | None = None
    """Workloads to stop during an in-place restore."""

    pre_restore_backup: bool = True
    """InPlace: take a safety set first; the restore does not start unless it completes."""

    dry_run: bool = False
    """Compute and show the plan in status; change nothing."""

    finalize_after: Duration = timedelta(hours=1)
    """InPlace: how long after success the previous databases are kept (a person can still roll
    back by hand: `lamassu-backup runner restore --step rollback`) before they are dropped.
    """

    confirm: str | None = None
    """InPlace: must equal the name of the LamassuBackup being restored, or for source.s3 the
    set's folder (e.g. 20261124T100000Z-1a2b3c4d); a dry run shows it in status.resolvedBackup.
    """

    decryption_key_secret: SecretKeyRef
    """ASCII-armoured private key that decrypts the set."""

    decryption_key_passphrase_secret: SecretKeyRef | None = None
    """Its passphrase, if any."""

    signer_key_secret: SecretKeyRef | None = None
    """Public key that must have signed the manifest; a signed set is refused without it unless
    insecureSkipSignatureCheck.
    """

    insecure_skip_signature_check: bool = False
    """Restore a signed set without checking its signature (break-glass only)."""

    options: RestoreOptions = Field(default_factory=RestoreOptions)
    """Per-component options."""

    validation: Validation = Field(default_factory=Validation)
    """Post-restore checks."""

    runner: RunnerSettings | None = None
    """Settings of the restore's runner Jobs (image, resources, scratch volume, deadlines);
    default: the policy's ``spec.runner``. A bare S3 set has no policy, so this is where its
    image and scratch size come from (an account that writes live config is still swapped for
    ``lamassu-backup-restore`` when left at the runner's default)."""


class RestorePhase(StrEnum):
    """Where a restore is."""

    PENDING = "Pending"
    PLANNING = "Planning"
    PLANNED = "Planned"
    PAUSING_BACKUPS = "PausingBackups"
    PRE_RESTORE_BACKUP = "PreRestoreBackup"
    SCALING_DOWN = "ScalingDown"
    RESTORING = "Restoring"
    VALIDATING = "Validating"
    ROLLING_BACK = "RollingBack"
    SCALING_UP = "ScalingUp"
    COMPLETED = "Completed"
    FAILED = "Failed"
    ROLLED_BACK = "RolledBack"


TERMINAL_RESTORE_PHASES = frozenset(
    {
        RestorePhase.COMPLETED,
        RestorePhase.FAILED,
        RestorePhase.ROLLED_BACK,
        RestorePhase.PLANNED,
    }
)


class PlanItem(StatusModel):
    """One thing the restore will (or did) change."""

    component: str
    """postgres, vault, config, volumes."""

    target: str
    """What is overwritten: a database, a KV mount, an object."""

    action: str
    """e.g. restore into scratch, verify, swap; create; update; unchanged."""

    detail: str | None = None
    """Sizes, checksums, counts."""


class StepPhase(StrEnum):
    """State of one step."""

    PENDING = "Pending"
    RUNNING = "Running"
    SUCCEEDED = "Succeeded"
    FAILED = "Failed"
    SKIPPED = "Skipped"


class Step(StatusModel):
    """One step of the restore, in order."""

    name: str
    """Step name."""

    phase: StepPhase
    """Its state."""

    started_at: datetime | None = None
    """Start."""

    completed_at: datetime | None = None
    """End."""

    message: str | None = None
    """What happened."""

    job: str | None = None
    """The runner Job of this step, if it has one."""


class ScaledWorkload(StatusModel):
    """A workload the restore scaled down, and the replicas it must get back."""

    kind: str
    """Deployment or StatefulSet."""

    name: str
    """Name."""

    replicas: int
    """Replicas before the restore."""


class PointInTimeSource(StatusModel):
    """Where a point-in-time restore takes PostgreSQL from: a base backup and the WAL after it."""

    requested: str
    """spec.source.pointInTime as given (latest or an RFC 3339 time)."""

    target: datetime | None = None
    """The time recovery stops at (commits at or before it are kept); None: everything shipped."""

    archive: str
    """s3:// URL of the policy's archive (its wal/ and basebackups/)."""

    base_backup: str | None = None
    """The base backup recovery starts from (its set time), known once the plan step ran."""

    wal_files: int | None = None
    """WAL objects recovery replays."""

    recoverable_from: datetime | None = None
    """The window when the restore was planned: the end of the oldest usable base backup..."""

    recoverable_until: datetime | None = None
    """...until the last shipped commit."""

    last_shipped_wal: str | None = None
    """The newest WAL object in the archive when planned."""

    archive_after: str | None = None
    """What happens to WAL shipping after an in-place restore (it continues where it was: the
    live server's history is not forked)."""


class ResolvedBackup(StatusModel):
    """The set the restore uses."""

    name: str | None = None
    """LamassuBackup name (absent for a bare S3 source)."""

    location: str
    """s3:// URL of the set."""

    manifest_sha256: str | None = None
    """SHA-256 of its manifest."""

    policy: str | None = None
    """The policy it belongs to (whose servers, bucket and runner settings the restore uses)."""

    set_time: str | None = None
    """The set's time (its folder in the bucket)."""

    components: list[str] = Field(default_factory=list)
    """Components the set holds complete (empty: unknown, a bare S3 set)."""

    point_in_time: PointInTimeSource | None = None
    """Set for a point-in-time restore: postgres comes from the WAL archive, not this set (the
    set, when named, gives the other components)."""


class RestoreStatus(StatusModel):
    """Observed state of a LamassuRestore."""

    phase: RestorePhase = RestorePhase.PENDING
    """Where the restore is."""

    step: str | None = None
    """The current step."""

    resolved_backup: ResolvedBackup | None = None
    """The set being restored."""

    plan: list[PlanItem] = Field(default_factory=list)
    """What will be (or was) overwritten, in order."""

    steps: list[Step] = Field(default_factory=list)
    """Every step so far."""

    scaled_workloads: list[ScaledWorkload] = Field(default_factory=list)
    """Workloads scaled down, with their previous replicas."""

    workloads_recorded: bool = False
    """The workloads to stop were listed and their replicas recorded, before any was scaled."""

    pre_restore_backup: str | None = None
    """The safety set taken before an in-place restore."""

    components: dict[str, str] = Field(default_factory=dict)
    """Per component: the runner's result (Completed, Verified, RolledBack, Failed: reason)."""

    outcome: RestorePhase | None = None
    """The end phase once decided; the workloads are scaled back up before it is reached."""

    reason: str | None = None
    """CamelCase reason of a failure or rollback."""

    message: str | None = None
    """What happened, in one line."""

    swap_suffix: str | None = None
    """Suffix of the databases kept aside (<db>__pre_restore_<suffix>) for rollback/finalize."""

    finalized_at: datetime | None = None
    """When the kept databases were dropped (finalize)."""

    warnings: int = 0
    """Warnings reported (see the Events)."""

    errors: int = 0
    """Errors reported."""

    started_at: datetime | None = None
    """Start."""

    completed_at: datetime | None = None
    """End."""

    recovery_time_seconds: float | None = None
    """Measured time to restore (RTO evidence)."""

    evidence: dict[str, Any] = Field(
        default_factory=dict,
        json_schema_extra={"x-kubernetes-preserve-unknown-fields": True},
    )
    """Checksums, row counts, goose versions, key consistency."""

    conditions: list[Condition] = Field(default_factory=list)
    """Ready, Completed."""

    observed_generation: int | None = None
    """The spec generation acted on."""
