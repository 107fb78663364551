"""One backup run: start its Jobs, follow them, commit the set, tell the truth in status.

All state lives in the API: the run's status and its deterministically named Jobs. Reconciling
twice, or after an operator restart, finds the same Jobs and never creates a second one. A run
never stays Running when its Job is gone, failed or past its deadline.
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any

from ..builders import conditions as cond
from ..builders import jobs, layout, placement
from ..builders.manifest import parse as parse_manifest
from ..builders.manifest import status_record
from ..clients.kube import KubeApi
from ..components import registry
from ..errors import LamassuBackupError
from ..models.backup import (
    TERMINAL_BACKUP_PHASES,
    BackupPhase,
    BackupSpec,
    BackupStatus,
    ComponentResult,
    Trigger,
    VerificationPhase,
)
from ..models.policy import BackupPolicySpec
from ..models.resources import LamassuBackup, LamassuBackupPolicy
from ..models.runner import RunnerResult
from . import metrics, resources, verification
from . import secrets as secret_refs
from .common import (
    Event,
    OnObject,
    RunOutcome,
    Settings,
    completed,
    iso,
    parse_time,
    ref,
    set_time_of,
)
from .job_state import job_state
from .resources import Backup, Invalid

log = logging.getLogger("lamassu_backup")
DEFAULT_RUNNER_ACCOUNT = "lamassu-backup-runner"
_DEADLINE_GRACE = timedelta(minutes=5)
_FAILED_CREATE_GRACE = timedelta(seconds=20)
_DISCOVERED_GRACE = timedelta(minutes=2)
"""How long a Job may go without a Pod before its FailedCreate Events fail the component: the
Job controller retries a refused Pod, and a refusal that persists this long is not transient."""


def _failed(
    current: ComponentResult, reason: str | None, message: str | None, at: datetime
) -> ComponentResult:
    """A component's result, failed."""
    return current.model_copy(
        update={
            "phase": BackupPhase.FAILED,
            "reason": reason,
            "message": message,
            "completed_at": at,
        }
    )


def _status(backup: Backup) -> BackupStatus:
    """A run's status (parsing always sets one)."""
    assert backup.status is not None
    return backup.status


@dataclass
class _Run(OnObject):
    """One reconcile's inputs: the run, its policy, and what it backs up."""

    backup: LamassuBackup
    policy_object: LamassuBackupPolicy
    components: list[str]
    now: datetime

    @property
    def spec(self) -> BackupSpec:
        """The run's spec."""
        return self.backup.spec

    @property
    def status(self) -> BackupStatus:
        """The run's status as this reconcile found it."""
        return _status(self.backup)

    @property
    def policy(self) -> BackupPolicySpec:
        """The policy's spec."""
        return self.policy_object.spec

    @property
    def subject(self) -> LamassuBackup:
        """The run."""
        return self.backup

    def owner(self) -> jobs.Owner:
        """The run as owner of its Jobs."""
        return jobs.Owner(self.backup.api_version, self.backup.kind, self.name, self.backup.uid)


def _still_active(backup: Backup, patch: dict[str, Any]) -> bool:
    """Whether a run goes on after a reconcile that wrote ``patch``: not ended, or its drill
    still running."""
    status = _status(backup)
    phase = patch.get("phase") or status.phase.value
    verification = patch.get("verification") or {}
    drill = verification.get("phase") or (
        status.verification.phase if status.verification else None
    )
    return (
        phase not in {p.value for p in TERMINAL_BACKUP_PHASES} or drill == VerificationPhase.RUNNING
    )


