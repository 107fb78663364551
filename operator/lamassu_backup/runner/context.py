"""What every runner command needs: secrets read from mounted files, the store, a keyring.

Secrets are read once, registered with the redactor (so no error text can leak them), and
handed to the clients as values. A missing file names the Secret key the operator mounted there.
"""

from __future__ import annotations

import os
import tempfile
from pathlib import Path

from ..clients.gpg import Keyring
from ..clients.s3 import MIB, S3Connection, S3Store
from ..errors import ConfigurationError, Redactor
from ..models.runner import S3Settings


class RunnerContext:
    """Secrets, redaction and scratch space for one runner invocation."""

    def __init__(self, scratch: str | None = None) -> None:
        self.redactor = Redactor()
        base = scratch or os.environ.get("LAMASSU_SCRATCH") or tempfile.gettempdir()
        self.scratch = Path(tempfile.mkdtemp(prefix="lamassu-runner-", dir=base))

    def secret(self, path: str | None, what: str, *, sensitive: bool = True) -> str | None:
        """Read a secret file (None when no path is configured); registered for redaction.

        Non-sensitive values (a username) are not redacted: a username such as ``postgres``
        would otherwise blank out every mention of the component of the same name.
        """
        if not path:
            return None
        try:
            value = Path(path).read_text().strip()
        except FileNotFoundError:
            raise ConfigurationError(
                f"{what}: {path} is missing; is the key present in the referenced Secret?"
            ) from None
        except OSError as exc:
            raise ConfigurationError(f"{what}: cannot read {path}: {exc.strerror}") from None
        if not value:
            raise ConfigurationError(f"{what}: {path} is empty")
        if sensitive:
            self.redactor.add(value)
        return value

    def required(self, path: str | None, what: str, *, sensitive: bool = True) -> str:
        """Like :meth:`secret` but the value must exist."""
        value = self.secret(path, what, sensitive=sensitive)
        if value is None:
            raise ConfigurationError(f"{what} is not configured")
        return value

    def store(self, settings: S3Settings) -> S3Store:
        """The S3 store with credentials from their files (ambient credentials when none)."""
        return S3Store(
            S3Connection(
                bucket=settings.bucket,
                region=settings.region,
                endpoint=settings.endpoint,
                force_path_style=settings.force_path_style,
                ca_file=settings.ca_file,
                access_key_id=self.secret(settings.access_key_id_file, "S3 access key id"),
                secret_access_key=self.secret(
                    settings.secret_access_key_file, "S3 secret access key"
                ),
                session_token=self.secret(settings.session_token_file, "S3 session token"),
                sse=settings.sse,
                kms_key_id=settings.kms_key_id,
                storage_class=settings.storage_class,
                part_size=settings.part_size_mib * MIB,
            )
        )

    def keyring(self) -> Keyring:
        """A private GnuPG home in the scratch area."""
        return Keyring(parent=str(self.scratch))

    def close(self) -> None:
        """Remove the scratch area (keyrings included)."""
        import shutil

        shutil.rmtree(self.scratch, ignore_errors=True)
