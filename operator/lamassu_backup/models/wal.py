"""What point-in-time recovery records in the bucket: one record per shipped WAL object, one
manifest detail block per base backup, and the recoverable window computed from them.

The WAL record is the commit point of its object (written only after the object is stored and
its size checked), exactly as ``manifest.json`` is for a set: an object without its record does
not exist for a restore.
"""

from __future__ import annotations

from datetime import datetime
from typing import Literal

from pydantic import BaseModel, ConfigDict, Field
from pydantic.alias_generators import to_camel

WAL_RECORD_FORMAT = "lamassu-backup/wal/v1"


class _Model(BaseModel):
    model_config = ConfigDict(alias_generator=to_camel, populate_by_name=True, extra="ignore")


class WalRecord(_Model):
    """One shipped WAL object: a complete segment, a partial snapshot, or a timeline history."""

    format: str = WAL_RECORD_FORMAT
    name: str
    """The file name PostgreSQL asks restore_command for (``000000010000000000000003``)."""

    kind: Literal["segment", "partial", "history"] = "segment"
    timeline: int
    key: str
    """Key relative to the policy prefix."""

    size_bytes: int
    sha256: str
    """Of the stored (compressed, encrypted) object."""

    plaintext_size_bytes: int
    plaintext_sha256: str
    """Of the WAL file itself: ``sha256sum`` of the decrypted, decompressed file."""

    compression: str
    encryption: str
    segment_size: int = 0
    """wal_segment_size of the server (bytes); 0 for history files."""

    end_lsn: str | None = None
    """End of the last valid WAL record the object holds (pg_waldump), e.g. ``0/3000148``."""

    first_commit_time: datetime | None = None
    last_commit_time: datetime | None = None
    """Commit (or abort) time of the last transaction the object ends: what recovery_target_time
    compares against, so the window is exact, not an upload time."""

    shipped_at: datetime


class BaseBackupInfo(_Model):
    """What a restore needs to know about a base backup (the manifest component's details)."""

    set_time: str
    key: str
    """Key of the tar, relative to the policy prefix."""

    timeline: int
    start_lsn: str
    stop_lsn: str
    start_wal: str
    """The first segment the backup needs (from backup_label)."""

    start_time: datetime
    stop_time: datetime
    """Server time after the backup ended: the earliest moment it can be recovered to."""

    segment_size: int
    backup_label: str = ""


class RecoveryWindow(_Model):
    """The times a point-in-time restore can reach with what the bucket holds now."""

    recoverable_from: datetime | None = None
    """End of the oldest base backup whose WAL chain to now is unbroken."""

    recoverable_until: datetime | None = None
    """Time of the last commit in the shipped WAL."""

    last_shipped_wal: str | None = None
    base_backups: list[str] = Field(default_factory=list)
    """Set times of the base backups inside the window, oldest first."""

    gaps: list[str] = Field(default_factory=list)
    """Human descriptions of missing segments that cut older base backups off."""

    def describe(self) -> str:
        """``from <t> until <t>`` or why there is no window, for messages."""
        if self.recoverable_from is None or self.recoverable_until is None:
            return "no recoverable window (no base backup with an unbroken WAL chain to now)"
        return (
            f"from {self.recoverable_from.isoformat()} until {self.recoverable_until.isoformat()}"
        )
