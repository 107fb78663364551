"""The WAL shipper's replication slot, once the shipper must go (walArchiving turned off, or the
policy deleted): stop the shipper, wait until its Pod is gone, drop the slot in a runner Job.

A slot nobody reads makes PostgreSQL keep every WAL byte from then on: the server's disk fills
and Lamassu stops. So the shipper is not simply deleted: it is scaled to zero and kept as the
record of which slot to drop (its own configuration names the server, the slot and the
credentials), a Job copied from its Pod drops the slot (the operator never connects to
PostgreSQL), and only then do the Deployment and the Job go. Every step is read back from the
API, so a restarted operator carries on. A failed drop is retried with a growing delay, said
on the ``WalArchiving`` condition and in an Event, until it succeeds or the policy's
``backup.lamassu.io/keep-replication-slot: "true"`` annotation hands the slot to the user.

Not dropped: a slot another (not deleted) policy ships through on the same server, and a slot
that is not physical (the runner checks): neither is the shipper's to remove.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from typing import Any

from pydantic import ValidationError

from ..builders import conditions as cond
from ..builders import wal_jobs
from ..builders.wal_jobs import WAL_ARCHIVING, SlotTarget
from ..clients.kube import KubeApi
from ..errors import LamassuBackupError
from ..models.common import Condition, ConditionStatus
from .common import Event, ref
from .job_state import JobState, job_state

log = logging.getLogger("lamassu_backup")
POLL = timedelta(seconds=3)
"""How soon to look again while the shipper stops or a drop Job runs."""

FAILED = "SlotDropFailed"


@dataclass(frozen=True)
class Subject:
    """The policy whose slot is dropped."""

    namespace: str
    name: str
    annotations: dict[str, str]
    target: dict[str, Any]
    """What its Events are posted on."""

    @classmethod
    def of(cls, body: dict[str, Any]) -> Subject:
        """From a policy body (or anything with apiVersion, kind and metadata)."""
        meta = body.get("metadata") or {}
        return cls(
            str(meta.get("namespace") or ""),
            str(meta.get("name") or ""),
            dict(meta.get("annotations") or {}),
            ref(body),
        )


@dataclass
class SlotStep:
    """Where the slot's drop is after one step."""

    done: bool
    status: ConditionStatus = ConditionStatus.UNKNOWN
    reason: str = ""
    message: str = ""
    failed: bool = False
    wake: datetime | None = None
    events: list[Event] = field(default_factory=list)

    def delay(self, now: datetime, most: float) -> float:
        """Seconds until the next look, at least one, at most ``most``."""
        wake = self.wake or now + POLL
        return max(1.0, min((wake - now).total_seconds(), most))


def _drop_sql(target: SlotTarget | None) -> str:
    slot = target.slot if target else "<slotName>"
    return f"SELECT pg_drop_replication_slot('{slot}');"


def _sharing(kube: KubeApi, subject: Subject, target: SlotTarget) -> str | None:
    """Another policy shipping WAL through the same slot of the same server, as ns/name."""
    try:
        policies = kube.list_custom_all("LamassuBackupPolicy")
    except LamassuBackupError:  # no cluster-wide read (a namespaced install): its namespace
        policies = kube.list_custom("LamassuBackupPolicy", subject.namespace)
    for policy in policies:
        meta = policy.get("metadata") or {}
        if (meta.get("namespace"), meta.get("name")) == (subject.namespace, subject.name):
            continue
        if wal_jobs.shares_slot(policy, target):
            return f"{meta.get('namespace')}/{meta.get('name')}"
    return None


def clear_drops(kube: KubeApi, namespace: str, policy_name: str) -> str | None:
    """Before a shipper starts (again): a slot-drop Job still running would drop the new
    shipper's slot, so it is waited for (its name is returned); ended ones are deleted."""
    tries = kube.list_jobs(namespace, wal_jobs.selector(policy_name, wal_jobs.ROLE_DROP_SLOT))
    running = [str(j["metadata"]["name"]) for j in tries if not job_state(kube, j).done]
    if running:
        return running[0]
    for job in tries:
        kube.delete_job(namespace, job["metadata"]["name"])
    return None


