"""The LamassuRestore controller: orchestrate the restore runner's Jobs around the live platform.

Pending -> Planning -> (dry run: Planned) -> PausingBackups -> PreRestoreBackup -> ScalingDown ->
Restoring -> Validating -> ScalingUp -> Completed | Failed | RolledBack.

Every decision is made from the API (the restore's status, its deterministically named Jobs and
safety backup, the annotations on the workloads it stopped) and recorded there *before* it is acted
on, so an operator killed at any point resumes where it was: no step runs twice, no second Job is
created, and no workload stays at zero. The runner keeps its own guarantees (verify before destroy,
restore beside and swap, exit codes); this service only decides which step runs when.
"""

from __future__ import annotations

import re
import threading
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from typing import Any

from ..builders import jobs, layout
from ..builders import restore_pitr as rpitr
from ..builders import restore_plan as rp
from ..builders.restore_jobs import (
    RESTORE_ACCOUNT,
    RUNNER_ACCOUNT,
    RestoreSource,
    account_namespaces,
    restore_job,
)
from ..clients.kube import KubeApi
from ..clients.workloads import WorkloadApi, http_status
from ..components.base import Step
from ..errors import LamassuBackupError
from ..models.backup import BackupPhase, Trigger
from ..models.common import ConditionStatus
from ..models.policy import BackupPolicySpec
from ..models.resources import Identity
from ..models.restore import (
    PlanItem,
    ResolvedBackup,
    RestoreMode,
    RestorePhase,
    RestoreSpec,
    RestoreStatus,
    ScaledWorkload,
    StepPhase,
    parse_point_in_time,
)
from ..models.restore import Step as StepRecord
from .common import Event, OnObject, Settings, iso, parse_time, ref
from .job_state import JobState, ended_pod_state, job_state
from .resources import (
    Invalid,
    Restore,
    policy_of,
    read_backup,
    read_policy,
    read_restore,
    stored,
)

PROGRESSING = "Progressing"
COMPLETED = "Completed"
_ACTIVE_REQUEUE = 2.0
_WORKLOAD_POLL = 0.5
"""How often Pods stopping or starting, and a young runner Job's Pod, are looked at: a GET or
a LIST each, and each poll saved is downtime saved (the restore's loop honours these delays)."""
_JOB_FAST_POLL_FOR = 120.0
"""For this long after a runner Job is created its Pod is polled every _WORKLOAD_POLL; later
every _ACTIVE_REQUEUE (a long restore gains little from faster looks)."""
_MAX_TRANSITIONS = 12


class _Wait(Exception):  # noqa: N818 - a control-flow signal, not an error
    """The current step cannot go on yet; look again in ``seconds``."""

    def __init__(self, seconds: float = _ACTIVE_REQUEUE, message: str | None = None) -> None:
        super().__init__(message or "waiting")
        self.seconds = seconds
        self.message = message


class _Fail(Exception):  # noqa: N818 - a control-flow signal carrying the user-facing reason
    """The current step failed: ``reason`` and ``message`` go to status, a condition and an Event."""

    def __init__(self, reason: str, message: str) -> None:
        super().__init__(message)
        self.reason = reason
        self.message = message


@dataclass
class RestoreOutcome:
    """What one reconcile did."""

    events: list[Event] = field(default_factory=list)
    requeue: float | None = None
    """Look again after this many seconds (None: the restore is over)."""


@dataclass
class _Ctx(OnObject):
    restore: Restore
    spec: RestoreSpec
    status: RestoreStatus
    """The restore's status, changed in place as the reconcile goes."""
    now: datetime
    events: list[Event] = field(default_factory=list)
    saved: dict[str, Any] = field(default_factory=dict)
    """The status as the API has it (what ``_save`` patches against)."""

    def __post_init__(self) -> None:
        self.saved = stored(self.status)

    @property
    def subject(self) -> Restore:
        return self.restore

    def owner(self) -> jobs.Owner:
        return jobs.Owner(self.restore.api_version, "LamassuRestore", self.name, self.restore.uid)

    def event(self, type_: str, reason: str, message: str) -> None:
        self.events.append(Event(ref(self.restore), type_, reason, message))

    def condition(self, type_: str, status: ConditionStatus, reason: str, message: str) -> None:
        self.status.conditions = self.with_condition(
            self.status.conditions, type_, status, reason, message
        )

    def current_step(self) -> StepRecord | None:
        for step in reversed(self.status.steps):
            if step.name == self.status.phase.value:
                return step
        return None


def _redact_url(url: str) -> str:
    """A URL without user info (a health check URL may carry credentials)."""
    return re.sub(r"//[^/@]*@", "//", url)


