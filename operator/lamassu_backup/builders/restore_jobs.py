"""Job manifests for the steps of a LamassuRestore (plan, restore, rollback, finalize).

Each Job runs the existing restore runner (``lamassu-backup runner restore``), so every guarantee
it has (verify before destroy, restore beside and swap, drills torn down, exit codes 0/1/3) holds;
the controller only decides which step runs when. Credentials reach the runner as files from
Secret volumes, as for backups; names are deterministic (one Job per step and restore).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Literal

from ..models.policy import BackupPolicySpec, RunnerSettings
from ..models.restore import RestoreSpec, S3Source
from ..models.runner import (
    ConfigSettings,
    PostgresSettings,
    RestoreRunConfig,
    S3Settings,
    VolumeSettings,
)
from ..models.runner import VaultSettings as RunnerVault
from . import jobs, layout
from .restore_plan import LABEL_RESTORE, job_name

Step = Literal["plan", "restore", "rollback", "finalize"]


@dataclass(frozen=True)
class RestoreSource:
    """The set to restore: where it is, and the policy it came from (None for a bare S3 set)."""

    bucket_url: str
    """s3://bucket/prefix/ of the set."""

    backup: str | None
    policy: BackupPolicySpec | None

    @property
    def bucket(self) -> str:
        return self.bucket_url.removeprefix("s3://").split("/", 1)[0]

    @property
    def prefix(self) -> str:
        rest = self.bucket_url.removeprefix("s3://").split("/", 1)
        return rest[1] if len(rest) > 1 else ""


def _s3_source(mounts: jobs._Mounts, spec: RestoreSpec, src: RestoreSource) -> S3Settings:
    if src.policy is not None:
        return jobs.s3_settings(mounts, src.policy)
    s3: S3Source | None = spec.source.s3 if spec.source else None
    if s3 is None:
        raise ValueError("a restore without a policy needs spec.source.s3")
    return S3Settings(
        bucket=s3.bucket,
        region=s3.region,
        endpoint=s3.endpoint,
        force_path_style=s3.force_path_style,
        ca_file=mounts.ref(s3.ca_secret, "s3-ca.crt"),
        sse="none",
        **jobs._aws_files(mounts, s3.credentials_secret, "s3"),
    )


def _postgres(
    mounts: jobs._Mounts, spec: RestoreSpec, policy: BackupPolicySpec | None
) -> PostgresSettings | None:
    target = spec.target.postgres if spec.target else None
    if target is not None:
        user_file, password_file = jobs._basic_auth(mounts, target.credentials_secret, "postgres")
        return PostgresSettings(
            host=target.host,
            port=target.port,
            ssl_mode=target.ssl_mode,
            ca_file=mounts.ref(target.ca_secret, "postgres-ca.crt"),
            username_file=user_file,
            password_file=password_file,
        )
    if policy is not None and policy.components.postgres is not None:
        return jobs.postgres_settings(mounts, policy.components.postgres)
    return None


def _vault(
    mounts: jobs._Mounts, spec: RestoreSpec, policy: BackupPolicySpec | None
) -> RunnerVault | None:
    target = spec.target.vault if spec.target else None
    if policy is not None and policy.components.vault is not None:
        vault = policy.components.vault
        if target is not None:
            vault = vault.model_copy(
                update={
                    "address": target.address,
                    "ca_secret": target.ca_secret,
                    "auth": target.auth,
                }
            )
        return jobs.vault_settings(mounts, vault)
    if target is not None:
        from ..models.policy import VaultComponent

        return jobs.vault_settings(
            mounts,
            VaultComponent(address=target.address, ca_secret=target.ca_secret, auth=target.auth),
        )
    return None


