"""Which backup sets to keep: restic/K8up grandfather-father-son rules, a maximum age, and hard
protections that no rule can override.

Rules, applied to the sets given (``BackupInfo``):

1. Protected, never deleted whatever the rules say ("retention that can never delete the last
   good backup", Velero #9061):

   * the newest Completed set ("newest completed");
   * the newest ``keepVerified`` verified Completed sets ("verified (newest N)");
   * pinned sets of any phase ("pinned");
   * anything Pending or Running ("in progress"), and any set without ``completed_at``
     ("no completion time"): it cannot be placed in time, and it may still be written to.

2. Completed sets are ordered by ``completed_at`` (then name, so ties are deterministic) and
   selected by the union of the keep rules:

   * ``keepLast N``: the N newest ("last N");
   * ``keepHourly/Daily/Weekly/Monthly/Yearly N``: the newest set in each of the N most recent
     periods *that have a set* ("daily 2026-11-24", "weekly 2026-W48", ...), as restic does:
     a week without backups does not use up a slot. Periods are read on the wall clock of the
     policy's time zone (weeks are ISO weeks, Monday first); a set belongs to the period of its
     ``completed_at``. In the hour repeated when clocks go back both passes are one hourly period.
   * A rule that is None or 0 is off. When every keep rule is off, every Completed set is
     selected ("no keep rule set") and only ``maxAge`` deletes: as restic refuses to forget
     without a policy, a policy of ``maxAge: 90d`` alone must not mean "keep one set".

3. ``maxAge`` deletes Completed sets older than it (strictly) even when a rule selected them;
   protected sets excepted. Completed sets no rule selected are deleted.

4. Failed and PartiallyFailed sets are records to inspect, not restore points: the newest
   ``keepFailed`` unpinned ones are kept ("failed (newest N)"), the rest deleted. They take no
   part in the rules above. A PartiallyFailed set lacks at least one component, and for a PKI
   the database and the CA keys are only useful together: restoring it would bring back
   certificates whose keys are missing (or keys without their records). If it could fill a
   daily or weekly slot it would evict that period's last complete set, so the plan would look
   healthy while the period has nothing restorable.

Idempotence: deleting the planned sets and planning again (same ``now``) deletes nothing more.
A survivor older than ``maxAge`` survived only through a protection, which still holds; a
survivor within ``maxAge`` was selected as the newest of one of the N most recent periods, and
every set that made those periods recent is newer than it, so also within ``maxAge`` and kept.
The property tests check this on random inputs.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from datetime import datetime
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

from ..models.backup import BackupPhase
from ..models.policy import Retention
from ..models.types import format_duration
from .schedule import require_utc

_PHASES = frozenset(p.value for p in BackupPhase)
_IN_PROGRESS = frozenset({BackupPhase.PENDING.value, BackupPhase.RUNNING.value})
_FAILED = frozenset(
    {BackupPhase.FAILED.value, BackupPhase.PARTIALLY_FAILED.value, BackupPhase.LOST.value}
)


@dataclass(frozen=True)
class BackupInfo:
    """What retention needs to know about one backup set."""

    name: str
    phase: str
    """Completed, PartiallyFailed, Failed, Running or Pending."""
    completed_at: datetime | None
    verified: bool = False
    """A test restore of this set succeeded."""
    pinned: bool = False
    size_bytes: int | None = None

    def __post_init__(self) -> None:
        if self.phase not in _PHASES:
            raise ValueError(f"{self.name}: unknown phase {self.phase!r}")
        if self.completed_at is not None:
            object.__setattr__(
                self, "completed_at", require_utc(self.completed_at, f"{self.name} completed_at")
            )


@dataclass(frozen=True)
class RetentionPlan:
    """The outcome of one retention pass; every input set is in exactly one of keep or delete."""

    keep: dict[str, tuple[str, ...]]
    """Name -> why it is kept (every rule that keeps it)."""
    delete: tuple[str, ...]
    """Names to delete, oldest first (a pass cut short removes the least valuable sets first)."""
    deleted_reasons: dict[str, str] = field(default_factory=dict)
    """Name -> why it is deleted."""
    freed_bytes: int = 0
    """Stored bytes the deletions free (sets of unknown size count as 0)."""


_Period = Callable[[datetime], str]
_PERIODS: tuple[tuple[str, _Period], ...] = (
    ("keep_hourly", lambda t: f"hourly {t:%Y-%m-%dT%H}"),
    ("keep_daily", lambda t: f"daily {t:%Y-%m-%d}"),
    ("keep_weekly", lambda t: f"weekly {t.isocalendar().year}-W{t.isocalendar().week:02d}"),
    ("keep_monthly", lambda t: f"monthly {t:%Y-%m}"),
    ("keep_yearly", lambda t: f"yearly {t:%Y}"),
)


def _when(backup: BackupInfo) -> datetime:
    assert backup.completed_at is not None
    return backup.completed_at


def _zone(time_zone: str) -> ZoneInfo:
    try:
        return ZoneInfo(time_zone)
    except (ZoneInfoNotFoundError, ValueError) as exc:
        raise ValueError(f"unknown time zone {time_zone!r}") from exc


def _newest_first(pool: list[BackupInfo]) -> list[BackupInfo]:
    return sorted(pool, key=lambda b: (_when(b), b.name), reverse=True)


def _protections(
    backups: Sequence[BackupInfo], completed: list[BackupInfo], retention: Retention
) -> dict[str, list[str]]:
    """Rule 1: the sets no rule may delete, with why."""
    protected: dict[str, list[str]] = {}
    for b in sorted(backups, key=lambda b: b.name):
        if b.pinned:
            protected.setdefault(b.name, []).append("pinned")
        if b.phase in _IN_PROGRESS:
            protected.setdefault(b.name, []).append("in progress")
        elif b.completed_at is None:
            protected.setdefault(b.name, []).append("no completion time")
    if completed:
        protected.setdefault(completed[0].name, []).append("newest completed")
    for b in [b for b in completed if b.verified][: retention.keep_verified]:
        protected.setdefault(b.name, []).append(f"verified (newest {retention.keep_verified})")
    return protected


def _selections(
    completed: list[BackupInfo], retention: Retention, zone: ZoneInfo
) -> dict[str, list[str]]:
    """Rule 2: the Completed sets the keep rules select, with every rule that selects each."""
    selected: dict[str, list[str]] = {}
    rule_values = [retention.keep_last] + [getattr(retention, attr) for attr, _ in _PERIODS]
    if not any(rule_values):
        return {b.name: ["no keep rule set"] for b in completed}
    if retention.keep_last:
        for b in completed[: retention.keep_last]:
            selected.setdefault(b.name, []).append(f"last {retention.keep_last}")
    for attr, period_of in _PERIODS:
        count: int | None = getattr(retention, attr)
        if not count:
            continue
        newest_of_period: dict[str, BackupInfo] = {}
        for b in completed:  # newest first: the first set seen in a period is its newest
            newest_of_period.setdefault(period_of(_when(b).astimezone(zone)), b)
        for label, b in list(newest_of_period.items())[:count]:
            selected.setdefault(b.name, []).append(label)
    return selected


def select_expired(
    backups: Sequence[BackupInfo], retention: Retention, now: datetime, time_zone: str = "Etc/UTC"
) -> RetentionPlan:
    """Plan which sets to delete; the rules are in the module docstring."""
    now = require_utc(now, "now")
    zone = _zone(time_zone)
    names = [b.name for b in backups]
    if len(set(names)) != len(names):
        duplicates = sorted({n for n in names if names.count(n) > 1})
        raise ValueError(f"duplicate backup name(s): {', '.join(duplicates)}")

    timed = [b for b in backups if b.completed_at is not None]
    completed = _newest_first([b for b in timed if b.phase == BackupPhase.COMPLETED.value])
    failed = _newest_first([b for b in timed if b.phase in _FAILED and not b.pinned])
    protected = _protections(backups, completed, retention)
    selected = _selections(completed, retention, zone)

    keep: dict[str, list[str]] = {name: list(reasons) for name, reasons in protected.items()}
    deleted: dict[str, str] = {}
    max_age = retention.max_age
    too_old = f"older than maxAge {format_duration(max_age)}" if max_age is not None else ""
    for b in completed:
        expired = max_age is not None and now - _when(b) > max_age
        if expired and b.name not in protected:
            deleted[b.name] = too_old
        elif b.name in selected and not expired:
            keep.setdefault(b.name, []).extend(selected[b.name])
        elif b.name not in protected:
            deleted[b.name] = "not selected by any keep rule"
    for index, b in enumerate(failed):
        if index < retention.keep_failed:
            keep.setdefault(b.name, []).append(f"failed (newest {retention.keep_failed})")
        elif b.name not in protected:
            deleted[b.name] = f"failed run beyond keepFailed {retention.keep_failed}"

    by_name = {b.name: b for b in backups}
    order = sorted(deleted, key=lambda n: (_when(by_name[n]), n))
    return RetentionPlan(
        keep={name: tuple(reasons) for name, reasons in sorted(keep.items())},
        delete=tuple(order),
        deleted_reasons={name: deleted[name] for name in order},
        freed_bytes=sum(by_name[n].size_bytes or 0 for n in order),
    )