class RestoreService:
    """Reconciles LamassuRestore objects."""

    def __init__(self, kube: KubeApi, workloads: WorkloadApi, settings: Settings) -> None:
        self.kube = kube
        self.workloads = workloads
        self.settings = settings
        self._locks: dict[tuple[str, str], threading.Lock] = {}
        self._guard = threading.Lock()
        self._namespace_locks: dict[str, threading.Lock] = {}

    def _lock(self, namespace: str, name: str) -> threading.Lock:
        with self._guard:
            return self._locks.setdefault((namespace, name), threading.Lock())

    def _ns_lock(self, namespace: str) -> threading.Lock:
        with self._guard:
            return self._namespace_locks.setdefault(namespace, threading.Lock())

    def forget(self, namespace: str, name: str) -> None:
        """Drop per-restore state of a deleted restore."""
        with self._guard:
            self._locks.pop((namespace, name), None)

    def release(self, restore: Restore) -> list[Event]:
        """A restore deleted mid-way: scale back every workload it stopped (its Jobs go with it,
        the runner's SIGTERM handling cleans up scratch targets). Only workloads still carrying
        this restore's mark are touched, to the replicas the mark recorded."""
        namespace, name = restore.namespace, restore.name
        status = restore.status or RestoreStatus()
        events: list[Event] = []
        with self._lock(namespace, name):
            for recorded in status.scaled_workloads:
                obj = self.workloads.get(recorded.kind, namespace, recorded.name)
                if obj is None:
                    continue
                w = _workload(obj)
                if w.annotations.get(rp.SCALED_BY_ANNOTATION) != name:
                    continue
                replicas = rp.recorded_replicas(w, name)
                self.workloads.scale(
                    w.kind,
                    namespace,
                    w.name,
                    replicas,
                    {rp.REPLICAS_ANNOTATION: None, rp.SCALED_BY_ANNOTATION: None},
                )
                events.append(
                    Event(
                        ref(restore),
                        "Normal",
                        "ScaledUp",
                        f"{w.kind} {w.name}: back to {replicas} (the restore was deleted)",
                    )
                )
        return events

    # -- the loop ------------------------------------------------------------------------------

    def reconcile(self, restore: Identity, now: datetime) -> RestoreOutcome:
        """Move a restore forward as far as it can go now; idempotent, safe to call any time.

        The restore is read again under its lock: every decision is made on its latest state.
        """
        with self._lock(restore.namespace, restore.name):
            fresh = read_restore(self.kube, restore.namespace, restore.name)
            if fresh is None:
                return RestoreOutcome()
            if isinstance(fresh, Invalid):
                return self._invalid(fresh, now)
            ctx = _Ctx(fresh, fresh.spec, fresh.status or RestoreStatus(), now)
            requeue: float | None = None
            for _ in range(_MAX_TRANSITIONS):
                before = ctx.status.phase
                requeue = None
                try:
                    requeue = self._advance(ctx)
                except _Wait as wait:
                    requeue = wait.seconds
                    if wait.message:
                        self._note(ctx, wait.message)
                except _Fail as failure:
                    self._fail(ctx, failure.reason, failure.message)
                except LamassuBackupError as exc:
                    # The API or a target is unreachable now: say so, keep the phase, try again.
                    self._note(ctx, f"{exc.message} (retrying)")
                    requeue = 10.0
                self._save(ctx)
                if ctx.status.phase == before or requeue is not None:
                    break
            return RestoreOutcome(events=ctx.events, requeue=requeue)

    def _save(self, ctx: _Ctx) -> None:
        current = ctx.saved
        wanted = ctx.status.to_api()
        wanted["observedGeneration"] = ctx.generation
        patch = {k: v for k, v in wanted.items() if current.get(k) != v}
        for key in current:
            if key not in wanted and key not in ("observedGeneration",):
                patch[key] = None
        if patch:
            self.kube.patch_status("LamassuRestore", ctx.namespace, ctx.name, patch)
            merged = {**current, **patch}
            ctx.saved = {k: v for k, v in merged.items() if v is not None}

    def _invalid(self, restore: Invalid[RestoreStatus], now: datetime) -> RestoreOutcome:
        """A spec the models refuse: Failed, with the field and the fix; never retried."""
        status = restore.status
        if status.phase == RestorePhase.FAILED and status.reason == "InvalidSpec":
            return RestoreOutcome()
        # A spec that does not validate: only its defaults are read while ending it.
        ctx = _Ctx(restore, RestoreSpec.model_construct(), status, now)  # type: ignore[call-arg]
        self._end(ctx, RestorePhase.FAILED, "InvalidSpec", restore.message)
        self._save(ctx)
        return RestoreOutcome(events=ctx.events)

    # -- transitions ---------------------------------------------------------------------------

    def _advance(self, ctx: _Ctx) -> float | None:
        """Run the current phase once; returns a requeue delay, or None after a transition."""
        phase = ctx.status.phase
        handlers: dict[RestorePhase, Callable[[_Ctx], None]] = {
            RestorePhase.PENDING: self._pending,
            RestorePhase.PLANNING: self._planning,
            RestorePhase.PAUSING_BACKUPS: self._pausing,
            RestorePhase.PRE_RESTORE_BACKUP: self._pre_restore_backup,
            RestorePhase.SCALING_DOWN: self._scaling_down,
            RestorePhase.RESTORING: self._restoring,
            RestorePhase.VALIDATING: self._validating,
            RestorePhase.ROLLING_BACK: self._rolling_back,
            RestorePhase.SCALING_UP: self._scaling_up,
        }
        if phase == RestorePhase.COMPLETED:
            return self._finalize(ctx)
        handler = handlers.get(phase)
        if handler is None:
            return None
        handler(ctx)
        return None if ctx.status.phase != phase else _ACTIVE_REQUEUE

    def _begin(self, ctx: _Ctx, phase: RestorePhase, message: str) -> None:
        """Enter ``phase``: a step record, the current step, a condition and an Event."""
        ctx.status.phase = phase
        ctx.status.step = phase.value
        ctx.status.steps = [
            *ctx.status.steps,
            StepRecord(
                name=phase.value, phase=StepPhase.RUNNING, started_at=ctx.now, message=message
            ),
        ]
        ctx.condition(PROGRESSING, ConditionStatus.TRUE, phase.value, message)
        ctx.event("Normal", phase.value, message)

    def _close_step(self, ctx: _Ctx, result: StepPhase, message: str) -> None:
        step = ctx.current_step()
        if step is not None and step.phase == StepPhase.RUNNING:
            step.phase = result
            step.completed_at = ctx.now
            step.message = message[:1000]
            if result == StepPhase.SUCCEEDED:
                ctx.event("Normal", f"{step.name}Done", message)

    def _done(self, ctx: _Ctx, message: str, next_message: str = "") -> None:
        """The current step succeeded: record it and enter the next phase."""
        self._close_step(ctx, StepPhase.SUCCEEDED, message)
        following = rp.next_phase(ctx.spec, ctx.status.phase)
        if following in rp.DONE:
            self._end(ctx, ctx.status.outcome or following, ctx.status.reason, ctx.status.message)
            return
        if ctx.spec.mode == RestoreMode.DRILL and following == RestorePhase.RESTORING:
            next_message = next_message or _DRILL_RESTORING
        self._begin(ctx, following, next_message or _BEGIN.get(following, following.value))

    def _note(self, ctx: _Ctx, message: str) -> None:
        """Say why the step is waiting (once per distinct message)."""
        step = ctx.current_step()
        if step is not None and step.message != message:
            step.message = message[:1000]
            ctx.condition(PROGRESSING, ConditionStatus.TRUE, ctx.status.phase.value, message)

    def _fail(self, ctx: _Ctx, reason: str, message: str) -> None:
        """The current step failed: roll back or scale back as needed, then end."""
        self._close_step(ctx, StepPhase.FAILED, message)
        ctx.event("Warning", reason, message)
        ctx.status.errors += 1
        phase = ctx.status.phase
        scaled = bool(ctx.status.scaled_workloads) and phase not in (
            RestorePhase.SCALING_UP,
            RestorePhase.PLANNING,
            RestorePhase.PENDING,
        )
        swapped = bool(ctx.status.swap_suffix) and phase == RestorePhase.VALIDATING
        following = rp.failure_path(ctx.spec, phase, scaled=scaled, swapped=swapped)
        if ctx.status.outcome is None:
            ctx.status.outcome = RestorePhase.FAILED
            ctx.status.reason = reason
            ctx.status.message = message
        if following == RestorePhase.ROLLING_BACK:
            self._begin(ctx, following, f"rolling back: {message}")
        elif following == RestorePhase.SCALING_UP:
            self._begin(ctx, following, "scaling the workloads back to their replicas")
        else:
            self._end(ctx, ctx.status.outcome, ctx.status.reason, ctx.status.message)

    def _end(self, ctx: _Ctx, phase: RestorePhase, reason: str | None, message: str | None) -> None:
        """A terminal phase: conditions, the completion time, the recovery time, one Event."""
        ctx.status.phase = phase
        ctx.status.step = None
        ctx.status.outcome = phase
        ctx.status.completed_at = ctx.now
        ok = phase in (RestorePhase.COMPLETED, RestorePhase.PLANNED)
        text = message or _END.get(phase, phase.value)
        ctx.status.message = text
        if ok:
            ctx.status.reason = None
        started = _live_start(ctx.status)
        if phase == RestorePhase.COMPLETED and started is not None:
            ctx.status.recovery_time_seconds = round((ctx.now - started).total_seconds(), 2)
        drill_rto = ctx.status.evidence.get("recoveryTimeSeconds")
        if ctx.spec.mode == RestoreMode.DRILL and isinstance(drill_rto, int | float):
            ctx.status.recovery_time_seconds = float(drill_rto)
        ctx.condition(PROGRESSING, ConditionStatus.FALSE, phase.value, text)
        ctx.condition(
            COMPLETED,
            ConditionStatus.TRUE if ok else ConditionStatus.FALSE,
            phase.value if ok else (reason or phase.value),
            text,
        )
        ctx.event("Normal" if ok else "Warning", phase.value, text)

    # -- Pending / Planning --------------------------------------------------------------------

    def _pending(self, ctx: _Ctx) -> None:
        ctx.status.started_at = ctx.status.started_at or ctx.now
        self._begin(ctx, RestorePhase.PLANNING, _BEGIN[RestorePhase.PLANNING])

    def _planning(self, ctx: _Ctx) -> None:
        if ctx.status.resolved_backup is None:
            ctx.status.resolved_backup = self._resolve(ctx)
        resolved = ctx.status.resolved_backup
        expected = rp.confirm_name(resolved.name, resolved.location)
        if (
            ctx.spec.mode == RestoreMode.IN_PLACE
            and not ctx.spec.dry_run
            and ctx.spec.confirm != expected
        ):
            raise _Fail(
                "ConfirmMismatch",
                f"spec.confirm is {ctx.spec.confirm!r} but the backup being restored is "
                f"{expected!r}: set spec.confirm to {expected!r} to restore it in place "
                "(nothing was changed)",
            )
        self._check_secrets(ctx)
        if not rp.plan_job_needed(ctx.spec):
            # A drill: its own Job verifies the whole set before restoring into scratch.
            self._acquire(ctx)
            return
        state = self._job(ctx, "plan", self._components(ctx))
        if not state.ok:
            raise _Fail(*rpitr.planning_failure(state.reason, state.message))
        evidence = state.result.evidence if state.result else {}
        if resolved.point_in_time is not None:
            resolved.point_in_time = rpitr.with_evidence(resolved.point_in_time, evidence)
        ctx.status.plan = [
            PlanItem.model_validate(item) for item in evidence.get("plan") or [] if "target" in item
        ]
        if state.result is not None:
            ctx.status.components = dict(state.result.components)
            ctx.status.warnings = len(state.result.warnings)
            ctx.status.resolved_backup.manifest_sha256 = (
                state.result.manifest_sha256 or ctx.status.resolved_backup.manifest_sha256
            )
        if ctx.spec.dry_run:
            self._done(ctx, f"the set verified; the plan has {len(ctx.status.plan)} item(s)")
        else:
            self._acquire(ctx)

    def _resolve(self, ctx: _Ctx) -> ResolvedBackup:
        spec = ctx.spec
        if spec.backup_ref is not None:
            return self._from_backup(ctx, spec.backup_ref.name, "spec.backupRef.name")
        assert spec.source is not None
        if spec.source.s3 is not None:
            s3 = spec.source.s3
            return ResolvedBackup(name=None, location=f"s3://{s3.bucket}/{s3.path}")
        assert spec.source.policy_ref is not None
        policy = spec.source.policy_ref.name
        moment = parse_point_in_time(spec.source.point_in_time)
        need = [str(c) for c in spec.components]
        pitr_source = None
        found = read_policy(self.kube, ctx.namespace, policy)
        wal_policy = found.spec if found is not None and not isinstance(found, Invalid) else None
        if wal_policy is not None and rpitr.is_point_in_time(spec, wal_policy):
            # postgres from the WAL archive; the set (if one is needed) for the others.
            pitr_source = rpitr.source_status(spec, wal_policy, ctx.namespace, policy, moment)
            needs = rpitr.set_needs(spec)
            if needs is None:
                return rpitr.archive_only(pitr_source, policy)
            need = needs
        candidates = [
            rp.candidate_of(b)
            for b in self.kube.list_custom("LamassuBackup", ctx.namespace)
            if (b.get("spec") or {}).get("policyRef", {}).get("name") == policy
        ]
        chosen = rp.choose_backup(candidates, moment, need)
        if chosen is None:
            when = "" if moment is None else f" taken at or before {iso(moment)}"
            raise _Fail(
                "NoMatchingBackup",
                f"policy {policy} (spec.source.policyRef) has no completed set{when} "
                "(spec.source.pointInTime): pick a later time, or back up first",
            )
        resolved = self._from_backup(ctx, chosen, "spec.source")
        resolved.point_in_time = pitr_source
        return resolved

    def _from_backup(self, ctx: _Ctx, name: str, where: str) -> ResolvedBackup:
        backup = read_backup(self.kube, ctx.namespace, name)
        if backup is None:
            created = ctx.created_at
            message = f"LamassuBackup {ctx.namespace}/{name} ({where}) does not exist"
            if ctx.now - created < timedelta(seconds=self.settings.policy_missing_grace_seconds):
                raise _Wait(5.0, message + "; waiting for it")
            raise _Fail("BackupNotFound", message + ": name an existing backup")
        status = backup.status
        assert status is not None
        phase = status.phase.value
        if phase in ("Pending", "Running"):
            raise _Wait(5.0, f"LamassuBackup {name} is {phase}; waiting for it to complete")
        if phase not in rp.USABLE_BACKUP_PHASES or not status.location:
            raise _Fail(
                "BackupNotUsable",
                f"LamassuBackup {name} ({where}) is {phase}: only a completed set can be "
                "restored; name another backup",
            )
        complete = [c for c, v in status.components.items() if v.phase == BackupPhase.COMPLETED]
        return ResolvedBackup(
            components=sorted(complete),
            name=name,
            location=status.location,
            manifest_sha256=status.manifest.sha256 if status.manifest else None,
            policy=policy_of(backup) or None,
            set_time=status.set_time,
        )

    def _check_secrets(self, ctx: _Ctx) -> None:
        """The restore's own Secret references exist (else the Job's Pod would wait forever)."""
        for where, secret in (
            ("spec.decryptionKeySecret", ctx.spec.decryption_key_secret),
            ("spec.decryptionKeyPassphraseSecret", ctx.spec.decryption_key_passphrase_secret),
            ("spec.signerKeySecret", ctx.spec.signer_key_secret),
        ):
            if secret is None:
                continue
            data = self.kube.secret_data(ctx.namespace, secret.name)
            if data is None or secret.key not in data:
                missing = "Secret" if data is None else f"key {secret.key} of Secret"
                raise _Fail(
                    "SecretNotFound",
                    f"{where}: {missing} {ctx.namespace}/{secret.name} does not exist; create it "
                    "(nothing was changed)",
                )

    def _acquire(self, ctx: _Ctx) -> None:
        """One restore at a time per namespace: wait (with a condition saying why) for the one
        that holds it, or for an older one that waits too."""
        with self._ns_lock(ctx.namespace):
            others = [
                rp.RestoreRef(
                    name=b["metadata"]["name"],
                    phase=str((b.get("status") or {}).get("phase") or "Pending"),
                    created=parse_time(b["metadata"].get("creationTimestamp")),
                    dry_run=bool((b.get("spec") or {}).get("dryRun")),
                    drill=((b.get("spec") or {}).get("mode") or RestoreMode.DRILL.value)
                    == RestoreMode.DRILL.value,
                )
                for b in self.kube.list_custom("LamassuRestore", ctx.namespace)
            ]
            drill = ctx.spec.mode == RestoreMode.DRILL
            me = rp.RestoreRef(
                ctx.name,
                ctx.status.phase.value,
                parse_time(ctx.restore.creation_timestamp),
                ctx.spec.dry_run,
                drill,
            )
            blocker = rp.blocking_restore(me, others)
            if blocker is not None:
                message = (
                    f"waiting: LamassuRestore {blocker} is restoring namespace {ctx.namespace} "
                    "(one restore at a time per namespace)"
                )
                ctx.condition(PROGRESSING, ConditionStatus.FALSE, "WaitingForRestore", message)
                step = ctx.current_step()
                if step is not None and step.message != message:
                    step.message = message
                    ctx.event("Normal", "WaitingForRestore", message)
                raise _Wait(5.0)
            # Entering PausingBackups is what takes the namespace: saved under the lock.
            self._done(
                ctx,
                "the set resolved; the drill verifies it first, into scratch targets (it holds "
                "nothing: backups and restores go on)"
                if drill
                else f"the set verified ({len(ctx.status.plan)} plan item(s)); this restore "
                "holds the namespace now",
            )
            self._save(ctx)

    # -- PausingBackups / PreRestoreBackup ------------------------------------------------------

    def _pausing(self, ctx: _Ctx) -> None:
        """Backups are paused from this phase on (the policy loop asks); wait for running ones."""
        running = [
            b["metadata"]["name"]
            for b in self.kube.list_custom("LamassuBackup", ctx.namespace)
            if ((b.get("status") or {}).get("phase") or "Pending") in ("Pending", "Running")
            and (b.get("spec") or {}).get("trigger") != Trigger.PRE_RESTORE.value
            and (b.get("spec") or {}).get("trigger") != Trigger.DISCOVERED.value
        ]
        if running:
            raise _Wait(3.0, f"waiting for running backup(s) to end: {', '.join(sorted(running))}")
        self._done(ctx, "scheduled backups, retention and verification are paused")

    def _pre_restore_backup(self, ctx: _Ctx) -> None:
        resolved = ctx.status.resolved_backup
        policy = resolved.policy if resolved else None
        if policy is None:
            self._close_step(ctx, StepPhase.SKIPPED, "no policy to take a safety set with")
            ctx.status.warnings += 1
            self._done(ctx, "skipped")
            return
        name = rp.pre_restore_backup_name(ctx.name, ctx.restore.uid)
        if ctx.status.pre_restore_backup is None:
            ctx.status.pre_restore_backup = name
            self._save(ctx)  # recorded first: retention protects it from the start
            resource = jobs.backup_resource(
                namespace=ctx.namespace,
                policy_name=policy,
                name=name,
                trigger=Trigger.PRE_RESTORE,
                components=[],
            )
            resource["metadata"]["labels"][rp.LABEL_RESTORE] = layout.bounded_name(ctx.name)
            self.kube.create_custom("LamassuBackup", ctx.namespace, resource)
        backup = read_backup(self.kube, ctx.namespace, name)
        if backup is None:
            raise _Fail(
                "PreRestoreBackupFailed",
                f"the pre-restore backup {name} was deleted before it completed; nothing was "
                "restored",
            )
        status = backup.status
        assert status is not None
        phase = status.phase.value
        if phase in ("Pending", "Running"):
            raise _Wait(1.0, f"waiting for the pre-restore backup {name} ({phase})")
        if phase != "Completed":
            why = next((c.message for c in status.conditions if c.type == "Completed"), phase)
            raise _Fail(
                "PreRestoreBackupFailed",
                f"the pre-restore backup {name} ended {phase} ({why}); nothing was restored",
            )
        self._done(ctx, f"safety set {name} completed at {status.location}")

    # -- ScalingDown / ScalingUp ---------------------------------------------------------------

    def _matching(self, ctx: _Ctx) -> list[rp.Workload]:
        spec = ctx.spec.workloads
        assert spec is not None
        found: dict[tuple[str, str], dict[str, Any]] = {}
        if spec.selector is not None and not spec.selector.is_empty():
            for obj in self.workloads.list(ctx.namespace, spec.selector.to_query()):
                found[(obj["kind"], obj["metadata"]["name"])] = obj
        for named in spec.names:
            one = self.workloads.get(named.kind, ctx.namespace, named.name)
            if one is None:
                raise _Fail(
                    "WorkloadNotFound",
                    f"spec.workloads.names: {named.kind} {ctx.namespace}/{named.name} does not "
                    "exist; fix the name (nothing was changed)",
                )
            found[(named.kind, named.name)] = one
        return [_workload(obj) for obj in found.values()]

    def _scaling_down(self, ctx: _Ctx) -> None:
        step = ctx.current_step()
        if not ctx.status.workloads_recorded:
            # First pass: record every workload and its replicas before touching any.
            ordered = rp.scale_down_order(self._matching(ctx))
            ctx.status.scaled_workloads = [
                ScaledWorkload(kind=w.kind, name=w.name, replicas=rp.recorded_replicas(w, ctx.name))
                for w in ordered
            ]
            ctx.status.workloads_recorded = True
            self._save(ctx)
        timeout = ctx.spec.workloads.timeout if ctx.spec.workloads else timedelta(minutes=5)
        started = step.started_at if step and step.started_at else ctx.now
        recorded = {(w.kind, w.name): w.replicas for w in ctx.status.scaled_workloads}
        live = [
            _workload(obj)
            for w in ctx.status.scaled_workloads
            if (obj := self.workloads.get(w.kind, ctx.namespace, w.name)) is not None
        ]
        # One group at a time (API services, StatefulSets, kms), all of a group at once.
        for group in rp.stop_groups(live):
            for w in group:
                if w.replicas != 0:
                    replicas = recorded[(w.kind, w.name)]
                    self.workloads.scale(
                        w.kind,
                        ctx.namespace,
                        w.name,
                        0,
                        {rp.REPLICAS_ANNOTATION: str(replicas), rp.SCALED_BY_ANNOTATION: ctx.name},
                    )
                    ctx.event("Normal", "ScaledDown", f"{w.kind} {w.name}: {replicas} -> 0")
            running = [w for w in group if w.running > 0 or w.replicas != 0]
            if running:
                which = ", ".join(f"{w.kind} {w.name} ({w.running} Pod(s))" for w in running)
                if ctx.now - started > timeout:
                    raise _Fail(
                        "WorkloadsDidNotStop",
                        f"{which} still running after spec.workloads.timeout; nothing was restored",
                    )
                raise _Wait(_WORKLOAD_POLL, f"waiting for {which} to stop")
        names = ", ".join(f"{w.kind}/{w.name}" for w in ctx.status.scaled_workloads) or "none"
        self._done(ctx, f"stopped: {names}")

    def _scale_back(self, ctx: _Ctx) -> str | None:
        """Every recorded workload back to its replicas (kms first); the one still starting."""
        timeout = ctx.spec.workloads.timeout if ctx.spec.workloads else timedelta(minutes=5)
        step = ctx.current_step()
        started = step.started_at if step and step.started_at else ctx.now
        waiting: str | None = None
        order = rp.scale_up_order(
            rp.Workload(w.kind, w.name, w.replicas, 0, {}, {}) for w in ctx.status.scaled_workloads
        )
        wanted = {(w.kind, w.name): w.replicas for w in ctx.status.scaled_workloads}
        for item in order:
            obj = self.workloads.get(item.kind, ctx.namespace, item.name)
            if obj is None:
                continue
            w = _workload(obj)
            replicas = wanted[(w.kind, w.name)]
            if w.replicas != replicas or rp.SCALED_BY_ANNOTATION in w.annotations:
                self.workloads.scale(
                    w.kind,
                    ctx.namespace,
                    w.name,
                    replicas,
                    {rp.REPLICAS_ANNOTATION: None, rp.SCALED_BY_ANNOTATION: None},
                )
                if w.replicas != replicas:
                    ctx.event("Normal", "ScaledUp", f"{w.kind} {w.name}: 0 -> {replicas}")
            if w.running < replicas and waiting is None and ctx.now - started <= timeout:
                waiting = f"{w.kind} {w.name} ({w.running}/{replicas} Pod(s))"
        return waiting

    def _scaling_up(self, ctx: _Ctx) -> None:
        waiting = self._scale_back(ctx)
        if waiting is not None:
            raise _Wait(_WORKLOAD_POLL, f"waiting for {waiting} to start")
        names = ", ".join(f"{w.kind}/{w.name}={w.replicas}" for w in ctx.status.scaled_workloads)
        self._done(ctx, f"back to their replicas: {names or 'none'}")

    # -- Restoring / Validating / RollingBack ---------------------------------------------------

    def _restoring(self, ctx: _Ctx) -> None:
        if ctx.spec.mode == RestoreMode.IN_PLACE and ctx.status.swap_suffix is None:
            ctx.status.swap_suffix = rp.swap_suffix(ctx.created_at)
        state = self._job(ctx, "restore", self._components(ctx))
        result = state.result
        evidence = dict(result.evidence) if result else {}
        planned = evidence.pop("plan", None) or []
        if not ctx.status.plan and isinstance(planned, list):
            # A drill has no plan Job: its restore Job's own plan (scratch targets) is the plan.
            ctx.status.plan = [
                PlanItem.model_validate(item)
                for item in planned
                if isinstance(item, dict) and "target" in item
            ]
        ctx.status.evidence = {**ctx.status.evidence, **evidence}
        resolved = ctx.status.resolved_backup
        if resolved is not None and resolved.point_in_time is not None:
            resolved.point_in_time = rpitr.with_evidence(resolved.point_in_time, evidence)
        if result is not None:
            ctx.status.components = dict(result.components)
            ctx.status.warnings += len(result.warnings)
            for warning in result.warnings[:5]:
                ctx.event("Warning", "RunnerWarning", warning)
        if not state.ok:
            changed = evidence.get("changed")
            if changed:
                raise _Fail(
                    "RestoreIncomplete",
                    f"the restore failed after changing {', '.join(map(str, changed))}, which "
                    f"could not be rolled back: a person must look ({state.message})",
                )
            if ctx.spec.mode == RestoreMode.IN_PLACE:
                ctx.status.swap_suffix = None  # nothing was swapped (or it was swapped back)
            raise _Fail(
                state.reason or "RestoreFailed",
                f"the restore failed; nothing live was changed (or it was rolled back): "
                f"{state.message}",
            )
        rows = evidence.get("postgres") or {}
        self._done(ctx, f"restored {', '.join(self._components(ctx))} ({len(rows)} database(s))")

    def _validating(self, ctx: _Ctx) -> None:
        problems = rp.evidence_problems(ctx.status.evidence, self._components(ctx))
        if problems:
            raise _Fail("ValidationFailed", "; ".join(problems))
        checks = ctx.spec.validation.health_checks
        if checks:
            # Health checks need the workloads: they come back first (ScalingUp then confirms).
            waiting = self._scale_back(ctx) if ctx.status.scaled_workloads else None
            if waiting is not None:
                raise _Wait(
                    _WORKLOAD_POLL, f"waiting for {waiting} to start before the health checks"
                )
            results = []
            failing = []
            for url in checks:
                code, why = http_status(url)
                results.append({"url": _redact_url(url), "status": code})
                if not 200 <= code < 300:
                    failing.append(f"{_redact_url(url)} answered {code or why}")
            ctx.status.evidence = {**ctx.status.evidence, "healthChecks": results}
            if failing:
                step = ctx.current_step()
                started = step.started_at if step and step.started_at else ctx.now
                if ctx.now - started <= ctx.spec.validation.timeout:
                    raise _Wait(2.0, f"health checks not passing yet: {'; '.join(failing)}")
                raise _Fail(
                    "HealthCheckFailed",
                    f"health checks failed within spec.validation.timeout: {'; '.join(failing)}",
                )
        self._done(ctx, "row counts, goose versions, key consistency and health checks passed")

    def _rolling_back(self, ctx: _Ctx) -> None:
        state = self._job(ctx, "rollback", self._components(ctx))
        if not state.ok:
            ctx.status.outcome = RestorePhase.FAILED
            ctx.status.reason = "RollbackFailed"
            ctx.status.message = (
                f"{ctx.status.message}; the rollback failed too, a person must look: the previous "
                f"databases are kept as <db>__pre_restore_{ctx.status.swap_suffix} "
                f"({state.message})"
            )
        else:
            ctx.status.outcome = RestorePhase.ROLLED_BACK
            rolled = (state.result.evidence.get("rolledBack") if state.result else None) or []
            ctx.status.message = (
                f"rolled back ({', '.join(map(str, rolled)) or 'nothing to swap back'}): "
                f"{ctx.status.message}"
            )
            undone = {"postgres", *(str(r).split(":", 1)[0] for r in rolled)}
            for component in sorted(undone):
                if component in ctx.status.components:
                    ctx.status.components[component] = "RolledBack"
        ctx.status.swap_suffix = None if state.ok else ctx.status.swap_suffix
        self._close_step(
            ctx, StepPhase.SUCCEEDED if state.ok else StepPhase.FAILED, ctx.status.message or ""
        )
        if ctx.status.scaled_workloads:
            self._begin(
                ctx, RestorePhase.SCALING_UP, "scaling the workloads back to their replicas"
            )
        else:
            self._end(ctx, ctx.status.outcome, ctx.status.reason, ctx.status.message)

    # -- finalize ------------------------------------------------------------------------------

    def _finalize(self, ctx: _Ctx) -> float | None:
        """After finalizeAfter, drop what the swap kept aside (a person could roll back until)."""
        if (
            ctx.spec.mode != RestoreMode.IN_PLACE
            or not ctx.status.swap_suffix
            or ctx.status.finalized_at is not None
        ):
            return None
        done_at = ctx.status.completed_at or ctx.now
        due = done_at + ctx.spec.finalize_after
        if ctx.now < due:
            return min((due - ctx.now).total_seconds(), 300.0)
        state = self._job(ctx, "finalize", self._components(ctx), record=False)
        if not state.ok:
            message = f"finalize failed (the previous databases stay): {state.message}"
            if ctx.status.reason != "FinalizeFailed":
                ctx.status.reason = "FinalizeFailed"
                ctx.event("Warning", "FinalizeFailed", message)
            return 300.0
        dropped = (state.result.evidence.get("dropped") if state.result else None) or []
        ctx.status.finalized_at = ctx.now
        ctx.event("Normal", "Finalized", f"dropped {', '.join(map(str, dropped)) or 'nothing'}")
        return None

    # -- helpers -------------------------------------------------------------------------------

    def _components(self, ctx: _Ctx) -> list[str]:
        resolved = ctx.status.resolved_backup
        bare = resolved is not None and resolved.name is None
        in_set = resolved.components if resolved else []
        return rp.restore_components(ctx.spec, in_set, bare_set=bare)

    def _source(self, ctx: _Ctx) -> RestoreSource:
        resolved = ctx.status.resolved_backup
        assert resolved is not None
        policy: BackupPolicySpec | None = None
        if resolved.policy:
            found = read_policy(self.kube, ctx.namespace, resolved.policy)
            if found is None:
                raise _Fail(
                    "PolicyNotFound",
                    f"LamassuBackupPolicy {resolved.policy} of backup {resolved.name} does not "
                    "exist: its servers and bucket are what the restore uses",
                )
            if isinstance(found, Invalid):
                raise _Fail("InvalidPolicy", f"policy {resolved.policy} is invalid: {found.detail}")
            policy = found.spec
        pitr = None
        if resolved.point_in_time is not None and policy is not None and resolved.policy:
            pitr = rpitr.run_settings(ctx.spec, policy, ctx.namespace, resolved.policy)
        return RestoreSource(resolved.location, resolved.name, policy, pitr)

    def _record_job(self, ctx: _Ctx, current: StepRecord | None, name: str) -> None:
        """The step's Job name in status (once)."""
        if current is not None and current.job != name:
            current.job = name
            self._save(ctx)

    def _job(
        self, ctx: _Ctx, step: Step, components: list[str], *, record: bool = True
    ) -> JobState:
        """Create (once) and follow the runner Job of ``step``; raises _Wait until it ends."""
        name = rp.job_name(ctx.name, step)
        job = self.kube.get_job(ctx.namespace, name)
        current = ctx.current_step()
        if job is None:
            if record and current is not None and current.job == name:
                raise _Fail("JobDeleted", f"the runner Job {name} was deleted before it finished")
            try:
                manifest = restore_job(
                    ctx.spec,
                    self._source(ctx),
                    namespace=ctx.namespace,
                    restore=ctx.name,
                    step=step,
                    components=components,
                    swap_suffix=ctx.status.swap_suffix,
                    owner=ctx.owner(),
                )
            except ValueError as exc:
                raise _Fail("InvalidSpec", str(exc)) from None
            account = manifest["spec"]["template"]["spec"].get("serviceAccountName")
            if account == RUNNER_ACCOUNT:
                self.kube.ensure_runner_account(ctx.namespace, account)
            elif account == RESTORE_ACCOUNT:
                self.kube.ensure_restore_account(
                    ctx.namespace, account, account_namespaces(ctx.spec, ctx.namespace)
                )
            self.kube.create_job(manifest)
            # Recorded once it exists: a step whose recorded Job is gone was deleted, while an
            # operator killed between the two finds the Job by its name and adopts it.
            self._record_job(ctx, current if record else None, name)
            raise _Wait(2.0)
        owners = {o.get("uid") for o in job["metadata"].get("ownerReferences") or []}
        if ctx.restore.uid not in owners:
            # A Job of an earlier restore of the same name, not yet garbage-collected.
            raise _Wait(2.0, f"waiting for the earlier restore's Job {name} to be deleted")
        self._record_job(ctx, current if record else None, name)
        state = job_state(self.kube, job)
        if not state.done:
            # The runner's result from its Pod as soon as it exits: the Job controller marks
            # the Job done only after its batching period (a second or more, per Job).
            early = ended_pod_state(self.kube, job)
            if early is None:
                created = parse_time(job["metadata"].get("creationTimestamp")) or ctx.now
                young = ctx.now - created < timedelta(seconds=_JOB_FAST_POLL_FOR)
                raise _Wait(_WORKLOAD_POLL if young else _ACTIVE_REQUEUE)
            state = early
        return state


