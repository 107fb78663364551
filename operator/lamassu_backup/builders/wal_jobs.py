"""Point-in-time recovery, pure side: the shipper Deployment, the base-backup Job, their schedule,
the policy's ``status.pointInTimeRecovery`` and what WAL retention deletes.

The Pod of both is the backup Jobs' Pod (:func:`jobs.job_manifest`: restricted security context,
the runner image, credentials as Secret files, read-only root filesystem), so every Pod setting
of ``spec.runner`` applies to them as well; the shipper's template only changes what a
Deployment needs (``restartPolicy: Always``) and adds a spool emptyDir on disk.
"""

from __future__ import annotations

import copy
import hashlib
import json
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from typing import Any, Literal

from ..components.base import Reference, SecretMounts, basic_refs
from ..components.postgres.plan import settings as postgres_settings
from ..components.postgres.spec import WalArchiving
from ..components.postgres.wal.settings import SPOOL_ROOT, WAL_CONFIG_ENV, WalRunConfig
from ..models.policy import BackupPolicySpec
from ..models.runner import GpgSettings
from ..models.types import format_duration
from ..models.wal import BaseBackupInfo, RecoveryWindow, WalRecord
from . import jobs, layout, schedule
from . import wal as walb

FIELD = "spec.components.postgres.walArchiving"
ROLE_SHIPPER = "wal-shipper"
ROLE_BASE_BACKUP = "base-backup"
ROLE_DROP_SLOT = "wal-drop-slot"
COMPONENT = "postgresWal"
"""The name of WAL shipping in ``status.components`` (its own Stale, metrics)."""

SPEC_HASH = "backup.lamassu.io/spec-hash"
"""Annotation on the shipper Deployment: the hash of what the operator wants, so a changed spec
is applied and an unchanged one is left alone (no needless restart of the stream)."""

SPOOL_SIZE = "2Gi"
"""The spool holds the segment being received and those whose upload is pending (an S3 outage):
past the limit the Pod is evicted and restarts, and the slot still keeps the server's copy."""

STARTING_DEADLINE = timedelta(hours=1)
"""A base backup due while the operator was down still starts within this."""


def _enabled(policy: BackupPolicySpec) -> WalArchiving | None:
    pg = policy.components.postgres
    return pg.wal_archiving if pg is not None and pg.wal_archiving.enabled else None


def enabled(policy: BackupPolicySpec) -> bool:
    """Whether the policy ships WAL."""
    return _enabled(policy) is not None


def references(policy: BackupPolicySpec) -> list[Reference]:
    """The Secret keys only WAL shipping needs (the replication role)."""
    wal = _enabled(policy)
    if wal is None or wal.replication_credentials_secret is None:
        return []
    return basic_refs(f"{FIELD}.replicationCredentialsSecret", wal.replication_credentials_secret)


def wal_run_config(
    policy: BackupPolicySpec,
    *,
    namespace: str,
    policy_name: str,
    mounts: SecretMounts,
    set_time: str | None = None,
) -> WalRunConfig:
    """The WAL runners' configuration, mounting the bucket, GPG and replication credentials."""
    pg = policy.components.postgres
    if pg is None:
        raise ValueError("walArchiving needs spec.components.postgres")
    wal = pg.wal_archiving
    server = postgres_settings(mounts, pg)
    if wal.replication_credentials_secret is not None:
        user_file, password_file = mounts.basic(wal.replication_credentials_secret, "replication")
        server = server.model_copy(
            update={"username_file": user_file, "password_file": password_file}
        )
    gpg = policy.encryption.gpg
    interval = wal.partial_interval.total_seconds()
    return WalRunConfig(
        namespace=namespace,
        policy=policy_name,
        prefix=layout.policy_prefix(policy.destination.s3.prefix, namespace, policy_name),
        destination=jobs.s3_settings(mounts, policy),
        gpg=GpgSettings(
            recipients_file=mounts.file(
                gpg.recipients_secret.name, gpg.recipients_secret.key, "recipients.asc"
            ),
            signing_key_file=mounts.ref(gpg.signing_key_secret, "signing.asc"),
            signing_passphrase_file=mounts.ref(
                gpg.signing_key_passphrase_secret, "signing-passphrase"
            ),
        ),
        postgres=server,
        slot_name=wal.slot_name,
        partial_interval_seconds=max(interval, 1.0),
        status_interval_seconds=min(max(interval, 1.0), 30.0),
        compression_level=pg.compression.level if pg.compression.algorithm == "zstd" else 1,
        set_time=set_time,
    )


