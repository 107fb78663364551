"""Verification: scheduled drills of a policy's newest set, and the evidence they leave.

The one service for all of it. On the policy's side (its tick asks): start the drill of a due
verification tick, as a ``LamassuRestore`` with mode Drill (the restore controller runs it, with
every rail a drill has: scratch targets, teardown also on failure, evidence in its status), and
the policy's Verified condition from the newest drill results. On the run's side (its reconcile
asks): follow that drill to its evidence, and the run's Verified condition. It writes a
LamassuBackup's ``status.verification`` (the drill it started); the policy service writes no
LamassuBackup status.
"""

from __future__ import annotations

import json
from datetime import datetime, timedelta
from typing import Any

from ..builders import conditions as cond
from ..builders import jobs, layout, schedule, wal_jobs
from ..clients.kube import KubeApi
from ..errors import LamassuBackupError
from ..models.backup import BackupPhase, VerificationPhase
from ..models.common import ConditionStatus
from ..models.resources import LamassuBackup
from ..models.restore import RestoreStatus
from ..models.types import format_duration
from . import metrics, resources
from .common import Event, RunOutcome, iso, ref
from .job_state import job_state
from .resources import read_restore
from .tick import Tick

# -- the policy's side -------------------------------------------------------------------------


def on_tick(kube: KubeApi, t: Tick) -> None:
    """Start scheduled drills; the Verified condition from the newest drill results."""
    verified = [
        r.verified_at for r in t.runs if r.verification_phase == "Verified" and r.verified_at
    ]
    latest = max(verified, default=None)
    if latest:
        t.patch["lastVerifiedTime"] = iso(latest)
    v = t.spec.verification
    if v.schedule and v.decryption_key_secret:
        _drill_schedule(kube, t)
    failed = [r for r in t.runs if r.verification_phase == "Failed"]
    if t.verify_error is not None:
        reason, _, message = t.verify_error.partition(": ")
        before = cond.get_condition(t.conditions, cond.VERIFIED)
        t.condition(
            cond.VERIFIED,
            ConditionStatus.FALSE,
            reason,
            f"test restores cannot run: {message} (backups are not affected)",
        )
        if before is None or before.reason != reason:
            t.event("Warning", reason, message)
    elif not v.schedule and not verified and not failed:
        t.condition(
            cond.VERIFIED,
            ConditionStatus.UNKNOWN,
            "NotConfigured",
            "no verification.schedule: sets are not test-restored",
        )
    elif latest and t.now - latest <= v.max_age:
        t.condition(
            cond.VERIFIED,
            ConditionStatus.TRUE,
            "DrillSucceeded",
            f"a set was test-restored successfully at {iso(latest)}",
        )
    elif failed:
        t.condition(
            cond.VERIFIED,
            ConditionStatus.FALSE,
            "DrillFailed",
            f"the last test restore failed ({failed[-1].name}); see its status.verification",
        )
    else:
        t.condition(
            cond.VERIFIED,
            ConditionStatus.FALSE,
            "NotVerifiedRecently",
            f"no successful test restore within verification.maxAge {format_duration(v.max_age)}",
        )


def _drill_schedule(kube: KubeApi, t: Tick) -> None:
    """Start the drill of a due verification tick, unless its Secrets or a restore stop it."""
    v = t.spec.verification
    assert v.schedule is not None
    last = t.status.last_verification_schedule_time
    decision = schedule.decide(
        schedule=v.schedule,
        time_zone=t.spec.time_zone,
        jitter=timedelta(0),
        starting_deadline=t.spec.starting_deadline,
        last_tick=last,
        created_at=t.created_at,
        now=t.now,
        suspended=t.spec.suspend,
    )
    if decision.last_tick != (last or t.created_at):
        t.patch["lastVerificationScheduleTime"] = iso(decision.last_tick)
    t.wake.append(decision.next_due)
    if decision.fire is None or t.paused:  # LamassuRestore hook: no drill during a restore
        return
    if t.verify_error is not None:
        t.event(
            "Warning",
            "VerificationSkipped",
            f"the drill due at {iso(decision.fire)} was skipped: {t.verify_error}",
        )
        return
    for type_, reason, message in _start(kube, t, decision.fire):
        t.event(type_, reason, message)
    if wal_jobs.enabled(t.spec):
        for type_, reason, message in _start_pitr(kube, t, decision.fire):
            t.event(type_, reason, message)


