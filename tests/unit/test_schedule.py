"""Cron ticks in a time zone, jitter, the scheduling decision and concurrency.

Expected instants are written out by hand (with the local time in a comment) or come from an
independent oracle: croniter iterating naive wall-clock times, converted minute by minute with
zoneinfo and the DST rules of the module docstring.
"""

from __future__ import annotations

import io
import struct
from datetime import UTC, datetime, timedelta
from typing import Any
from zoneinfo import ZoneInfo

import pytest
from croniter import croniter
from hypothesis import given, settings
from hypothesis import strategies as st

from lamassu_backup.builders.schedule import (
    REASON_STARTING_DEADLINE_EXCEEDED as EXCEEDED,
)
from lamassu_backup.builders.schedule import (
    REASON_SUPERSEDED as SUPERSEDED,
)
from lamassu_backup.builders.schedule import (
    ConcurrencyAction,
    MissedTick,
    ScheduleDecision,
    concurrency_action,
    decide,
    jitter_offset,
    next_tick,
    ticks_between,
)
from lamassu_backup.models.policy import ConcurrencyPolicy

MADRID = "Europe/Madrid"
MINUTE = timedelta(minutes=1)
HOUR = timedelta(hours=1)


def z(text: str) -> datetime:
    """An aware UTC instant from '2026-03-29T01:00' (always UTC, whatever is written)."""
    return datetime.fromisoformat(text).replace(tzinfo=UTC)


# --- next_tick --------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("schedule", "time_zone", "after", "expected"),
    [
        pytest.param("0 * * * *", "Etc/UTC", "2026-01-01T10:15", "2026-01-01T11:00", id="hourly"),
        pytest.param("0 * * * *", "Etc/UTC", "2026-01-01T11:00", "2026-01-01T12:00", id="strict"),
        pytest.param("@hourly", "Etc/UTC", "2026-01-01T10:59:59", "2026-01-01T11:00", id="@hourly"),
        pytest.param("@daily", "Etc/UTC", "2026-01-01T10:00", "2026-01-02T00:00", id="@daily"),
        pytest.param(
            "@midnight", "Etc/UTC", "2026-01-01T10:00", "2026-01-02T00:00", id="@midnight"
        ),
        # 2026-01-01 is a Thursday; @weekly is Sunday midnight
        pytest.param("@weekly", "Etc/UTC", "2026-01-01T10:00", "2026-01-04T00:00", id="@weekly"),
        pytest.param("@monthly", "Etc/UTC", "2026-01-01T10:00", "2026-02-01T00:00", id="@monthly"),
        pytest.param("@yearly", "Etc/UTC", "2026-01-01T10:00", "2027-01-01T00:00", id="@yearly"),
        pytest.param(
            "@annually", "Etc/UTC", "2026-06-01T00:00", "2027-01-01T00:00", id="@annually"
        ),
        # day-of-month and day-of-week both restricted: either matches (Vixie cron)
        pytest.param(
            "0 0 1 * MON", "Etc/UTC", "2026-01-01T00:00", "2026-01-05T00:00", id="dom-or-dow"
        ),
        pytest.param("0 0 L * *", "Etc/UTC", "2026-02-01T00:00", "2026-02-28T00:00", id="last-day"),
        pytest.param(
            "0 0 29 2 *", "Etc/UTC", "2096-03-01T00:00", "2104-02-29T00:00", id="leap-day"
        ),
        # Madrid winter is +01:00, summer +02:00
        pytest.param(
            "30 2 * * *", MADRID, "2026-01-10T12:00", "2026-01-11T01:30", id="madrid-winter"
        ),
        pytest.param(
            "30 2 * * *", MADRID, "2026-07-10T12:00", "2026-07-11T00:30", id="madrid-summer"
        ),
        # spring forward 2026-03-29: 02:00 CET -> 03:00 CEST; 02:30 does not exist and runs at
        # the jump, 03:00 CEST
        pytest.param(
            "30 2 * * *", MADRID, "2026-03-28T12:00", "2026-03-29T01:00", id="madrid-spring"
        ),
        pytest.param(
            "30 2 * * *", MADRID, "2026-03-29T01:00", "2026-03-30T00:30", id="madrid-spring-next"
        ),
        # fall back 2026-10-25: 03:00 CEST -> 02:00 CET; 02:30 happens twice and runs once, the
        # first time (02:30 CEST); the next run is 02:30 CET the day after
        pytest.param(
            "30 2 * * *", MADRID, "2026-10-24T12:00", "2026-10-25T00:30", id="madrid-fall"
        ),
        pytest.param(
            "30 2 * * *", MADRID, "2026-10-25T00:30", "2026-10-26T01:30", id="madrid-fall-once"
        ),
        # a rate follows real time: hourly runs in both passes of the repeated hour
        pytest.param(
            "0 * * * *", MADRID, "2026-10-25T00:00", "2026-10-25T01:00", id="hourly-fall-twice"
        ),
        # ... and skips the hour that does not exist (01:30 CET -> 03:30 CEST is one hour)
        pytest.param(
            "30 * * * *", MADRID, "2026-03-29T00:30", "2026-03-29T01:30", id="hourly-spring"
        ),
        # a time-of-day list: 02:00 does not exist, runs at the jump (03:00 CEST = 01:00Z)
        pytest.param(
            "0 */2 * * *", MADRID, "2026-03-28T23:00", "2026-03-29T01:00", id="every-2h-spring"
        ),
        # the jump is itself a tick: no extra run for the skipped 02:00
        pytest.param(
            "0 2,3 * * *", MADRID, "2026-03-28T23:00", "2026-03-29T01:00", id="jump-is-tick"
        ),
        pytest.param("0 2,3 * * *", MADRID, "2026-03-29T01:00", "2026-03-30T00:00", id="jump-once"),
        # New York: spring 2026-03-08 02:00 EST -> 03:00 EDT, fall 2026-11-01 02:00 EDT -> 01:00 EST
        pytest.param(
            "30 2 * * *", "America/New_York", "2026-03-08T00:00", "2026-03-08T07:00", id="ny-spring"
        ),
        pytest.param(
            "30 1 * * *", "America/New_York", "2026-11-01T00:00", "2026-11-01T05:30", id="ny-fall"
        ),
        pytest.param(
            "30 1 * * *",
            "America/New_York",
            "2026-11-01T05:30",
            "2026-11-02T06:30",
            id="ny-fall-once",
        ),
        # Lord Howe moves by 30 minutes: 2026-10-04 02:00 (+10:30) -> 02:30 (+11)
        pytest.param(
            "15 2 * * *",
            "Australia/Lord_Howe",
            "2026-10-03T00:00",
            "2026-10-03T15:30",
            id="half-hour-dst",
        ),
        # Samoa skipped 2011-12-30: 23:59:59 on the 29th (-10) was followed by the 31st (+14)
        pytest.param(
            "0 12 * * *", "Pacific/Apia", "2011-12-29T22:00", "2011-12-30T10:00", id="skipped-day"
        ),
        pytest.param(
            "0 12 * * *", "Pacific/Apia", "2011-12-30T10:00", "2011-12-30T22:00", id="after-skip"
        ),
    ],
)
def test_next_tick(schedule: str, time_zone: str, after: str, expected: str) -> None:
    assert next_tick(schedule, time_zone, z(after)) == z(expected)