def wal_labels(policy_name: str, role: str) -> dict[str, str]:
    """Labels of the shipper and base-backup objects: the operator finds them by these."""
    return {
        jobs.LABEL_POLICY: layout.label_value(policy_name),
        jobs.LABEL_COMPONENT: COMPONENT,
        jobs.LABEL_ROLE: role,
    }


def selector(policy_name: str, role: str) -> str:
    """A label selector for :func:`wal_labels`."""
    return ",".join(f"{k}={v}" for k, v in sorted(wal_labels(policy_name, role).items()))


def shipper_name(policy_name: str) -> str:
    """Deterministic name of a policy's shipper Deployment."""
    return layout.bounded_name(policy_name, ROLE_SHIPPER)


def base_backup_job_name(policy_name: str, set_time: str) -> str:
    """Deterministic name of one base backup's Job (one per schedule tick)."""
    return layout.bounded_name(policy_name, "basebackup", set_time.lower())


def base_backup_policy(job: dict[str, Any]) -> str | None:
    """The policy a base-backup or slot-drop Job belongs to (its controller owner), else None:
    the policy's loop is woken when one ends."""
    meta = job.get("metadata") or {}
    if (meta.get("labels") or {}).get(jobs.LABEL_ROLE) not in (ROLE_BASE_BACKUP, ROLE_DROP_SLOT):
        return None
    for owner in meta.get("ownerReferences") or []:
        if owner.get("kind") == "LamassuBackupPolicy" and owner.get("controller"):
            return str(owner.get("name"))
    return None


def spec_hash(obj: dict[str, Any]) -> str:
    """A short stable hash of a manifest's spec."""
    return hashlib.sha256(json.dumps(obj["spec"], sort_keys=True).encode()).hexdigest()[:16]


def _pod(
    policy: BackupPolicySpec,
    *,
    name: str,
    namespace: str,
    policy_name: str,
    owner: jobs.Owner,
    role: str,
    command: list[str],
    set_time: str | None = None,
    spool: bool = False,
) -> dict[str, Any]:
    mounts = SecretMounts()
    cfg = wal_run_config(
        policy, namespace=namespace, policy_name=policy_name, mounts=mounts, set_time=set_time
    )
    extra_volumes: list[dict[str, Any]] = []
    extra_mounts: list[dict[str, Any]] = []
    if spool:
        extra_volumes.append({"name": "spool", "emptyDir": {"sizeLimit": SPOOL_SIZE}})
        extra_mounts.append({"name": "spool", "mountPath": SPOOL_ROOT})
    return jobs.job_manifest(
        name=name,
        namespace=namespace,
        owner=owner,
        runner=policy.runner,
        labels=wal_labels(policy_name, role),
        command=command,
        env={WAL_CONFIG_ENV: cfg.model_dump_json(by_alias=True, exclude_none=True)},
        mounts=mounts,
        extra_volumes=extra_volumes,
        extra_mounts=extra_mounts,
    )


def shipper_deployment(
    policy: BackupPolicySpec, *, namespace: str, policy_name: str, owner: jobs.Owner
) -> dict[str, Any]:
    """The shipper: one replica, ``Recreate`` (two receivers on one slot would fight over it),
    owned by the policy (deleted with it), its spec hash in an annotation."""
    job = _pod(
        policy,
        name=shipper_name(policy_name),
        namespace=namespace,
        policy_name=policy_name,
        owner=owner,
        role=ROLE_SHIPPER,
        command=["lamassu-backup", "runner", "wal-ship"],
        spool=True,
    )
    template = job["spec"]["template"]
    template["spec"]["restartPolicy"] = "Always"
    template["spec"]["terminationGracePeriodSeconds"] = 60
    match = wal_labels(policy_name, ROLE_SHIPPER)
    deployment: dict[str, Any] = {
        "apiVersion": "apps/v1",
        "kind": "Deployment",
        "metadata": job["metadata"],
        "spec": {
            "replicas": 1,
            "strategy": {"type": "Recreate"},
            "revisionHistoryLimit": 2,
            "selector": {"matchLabels": match},
            "template": template,
        },
    }
    deployment["metadata"]["annotations"] = {SPEC_HASH: spec_hash(deployment)}
    return deployment


