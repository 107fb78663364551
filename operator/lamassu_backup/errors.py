"""The project's own errors. Their messages are shown to people (conditions, Events, termination
messages), so they name the failing thing and the fix, and never carry a secret.
"""

from __future__ import annotations

import re
from collections.abc import Iterable


class LamassuBackupError(Exception):
    """Base class; ``reason`` is a CamelCase word for conditions and metrics."""

    reason = "Error"

    def __init__(self, message: str, *, reason: str | None = None) -> None:
        super().__init__(message)
        if reason:
            self.reason = reason

    @property
    def message(self) -> str:
        """The human text."""
        return str(self.args[0]) if self.args else self.reason


class ConfigurationError(LamassuBackupError):
    """A setting or a referenced Secret is missing or wrong; the user must change something."""

    reason = "InvalidConfiguration"


class StorageError(LamassuBackupError):
    """The object store refused or failed a request."""

    reason = "StorageError"


class EncryptionError(LamassuBackupError):
    """GnuPG failed: bad or unusable keys, wrong passphrase, corrupt input."""

    reason = "EncryptionFailed"


class SignatureError(LamassuBackupError):
    """A manifest signature is missing, bad, or from an unexpected key."""

    reason = "SignatureInvalid"


class IntegrityError(LamassuBackupError):
    """Bytes do not match their recorded checksum or size."""

    reason = "IntegrityCheckFailed"


class VaultError(LamassuBackupError):
    """Vault/OpenBao refused or failed a request (sealed, forbidden, unreachable)."""

    reason = "VaultError"


class DatabaseError(LamassuBackupError):
    """PostgreSQL or one of its client tools failed."""

    reason = "DatabaseError"


class KubernetesError(LamassuBackupError):
    """The Kubernetes API refused or failed a request."""

    reason = "KubernetesError"


class Redactor:
    """Replaces known secret values in any text before it leaves the process.

    Every secret the runner reads is registered here; error texts from tools (pg_dump, gpg,
    botocore) pass through :meth:`redact` so a secret echoed by a tool never reaches a log,
    a status field or a termination message.
    """

    _MIN_LEN = 4

    def __init__(self, secrets: Iterable[str] = ()) -> None:
        self._secrets: set[str] = set()
        for value in secrets:
            self.add(value)

    def add(self, value: str | None) -> None:
        """Register a secret value (short values are ignored: they would mangle ordinary text)."""
        if value and len(value.strip()) >= self._MIN_LEN:
            self._secrets.add(value.strip())

    def redact(self, text: str) -> str:
        """``text`` with every registered secret replaced by ``<redacted>``."""
        for value in sorted(self._secrets, key=len, reverse=True):
            text = text.replace(value, "<redacted>")
        return _PRIVATE_KEY_BLOCK.sub("<redacted private key>", text)


_PRIVATE_KEY_BLOCK = re.compile(
    r"-----BEGIN [A-Z ]*PRIVATE KEY( BLOCK)?-----.*?-----END [A-Z ]*PRIVATE KEY( BLOCK)?-----",
    re.S,
)
