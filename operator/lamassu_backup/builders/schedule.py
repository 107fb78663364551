"""When a policy runs: cron ticks in the policy's time zone, jitter, missed ticks, concurrency.

Everything here is pure: ``now`` is passed in, jitter comes from a hash of the policy's identity,
so the same inputs always give the same decision and every rule can be table-tested.

Time zones and daylight-saving time
-----------------------------------
The cron expression is read on the wall clock of ``time_zone`` and every tick is returned as an
aware UTC datetime. croniter parses the expression and decides which *days* match (day-of-month,
month, day-of-week with Vixie cron's OR rule, ``L``, ``#``, ``W``); the minutes of a matching day
are the product of the expanded minute and hour fields. Each wall-clock time is then mapped to
real time with these rules (close to what ISC/Vixie cron does):

* A schedule whose hour field matches every hour (``*/5 * * * *``, ``@hourly``) is a *rate*: it
  follows real time. In the hour skipped in spring its times simply do not exist (the ticks after
  the jump carry on); in the hour repeated in autumn it runs in both passes.
* Any other schedule names *times of day* (``30 2 * * *``, ``0 */6 * * *``): each matching time
  runs once. A time inside the skipped interval runs at the end of the skip, the first instant
  after the clocks jump (once per skip, and not at all when the schedule has a tick at that instant
  anyway); a time inside the repeated interval runs at its first occurrence only.

So a Europe/Madrid ``30 2 * * *`` runs at 03:00 CEST (01:00Z) on the spring-forward Sunday, at
02:30 CEST (00:30Z, not again at 02:30 CET) on the fall-back Sunday, and at 02:30 local every
other day: once per day, never zero times, never twice. A backup that skips a day, or runs twice
within an hour, for a clock change is the surprise this choice avoids.

Counting ticks cheaply
----------------------
Ticks are never iterated one by one over a long interval. :func:`ticks_between` walks the
*matching days* of the interval (croniter jumps straight to the next matching day); on a day with
a constant UTC offset the ticks are ``midnight - offset + minute`` for a sorted minute table, so
the count inside the interval is two ``bisect`` calls. Only the ``limit`` ticks returned are built
as datetimes, plus every minute of the at most one or two days with a clock change. A 1-minute
schedule after a week-long outage costs about nine day steps; ten years, a few thousand.
"""

from __future__ import annotations

import hashlib
from bisect import bisect_right
from collections.abc import Iterator
from dataclasses import dataclass, field
from datetime import UTC, date, datetime, time, timedelta
from functools import lru_cache
from typing import Any
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

from croniter import CroniterBadDateError, croniter

from ..models.policy import ConcurrencyPolicy
from ..models.types import validate_cron

REASON_STARTING_DEADLINE_EXCEEDED = "StartingDeadlineExceeded"
"""A tick whose start window (due time + startingDeadline) had passed when the operator looked."""

REASON_SUPERSEDED = "Superseded"
"""A due tick still inside its window, passed over because a newer tick fires instead."""

_DAY = timedelta(days=1)
_SECOND = timedelta(seconds=1)
_MICROSECOND = timedelta(microseconds=1)
_MINUTE_US = 60_000_000
_FAR_FUTURE = datetime.max.replace(tzinfo=UTC) - _DAY * 2
# 'R' (random) and 'H' (hashed) croniter extensions would make ticks non-deterministic or
# dependent on a hash id croniter keeps to itself; jitter is the supported way to spread load.


def require_utc(value: datetime, what: str) -> datetime:
    """Return ``value`` in UTC; a naive datetime is refused, its meaning would be a guess."""
    if value.tzinfo is None or value.utcoffset() is None:
        raise ValueError(f"{what} must be timezone-aware, got naive {value.isoformat()}")
    return value.astimezone(UTC)


def _offset(wall: datetime, zone: ZoneInfo, fold: int) -> timedelta:
    offset = wall.replace(tzinfo=zone, fold=fold).utcoffset()
    assert offset is not None  # a ZoneInfo always knows its offset
    return offset


def _offset_at(instant: datetime, zone: ZoneInfo) -> timedelta:
    offset = instant.astimezone(zone).utcoffset()
    assert offset is not None
    return offset