def base_backup_job(
    policy: BackupPolicySpec,
    *,
    namespace: str,
    policy_name: str,
    set_time: str,
    owner: jobs.Owner,
) -> dict[str, Any]:
    """One base backup's Job: no retry (the next tick takes another; a failure is reported)."""
    job = _pod(
        policy,
        name=base_backup_job_name(policy_name, set_time),
        namespace=namespace,
        policy_name=policy_name,
        owner=owner,
        role=ROLE_BASE_BACKUP,
        command=["lamassu-backup", "runner", "base-backup"],
        set_time=set_time,
    )
    job["spec"]["backoffLimit"] = 0
    return job


# -- the replication slot, once the shipper goes --------------------------------------------------

WAL_ARCHIVING = "WalArchiving"
"""The policy's condition about WAL archiving (and, once it is off, about the slot's drop)."""

KEEP_SLOT = "backup.lamassu.io/keep-replication-slot"
"""Policy annotation: ``"true"`` leaves the shipper's slot on the server when walArchiving is
turned off or the policy is deleted (the way out when the drop cannot succeed, or when another
tool takes the slot over): the user then owns it, and the server keeps WAL for it."""

ATTEMPT = "backup.lamassu.io/attempt"
"""Annotation on a slot-drop Job: which try it is (the delay before the next one grows)."""

DROPPING = "dropping-slot"
"""The spec hash written on a shipper scaled to zero for its slot's drop: never a wanted hash,
so turning walArchiving back on replaces it with a running one."""

DROP_DEADLINE_SECONDS = 300
DROP_RETRY_FIRST = timedelta(seconds=30)
DROP_RETRY_MAX = timedelta(minutes=10)
_JOB_CONTROLLER_LABELS = (
    "controller-uid",
    "job-name",
    "batch.kubernetes.io/controller-uid",
    "batch.kubernetes.io/job-name",
)
"""Labels the Job controller puts on a Job's template: a new Job copied from one must not carry
them (its selector would not match)."""

_DEFAULT_SLOT = WalArchiving.model_fields["slot_name"].default
_DEFAULT_PORT = 5432


def keep_slot(annotations: dict[str, str]) -> bool:
    """Whether the policy's annotations ask to leave the slot on the server."""
    return annotations.get(KEEP_SLOT, "").strip().lower() == "true"


@dataclass(frozen=True)
class SlotTarget:
    """The slot a shipper used, and on which server."""

    host: str
    port: int
    slot: str

    def describe(self) -> str:
        """``replication slot <name> on <host>:<port>``, for messages."""
        return f"replication slot {self.slot} on {self.host}:{self.port}"


def slot_target(workload: dict[str, Any]) -> SlotTarget | None:
    """The slot of a shipper Deployment or slot-drop Job, read from its own ``LAMASSU_WAL_CONFIG``
    rather than the spec (which may have lost its walArchiving block or changed slotName since);
    None when it carries none (then it is not ours to act on)."""
    pod = ((workload.get("spec") or {}).get("template") or {}).get("spec") or {}
    for container in pod.get("containers") or []:
        for env in container.get("env") or []:
            if env.get("name") == WAL_CONFIG_ENV and env.get("value"):
                try:
                    cfg = WalRunConfig.model_validate_json(env["value"])
                except ValueError:
                    return None
                return SlotTarget(cfg.postgres.host, cfg.postgres.port, cfg.slot_name)
    return None


def spec_slot(spec: dict[str, Any]) -> SlotTarget | None:
    """The slot a policy's spec (a raw body's) names, None without a postgres component."""
    pg = (spec.get("components") or {}).get("postgres") or {}
    if not pg.get("host"):
        return None
    wal = pg.get("walArchiving") or {}
    return SlotTarget(
        str(pg["host"]),
        int(pg.get("port") or _DEFAULT_PORT),
        str(wal.get("slotName") or _DEFAULT_SLOT),
    )


def shares_slot(policy: dict[str, Any], target: SlotTarget) -> bool:
    """Whether a policy (a raw body) ships WAL through the same slot of the same server: then the
    slot is not dropped, as that would stop the server keeping the other policy's WAL. A policy
    being deleted does not count: it goes too."""
    if (policy.get("metadata") or {}).get("deletionTimestamp"):
        return False
    spec = policy.get("spec") or {}
    wal = ((spec.get("components") or {}).get("postgres") or {}).get("walArchiving") or {}
    return bool(wal.get("enabled")) and spec_slot(spec) == target


