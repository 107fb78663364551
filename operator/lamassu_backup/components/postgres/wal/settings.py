"""The contract between the operator and the WAL runners (``runner wal-ship``, ``runner
base-backup``): their configuration, and the heartbeat the shipper leaves in the bucket.

Pure models. As for the backup runner, the configuration travels as JSON in an environment
variable and holds only the paths where the Pod's Secret volumes put the credentials.
"""

from __future__ import annotations

from datetime import datetime

from pydantic import Field

from ....models.base import RunnerModel
from ....models.runner import GpgSettings, S3Settings
from ..spec import PostgresSettings

WAL_CONFIG_ENV = "LAMASSU_WAL_CONFIG"
SPOOL_ROOT = "/var/lib/lamassu-backup/spool"
"""The shipper's spool volume (an emptyDir: it survives container restarts, and losing it loses
nothing, as the slot keeps every byte not in the bucket)."""

STATUS_KEY = "wal-status.json"
"""The shipper's heartbeat, relative to the policy prefix (outside ``wal/``, which holds only
WAL records)."""


class WalRunConfig(RunnerModel):
    """Everything the shipper and a base-backup Job need, except the secrets themselves."""

    namespace: str
    policy: str
    prefix: str
    """The policy prefix (``<prefix>/<namespace>/<policy>/``), ending in '/'."""

    destination: S3Settings
    gpg: GpgSettings
    postgres: PostgresSettings
    """The server, with the replication role's credential files."""

    slot_name: str = "lamassu_backup"
    partial_interval_seconds: float = Field(default=10.0, gt=0)
    status_interval_seconds: float = Field(default=10.0, gt=0)
    """How often the shipper writes its heartbeat (:class:`ShipperStatus`)."""

    spool: str = f"{SPOOL_ROOT}/wal"
    compression_level: int = Field(default=1, ge=0, le=19)
    set_time: str | None = None
    """The base backup's folder under ``basebackups/`` (base-backup only)."""


class ShipperStatus(RunnerModel):
    """What the shipper says about itself, for the policy's status: written every
    ``statusIntervalSeconds`` to :data:`STATUS_KEY`."""

    updated_at: datetime
    caught_up_at: datetime | None = None
    """Everything the server had written at this moment is in the bucket: the recovery point
    even when the server is idle (no new WAL, so nothing new is shipped)."""

    lag_bytes: int | None = None
    """WAL the server holds for the slot that the bucket does not have yet."""

    receiver_running: bool = False
    segments: int = 0
    partials: int = 0
    last_shipped: str | None = None
    last_error: str | None = None
    pod: str | None = None
