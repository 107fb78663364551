"""LamassuBackupPolicy: what to back up, when, where to, and how long to keep it."""

from __future__ import annotations

from datetime import datetime, timedelta
from enum import StrEnum
from typing import Any, Literal

from pydantic import Field, field_validator

from .base import CRModel, Rule, StatusModel
from .common import (
    DNS_LABEL,
    OBJECT_NAME,
    AwsCredentialsSecretRef,
    BasicAuthSecretRef,
    Condition,
    LabelSelector,
    ObjectName,
    SecretKeyRef,
)
from .types import CronSchedule, Duration, Quantity, TimeZone

LAMASSU_DATABASES = ["ca", "devicemanager", "dmsmanager", "alerts", "va", "kms"]
"""The six databases of a standard Lamassu install (one per service)."""

LAMASSU_CONFIGMAPS = [
    "ca-config",
    "kms-config",
    "va-config",
    "device-manager-config",
    "dms-manager-config",
    "alerts-config",
]
"""The ConfigMaps the Lamassu chart creates, one per service."""

PG_IDENTIFIER = r"^[a-zA-Z_][a-zA-Z0-9_$-]{0,62}$"
ENGINE_ID_MAX = 63
"""Longest kms crypto engine id accepted (Lamassu's are short: filesystem-1, vault-1)."""
MAX_VOLUMES = 32
"""Volumes per policy: a bound the apiserver needs to cost the key-store uniqueness rule."""


def _unique(values: list[Any]) -> bool:
    return len(values) == len(set(values))


class ConcurrencyPolicy(StrEnum):
    """What to do when a run is due while the previous one is still running."""

    FORBID = "Forbid"
    REPLACE = "Replace"


class SslMode(StrEnum):
    """libpq sslmode values."""

    DISABLE = "disable"
    ALLOW = "allow"
    PREFER = "prefer"
    REQUIRE = "require"
    VERIFY_CA = "verify-ca"
    VERIFY_FULL = "verify-full"


class DatabaseLayout(StrEnum):
    """How Lamassu's services keep their data in PostgreSQL."""

    DATABASES = "Databases"
    SCHEMAS = "Schemas"


class CompressionAlgorithm(StrEnum):
    """How dumps are compressed before encryption (GPG's own compression is always off)."""

    ZSTD = "zstd"
    LZ4 = "lz4"
    GZIP = "gzip"
    NONE = "none"


class Compression(CRModel):
    """Compression of database dumps.

    ``zstd`` and ``lz4`` run as a separate stage after ``pg_dump -Z0`` (fast, multi-core); ``gzip``
    is pg_dump's own compression (slow, but the decrypted file is directly ``pg_restore``-able);
    ``none`` stores the plain custom-format dump.
    """

    algorithm: CompressionAlgorithm = CompressionAlgorithm.ZSTD
    """zstd (default: the fastest measured choice with the smallest objects), lz4, gzip or none."""

    level: int = Field(default=1, ge=0, le=19)
    """Algorithm level; 1 is the measured sweet spot for zstd."""


class PostgresComponent(CRModel):
    """The PostgreSQL server holding Lamassu's databases; each is dumped with ``pg_dump -Fc``."""

    host: str = Field(min_length=1)
    """Host name or address of the PostgreSQL server, e.g. postgres.lamassu.svc."""

    port: int = Field(default=5432, ge=1, le=65535)
    """TCP port of the server."""

    ssl_mode: SslMode = SslMode.PREFER
    """libpq sslmode for every connection."""

    ca_secret: SecretKeyRef | None = None
    """CA certificate to verify the server with (for sslMode verify-ca / verify-full)."""

    credentials_secret: BasicAuthSecretRef
    """Secret with the username and password of a role that can read every database dumped."""

    layout: DatabaseLayout = DatabaseLayout.DATABASES
    """Databases: one database per service (Lamassu today). Schemas: one database, one schema per
    service.
    """

    databases: list[str] = Field(
        default_factory=lambda: list(LAMASSU_DATABASES),
        min_length=1,
        json_schema_extra={"items": {"type": "string", "pattern": PG_IDENTIFIER}},
    )
    """Databases to dump (layout Databases). Default: the six Lamassu databases."""

    database: str = Field(default="lamassu", pattern=PG_IDENTIFIER)
    """The single database to dump (layout Schemas)."""

    schemas: list[str] = Field(
        default_factory=list,
        json_schema_extra={"items": {"type": "string", "pattern": PG_IDENTIFIER}},
    )
    """Schemas to dump (layout Schemas), one artifact each; empty: the whole database."""

    compression: Compression = Field(default_factory=Compression)
    """Dump compression."""

    parallel: int = Field(default=2, ge=1, le=8)
    """Databases dumped at the same time (measured: 2 lets the small ones finish beside the big one)."""

    recovery_point_objective: Duration = timedelta(hours=2)
    """The policy is Stale when the last successful dump is older than this."""