@dataclass
class _View:
    """What the API shows of one policy's shipper and slot-drop Jobs, and the decision."""

    kube: KubeApi
    subject: Subject
    now: datetime
    shipper: dict[str, Any] | None
    tries: list[dict[str, Any]]
    newest: dict[str, Any] | None
    state: JobState | None
    target: SlotTarget | None
    decision: wal_jobs.SlotDropDecision
    step: SlotStep

    @property
    def what(self) -> str:
        if self.target is not None:
            return self.target.describe()
        return f"the replication slot of {wal_jobs.shipper_name(self.subject.name)}"

    def event(self, type_: str, reason: str, message: str) -> None:
        self.step.events.append(Event(self.subject.target, type_, reason, message))
        if type_ == "Warning":
            log.warning("policy %s/%s: %s", self.subject.namespace, self.subject.name, message)

    def delete_tries(self) -> None:
        for job in self.tries:
            self.kube.delete_job(self.subject.namespace, job["metadata"]["name"])

    def finished(self) -> SlotStep:
        """The shipper first, then the drop Jobs: a Job left alone still says which slot."""
        if self.shipper is not None:
            self.kube.delete_deployment(
                self.subject.namespace, wal_jobs.shipper_name(self.subject.name)
            )
        self.delete_tries()
        self.step.done, self.step.wake = True, None
        return self.step

    def waiting(self, reason: str, message: str) -> SlotStep:
        self.step.reason, self.step.message = reason, message
        return self.step


def _look(kube: KubeApi, subject: Subject, now: datetime) -> _View:
    ns, name = subject.namespace, subject.name
    shipper = kube.get_deployment(ns, wal_jobs.shipper_name(name))
    tries = kube.list_jobs(ns, wal_jobs.selector(name, wal_jobs.ROLE_DROP_SLOT))
    newest = max(tries, key=wal_jobs.drop_attempt) if tries else None
    source = shipper or newest
    replicas = None
    if shipper is not None:
        value = (shipper.get("spec") or {}).get("replicas")
        replicas = 1 if value is None else int(value)
    pods = 0
    if source is not None and not replicas:
        pods = len(kube.pods(ns, wal_jobs.selector(name, wal_jobs.ROLE_SHIPPER)))
    state = job_state(kube, newest) if newest is not None else None
    drop = None
    if newest is not None and state is not None:
        drop = wal_jobs.DropTry(
            wal_jobs.drop_attempt(newest), state.done, state.ok, state.completed_at
        )
    decision = wal_jobs.slot_drop_decision(
        keep=wal_jobs.keep_slot(subject.annotations),
        replicas=replicas,
        shipper_pods=pods,
        drop=drop,
        now=now,
    )
    return _View(
        kube,
        subject,
        now,
        shipper,
        tries,
        newest,
        state,
        wal_jobs.slot_target(source) if source is not None else None,
        decision,
        SlotStep(done=False, wake=now + POLL),
    )


def _start(v: _View) -> SlotStep:
    """A new try, unless the slot is not ours to drop or no Job can run."""
    source = v.shipper or v.newest
    assert source is not None
    if v.target is None:
        v.event(
            "Warning",
            "WalSlotLeft",
            f"{v.what} cannot be dropped: the shipper carries no WAL configuration; drop the "
            "slot on the server if it is left there",
        )
        return v.finished()
    other = _sharing(v.kube, v.subject, v.target)
    if other is not None:
        v.event(
            "Normal", "WalSlotKept", f"{v.what} is kept: policy {other} ships WAL through it too"
        )
        return v.finished()
    if v.kube.namespace_terminating(v.subject.namespace):
        v.event(
            "Warning",
            "WalSlotLeft",
            f"the namespace {v.subject.namespace} is being deleted, so no Job can drop {v.what}: "
            f"drop it on the server ({_drop_sql(v.target)}), or the server keeps WAL for it and "
            "its disk fills",
        )
        return v.finished()
    v.delete_tries()
    attempt = v.decision.attempt
    job = wal_jobs.drop_slot_job(source, policy_name=v.subject.name, attempt=attempt)
    v.kube.create_job(job)
    return v.waiting(
        "DroppingSlot", f"dropping {v.what} (Job {job['metadata']['name']}, try {attempt})"
    )


def _finish(v: _View) -> SlotStep:
    """The drop Job succeeded: say what it found, remove the shipper and the Jobs."""
    result = v.state.result if v.state is not None else None
    outcome = str((result.evidence if result else {}).get("outcome") or "")
    if outcome == "NotPhysical":
        v.event(
            "Warning",
            "WalSlotKept",
            f"{v.what} is not a physical slot, so not the shipper's: it was left alone",
        )
    elif outcome == "Absent":
        v.event("Normal", "WalSlotDropped", f"{v.what} was already gone from the server")
    else:
        v.event(
            "Normal",
            "WalSlotDropped",
            f"{v.what} was dropped: the server no longer keeps WAL for the shipper",
        )
    return v.finished()