def test_next_tick_accepts_any_aware_timezone() -> None:
    after = datetime(2026, 1, 1, 11, 15, tzinfo=ZoneInfo(MADRID))  # 10:15Z
    result = next_tick("0 * * * *", "Etc/UTC", after)
    assert result == z("2026-01-01T11:00")
    assert result.tzinfo is UTC


@pytest.mark.parametrize(
    ("schedule", "time_zone", "after", "match"),
    [
        pytest.param("0 * * * *", "Etc/UTC", datetime(2026, 1, 1), "timezone-aware", id="naive"),
        pytest.param("0 0 30 2 *", "Etc/UTC", z("2026-01-01T00:00"), "no tick", id="never"),
        pytest.param("R * * * *", "Etc/UTC", z("2026-01-01T00:00"), "random", id="random"),
        pytest.param("H * * * *", "Etc/UTC", z("2026-01-01T00:00"), "cron", id="hashed"),
        pytest.param("61 * * * *", "Etc/UTC", z("2026-01-01T00:00"), "cron", id="bad-minute"),
        pytest.param("0 * * *", "Etc/UTC", z("2026-01-01T00:00"), "five fields", id="four-fields"),
        pytest.param("@fortnightly", "Etc/UTC", z("2026-01-01T00:00"), "macro", id="bad-macro"),
        pytest.param("0 * * * *", "Mars/Olympus", z("2026-01-01T00:00"), "time zone", id="zone"),
    ],
)
def test_next_tick_refuses(schedule: str, time_zone: str, after: datetime, match: str) -> None:
    with pytest.raises(ValueError, match=match):
        next_tick(schedule, time_zone, after)


