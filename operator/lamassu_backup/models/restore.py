"""LamassuRestore: a restore (in place) or a drill (into scratch targets) of one backup set."""

from __future__ import annotations

from datetime import datetime, timedelta
from enum import StrEnum
from typing import Any, Literal

from pydantic import Field

from .base import CRModel, Rule, StatusModel
from .common import (
    AwsCredentialsSecretRef,
    BasicAuthSecretRef,
    ComponentName,
    Condition,
    LabelSelector,
    LocalObjectRef,
    SecretKeyRef,
)
from .policy import SslMode, VaultAuth
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


class RestoreSource(CRModel):
    """Where the set comes from when it is not a LamassuBackup in this namespace."""

    __rules__ = (
        Rule(
            "has(self.policyRef) != has(self.s3)",
            "source needs exactly one of policyRef or s3",
            lambda m: (m.policy_ref is None) != (m.s3 is None),
        ),
    )

    policy_ref: LocalObjectRef | None = None
    """Choose among a policy's sets (see pointInTime)."""

    point_in_time: str = Field(default="latest", pattern=r"^(latest|\d{4}-\d{2}-\d{2}T.*)$")
    """latest, or an RFC 3339 time: the newest completed set taken at or before it."""

    s3: S3Source | None = None
    """A set in a bucket, by path."""


class PostgresTarget(CRModel):
    """Restore into another PostgreSQL server (e.g. a DR instance)."""

    host: str = Field(min_length=1)
    """Host of the target server."""

    port: int = Field(default=5432, ge=1, le=65535)
    """Port."""

    ssl_mode: SslMode = SslMode.PREFER
    """libpq sslmode."""

    ca_secret: SecretKeyRef | None = None
    """CA certificate for verify-ca/verify-full."""

    credentials_secret: BasicAuthSecretRef
    """A role that can create, rename and drop the databases restored."""


class VaultTarget(CRModel):
    """Restore into another Vault/OpenBao."""

    address: str = Field(pattern=r"^https?://")
    """Address of the target."""

    ca_secret: SecretKeyRef | None = None
    """CA certificate."""

    auth: VaultAuth
    """How to authenticate."""


class RestoreTarget(CRModel):
    """Overrides of where each component is restored; the policy's servers otherwise."""

    postgres: PostgresTarget | None = None
    """PostgreSQL target."""

    vault: VaultTarget | None = None
    """Vault target."""

    namespace: str | None = None
    """Namespace for restored ConfigMaps and Secrets (default: the restore's namespace)."""


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


class PostgresOptions(CRModel):
    """PostgreSQL restore options."""

    jobs: int = Field(default=1, ge=1, le=16)
    """pg_restore parallel jobs; above 1 the dump is spooled to a local file first."""

    keep_previous: bool = False
    """Keep the pre-restore databases (<db>__pre_restore_<time>) after a successful validation."""


class VaultOptions(CRModel):
    """Vault restore options."""

    method: Literal["KV", "RaftSnapshot"] = "KV"
    """KV: write exported secrets into their mounts. RaftSnapshot: replace the whole Vault."""

    overwrite_existing: bool = False
    """KV: overwrite keys whose current value differs from the backup (reported either way)."""


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
    )

    backup_ref: LocalObjectRef | None = None
    """The LamassuBackup to restore."""

    source: RestoreSource | None = None
    """Or: a policy's newest set / a point in time / a set in a bucket."""

    components: list[ComponentName] = Field(
        default_factory=list, json_schema_extra={"x-kubernetes-list-type": "set"}
    )
    """Only these components; empty means every component in the set."""

    databases: list[str] = Field(default_factory=list)
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

    confirm: str | None = None
    """InPlace: must equal the name of the LamassuBackup being restored (a dry run shows it in
    status.plan).
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


class RestorePhase(StrEnum):
    """Where a restore is."""

    PENDING = "Pending"
    PLANNING = "Planning"
    PLANNED = "Planned"
    BACKING_UP = "BackingUp"
    SCALING_DOWN = "ScalingDown"
    RESTORING = "Restoring"
    SCALING_UP = "ScalingUp"
    VALIDATING = "Validating"
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


class ScaledWorkload(StatusModel):
    """A workload the restore scaled down, and the replicas it must get back."""

    kind: str
    """Deployment or StatefulSet."""

    name: str
    """Name."""

    replicas: int
    """Replicas before the restore."""


class ResolvedBackup(StatusModel):
    """The set the restore uses."""

    name: str | None = None
    """LamassuBackup name (absent for a bare S3 source)."""

    location: str
    """s3:// URL of the set."""

    manifest_sha256: str | None = None
    """SHA-256 of its manifest."""


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

    pre_restore_backup: str | None = None
    """The safety set taken before an in-place restore."""

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