def _failed(v: _View, before: Condition | None) -> SlotStep:
    """The try failed: the condition says why and the way out; a Warning once per try."""
    retry_at = v.decision.retry_at
    assert v.newest is not None
    assert v.state is not None
    assert retry_at is not None
    step = v.step
    step.status, step.reason, step.failed, step.wake = ConditionStatus.FALSE, FAILED, True, retry_at
    step.message = (
        f"{v.what} could not be dropped (Job {v.newest['metadata']['name']}, try "
        f"{v.decision.attempt}: {v.state.message or v.state.reason}); the server keeps WAL for "
        "it and its disk fills. Next try at "
        f"{retry_at.isoformat(timespec='seconds').replace('+00:00', 'Z')}. Fix: let the "
        "namespace reach the server with a role that has REPLICATION "
        "(walArchiving.replicationCredentialsSecret, else credentialsSecret); or drop the slot "
        f"by hand ({_drop_sql(v.target)}) and annotate the policy {wal_jobs.KEEP_SLOT}=true"
    )
    if before is None or before.message != step.message:
        v.event("Warning", "WalSlotDropFailed", step.message)
    return step


def advance(kube: KubeApi, subject: Subject, before: Condition | None, now: datetime) -> SlotStep:
    """One step towards the slot's drop; ``before`` is the ``WalArchiving`` condition as it was
    (a failure's Warning is posted once per try, when the condition's message changes)."""
    v = _look(kube, subject, now)
    action = v.decision.action
    if action in ("none", "keep"):
        if action == "keep":
            v.event(
                "Warning",
                "WalSlotKept",
                f"{v.what} is left on the server, as the annotation {wal_jobs.KEEP_SLOT} asks: "
                f"the server keeps WAL for it until it is dropped there ({_drop_sql(v.target)})",
            )
        return v.finished()
    if action == "scale-down":
        assert v.shipper is not None
        v.delete_tries()  # a try made while a shipper ran again proves nothing
        kube.put_deployment(wal_jobs.scaled_down(v.shipper))
    if action in ("scale-down", "wait-shipper"):
        name = wal_jobs.shipper_name(subject.name)
        return v.waiting(
            "StoppingShipper", f"the WAL shipper {name} is stopping; then {v.what} is dropped"
        )
    if action in ("start", "retry"):
        return _start(v)
    if action == "finish":
        return _finish(v)
    if action == "wait-drop":
        assert v.newest is not None
        job = v.newest["metadata"]["name"]
        return v.waiting("DroppingSlot", f"dropping {v.what} (Job {job}, try {v.decision.attempt})")
    return _failed(v, before)


def _vanished(body: dict[str, Any]) -> Event:
    """The policy shipped WAL but its shipper is gone with nothing dropped (the namespace is being
    deleted: its controller removes the Deployment and the Secrets at once): say what is left."""
    target = wal_jobs.spec_slot(body.get("spec") or {})
    what = target.describe() if target else "its replication slot"
    message = (
        f"the WAL shipper of this policy was removed before {what} could be dropped (is the "
        f"namespace being deleted?): drop it on the server ({_drop_sql(target)}), or the server "
        "keeps WAL for it and its disk fills"
    )
    log.warning("policy %s: %s", (body.get("metadata") or {}).get("name"), message)
    return Event(ref(body), "Warning", "WalSlotLeft", message)


def finalize(kube: KubeApi, namespace: str, name: str, now: datetime) -> SlotStep:
    """One step of a deleted policy's end: the same drop, read from the policy as it is now (so
    the keep annotation counts at once), the condition written on its status."""
    try:
        body = kube.get_custom("LamassuBackupPolicy", namespace, name)
        if body is None:
            return SlotStep(done=True)
        status = body.get("status") or {}
        try:
            conditions = [Condition.model_validate(c) for c in status.get("conditions") or []]
        except ValidationError:  # written by hand: the drop must not wait on it
            conditions = []
        before = cond.get_condition(conditions, WAL_ARCHIVING)
        step = advance(kube, Subject.of(body), before, now)
        patch: dict[str, Any] = {}
        if step.done:
            if not step.events and (status.get("pointInTimeRecovery") or before is not None):
                step.events.append(_vanished(body))
            after = [c for c in conditions if c.type != WAL_ARCHIVING]
            if status.get("pointInTimeRecovery"):
                patch["pointInTimeRecovery"] = None
        else:
            after = cond.set_condition(
                conditions,
                type=WAL_ARCHIVING,
                status=step.status,
                reason=step.reason,
                message=step.message,
                now=now,
                generation=(body.get("metadata") or {}).get("generation"),
            )
        if after != conditions:
            patch["conditions"] = [c.to_api() for c in after]
        if patch:
            kube.patch_status("LamassuBackupPolicy", namespace, name, patch)
    except LamassuBackupError as exc:  # the API refused: said, and retried
        return SlotStep(
            done=False, failed=True, reason=exc.reason, message=exc.message, wake=now + POLL * 10
        )
    return step