def scaled_down(deployment: dict[str, Any]) -> dict[str, Any]:
    """The shipper at zero replicas (its Pod gets SIGTERM and ships what it flushed), kept as the
    record of which slot to drop until the drop has succeeded: an operator restart in between
    loses nothing."""
    meta = deployment["metadata"]
    spec = copy.deepcopy(deployment["spec"])
    spec["replicas"] = 0
    return {
        "apiVersion": "apps/v1",
        "kind": "Deployment",
        "metadata": {
            "name": meta["name"],
            "namespace": meta["namespace"],
            "labels": dict(meta.get("labels") or {}),
            "annotations": {**(meta.get("annotations") or {}), SPEC_HASH: DROPPING},
            "ownerReferences": list(meta.get("ownerReferences") or []),
        },
        "spec": spec,
    }


def drop_slot_job_name(policy_name: str, attempt: int) -> str:
    """Deterministic name of one try at dropping a policy's slot."""
    return layout.bounded_name(policy_name, "wal-dropslot", str(attempt))


def drop_attempt(job: dict[str, Any]) -> int:
    """Which try a slot-drop Job is (1 when it does not say)."""
    text = ((job.get("metadata") or {}).get("annotations") or {}).get(ATTEMPT, "1")
    return int(text) if text.isdigit() else 1


def drop_slot_job(source: dict[str, Any], *, policy_name: str, attempt: int) -> dict[str, Any]:
    """One try at dropping the slot: the shipper's own Pod (image, ``spec.runner`` settings,
    credentials as Secret files, configuration) running ``runner wal-drop-slot`` once, copied
    from the shipper Deployment (or the previous try), so it drops exactly the slot the shipper
    used, on its server, with its credentials. Owned by the policy, as the shipper is."""
    meta = source["metadata"]
    template = copy.deepcopy(source["spec"]["template"])
    role = {jobs.LABEL_ROLE: ROLE_DROP_SLOT}
    pod_meta = template.setdefault("metadata", {})
    pod_meta["labels"] = {
        **{
            k: v
            for k, v in (pod_meta.get("labels") or {}).items()
            if k not in _JOB_CONTROLLER_LABELS
        },
        **role,
    }
    pod = template["spec"]
    pod["restartPolicy"] = "Never"
    pod["terminationGracePeriodSeconds"] = 30
    pod["volumes"] = [v for v in pod.get("volumes") or [] if v.get("name") != "spool"]
    for container in pod.get("containers") or []:
        container["command"] = ["lamassu-backup", "runner", "wal-drop-slot"]
        mounts = container.get("volumeMounts") or []
        container["volumeMounts"] = [m for m in mounts if m.get("name") != "spool"]
    job_labels = {
        k: v for k, v in (meta.get("labels") or {}).items() if k not in _JOB_CONTROLLER_LABELS
    }
    return {
        "apiVersion": "batch/v1",
        "kind": "Job",
        "metadata": {
            "name": drop_slot_job_name(policy_name, attempt),
            "namespace": meta["namespace"],
            "labels": {**job_labels, **role},
            "annotations": {ATTEMPT: str(attempt)},
            "ownerReferences": list(meta.get("ownerReferences") or []),
        },
        "spec": {
            "backoffLimit": 1,
            "activeDeadlineSeconds": DROP_DEADLINE_SECONDS,
            "ttlSecondsAfterFinished": 86400,
            "template": template,
        },
    }


def drop_retry_delay(attempt: int) -> timedelta:
    """How long after a failed try the next one starts: 30 s, doubling, at most 10 min."""
    delay: timedelta = DROP_RETRY_FIRST * 2 ** min(max(attempt - 1, 0), 10)
    return min(delay, DROP_RETRY_MAX)


@dataclass(frozen=True)
class DropTry:
    """A slot-drop Job, as the decision needs it."""

    attempt: int
    done: bool
    ok: bool
    finished_at: datetime | None = None


SlotAction = Literal[
    "none", "keep", "scale-down", "wait-shipper", "start", "wait-drop", "finish", "failed", "retry"
]


