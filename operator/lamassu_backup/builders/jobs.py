"""Job manifests for backup, commit and verification runs: pure functions of the resources.

Every credential reaches the runner as a file from a Secret volume; the runner's configuration
(:class:`RunnerConfig`) only says where those files are. Names are deterministic, so the operator
can always find, adopt or refuse to duplicate a Job after a restart.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from ..models.backup import Trigger
from ..models.common import AwsCredentialsSecretRef, BasicAuthSecretRef, SecretKeyRef
from ..models.policy import BackupPolicySpec, PostgresComponent, RunnerSettings, VaultComponent
from ..models.resources import GROUP
from ..models.runner import (
    CONFIG_ENV,
    SECRETS_ROOT,
    AwsKmsSettings,
    ConfigSettings,
    FilesystemKeyStore,
    GpgSettings,
    PostgresSettings,
    RestoreRunConfig,
    RunnerConfig,
    S3Settings,
    VaultSettings,
    VolumeSettings,
)
from . import layout, placement

LABEL_POLICY = f"{GROUP}/policy"
LABEL_BACKUP = f"{GROUP}/backup"
LABEL_COMPONENT = f"{GROUP}/component"
LABEL_ROLE = f"{GROUP}/role"
MANAGED_BY = "lamassu-backup-operator"
RESTORE_CONFIG_ENV = "LAMASSU_RESTORE_CONFIG"
VOLUMES_ROOT = "/var/run/lamassu-backup/volumes"
SCRATCH = "/tmp"  # noqa: S108 - an emptyDir in memory, the only writable path in the Pod


@dataclass
class _Mounts:
    """Secret keys to mount, collected while building the runner config."""

    volumes: list[dict[str, Any]] = field(default_factory=list)
    mounts: list[dict[str, Any]] = field(default_factory=list)
    _by_secret: dict[str, dict[str, Any]] = field(default_factory=dict)

    def file(self, secret: str, key: str, filename: str) -> str:
        """Mount ``key`` of ``secret`` as ``filename``; returns the path the runner reads."""
        volume = self._by_secret.get(secret)
        if volume is None:
            name = layout.bounded_name("secret", secret)
            volume = {
                "name": name,
                "secret": {"secretName": secret, "items": [], "defaultMode": 0o440},
            }
            self._by_secret[secret] = volume
            self.volumes.append(volume)
            self.mounts.append(
                {"name": name, "mountPath": f"{SECRETS_ROOT}/{secret}", "readOnly": True}
            )
        items = volume["secret"]["items"]
        target = filename
        existing = next((i for i in items if i["key"] == key), None)
        if existing is not None:
            target = existing["path"]
        else:
            items.append({"key": key, "path": target})
        return f"{SECRETS_ROOT}/{secret}/{target}"

    def ref(self, ref: SecretKeyRef | None, filename: str) -> str | None:
        """Mount one SecretKeyRef (None passes through)."""
        return self.file(ref.name, ref.key, filename) if ref else None


def _aws_files(mounts: _Mounts, ref: AwsCredentialsSecretRef | None, prefix: str) -> dict[str, Any]:
    """Mount an AWS key pair; no files at all means the Pod's ambient credentials (IRSA)."""
    if ref is None:
        return {}
    files: dict[str, Any] = {
        "access_key_id_file": mounts.file(
            ref.name, ref.access_key_id_key, f"{prefix}-access-key-id"
        ),
        "secret_access_key_file": mounts.file(
            ref.name, ref.secret_access_key_key, f"{prefix}-secret-access-key"
        ),
    }
    if ref.session_token_key:
        files["session_token_file"] = mounts.file(
            ref.name, ref.session_token_key, f"{prefix}-session-token"
        )
    return files


def _basic_auth(mounts: _Mounts, ref: BasicAuthSecretRef, prefix: str) -> tuple[str, str]:
    return (
        mounts.file(ref.name, ref.username_key, f"{prefix}-username"),
        mounts.file(ref.name, ref.password_key, f"{prefix}-password"),
    )


def vault_settings(mounts: _Mounts, vault: VaultComponent) -> VaultSettings:
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


