"""What every runner command needs: secrets read from mounted files, the store, a keyring.

Secrets are read once, registered with the redactor (so no error text can leak them), and
handed to the clients as values. A missing file names the Secret key the operator mounted there.
"""

from __future__ import annotations

import os
import tempfile
from collections.abc import Callable
from pathlib import Path
from typing import TYPE_CHECKING

from ..clients import postgres as pg
from ..clients.gpg import Keyring
from ..clients.s3 import S3Connection, S3Store
from ..components.postgres.spec import PostgresSettings
from ..components.vault.spec import VaultSettings
from ..errors import ConfigurationError, Redactor
from ..models.runner import GpgSettings, S3Settings

if TYPE_CHECKING:
    from ..clients.vault import VaultClient


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
            S3Connection.of(
                settings,
                access_key_id=self.secret(settings.access_key_id_file, "S3 access key id"),
                secret_access_key=self.secret(
                    settings.secret_access_key_file, "S3 secret access key"
                ),
                session_token=self.secret(settings.session_token_file, "S3 session token"),
            )
        )

    def pg_connection(self, settings: PostgresSettings) -> pg.PgConnection:
        """A PostgreSQL server's connection settings, credentials read from their files."""
        return pg.PgConnection(
            host=settings.host,
            port=settings.port,
            user=self.required(
                settings.username_file, "PostgreSQL username (credentialsSecret)", sensitive=False
            ),
            password=self.required(
                settings.password_file, "PostgreSQL password (credentialsSecret)"
            ),
            sslmode=settings.ssl_mode.value,
            sslrootcert=settings.ca_file,
        )

    def vault_client(
        self, settings: VaultSettings, field: str = "spec.components.vault.auth"
    ) -> tuple[VaultClient, Callable[[], None] | None]:
        """A logged-in Vault client, and how to log in again (None for a token: it cannot be
        renewed). Loaded only by the components that use Vault: the runner's memory is small."""
        from ..clients.vault import VaultClient

        client = VaultClient(settings.address, settings.ca_file)
        relogin: Callable[[], None] | None = None
        if settings.token_file:
            client.use_token(self.required(settings.token_file, "Vault token (auth.tokenSecret)"))
        elif settings.role_id_file:
            role_id = self.required(settings.role_id_file, "Vault AppRole role_id")
            secret_id = self.required(settings.secret_id_file, "Vault AppRole secret_id")

            def relogin() -> None:
                client.login_approle(role_id, secret_id, settings.approle_mount)

        elif settings.kubernetes_role:
            jwt = self.required(settings.kubernetes_jwt_file, "ServiceAccount token")
            role = settings.kubernetes_role

            def relogin() -> None:
                client.login_kubernetes(role, jwt, settings.kubernetes_mount)

        else:
            raise ConfigurationError(f"Vault auth is not configured ({field})")
        if relogin is not None:
            relogin()
        return client, relogin

    def signer(self, gpg: GpgSettings) -> tuple[Keyring, str, str | None] | None:
        """(a keyring holding the manifest signing key, its fingerprint, its passphrase), or
        None without ``signingKeySecret``; the caller closes the keyring."""
        key = self.secret(gpg.signing_key_file, "manifest signing key (signingKeySecret)")
        passphrase = self.secret(gpg.signing_passphrase_file, "signing key passphrase")
        if not key:
            return None
        keyring = self.keyring()
        keys = keyring.import_secret(
            key, source="spec.encryption.gpg.signingKeySecret", passphrase=passphrase
        )
        usable = [k for k in keys if k.can_sign]
        if not usable:
            keyring.close()
            raise ConfigurationError(
                "spec.encryption.gpg.signingKeySecret holds no key that can sign"
            )
        return keyring, usable[0].fingerprint, passphrase

    def keyring(self) -> Keyring:
        """A private GnuPG home in the scratch area."""
        return Keyring(parent=str(self.scratch))

    def close(self) -> None:
        """Remove the scratch area (keyrings included)."""
        import shutil

        shutil.rmtree(self.scratch, ignore_errors=True)
