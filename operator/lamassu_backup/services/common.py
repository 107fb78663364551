"""What the services share: events to post, run summaries, time parsing, settings."""

from __future__ import annotations

import os
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import TYPE_CHECKING, Any

from ..builders import conditions as cond
from ..builders import layout
from ..models.backup import TERMINAL_BACKUP_PHASES, BackupPhase
from ..models.common import Condition, ConditionStatus
from ..models.resources import API_VERSION, Identity, LamassuBackup


@dataclass(frozen=True)
class Settings:
    """Operator settings, from the environment (the chart sets them)."""

    metrics_port: int = 8080
    backup_resync_seconds: float = 30.0
    """Safety net: running backups are re-checked this often even without Job events."""

    policy_max_sleep_seconds: float = 300.0
    """A policy's loop wakes at least this often; changes wake it sooner (a safety net only)."""

    discovery_interval_seconds: float = 600.0
    secret_check_seconds: float = 300.0
    policy_missing_grace_seconds: float = 600.0
    """A backup whose policy does not exist yet waits this long (GitOps apply order) before failing."""

    @classmethod
    def from_env(cls) -> Settings:
        """Read LAMASSU_* variables; defaults otherwise."""

        def num(name: str, default: float) -> float:
            value = os.environ.get(name)
            return float(value) if value else default

        return cls(
            metrics_port=int(num("LAMASSU_METRICS_PORT", 8080)),
            backup_resync_seconds=num("LAMASSU_BACKUP_RESYNC_SECONDS", 30.0),
            policy_max_sleep_seconds=num("LAMASSU_POLICY_MAX_SLEEP_SECONDS", 300.0),
            discovery_interval_seconds=num("LAMASSU_DISCOVERY_INTERVAL_SECONDS", 600.0),
            secret_check_seconds=num("LAMASSU_SECRET_CHECK_SECONDS", 300.0),
            policy_missing_grace_seconds=num("LAMASSU_POLICY_MISSING_GRACE_SECONDS", 600.0),
        )


@dataclass(frozen=True)
class Event:
    """A Kubernetes Event to post on an object (the handlers post them through kopf)."""

    target: dict[str, Any]
    """apiVersion, kind and metadata (name, namespace, uid) of the object."""

    type: str
    """Normal or Warning."""

    reason: str
    message: str


class OnObject:
    """Name, namespace and generation of the object a service's working state is about, read
    from its typed model in one place (each working state names that object ``subject``, and
    has the ``now`` it works at)."""

    if TYPE_CHECKING:
        now: datetime

    @property
    def subject(self) -> Identity:
        """The object."""
        raise NotImplementedError

    @property
    def namespace(self) -> str:
        """The object's namespace."""
        return self.subject.namespace

    @property
    def name(self) -> str:
        """The object's name."""
        return self.subject.name

    @property
    def generation(self) -> int | None:
        """The spec generation, for observedGeneration on conditions."""
        return self.subject.generation

    @property
    def created_at(self) -> datetime:
        """When the object was created."""
        return parse_time(self.subject.creation_timestamp) or self.now

    def with_condition(
        self,
        conditions: list[Condition],
        type_: str,
        status: ConditionStatus,
        reason: str,
        message: str,
    ) -> list[Condition]:
        """``conditions`` with one set now, for this generation."""
        return cond.set_condition(
            conditions,
            type=type_,
            status=status,
            reason=reason,
            message=message,
            now=self.now,
            generation=self.generation,
        )


def completed(
    conditions: list[Condition],
    *,
    ok: bool,
    reason: str,
    message: str,
    now: datetime,
    generation: int | None,
) -> list[Condition]:
    """A run's conditions with its Completed condition set (True when ``ok``)."""
    return cond.set_condition(
        conditions,
        type=cond.COMPLETED,
        status=ConditionStatus.TRUE if ok else ConditionStatus.FALSE,
        reason=reason,
        message=message,
        now=now,
        generation=generation,
    )


@dataclass
class RunOutcome:
    """What one reconcile of a run (its backup, or its drill) did."""

    patch: dict[str, Any] | None = None
    events: list[Event] = field(default_factory=list)
    finished: bool = False
    """The run (or its drill) reached a terminal phase in this reconcile."""

    succeeded: bool = False
    policy: str = ""
    """The policy of the run, for the loop a finished run wakes."""


