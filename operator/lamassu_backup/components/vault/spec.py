"""The vault component's models: the policy's spec (address, auth, raft snapshot, KV mounts), the
restore's target and options, and the runner's settings."""

from __future__ import annotations

from datetime import timedelta
from typing import Literal

from pydantic import Field, field_validator

from ...models.base import CRModel, Rule, RunnerModel
from ...models.common import ENGINE_ID_MAX, SecretKeyRef
from ...models.types import Duration


class VaultTokenAuth(CRModel):
    """Authenticate to Vault with a token kept in a Secret."""

    token_secret: SecretKeyRef
    """Secret key holding the token."""


class VaultAppRoleAuth(CRModel):
    """Authenticate to Vault with AppRole (what Lamassu's KMS itself uses)."""

    role_id_secret: SecretKeyRef
    """Secret key holding the role_id."""

    secret_id_secret: SecretKeyRef
    """Secret key holding the secret_id."""

    mount_path: str = "approle"
    """Mount path of the AppRole auth method."""


class VaultKubernetesAuth(CRModel):
    """Authenticate to Vault with the runner Pod's ServiceAccount token."""

    role: str = Field(min_length=1)
    """Vault role bound to the runner's ServiceAccount."""

    mount_path: str = "kubernetes"
    """Mount path of the Kubernetes auth method."""


class VaultAuth(CRModel):
    """How the runner authenticates to Vault/OpenBao: exactly one method."""

    __rules__ = (
        Rule(
            "[has(self.tokenSecret), has(self.appRole), has(self.kubernetes)]"
            ".filter(x, x).size() == 1",
            "vault auth needs exactly one of tokenSecret, appRole or kubernetes",
            lambda m: [m.token_secret, m.app_role, m.kubernetes].count(None) == 2,
        ),
    )

    token_secret: SecretKeyRef | None = None
    """Token auth."""

    app_role: VaultAppRoleAuth | None = None
    """AppRole auth."""

    kubernetes: VaultKubernetesAuth | None = None
    """Kubernetes auth."""


class VaultComponent(CRModel):
    """Vault or OpenBao holding CA private keys (Lamassu's Vault KV v2 crypto engine)."""

    __rules__ = (
        Rule(
            "self.raftSnapshot || size(self.kvMounts) > 0",
            "vault needs raftSnapshot: true or at least one entry in kvMounts",
            lambda m: m.raft_snapshot or bool(m.kv_mounts),
        ),
    )

    address: str = Field(min_length=1, pattern=r"^https?://")
    """Vault address, e.g. https://vault.vault.svc:8200."""

    ca_secret: SecretKeyRef | None = None
    """CA certificate to verify Vault's TLS certificate."""

    auth: VaultAuth
    """How to authenticate."""

    raft_snapshot: bool = True
    """Save a whole-Vault raft snapshot (sys/storage/raft/snapshot)."""

    kv_mounts: list[str] = Field(default_factory=lambda: ["lamassu-kms"])
    """KV v2 mounts exported logically (every secret, every field), e.g. the Lamassu KMS mount."""

    key_store_engines: list[str] = Field(
        default_factory=list,
        max_length=32,
        json_schema_extra={
            "items": {"type": "string", "minLength": 1, "maxLength": ENGINE_ID_MAX},
            "x-kubernetes-list-type": "set",
        },
    )
    """kms crypto engine ids (kms-config crypto_engines.engines[].id, e.g. vault-1) whose private
    keys are in kvMounts. A restore or drill checks these engines' CA keys against the restored
    mounts. Empty: every engine not declared on a volume (keyStoreEngine) is expected in Vault,
    so declare the Vault engines whenever the kms has another kind (e.g. a PKCS#11 HSM)."""

    @field_validator("key_store_engines")
    @classmethod
    def _unique_engines(cls, engines: list[str]) -> list[str]:
        if any(not e or len(e) > ENGINE_ID_MAX for e in engines):
            raise ValueError(f"keyStoreEngines entries are 1 to {ENGINE_ID_MAX} characters")
        duplicates = sorted({e for e in engines if engines.count(e) > 1})
        if duplicates:
            raise ValueError(f"duplicate keyStoreEngines entry: {', '.join(duplicates)}")
        return engines

    recovery_point_objective: Duration = timedelta(hours=25)
    """Stale when the last successful Vault backup is older than this (daily runs plus slack)."""


class VaultSettings(RunnerModel):
    """A Vault/OpenBao server and how to log in."""

    address: str
    ca_file: str | None = None
    token_file: str | None = None
    role_id_file: str | None = None
    secret_id_file: str | None = None
    approle_mount: str = "approle"
    kubernetes_role: str | None = None
    kubernetes_mount: str = "kubernetes"
    kubernetes_jwt_file: str = "/var/run/secrets/kubernetes.io/serviceaccount/token"
    raft_snapshot: bool = True
    kv_mounts: list[str] = Field(default_factory=list)


class VaultTarget(CRModel):
    """Restore into another Vault/OpenBao."""

    address: str = Field(pattern=r"^https?://")
    """Address of the target."""

    ca_secret: SecretKeyRef | None = None
    """CA certificate."""

    auth: VaultAuth
    """How to authenticate."""


class VaultOptions(CRModel):
    """Vault restore options."""

    method: Literal["KV", "RaftSnapshot"] = "KV"
    """KV: write exported secrets into their mounts. RaftSnapshot: replace the whole Vault."""

    overwrite_existing: bool = False
    """KV: overwrite keys whose current value differs from the backup (reported either way)."""