def postgres_settings(mounts: _Mounts, pg: PostgresComponent) -> PostgresSettings:
    """Runner settings for the PostgreSQL server, with its credentials mounted."""
    user_file, password_file = _basic_auth(mounts, pg.credentials_secret, "postgres")
    return PostgresSettings(
        host=pg.host,
        port=pg.port,
        ssl_mode=pg.ssl_mode,
        ca_file=mounts.ref(pg.ca_secret, "postgres-ca.crt"),
        username_file=user_file,
        password_file=password_file,
        layout=pg.layout,
        databases=list(pg.databases),
        database=pg.database,
        schemas=list(pg.schemas),
        compression=pg.compression,
        parallel=pg.parallel,
    )


def s3_settings(mounts: _Mounts, policy: BackupPolicySpec) -> S3Settings:
    """Runner settings for the destination bucket."""
    s3 = policy.destination.s3
    return S3Settings(
        bucket=s3.bucket,
        region=s3.region,
        endpoint=s3.endpoint,
        force_path_style=s3.force_path_style,
        ca_file=mounts.ref(s3.ca_secret, "s3-ca.crt"),
        sse=s3.server_side_encryption.type,
        kms_key_id=s3.server_side_encryption.kms_key_id,
        storage_class=s3.storage_class,
        **_aws_files(mounts, s3.credentials_secret, "s3"),
    )


def key_store_settings(
    policy: BackupPolicySpec | None,
) -> tuple[list[str], list[FilesystemKeyStore]]:
    """Where each kms engine's keys are, for the restore runner's key consistency check:
    (the engine ids whose keys are in the Vault KV export, the filesystem engines by volume).

    Both come from the policy that made the set (``components.vault.keyStoreEngines``,
    ``components.volumes[].keyStoreEngine``); without a policy (a bare S3 set) nothing is
    declared and the runner keeps its old behaviour (every engine looked for in Vault).
    """
    if policy is None:
        return [], []
    comps = policy.components
    vault_engines = list(comps.vault.key_store_engines) if comps.vault else []
    filesystem = [
        FilesystemKeyStore(engine=v.key_store_engine, volume=v.name, path=v.key_store_path)
        for v in comps.volumes
        if v.key_store_engine
    ]
    return vault_engines, filesystem


def destination(policy: BackupPolicySpec) -> S3Settings:
    """The policy's bucket settings as the operator itself uses them (paths of mounted files
    mean nothing outside a Pod: the operator passes credential values instead)."""
    return s3_settings(_Mounts(), policy)


def runner_config(
    policy: BackupPolicySpec,
    *,
    namespace: str,
    policy_name: str,
    backup_name: str,
    set_time: str,
    components: list[str],
    mounts: _Mounts,
) -> RunnerConfig:
    """The runner configuration for ``components`` of one set, mounting what they need."""
    comps = policy.components
    prefix = layout.set_prefix(policy.destination.s3.prefix, namespace, policy_name, set_time)
    gpg = policy.encryption.gpg
    cfg: dict[str, Any] = {
        "namespace": namespace,
        "policy": policy_name,
        "backup": backup_name,
        "set_time": set_time,
        "set_prefix": prefix,
        "components": components,
        "destination": s3_settings(mounts, policy),
        "gpg": GpgSettings(
            recipients_file=mounts.file(
                gpg.recipients_secret.name, gpg.recipients_secret.key, "recipients.asc"
            ),
            signing_key_file=mounts.ref(gpg.signing_key_secret, "signing.asc"),
            signing_passphrase_file=mounts.ref(
                gpg.signing_key_passphrase_secret, "signing-passphrase"
            ),
        ),
    }
    if "postgres" in components and comps.postgres:
        cfg["postgres"] = postgres_settings(mounts, comps.postgres)
    if "vault" in components and comps.vault:
        cfg["vault"] = vault_settings(mounts, comps.vault)
    if "config" in components and comps.config:
        cfg["config"] = ConfigSettings(
            namespace=namespace,
            config_maps=list(comps.config.config_maps),
            secrets=list(comps.config.secrets),
            selector=comps.config.selector.to_query() if comps.config.selector else None,
        )
    if "volumes" in components:
        cfg["volumes"] = [
            VolumeSettings(name=v.name, path=f"{VOLUMES_ROOT}/{v.name}") for v in comps.volumes
        ]
    if "awsKms" in components and comps.aws_kms:
        kms = comps.aws_kms
        cfg["aws_kms"] = AwsKmsSettings(
            region=kms.region,
            endpoint=kms.endpoint,
            key_ids=list(kms.key_ids),
            **_aws_files(mounts, kms.credentials_secret, "kms"),
        )
    return RunnerConfig(**cfg)