def _start_pitr(kube: KubeApi, t: Tick, tick: datetime) -> list[tuple[str, str, str]]:
    """A point-in-time Drill of postgres to five minutes before the tick, when the policy's
    recoverable window covers that moment (else said, not failed: a new policy has no base
    backup yet). Its outcome lands on status.pointInTimeRecovery (services.wal)."""
    target = tick - jobs.PITR_DRILL_LAG
    pitr = t.status.point_in_time_recovery
    start, end = (pitr.recoverable_from, pitr.recoverable_until) if pitr else (None, None)
    if start is None or end is None or not start <= target <= end:
        window = f"{iso(start) or '?'} .. {iso(end) or '?'}"
        return [
            (
                "Warning",
                "VerificationSkipped",
                f"no point-in-time drill to {iso(target)}: the recoverable window is {window}",
            )
        ]
    owner = jobs.Owner(t.policy.api_version, t.policy.kind, t.name, t.policy.uid)
    body = jobs.pitr_drill_restore(
        t.spec,
        namespace=t.namespace,
        policy_name=t.name,
        target=target,
        tick=layout.set_time(tick),
        owner=owner,
    )
    if body is None:
        return []
    try:
        drill, created = kube.create_custom("LamassuRestore", t.namespace, body)
    except LamassuBackupError as exc:
        return [("Warning", "VerificationFailed", f"could not start the drill: {exc.message}")]
    if not created:
        return []
    return [
        (
            "Normal",
            "VerificationStarted",
            f"point-in-time drill of postgres to {iso(target)} into scratch "
            f"(LamassuRestore {drill['metadata']['name']})",
        )
    ]


def _start(kube: KubeApi, t: Tick, tick: datetime) -> list[tuple[str, str, str]]:
    """A Drill LamassuRestore of the newest completed set; returns (type, reason, message) for
    the policy's Events. The run's status names the drill (Running), so its own reconcile then
    follows it to its outcome."""
    candidates = sorted(
        (r for r in t.runs if r.phase == BackupPhase.COMPLETED.value and r.completed_at),
        key=lambda r: r.completed_at or t.now,
    )
    if not candidates:
        return [("Warning", "VerificationSkipped", "no completed set to test-restore yet")]
    target = candidates[-1]
    backup = resources.read_backup(kube, t.namespace, target.name)
    if not isinstance(backup, LamassuBackup):
        return []
    components = [
        c for c, phase in target.components.items() if phase == BackupPhase.COMPLETED.value
    ]
    owner = jobs.Owner(backup.api_version, backup.kind, backup.name, backup.uid)
    body = jobs.drill_restore(
        t.spec,
        namespace=t.namespace,
        policy_name=t.name,
        backup_name=target.name,
        components=components,
        tick=layout.set_time(tick),
        owner=owner,
    )
    if body is None:
        return []
    try:
        drill, created = kube.create_custom("LamassuRestore", t.namespace, body)
    except LamassuBackupError as exc:
        return [("Warning", "VerificationFailed", f"could not start the drill: {exc.message}")]
    name = str(drill["metadata"]["name"])
    # A tick fired again after a restart finds its drill: the set it drills is the one to mark.
    drilled = str(((drill.get("spec") or {}).get("backupRef") or {}).get("name") or target.name)
    if not created and _follows(kube, t.namespace, drilled, name):
        return _prune(kube, t, verifying={drilled})  # recorded before the restart
    kube.patch_status(
        "LamassuBackup",
        t.namespace,
        drilled,
        {
            "verification": {
                "phase": "Running",
                "restoreName": name,
                "jobName": None,
                "startedAt": iso(t.now),
            }
        },
    )
    events = _prune(kube, t, verifying={drilled})
    if created:
        events.append(
            (
                "Normal",
                "VerificationStarted",
                f"test-restoring {drilled} into scratch targets (LamassuRestore {name})",
            )
        )
    return events


def _follows(kube: KubeApi, namespace: str, backup: str, drill: str) -> bool:
    """Whether the set's verification already names this drill (running or recorded)."""
    found = resources.read_backup(kube, namespace, backup)
    if not isinstance(found, LamassuBackup) or found.status is None:
        return False
    return found.status.verification is not None and (
        found.status.verification.restore_name == drill
    )


def _prune(kube: KubeApi, t: Tick, verifying: set[str]) -> list[tuple[str, str, str]]:
    """Delete the policy's finished drills beyond the newest ``spec.recentRunsLimit`` (their
    evidence is on the sets' status); never one whose outcome is still to be recorded."""
    selector = f"{jobs.LABEL_SCHEDULED_DRILL}={layout.label_value(t.name)}"
    try:
        drills = kube.list_custom("LamassuRestore", t.namespace, selector)
    except LamassuBackupError:
        return []  # tried again at the next drill
    verifying = verifying | {r.name for r in t.runs if r.verification_phase == "Running"}
    for name in jobs.drills_to_delete(drills, t.spec.recent_runs_limit, verifying):
        try:
            kube.delete_custom("LamassuRestore", t.namespace, name)
        except LamassuBackupError as exc:
            return [("Warning", "VerificationCleanupFailed", exc.message)]
    return []


