"""Job manifests for the steps of a LamassuRestore (plan, restore, rollback, finalize).

Each Job runs the existing restore runner (``lamassu-backup runner restore``), so every guarantee
it has (verify before destroy, restore beside and swap, drills torn down, exit codes 0/1/3) holds;
the controller only decides which step runs when. Credentials reach the runner as files from
Secret volumes, as for backups; names are deterministic (one Job per step and restore).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from ..components import registry
from ..components.base import RestoreRequest, SecretMounts, Step
from ..models.policy import BackupPolicySpec, RunnerSettings
from ..models.restore import RestoreSpec, S3Source
from ..models.runner import PointInTimeSettings, RestoreRunConfig, S3Settings
from . import jobs, layout
from .restore_plan import LABEL_RESTORE, job_name

RUNNER_ACCOUNT = "lamassu-backup-runner"
"""The runner's default ServiceAccount: reads ConfigMaps and Secrets, writes nothing."""
RESTORE_ACCOUNT = "lamassu-backup-restore"
"""The account of the in-place steps that change live state (restore, rollback, finalize): it
may also write ConfigMaps and Secrets, in the restore's and the config target's namespace only
(the chart's ClusterRole, bound there by the operator). Plans and drills keep the read-only one."""


def writes_live(spec: RestoreSpec, step: Step) -> bool:
    """Whether ``step`` of this restore changes live state (and keeps an undo journal)."""
    return spec.mode.value != "Drill" and not spec.dry_run and step != "plan"


def journal_name(restore: str) -> str:
    """The undo journal's Secret (deterministic: the rollback step of another Job finds it)."""
    return layout.bounded_name(restore, "undo")


def account_namespaces(spec: RestoreSpec, namespace: str) -> list[str]:
    """Where the restore account may write: the restore's namespace (the journal) and the config
    component's target namespace."""
    target = spec.target.namespace if spec.target else None
    return sorted({namespace, target or namespace})


@dataclass(frozen=True)
class RestoreSource:
    """The set to restore: where it is, and the policy it came from (None for a bare S3 set)."""

    bucket_url: str
    """s3://bucket/prefix/ of the set."""

    backup: str | None
    policy: BackupPolicySpec | None
    pitr: PointInTimeSettings | None = None
    """Set for a point-in-time restore: postgres comes from the policy's WAL archive."""

    @property
    def bucket(self) -> str:
        return self.bucket_url.removeprefix("s3://").split("/", 1)[0]

    @property
    def prefix(self) -> str:
        rest = self.bucket_url.removeprefix("s3://").split("/", 1)
        return rest[1] if len(rest) > 1 else ""


def _s3_source(mounts: SecretMounts, spec: RestoreSpec, src: RestoreSource) -> S3Settings:
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
        **mounts.aws(s3.credentials_secret, "s3"),
    )


def run_config(
    spec: RestoreSpec,
    src: RestoreSource,
    *,
    namespace: str,
    restore: str,
    step: Step,
    components: list[str],
    swap_suffix: str | None,
    mounts: SecretMounts,
) -> RestoreRunConfig:
    """The runner's configuration for one step, mounting the Secrets it needs."""
    request = _request(spec, src, namespace=namespace, step=step, components=components)
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
        swap_suffix=swap_suffix,
        key_consistency=spec.validation.key_consistency,
        dry_run=spec.dry_run and step == "plan",
        journal=journal_name(restore) if writes_live(spec, step) else None,
        pitr=src.pitr,
        **jobs.component_restore_settings(mounts, request),
    )


def _request(
    spec: RestoreSpec, src: RestoreSource, *, namespace: str, step: Step, components: list[str]
) -> RestoreRequest:
    return RestoreRequest(
        namespace=namespace,
        policy=src.policy,
        components=list(components),
        step=step,
        spec=spec,
        drill=spec.mode.value == "Drill",
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
    mounts = SecretMounts()
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
    request = _request(spec, src, namespace=namespace, step=step, components=components)
    volumes: list[dict[str, Any]] = []
    claim_mounts: list[dict[str, Any]] = []
    for component in registry.COMPONENTS:
        extra, mounted = component.restore_pod_volumes(request)
        volumes += extra
        claim_mounts += mounted
    runner = spec.runner or (src.policy.runner if src.policy is not None else RunnerSettings())
    # A restore step must not be retried by the Job controller: the runner is idempotent, but a
    # second Pod after a failure would hide the first one's result (exit code 3 must be seen).
    update: dict[str, Any] = {"backoff_limit": 0}
    if writes_live(spec, step) and runner.service_account_name == RUNNER_ACCOUNT:
        update["service_account_name"] = RESTORE_ACCOUNT
    runner = runner.model_copy(update=update)
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