class RunService:
    """Reconciles LamassuBackup objects."""

    def __init__(
        self,
        kube: KubeApi,
        settings: Settings,
        clock: Callable[[], float] = time.monotonic,
        checks: secret_refs.SecretChecks | None = None,
    ) -> None:
        self.kube = kube
        self.settings = settings
        self.clock = clock
        self.checks = checks
        """The policies' Secret checks (shared with the policy loops), or None: check each run."""
        self._locks: dict[tuple[str, str], threading.Lock] = {}
        # Runs not ended yet -> when last reconciled: what :meth:`due` hands the resync. Filled
        # by every reconcile (the start-up listing reconciles every run), so it is a cache.
        self._active: dict[tuple[str, str], float] = {}
        self._guard = threading.Lock()

    def _lock(self, namespace: str, name: str) -> threading.Lock:
        with self._guard:
            return self._locks.setdefault((namespace, name), threading.Lock())

    def forget(self, namespace: str, name: str) -> None:
        """Drop per-run state of a deleted run."""
        with self._guard:
            self._locks.pop((namespace, name), None)
            self._active.pop((namespace, name), None)

    def active(self, namespace: str, name: str) -> bool:
        """Whether a run has not ended (as of its last reconcile here)."""
        with self._guard:
            return (namespace, name) in self._active

    def due(self) -> list[tuple[str, str]]:
        """Runs not ended that nothing reconciled for ``backup_resync_seconds``: the safety net
        for a Job event missed, and for what no event says (a Job that cannot create its Pod,
        a deadline passed)."""
        oldest = self.clock() - self.settings.backup_resync_seconds
        with self._guard:
            return [key for key, at in self._active.items() if at <= oldest]

    def reconcile(self, namespace: str, name: str, now: datetime) -> RunOutcome:
        """Move a run forward as far as it can go now, and record it; idempotent.

        The run is read here, under its lock, and the status patch is written before the lock
        is released: a second reconcile (a Job event racing the create handler) then reads the
        new state instead of starting the same transition again, so each transition happens,
        and is announced, once.
        """
        with self._lock(namespace, name):
            with self._guard:  # a reconcile that raises is retried by the resync
                self._active[(namespace, name)] = self.clock()
            fresh = resources.read_backup(self.kube, namespace, name)
            if fresh is None:
                self.forget(namespace, name)
                return RunOutcome()
            self._label(fresh)
            outcome = self._reconcile(fresh, now)
            if outcome.patch:
                self.kube.patch_status("LamassuBackup", fresh.namespace, fresh.name, outcome.patch)
            if not _still_active(fresh, outcome.patch or {}):
                with self._guard:
                    self._active.pop((namespace, name), None)
            outcome.policy = outcome.policy or resources.policy_of(fresh)
            return outcome

    def _label(self, backup: Backup) -> None:
        """A record written by hand gets its policy's label, by which retention and the audit
        find a policy's records; not having it only means those passes do not see it yet."""
        labels = resources.policy_label(backup)
        if labels is None:
            return
        try:
            self.kube.patch_custom(
                "LamassuBackup", backup.namespace, backup.name, {"metadata": {"labels": labels}}
            )
        except LamassuBackupError as exc:
            log.warning("LamassuBackup %s/%s: %s", backup.namespace, backup.name, exc.message)

    def _reconcile(self, backup: Backup, now: datetime) -> RunOutcome:  # noqa: PLR0911 - one return per refusal reads better than nesting
        if isinstance(backup, Invalid):
            return self._fail(
                backup, now, reason="InvalidSpec", message=f"invalid spec: {backup.detail}"
            )
        status, spec = _status(backup), backup.spec
        if status.phase in TERMINAL_BACKUP_PHASES:
            if (
                status.verification is not None
                and status.verification.phase == VerificationPhase.RUNNING
            ):
                return verification.track(self.kube, backup, now)
            return RunOutcome()
        if spec.trigger == Trigger.DISCOVERED:
            return self._discovered_without_set(backup, now)
        policy = resources.read_policy(self.kube, backup.namespace, spec.policy_ref.name)
        if policy is None:
            return self._policy_missing(backup, now)
        if isinstance(policy, Invalid):
            return self._fail(
                backup,
                now,
                reason="InvalidPolicy",
                message=f"the policy is invalid: {policy.detail}",
            )
        configured = policy.spec.components.names()
        components = [str(c) for c in spec.components] or configured
        unknown = [c for c in components if c not in configured]
        if unknown:
            return self._fail(
                backup,
                now,
                reason="ComponentNotConfigured",
                message=f"spec.components names {', '.join(unknown)}, which policy {spec.policy_ref.name} does not configure",
            )
        run = _Run(backup, policy, components, now)
        return self._start(run) if status.phase == BackupPhase.PENDING else self._track(run)

    def _discovered_without_set(self, backup: LamassuBackup, now: datetime) -> RunOutcome:
        """Discovery writes a record's status right after creating it; one that never got it
        was made by hand (or discovery failed): say so instead of ignoring it forever."""
        created = parse_time(backup.creation_timestamp) or now
        if _status(backup).phase != BackupPhase.PENDING or now - created < _DISCOVERED_GRACE:
            return RunOutcome()
        return self._fail(
            backup,
            now,
            reason="InvalidTrigger",
            message=(
                "spec.trigger Discovered is set by the operator for sets it finds in the bucket, "
                "and no set was recorded for this backup: delete it, and use trigger Manual for "
                "a backup now"
            ),
        )

    def _policy_missing(self, backup: LamassuBackup, now: datetime) -> RunOutcome:
        """Wait a while for the policy (GitOps may apply it after the backup), then fail."""
        status = _status(backup)
        created = parse_time(backup.creation_timestamp) or now
        message = f"LamassuBackupPolicy {backup.namespace}/{backup.spec.policy_ref.name} (spec.policyRef.name) does not exist"
        if now - created >= timedelta(seconds=self.settings.policy_missing_grace_seconds):
            return self._fail(
                backup,
                now,
                reason="PolicyNotFound",
                message=message + ": create it, or delete this backup",
            )
        conditions = completed(
            status.conditions,
            ok=False,
            reason="PolicyNotFound",
            message=message + "; waiting for it",
            now=now,
            generation=backup.generation,
        )
        if conditions != status.conditions:
            return RunOutcome(patch={"conditions": [c.to_api() for c in conditions]})
        return RunOutcome()

    # -- start -------------------------------------------------------------------------------

    def _start(self, run: _Run) -> RunOutcome:
        """Check the Secrets, then create one Job per component (adopting any that exist)."""
        try:
            if not self._secrets_passed(run):
                secret_refs.check(
                    self.kube, run.namespace, secret_refs.references(run.policy, run.components)
                )
            if run.policy.runner.service_account_name == DEFAULT_RUNNER_ACCOUNT:
                self.kube.ensure_runner_account(run.namespace, DEFAULT_RUNNER_ACCOUNT)
        except LamassuBackupError as exc:
            return self._fail(run.backup, run.now, reason=exc.reason, message=exc.message)
        set_time = set_time_of(run.backup)
        prefix = layout.set_prefix(
            run.policy.destination.s3.prefix, run.namespace, run.spec.policy_ref.name, set_time
        )
        results: dict[str, Any] = {}
        events: list[Event] = []
        try:
            for component in run.components:
                placed = self._place(run, component)
                if placed.problem:
                    # Said now, not after a Pod waited out its deadline; the rest still runs.
                    results[component] = ComponentResult(
                        phase=BackupPhase.FAILED,
                        reason=placed.reason,
                        message=placed.problem,
                        completed_at=run.now,
                    ).to_api()
                    events.append(
                        Event(
                            ref(run.backup),
                            "Warning",
                            "ComponentFailed",
                            f"{component}: {placed.problem}",
                        )
                    )
                    continue
                job = jobs.backup_job(
                    run.policy,
                    namespace=run.namespace,
                    policy_name=run.spec.policy_ref.name,
                    backup_name=run.name,
                    set_time=set_time,
                    component=component,
                    owner=run.owner(),
                    node=placed.node,
                )
                self.kube.create_job(job)
                results[component] = ComponentResult(
                    phase=BackupPhase.RUNNING, job_name=job["metadata"]["name"], started_at=run.now
                ).to_api()
        except LamassuBackupError as exc:
            return self._fail(
                run.backup,
                run.now,
                reason=exc.reason,
                message=f"could not start the runner Jobs: {exc.message}",
            )
        conditions = completed(
            run.status.conditions,
            ok=False,
            reason="Running",
            message=f"backing up {', '.join(run.components)}",
            now=run.now,
            generation=run.backup.generation,
        )
        location = layout.Location(run.policy.destination.s3.bucket, prefix).url
        patch = {
            "phase": BackupPhase.RUNNING.value,
            "startedAt": iso(run.now),
            "setTime": set_time,
            "location": location,
            "components": results,
            "conditions": [c.to_api() for c in conditions],
        }
        event = Event(
            ref(run.backup),
            "Normal",
            "Started",
            f"backing up {', '.join(run.components)} to {location}",
        )
        return RunOutcome(patch=patch, events=[event, *events])

    def _secrets_passed(self, run: _Run) -> bool:
        """The policy's loop found every Secret a backup needs a moment ago (and none changed
        since): a scheduled run does not read them all again."""
        generation = run.policy_object.generation
        return self.checks is not None and self.checks.passed(
            run.namespace, run.spec.policy_ref.name, generation, run.now
        )

    def _place(self, run: _Run, component: str) -> placement.Placement:
        """Where a component's Job can mount its claims (or why it cannot run at all); no
        constraint for a component that mounts none."""
        wanted = registry.get(component).claims(run.policy.components)
        if not wanted:
            return placement.Placement()
        try:
            users = self.kube.claim_nodes(run.namespace)
            claims = []
            for spec_field, claim in wanted:
                modes = self.kube.claim_access_modes(run.namespace, claim)
                claims.append(
                    placement.ClaimState(
                        spec_field=spec_field,
                        claim=claim,
                        exists=modes is not None,
                        access_modes=tuple(modes or ()),
                        nodes=frozenset(users.get(claim, ())),
                    )
                )
        except LamassuBackupError as exc:
            return placement.Placement(
                reason=exc.reason, problem=f"could not place the {component} Job: {exc.message}"
            )
        return placement.volume_placement(claims)

    # -- track -------------------------------------------------------------------------------

    def _track(self, run: _Run) -> RunOutcome:
        """Follow the component Jobs; when all ended, commit (or fail when nothing was stored)."""
        results = dict(run.status.components)
        events: list[Event] = []
        changed = False
        deadline = run.policy.runner.active_deadline + _DEADLINE_GRACE
        for component in run.components:
            current = results.get(component) or ComponentResult(
                phase=BackupPhase.RUNNING, job_name=jobs.component_job_name(run.name, component)
            )
            if current.phase in (BackupPhase.COMPLETED, BackupPhase.FAILED):
                continue
            job_name = current.job_name or jobs.component_job_name(run.name, component)
            updated = self._follow(run, job_name, current, deadline)
            if updated != current:
                results[component] = updated
                changed = True
                if updated.phase == BackupPhase.FAILED:
                    events.append(
                        Event(
                            ref(run.backup),
                            "Warning",
                            "ComponentFailed",
                            f"{component}: {updated.message}",
                        )
                    )
        patch: dict[str, Any] = (
            {"components": {k: v.to_api() for k, v in results.items()}} if changed else {}
        )
        ended = (BackupPhase.COMPLETED, BackupPhase.FAILED)
        if any(results.get(c) is None or results[c].phase not in ended for c in run.components):
            return RunOutcome(patch=patch or None, events=events)
        if not any(results[c].phase == BackupPhase.COMPLETED for c in run.components):
            failures = "; ".join(f"{c}: {results[c].message}" for c in run.components)
            outcome = self._fail(
                run.backup,
                run.now,
                reason="AllComponentsFailed",
                message=failures,
                extra=patch,
            )
            outcome.events = events + outcome.events
            return outcome
        return self._commit(run, results, patch, events)

    def _follow(
        self, run: _Run, job_name: str, current: ComponentResult, deadline: timedelta
    ) -> ComponentResult:
        """A component's result from its Job; a vanished or overdue Job is a failure."""
        job = self.kube.get_job(run.namespace, job_name)
        if job is None:
            return _failed(
                current, "JobDeleted", f"the Job {job_name} was deleted before it finished", run.now
            )
        state = job_state(self.kube, job)
        if not state.done:
            refused = self._pods_refused(run, job)
            if refused is not None:
                self.kube.delete_job(run.namespace, job_name)
                message = f"the Job {job_name} cannot create its Pod: {refused}"
                return _failed(current, "FailedCreate", message, run.now)
            begun = state.started_at or run.status.started_at
            if begun is not None and run.now - begun > deadline:
                self.kube.delete_job(run.namespace, job_name)
                message = f"the Job {job_name} ran past spec.runner.activeDeadline and was stopped"
                return _failed(current, "DeadlineExceeded", message, run.now)
            return current
        if state.ok:
            return current.model_copy(
                update={
                    "phase": BackupPhase.COMPLETED,
                    "started_at": state.started_at or current.started_at,
                    "completed_at": state.completed_at or run.now,
                    "reason": None,
                    "message": None,
                }
            )
        return _failed(current, state.reason, state.message, state.completed_at or run.now)

    def _pods_refused(self, run: _Run, job: dict[str, Any]) -> str | None:
        """Why a Job has made no Pod for a while (a missing ServiceAccount or PriorityClass,
        Pod Security admission, a quota): the Job controller says so only in Events, and the Job
        would otherwise wait out its whole deadline looking Running."""
        status = job.get("status") or {}
        if status.get("active") or status.get("succeeded") or status.get("failed"):
            return None
        created = parse_time(job["metadata"].get("creationTimestamp"))
        if created is None or run.now - created < _FAILED_CREATE_GRACE:
            return None
        name = job["metadata"]["name"]
        if self.kube.job_pods(run.namespace, name):
            return None
        refusals = [
            e
            for e in self.kube.warning_events(run.namespace, "Job", name)
            if e.get("reason") == "FailedCreate"
        ]
        if not refusals:
            return None
        return str(refusals[-1].get("message") or "refused by the apiserver")[:600]

    # -- commit ------------------------------------------------------------------------------

    def _commit(
        self,
        run: _Run,
        results: dict[str, ComponentResult],
        patch: dict[str, Any],
        events: list[Event],
    ) -> RunOutcome:
        """Start the commit Job once; when it ends, finish the run from its result."""
        commit_name = jobs.commit_job_name(run.name)
        job = self.kube.get_job(run.namespace, commit_name)
        if job is None:
            manifest_job = jobs.commit_job(
                run.policy,
                namespace=run.namespace,
                policy_name=run.spec.policy_ref.name,
                backup_name=run.name,
                set_time=run.status.set_time or set_time_of(run.backup),
                components=run.components,
                owner=run.owner(),
            )
            try:
                self.kube.create_job(manifest_job)
            except LamassuBackupError as exc:
                return self._fail(
                    run.backup,
                    run.now,
                    reason=exc.reason,
                    message=f"could not start the commit Job: {exc.message}",
                    extra=patch,
                )
            return RunOutcome(patch=patch or None, events=events)
        state = job_state(self.kube, job)
        if not state.done:
            refused = self._pods_refused(run, job)
            if refused is None:
                return RunOutcome(patch=patch or None, events=events)
            self.kube.delete_job(run.namespace, commit_name)
            return self._fail(
                run.backup,
                run.now,
                reason="FailedCreate",
                message=f"the set was not committed: the Job {commit_name} cannot create its Pod: {refused}",
                extra=patch,
            )
        if not state.ok or state.result is None or not state.result.manifest_key:
            message = state.message or "the commit Job left no result"
            return self._fail(
                run.backup,
                run.now,
                reason=state.reason or "CommitFailed",
                message=f"the set was not committed: {message}",
                extra=patch,
            )
        return self._finish(run, results, state.result, patch, events)

    def _recorded(
        self, run: _Run, manifest_key: str, sha256: str
    ) -> tuple[dict[str, Any], list[dict[str, Any]]]:
        """status.manifest and the artifacts with full keys, read from the committed manifest
        (the termination message only has a summary)."""
        store = secret_refs.operator_store(self.kube, run.namespace, run.policy)
        manifest = parse_manifest(store.get_bytes(manifest_key))
        return status_record(manifest, manifest_key, sha256)

    def _finish(
        self,
        run: _Run,
        results: dict[str, ComponentResult],
        result: RunnerResult,
        patch: dict[str, Any],
        events: list[Event],
    ) -> RunOutcome:
        """The run's final status, Events and metrics, from the committed manifest."""
        for component, text in result.components.items():
            if (
                component in results
                and text != "Completed"
                and results[component].phase == BackupPhase.COMPLETED
            ):
                results[component] = results[component].model_copy(
                    update={
                        "phase": BackupPhase.FAILED,
                        "reason": text.removeprefix("Failed: "),
                        "message": "not in the committed set",
                    }
                )
        failed = [c for c in run.components if results[c].phase != BackupPhase.COMPLETED]
        phase = BackupPhase.PARTIALLY_FAILED if failed else BackupPhase.COMPLETED
        duration = (run.now - (run.status.started_at or run.now)).total_seconds()
        assert result.manifest_key is not None
        manifest_ref: dict[str, Any] = {
            "key": result.manifest_key,
            "sha256": result.manifest_sha256 or "",
        }
        artifacts: list[dict[str, Any]] = []
        try:
            manifest_ref, artifacts = self._recorded(
                run, result.manifest_key, manifest_ref["sha256"]
            )
        except (LamassuBackupError, ValueError) as exc:
            events.append(
                Event(
                    ref(run.backup),
                    "Warning",
                    "ManifestUnreadable",
                    f"the set is committed but the operator could not read its manifest: {exc}",
                )
            )
        patch.update(
            {
                "phase": phase.value,
                "completedAt": iso(run.now),
                "durationSeconds": round(duration, 3),
                "duration": cond.humanize_duration(duration),
                "sizeBytes": result.size_bytes,
                "size": cond.humanize_bytes(result.size_bytes),
                "manifest": manifest_ref,
                "components": {k: v.to_api() for k, v in results.items()},
            }
        )
        if artifacts:
            patch["artifacts"] = artifacts
        message = (
            f"{len(artifacts) or len(result.artifacts)} artifacts, {cond.humanize_bytes(result.size_bytes)} "
            f"in {cond.humanize_duration(duration)} at {run.status.location}"
        )
        if failed:
            message = f"failed components: {', '.join(f'{c} ({results[c].message})' for c in failed)}; stored: {message}"
        conditions = completed(
            run.status.conditions,
            ok=not failed,
            reason=phase.value,
            message=message,
            now=run.now,
            generation=run.backup.generation,
        )
        patch["conditions"] = [c.to_api() for c in conditions]
        events.append(
            Event(ref(run.backup), "Warning" if failed else "Normal", phase.value, message)
        )
        events.extend(
            Event(ref(run.backup), "Warning", "RunnerWarning", w) for w in result.warnings
        )
        self._record_metrics(run, results, artifacts, phase, duration)
        return RunOutcome(patch=patch, events=events, finished=True, succeeded=not failed)

    def _record_metrics(
        self,
        run: _Run,
        results: dict[str, ComponentResult],
        artifacts: list[dict[str, Any]],
        phase: BackupPhase,
        duration: float,
    ) -> None:
        policy_name = run.spec.policy_ref.name
        metrics.RUNS.labels(run.namespace, policy_name, phase.value).inc()
        metrics.LAST_DURATION.labels(run.namespace, policy_name).set(duration)
        for component in run.components:
            if results[component].phase == BackupPhase.COMPLETED:
                metrics.LAST_SUCCESS.labels(run.namespace, policy_name, component).set(
                    run.now.timestamp()
                )
                size = sum(
                    int(a.get("sizeBytes", 0)) for a in artifacts if a.get("component") == component
                )
                metrics.LAST_SIZE.labels(run.namespace, policy_name, component).set(size)
        if phase != BackupPhase.COMPLETED:
            metrics.LAST_FAILURE.labels(run.namespace, policy_name).set(run.now.timestamp())

    def _fail(
        self,
        backup: Backup,
        now: datetime,
        *,
        reason: str,
        message: str,
        extra: dict[str, Any] | None = None,
    ) -> RunOutcome:
        """End the run as Failed, saying why (condition, Event, metrics)."""
        status = _status(backup)
        conditions = completed(
            status.conditions,
            ok=False,
            reason=reason,
            message=message,
            now=now,
            generation=backup.generation,
        )
        started = status.started_at or now
        patch = {
            **(extra or {}),
            "phase": BackupPhase.FAILED.value,
            "completedAt": iso(now),
            "durationSeconds": round((now - started).total_seconds(), 3),
            "duration": cond.humanize_duration((now - started).total_seconds()),
            "conditions": [c.to_api() for c in conditions],
        }
        policy_name = resources.policy_of(backup)
        metrics.RUNS.labels(backup.namespace, policy_name, BackupPhase.FAILED.value).inc()
        metrics.LAST_FAILURE.labels(backup.namespace, policy_name).set(now.timestamp())
        return RunOutcome(
            patch=patch,
            events=[Event(ref(backup), "Warning", reason, message)],
            finished=True,
            succeeded=False,
        )

    def cancel(
        self, namespace: str, name: str, reason: str, message: str, now: datetime
    ) -> list[Event]:
        """Stop a running run (concurrencyPolicy Replace): its Jobs are deleted, it is Failed
        (recorded here, under the run's lock, like every other change of a run's status)."""
        with self._lock(namespace, name):
            backup = resources.read_backup(self.kube, namespace, name)
            if backup is None:
                return []
            for job in self.kube.list_jobs(
                namespace, f"{jobs.LABEL_BACKUP}={layout.label_value(name)}"
            ):
                self.kube.delete_job(namespace, job["metadata"]["name"])
            outcome = self._fail(backup, now, reason=reason, message=message)
            if outcome.patch:
                self.kube.patch_status("LamassuBackup", namespace, name, outcome.patch)
            return outcome.events
