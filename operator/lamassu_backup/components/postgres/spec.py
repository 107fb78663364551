"""The postgres component's models: the policy's spec, the restore's target and options, and
the runner's settings (one place for everything PostgreSQL-shaped in the API)."""

from __future__ import annotations

from datetime import timedelta
from enum import StrEnum

from pydantic import Field

from ...models.base import CRModel, RunnerModel
from ...models.common import BasicAuthSecretRef, SecretKeyRef
from ...models.types import CronSchedule, Duration

LAMASSU_DATABASES = ["ca", "devicemanager", "dmsmanager", "alerts", "va", "kms"]
"""The six databases of a standard Lamassu install (one per service)."""


PG_IDENTIFIER = r"^[a-zA-Z_][a-zA-Z0-9_$-]{0,62}$"


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


class WalArchiving(CRModel):
    """Continuous WAL shipping for point-in-time recovery, beside the hourly dumps.

    The operator runs a small shipper Deployment (``pg_receivewal`` over the replication
    protocol, a physical replication slot it owns) that sends every WAL segment, and the segment
    in progress every ``partialInterval``, through the same encrypt/checksum/upload pipeline as
    the dumps, under ``<policy prefix>/wal/``; base backups (``pg_basebackup``, streamed, no
    spool) go under ``<policy prefix>/basebackups/`` on their own schedule. Needs from the
    server only a role with REPLICATION (the component's credentials, or
    ``replicationCredentialsSecret``) and a pg_hba line for it: no restart, no archive_command.
    """

    enabled: bool = False
    """Ship WAL and take base backups for this policy."""

    replication_credentials_secret: BasicAuthSecretRef | None = None
    """Secret with a role that has REPLICATION (default: credentialsSecret, which then needs it)."""

    slot_name: str = Field(default="lamassu_backup", pattern=r"^[a-z0-9_]{1,63}$")
    """The physical replication slot the shipper creates and advances only to what the bucket
    holds, so the server keeps every WAL byte not yet shipped. Dropped on the server when
    walArchiving is turned off or the policy is deleted (annotation
    backup.lamassu.io/keep-replication-slot: "true" keeps it)."""

    partial_interval: Duration = timedelta(seconds=10)
    """How often the segment in progress is shipped when it changed: the recovery point."""

    base_backup_schedule: CronSchedule = "0 */6 * * *"
    """When base backups run (in the policy's time zone); the window starts at the oldest kept."""

    base_backup_retention: int = Field(default=2, ge=1, le=100)
    """Base backups kept; WAL older than the oldest kept one's start is deleted, never newer."""

    recovery_point_objective: Duration = timedelta(minutes=5)
    """WAL shipping is Stale when the newest shipped WAL is older than this."""

    max_slot_lag_bytes: int = Field(default=8 * 1024**3, ge=16 * 1024**2)
    """Warn (Event, condition) when the slot holds more unshipped WAL than this on the server."""


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

    wal_archiving: WalArchiving = Field(default_factory=WalArchiving)
    """Point-in-time recovery: continuous WAL shipping and base backups (off by default)."""


class PostgresSettings(RunnerModel):
    """A PostgreSQL server to dump from or restore into."""

    host: str
    port: int = 5432
    ssl_mode: SslMode = SslMode.PREFER
    ca_file: str | None = None
    username_file: str
    password_file: str
    layout: DatabaseLayout = DatabaseLayout.DATABASES
    databases: list[str] = Field(default_factory=list)
    database: str = "lamassu"
    schemas: list[str] = Field(default_factory=list)
    compression: Compression = Field(default_factory=Compression)
    parallel: int = Field(default=2, ge=1, le=8)
    """Databases dumped at the same time."""


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


class PostgresOptions(CRModel):
    """PostgreSQL restore options."""

    jobs: int = Field(default=1, ge=1, le=16)
    """pg_restore parallel jobs; above 1 the dump is spooled to a local file first."""

    keep_previous: bool = False
    """Keep the pre-restore databases (<db>__pre_restore_<time>) after a successful validation."""
