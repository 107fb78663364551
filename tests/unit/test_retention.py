"""Retention: GFS keep rules, maxAge, and the protections no rule can override."""

from __future__ import annotations

import random
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from lamassu_backup.builders.retention import BackupInfo, RetentionPlan, select_expired
from lamassu_backup.models.policy import Retention

NOW = datetime(2026, 11, 24, 12, 0, tzinfo=UTC)  # a Tuesday, ISO week 2026-W48
MADRID = "Europe/Madrid"
NEWEST = "newest completed"
UNSELECTED = "not selected by any keep rule"


def z(text: str) -> datetime:
    return datetime.fromisoformat(text).replace(tzinfo=UTC)


def done(name: str, when: str | None, phase: str = "Completed", **flags: Any) -> BackupInfo:
    return BackupInfo(name, phase, z(when) if when else None, **flags)


def ago(name: str, delta: timedelta, phase: str = "Completed", **flags: Any) -> BackupInfo:
    return BackupInfo(name, phase, NOW - delta, **flags)


def rules(**changes: Any) -> Retention:
    """Every rule off unless named: the model's defaults would hide what a case tests."""
    base: dict[str, Any] = {
        "keep_last": None,
        "keep_hourly": None,
        "keep_daily": None,
        "keep_weekly": None,
        "keep_monthly": None,
        "keep_yearly": None,
        "max_age": None,
        "keep_verified": 0,
        "keep_failed": 0,
    }
    return Retention(**{**base, **changes})


DAY = timedelta(days=1)
Keep = dict[str, tuple[str, ...]]

