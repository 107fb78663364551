"""A sample Lamassu install in the cluster: what the chart creates that a backup must capture.

The six service ConfigMaps (with the credentials Lamassu really keeps there), the TLS Secrets
cert-manager would write, and the Secrets a backup policy refers to. Used by ``make platform-up``
(and so by ``make demo``) and by the end-to-end tests.
"""

from __future__ import annotations

import base64
import datetime as dt
from pathlib import Path
from typing import Any

import yaml
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import NameOID
from kubernetes import client
from kubernetes.client.exceptions import ApiException

SERVICES = ("ca", "kms", "va", "device-manager", "dms-manager", "alerts")
PART_OF = {"app.kubernetes.io/part-of": "lamassu"}
ANY_ADDRESS = "0.0.0.0"  # noqa: S104 - text inside a sample config; nothing binds to it

# Pod Security admission labels of the namespaces the sample install (and so its Jobs) lives in.
RESTRICTED_NAMESPACE = {
    "pod-security.kubernetes.io/enforce": "restricted",
    "pod-security.kubernetes.io/enforce-version": "latest",
}


def _apply(create: Any, replace: Any, name: str, body: dict[str, Any]) -> None:
    try:
        create(body)
    except ApiException as exc:
        if exc.status != 409:
            raise
        replace(name, body)


def _tls_pair(
    common_name: str, issuer_key: ec.EllipticCurvePrivateKey | None = None
) -> tuple[bytes, bytes, ec.EllipticCurvePrivateKey]:
    key = ec.generate_private_key(ec.SECP256R1())
    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, common_name)])
    now = dt.datetime.now(dt.UTC)
    cert = (
        x509.CertificateBuilder()
        .subject_name(name)
        .issuer_name(name)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - dt.timedelta(minutes=5))
        .not_valid_after(now + dt.timedelta(days=365))
        .sign(issuer_key or key, hashes.SHA256())
    )
    pem_cert = cert.public_bytes(serialization.Encoding.PEM)
    pem_key = key.private_bytes(
        serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()
    )
    return pem_cert, pem_key, key


def service_config(service: str, pg_host: str, pg_port: int, vault_address: str) -> str:
    """A Lamassu-style service config (what ConfigMap <service>-config holds under key config)."""
    db = service.replace("-", "")
    doc: dict[str, Any] = {
        "logs": {"level": "info"},
        "server": {"listen_address": ANY_ADDRESS, "port": 8085, "protocol": "http"},
        "storage": {
            "provider": "postgres",
            "config": {
                "hostname": pg_host,
                "port": pg_port,
                "username": "lamassu",
                "password": "sample-db-password",
                "database": db,
            },
        },
        "publisher_event_bus": {
            "enabled": True,
            "provider": "amqp",
            "config": {"hostname": "rabbitmq", "port": 5672},
        },
    }
    if service == "kms":
        doc["crypto_engines"] = {
            "default_id": "vault-1",
            "hashicorp_vault": [
                {
                    "id": "vault-1",
                    "address": vault_address,
                    "role_id": "sample-role-id",
                    "secret_id": "sample-secret-id",
                    "mount_path": "lamassu-kms",
                }
            ],
        }
    return yaml.safe_dump(doc, sort_keys=False)