@dataclass(frozen=True)
class Owner:
    """The object a Job belongs to (garbage-collected with it)."""

    api_version: str
    kind: str
    name: str
    uid: str

    def reference(self) -> dict[str, Any]:
        """An ownerReference to it, as controller."""
        return {
            "apiVersion": self.api_version,
            "kind": self.kind,
            "name": self.name,
            "uid": self.uid,
            "controller": True,
            "blockOwnerDeletion": True,
        }


def _pod_security(runner: RunnerSettings) -> dict[str, Any]:
    ctx: dict[str, Any] = {
        "runAsNonRoot": True,
        "runAsUser": runner.run_as_user,
        "runAsGroup": runner.run_as_group,
        "seccompProfile": {"type": "RuntimeDefault"},
    }
    if runner.fs_group is not None:
        ctx["fsGroup"] = runner.fs_group
    return ctx


_CONTAINER_SECURITY = {
    "allowPrivilegeEscalation": False,
    "readOnlyRootFilesystem": True,
    "capabilities": {"drop": ["ALL"]},
    "privileged": False,
}


def job_manifest(
    *,
    name: str,
    namespace: str,
    owner: Owner,
    runner: RunnerSettings,
    labels: dict[str, str],
    command: list[str],
    env: dict[str, str],
    mounts: _Mounts,
    extra_volumes: list[dict[str, Any]] | None = None,
    extra_mounts: list[dict[str, Any]] | None = None,
    node: str | None = None,
) -> dict[str, Any]:
    """A batch/v1 Job running the runner with a restricted security context."""
    all_labels = {
        "app.kubernetes.io/name": "lamassu-backup-runner",
        "app.kubernetes.io/managed-by": MANAGED_BY,
        **labels,
    }
    pod_labels = {**runner.pod_labels, **all_labels}
    volumes = [
        {"name": "scratch", "emptyDir": {"medium": "Memory", "sizeLimit": "64Mi"}},
        *mounts.volumes,
        *(extra_volumes or []),
    ]
    volume_mounts = [
        {"name": "scratch", "mountPath": SCRATCH},
        *mounts.mounts,
        *(extra_mounts or []),
    ]
    container: dict[str, Any] = {
        "name": "runner",
        "image": runner.image,
        "imagePullPolicy": runner.image_pull_policy,
        "command": command,
        "env": [{"name": k, "value": v} for k, v in sorted(env.items())]
        + [{"name": "LAMASSU_SCRATCH", "value": SCRATCH}, {"name": "HOME", "value": SCRATCH}],
        "resources": {
            "requests": dict(runner.resources.requests),
            "limits": dict(runner.resources.limits),
        },
        "securityContext": dict(_CONTAINER_SECURITY),
        "volumeMounts": volume_mounts,
        "terminationMessagePath": "/dev/termination-log",
        "terminationMessagePolicy": "FallbackToLogsOnError",
    }
    pod_spec: dict[str, Any] = {
        "restartPolicy": "Never",
        "serviceAccountName": runner.service_account_name,
        "securityContext": _pod_security(runner),
        "containers": [container],
        "volumes": volumes,
    }
    if node:
        pod_spec["affinity"] = placement.node_affinity(node)
    if runner.node_selector:
        pod_spec["nodeSelector"] = dict(runner.node_selector)
    if runner.tolerations:
        pod_spec["tolerations"] = [t.to_api() for t in runner.tolerations]
    if runner.priority_class_name:
        pod_spec["priorityClassName"] = runner.priority_class_name
    if runner.image_pull_secrets:
        pod_spec["imagePullSecrets"] = [{"name": s} for s in runner.image_pull_secrets]
    return {
        "apiVersion": "batch/v1",
        "kind": "Job",
        "metadata": {
            "name": name,
            "namespace": namespace,
            "labels": all_labels,
            "ownerReferences": [owner.reference()],
        },
        "spec": {
            "backoffLimit": runner.backoff_limit,
            "activeDeadlineSeconds": int(runner.active_deadline.total_seconds()),
            "ttlSecondsAfterFinished": int(runner.ttl_after_finished.total_seconds()),
            "template": {
                "metadata": {"labels": pod_labels, "annotations": dict(runner.pod_annotations)},
                "spec": pod_spec,
            },
        },
    }