CASES = [
    pytest.param(
        [done(n, f"2026-11-24T{h:02d}:00") for n, h in zip("abcde", range(8, 13), strict=True)],
        rules(keep_last=3),
        "Etc/UTC",
        NOW,
        {"c": ("last 3",), "d": ("last 3",), "e": (NEWEST, "last 3")},
        {"a": UNSELECTED, "b": UNSELECTED},
        id="keep-last",
    ),
    pytest.param(
        [
            done("d20a", "2026-11-20T10:00"),
            done("d20b", "2026-11-20T18:00"),
            done("d22", "2026-11-22T09:00"),
            done("d24a", "2026-11-24T08:00"),
            done("d24b", "2026-11-24T10:00"),
        ],
        rules(keep_daily=3),
        "Etc/UTC",
        NOW,
        {
            "d24b": (NEWEST, "daily 2026-11-24"),
            "d22": ("daily 2026-11-22",),
            "d20b": ("daily 2026-11-20",),
        },
        {"d20a": UNSELECTED, "d24a": UNSELECTED},
        id="daily-counts-only-days-with-a-set",
    ),
    pytest.param(
        [
            done("sat", "2026-11-21T12:00"),
            done("sun", "2026-11-22T20:00"),
            done("mon", "2026-11-23T01:00"),
        ],
        rules(keep_weekly=2),
        "Etc/UTC",
        NOW,
        {"mon": (NEWEST, "weekly 2026-W48"), "sun": ("weekly 2026-W47",)},
        {"sat": UNSELECTED},
        id="iso-weeks-start-on-monday",
    ),
    pytest.param(
        [
            done("mon-w53", "2026-12-28T12:00"),
            done("sat-w53", "2027-01-02T12:00"),
            done("mon-w01", "2027-01-04T12:00"),
        ],
        rules(keep_weekly=2),
        "Etc/UTC",
        z("2027-01-05T00:00"),
        {"mon-w01": (NEWEST, "weekly 2027-W01"), "sat-w53": ("weekly 2026-W53",)},
        {"mon-w53": UNSELECTED},
        id="iso-week-year",
    ),
    pytest.param(
        [
            done("a", "2026-11-23T22:30"),
            done("b", "2026-11-23T23:30"),
            done("c", "2026-11-22T12:00"),
        ],
        rules(keep_daily=2),
        "Etc/UTC",
        NOW,
        {"b": (NEWEST, "daily 2026-11-23"), "c": ("daily 2026-11-22",)},
        {"a": UNSELECTED},
        id="days-in-utc",
    ),
    pytest.param(
        [
            done("a", "2026-11-23T22:30"),  # 23:30 in Madrid
            done("b", "2026-11-23T23:30"),  # 00:30 on the 24th in Madrid
            done("c", "2026-11-22T12:00"),
        ],
        rules(keep_daily=2),
        MADRID,
        NOW,
        {"b": (NEWEST, "daily 2026-11-24"), "a": ("daily 2026-11-23",)},
        {"c": UNSELECTED},
        id="days-in-policy-time-zone",
    ),
    pytest.param(
        [
            done("h10a", "2026-11-24T10:05"),
            done("h10b", "2026-11-24T10:50"),
            done("h11a", "2026-11-24T11:10"),
            done("h11b", "2026-11-24T11:40"),
        ],
        rules(keep_hourly=2),
        "Etc/UTC",
        NOW,
        {"h11b": (NEWEST, "hourly 2026-11-24T11"), "h10b": ("hourly 2026-11-24T10",)},
        {"h10a": UNSELECTED, "h11a": UNSELECTED},
        id="hourly",
    ),
    pytest.param(
        [
            done("y24", "2024-06-01T00:00"),
            done("mar25", "2025-03-10T00:00"),
            done("dec25", "2025-12-31T23:00"),
            done("jan26", "2026-01-15T00:00"),
            done("nov26", "2026-11-01T00:00"),
        ],
        rules(keep_monthly=2, keep_yearly=2),
        "Etc/UTC",
        NOW,
        {
            "nov26": (NEWEST, "monthly 2026-11", "yearly 2026"),
            "jan26": ("monthly 2026-01",),
            "dec25": ("yearly 2025",),
        },
        {"y24": UNSELECTED, "mar25": UNSELECTED},
        id="monthly-and-yearly",
    ),
    pytest.param(
        [
            done("dec25", "2025-12-31T23:00"),  # 2026-01-01 00:00 in Madrid
            done("jun25", "2025-06-01T00:00"),
            done("nov26", "2026-11-01T00:00"),
        ],
        rules(keep_yearly=2),
        MADRID,
        NOW,
        {"nov26": (NEWEST, "yearly 2026"), "jun25": ("yearly 2025",)},
        {"dec25": UNSELECTED},
        id="years-in-policy-time-zone",
    ),
    pytest.param(
        [ago("new", DAY), ago("old", 10 * DAY)],
        rules(keep_daily=30, max_age=timedelta(days=7)),
        "Etc/UTC",
        NOW,
        {"new": (NEWEST, "daily 2026-11-23")},
        {"old": "older than maxAge 1w"},
        id="max-age-overrides-keep-rules",
    ),
    pytest.param(
        [ago("new", 7 * DAY), ago("old", 7 * DAY + timedelta(seconds=1))],
        rules(keep_last=5, max_age=timedelta(days=7)),
        "Etc/UTC",
        NOW,
        {"new": (NEWEST, "last 5")},
        {"old": "older than maxAge 1w"},
        id="max-age-is-strict",
    ),
    pytest.param(
        [ago("only", 100 * DAY)],
        rules(keep_last=5, max_age=timedelta(days=90)),
        "Etc/UTC",
        NOW,
        {"only": (NEWEST,)},
        {},
        id="max-age-never-deletes-newest",
    ),
    pytest.param(
        [ago("v", 60 * DAY, verified=True), ago("o", 40 * DAY), ago("n", DAY)],
        rules(keep_last=1, keep_verified=1, max_age=timedelta(days=30)),
        "Etc/UTC",
        NOW,
        {"n": (NEWEST, "last 1"), "v": ("verified (newest 1)",)},
        {"o": "older than maxAge 30d"},
        id="max-age-never-deletes-newest-verified",
    ),
    pytest.param(
        [
            ago("v1", 3 * DAY, verified=True),
            ago("v2", 2 * DAY, verified=True),
            ago("v3", DAY, verified=True),
            ago("x", timedelta(hours=1)),
        ],
        rules(keep_last=1, keep_verified=2),
        "Etc/UTC",
        NOW,
        {
            "x": (NEWEST, "last 1"),
            "v3": ("verified (newest 2)",),
            "v2": ("verified (newest 2)",),
        },
        {"v1": UNSELECTED},
        id="keep-verified-counts-the-newest-verified",
    ),
    pytest.param(
        [ago("v", 2 * DAY, verified=True), ago("x", DAY)],
        rules(keep_last=1, keep_verified=0),
        "Etc/UTC",
        NOW,
        {"x": (NEWEST, "last 1")},
        {"v": UNSELECTED},
        id="keep-verified-zero-protects-none",
    ),
    pytest.param(
        [
            ago("v", 2 * DAY, phase="PartiallyFailed", verified=True),
            ago("x", DAY),
        ],
        rules(keep_last=1, keep_verified=1),
        "Etc/UTC",
        NOW,
        {"x": (NEWEST, "last 1")},
        {"v": "failed run beyond keepFailed 0"},
        id="only-completed-sets-count-as-verified",
    ),
    pytest.param(
        [
            ago("pinned", 400 * DAY, pinned=True),
            done("running", None, "Running"),
            done("pending", None, "Pending"),
            done("pinned-running", None, "Running", pinned=True),
            done("untimed", None),
            done("failed-untimed", None, "Failed"),
            ago("failed-pinned", 300 * DAY, phase="Failed", pinned=True),
            ago("new", DAY),
        ],
        rules(keep_last=1, max_age=timedelta(days=30)),
        "Etc/UTC",
        NOW,
        {
            "pinned": ("pinned",),
            "running": ("in progress",),
            "pending": ("in progress",),
            "pinned-running": ("pinned", "in progress"),
            "untimed": ("no completion time",),
            "failed-untimed": ("no completion time",),
            "failed-pinned": ("pinned",),
            "new": (NEWEST, "last 1"),
        },
        {},
        id="protected-whatever-the-rules",
    ),
    pytest.param(
        [
            ago("c", 10 * DAY),
            ago("f1", 5 * DAY, phase="Failed"),
            ago("f2", 4 * DAY, phase="PartiallyFailed"),
            ago("f3", 3 * DAY, phase="Failed"),
            ago("f4", 2 * DAY, phase="PartiallyFailed"),
            ago("f5", DAY, phase="Failed"),
            ago("f6", 6 * DAY, phase="Failed", pinned=True),
        ],
        rules(keep_last=5, keep_failed=3),
        "Etc/UTC",
        NOW,
        {
            "c": (NEWEST, "last 5"),
            "f3": ("failed (newest 3)",),
            "f4": ("failed (newest 3)",),
            "f5": ("failed (newest 3)",),
            "f6": ("pinned",),
        },
        {
            "f1": "failed run beyond keepFailed 3",
            "f2": "failed run beyond keepFailed 3",
        },
        id="keep-failed",
    ),
    pytest.param(
        [
            done("yesterday", "2026-11-23T09:00"),
            done("today", "2026-11-24T09:00"),
            done("partial", "2026-11-24T11:00", "PartiallyFailed"),
        ],
        rules(keep_daily=2, keep_last=1),
        "Etc/UTC",
        NOW,
        {"today": (NEWEST, "last 1", "daily 2026-11-24"), "yesterday": ("daily 2026-11-23",)},
        {"partial": "failed run beyond keepFailed 0"},
        id="partially-failed-takes-no-slot",
    ),
    pytest.param(
        [ago("a", 40 * DAY), ago("b", 20 * DAY), ago("c", DAY)],
        rules(max_age=timedelta(days=30)),
        "Etc/UTC",
        NOW,
        {"b": ("no keep rule set",), "c": (NEWEST, "no keep rule set")},
        {"a": "older than maxAge 30d"},
        id="no-keep-rule-max-age-only",
    ),
    pytest.param(
        [ago("a", 40 * DAY), ago("b", DAY)],
        rules(keep_last=0, keep_daily=0, keep_weekly=0),
        "Etc/UTC",
        NOW,
        {"a": ("no keep rule set",), "b": (NEWEST, "no keep rule set")},
        {},
        id="zero-is-off",
    ),
    pytest.param(
        [done("a", "2026-11-24T10:00"), done("b", "2026-11-24T10:00")],
        rules(keep_last=1),
        "Etc/UTC",
        NOW,
        {"b": (NEWEST, "last 1")},
        {"a": UNSELECTED},
        id="ties-broken-by-name",
    ),
    pytest.param([], rules(keep_last=1), "Etc/UTC", NOW, {}, {}, id="nothing"),
]