@dataclass(frozen=True)
class SlotDropDecision:
    """What to do next about the slot of a shipper that must go."""

    action: SlotAction
    attempt: int = 0
    """The try to start (start, retry) or the one looked at."""

    retry_at: datetime | None = None
    """When a failed try is followed by the next one."""


def slot_drop_decision(  # noqa: PLR0911 - a decision table: one return per row
    *, keep: bool, replicas: int | None, shipper_pods: int, drop: DropTry | None, now: datetime
) -> SlotDropDecision:
    """The next step once walArchiving is off or the policy is deleted. ``replicas`` is the
    shipper Deployment's (None: it is gone); ``shipper_pods`` counts its Pods still there,
    terminating ones too: a stopping shipper still advances the slot and a restarting one
    recreates it, so the drop starts only once none is left. A shipper running again (scaled up
    by a stale pass) voids any earlier try; a finished drop removes the shipper and its Jobs."""
    if replicas is None and drop is None:
        return SlotDropDecision("none")
    if keep:
        return SlotDropDecision("keep")
    if replicas:
        return SlotDropDecision("scale-down")
    if shipper_pods:
        return SlotDropDecision("wait-shipper")
    if drop is None:
        return SlotDropDecision("start", attempt=1)
    if not drop.done:
        return SlotDropDecision("wait-drop", attempt=drop.attempt)
    if drop.ok:
        return SlotDropDecision("finish", attempt=drop.attempt)
    retry_at = (drop.finished_at or now) + drop_retry_delay(drop.attempt)
    if drop.finished_at is None or now >= retry_at:
        return SlotDropDecision("retry", attempt=drop.attempt + 1, retry_at=retry_at)
    return SlotDropDecision("failed", attempt=drop.attempt, retry_at=retry_at)


STARTUP_GRACE = timedelta(minutes=5)
"""A new shipper without an available replica is Starting this long, then Unavailable."""


def shipper_state(deployment: dict[str, Any], previous: str | None, now: datetime) -> str:
    """Available; Starting while a new or updated shipper comes up (within
    :data:`STARTUP_GRACE` of its creation or last rollout step); else Unavailable: it was up and
    is not, or never came up."""
    status = deployment.get("status") or {}
    if status.get("availableReplicas"):
        return "Available"
    if previous == "Available":
        return "Unavailable"
    moments = [str((deployment.get("metadata") or {}).get("creationTimestamp") or "")]
    moments += [
        str(c.get("lastUpdateTime") or "")
        for c in status.get("conditions") or []
        if c.get("type") == "Progressing" and c.get("reason") != "ProgressDeadlineExceeded"
    ]
    times = []
    for text in moments:
        try:
            times.append(datetime.fromisoformat(text.replace("Z", "+00:00")))
        except ValueError:
            continue
    if not times:
        return "Starting"
    return "Starting" if now - max(times) <= STARTUP_GRACE else "Unavailable"


# -- schedule ----------------------------------------------------------------------------------


@dataclass(frozen=True)
class BaseBackupDecision:
    """Whether a base backup starts now, and the watermark to record."""

    start: str | None
    """The set time of the base backup to start now (None: none)."""

    reason: str
    watermark: datetime
    next_due: datetime


def base_backup_decision(
    wal: WalArchiving,
    *,
    time_zone: str,
    last_tick: datetime | None,
    created_at: datetime,
    now: datetime,
    base_backups: int,
    jobs_existing: list[str],
    running: list[str],
    paused: str | None,
) -> BaseBackupDecision:
    """A base backup on each ``baseBackupSchedule`` tick, one at a time; and one at once when the
    archive holds none and no base-backup Job exists yet (without a base there is no window:
    waiting six hours for the first would leave the archive useless that long; a failed first
    one is not retried in a loop, the schedule takes the next). A tick due while a restore holds
    the namespace or while one runs is skipped (the watermark moves on, as for dumps)."""
    decision = schedule.decide(
        schedule=wal.base_backup_schedule,
        time_zone=time_zone,
        jitter=timedelta(0),
        starting_deadline=STARTING_DEADLINE,
        last_tick=last_tick,
        created_at=created_at,
        now=now,
        suspended=False,
    )
    first = base_backups == 0 and not jobs_existing
    if decision.fire is None and not first:
        return BaseBackupDecision(None, "NotDue", decision.last_tick, decision.next_due)
    if paused:
        return BaseBackupDecision(None, "RestoreInProgress", decision.last_tick, decision.next_due)
    if running:
        reason = f"Running: {', '.join(running)}"
        return BaseBackupDecision(None, reason, decision.last_tick, decision.next_due)
    return BaseBackupDecision(
        layout.set_time(decision.fire or now),
        "Scheduled" if decision.fire else "FirstBaseBackup",
        decision.last_tick,
        decision.next_due,
    )


