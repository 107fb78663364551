"""The contract between the operator and the runner inside a Job.

The operator builds a :class:`RunnerConfig` from the resources and passes it to the Job as JSON in
the ``LAMASSU_RUNNER_CONFIG`` environment variable; credentials are never in it, only the paths
where the Job's Secret volumes put them. The runner answers with a :class:`RunnerResult` in the
container's termination message. Both sides import these models, so they cannot disagree.
"""

from __future__ import annotations

from typing import Any, Literal

from pydantic import Field

from ..components.aws_kms.spec import AwsKmsSettings
from ..components.config.spec import ConfigSettings
from ..components.postgres.spec import PostgresSettings
from ..components.vault.spec import VaultSettings
from ..components.volumes.spec import FilesystemKeyStore, VolumeSettings
from .base import RunnerModel

CONFIG_ENV = "LAMASSU_RUNNER_CONFIG"
SECRETS_ROOT = "/var/run/lamassu-backup/secrets"


class S3Settings(RunnerModel):
    """Where and how to reach the bucket."""

    bucket: str
    region: str = "us-east-1"
    endpoint: str | None = None
    force_path_style: bool = False
    ca_file: str | None = None
    access_key_id_file: str | None = None
    secret_access_key_file: str | None = None
    session_token_file: str | None = None
    sse: Literal["aws:kms", "AES256", "none"] = "aws:kms"
    kms_key_id: str | None = None
    storage_class: str | None = None
    part_size_mib: int = Field(default=8, ge=5, le=512)
    """Multipart part size: memory use is about three parts, whatever the object size."""


class GpgSettings(RunnerModel):
    """Encryption recipients, and the key that signs manifests."""

    recipients_file: str
    signing_key_file: str | None = None
    signing_passphrase_file: str | None = None


class RunnerConfig(RunnerModel):
    """Everything one backup Job needs, except the secrets themselves."""

    namespace: str
    policy: str
    backup: str
    set_time: str
    set_prefix: str
    """Key prefix of the set, ending in '/'."""

    components: list[str]
    """Components this Job backs up."""

    commit: bool = True
    """Write manifest.json (and its signature) after the components: the set's commit point."""

    destination: S3Settings
    gpg: GpgSettings
    postgres: PostgresSettings | None = None
    vault: VaultSettings | None = None
    config: ConfigSettings | None = None
    volumes: list[VolumeSettings] = Field(default_factory=list)
    aws_kms: AwsKmsSettings | None = None


class ArtifactRecord(RunnerModel):
    """One stored object, as recorded in part files and the manifest."""

    component: str
    name: str
    kind: str
    key: str
    """Key relative to the set prefix."""

    sidecar_key: str | None = None
    size_bytes: int
    plaintext_size_bytes: int
    sha256: str
    plaintext_sha256: str
    compression: str
    encryption: str
    details: dict[str, Any] = Field(default_factory=dict)


class ComponentOutcome(RunnerModel):
    """What one component produced."""

    component: str
    ok: bool
    reason: str | None = None
    message: str | None = None
    seconds: float = 0.0
    artifacts: list[ArtifactRecord] = Field(default_factory=list)
    warnings: list[str] = Field(default_factory=list)
    details: dict[str, Any] = Field(default_factory=dict)


class RunnerResult(RunnerModel):
    """The compact summary a runner writes to its termination message (< 4 KiB)."""

    ok: bool
    action: str
    components: dict[str, str] = Field(default_factory=dict)
    """Component -> Completed | Failed: reason."""

    artifacts: list[dict[str, Any]] = Field(default_factory=list)
    manifest_key: str | None = None
    manifest_sha256: str | None = None
    size_bytes: int = 0
    seconds: float = 0.0
    error: str | None = None
    reason: str | None = None
    """CamelCase reason of a failure that stopped the whole run."""

    warnings: list[str] = Field(default_factory=list)
    evidence: dict[str, Any] = Field(default_factory=dict)


