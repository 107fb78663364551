"""One policy's loop: schedule runs, record skipped and missed ticks, watch staleness and
verification, report it all as conditions a person can read.

``tick`` is called whenever something may have changed (a timer at the next due time, a run
ending, an annotation, a spec change). It is idempotent: the watermark of acted-on ticks lives
in the policy's status, so a restarted operator neither repeats nor forgets a tick.
"""

from __future__ import annotations

import hashlib
from collections.abc import Sequence
from datetime import datetime, timedelta
from typing import Any

from ..builders import conditions as cond
from ..builders import jobs, layout, schedule
from ..builders import staleness as stale
from ..clients.kube import KubeApi
from ..components import registry
from ..models.backup import BackupPhase, Trigger
from ..models.common import ConditionStatus
from ..models.policy import (
    BackupPolicySpec,
    BackupPolicyStatus,
    ComponentStatus,
    RunPhase,
    RunRecord,
)
from ..models.resources import Identity
from ..models.types import format_duration
from . import metrics, restore_guard, verification, wal
from . import secrets as secret_refs
from .common import Event, RunSummary, Settings, iso, ref
from .resources import Invalid, Policy, stored
from .runs import RunService
from .tick import Tick, TickResult

RUN_NOW_ANNOTATION = "backup.lamassu.io/run-now"
"""Set (to any new value) on a policy to back up now; each distinct value runs once."""


def rpo_of(spec: BackupPolicySpec) -> dict[str, timedelta]:
    """Recovery-point objective per configured component."""
    return {c.name: c.rpo(spec.components) for c in registry.configured(spec.components)}


def run_now_name(policy: str, value: str) -> str:
    """The LamassuBackup a run-now request creates: one name per (policy, annotation value)."""
    digest = hashlib.sha256(value.encode()).hexdigest()[:10]
    return layout.bounded_name(policy, f"run-now-{digest}", limit=253)


def last_success(runs: Sequence[RunSummary], component: str) -> datetime | None:
    """When ``component`` last completed in any run."""
    times = [
        r.completed_at
        for r in runs
        if r.completed_at is not None
        and r.phase in (BackupPhase.COMPLETED.value, BackupPhase.PARTIALLY_FAILED.value)
        and r.components.get(component) == BackupPhase.COMPLETED.value
    ]
    return max(times) if times else None


