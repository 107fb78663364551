"""The working state of one policy tick, shared by the services that take part in it.

The policy service builds it and each part (schedule, freshness, verification...) writes into
it: conditions, the status patch, Events, when to wake. In its own module so that the
verification service can take part without importing the policy service (or the other way).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from typing import Any

from ..builders.staleness import ComponentFreshness
from ..models.backup import Trigger
from ..models.common import Condition, ConditionStatus
from ..models.policy import BackupPolicySpec, BackupPolicyStatus, RunPhase, RunRecord
from ..models.resources import LamassuBackupPolicy
from . import metrics
from .common import Event, OnObject, RunSummary, ref


@dataclass
class TickResult:
    """What one tick did, and when to look again."""

    patch: dict[str, Any] | None = None
    events: list[Event] = field(default_factory=list)
    sleep: timedelta = timedelta(seconds=60)
    created: list[str] = field(default_factory=list)


@dataclass
class Tick(OnObject):
    """The working state of one tick: inputs, and the status being built."""

    policy: LamassuBackupPolicy
    runs: Sequence[RunSummary]
    now: datetime
    conditions: list[Condition]
    records: list[RunRecord]
    patch: dict[str, Any] = field(default_factory=dict)
    result: TickResult = field(default_factory=TickResult)
    wake: list[datetime] = field(default_factory=list)
    verify_error: str | None = None
    """Why drills cannot run (a Secret only verification needs is missing), or None."""
    paused: str | None = None
    """Why a LamassuRestore pauses this namespace's runs, or None (services/restore_guard)."""
    freshness: dict[str, ComponentFreshness] = field(default_factory=dict)
    """Freshness of parts that are not backup components (WAL shipping), assessed with them."""

    @property
    def spec(self) -> BackupPolicySpec:
        """The policy's spec."""
        return self.policy.spec

    @property
    def status(self) -> BackupPolicyStatus:
        """The policy's status as the tick found it."""
        assert self.policy.status is not None
        return self.policy.status

    @property
    def subject(self) -> LamassuBackupPolicy:
        """The policy."""
        return self.policy

    def condition(self, type_: str, status: ConditionStatus, reason: str, message: str) -> None:
        """Set a condition on the status being built."""
        self.conditions = self.with_condition(self.conditions, type_, status, reason, message)

    def event(self, type_: str, reason: str, message: str) -> None:
        """Queue an Event on the policy."""
        self.result.events.append(Event(ref(self.policy), type_, reason, message))

    def record(self, phase: RunPhase, tick: datetime, reason: str) -> None:
        """Record a skipped or missed tick in recentRuns (it has no LamassuBackup)."""
        self.records.append(
            RunRecord(
                phase=phase, trigger=Trigger.SCHEDULED.value, scheduled_time=tick, reason=reason
            )
        )
        metrics.RUNS.labels(self.namespace, self.name, phase.value).inc()
