"""The vault component, pure side: runner settings, Secret references, objective."""

from __future__ import annotations

from datetime import timedelta
from typing import TYPE_CHECKING, Any

from ...builders import layout
from ..base import Component, Reference, RestoreRequest, SecretMounts, key_refs
from .spec import VaultComponent, VaultSettings

if TYPE_CHECKING:
    from ...models.policy import Components

FIELD = "spec.components.vault"


def raft_keys() -> layout.ArtifactKeys:
    """vault/raft.snap.gpg with sidecar vault/raft.snap.sha256."""
    return layout.artifact_keys("vault", "raft.snap")


def kv_keys(mount: str) -> layout.ArtifactKeys:
    """vault/kv-<mount>.json.gpg with its sidecar."""
    return layout.artifact_keys("vault", f"kv-{layout.safe_segment(mount)}.json")


def settings(mounts: SecretMounts, vault: VaultComponent) -> VaultSettings:
    """Runner settings for a Vault component, with its auth material mounted."""
    auth = vault.auth
    return VaultSettings(
        address=vault.address,
        ca_file=mounts.ref(vault.ca_secret, "vault-ca.crt"),
        token_file=mounts.ref(auth.token_secret, "vault-token"),
        role_id_file=mounts.ref(auth.app_role.role_id_secret, "vault-role-id")
        if auth.app_role
        else None,
        secret_id_file=mounts.ref(auth.app_role.secret_id_secret, "vault-secret-id")
        if auth.app_role
        else None,
        approle_mount=auth.app_role.mount_path if auth.app_role else "approle",
        kubernetes_role=auth.kubernetes.role if auth.kubernetes else None,
        kubernetes_mount=auth.kubernetes.mount_path if auth.kubernetes else "kubernetes",
        raft_snapshot=vault.raft_snapshot,
        kv_mounts=list(vault.kv_mounts),
    )


def restore_target(mounts: SecretMounts, req: RestoreRequest) -> VaultSettings | None:
    """The Vault a restore writes into: the policy's, with ``spec.target.vault``'s address and
    auth when given (the KV mounts still come from the policy)."""
    target = req.spec.target.vault if req.spec is not None and req.spec.target else None
    if req.policy is not None and req.policy.components.vault is not None:
        vault = req.policy.components.vault
        if target is not None:
            vault = vault.model_copy(
                update={
                    "address": target.address,
                    "ca_secret": target.ca_secret,
                    "auth": target.auth,
                }
            )
        return settings(mounts, vault)
    if target is not None:
        return settings(
            mounts,
            VaultComponent(address=target.address, ca_secret=target.ca_secret, auth=target.auth),
        )
    return None


class Vault(Component):
    """Vault/OpenBao: a raft snapshot and logical KV exports (Lamassu's Vault crypto engine)."""

    name = "vault"
    attr = "vault"
    package = "lamassu_backup.components.vault"

    def runner_settings(
        self, mounts: SecretMounts, comps: Components, namespace: str
    ) -> dict[str, Any]:
        assert comps.vault is not None
        return {"vault": settings(mounts, comps.vault)}

    def references(self, comps: Components) -> list[Reference]:
        vault = comps.vault
        assert vault is not None
        refs = [
            *key_refs(f"{FIELD}.caSecret", vault.ca_secret),
            *key_refs(f"{FIELD}.auth.tokenSecret", vault.auth.token_secret),
        ]
        if vault.auth.app_role:
            refs += key_refs(
                f"{FIELD}.auth.appRole.roleIdSecret", vault.auth.app_role.role_id_secret
            )
            refs += key_refs(
                f"{FIELD}.auth.appRole.secretIdSecret", vault.auth.app_role.secret_id_secret
            )
        return refs

    def rpo(self, comps: Components) -> timedelta:
        assert comps.vault is not None
        return comps.vault.recovery_point_objective

    def drilled(self, comps: Components) -> bool:
        return True

    def restore_settings(self, mounts: SecretMounts, req: RestoreRequest) -> dict[str, Any]:
        out: dict[str, Any] = {}
        if req.spec is not None:
            out["vault_method"] = req.spec.options.vault.method
            out["overwrite_existing"] = req.spec.options.vault.overwrite_existing
        if self.name in req.components:
            out["vault"] = restore_target(mounts, req)
        # The kms engines whose keys are in the KV export (the key consistency check reads them
        # there); declared on the policy that made the set, none for a bare S3 set.
        if req.policy is not None and req.policy.components.vault is not None:
            out["key_store_engines"] = list(req.policy.components.vault.key_store_engines)
        return out


COMPONENT = Vault()