# --- ticks_between ----------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("schedule", "time_zone", "start", "end", "limit", "from_end", "first", "count"),
    [
        # a week-long outage of a 1-minute schedule: 7 * 1440 ticks, ten listed
        pytest.param(
            "* * * * *",
            "Etc/UTC",
            "2026-03-01",
            "2026-03-08",
            10,
            False,
            "2026-03-01T00:01",
            10080,
            id="week-of-minutes",
        ),
        pytest.param(
            "* * * * *",
            "Etc/UTC",
            "2026-03-01",
            "2026-03-08",
            10,
            True,
            "2026-03-07T23:51",
            10080,
            id="week-of-minutes-newest",
        ),
        pytest.param(
            "* * * * *",
            "Etc/UTC",
            "2026-03-01",
            "2026-03-08",
            0,
            False,
            None,
            10080,
            id="count-only",
        ),
        # a rate follows real time: 23 hours on the spring day, 25 on the fall day
        pytest.param(
            "* * * * *",
            MADRID,
            "2026-03-28T23:00",
            "2026-03-29T22:00",
            3,
            False,
            "2026-03-28T23:01",
            23 * 60,
            id="spring-day-minutes",
        ),
        pytest.param(
            "* * * * *",
            MADRID,
            "2026-10-24T22:00",
            "2026-10-25T23:00",
            3,
            False,
            "2026-10-24T22:01",
            25 * 60,
            id="fall-day-minutes",
        ),
        pytest.param(
            "0 * * * *",
            MADRID,
            "2026-10-24T22:00",
            "2026-10-25T23:00",
            3,
            True,
            "2026-10-25T21:00",
            25,
            id="fall-day-hours",
        ),
        # a time of day runs once a day whatever the clocks do
        pytest.param(
            "30 2 * * *",
            MADRID,
            "2026-03-22",
            "2026-04-05",
            1,
            False,
            "2026-03-22T01:30",
            14,
            id="spring-fortnight",
        ),
        pytest.param(
            "30 2 * * *",
            MADRID,
            "2026-10-18",
            "2026-11-01",
            1,
            False,
            "2026-10-18T00:30",
            14,
            id="fall-fortnight",
        ),
        # ten years of minutes: cheap, and exact
        pytest.param(
            "* * * * *",
            MADRID,
            "2016-03-01",
            "2026-03-01",
            1,
            False,
            "2016-03-01T00:01",
            3652 * 1440,
            id="ten-years-of-minutes",
        ),
        pytest.param(
            "0 3 * * 1-5",
            "Etc/UTC",
            "2026-01-01",
            "2027-01-01",
            1,
            False,
            "2026-01-01T03:00",
            261,
            id="weekdays-of-a-year",
        ),
        pytest.param(
            "0 0 29 2 *",
            "Etc/UTC",
            "2000-01-01",
            "2100-01-01",
            1,
            True,
            "2096-02-29T00:00",
            25,
            id="leap-days-of-a-century",
        ),
        pytest.param(
            "0 * * * *",
            "Etc/UTC",
            "2026-03-01T10:00",
            "2026-03-01T10:00",
            5,
            False,
            None,
            0,
            id="empty-interval",
        ),
        pytest.param(
            "0 * * * *",
            "Etc/UTC",
            "2026-03-01T11:00",
            "2026-03-01T10:00",
            5,
            False,
            None,
            0,
            id="reversed-interval",
        ),
    ],
)
def test_ticks_between(
    schedule: str,
    time_zone: str,
    start: str,
    end: str,
    limit: int,
    from_end: bool,
    first: str | None,
    count: int,
) -> None:
    ticks, more = ticks_between(schedule, time_zone, z(start), z(end), limit, from_end=from_end)
    assert len(ticks) == min(limit, count)
    assert len(ticks) + more == count
    assert (ticks[0] if ticks else None) == (z(first) if first else None)
    assert ticks == sorted(set(ticks))
    assert all(z(start) < t <= z(end) for t in ticks)


def test_ticks_between_bounds_are_exclusive_then_inclusive() -> None:
    ticks, more = ticks_between(
        "0 * * * *", "Etc/UTC", z("2026-01-01T10:00"), z("2026-01-01T12:00"), 5
    )
    assert (ticks, more) == ([z("2026-01-01T11:00"), z("2026-01-01T12:00")], 0)


def test_ticks_between_madrid_daily_across_spring_forward() -> None:
    ticks, more = ticks_between(
        "30 2 * * *", MADRID, z("2026-03-27T00:00"), z("2026-03-31T00:00"), 10
    )
    assert more == 0
    assert ticks == [
        z("2026-03-27T01:30"),  # 02:30 CET
        z("2026-03-28T01:30"),  # 02:30 CET
        z("2026-03-29T01:00"),  # 02:30 does not exist: 03:00 CEST, the moment clocks jump
        z("2026-03-30T00:30"),  # 02:30 CEST
    ]


def test_ticks_between_madrid_daily_across_fall_back() -> None:
    ticks, _ = ticks_between("30 2 * * *", MADRID, z("2026-10-23T00:00"), z("2026-10-27T00:00"), 10)
    assert ticks == [
        z("2026-10-23T00:30"),  # 02:30 CEST
        z("2026-10-24T00:30"),  # 02:30 CEST
        z("2026-10-25T00:30"),  # 02:30 CEST, first of two 02:30s; 01:30Z (02:30 CET) does not run
        z("2026-10-26T01:30"),  # 02:30 CET
    ]


def test_ticks_between_refuses_negative_limit_and_naive() -> None:
    with pytest.raises(ValueError, match="limit"):
        ticks_between("0 * * * *", "Etc/UTC", z("2026-01-01"), z("2026-01-02"), -1)
    with pytest.raises(ValueError, match="timezone-aware"):
        ticks_between("0 * * * *", "Etc/UTC", z("2026-01-01"), datetime(2026, 1, 2), 1)


# --- an independent oracle around clock changes -------------------------------------------------


def synthetic_zone(key: str, transition: datetime, before: int, after: int) -> ZoneInfo:
    """A one-transition zone (TZif version 1) for clock changes no real zone has any more."""
    names = b"AAA\0BBB\0"
    body = struct.pack(">6l", 0, 0, 0, 1, 2, len(names))
    body += struct.pack(">l", int(transition.timestamp())) + b"\x01"
    body += struct.pack(">lBB", before, 0, 0) + struct.pack(">lBB", after, 1, 4) + names
    return ZoneInfo.from_file(io.BytesIO(b"TZif" + bytes(16) + body), key=key)


SYNTHETIC_ZONES = {
    "Test/GapAcrossMidnight": synthetic_zone(
        "Test/GapAcrossMidnight", datetime(2026, 1, 1, 23, 30, tzinfo=UTC), 0, 3600
    ),
}


