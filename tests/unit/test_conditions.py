"""Conditions as pure list updates, and the printer-column formats."""

from __future__ import annotations

import math
from datetime import UTC, datetime

import pytest
from hypothesis import given
from hypothesis import strategies as st

from lamassu_backup.builders.conditions import (
    COMPLETED,
    LAST_RUN_SUCCEEDED,
    READY,
    STALE,
    VERIFIED,
    get_condition,
    humanize_bytes,
    humanize_duration,
    is_true,
    set_condition,
)
from lamassu_backup.models.common import Condition, ConditionStatus
from lamassu_backup.models.types import parse_duration

T0 = datetime(2026, 11, 24, 10, 0, tzinfo=UTC)
T1 = datetime(2026, 11, 24, 11, 0, tzinfo=UTC)
TRUE, FALSE, UNKNOWN = ConditionStatus.TRUE, ConditionStatus.FALSE, ConditionStatus.UNKNOWN


def cond(
    type_: str,
    status: ConditionStatus,
    reason: str = "R",
    when: datetime | None = T0,
    generation: int | None = 1,
) -> Condition:
    return Condition(
        type=type_,
        status=status,
        reason=reason,
        message="m",
        last_transition_time=when,
        observed_generation=generation,
    )


def test_constants_are_the_documented_types() -> None:
    assert (READY, STALE, LAST_RUN_SUCCEEDED, VERIFIED, COMPLETED) == (
        "Ready",
        "Stale",
        "LastRunSucceeded",
        "Verified",
        "Completed",
    )


@pytest.mark.parametrize(
    ("before", "status", "expected_time", "expected_types"),
    [
        pytest.param([], TRUE, T1, [READY], id="added"),
        pytest.param([cond(READY, TRUE)], TRUE, T0, [READY], id="same-status-keeps-time"),
        pytest.param([cond(READY, FALSE)], TRUE, T1, [READY], id="flip-sets-time"),
        pytest.param([cond(READY, UNKNOWN)], "True", T1, [READY], id="from-unknown-str-status"),
        pytest.param([cond(READY, TRUE, when=None)], TRUE, T1, [READY], id="missing-time-filled"),
        pytest.param(
            [cond(STALE, FALSE), cond(READY, TRUE), cond(VERIFIED, TRUE)],
            FALSE,
            T1,
            [STALE, READY, VERIFIED],
            id="position-kept",
        ),
        pytest.param(
            [cond(STALE, FALSE), cond(VERIFIED, TRUE)],
            TRUE,
            T1,
            [STALE, VERIFIED, READY],
            id="appended-last",
        ),
        pytest.param(
            [cond(READY, TRUE), cond(STALE, FALSE), cond(READY, FALSE, when=T1)],
            TRUE,
            T0,
            [READY, STALE],
            id="duplicate-dropped",
        ),
    ],
)
def test_set_condition(
    before: list[Condition],
    status: ConditionStatus | str,
    expected_time: datetime,
    expected_types: list[str],
) -> None:
    snapshot = [c.model_copy(deep=True) for c in before]
    after = set_condition(
        before, type=READY, status=status, reason="Ok", message="fine", now=T1, generation=7
    )
    assert before == snapshot  # the input is not modified
    assert [c.type for c in after] == expected_types
    ready = get_condition(after, READY)
    assert ready is not None
    assert (ready.status, ready.reason, ready.message) == (ConditionStatus(status), "Ok", "fine")
    assert ready.last_transition_time == expected_time
    assert ready.observed_generation == 7
    others = [c for c in after if c.type != READY]
    assert others == [c for c in snapshot if c.type != READY]


def test_set_condition_is_stable_when_reapplied() -> None:
    once = set_condition(
        [cond(STALE, TRUE)], type=READY, status=TRUE, reason="Ok", message="", now=T0, generation=2
    )
    twice = set_condition(
        once, type=READY, status=TRUE, reason="Ok", message="", now=T1, generation=2
    )
    assert twice == once