# -- the run's side ----------------------------------------------------------------------------

_OVER = {"Completed", "Failed", "RolledBack", "Planned"}


def track(kube: KubeApi, backup: LamassuBackup, now: datetime) -> RunOutcome:
    """Follow a run's drill; when it ends, record the evidence and the Verified condition."""
    status = backup.status
    assert status is not None
    assert status.verification is not None
    verification = status.verification
    if verification.restore_name is None:
        update = _track_job(kube, backup, now)
    else:
        update = _track_restore(kube, backup, verification.restore_name, now)
    if update is None:
        return RunOutcome()
    namespace = backup.namespace
    policy_name = backup.spec.policy_ref.name
    merged = {**verification.to_api(), **update}
    verified = merged["phase"] == VerificationPhase.VERIFIED.value
    metrics.VERIFICATIONS.labels(namespace, policy_name, merged["phase"]).inc()
    if verified:
        metrics.LAST_VERIFIED.labels(namespace, policy_name).set(now.timestamp())
    conditions = cond.set_condition(
        status.conditions,
        type=cond.VERIFIED,
        status=ConditionStatus.TRUE if verified else ConditionStatus.FALSE,
        reason="DrillSucceeded" if verified else "DrillFailed",
        message=str(merged.get("message") or ""),
        now=now,
        generation=backup.generation,
    )
    return RunOutcome(
        patch={"verification": merged, "conditions": [c.to_api() for c in conditions]},
        events=[
            Event(
                ref(backup),
                "Normal" if verified else "Warning",
                "Verified" if verified else "VerificationFailed",
                str(merged.get("message")),
            )
        ],
        finished=True,
        succeeded=verified,
        policy=policy_name,
    )


def _track_restore(
    kube: KubeApi, backup: LamassuBackup, name: str, now: datetime
) -> dict[str, Any] | None:
    """The drill LamassuRestore's outcome as the run's verification (None: still running)."""
    drill = read_restore(kube, backup.namespace, name)
    if drill is None:
        return {
            "phase": VerificationPhase.FAILED.value,
            "message": f"the drill LamassuRestore {name} was deleted before it finished",
        }
    status = drill.status or RestoreStatus()
    if status.phase.value not in _OVER:
        return None
    evidence = dict(status.evidence)
    if status.recovery_time_seconds is not None:
        evidence.setdefault("recoveryTimeSeconds", status.recovery_time_seconds)
    if status.phase.value == "Completed":
        return {
            "phase": VerificationPhase.VERIFIED.value,
            "verifiedAt": iso(now),
            "message": evidence_summary(evidence),
            "evidence": evidence,
        }
    return {
        "phase": VerificationPhase.FAILED.value,
        "message": f"{status.message or 'the drill failed'} (LamassuRestore {name})",
        "evidence": evidence,
    }


def _track_job(kube: KubeApi, backup: LamassuBackup, now: datetime) -> dict[str, Any] | None:
    """A drill started as a bare Job by an operator before drills were LamassuRestores: its
    outcome from the Job (None: still running)."""
    assert backup.status is not None
    assert backup.status.verification is not None
    job_name = backup.status.verification.job_name or ""
    job = kube.get_job(backup.namespace, job_name)
    if job is None:
        return {
            "phase": VerificationPhase.FAILED.value,
            "message": f"the verification Job {job_name} was deleted before it finished",
        }
    state = job_state(kube, job)
    if not state.done:
        return None
    evidence = state.result.evidence if state.result else {}
    if state.ok and state.result is not None and state.result.ok:
        return {
            "phase": VerificationPhase.VERIFIED.value,
            "verifiedAt": iso(now),
            "message": evidence_summary(evidence),
            "evidence": evidence,
        }
    return {
        "phase": VerificationPhase.FAILED.value,
        "message": state.message
        or (state.result.error if state.result else None)
        or "drill failed",
        "evidence": evidence,
    }


def evidence_summary(evidence: dict[str, Any]) -> str:
    """One line from a drill's evidence, for the Verified condition and Event."""
    parts = []
    rto = evidence.get("recoveryTimeSeconds") or evidence.get("seconds")
    if rto is not None:
        parts.append(f"restored in {float(rto):.1f}s")
    dbs = evidence.get("databases")
    if isinstance(dbs, dict):
        parts.append(f"{len(dbs)} database(s) verified")
    keys = evidence.get("keyConsistency")
    if isinstance(keys, dict):
        missing = keys.get("missing") or []
        parts.append("key consistency OK" if not missing else f"{len(missing)} key(s) missing")
    return "; ".join(parts) or json.dumps(evidence)[:200] or "drill succeeded"