def ref(obj: Identity | dict[str, Any]) -> dict[str, Any]:
    """The part of an object an Event needs."""
    if isinstance(obj, Identity):
        return {
            "apiVersion": obj.api_version,
            "kind": obj.kind,
            "metadata": {"name": obj.name, "namespace": obj.namespace, "uid": obj.uid},
        }
    meta = obj.get("metadata", {})
    return {
        "apiVersion": obj.get("apiVersion", API_VERSION),
        "kind": obj.get("kind", ""),
        "metadata": {
            "name": meta.get("name"),
            "namespace": meta.get("namespace"),
            "uid": meta.get("uid"),
        },
    }


def now_utc() -> datetime:
    """The current time (the one place the services read the clock)."""
    return datetime.now(UTC)


def parse_time(value: Any) -> datetime | None:
    """An RFC 3339 time from the API, as an aware datetime."""
    if not value:
        return None
    if isinstance(value, datetime):
        return value if value.tzinfo else value.replace(tzinfo=UTC)
    text = str(value).replace("Z", "+00:00")
    moment = datetime.fromisoformat(text)
    return moment if moment.tzinfo else moment.replace(tzinfo=UTC)


def iso(moment: datetime | None) -> str | None:
    """RFC 3339 with a Z, as the API writes times."""
    if moment is None:
        return None
    return moment.astimezone(UTC).isoformat().replace("+00:00", "Z")


@dataclass(frozen=True)
class RunSummary:
    """What the policy loop needs to know about one LamassuBackup (kept in an index)."""

    name: str
    policy: str
    trigger: str
    phase: str
    created_at: datetime | None
    started_at: datetime | None
    completed_at: datetime | None
    scheduled_time: datetime | None
    location: str | None
    size_bytes: int | None
    reason: str | None
    pinned: bool
    verification_phase: str | None
    verified_at: datetime | None
    components: dict[str, str] = field(default_factory=dict)
    """Component -> phase (Completed, Failed, Running...)."""

    @property
    def terminal(self) -> bool:
        """The run has ended."""
        return self.phase in {p.value for p in TERMINAL_BACKUP_PHASES}

    @property
    def in_progress(self) -> bool:
        """The run is still going."""
        return self.phase in (BackupPhase.PENDING.value, BackupPhase.RUNNING.value)


def summarize(body: dict[str, Any]) -> RunSummary:
    """A RunSummary from a LamassuBackup object."""
    spec = body.get("spec") or {}
    status = body.get("status") or {}
    meta = body.get("metadata") or {}
    verification = status.get("verification") or {}
    components = {
        name: str(c.get("phase", "")) for name, c in (status.get("components") or {}).items()
    }
    reason = None
    if status.get("phase") in (BackupPhase.FAILED.value, BackupPhase.PARTIALLY_FAILED.value):
        for condition in status.get("conditions") or []:
            if condition.get("type") == "Completed" and condition.get("status") != "True":
                reason = condition.get("message") or condition.get("reason")
    return RunSummary(
        name=str(meta.get("name")),
        policy=str((spec.get("policyRef") or {}).get("name", "")),
        trigger=str(spec.get("trigger", "Manual")),
        phase=str(status.get("phase") or BackupPhase.PENDING.value),
        created_at=parse_time(meta.get("creationTimestamp")),
        started_at=parse_time(status.get("startedAt")),
        completed_at=parse_time(status.get("completedAt")),
        scheduled_time=parse_time(spec.get("scheduledTime")),
        location=status.get("location"),
        size_bytes=status.get("sizeBytes"),
        reason=reason,
        pinned=bool(spec.get("pinned")),
        verification_phase=verification.get("phase"),
        verified_at=parse_time(verification.get("verifiedAt")),
        components=components,
    )


def set_time_of(backup: LamassuBackup) -> str:
    """The set folder of a run: its cron tick when scheduled, else its creation time, followed
    by a short id of the run (see :func:`layout.set_folder`).

    Derived from the object, never from memory, so an operator restarted mid-run writes to the
    same place; the folder a run started with (``status.setTime``) is kept.
    """
    if backup.status is not None and backup.status.set_time:
        return backup.status.set_time
    moment = parse_time(backup.spec.scheduled_time) or parse_time(backup.creation_timestamp)
    if moment is None:
        raise ValueError("the backup has neither a scheduled time nor a creation time")
    return layout.set_folder(moment, backup.uid)
