"""Secret references: checked before a run starts, read when the operator itself needs access.

Every check names the spec field that refers to the Secret and says how to fix it, because that
message is what a person reads in ``kubectl describe`` at 3 a.m.
"""

from __future__ import annotations

import threading

from ..builders import jobs
from ..clients.kube import KubeApi
from ..clients.s3 import S3Connection, S3Store
from ..components import registry
from ..components.base import Reference, aws_refs, key_refs
from ..errors import ConfigurationError
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
    import tempfile

    pem = secret_text(kube, namespace, ref, "spec.destination.s3.caSecret")
    handle = tempfile.NamedTemporaryFile(prefix="s3-ca-", suffix=".pem", delete=False)  # noqa: SIM115
    with handle:
        handle.write(pem.encode())
    return handle.name
