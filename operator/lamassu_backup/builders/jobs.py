"""Job manifests for backup and commit runs, and the records a policy creates (its runs, its
scheduled drills): pure functions of the resources.

Every credential reaches the runner as a file from a Secret volume; the runner's configuration
(:class:`RunnerConfig`) only says where those files are. Names are deterministic, so the operator
can always find, adopt or refuse to duplicate a Job after a restart.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Any

from ..components import registry
from ..components.base import RestoreRequest, SecretMounts
from ..components.volumes.spec import FilesystemKeyStore
from ..models.backup import Trigger
from ..models.common import ComponentName, LocalObjectRef
from ..models.policy import BackupPolicySpec, RunnerSettings
from ..models.resources import GROUP
from ..models.restore import RestoreMode, RestoreSource, RestoreSpec, Validation
from ..models.runner import (
    CONFIG_ENV,
    GpgSettings,
    RunnerConfig,
    S3Settings,
)
from . import layout, placement

LABEL_POLICY = f"{GROUP}/policy"
LABEL_BACKUP = f"{GROUP}/backup"
LABEL_COMPONENT = f"{GROUP}/component"
LABEL_ROLE = f"{GROUP}/role"
MANAGED_BY = "lamassu-backup-operator"
RESTORE_CONFIG_ENV = "LAMASSU_RESTORE_CONFIG"
SCRATCH = "/tmp"  # noqa: S108 - an emptyDir in memory, the only writable path in the Pod


def s3_settings(mounts: SecretMounts, policy: BackupPolicySpec) -> S3Settings:
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
        **mounts.aws(s3.credentials_secret, "s3"),
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
    settings = component_restore_settings(
        SecretMounts(), RestoreRequest(namespace="", policy=policy, components=[], drill=True)
    )
    return settings.get("key_store_engines", []), settings.get("filesystem_key_stores", [])


def component_restore_settings(mounts: SecretMounts, req: RestoreRequest) -> dict[str, Any]:
    """Every component's part of a restore runner config (each decides from the request and the
    policy whether it has one: a bare S3 set has no policy, its targets come from the spec)."""
    out: dict[str, Any] = {}
    for component in registry.COMPONENTS:
        out.update(component.restore_settings(mounts, req))
    return out


def destination(policy: BackupPolicySpec) -> S3Settings:
    """The policy's bucket settings as the operator itself uses them (paths of mounted files
    mean nothing outside a Pod: the operator passes credential values instead)."""
    return s3_settings(SecretMounts(), policy)


def runner_config(
    policy: BackupPolicySpec,
    *,
    namespace: str,
    policy_name: str,
    backup_name: str,
    set_time: str,
    components: list[str],
    mounts: SecretMounts,
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
    for component in registry.configured(comps, components):
        cfg.update(component.runner_settings(mounts, comps, namespace))
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


def _scratch(runner: RunnerSettings) -> dict[str, Any]:
    """The scratch emptyDir: in memory by default, on the node's disk when asked."""
    volume: dict[str, Any] = {"sizeLimit": runner.scratch.size_limit}
    if runner.scratch.medium == "Memory":
        volume["medium"] = "Memory"
    return volume