def component_job_name(backup: str, component: str) -> str:
    """Deterministic name of a component's Job."""
    return layout.bounded_name(backup, component.lower())


def commit_job_name(backup: str) -> str:
    """Deterministic name of the commit Job."""
    return layout.bounded_name(backup, "commit")


def verify_job_name(backup: str, time_str: str) -> str:
    """Deterministic name of a verification drill Job (one per scheduled tick)."""
    return layout.bounded_name(backup, f"verify-{time_str.lower()}")


def claim_mounts(
    policy: BackupPolicySpec, *, read_only: bool
) -> tuple[list[dict[str, Any]], list[dict[str, Any]]]:
    """The policy's volumes as Pod volumes and mounts at ``VOLUMES_ROOT/<name>`` (backups read
    them; an in-place restore writes them, or reads a key store it checks the keys against)."""
    volumes: list[dict[str, Any]] = []
    mounts: list[dict[str, Any]] = []
    for vol in policy.components.volumes:
        vname = layout.bounded_name("data", vol.name)
        volumes.append(
            {
                "name": vname,
                "persistentVolumeClaim": {"claimName": vol.claim_name, "readOnly": read_only},
            }
        )
        mount: dict[str, Any] = {
            "name": vname,
            "mountPath": f"{VOLUMES_ROOT}/{vol.name}",
            "readOnly": read_only,
        }
        if vol.sub_path:
            mount["subPath"] = vol.sub_path
        mounts.append(mount)
    return volumes, mounts


def backup_job(
    policy: BackupPolicySpec,
    *,
    namespace: str,
    policy_name: str,
    backup_name: str,
    set_time: str,
    component: str,
    owner: Owner,
    node: str | None = None,
) -> dict[str, Any]:
    """The Job backing up one component of a set (it records its outcome; commit comes later).

    ``node`` pins it to the node holding the volumes' ReadWriteOnce claims (see placement).
    """
    mounts = _Mounts()
    cfg = runner_config(
        policy,
        namespace=namespace,
        policy_name=policy_name,
        backup_name=backup_name,
        set_time=set_time,
        components=[component],
        mounts=mounts,
    )
    extra_volumes, extra_mounts = (
        claim_mounts(policy, read_only=True) if component == "volumes" else ([], [])
    )
    return job_manifest(
        name=component_job_name(backup_name, component),
        namespace=namespace,
        owner=owner,
        runner=policy.runner,
        labels=run_labels(policy_name, backup_name, component, "backup"),
        command=["lamassu-backup", "runner", "backup", "--component", component, "--no-commit"],
        env={CONFIG_ENV: cfg.model_dump_json(by_alias=True, exclude_none=True)},
        mounts=mounts,
        extra_volumes=extra_volumes,
        extra_mounts=extra_mounts,
        node=node,
    )


def run_labels(policy_name: str, backup_name: str, component: str, role: str) -> dict[str, str]:
    """Labels every Job of a run carries: the Job watcher finds its run by them."""
    return {
        LABEL_POLICY: layout.label_value(policy_name),
        LABEL_BACKUP: layout.label_value(backup_name),
        LABEL_COMPONENT: component,
        LABEL_ROLE: role,
    }


def run_of(job: dict[str, Any]) -> str | None:
    """The LamassuBackup a Job belongs to: its controller owner (labels may be shortened)."""
    for owner in (job.get("metadata") or {}).get("ownerReferences") or []:
        if owner.get("kind") == "LamassuBackup" and owner.get("controller"):
            return str(owner.get("name"))
    return None