def oracle(
    schedule: str, time_zone: str, start: datetime, end: datetime, rate: bool
) -> list[datetime]:
    """Ticks in (start, end] by scanning every UTC minute (start and end on whole minutes).

    Which wall-clock times match comes from croniter iterating naive times; the DST rules are
    applied per instant: a second pass of a repeated time counts for a rate only; an instant at
    which the clock jumps forward counts for a time-of-day schedule when a skipped wall time
    matched and the instant itself does not.
    """
    zone = SYNTHETIC_ZONES.get(time_zone) or ZoneInfo(time_zone)
    lo = start.astimezone(zone).replace(tzinfo=None) - timedelta(days=1)
    hi = end.astimezone(zone).replace(tzinfo=None) + timedelta(days=1)
    walls: set[datetime] = set()
    it = croniter(schedule, lo)
    while (wall := it.get_next(datetime)) <= hi:
        walls.add(wall)
    ticks = []
    previous = start.astimezone(zone).replace(tzinfo=None)
    instant = start + MINUTE
    while instant <= end:
        local = instant.astimezone(zone)
        wall = local.replace(tzinfo=None)
        if wall in walls and (local.fold == 0 or rate):
            ticks.append(instant)
        elif not rate and wall - previous > MINUTE:
            skipped = previous + MINUTE
            while skipped < wall and skipped not in walls:
                skipped += MINUTE
            if skipped < wall:
                ticks.append(instant)
        previous = wall
        instant += MINUTE
    return ticks


CLOCK_CHANGES = [
    pytest.param(MADRID, "2026-03-29T01:00", id="madrid-spring"),
    pytest.param(MADRID, "2026-10-25T01:00", id="madrid-fall"),
    pytest.param("America/New_York", "2026-03-08T07:00", id="ny-spring"),
    pytest.param("America/New_York", "2026-11-01T06:00", id="ny-fall"),
    pytest.param("Australia/Lord_Howe", "2026-10-03T15:30", id="lord-howe-spring"),
    pytest.param("Australia/Lord_Howe", "2026-04-04T15:00", id="lord-howe-fall"),
    pytest.param("America/Santiago", "2026-09-06T04:00", id="santiago-midnight-spring"),
    pytest.param("America/Santiago", "2026-04-05T03:00", id="santiago-midnight-fall"),
    # 00:01 NDT -> 23:01 NST the day before: the repeated interval spans midnight
    pytest.param("America/St_Johns", "2010-11-07T02:31", id="st-johns-fold-across-midnight"),
    # +11 -> +8 at 02:00: three repeated hours spanning midnight
    pytest.param("Antarctica/Casey", "2010-03-04T15:00", id="casey-three-hour-fold"),
    # synthetic (no zone since 1990 has one): 23:30 -> 00:30, a skipped interval across midnight
    pytest.param("Test/GapAcrossMidnight", "2026-01-01T23:30", id="gap-across-midnight"),
]
SCHEDULES = [
    pytest.param("30 2 * * *", False, id="daily-0230"),
    pytest.param("0 0 * * *", False, id="midnight"),
    pytest.param("45 23 * * *", False, id="daily-2345"),
    pytest.param("15 1,2,3 * * *", False, id="three-times"),
    pytest.param("0 */2 * * *", False, id="every-2h"),
    pytest.param("*/20 0-3 * * *", False, id="every-20m-at-night"),
    pytest.param("0 * * * *", True, id="hourly"),
    pytest.param("*/20 * * * *", True, id="every-20m"),
    pytest.param("7 * * * 0", True, id="hourly-on-sunday"),
]


@pytest.fixture(autouse=True)
def synthetic_zones(monkeypatch: pytest.MonkeyPatch) -> None:
    """Let the module resolve the test-only zone names."""
    monkeypatch.setattr(
        "lamassu_backup.builders.schedule.ZoneInfo",
        lambda key: SYNTHETIC_ZONES.get(key) or ZoneInfo(key),
    )


@pytest.mark.parametrize(("time_zone", "change"), CLOCK_CHANGES)
@pytest.mark.parametrize(("schedule", "rate"), SCHEDULES)
def test_ticks_match_oracle_around_clock_changes(
    time_zone: str, change: str, schedule: str, rate: bool
) -> None:
    start, end = z(change) - timedelta(hours=8), z(change) + timedelta(hours=8)
    expected = oracle(schedule, time_zone, start, end, rate)
    ticks, more = ticks_between(schedule, time_zone, start, end, 10_000)
    assert (ticks, more) == (expected, 0)
    _, counted = ticks_between(schedule, time_zone, start, end, 0)
    assert counted == len(expected)
    chained, cursor = [], start
    while (cursor := next_tick(schedule, time_zone, cursor)) <= end:
        chained.append(cursor)
    assert chained == expected


def test_gap_across_midnight_runs_once() -> None:
    # 23:15 runs; 23:45 (skipped) runs at the jump, 23:30Z; 00:15 (skipped, the next day) does
    # not run again; 00:45 runs
    ticks, _ = ticks_between(
        "15,45 0,23 * * *",
        "Test/GapAcrossMidnight",
        z("2026-01-01T20:00"),
        z("2026-01-02T03:00"),
        10,
    )
    assert ticks == [z("2026-01-01T23:15"), z("2026-01-01T23:30"), z("2026-01-01T23:45")]


@pytest.mark.parametrize(
    ("end", "limit", "from_end", "expected"),
    [
        # */20 across St John's 2010-11-07 fold: 23:20 NDT 01:50Z, 23:40 NDT 02:10Z, 00:00 NDT
        # 02:30Z, then 23:20 NST 02:50Z, 23:40 NST 03:10Z, 00:00 NST 03:30Z: the next local day's
        # first tick comes before this day's second pass
        pytest.param("2010-11-07T04:00", 3, False, ["01:50", "02:10", "02:30"], id="oldest"),
        pytest.param("2010-11-07T03:35", 2, True, ["03:10", "03:30"], id="newest"),
        pytest.param(
            "2010-11-07T03:35",
            9,
            False,
            ["01:50", "02:10", "02:30", "02:50", "03:10", "03:30"],
            id="all",
        ),
    ],
)
def test_fold_across_midnight_keeps_real_order(
    end: str, limit: int, from_end: bool, expected: list[str]
) -> None:
    ticks, _ = ticks_between(
        "*/20 * * * *", "America/St_Johns", z("2010-11-07T01:30"), z(end), limit, from_end=from_end
    )
    assert ticks == [z(f"2010-11-07T{t}") for t in expected]
    assert next_tick("*/20 * * * *", "America/St_Johns", z("2010-11-07T02:10")) == z(
        "2010-11-07T02:30"
    )