class VaultTokenAuth(CRModel):
    """Authenticate to Vault with a token kept in a Secret."""

    token_secret: SecretKeyRef
    """Secret key holding the token."""


class VaultAppRoleAuth(CRModel):
    """Authenticate to Vault with AppRole (what Lamassu's KMS itself uses)."""

    role_id_secret: SecretKeyRef
    """Secret key holding the role_id."""

    secret_id_secret: SecretKeyRef
    """Secret key holding the secret_id."""

    mount_path: str = "approle"
    """Mount path of the AppRole auth method."""


class VaultKubernetesAuth(CRModel):
    """Authenticate to Vault with the runner Pod's ServiceAccount token."""

    role: str = Field(min_length=1)
    """Vault role bound to the runner's ServiceAccount."""

    mount_path: str = "kubernetes"
    """Mount path of the Kubernetes auth method."""


class VaultAuth(CRModel):
    """How the runner authenticates to Vault/OpenBao: exactly one method."""

    __rules__ = (
        Rule(
            "[has(self.tokenSecret), has(self.appRole), has(self.kubernetes)]"
            ".filter(x, x).size() == 1",
            "vault auth needs exactly one of tokenSecret, appRole or kubernetes",
            lambda m: [m.token_secret, m.app_role, m.kubernetes].count(None) == 2,
        ),
    )

    token_secret: SecretKeyRef | None = None
    """Token auth."""

    app_role: VaultAppRoleAuth | None = None
    """AppRole auth."""

    kubernetes: VaultKubernetesAuth | None = None
    """Kubernetes auth."""


class VaultComponent(CRModel):
    """Vault or OpenBao holding CA private keys (Lamassu's Vault KV v2 crypto engine)."""

    __rules__ = (
        Rule(
            "self.raftSnapshot || size(self.kvMounts) > 0",
            "vault needs raftSnapshot: true or at least one entry in kvMounts",
            lambda m: m.raft_snapshot or bool(m.kv_mounts),
        ),
    )

    address: str = Field(min_length=1, pattern=r"^https?://")
    """Vault address, e.g. https://vault.vault.svc:8200."""

    ca_secret: SecretKeyRef | None = None
    """CA certificate to verify Vault's TLS certificate."""

    auth: VaultAuth
    """How to authenticate."""

    raft_snapshot: bool = True
    """Save a whole-Vault raft snapshot (sys/storage/raft/snapshot)."""

    kv_mounts: list[str] = Field(default_factory=lambda: ["lamassu-kms"])
    """KV v2 mounts exported logically (every secret, every field), e.g. the Lamassu KMS mount."""

    key_store_engines: list[str] = Field(
        default_factory=list,
        max_length=32,
        json_schema_extra={
            "items": {"type": "string", "minLength": 1, "maxLength": ENGINE_ID_MAX},
            "x-kubernetes-list-type": "set",
        },
    )
    """kms crypto engine ids (kms-config crypto_engines.engines[].id, e.g. vault-1) whose private
    keys are in kvMounts. A restore or drill checks these engines' CA keys against the restored
    mounts. Empty: every engine not declared on a volume (keyStoreEngine) is expected in Vault,
    so declare the Vault engines whenever the kms has another kind (e.g. a PKCS#11 HSM)."""

    @field_validator("key_store_engines")
    @classmethod
    def _unique_engines(cls, engines: list[str]) -> list[str]:
        if any(not e or len(e) > ENGINE_ID_MAX for e in engines):
            raise ValueError(f"keyStoreEngines entries are 1 to {ENGINE_ID_MAX} characters")
        duplicates = sorted({e for e in engines if engines.count(e) > 1})
        if duplicates:
            raise ValueError(f"duplicate keyStoreEngines entry: {', '.join(duplicates)}")
        return engines

    recovery_point_objective: Duration = timedelta(hours=25)
    """Stale when the last successful Vault backup is older than this (daily runs plus slack)."""