_BEGIN = {
    RestorePhase.PLANNING: "resolving the set and verifying it (signature, both checksums)",
    RestorePhase.PAUSING_BACKUPS: "pausing scheduled backups, retention and verification",
    RestorePhase.PRE_RESTORE_BACKUP: "taking a safety set (trigger PreRestore)",
    RestorePhase.SCALING_DOWN: "scaling the workloads down (API services first, kms last)",
    RestorePhase.RESTORING: "running the restore runner (restore beside the live data, verify, swap)",
    RestorePhase.VALIDATING: "validating: row counts, goose versions, key consistency, health checks",
    RestorePhase.SCALING_UP: "scaling the workloads back to their replicas (kms first)",
}
_DRILL_RESTORING = (
    "running the drill: verify the whole set (signature, both checksums), restore it into "
    "scratch targets, check it, tear them down"
)
_END = {
    RestorePhase.COMPLETED: "the restore completed",
    RestorePhase.PLANNED: "dry run: the plan is in status.plan; nothing was changed",
    RestorePhase.FAILED: "the restore failed",
    RestorePhase.ROLLED_BACK: "the restore was rolled back",
}


def _workload(obj: dict[str, Any]) -> rp.Workload:
    meta = obj.get("metadata") or {}
    spec = obj.get("spec") or {}
    status = obj.get("status") or {}
    replicas = spec.get("replicas")
    # Terminating Pods still run (and may still write): a Deployment reports them apart
    # (status.terminatingReplicas, Kubernetes 1.35), so they count as running until gone.
    running = int(status.get("replicas") or 0) + int(status.get("terminatingReplicas") or 0)
    observed = status.get("observedGeneration")
    if observed is not None and int(observed) < int(meta.get("generation") or 0):
        running = max(running, 1)  # the controller has not acted on the last change yet
    return rp.Workload(
        kind=str(obj.get("kind")),
        name=str(meta.get("name")),
        replicas=1 if replicas is None else int(replicas),
        running=running,
        labels=dict(meta.get("labels") or {}),
        annotations=dict(meta.get("annotations") or {}),
    )


def _live_start(status: RestoreStatus) -> datetime | None:
    """When the live platform was first touched (downtime starts): the recovery time's start."""
    for step in status.steps:
        if step.name in (RestorePhase.SCALING_DOWN.value, RestorePhase.RESTORING.value):
            return step.started_at
    return None