@pytest.mark.parametrize(
    ("status", "now", "match"),
    [
        pytest.param("Maybe", T1, "Maybe", id="bad-status"),
        pytest.param(TRUE, datetime(2026, 1, 1), "timezone-aware", id="naive-now"),
    ],
)
def test_set_condition_refuses(status: str, now: datetime, match: str) -> None:
    with pytest.raises(ValueError, match=match):
        set_condition([], type=READY, status=status, reason="R", message="", now=now, generation=1)


@pytest.mark.parametrize(
    ("conditions", "expected"),
    [
        pytest.param([], False, id="missing"),
        pytest.param([cond(READY, TRUE)], True, id="true"),
        pytest.param([cond(READY, FALSE)], False, id="false"),
        pytest.param([cond(READY, UNKNOWN)], False, id="unknown"),
        pytest.param([cond(STALE, TRUE)], False, id="other-type"),
    ],
)
def test_is_true(conditions: list[Condition], expected: bool) -> None:
    assert is_true(conditions, READY) is expected
    assert (get_condition(conditions, READY) is not None) == any(
        c.type == READY for c in conditions
    )


@pytest.mark.parametrize(
    ("size", "text"),
    [
        pytest.param(0, "0 B", id="zero"),
        pytest.param(1023, "1023 B", id="bytes"),
        pytest.param(1024, "1.0 KiB", id="kib"),
        pytest.param(1536, "1.5 KiB", id="kib-half"),
        pytest.param(1024**2 - 1, "1.0 MiB", id="rounds-up-a-unit"),
        pytest.param(1288490189, "1.2 GiB", id="gib"),
        pytest.param(5 * 1024**4, "5.0 TiB", id="tib"),
        pytest.param(3 * 1024**5, "3.0 PiB", id="pib"),
        pytest.param(2**70, "1024.0 EiB", id="beyond-exbibytes"),
    ],
)
def test_humanize_bytes(size: int, text: str) -> None:
    assert humanize_bytes(size) == text


def test_humanize_bytes_refuses_negative() -> None:
    with pytest.raises(ValueError, match="negative"):
        humanize_bytes(-1)


@given(st.integers(0, 2**62))
def test_humanize_bytes_is_within_rounding(size: int) -> None:
    number, unit = humanize_bytes(size).split()
    scale = {"B": 1, "KiB": 2**10, "MiB": 2**20, "GiB": 2**30, "TiB": 2**40, "PiB": 2**50}
    value = float(number) * scale.get(unit, 2**60)
    assert abs(value - size) <= 0.05 * scale.get(unit, 2**60) + 0.5


@pytest.mark.parametrize(
    ("seconds", "text"),
    [
        pytest.param(0, "0s", id="zero"),
        pytest.param(0.9, "0s", id="under-a-second"),
        pytest.param(59, "59s", id="seconds"),
        pytest.param(60, "1m", id="minute"),
        pytest.param(303, "5m3s", id="minutes-seconds"),
        pytest.param(3600, "1h", id="hour"),
        pytest.param(3605, "1h", id="seconds-dropped-after-hours"),
        pytest.param(3 * 3600 + 12 * 60 + 25, "3h12m", id="hours-minutes"),
        pytest.param(86400, "1d", id="day"),
        pytest.param(90061, "1d1h", id="days-hours"),
        pytest.param(2 * 86400 + 59, "2d", id="two-units-at-most"),
        pytest.param(-303, "-5m3s", id="negative"),
        pytest.param(-0.4, "0s", id="negative-under-a-second"),
    ],
)
def test_humanize_duration(seconds: float, text: str) -> None:
    assert humanize_duration(seconds) == text


@pytest.mark.parametrize("value", [math.inf, -math.inf, math.nan])
def test_humanize_duration_refuses_non_finite(value: float) -> None:
    with pytest.raises(ValueError, match="finite"):
        humanize_duration(value)


@given(st.floats(0, 400 * 86400, allow_nan=False))
def test_humanize_duration_never_overstates(seconds: float) -> None:
    text = humanize_duration(seconds)
    shown = parse_duration(text).total_seconds()
    assert shown <= seconds
    # two units at most: what is dropped is less than one of the unit after the largest shown
    largest = text.lstrip("0123456789")[0]
    resolution = {"d": 3600, "h": 60, "m": 1, "s": 1}[largest]
    assert seconds - shown < resolution
