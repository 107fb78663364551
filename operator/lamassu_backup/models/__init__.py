"""Pure data models of the backup.lamassu.io resources. No I/O, no clients.

The names below are loaded on first use (PEP 562), not at import: the components' own models
(``lamassu_backup.components.<name>.spec``) import ``models.base``, and an eager import of
``models.policy`` here would import them back while they are half-initialized.
"""

from __future__ import annotations

import importlib
from typing import Any

_EXPORTS = {
    "BackupPhase": "backup",
    "BackupSpec": "backup",
    "BackupStatus": "backup",
    "Trigger": "backup",
    "BackupPolicySpec": "policy",
    "BackupPolicyStatus": "policy",
    "API_VERSION": "resources",
    "GROUP": "resources",
    "KINDS": "resources",
    "VERSION": "resources",
    "LamassuBackup": "resources",
    "LamassuBackupPolicy": "resources",
    "LamassuRestore": "resources",
    "parse_resource": "resources",
    "RestoreMode": "restore",
    "RestorePhase": "restore",
    "RestoreSpec": "restore",
    "RestoreStatus": "restore",
}

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


def __getattr__(name: str) -> Any:
    module = _EXPORTS.get(name)
    if module is None:
        raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
    return getattr(importlib.import_module(f"{__name__}.{module}"), name)