def install(
    api: client.ApiClient,
    *,
    namespace: str,
    pg_host: str,
    pg_port: int,
    pg_user: str,
    pg_password: str,
    vault_address: str,
    vault_ca: bytes,
    vault_token: str,
    s3_access_key: str,
    s3_secret_key: str,
    recipients_asc: Path,
    signing_key_asc: Path,
    signing_public_asc: Path,
    decryption_key_asc: Path,
) -> None:
    """Create (or update) the sample install's objects in ``namespace``."""
    core = client.CoreV1Api(api)
    try:
        # Restricted, as a hardened cluster labels it: the apiserver's Pod Security admission
        # then refuses any backup or restore Job Pod that is not restricted.
        core.create_namespace({"metadata": {"name": namespace, "labels": RESTRICTED_NAMESPACE}})
    except ApiException as exc:
        if exc.status != 409:
            raise
    for service in SERVICES:
        name = f"{service}-config"
        body = {
            "metadata": {"name": name, "labels": {**PART_OF, "app": service}},
            "data": {"config": service_config(service, pg_host, pg_port, vault_address)},
        }
        _apply(
            lambda b: core.create_namespaced_config_map(namespace, b),
            lambda n, b: core.replace_namespaced_config_map(n, namespace, b),
            name,
            body,
        )
    root_cert, root_key_pem, root_key = _tls_pair("Lamassu Root Downstream CA")
    leaf_cert, leaf_key, _ = _tls_pair("lamassu.lamassu.svc", issuer_key=root_key)

    def b64(data: bytes | str) -> str:
        return base64.b64encode(data if isinstance(data, bytes) else data.encode()).decode()

    secrets: dict[str, tuple[str, dict[str, str], dict[str, str]]] = {
        "root-downstream-cert": (
            "kubernetes.io/tls",
            {"tls.crt": b64(root_cert), "tls.key": b64(root_key_pem)},
            PART_OF,
        ),
        "downstream-cert": (
            "kubernetes.io/tls",
            {"tls.crt": b64(leaf_cert), "tls.key": b64(leaf_key), "ca.crt": b64(root_cert)},
            PART_OF,
        ),
        "lamassu-postgres": (
            "Opaque",
            {"username": b64(pg_user), "password": b64(pg_password)},
            {},
        ),
        "backup-s3": (
            "Opaque",
            {"accessKeyId": b64(s3_access_key), "secretAccessKey": b64(s3_secret_key)},
            {},
        ),
        "backup-gpg-public": ("Opaque", {"recipients.asc": b64(recipients_asc.read_bytes())}, {}),
        "backup-gpg-signing": ("Opaque", {"signing.asc": b64(signing_key_asc.read_bytes())}, {}),
        "backup-gpg-signing-public": (
            "Opaque",
            {"signing-public.asc": b64(signing_public_asc.read_bytes())},
            {},
        ),
        "backup-gpg-private": ("Opaque", {"private.asc": b64(decryption_key_asc.read_bytes())}, {}),
        "vault-backup-token": ("Opaque", {"token": b64(vault_token)}, {}),
        "vault-ca": ("Opaque", {"ca.crt": b64(vault_ca)}, {}),
    }
    for name, (kind, data, labels) in secrets.items():
        body = {"metadata": {"name": name, "labels": labels}, "type": kind, "data": data}
        _apply(
            lambda b: core.create_namespaced_secret(namespace, b),
            lambda n, b: core.replace_namespaced_secret(n, namespace, b),
            name,
            body,
        )


def policy(
    *,
    namespace: str,
    name: str,
    pg_host: str,
    pg_port: int,
    databases: list[str],
    vault_address: str,
    s3_endpoint: str,
    bucket: str,
    kms_key_arn: str,
    schedule: str = "0 * * * *",
) -> dict[str, Any]:
    """A LamassuBackupPolicy for the sample install, pointing at the local services."""
    return {
        "apiVersion": "backup.lamassu.io/v1alpha1",
        "kind": "LamassuBackupPolicy",
        "metadata": {"name": name, "namespace": namespace},
        "spec": {
            "schedule": schedule,
            "components": {
                "postgres": {
                    "host": pg_host,
                    "port": pg_port,
                    "sslMode": "disable",
                    "credentialsSecret": {"name": "lamassu-postgres"},
                    "databases": databases,
                },
                "vault": {
                    "address": vault_address,
                    "caSecret": {"name": "vault-ca", "key": "ca.crt"},
                    "auth": {"tokenSecret": {"name": "vault-backup-token", "key": "token"}},
                    "raftSnapshot": True,
                    "kvMounts": ["lamassu-kms"],
                },
                "config": {"selector": {"matchLabels": PART_OF}},
            },
            "destination": {
                "s3": {
                    "bucket": bucket,
                    "prefix": "local",
                    "endpoint": s3_endpoint,
                    "forcePathStyle": True,
                    "credentialsSecret": {"name": "backup-s3"},
                    "serverSideEncryption": {"type": "aws:kms", "kmsKeyId": kms_key_arn},
                }
            },
            "encryption": {
                "gpg": {
                    "recipientsSecret": {"name": "backup-gpg-public", "key": "recipients.asc"},
                    "signingKeySecret": {"name": "backup-gpg-signing", "key": "signing.asc"},
                }
            },
            "verification": {
                "decryptionKeySecret": {"name": "backup-gpg-private", "key": "private.asc"},
                "signerKeySecret": {
                    "name": "backup-gpg-signing-public",
                    "key": "signing-public.asc",
                },
            },
            "runner": {"serviceAccountName": "lamassu-backup-runner"},
        },
    }