class ConfigComponent(CRModel):
    """Lamassu's ConfigMaps and Secrets (service configs, TLS), archived as YAML."""

    __rules__ = (
        Rule(
            "size(self.configMaps) > 0 || size(self.secrets) > 0 || has(self.selector)",
            "config needs configMaps, secrets or a selector",
            lambda m: bool(m.config_maps or m.secrets or m.selector),
        ),
    )

    config_maps: list[ObjectName] = Field(default_factory=lambda: list(LAMASSU_CONFIGMAPS))
    """ConfigMaps by name (default: the six Lamassu service configs)."""

    secrets: list[ObjectName] = Field(
        default_factory=lambda: ["downstream-cert", "root-downstream-cert"]
    )
    """Secrets by name (default: the TLS Secrets of the Lamassu chart)."""

    selector: LabelSelector | None = None
    """ConfigMaps and Secrets with these labels are included as well."""

    backup_on_change: bool = False
    """A change to a selected object triggers a config-only backup run."""

    recovery_point_objective: Duration = timedelta(days=8)
    """Stale when the last successful config backup is older than this."""


def _relative_inside(path: str) -> bool:
    """A sub-directory that stays inside the volume: no leading '/', no '..' segment."""
    return not path.startswith("/") and ".." not in path.split("/")


class VolumeSource(CRModel):
    """A PersistentVolumeClaim whose files are archived (file crypto engine keys, SoftHSM tokens,
    CRLs).
    """

    __rules__ = (
        Rule(
            "!has(self.keyStorePath) || self.keyStorePath == '' || has(self.keyStoreEngine)",
            "keyStorePath needs keyStoreEngine: it says where that engine's keys are in the volume",
            lambda m: not m.key_store_path or m.key_store_engine is not None,
        ),
        Rule(
            "!has(self.keyStorePath) || (!self.keyStorePath.startsWith('/') && "
            "!self.keyStorePath.matches('(^|/)[.][.](/|$)'))",
            "keyStorePath must be relative and stay inside the volume (no leading / and no .. "
            "segment)",
            lambda m: _relative_inside(m.key_store_path),
        ),
    )

    name: str = Field(pattern=DNS_LABEL, max_length=63)
    """Artifact name, unique in the policy (e.g. kms-fs-keys)."""

    claim_name: str = Field(min_length=1, max_length=253, pattern=OBJECT_NAME)
    """The PersistentVolumeClaim to read."""

    sub_path: str = ""
    """Only archive this folder of the volume."""

    key_store_engine: str | None = Field(default=None, min_length=1, max_length=ENGINE_ID_MAX)
    """The kms filesystem crypto engine (its id in kms-config, e.g. filesystem-1) whose
    storage_directory is on this volume. A restore or drill then checks that engine's CA keys
    against this volume's restored files, and refuses one whose set lacks the volume: without
    it the keys would be looked for in Vault, or not at all."""

    key_store_path: str = Field(default="", max_length=1024)
    """The engine's storage directory inside the archived folder (relative to subPath when that
    is set); empty: its root."""


class AwsKmsComponent(CRModel):
    """AWS KMS key metadata (aliases, key policies, descriptions): key material cannot leave KMS."""

    region: str = Field(min_length=1)
    """AWS region of the keys."""

    endpoint: str | None = None
    """Endpoint override for KMS-compatible services."""

    credentials_secret: AwsCredentialsSecretRef | None = None
    """AWS credentials; when absent, the runner Pod's ambient credentials (IRSA) are used."""

    key_ids: list[str] = Field(default_factory=list)
    """Keys to record; empty means every key in the account and region."""

    recovery_point_objective: Duration = timedelta(days=8)
    """Stale when the last successful metadata backup is older than this."""


class Components(CRModel):
    """What one backup set holds. Every run backs up all configured components together."""

    __rules__ = (
        Rule(
            "has(self.postgres) || has(self.vault) || has(self.config) || "
            "size(self.volumes) > 0 || has(self.awsKms)",
            "a policy needs at least one component: postgres, vault, config, volumes or awsKms",
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
    )

    postgres: PostgresComponent | None = None
    """PostgreSQL databases."""

    vault: VaultComponent | None = None
    """Vault/OpenBao raft snapshot and KV exports."""

    config: ConfigComponent | None = None
    """ConfigMaps and Secrets."""

    volumes: list[VolumeSource] = Field(
        default_factory=list,
        max_length=MAX_VOLUMES,
        json_schema_extra={
            "x-kubernetes-list-type": "map",
            "x-kubernetes-list-map-keys": ["name"],
        },
    )
    """File stores on volumes."""

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
        """Configured component names, in the order a restore applies them."""
        out = []
        if self.postgres:
            out.append("postgres")
        if self.vault:
            out.append("vault")
        if self.volumes:
            out.append("volumes")
        if self.config:
            out.append("config")
        if self.aws_kms:
            out.append("awsKms")
        return out


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