@pytest.mark.parametrize(("backups", "retention", "time_zone", "now", "keep", "deleted"), CASES)
def test_select_expired(
    backups: list[BackupInfo],
    retention: Retention,
    time_zone: str,
    now: datetime,
    keep: Keep,
    deleted: dict[str, str],
) -> None:
    plan = select_expired(backups, retention, now, time_zone)
    assert plan.keep == keep
    assert plan.deleted_reasons == deleted
    assert set(plan.delete) == set(deleted)


def test_delete_is_oldest_first_and_counts_freed_bytes() -> None:
    backups = [
        ago("b", 3 * DAY, size_bytes=200),
        ago("d", DAY, size_bytes=1000),
        ago("a", 4 * DAY, size_bytes=None),
        ago("c", 2 * DAY, phase="Failed", size_bytes=30),
    ]
    plan = select_expired(backups, rules(keep_last=1), NOW)
    assert plan.delete == ("a", "b", "c")
    assert list(plan.deleted_reasons) == ["a", "b", "c"]
    assert plan.freed_bytes == 230


def test_the_model_defaults_keep_a_month_of_daily_sets() -> None:
    backups = [ago(f"h{i:03d}", timedelta(hours=i)) for i in range(24 * 40)]
    plan = select_expired(backups, Retention(), NOW)
    # keepLast 24: the newest 24 (back to 13:00 yesterday, which is also yesterday's daily);
    # keepDaily 30: 28 more, one a day from Nov 22 back to Oct 26; keepWeekly 12: 2 more, the
    # Sundays of ISO weeks 43 and 42 (the oldest set is Oct 15 13:00); keepMonthly: no more
    assert {f"h{i:03d}" for i in range(24)} <= set(plan.keep)
    assert len(plan.keep) == 24 + 28 + 2
    assert plan.keep["h037"] == ("daily 2026-11-22", "weekly 2026-W47")
    assert plan.delete[0] == "h959"