# -- status ------------------------------------------------------------------------------------


def newest_shipped(records: list[WalRecord]) -> WalRecord | None:
    """The WAL object shipped last."""
    wal = [r for r in records if r.kind != "history"]
    return max(wal, key=lambda r: r.shipped_at) if wal else None


def recovery_point(records: list[WalRecord], caught_up_at: datetime | None) -> datetime | None:
    """The newest moment whose WAL is surely in the bucket: the shipper's measured caught-up
    time, else the last upload (the heartbeat is missing or from an older shipper)."""
    newest = newest_shipped(records)
    times = [t for t in (caught_up_at, newest.shipped_at if newest else None) if t is not None]
    return max(times) if times else None


def pitr_status(
    window: RecoveryWindow,
    records: list[WalRecord],
    *,
    now: datetime,
    caught_up_at: datetime | None,
    lag_bytes: int | None,
    shipper: str,
    message: str | None = None,
) -> dict[str, Any]:
    """``status.pointInTimeRecovery`` (API spelling), but for the base-backup fields."""
    newest = newest_shipped(records)
    point = recovery_point(records, caught_up_at)
    out: dict[str, Any] = {
        "recoverableFrom": _iso(window.recoverable_from),
        "recoverableUntil": _iso(window.recoverable_until),
        "lastShippedWal": window.last_shipped_wal or (newest.name if newest else None),
        "lastShippedAt": _iso(newest.shipped_at if newest else None),
        "lastShippedAge": format_duration(max(now - point, timedelta(0))) if point else None,
        "caughtUpAt": _iso(caught_up_at),
        "baseBackups": len(window.base_backups),
        "lagBytes": lag_bytes,
        "shipper": shipper,
        "gaps": window.gaps[:5],
        "message": message,
    }
    return {k: v for k, v in out.items() if v is not None and v != []}


def _iso(moment: datetime | None) -> str | None:
    if moment is None:
        return None
    return moment.isoformat().replace("+00:00", "Z")


# -- retention ---------------------------------------------------------------------------------


@dataclass(frozen=True)
class WalRetentionPlan:
    """What one retention pass deletes: base backups (manifest first), then WAL objects."""

    bases: list[BaseBackupInfo] = field(default_factory=list)
    wal: list[WalRecord] = field(default_factory=list)
    kept: list[BaseBackupInfo] = field(default_factory=list)


def plan_wal_retention(
    bases: list[BaseBackupInfo], records: list[WalRecord], keep: int
) -> WalRetentionPlan:
    """Keep the newest ``keep`` base backups a restore can start from (and every newer one
    whose WAL is still arriving); delete older base backups, then only the WAL
    :func:`walb.select_expired_wal` says no kept base needs. With fewer than ``keep`` usable
    base backups no base backup is deleted (only WAL older than every one of them): the chain
    from the oldest kept one to now stays whole."""
    usable, _ = walb.usable_base_backups(bases, walb.build_chain(records))
    if len(usable) < keep or keep < 1:
        return WalRetentionPlan(kept=list(bases), wal=walb.select_expired_wal(bases, records))
    kept_usable = usable[-keep:]
    oldest = kept_usable[0].stop_time
    chosen = {b.set_time for b in kept_usable}
    doomed = [b for b in bases if b.set_time not in chosen and b.stop_time < oldest]
    kept = [b for b in bases if b not in doomed]
    return WalRetentionPlan(bases=doomed, wal=walb.select_expired_wal(kept, records), kept=kept)


def record_key(record: WalRecord) -> str:
    """The key of a WAL object's record (its commit point), relative to the policy prefix."""
    if record.kind == "history":
        return f"{walb.WAL_DIR}{record.timeline:08X}/{record.name}.json"
    return walb.wal_keys(record.name, record.timeline, partial=record.kind == "partial")[1]