def test_fold_across_midnight_from_after_midnight() -> None:
    # starting at 00:00 NDT (02:30Z) on the 7th, the second pass of the 6th's 23:20 and 23:40
    # is still ahead
    start = z("2010-11-07T02:30")
    ticks, _ = ticks_between("*/20 * * * *", "America/St_Johns", start, z("2010-11-07T03:35"), 9)
    assert ticks == [z("2010-11-07T02:50"), z("2010-11-07T03:10"), z("2010-11-07T03:30")]
    assert next_tick("*/20 * * * *", "America/St_Johns", start) == z("2010-11-07T02:50")


def test_samoa_skipped_day_matches_oracle() -> None:
    start, end = z("2011-12-28T00:00"), z("2012-01-02T00:00")
    for schedule, rate in [("0 12 * * *", False), ("0 0 * * *", False), ("30 * * * *", True)]:
        expected = oracle(schedule, "Pacific/Apia", start, end, rate)
        assert ticks_between(schedule, "Pacific/Apia", start, end, 10_000) == (expected, 0)


# --- properties ---------------------------------------------------------------------------------

FIELDS = st.tuples(
    st.sampled_from(["0", "*/10", "15,45", "7", "*/30"]),
    st.sampled_from(["*", "*/3", "2", "9-17", "0,12"]),
    st.sampled_from(["*", "*", "1", "15", "1-7", "L"]),
    st.sampled_from(["*", "*", "1-6", "2", "*/3"]),
    st.sampled_from(["*", "*", "1-5", "0", "MON", "SAT,SUN"]),
).map(" ".join)
INSTANTS = st.datetimes(
    min_value=datetime(2000, 1, 1), max_value=datetime(2040, 1, 1), timezones=st.just(UTC)
)
ZONES = st.sampled_from(
    [
        "Etc/UTC",
        MADRID,
        "America/New_York",
        "Australia/Lord_Howe",
        "Asia/Kolkata",
        "America/Santiago",
    ]
)


@settings(max_examples=60, deadline=None)
@given(schedule=FIELDS, start=INSTANTS, span=st.integers(0, 10 * 24 * 60), limit=st.integers(0, 30))
def test_utc_ticks_equal_croniter(schedule: str, start: datetime, span: int, limit: int) -> None:
    end = start + span * MINUTE
    expected = []
    it = croniter(schedule, start.replace(tzinfo=None))
    while (tick := it.get_next(datetime).replace(tzinfo=UTC)) <= end:
        expected.append(tick)
    assert ticks_between(schedule, "Etc/UTC", start, end, limit) == (
        expected[:limit],
        max(0, len(expected) - limit),
    )
    newest = expected[len(expected) - limit :] if limit else []
    assert ticks_between(schedule, "Etc/UTC", start, end, limit, from_end=True) == (
        newest,
        len(expected) - len(newest),
    )


@settings(max_examples=60, deadline=None)
@given(schedule=FIELDS, time_zone=ZONES, start=INSTANTS, steps=st.integers(1, 12))
def test_next_tick_chain_equals_ticks_between(
    schedule: str, time_zone: str, start: datetime, steps: int
) -> None:
    chain = [start]
    for _ in range(steps):
        chain.append(next_tick(schedule, time_zone, chain[-1]))
    ticks = chain[1:]
    assert all(a < b for a, b in zip(chain[:-1], ticks, strict=True))
    assert ticks_between(schedule, time_zone, start, ticks[-1], steps) == (ticks, 0)
    assert ticks_between(schedule, time_zone, start, ticks[-1], 1) == (ticks[:1], steps - 1)
    assert ticks_between(schedule, time_zone, start, ticks[-1], 1, from_end=True) == (
        ticks[-1:],
        steps - 1,
    )


# --- jitter -------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("identity", "max_jitter", "expected"),
    [
        pytest.param("lamassu/hourly", timedelta(0), timedelta(0), id="none"),
        pytest.param("lamassu/hourly", timedelta(seconds=0.5), timedelta(0), id="below-a-second"),
        pytest.param("lamassu/hourly", timedelta(seconds=1), timedelta(0), id="one-second"),
        # whole seconds below the maximum: 0 and 1 are both below 1.5s
        pytest.param(
            "lamassu/hourly", timedelta(seconds=1.5), timedelta(seconds=1), id="fractional-maximum"
        ),
        # pinned: a change would move every existing policy's runs
        pytest.param("lamassu/hourly", timedelta(minutes=30), timedelta(seconds=75), id="pinned-a"),
        pytest.param("lamassu/daily", timedelta(minutes=30), timedelta(seconds=241), id="pinned-b"),
    ],
)
def test_jitter_offset(identity: str, max_jitter: timedelta, expected: timedelta) -> None:
    assert jitter_offset(identity, max_jitter) == expected


