"""Durations, cron schedules, time zones and quantities parse as users write them."""

from __future__ import annotations

from datetime import timedelta

import pytest
from hypothesis import given
from hypothesis import strategies as st
from pydantic import TypeAdapter, ValidationError

from lamassu_backup.models.types import (
    CronSchedule,
    Duration,
    Quantity,
    TimeZone,
    format_duration,
    parse_duration,
)

DURATION = TypeAdapter(Duration)
CRON = TypeAdapter(CronSchedule)


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("30s", timedelta(seconds=30)),
        ("30m", timedelta(minutes=30)),
        ("2h", timedelta(hours=2)),
        ("1h30m", timedelta(hours=1, minutes=30)),
        ("90d", timedelta(days=90)),
        ("2w", timedelta(weeks=2)),
        ("0s", timedelta(0)),
        (" 24h ", timedelta(hours=24)),
        (3600, timedelta(hours=1)),
    ],
)
def test_parse_duration(text: str | int, expected: timedelta) -> None:
    assert parse_duration(text) == expected
    assert DURATION.validate_python(text) == expected


@pytest.mark.parametrize("text", ["", "2 hours", "1.5h", "h", "-1h", "30", "1y", "PT2H"])
def test_parse_duration_refuses(text: str) -> None:
    with pytest.raises(ValueError, match="invalid duration"):
        parse_duration(text)


def test_duration_refuses_negative_and_bool() -> None:
    with pytest.raises(ValueError, match="negative"):
        parse_duration(-5)
    with pytest.raises(ValueError, match="duration is a string"):
        parse_duration(True)


@pytest.mark.parametrize(
    ("value", "text"),
    [
        (timedelta(0), "0s"),
        (timedelta(minutes=90), "1h30m"),
        (timedelta(days=14), "2w"),
        (timedelta(days=10), "10d"),
        (timedelta(days=1, seconds=1), "1d1s"),
    ],
)
def test_format_duration(value: timedelta, text: str) -> None:
    assert format_duration(value) == text
    assert DURATION.dump_python(value, mode="json") == text


@given(st.integers(min_value=0, max_value=10 * 365 * 86400))
def test_duration_round_trip(seconds: int) -> None:
    value = timedelta(seconds=seconds)
    assert parse_duration(format_duration(value)) == value


@pytest.mark.parametrize(
    "expr", ["0 * * * *", "*/15 * * * *", "0 3 * * 0", "@hourly", "@daily", "0  3 * *  1-5"]
)
def test_cron_accepts(expr: str) -> None:
    assert CRON.validate_python(expr) == " ".join(expr.split())


@pytest.mark.parametrize(
    ("expr", "message"),
    [
        ("every hour", "five fields"),
        ("0 0 * * * *", "five fields"),
        ("61 * * * *", "invalid cron schedule"),
        ("@fortnightly", "unknown cron macro"),
        ("* * 32 * *", "invalid cron schedule"),
        ("R * * * *", "random or hashed"),
        ("H 3 * * *", "random or hashed"),
        ("0 0 30 2 *", "never fires"),
    ],
)
def test_cron_refuses(expr: str, message: str) -> None:
    with pytest.raises(ValidationError, match=message):
        CRON.validate_python(expr)


def test_time_zone() -> None:
    adapter = TypeAdapter(TimeZone)
    assert adapter.validate_python("Europe/Madrid") == "Europe/Madrid"
    with pytest.raises(ValidationError, match="unknown time zone"):
        adapter.validate_python("Mars/Olympus")


@pytest.mark.parametrize(("value", "text"), [(1, "1"), ("500m", "500m"), (0.5, "0.5")])
def test_quantity(value: object, text: str) -> None:
    assert TypeAdapter(Quantity).validate_python(value) == text


def test_quantity_refuses_objects() -> None:
    with pytest.raises(ValidationError):
        TypeAdapter(Quantity).validate_python({"cpu": 1})