def job_manifest(
    *,
    name: str,
    namespace: str,
    owner: Owner,
    runner: RunnerSettings,
    labels: dict[str, str],
    command: list[str],
    env: dict[str, str],
    mounts: SecretMounts,
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
        {"name": "scratch", "emptyDir": _scratch(runner)},
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
    mounts = SecretMounts()
    cfg = runner_config(
        policy,
        namespace=namespace,
        policy_name=policy_name,
        backup_name=backup_name,
        set_time=set_time,
        components=[component],
        mounts=mounts,
    )
    extra_volumes, extra_mounts = registry.get(component).pod_volumes(policy.components)
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


def job_ended(job: dict[str, Any], event_type: str | None = None) -> bool:
    """Whether a Job event can move its run: the Job was deleted, or it has its final condition
    (Complete or Failed; the Job controller sets it once the Pods are accounted for)."""
    if event_type == "DELETED" or (job.get("metadata") or {}).get("deletionTimestamp"):
        return True
    return any(
        c.get("type") in ("Complete", "Failed") and c.get("status") == "True"
        for c in (job.get("status") or {}).get("conditions") or []
    )


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
    mounts = SecretMounts()
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


LABEL_SCHEDULED_DRILL = f"{GROUP}/scheduled-drill"
"""On a LamassuRestore the policy's verification schedule created: the policy's name."""


def _verification_keys(policy: BackupPolicySpec) -> dict[str, Any]:
    """A scheduled drill's keys and checks, as the policy's verification says (no signer key:
    the signature is not checked)."""
    v = policy.verification
    return {
        "decryption_key_secret": v.decryption_key_secret,
        "decryption_key_passphrase_secret": v.decryption_key_passphrase_secret,
        "signer_key_secret": v.signer_key_secret,
        "insecure_skip_signature_check": v.signer_key_secret is None,
        "validation": Validation(key_consistency=v.key_consistency),
    }


def _drill_resource(
    name: str,
    namespace: str,
    *,
    policy_name: str,
    labels: dict[str, str],
    owner: Owner,
    spec: RestoreSpec,
) -> dict[str, Any]:
    """A scheduled drill as a LamassuRestore: the policy's and scheduled-drill labels, owned."""
    return {
        "apiVersion": f"{GROUP}/v1alpha1",
        "kind": "LamassuRestore",
        "metadata": {
            "name": name,
            "namespace": namespace,
            "labels": {
                LABEL_POLICY: layout.label_value(policy_name),
                **labels,
                LABEL_SCHEDULED_DRILL: layout.label_value(policy_name),
                "app.kubernetes.io/managed-by": MANAGED_BY,
            },
            "ownerReferences": [owner.reference()],
        },
        "spec": spec.to_api(),
    }


def drill_restore_name(policy_name: str, tick: str) -> str:
    """Deterministic name of a scheduled drill (one per verification tick): a restarted
    operator that fires the same tick again finds it instead of making a second one."""
    return layout.bounded_name(policy_name, "drill", tick.lower())


def drill_restore(
    policy: BackupPolicySpec,
    *,
    namespace: str,
    policy_name: str,
    backup_name: str,
    components: list[str],
    tick: str,
    owner: Owner,
) -> dict[str, Any] | None:
    """The LamassuRestore (mode Drill) a verification tick creates for the newest set; None
    when verification has no decryption key.

    The drill restores what the policy's components say a drill restores (the databases, the
    KV exports, and the volumes holding a filesystem engine's keys) among those that completed
    in the set, with the verification's keys: the signature is checked when a signer key is
    set, as the policy says (``verification.signerKeySecret``: no key, no check). Owned by the
    set it tests: it goes when retention deletes the set, and the verification service keeps
    only the newest ``recentRunsLimit`` of a policy's drills.
    """
    if policy.verification.decryption_key_secret is None:
        return None
    drilled = {
        c.name
        for c in registry.configured(policy.components, components)
        if c.drilled(policy.components)
    }
    spec = RestoreSpec(
        backup_ref=LocalObjectRef(name=backup_name),
        mode=RestoreMode.DRILL,
        components=[ComponentName(c) for c in components if c in drilled],
        **_verification_keys(policy),
    )
    labels = {LABEL_BACKUP: layout.label_value(backup_name)}
    return _drill_resource(
        drill_restore_name(policy_name, tick),
        namespace,
        policy_name=policy_name,
        labels=labels,
        owner=owner,
        spec=spec,
    )


LABEL_PITR_DRILL = f"{GROUP}/pitr-drill"
"""Marks the scheduled point-in-time drills of a policy (value: the policy)."""

PITR_DRILL_LAG = timedelta(minutes=5)
"""How far before the verification tick a point-in-time drill recovers to: recent enough to
prove the newest WAL, old enough that the shipper has surely stored it."""


def pitr_drill_restore(
    policy: BackupPolicySpec,
    *,
    namespace: str,
    policy_name: str,
    target: datetime,
    tick: str,
    owner: Owner,
) -> dict[str, Any] | None:
    """The Drill LamassuRestore of postgres to ``target`` from the policy's WAL archive (a base
    backup and the WAL after it, into scratch, checked, torn down); None without a decryption
    key. Owned by the policy; one per verification tick (a deterministic name)."""
    if policy.verification.decryption_key_secret is None:
        return None
    spec = RestoreSpec(
        source=RestoreSource(
            policy_ref=LocalObjectRef(name=policy_name),
            point_in_time=target.astimezone(UTC).strftime("%Y-%m-%dT%H:%M:%SZ"),
        ),
        mode=RestoreMode.DRILL,
        components=[ComponentName.POSTGRES],
        **_verification_keys(policy),
    )
    name = layout.bounded_name(policy_name, "pitr-drill", tick.lower())
    labels = {LABEL_PITR_DRILL: layout.label_value(policy_name)}
    return _drill_resource(
        name, namespace, policy_name=policy_name, labels=labels, owner=owner, spec=spec
    )


def drills_to_delete(drills: list[dict[str, Any]], keep: int, verifying: set[str]) -> list[str]:
    """A policy's scheduled drills beyond the newest ``keep``: the finished ones, except a
    drill of a set whose verification is still being recorded (its outcome is read from it)."""
    finished = {"Completed", "Failed", "RolledBack", "Planned"}

    def age(body: dict[str, Any]) -> tuple[str, str]:
        meta = body.get("metadata") or {}
        return (str(meta.get("creationTimestamp") or ""), str(meta.get("name")))

    newest_first = sorted(drills, key=age, reverse=True)
    out = []
    for body in newest_first[keep:]:
        phase = (body.get("status") or {}).get("phase")
        backup = ((body.get("spec") or {}).get("backupRef") or {}).get("name")
        if phase in finished and backup not in verifying:
            out.append(str(body["metadata"]["name"]))
    return out


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