def test_jitter_refuses_negative() -> None:
    with pytest.raises(ValueError, match="negative"):
        jitter_offset("a/b", timedelta(seconds=-1))


def test_jitter_spreads_policies_evenly() -> None:
    buckets = [0] * 10
    for i in range(2000):
        buckets[
            jitter_offset(f"ns-{i}/policy", timedelta(seconds=600)) // timedelta(seconds=60)
        ] += 1
    assert all(150 <= b <= 250 for b in buckets), buckets


@given(
    identity=st.text(alphabet="abcdefghijklmnopqrstuvwxyz0123456789-/", max_size=80),
    seconds=st.floats(0, 86400 * 7, allow_nan=False),
)
def test_jitter_is_whole_seconds_below_the_maximum(identity: str, seconds: float) -> None:
    maximum = timedelta(seconds=seconds)
    offset = jitter_offset(identity, maximum)
    assert offset == jitter_offset(identity, maximum)
    assert offset.microseconds == 0
    assert timedelta(0) <= offset
    assert offset < maximum or maximum == timedelta(0)


# --- decide -------------------------------------------------------------------------------------


CREATED = z("2026-01-01T00:00")


def run(
    now: str,
    *,
    schedule: str = "0 * * * *",
    time_zone: str = "Etc/UTC",
    jitter: timedelta = timedelta(0),
    starting_deadline: timedelta = timedelta(minutes=30),
    last_tick: datetime | None = None,
    created_at: datetime = CREATED,
    suspended: bool = False,
    max_missed_records: int = 10,
) -> ScheduleDecision:
    return decide(
        schedule=schedule,
        time_zone=time_zone,
        jitter=jitter,
        starting_deadline=starting_deadline,
        last_tick=last_tick,
        created_at=created_at,
        now=z(now),
        suspended=suspended,
        max_missed_records=max_missed_records,
    )


def missed(*items: tuple[str, str]) -> list[MissedTick]:
    return [MissedTick(z(t), reason) for t, reason in items]


