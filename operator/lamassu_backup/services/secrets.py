"""Secret references: checked before a run starts, read when the operator itself needs access.

Every check names the spec field that refers to the Secret and says how to fix it, because that
message is what a person reads in ``kubectl describe`` at 3 a.m.
"""

from __future__ import annotations

import threading
from datetime import datetime, timedelta

from ..builders import jobs
from ..clients.kube import KubeApi
from ..clients.s3 import S3Connection, S3Store
from ..components import registry
from ..components.base import Reference, aws_refs, key_refs
from ..errors import ConfigurationError, LamassuBackupError
from ..models.common import SecretKeyRef
from ..models.policy import BackupPolicySpec


def references(spec: BackupPolicySpec, components: list[str] | None = None) -> list[Reference]:
    """Every Secret key a run of ``components`` (default: all) needs."""
    s3 = spec.destination.s3
    gpg = spec.encryption.gpg
    refs = [
        *aws_refs("spec.destination.s3.credentialsSecret", s3.credentials_secret),
        *key_refs("spec.destination.s3.caSecret", s3.ca_secret),
        *key_refs("spec.encryption.gpg.recipientsSecret", gpg.recipients_secret),
        *key_refs("spec.encryption.gpg.signingKeySecret", gpg.signing_key_secret),
        *key_refs(
            "spec.encryption.gpg.signingKeyPassphraseSecret", gpg.signing_key_passphrase_secret
        ),
    ]
    for component in registry.configured(spec.components, components or None):
        refs += component.references(spec.components)
    return refs


def verification_references(spec: BackupPolicySpec) -> list[Reference]:
    """The Secret keys a scheduled verification needs."""
    refs = []
    v = spec.verification
    if v.decryption_key_secret:
        refs.append(
            Reference(
                "spec.verification.decryptionKeySecret",
                v.decryption_key_secret.name,
                v.decryption_key_secret.key,
            )
        )
    if v.signer_key_secret:
        refs.append(
            Reference(
                "spec.verification.signerKeySecret",
                v.signer_key_secret.name,
                v.signer_key_secret.key,
            )
        )
    if v.decryption_key_passphrase_secret:
        p = v.decryption_key_passphrase_secret
        refs.append(Reference("spec.verification.decryptionKeyPassphraseSecret", p.name, p.key))
    return refs


class SecretChecks:
    """The policies' Secret checks, cached for a while and dropped when a Secret they refer to
    changes (the operator watches Secrets): a policy loop checks its Secrets now and then, not
    on every pass, and a scheduled run started right after a good check need not read them again.
    """

    def __init__(self, kube: KubeApi, period_seconds: float) -> None:
        self.kube = kube
        self.period = timedelta(seconds=period_seconds)
        # (namespace, policy, generation) -> (checked at, error of the Secrets backups need,
        # error of those only verification needs, Secret names referenced)
        self._checked: dict[
            tuple[str, str, int], tuple[datetime, str | None, str | None, frozenset[str]]
        ] = {}
        self._lock = threading.Lock()

    def check(
        self,
        namespace: str,
        name: str,
        generation: int | None,
        spec: BackupPolicySpec,
        now: datetime,
    ) -> tuple[str | None, str | None]:
        """(what keeps backups from running, what keeps drills from running): a missing Secret
        that only verification needs must not block backups."""
        key = (namespace, name, generation or 0)
        with self._lock:
            cached = self._checked.get(key)
        if cached and now - cached[0] < self.period:
            return cached[1], cached[2]
        backup_refs = references(spec)
        verify_refs = verification_references(spec)
        error, verify_error = None, None
        try:
            check(self.kube, namespace, backup_refs)
        except LamassuBackupError as exc:
            error = f"{exc.reason}: {exc.message}"
        try:
            check(self.kube, namespace, verify_refs)
        except LamassuBackupError as exc:
            verify_error = f"{exc.reason}: {exc.message}"
        names = frozenset(r.secret for r in backup_refs + verify_refs)
        with self._lock:
            self._checked[key] = (now, error, verify_error, names)
        return error, verify_error

    def passed(self, namespace: str, name: str, generation: int | None, now: datetime) -> bool:
        """Whether every Secret a backup of this policy generation needs was there at a check
        within the period, with no change to any of them since."""
        with self._lock:
            cached = self._checked.get((namespace, name, generation or 0))
        return cached is not None and cached[1] is None and now - cached[0] < self.period

    def invalidate(self, namespace: str, name: str) -> None:
        """Forget a policy's checks (its spec changed)."""
        with self._lock:
            for key in [k for k in self._checked if k[:2] == (namespace, name)]:
                del self._checked[key]

    def invalidate_secret(self, namespace: str, secret: str) -> list[str]:
        """Forget the checks of the policies referring to a Secret; returns their names.

        Only those: a Secret change in a namespace with a thousand policies must not send a
        thousand re-checks to the apiserver.
        """
        with self._lock:
            keys = [
                k
                for k, (_, _, _, names) in self._checked.items()
                if k[0] == namespace and secret in names
            ]
            for key in keys:
                del self._checked[key]
        return sorted({k[1] for k in keys})