@dataclass(frozen=True)
class _Cron:
    """A parsed schedule in one time zone; see the module docstring for the rules."""

    expr: str
    zone: ZoneInfo
    minutes: tuple[int, ...]
    """Minute-of-day of every tick on a matching day, ascending."""
    minutes_us: tuple[int, ...]
    every_hour: bool
    every_day: bool

    # -- days -------------------------------------------------------------------------------

    def _next_match(self, wall: datetime, it: Any = None) -> datetime | None:
        """The first matching wall-clock time at or after ``wall`` (whole seconds).

        ``it`` is a croniter to reuse: building one costs five times a step, and a croniter is
        mutable, so each caller owns its own.
        """
        it = croniter(self.expr) if it is None else it
        it.set_current(wall - _SECOND, force=True)
        try:
            found: datetime = it.get_next(datetime)
        except CroniterBadDateError:
            return None
        return found

    def _prev_match(self, wall: datetime, it: Any = None) -> datetime | None:
        """The last matching wall-clock time strictly before ``wall``."""
        it = croniter(self.expr) if it is None else it
        it.set_current(wall, force=True)
        try:
            found: datetime = it.get_prev(datetime)
        except CroniterBadDateError:
            return None
        return found

    def matching_days(
        self, first: date, last: date | None, *, reverse: bool = False
    ) -> Iterator[date]:
        """Local dates in ``[first, last]`` on which the schedule has ticks.

        Ascending, or descending from ``last`` with ``reverse``. croniter jumps over the days that
        do not match, so a monthly schedule costs one step per month.
        """
        it = croniter(self.expr)
        if reverse:
            assert last is not None
            day: date | None = last
            while day is not None and day >= first:
                if not self.every_day:
                    found = self._prev_match(datetime.combine(day + _DAY, time()), it)
                    day = found.date() if found is not None else None
                    if day is None or day < first:
                        return
                yield day
                day = day - _DAY
            return
        day = first
        while day is not None and (last is None or day <= last):
            if not self.every_day:
                found = self._next_match(datetime.combine(day, time()), it)
                day = found.date() if found is not None else None
                if day is None or (last is not None and day > last):
                    return
            yield day
            day = day + _DAY

    # -- ticks of one day -------------------------------------------------------------------

    def _constant_offset(self, midnight: datetime) -> timedelta | None:
        """The UTC offset of the whole local day, or None on a day the clocks change."""
        nxt = midnight + _DAY
        samples = {
            _offset(midnight, self.zone, 0),
            _offset(midnight, self.zone, 1),
            _offset(midnight + _DAY / 2, self.zone, 0),
            _offset(nxt, self.zone, 0),
            _offset(nxt, self.zone, 1),
        }
        return samples.pop() if len(samples) == 1 else None

    def _transition(self, before: datetime, after: datetime) -> datetime:
        """The instant in ``(before, after]`` at which the offset changes (binary search)."""
        target = _offset_at(after, self.zone)
        lo, hi = 0, int((after - before) // _SECOND)
        while hi - lo > 1:
            mid = (lo + hi) // 2
            if _offset_at(before + mid * _SECOND, self.zone) == target:
                hi = mid
            else:
                lo = mid
        return before + hi * _SECOND

    def _instants(self, wall: datetime) -> list[datetime]:
        """The real instants of one matching wall-clock time (0, 1 or 2 of them)."""
        first = wall.replace(tzinfo=self.zone, fold=0).astimezone(UTC)
        second = wall.replace(tzinfo=self.zone, fold=1).astimezone(UTC)
        if first == second:
            return [first]
        if first < second:  # the repeated interval: fold=0 is the first pass
            return [first, second] if self.every_hour else [first]
        if self.every_hour:  # the skipped interval: a rate skips it
            return []
        # A time of day in the skipped interval runs once, at the jump: only for the first
        # matching time of the skip, and only when there is no tick at the jump itself.
        jump = self._transition(second, first)
        skip_start = (jump + _offset_at(second, self.zone)).replace(tzinfo=None)
        skip_end = (jump + _offset_at(jump, self.zone)).replace(tzinfo=None)
        if self._next_match(skip_start) != wall or self._next_match(skip_end) == skip_end:
            return []
        return [jump]

    def day_ticks(
        self, day: date, lo: datetime, hi: datetime, limit: int, *, reverse: bool = False
    ) -> tuple[list[datetime], int]:
        """Ticks of the local date ``day`` inside ``(lo, hi]``.

        Returns the first ``limit`` of them (the last ones with ``reverse``), ascending, and how
        many there are in all. On a day with one UTC offset this is arithmetic on the minute
        table; only a day with a clock change maps each minute through the zone.
        """
        midnight = datetime.combine(day, time())
        offset = self._constant_offset(midnight)
        if offset is not None:
            base = (midnight - offset).replace(tzinfo=UTC)
            i = bisect_right(self.minutes_us, (lo - base) // _MICROSECOND)
            j = bisect_right(self.minutes_us, (hi - base) // _MICROSECOND)
            count = max(0, j - i)
            take = range(max(i, j - limit), j) if reverse else range(i, min(j, i + limit))
            return [base + timedelta(minutes=self.minutes[x]) for x in take], count
        ticks = sorted(
            {
                instant
                for minute in self.minutes
                for instant in self._instants(midnight + timedelta(minutes=minute))
                if lo < instant <= hi
            }
        )
        picked = (ticks[len(ticks) - limit :] if limit else []) if reverse else ticks[:limit]
        return picked, len(ticks)


@lru_cache(maxsize=512)
def _parse(schedule: str, time_zone: str) -> _Cron:
    expr = validate_cron(schedule)  # refuses random/hashed fields and schedules that never fire
    try:
        zone = ZoneInfo(time_zone)
    except (ZoneInfoNotFoundError, ValueError) as exc:
        raise ValueError(f"unknown time zone {time_zone!r}") from exc
    fields = croniter(expr).expanded
    minute_field = range(60) if fields[0] == ["*"] else sorted({int(m) for m in fields[0]})
    hour_field = range(24) if fields[1] == ["*"] else sorted({int(h) for h in fields[1]})
    minutes = tuple(h * 60 + m for h in hour_field for m in minute_field)
    return _Cron(
        expr=expr,
        zone=zone,
        minutes=minutes,
        minutes_us=tuple(m * _MINUTE_US for m in minutes),
        every_hour=len(hour_field) == 24,
        every_day=all(f == ["*"] for f in fields[2:5]),
    )


def _wall_date(instant: datetime, zone: ZoneInfo) -> date:
    return instant.astimezone(zone).date()


def next_tick(schedule: str, time_zone: str, after: datetime) -> datetime:
    """The first tick strictly after ``after``, in UTC (cron read in ``time_zone``).

    Raises ValueError for a schedule that never fires again (``0 0 30 2 *``).
    """
    cron = _parse(schedule, time_zone)
    after = require_utc(after, "after")
    best: datetime | None = None
    settled: date | None = None
    for day in cron.matching_days(_wall_date(after, cron.zone) - _DAY, None):
        # a tick of the next local day can precede one of this day only around a clock change
        if settled is not None and day > settled + _DAY:
            break
        got, _ = cron.day_ticks(day, after, _FAR_FUTURE, 1)
        if got:
            best = got[0] if best is None else min(best, got[0])
            if settled is None:
                settled = day
    if best is None:
        raise ValueError(f"cron schedule {schedule!r} has no tick after {after.isoformat()}")
    return best


def ticks_between(
    schedule: str,
    time_zone: str,
    start_exclusive: datetime,
    end_inclusive: datetime,
    limit: int,
    *,
    from_end: bool = False,
) -> tuple[list[datetime], int]:
    """Ticks in ``(start_exclusive, end_inclusive]``: at most ``limit`` of them, ascending, and
    how many more there are.

    The oldest ``limit`` ticks, or the newest with ``from_end`` (the scheduler wants the newest:
    the one that fires and the latest missed ones). The count is exact and cheap: see the module
    docstring.
    """
    if limit < 0:
        raise ValueError("limit cannot be negative")
    cron = _parse(schedule, time_zone)
    start = require_utc(start_exclusive, "start_exclusive")
    end = require_utc(end_inclusive, "end_inclusive")
    if end <= start:
        return [], 0
    ticks: list[datetime] = []
    total = 0
    settled: date | None = None
    first, last = _wall_date(start, cron.zone) - _DAY, _wall_date(end, cron.zone) + _DAY
    for day in cron.matching_days(first, last, reverse=from_end):
        if settled is None or abs(day - settled) <= _DAY:
            got, count = cron.day_ticks(day, start, end, limit, reverse=from_end)
            ticks.extend(got)
            if settled is None and len(ticks) >= limit:
                settled = day
        else:
            _, count = cron.day_ticks(day, start, end, 0)
        total += count
    ticks.sort()
    kept = (ticks[len(ticks) - limit :] if limit else []) if from_end else ticks[:limit]
    return kept, total - len(kept)


def jitter_offset(identity: str, max_jitter: timedelta) -> timedelta:
    """A fixed delay in ``[0, max_jitter)``, whole seconds, derived from the policy's identity.

    Like K8up's ``@daily-random`` it spreads policies that share a schedule, but seeded from
    ``namespace/name`` (SHA-256, reduced modulo the span: the bias of a 256-bit hash is nil), so
    the delay survives operator restarts and ``status.nextScheduleTime`` is stable.
    """
    if max_jitter < timedelta(0):
        raise ValueError("max_jitter cannot be negative")
    span = -((-max_jitter) // _SECOND)  # whole seconds below max_jitter: ceil
    if span <= 0:
        return timedelta(0)
    digest = int.from_bytes(hashlib.sha256(identity.encode()).digest(), "big")
    return timedelta(seconds=digest % span)


@dataclass(frozen=True)
class MissedTick:
    """A cron tick that did not run, and why."""

    tick: datetime
    reason: str
    """StartingDeadlineExceeded or Superseded."""


@dataclass(frozen=True)
class ScheduleDecision:
    """What the scheduler should do now, and what to persist."""

    fire: datetime | None
    """The tick whose run should start now, if any."""

    missed: list[MissedTick]
    """The newest missed ticks, oldest first, at most ``max_missed_records``."""

    missed_overflow: int
    """Missed ticks older than those listed (counted, not listed)."""

    last_tick: datetime
    """Watermark to persist: the newest tick acted on (fired, missed or passed while suspended);
    the baseline unchanged when nothing was acted on.
    """

    next_due: datetime
    """When the next tick is due, jitter included: status.nextScheduleTime and the wake-up."""

    requeue_after: timedelta
    """How long to sleep once this decision has been acted on."""

    suspended_skipped: int = 0
    """Ticks passed over while suspended (for the resume event); never fired later."""


def decide(
    *,
    schedule: str,
    time_zone: str,
    jitter: timedelta,
    starting_deadline: timedelta,
    last_tick: datetime | None,
    created_at: datetime,
    now: datetime,
    suspended: bool,
    max_missed_records: int = 10,
) -> ScheduleDecision:
    """Decide whether a scheduled run starts now and which ticks were missed.

    ``jitter`` is the policy's offset (:func:`jitter_offset`), not the maximum. A tick ``t`` is
    due at ``t + jitter`` and may start while ``now <= t + jitter + starting_deadline``. Only the
    newest due tick fires: a backup taken now supersedes the older ones, and firing a burst of
    catch-up runs after an outage is what piles runs up (K8up #1099, Velero #5989). Every tick not
    fired is recorded with a reason. Ticks at or before the baseline (``last_tick``, or
    ``created_at`` for a new policy) are never reconsidered, so persisting ``last_tick`` makes the
    decision idempotent. While suspended the watermark moves to the newest tick so far, so
    resuming never fires old runs (Velero #6517).
    """
    if jitter < timedelta(0) or starting_deadline < timedelta(0):
        raise ValueError("jitter and starting_deadline cannot be negative")
    if max_missed_records < 0:
        raise ValueError("max_missed_records cannot be negative")
    now = require_utc(now, "now")
    created = require_utc(created_at, "created_at")
    baseline = require_utc(last_tick, "last_tick") if last_tick is not None else created

    fire: datetime | None = None
    missed: list[MissedTick] = []
    overflow = 0
    skipped = 0
    watermark = baseline
    if suspended:
        newest, older = ticks_between(schedule, time_zone, baseline, now, 1, from_end=True)
        if newest:
            watermark, skipped = newest[-1], older + 1
    else:
        recent, overflow = ticks_between(
            schedule, time_zone, baseline, now - jitter, max_missed_records + 1, from_end=True
        )
        if recent:
            watermark = recent[-1]
            window_start = now - jitter - starting_deadline  # ticks at or after can still start
            if watermark >= window_start:
                fire = watermark
                recent = recent[:-1]
            missed = [
                MissedTick(
                    t,
                    REASON_SUPERSEDED if t >= window_start else REASON_STARTING_DEADLINE_EXCEEDED,
                )
                for t in recent
            ]
            excess = max(0, len(missed) - max_missed_records)
            missed, overflow = missed[excess:], overflow + excess
    next_due = next_tick(schedule, time_zone, watermark) + jitter
    return ScheduleDecision(
        fire=fire,
        missed=missed,
        missed_overflow=overflow,
        last_tick=watermark,
        next_due=next_due,
        requeue_after=max(next_due - now, timedelta(0)),
        suspended_skipped=skipped,
    )


@dataclass(frozen=True)
class ConcurrencyAction:
    """What to do with a due run given the runs still going."""

    start: bool
    skip_reason: str | None = None
    """Why the run is skipped (names the running runs); None when it starts."""

    replace: list[str] = field(default_factory=list)
    """Running runs to stop before starting (Replace)."""


def concurrency_action(policy: ConcurrencyPolicy | str, running: list[str]) -> ConcurrencyAction:
    """Forbid: skip while anything runs, naming what runs. Replace: start, stopping the others.

    Two runs of one policy at once would write two sets from one moment and double the load on
    PostgreSQL and Vault; piling runs up is the commonest scheduler complaint (K8up #1099).
    """
    policy = ConcurrencyPolicy(policy)
    names = list(dict.fromkeys(running))
    if not names:
        return ConcurrencyAction(start=True)
    if policy is ConcurrencyPolicy.REPLACE:
        return ConcurrencyAction(start=True, replace=names)
    return ConcurrencyAction(start=False, skip_reason=f"Forbid: {', '.join(names)} still running")
