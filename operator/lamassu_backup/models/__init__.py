"""Pure data models of the backup.lamassu.io resources. No I/O, no clients."""

from .backup import BackupPhase, BackupSpec, BackupStatus, Trigger
from .policy import BackupPolicySpec, BackupPolicyStatus
from .resources import (
    API_VERSION,
    GROUP,
    KINDS,
    VERSION,
    LamassuBackup,
    LamassuBackupPolicy,
    LamassuRestore,
    parse_resource,
)
from .restore import RestoreMode, RestorePhase, RestoreSpec, RestoreStatus

__all__ = [
    "API_VERSION",
    "GROUP",
    "KINDS",
    "VERSION",
    "BackupPhase",
    "BackupPolicySpec",
    "BackupPolicyStatus",
    "BackupSpec",
    "BackupStatus",
    "LamassuBackup",
    "LamassuBackupPolicy",
    "LamassuRestore",
    "RestoreMode",
    "RestorePhase",
    "RestoreSpec",
    "RestoreStatus",
    "Trigger",
    "parse_resource",
]