@pytest.mark.parametrize(
    ("make", "match"),
    [
        pytest.param(
            lambda: select_expired([ago("a", DAY), ago("a", 2 * DAY)], rules(), NOW),
            "duplicate",
            id="duplicate-names",
        ),
        pytest.param(
            lambda: select_expired([], rules(), datetime(2026, 1, 1)),
            "timezone-aware",
            id="naive-now",
        ),
        pytest.param(
            lambda: BackupInfo("a", "Completed", datetime(2026, 1, 1)),
            "timezone-aware",
            id="naive-completed-at",
        ),
        pytest.param(lambda: BackupInfo("a", "Done", None), "unknown phase", id="unknown-phase"),
        pytest.param(
            lambda: select_expired([], rules(), NOW, "Mars/Olympus"), "time zone", id="zone"
        ),
    ],
)
def test_select_expired_refuses(make: Any, match: str) -> None:
    with pytest.raises(ValueError, match=match):
        make()


# --- properties ---------------------------------------------------------------------------------

BASE = datetime(2026, 6, 1, tzinfo=UTC)
PHASES = ["Completed"] * 5 + ["PartiallyFailed", "Failed", "Running", "Pending"]
ZONES = st.sampled_from(["Etc/UTC", MADRID, "America/New_York", "Asia/Kolkata"])
RULE = st.one_of(st.none(), st.integers(0, 6))


@st.composite
def backup_sets(draw: st.DrawFn) -> list[BackupInfo]:
    count = draw(st.integers(0, 30))
    backups = []
    for i in range(count):
        phase = draw(st.sampled_from(PHASES))
        timed = phase not in ("Running", "Pending") and draw(st.integers(0, 15)) > 0
        # coarse choices produce ties and sets sharing a period
        minutes = draw(
            st.one_of(st.integers(0, 3 * 365 * 1440), st.sampled_from([0, 60, 1440, 10080, 44640]))
        )
        backups.append(
            BackupInfo(
                name=f"b{i:02d}",
                phase=phase,
                completed_at=BASE - timedelta(minutes=minutes) if timed else None,
                verified=draw(st.booleans()),
                pinned=draw(st.integers(0, 9)) == 0,
                size_bytes=draw(st.one_of(st.none(), st.integers(0, 10**12))),
            )
        )
    return backups