@pytest.mark.parametrize(
    ("now", "changes", "fire", "missed_ticks", "overflow", "last_tick", "next_due"),
    [
        pytest.param(
            "2026-01-01T10:40",
            {"created_at": z("2026-01-01T10:20")},
            None,
            [],
            0,
            "2026-01-01T10:20",
            "2026-01-01T11:00",
            id="new-policy-nothing-due",
        ),
        pytest.param(
            "2026-01-01T11:00",
            {"created_at": z("2026-01-01T10:20")},
            "2026-01-01T11:00",
            [],
            0,
            "2026-01-01T11:00",
            "2026-01-01T12:00",
            id="first-tick-after-creation",
        ),
        pytest.param(
            "2026-01-01T12:10",
            {"created_at": z("2026-01-01T10:30")},
            "2026-01-01T12:00",
            missed(("2026-01-01T11:00", EXCEEDED)),
            0,
            "2026-01-01T12:00",
            "2026-01-01T13:00",
            id="ticks-before-creation-ignored",
        ),
        pytest.param(
            "2026-01-01T11:00",
            {"created_at": z("2026-01-01T11:00")},
            None,
            [],
            0,
            "2026-01-01T11:00",
            "2026-01-01T12:00",
            id="tick-at-creation-ignored",
        ),
        pytest.param(
            "2026-01-01T11:00",
            {"last_tick": z("2026-01-01T10:00")},
            "2026-01-01T11:00",
            [],
            0,
            "2026-01-01T11:00",
            "2026-01-01T12:00",
            id="due-exactly",
        ),
        pytest.param(
            "2026-01-01T11:30",
            {"last_tick": z("2026-01-01T10:00")},
            "2026-01-01T11:00",
            [],
            0,
            "2026-01-01T11:00",
            "2026-01-01T12:00",
            id="deadline-inclusive",
        ),
        pytest.param(
            "2026-01-01T11:30:01",
            {"last_tick": z("2026-01-01T10:00")},
            None,
            missed(("2026-01-01T11:00", EXCEEDED)),
            0,
            "2026-01-01T11:00",
            "2026-01-01T12:00",
            id="deadline-exceeded",
        ),
        pytest.param(
            "2026-01-01T11:30:01",
            {"last_tick": z("2026-01-01T10:00"), "starting_deadline": timedelta(0)},
            None,
            missed(("2026-01-01T11:00", EXCEEDED)),
            0,
            "2026-01-01T11:00",
            "2026-01-01T12:00",
            id="zero-deadline",
        ),
        pytest.param(
            "2026-01-01T11:03",
            {"last_tick": z("2026-01-01T10:00"), "jitter": timedelta(minutes=5)},
            None,
            [],
            0,
            "2026-01-01T10:00",
            "2026-01-01T11:05",
            id="jitter-not-yet-due",
        ),
        pytest.param(
            "2026-01-01T11:05",
            {"last_tick": z("2026-01-01T10:00"), "jitter": timedelta(minutes=5)},
            "2026-01-01T11:00",
            [],
            0,
            "2026-01-01T11:00",
            "2026-01-01T12:05",
            id="jitter-due",
        ),
        pytest.param(
            "2026-01-01T11:35:01",
            {"last_tick": z("2026-01-01T10:00"), "jitter": timedelta(minutes=5)},
            None,
            missed(("2026-01-01T11:00", EXCEEDED)),
            0,
            "2026-01-01T11:00",
            "2026-01-01T12:05",
            id="jitter-shifts-the-window",
        ),
        pytest.param(
            "2026-01-01T13:10",
            {"last_tick": z("2026-01-01T10:00")},
            "2026-01-01T13:00",
            missed(("2026-01-01T11:00", EXCEEDED), ("2026-01-01T12:00", EXCEEDED)),
            0,
            "2026-01-01T13:00",
            "2026-01-01T14:00",
            id="outage-fires-newest-only",
        ),
        pytest.param(
            "2026-01-01T13:10",
            {"last_tick": z("2026-01-01T10:00"), "starting_deadline": timedelta(hours=2)},
            "2026-01-01T13:00",
            missed(("2026-01-01T11:00", EXCEEDED), ("2026-01-01T12:00", SUPERSEDED)),
            0,
            "2026-01-01T13:00",
            "2026-01-01T14:00",
            id="older-in-window-superseded",
        ),
        pytest.param(
            "2026-01-01T13:00",
            {"last_tick": z("2026-01-01T10:00"), "starting_deadline": timedelta(hours=2)},
            "2026-01-01T13:00",
            missed(("2026-01-01T11:00", SUPERSEDED), ("2026-01-01T12:00", SUPERSEDED)),
            0,
            "2026-01-01T13:00",
            "2026-01-01T14:00",
            id="window-start-inclusive-for-superseded",
        ),
        pytest.param(
            "2026-01-01T13:40",
            {"last_tick": z("2026-01-01T10:00")},
            None,
            missed(
                ("2026-01-01T11:00", EXCEEDED),
                ("2026-01-01T12:00", EXCEEDED),
                ("2026-01-01T13:00", EXCEEDED),
            ),
            0,
            "2026-01-01T13:00",
            "2026-01-01T14:00",
            id="all-missed",
        ),
        # a week down: 168 ticks, the newest fires, the three newest missed are listed
        pytest.param(
            "2026-01-08T00:10",
            {"last_tick": z("2026-01-01T00:00"), "max_missed_records": 3},
            "2026-01-08T00:00",
            missed(
                ("2026-01-07T21:00", EXCEEDED),
                ("2026-01-07T22:00", EXCEEDED),
                ("2026-01-07T23:00", EXCEEDED),
            ),
            164,
            "2026-01-08T00:00",
            "2026-01-08T01:00",
            id="week-outage-bounded",
        ),
        pytest.param(
            "2026-01-08T00:40",
            {"last_tick": z("2026-01-01T00:00"), "max_missed_records": 2},
            None,
            missed(("2026-01-07T23:00", EXCEEDED), ("2026-01-08T00:00", EXCEEDED)),
            166,
            "2026-01-08T00:00",
            "2026-01-08T01:00",
            id="week-outage-newest-missed",
        ),
        pytest.param(
            "2026-01-01T13:10",
            {"last_tick": z("2026-01-01T10:00"), "max_missed_records": 0},
            "2026-01-01T13:00",
            [],
            2,
            "2026-01-01T13:00",
            "2026-01-01T14:00",
            id="no-records",
        ),
        pytest.param(
            "2026-01-01T11:30",
            {"last_tick": z("2026-01-01T12:00")},
            None,
            [],
            0,
            "2026-01-01T12:00",
            "2026-01-01T13:00",
            id="watermark-in-the-future",
        ),
        # suspended: nothing fires, nothing is missed, the watermark catches up with now
        pytest.param(
            "2026-01-01T13:10",
            {"last_tick": z("2026-01-01T10:00"), "suspended": True},
            None,
            [],
            0,
            "2026-01-01T13:00",
            "2026-01-01T14:00",
            id="suspended",
        ),
        pytest.param(
            "2026-01-01T13:02",
            {"last_tick": z("2026-01-01T10:00"), "suspended": True, "jitter": timedelta(minutes=5)},
            None,
            [],
            0,
            "2026-01-01T13:00",
            "2026-01-01T14:05",
            id="suspended-passes-undue-tick",
        ),
        pytest.param(
            "2026-01-01T13:20",
            {"last_tick": z("2026-01-01T13:00")},
            None,
            [],
            0,
            "2026-01-01T13:00",
            "2026-01-01T14:00",
            id="resumed-fires-nothing-old",
        ),
        # Madrid 02:30 on the spring-forward day runs at 03:00 CEST
        pytest.param(
            "2026-03-29T01:05",
            {"schedule": "30 2 * * *", "time_zone": MADRID, "last_tick": z("2026-03-28T01:30")},
            "2026-03-29T01:00",
            [],
            0,
            "2026-03-29T01:00",
            "2026-03-30T00:30",
            id="madrid-spring-forward",
        ),
    ],
)
def test_decide(
    now: str,
    changes: dict[str, Any],
    fire: str | None,
    missed_ticks: list[MissedTick],
    overflow: int,
    last_tick: str,
    next_due: str,
) -> None:
    decision = run(now, **changes)
    assert decision.fire == (z(fire) if fire else None)
    assert decision.missed == missed_ticks
    assert decision.missed_overflow == overflow
    assert decision.last_tick == z(last_tick)
    assert decision.next_due == z(next_due)
    assert decision.requeue_after == z(next_due) - z(now)


def test_suspension_counts_the_ticks_it_passes() -> None:
    decision = run("2026-01-01T13:10", last_tick=z("2026-01-01T10:00"), suspended=True)
    assert decision.suspended_skipped == 3
    assert run("2026-01-01T13:10", last_tick=z("2026-01-01T10:00")).suspended_skipped == 0