def check(kube: KubeApi, namespace: str, refs: list[Reference]) -> None:
    """Raise ConfigurationError naming the first missing Secret or key (and the field)."""
    cache: dict[str, dict[str, bytes] | None] = {}
    for ref in refs:
        if ref.secret not in cache:
            cache[ref.secret] = kube.secret_data(namespace, ref.secret)
        data = cache[ref.secret]
        if data is None:
            raise ConfigurationError(
                f"Secret {namespace}/{ref.secret} (referenced by {ref.field}) does not exist: create it "
                "or correct the reference",
                reason="SecretNotFound",
            )
        if ref.key not in data:
            have = ", ".join(sorted(data)) or "no keys"
            raise ConfigurationError(
                f"Secret {namespace}/{ref.secret} has no key {ref.key!r} (referenced by {ref.field}; "
                f"it has {have})",
                reason="SecretKeyNotFound",
            )


def operator_store(kube: KubeApi, namespace: str, spec: BackupPolicySpec) -> S3Store:
    """The policy's bucket as the operator reaches it (retention, discovery, manifests)."""
    s3 = spec.destination.s3
    creds: dict[str, str | None] = {
        "access_key_id": None,
        "secret_access_key": None,
        "session_token": None,
    }
    if s3.credentials_secret is not None:
        ref = s3.credentials_secret
        data = kube.secret_data(namespace, ref.name)
        if data is None:
            raise ConfigurationError(
                f"Secret {namespace}/{ref.name} (spec.destination.s3.credentialsSecret) does not exist",
                reason="SecretNotFound",
            )
        field = "spec.destination.s3.credentialsSecret"
        for key, name in (
            (ref.access_key_id_key, "accessKeyIdKey"),
            (ref.secret_access_key_key, "secretAccessKeyKey"),
        ):
            # Half a key pair would make the S3 client look for credentials elsewhere and
            # fail far from the cause; say which key is missing instead.
            if not data.get(key, b"").strip():
                have = ", ".join(sorted(data)) or "no keys"
                raise ConfigurationError(
                    f"Secret {namespace}/{ref.name} has no (or an empty) key {key!r} "
                    f"(referenced by {field}.{name}; it has {have})",
                    reason="SecretKeyNotFound",
                )
        creds["access_key_id"] = data[ref.access_key_id_key].decode().strip()
        creds["secret_access_key"] = data[ref.secret_access_key_key].decode().strip()
        if ref.session_token_key:
            creds["session_token"] = data.get(ref.session_token_key, b"").decode().strip() or None
    ca_file = None
    if s3.ca_secret is not None:
        ca_file = _ca_file(kube, namespace, s3.ca_secret)
    return _cached_store(
        S3Connection.of(
            jobs.destination(spec),
            access_key_id=creds["access_key_id"],
            secret_access_key=creds["secret_access_key"],
            session_token=creds["session_token"],
            ca_file=ca_file,
        )
    )


_STORES: dict[S3Connection, S3Store] = {}
_STORES_LOCK = threading.Lock()
_STORES_MAX = 64


def _cached_store(conn: S3Connection) -> S3Store:
    """One client per distinct connection (credentials included): a boto3 client costs ~1 MiB
    and tens of milliseconds, and a thousand policies usually share one bucket."""
    with _STORES_LOCK:
        store = _STORES.get(conn)
        if store is None:
            if len(_STORES) >= _STORES_MAX:
                _STORES.pop(next(iter(_STORES)))
            store = _STORES[conn] = S3Store(conn)
        return store


def secret_text(kube: KubeApi, namespace: str, ref: SecretKeyRef, field: str) -> str:
    """One Secret key's value as text (public keys the operator checks signatures with)."""
    data = kube.secret_data(namespace, ref.name)
    if data is None or ref.key not in data:
        raise ConfigurationError(
            f"Secret {namespace}/{ref.name} key {ref.key!r} ({field}) is missing",
            reason="SecretNotFound",
        )
    return data[ref.key].decode()


def _ca_file(kube: KubeApi, namespace: str, ref: SecretKeyRef) -> str:
    """The CA bundle as a file (what boto3 takes), named by its content: the same CA gives the
    same path, so the store cache hits and no file is left per call."""
    import hashlib
    import os
    import tempfile

    pem = secret_text(kube, namespace, ref, "spec.destination.s3.caSecret").encode()
    path = os.path.join(tempfile.gettempdir(), f"s3-ca-{hashlib.sha256(pem).hexdigest()[:32]}.pem")
    if not os.path.exists(path):
        handle = tempfile.NamedTemporaryFile(  # noqa: SIM115 - renamed into place below
            prefix="s3-ca-", suffix=".tmp", delete=False
        )
        with handle:
            handle.write(pem)
        os.replace(handle.name, path)  # atomic: a concurrent reader never sees half a bundle
    return path