class PolicyService:
    """Reconciles LamassuBackupPolicy objects."""

    def __init__(
        self,
        kube: KubeApi,
        runs: RunService,
        settings: Settings,
        checks: secret_refs.SecretChecks | None = None,
    ) -> None:
        self.kube = kube
        self.runs = runs
        self.settings = settings
        self.checks = checks or secret_refs.SecretChecks(kube, settings.secret_check_seconds)

    def tick(self, policy: Policy, runs: Sequence[RunSummary], now: datetime) -> TickResult:
        """Evaluate one policy now."""
        if isinstance(policy, Invalid):
            return self._invalid(policy, now)
        status = policy.status
        assert status is not None
        t = Tick(
            policy=policy,
            runs=runs,
            now=now,
            conditions=list(status.conditions),
            records=[
                r for r in status.recent_runs if r.phase in (RunPhase.SKIPPED, RunPhase.MISSED)
            ],
        )
        ready_error = self._ready(t)
        # -- LamassuRestore hook: no scheduled run, run-now or drill while a restore holds the
        # namespace (they resume when it ends, whatever its outcome).
        t.paused = restore_guard.pause_reason(self.kube, t.namespace)
        if t.paused:
            t.wake.append(now + timedelta(seconds=10))
        # -- end of the LamassuRestore hook
        self._schedule(t, ready_error)
        self._on_demand(t)
        wal.on_tick(self.kube, t)
        self._freshness(t)
        self._last_run(t)
        verification.on_tick(self.kube, t)
        self._recent_runs(t)
        t.patch["conditions"] = [c.to_api() for c in t.conditions]
        t.patch["observedGeneration"] = t.generation
        current = stored(status)
        changed = {k: v for k, v in t.patch.items() if current.get(k) != v}
        t.result.patch = changed or None
        t.wake.append(now + timedelta(seconds=self.settings.policy_max_sleep_seconds))
        t.result.sleep = max(min(t.wake) - now, timedelta(seconds=1))
        return t.result

    # -- the parts of a tick -----------------------------------------------------------------

    def _invalid(self, policy: Invalid[BackupPolicyStatus], now: datetime) -> TickResult:
        """A spec the models refuse (the CRD lets through what CEL cannot check: time zones...)."""
        result = TickResult()
        before = policy.status.conditions
        conditions = cond.set_condition(
            before,
            type=cond.READY,
            status=ConditionStatus.FALSE,
            reason="InvalidSpec",
            message=policy.message,
            now=now,
            generation=policy.generation,
        )
        if conditions != before:
            result.patch = {
                "conditions": [c.to_api() for c in conditions],
                "observedGeneration": policy.generation,
            }
            result.events.append(Event(ref(policy), "Warning", "InvalidSpec", policy.message))
        return result

    def _ready(self, t: Tick) -> str | None:
        """Ready: valid spec and every Secret a backup needs present (checked now and then).

        Secrets only verification needs are reported on the Verified condition instead, and
        only drills wait for them: Ready then says the truth about whether backups run.
        """
        error, t.verify_error = self.checks.check(t.namespace, t.name, t.generation, t.spec, t.now)
        before = cond.get_condition(t.conditions, cond.READY)
        if error:
            reason, _, message = error.partition(": ")
            t.condition(cond.READY, ConditionStatus.FALSE, reason, message)
            if (
                before is None
                or before.status != ConditionStatus.FALSE
                or before.message != message
            ):
                t.event("Warning", reason, message)
        else:
            t.condition(
                cond.READY,
                ConditionStatus.TRUE,
                "Ready",
                "the policy is valid and every referenced Secret exists",
            )
            if before is not None and before.status == ConditionStatus.FALSE:
                t.event("Normal", "Ready", "every referenced Secret exists now")
        return error

    def _schedule(self, t: Tick, ready_error: str | None) -> None:
        """Fire the due tick (or record why not) and record missed ones."""
        spec = t.spec
        decision = schedule.decide(
            schedule=spec.schedule,
            time_zone=spec.time_zone,
            jitter=schedule.jitter_offset(f"{t.namespace}/{t.name}", spec.jitter),
            starting_deadline=spec.starting_deadline,
            last_tick=t.status.last_schedule_time,
            created_at=t.created_at,
            now=t.now,
            suspended=spec.suspend,
        )
        if decision.last_tick != (t.status.last_schedule_time or t.created_at):
            t.patch["lastScheduleTime"] = iso(decision.last_tick)
        t.patch["nextScheduleTime"] = None if spec.suspend else iso(decision.next_due)
        t.wake.append(decision.next_due)
        for missed in decision.missed:
            why = (
                f"missed by more than startingDeadline {format_duration(spec.starting_deadline)}"
                if missed.reason == schedule.REASON_STARTING_DEADLINE_EXCEEDED
                else "superseded by a newer tick"
            )
            t.record(RunPhase.MISSED, missed.tick, f"{missed.reason}: {why}")
            t.event(
                "Warning",
                "MissedSchedule",
                f"the run due at {iso(missed.tick)} was not started: {why}",
            )
        if decision.missed_overflow:
            t.event(
                "Warning",
                "MissedSchedule",
                f"{decision.missed_overflow} more ticks were missed before those",
            )
        if decision.suspended_skipped:
            t.event(
                "Normal",
                "Suspended",
                f"{decision.suspended_skipped} scheduled run(s) not fired while suspended",
            )
        if decision.fire is None:
            return
        if t.paused:  # LamassuRestore hook
            _skip(t, decision.fire, "Normal", f"RestoreInProgress: {t.paused}", t.paused)
        elif ready_error:
            _skip(t, decision.fire, "Warning", f"NotReady: {ready_error}", ready_error)
        else:
            self._fire(t, decision.fire)

    def _fire(self, t: Tick, tick: datetime) -> None:
        """Start the run of a due tick, unless concurrencyPolicy says otherwise."""
        action = schedule.concurrency_action(
            t.spec.concurrency_policy, [r.name for r in t.runs if r.in_progress]
        )
        if not action.start:
            reason = action.skip_reason or "another run is in progress"
            _skip(t, tick, "Warning", reason, reason)
            return
        for running in action.replace:
            t.result.events.extend(
                self.runs.cancel(
                    t.namespace,
                    running,
                    "Replaced",
                    f"replaced by the run due at {iso(tick)} (concurrencyPolicy Replace)",
                    t.now,
                )
            )
        created = self._create_run(
            t.policy, Trigger.SCHEDULED, t.now, components=[], scheduled=tick
        )
        if created:
            t.result.created.append(created)
            t.event("Normal", "Scheduled", f"started {created} for the run due at {iso(tick)}")

    def _on_demand(self, t: Tick) -> None:
        """Each new value of the run-now annotation starts one run."""
        wanted = t.policy.annotations.get(RUN_NOW_ANNOTATION)
        if not wanted or wanted == t.status.run_now_handled:
            return
        if t.paused:  # LamassuRestore hook: kept, and run once the restore has ended
            return
        # Named after the request, not the clock: if anything later in this tick fails and
        # runNowHandled is not recorded, the next tick finds the run exists instead of starting
        # another one. A request runs exactly once.
        name = run_now_name(t.name, wanted)
        created = self._create_run(t.policy, Trigger.MANUAL, t.now, components=[], name=name)
        if created:
            t.result.created.append(created)
            t.event("Normal", "RunRequested", f"{RUN_NOW_ANNOTATION}={wanted}: started {created}")
        t.patch["runNowHandled"] = wanted

    def _freshness(self, t: Tick) -> None:
        """Stale per component against its recovery-point objective; Events on transitions."""
        freshness = {
            c: stale.ComponentFreshness(last_success(t.runs, c), rpo)
            for c, rpo in rpo_of(t.spec).items()
        } | t.freshness
        report = stale.assess(freshness, t.now, t.created_at)
        components: dict[str, Any] = {}
        for component, detail in report.components.items():
            components[component] = ComponentStatus(
                last_successful_time=freshness[component].last_success,
                recovery_point_objective=format_duration(freshness[component].rpo),
                stale=detail.stale,
            ).to_api()
            metrics.STALE.labels(t.namespace, t.name, component).set(1 if detail.stale else 0)
            if detail.age is not None:
                metrics.AGE.labels(t.namespace, t.name, component).set(detail.age.total_seconds())
        t.patch["components"] = components
        before = cond.get_condition(t.conditions, cond.STALE)
        t.condition(
            cond.STALE,
            ConditionStatus.TRUE if report.stale else ConditionStatus.FALSE,
            report.reason,
            report.message,
        )
        if report.stale and (before is None or before.status != ConditionStatus.TRUE):
            t.event("Warning", "BackupStale", report.message)
        elif not report.stale and before is not None and before.status == ConditionStatus.TRUE:
            t.event("Normal", "BackupFresh", report.message)
        if report.next_check:
            t.wake.append(report.next_check)

    def _last_run(self, t: Tick) -> None:
        """lastSuccessfulTime and LastRunSucceeded from the newest finished run."""
        finished = sorted(
            (r for r in t.runs if r.terminal and r.completed_at),
            key=lambda r: r.completed_at or t.now,
        )
        successes = [r for r in finished if r.phase == BackupPhase.COMPLETED.value]
        if successes:
            t.patch["lastSuccessfulTime"] = iso(successes[-1].completed_at)
        if finished:
            last = finished[-1]
            ok = last.phase == BackupPhase.COMPLETED.value
            detail = f" ({last.reason})" if last.reason and not ok else ""
            t.condition(
                cond.LAST_RUN_SUCCEEDED,
                ConditionStatus.TRUE if ok else ConditionStatus.FALSE,
                last.phase,
                f"{last.name}: {last.phase}{detail}",
            )

    def _recent_runs(self, t: Tick) -> None:
        """Skipped and missed ticks plus the runs themselves, newest first, bounded."""
        entries = t.records + [
            RunRecord(
                name=r.name,
                phase=RunPhase(r.phase)
                if r.phase in RunPhase._value2member_map_
                else RunPhase.PENDING,
                trigger=r.trigger,
                scheduled_time=r.scheduled_time,
                started_at=r.started_at,
                completed_at=r.completed_at,
                location=r.location,
                size_bytes=r.size_bytes,
                reason=r.reason,
            )
            for r in t.runs
        ]
        entries.sort(
            key=lambda e: e.completed_at or e.started_at or e.scheduled_time or t.now, reverse=True
        )
        t.patch["recentRuns"] = [e.to_api() for e in entries[: t.spec.recent_runs_limit]]

    # -- helpers -----------------------------------------------------------------------------

    def invalidate(self, namespace: str, name: str) -> None:
        """Forget cached Secret checks (the policy changed)."""
        self.checks.invalidate(namespace, name)

    def invalidate_secret(self, namespace: str, secret: str) -> list[str]:
        """Forget the cached checks of the policies referring to a Secret; returns their names."""
        return self.checks.invalidate_secret(namespace, secret)

    def _create_run(
        self,
        policy: Identity,
        trigger: Trigger,
        now: datetime,
        *,
        components: list[str],
        scheduled: datetime | None = None,
        name: str | None = None,
    ) -> str | None:
        """A LamassuBackup for the policy; None when one of that name already exists."""
        backup_name = name or layout.backup_name(policy.name, layout.set_time(scheduled or now))
        if name is None and trigger != Trigger.SCHEDULED:
            backup_name = layout.bounded_name(backup_name, trigger.value.lower(), limit=253)
        resource = jobs.backup_resource(
            namespace=policy.namespace,
            policy_name=policy.name,
            name=backup_name,
            trigger=trigger,
            components=components,
            scheduled_time=iso(scheduled) if scheduled else None,
        )
        _, created = self.kube.create_custom("LamassuBackup", policy.namespace, resource)
        return backup_name if created else None

    def on_config_change(self, policy: Policy, now: datetime) -> str | None:
        """Start a config-only run after a selected ConfigMap/Secret changed."""
        return self._create_run(policy, Trigger.ON_CHANGE, now, components=["config"])


def _skip(t: Tick, tick: datetime, type_: str, recorded: str, why: str) -> None:
    """A due tick not fired: recorded in recentRuns, and said in an Event."""
    t.record(RunPhase.SKIPPED, tick, recorded)
    t.event(type_, "SkippedSchedule", f"the run due at {iso(tick)} was skipped: {why}")