RETENTIONS = st.builds(
    lambda last, hourly, daily, weekly, monthly, yearly, age, verified, failed: Retention(
        keep_last=last,
        keep_hourly=hourly,
        keep_daily=daily,
        keep_weekly=weekly,
        keep_monthly=monthly,
        keep_yearly=yearly,
        max_age=age,
        keep_verified=verified,
        keep_failed=failed,
    ),
    RULE,
    RULE,
    RULE,
    RULE,
    RULE,
    RULE,
    st.one_of(st.none(), st.integers(1, 1200 * 24).map(lambda h: timedelta(hours=h))),
    st.integers(0, 3),
    st.integers(0, 3),
)
NOWS = st.integers(-2 * 1440, 400 * 1440).map(lambda m: BASE + timedelta(minutes=m))
PROTECTIONS = ("pinned", "in progress", "no completion time", NEWEST, "verified (newest")


def when(backup: BackupInfo) -> datetime:
    assert backup.completed_at is not None
    return backup.completed_at


def completed_newest_first(backups: list[BackupInfo]) -> list[BackupInfo]:
    timed = [b for b in backups if b.phase == "Completed" and b.completed_at is not None]
    return sorted(timed, key=lambda b: (when(b), b.name), reverse=True)


@settings(max_examples=120, deadline=None)
@given(backups=backup_sets(), retention=RETENTIONS, now=NOWS, time_zone=ZONES)
def test_retention_properties(
    backups: list[BackupInfo], retention: Retention, now: datetime, time_zone: str
) -> None:
    plan = select_expired(backups, retention, now, time_zone)
    names = {b.name for b in backups}
    by_name = {b.name: b for b in backups}

    # keep and delete partition the input; every decision has a reason
    assert set(plan.keep).isdisjoint(plan.delete)
    assert set(plan.keep) | set(plan.delete) == names
    assert len(plan.delete) == len(set(plan.delete))
    assert set(plan.deleted_reasons) == set(plan.delete)
    assert all(plan.keep.values())

    # never deleted: a newest completed set, the newest verified ones, pinned and unfinished sets
    completed = completed_newest_first(backups)
    if completed:
        newest_time = completed[0].completed_at
        assert any(b.name in plan.keep for b in completed if b.completed_at == newest_time)
    verified = [b for b in completed if b.verified]
    if retention.keep_verified and verified:
        kept_verified = [b for b in verified if b.name in plan.keep]
        assert len(kept_verified) >= min(retention.keep_verified, len(verified))
        cutoff = when(verified[min(retention.keep_verified, len(verified)) - 1])
        assert all(b.name in plan.keep for b in verified if when(b) > cutoff)
    for b in backups:
        if b.pinned or b.phase in ("Running", "Pending") or b.completed_at is None:
            assert b.name in plan.keep

    # maxAge: a kept Completed set older than it is kept only by a protection
    if retention.max_age is not None:
        for b in completed:
            if b.name in plan.keep and now - when(b) > retention.max_age:
                assert any(r.startswith(PROTECTIONS) for r in plan.keep[b.name]), plan.keep[b.name]

    # keepLast: the N newest are kept unless maxAge removed them
    for b in completed[: retention.keep_last or 0]:
        expired = retention.max_age is not None and now - when(b) > retention.max_age
        assert b.name in plan.keep or expired

    # failed records: exactly keepFailed of the unpinned ones are kept
    failed = [
        b
        for b in backups
        if b.phase in ("Failed", "PartiallyFailed") and b.completed_at and not b.pinned
    ]
    assert sum(b.name in plan.keep for b in failed) == min(retention.keep_failed, len(failed))

    # the deletion order is oldest first
    times = [when(by_name[n]) for n in plan.delete]
    assert times == sorted(times)

    # deterministic, whatever the input order
    shuffled = list(backups)
    random.Random(len(backups)).shuffle(shuffled)
    assert select_expired(shuffled, retention, now, time_zone) == plan

    # idempotent: planning again over what is left deletes nothing more
    left = [b for b in backups if b.name in plan.keep]
    again = select_expired(left, retention, now, time_zone)
    assert again.delete == ()
    assert isinstance(again, RetentionPlan)