def commit_job(
    policy: BackupPolicySpec,
    *,
    namespace: str,
    policy_name: str,
    backup_name: str,
    set_time: str,
    components: list[str],
    owner: Owner,
) -> dict[str, Any]:
    """The Job that writes the set's manifest (and signature) once every component Job ended."""
    mounts = _Mounts()
    # Built for no component, so only the bucket and the GPG keys are mounted: the commit reads
    # the part records and signs, it never needs database or Vault credentials.
    slim = runner_config(
        policy,
        namespace=namespace,
        policy_name=policy_name,
        backup_name=backup_name,
        set_time=set_time,
        components=[],
        mounts=mounts,
    ).model_copy(update={"components": components})
    return job_manifest(
        name=commit_job_name(backup_name),
        namespace=namespace,
        owner=owner,
        runner=policy.runner,
        labels=run_labels(policy_name, backup_name, "commit", "commit"),
        command=["lamassu-backup", "runner", "commit", "--allow-partial"],
        env={CONFIG_ENV: slim.model_dump_json(by_alias=True, exclude_none=True)},
        mounts=mounts,
    )


def verify_job(
    policy: BackupPolicySpec,
    *,
    namespace: str,
    policy_name: str,
    backup_name: str,
    set_time: str,
    components: list[str],
    tick: str,
    owner: Owner,
) -> dict[str, Any] | None:
    """A drill Job restoring the set into scratch targets; None when verification lacks a key."""
    verification = policy.verification
    if verification.decryption_key_secret is None:
        return None
    mounts = _Mounts()
    source = s3_settings(mounts, policy)
    comps = policy.components
    pg_settings = (
        postgres_settings(mounts, comps.postgres)
        if comps.postgres and "postgres" in components
        else None
    )
    vault_engines, filesystem_stores = key_store_settings(policy)
    # The drill restores the volumes too when a filesystem engine keeps its keys on one: the
    # key check reads them from the scratch copy (the claims are not mounted: the set is read).
    drilled = ("postgres", "vault", "volumes") if filesystem_stores else ("postgres", "vault")
    cfg = RestoreRunConfig(
        namespace=namespace,
        restore=verify_job_name(backup_name, tick),
        mode="Drill",
        step="restore",
        source=source,
        set_prefix=layout.set_prefix(
            policy.destination.s3.prefix, namespace, policy_name, set_time
        ),
        backup=backup_name,
        components=[c for c in components if c in drilled],
        decryption_key_file=mounts.file(
            verification.decryption_key_secret.name,
            verification.decryption_key_secret.key,
            "decryption.asc",
        ),
        decryption_passphrase_file=mounts.ref(
            verification.decryption_key_passphrase_secret, "decryption-passphrase"
        ),
        signer_key_file=mounts.ref(verification.signer_key_secret, "signer.asc"),
        require_signature=verification.signer_key_secret is not None,
        postgres=pg_settings,
        vault=vault_settings(mounts, comps.vault)
        if comps.vault and "vault" in components
        else None,
        key_consistency=verification.key_consistency,
        key_store_engines=vault_engines,
        filesystem_key_stores=filesystem_stores,
    )
    return job_manifest(
        name=verify_job_name(backup_name, tick),
        namespace=namespace,
        owner=owner,
        runner=policy.runner,
        labels=run_labels(policy_name, backup_name, "verify", "verify"),
        command=["lamassu-backup", "runner", "restore"],
        env={RESTORE_CONFIG_ENV: cfg.model_dump_json(by_alias=True, exclude_none=True)},
        mounts=mounts,
    )


def backup_resource(
    *,
    namespace: str,
    policy_name: str,
    name: str,
    trigger: Trigger,
    components: list[str],
    scheduled_time: str | None = None,
    location: str | None = None,
) -> dict[str, Any]:
    """A LamassuBackup record.

    Deliberately not owned by its policy: deleting a policy (by mistake, or by a GitOps prune)
    must not delete the records a restore points at. The sets in S3 are never deleted with it.
    """
    spec: dict[str, Any] = {
        "policyRef": {"name": policy_name},
        "trigger": trigger.value,
        "components": components,
    }
    if scheduled_time:
        spec["scheduledTime"] = scheduled_time
    if location:
        spec["location"] = location
    return {
        "apiVersion": f"{GROUP}/v1alpha1",
        "kind": "LamassuBackup",
        "metadata": {
            "name": name,
            "namespace": namespace,
            "labels": {
                LABEL_POLICY: layout.label_value(policy_name),
                "app.kubernetes.io/managed-by": MANAGED_BY,
            },
        },
        "spec": spec,
    }