def run_config(
    spec: RestoreSpec,
    src: RestoreSource,
    *,
    namespace: str,
    restore: str,
    step: Step,
    components: list[str],
    swap_suffix: str | None,
    mounts: jobs._Mounts,
) -> RestoreRunConfig:
    """The runner's configuration for one step, mounting the Secrets it needs."""
    policy = src.policy
    wants_pg = step in ("rollback", "finalize") or "postgres" in components
    wants_vault = step == "plan" or "vault" in components
    key_store_engines, filesystem_key_stores = jobs.key_store_settings(policy)
    in_place = spec.mode.value != "Drill"
    volumes = (
        [
            VolumeSettings(name=v.name, path=f"{jobs.VOLUMES_ROOT}/{v.name}")
            for v in policy.components.volumes
        ]
        if in_place and policy is not None
        else []
    )
    config = None
    if "config" in components:
        config = ConfigSettings(
            namespace=(spec.target.namespace if spec.target else None) or namespace
        )
    return RestoreRunConfig(
        namespace=namespace,
        restore=restore,
        mode="Drill" if spec.mode.value == "Drill" else "InPlace",
        step=step,
        source=_s3_source(mounts, spec, src),
        set_prefix=src.prefix,
        backup=src.backup,
        components=list(components),
        databases=list(spec.databases),
        decryption_key_file=mounts.file(
            spec.decryption_key_secret.name, spec.decryption_key_secret.key, "decryption.asc"
        ),
        decryption_passphrase_file=mounts.ref(
            spec.decryption_key_passphrase_secret, "decryption-passphrase"
        ),
        signer_key_file=mounts.ref(spec.signer_key_secret, "signer.asc"),
        require_signature=not spec.insecure_skip_signature_check,
        postgres=_postgres(mounts, spec, policy) if wants_pg else None,
        postgres_jobs=spec.options.postgres.jobs,
        keep_previous=spec.options.postgres.keep_previous,
        swap_suffix=swap_suffix,
        vault=_vault(mounts, spec, policy) if wants_vault and "vault" in components else None,
        vault_method=spec.options.vault.method,
        overwrite_existing=spec.options.vault.overwrite_existing,
        config=config,
        volumes=volumes,
        key_consistency=spec.validation.key_consistency,
        key_store_engines=key_store_engines,
        filesystem_key_stores=filesystem_key_stores,
        dry_run=spec.dry_run and step == "plan",
    )


def restore_job(
    spec: RestoreSpec,
    src: RestoreSource,
    *,
    namespace: str,
    restore: str,
    step: Step,
    components: list[str],
    swap_suffix: str | None,
    owner: jobs.Owner,
) -> dict[str, Any]:
    """The Job running one step of a restore."""
    mounts = jobs._Mounts()
    cfg = run_config(
        spec,
        src,
        namespace=namespace,
        restore=restore,
        step=step,
        components=components,
        swap_suffix=swap_suffix,
        mounts=mounts,
    )
    # In place, the live volumes are mounted: written when they are restored, read otherwise
    # (the key check compares the restored databases with the key store they will meet).
    volumes: list[dict[str, Any]] = []
    claim_mounts: list[dict[str, Any]] = []
    if src.policy is not None and spec.mode.value != "Drill":
        volumes, claim_mounts = jobs.claim_mounts(
            src.policy, read_only="volumes" not in components or step == "plan"
        )
    runner = src.policy.runner if src.policy is not None else RunnerSettings()
    # A restore step must not be retried by the Job controller: the runner is idempotent, but a
    # second Pod after a failure would hide the first one's result (exit code 3 must be seen).
    runner = runner.model_copy(update={"backoff_limit": 0})
    return jobs.job_manifest(
        name=job_name(restore, step),
        namespace=namespace,
        owner=owner,
        runner=runner,
        labels={
            LABEL_RESTORE: layout.bounded_name(restore),
            jobs.LABEL_ROLE: f"restore-{step}",
        },
        command=["lamassu-backup", "runner", "restore"],
        env={jobs.RESTORE_CONFIG_ENV: cfg.model_dump_json(by_alias=True, exclude_none=True)},
        mounts=mounts,
        extra_volumes=volumes,
        extra_mounts=claim_mounts,
    )