@pytest.mark.parametrize(
    ("changes", "match"),
    [
        pytest.param({"jitter": timedelta(seconds=-1)}, "negative", id="negative-jitter"),
        pytest.param(
            {"starting_deadline": timedelta(seconds=-1)}, "negative", id="negative-deadline"
        ),
        pytest.param({"max_missed_records": -1}, "negative", id="negative-records"),
        pytest.param({"created_at": datetime(2026, 1, 1)}, "timezone-aware", id="naive-created"),
        pytest.param({"last_tick": datetime(2026, 1, 1)}, "timezone-aware", id="naive-last-tick"),
    ],
)
def test_decide_refuses(changes: dict[str, Any], match: str) -> None:
    with pytest.raises(ValueError, match=match):
        run("2026-01-01T10:00", **changes)


HOURLYISH = st.sampled_from(["0 * * * *", "*/15 * * * *", "30 2 * * *", "0 */6 * * 1-5", "@daily"])


def croniter_ticks(schedule: str, start: datetime, end: datetime) -> list[datetime]:
    ticks = []
    it = croniter(schedule, start.replace(tzinfo=None))
    while (tick := it.get_next(datetime).replace(tzinfo=UTC)) <= end:
        ticks.append(tick)
    return ticks


@settings(max_examples=100, deadline=None)
@given(
    schedule=HOURLYISH,
    baseline=INSTANTS,
    elapsed=st.integers(0, 5 * 24 * 3600),
    jitter=st.integers(0, 3 * 3600),
    deadline=st.integers(0, 6 * 3600),
    records=st.integers(0, 5),
    has_last_tick=st.booleans(),
)
def test_decide_accounts_for_every_due_tick(
    schedule: str,
    baseline: datetime,
    elapsed: int,
    jitter: int,
    deadline: int,
    records: int,
    has_last_tick: bool,
) -> None:
    now = baseline + timedelta(seconds=elapsed)
    args: dict[str, Any] = {
        "schedule": schedule,
        "time_zone": "Etc/UTC",
        "jitter": timedelta(seconds=jitter),
        "starting_deadline": timedelta(seconds=deadline),
        "last_tick": baseline if has_last_tick else None,
        "created_at": baseline if not has_last_tick else baseline - timedelta(days=400),
        "suspended": False,
        "max_missed_records": records,
    }
    decision = decide(now=now, **args)
    due = croniter_ticks(schedule, baseline, now - timedelta(seconds=jitter))
    window_start = now - timedelta(seconds=jitter + deadline)

    # every due tick is fired, listed or counted; only the newest may fire, inside its window
    fired = [decision.fire] if decision.fire else []
    listed = [m.tick for m in decision.missed] + fired
    assert len(listed) + decision.missed_overflow == len(due)
    assert listed == due[len(due) - len(listed) :]
    if due:
        assert decision.last_tick == due[-1]
        assert (decision.fire == due[-1]) == (due[-1] >= window_start)
    else:
        assert decision.last_tick == baseline
        assert decision.fire is None
    for m in decision.missed:
        expected = SUPERSEDED if m.tick >= window_start else EXCEEDED
        assert m.reason == expected
    assert len(decision.missed) <= records

    # the next run is the first tick after the watermark, and it is in the future
    upcoming = croniter(schedule, decision.last_tick.replace(tzinfo=None)).get_next(datetime)
    assert decision.next_due == upcoming.replace(tzinfo=UTC) + timedelta(seconds=jitter)
    assert decision.next_due > now
    assert decision.requeue_after == decision.next_due - now

    # persisting the watermark makes the decision idempotent
    again = decide(now=now, **{**args, "last_tick": decision.last_tick})
    assert (again.fire, again.missed, again.missed_overflow) == (None, [], 0)
    assert again.next_due == decision.next_due

    # suspended: nothing fires or is missed, and resuming right after fires nothing
    paused = decide(now=now, **{**args, "suspended": True})
    assert (paused.fire, paused.missed, paused.missed_overflow) == (None, [], 0)
    resumed = decide(now=now, **{**args, "last_tick": paused.last_tick})
    assert (resumed.fire, resumed.missed) == (None, [])


# --- concurrency --------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("policy", "running", "expected"),
    [
        pytest.param(ConcurrencyPolicy.FORBID, [], ConcurrencyAction(start=True), id="forbid-idle"),
        pytest.param(
            ConcurrencyPolicy.REPLACE, [], ConcurrencyAction(start=True), id="replace-idle"
        ),
        pytest.param(
            ConcurrencyPolicy.FORBID,
            ["hourly-20260101-1000"],
            ConcurrencyAction(
                start=False, skip_reason="Forbid: hourly-20260101-1000 still running"
            ),
            id="forbid-busy",
        ),
        pytest.param(
            "Forbid",
            ["b", "a", "b"],
            ConcurrencyAction(start=False, skip_reason="Forbid: b, a still running"),
            id="forbid-names-each-once",
        ),
        pytest.param(
            ConcurrencyPolicy.REPLACE,
            ["b", "a", "b"],
            ConcurrencyAction(start=True, replace=["b", "a"]),
            id="replace-busy",
        ),
    ],
)
def test_concurrency_action(
    policy: ConcurrencyPolicy | str, running: list[str], expected: ConcurrencyAction
) -> None:
    assert concurrency_action(policy, running) == expected


def test_concurrency_action_refuses_unknown_policy() -> None:
    with pytest.raises(ValueError, match="Allow"):
        concurrency_action("Allow", ["a"])