class PointInTimeSettings(RunnerModel):
    """A point-in-time restore of the postgres component: from a base backup and the WAL shipped
    under the policy's archive, instead of the set's dumps."""

    archive_prefix: str
    """The policy prefix (``<prefix>/<namespace>/<policy>/``) holding ``wal/`` and
    ``basebackups/``, ending in '/'."""

    point_in_time: str = "latest"
    """``latest`` (everything shipped) or an RFC 3339 time with its offset."""

    databases: list[str] = Field(default_factory=list)
    """The policy's databases (what recovery brings back unless spec.databases names some);
    empty: every database of the recovered server."""


class RestoreRunConfig(RunnerModel):
    """Everything one restore (or drill, or verification) Job needs, except the secrets."""

    namespace: str
    restore: str
    """Name of the LamassuRestore (or of the verification run) — used to name scratch targets."""

    mode: Literal["InPlace", "Drill"] = "Drill"
    step: Literal["plan", "restore", "finalize", "rollback"] = "restore"
    """plan: verify the set and report what would change. restore: verify, restore, swap
    (InPlace) or validate and tear down (Drill). finalize: drop the databases kept aside.
    rollback: swap them back."""

    source: S3Settings
    set_prefix: str
    """Key prefix of the set, ending in '/'."""

    backup: str | None = None
    components: list[str] = Field(default_factory=list)
    """Only these components; empty means every component the manifest holds."""

    databases: list[str] = Field(default_factory=list)
    """Only these databases (or <db>.<schema> artifacts); empty means all."""

    decryption_key_file: str
    decryption_passphrase_file: str | None = None
    signer_key_file: str | None = None
    """Public key(s) that must have signed the manifest."""

    require_signature: bool = True
    """Refuse a signed set when no signer key is configured (unless insecureSkipSignatureCheck)."""

    postgres: PostgresSettings | None = None
    """Target server (credentials must allow CREATE/ALTER/DROP DATABASE)."""

    postgres_jobs: int = Field(default=1, ge=1, le=16)
    """pg_restore -j; above 1 each dump is spooled (verified) to a local file first, which needs
    local disk for the largest dump (measured on 2 cores, 1 GiB: streaming 1.10x pg_restore -j1
    from a local file, spooled -j2 1.37x; -j pays only with cores to spare on both sides)."""

    postgres_parallel: int = Field(default=2, ge=1, le=8)
    """Databases restored at the same time, each with its own stream and pg_restore: the small
    databases restore while the big one does (measured, 1 GiB: 1.10x instead of 1.17x)."""

    keep_previous: bool = False
    swap_suffix: str | None = None
    """Suffix of the databases kept aside (<db>__pre_restore_<suffix>), for finalize/rollback."""

    journal: str | None = None
    """Secret (in ``namespace``) holding the undo journal of an in-place restore: what its KV
    writes and config applies replaced, written before them, read by the rollback step."""

    vault: VaultSettings | None = None
    vault_method: Literal["KV", "RaftSnapshot"] = "KV"
    overwrite_existing: bool = False
    config: ConfigSettings | None = None
    """Target namespace for ConfigMaps and Secrets (names come from the archive)."""

    volumes: list[VolumeSettings] = Field(default_factory=list)
    """Where each volume archive is restored (by name)."""

    key_consistency: bool = True
    key_store_engines: list[str] = Field(default_factory=list)
    """kms engine ids whose private keys live in the Vault KV store; empty means every engine
    that no filesystem store claims."""

    filesystem_key_stores: list[FilesystemKeyStore] = Field(default_factory=list)
    """Filesystem and PKCS#11 (SoftHSM) engines and the volume of the set holding each one's
    keys."""

    aws_kms_key_store_engine: str | None = None
    """The kms engine whose keys are in AWS KMS: checked against the set's awsKms metadata."""

    dry_run: bool = False

    pitr: PointInTimeSettings | None = None
    """Set: postgres comes from the WAL archive to ``pointInTime`` (the set, if any, still
    gives the other components)."""
