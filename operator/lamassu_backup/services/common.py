"""What the services share: events to post, run summaries, time parsing, settings."""

from __future__ import annotations

import os
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any

from ..builders import layout
from ..models.backup import TERMINAL_BACKUP_PHASES, BackupPhase
from ..models.resources import API_VERSION


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
    """Name, namespace and generation of the object a service is working on, read from its
    body in one place (each service's working state derives from this)."""

    body: dict[str, Any]

    @property
    def namespace(self) -> str:
        """The object's namespace."""
        return str(self.body["metadata"]["namespace"])

    @property
    def name(self) -> str:
        """The object's name."""
        return str(self.body["metadata"]["name"])

    @property
    def generation(self) -> int | None:
        """The spec generation, for observedGeneration on conditions."""
        value = self.body["metadata"].get("generation")
        return int(value) if value is not None else None


def ref(body: dict[str, Any]) -> dict[str, Any]:
    """The part of an object an Event needs."""
    meta = body.get("metadata", {})
    return {
        "apiVersion": body.get("apiVersion", API_VERSION),
        "kind": body.get("kind", ""),
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


def set_time_of(body: dict[str, Any]) -> str:
    """The set folder of a run: its cron tick when scheduled, else its creation time, followed
    by a short id of the run (see :func:`layout.set_folder`).

    Derived from the object, never from memory, so an operator restarted mid-run writes to the
    same place; the folder a run started with (``status.setTime``) is kept.
    """
    spec = body.get("spec") or {}
    status = body.get("status") or {}
    meta = body.get("metadata") or {}
    if status.get("setTime"):
        return str(status["setTime"])
    moment = parse_time(spec.get("scheduledTime")) or parse_time(meta.get("creationTimestamp"))
    if moment is None:
        raise ValueError("the backup has neither a scheduled time nor a creation time")
    return layout.set_folder(moment, str(meta.get("uid") or ""))
