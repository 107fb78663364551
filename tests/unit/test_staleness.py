"""Staleness: each component measured against its recovery-point objective."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from lamassu_backup.builders.staleness import (
    AWAITING_FIRST_BACKUP,
    OBJECTIVE_EXCEEDED,
    WITHIN_OBJECTIVE,
    ComponentFreshness,
    assess,
)

NOW = datetime(2026, 11, 24, 12, 0, tzinfo=UTC)
H = timedelta(hours=1)
M = timedelta(minutes=1)
US = timedelta(microseconds=1)


def fresh(age: timedelta | None, rpo: timedelta) -> ComponentFreshness:
    return ComponentFreshness(NOW - age if age is not None else None, rpo)


@pytest.mark.parametrize(
    ("components", "created_ago", "stale", "reason", "message", "next_check"),
    [
        pytest.param(
            {"postgres": fresh(H, 2 * H)},
            30 * 24 * H,
            False,
            WITHIN_OBJECTIVE,
            "postgres: last success 1h ago, objective 2h",
            NOW + H + US,
            id="fresh",
        ),
        pytest.param(
            {"postgres": fresh(3 * H + 12 * M + 5 * timedelta(seconds=1), 2 * H)},
            30 * 24 * H,
            True,
            OBJECTIVE_EXCEEDED,
            "postgres: last success 3h12m ago, objective 2h",
            None,
            id="stale",
        ),
        pytest.param(
            {"postgres": fresh(2 * H, 2 * H)},
            30 * 24 * H,
            False,
            WITHIN_OBJECTIVE,
            "postgres: last success 2h ago, objective 2h",
            NOW + US,
            id="exactly-at-objective-is-fresh",
        ),
        pytest.param(
            {"postgres": fresh(2 * H + US, 2 * H)},
            30 * 24 * H,
            True,
            OBJECTIVE_EXCEEDED,
            "postgres: last success 2h ago, objective 2h",
            None,
            id="just-past-objective",
        ),
        pytest.param(
            {"vault": fresh(None, 25 * H)},
            10 * M,
            False,
            AWAITING_FIRST_BACKUP,
            "vault: awaiting first backup, objective 1d1h",
            NOW - 10 * M + 25 * H + US,
            id="new-policy-awaits-first-backup",
        ),
        pytest.param(
            {"vault": fresh(None, 25 * H)},
            26 * H,
            True,
            OBJECTIVE_EXCEEDED,
            "vault: never backed up, objective 1d1h",
            None,
            id="never-backed-up",
        ),
        pytest.param(
            {
                "postgres": fresh(3 * H + 12 * M, 2 * H),
                "vault": fresh(None, 25 * H),
                "config": fresh(24 * H, 8 * 24 * H),
            },
            30 * 24 * H,
            True,
            OBJECTIVE_EXCEEDED,
            "postgres: last success 3h12m ago, objective 2h; vault: never backed up, objective 1d1h",
            NOW + 7 * 24 * H + US,
            id="mixed-lists-only-the-stale",
        ),
        pytest.param(
            {"postgres": fresh(30 * M, 2 * H), "vault": fresh(None, 25 * H)},
            H,
            False,
            AWAITING_FIRST_BACKUP,
            "postgres: last success 30m ago, objective 2h; "
            "vault: awaiting first backup, objective 1d1h",
            NOW + 90 * M + US,
            id="one-awaiting",
        ),
        pytest.param(
            {"postgres": fresh(-5 * M, 2 * H)},
            H,
            False,
            WITHIN_OBJECTIVE,
            "postgres: last success 0s ago, objective 2h",
            NOW + 2 * H + 5 * M + US,
            id="clock-skew-success-in-the-future",
        ),
        pytest.param({}, H, False, WITHIN_OBJECTIVE, "no components", None, id="no-components"),
    ],
)
def test_assess(
    components: dict[str, ComponentFreshness],
    created_ago: timedelta,
    stale: bool,
    reason: str,
    message: str,
    next_check: datetime | None,
) -> None:
    report = assess(components, NOW, NOW - created_ago)
    assert (report.stale, report.reason, report.message) == (stale, reason, message)
    assert report.next_check == next_check
    assert list(report.components) == list(components)


def test_component_detail() -> None:
    report = assess({"postgres": fresh(3 * H, 2 * H), "vault": fresh(None, 25 * H)}, NOW, NOW - H)
    postgres, vault = report.components["postgres"], report.components["vault"]
    assert (postgres.stale, postgres.reason, postgres.age) == (True, OBJECTIVE_EXCEEDED, 3 * H)
    assert postgres.stale_after == NOW - H
    assert (vault.stale, vault.reason, vault.age) == (False, AWAITING_FIRST_BACKUP, None)
    assert vault.stale_after == NOW + 24 * H


@pytest.mark.parametrize(
    ("components", "now", "match"),
    [
        pytest.param({"p": ComponentFreshness(None, -H)}, NOW, "negative", id="negative-rpo"),
        pytest.param({}, datetime(2026, 1, 1), "timezone-aware", id="naive-now"),
        pytest.param(
            {"p": ComponentFreshness(datetime(2026, 1, 1), H)}, NOW, "timezone-aware", id="naive-ls"
        ),
    ],
)
def test_assess_refuses(
    components: dict[str, ComponentFreshness], now: datetime, match: str
) -> None:
    with pytest.raises(ValueError, match=match):
        assess(components, now, NOW - H)


SECONDS = st.integers(0, 10 * 24 * 3600).map(lambda s: timedelta(seconds=s))
COMPONENTS = st.dictionaries(
    st.sampled_from(["postgres", "vault", "config", "volumes", "awsKms"]),
    st.builds(
        ComponentFreshness,
        st.one_of(st.none(), SECONDS.map(lambda d: NOW - d)),
        SECONDS,
    ),
    max_size=5,
)


@settings(max_examples=100, deadline=None)
@given(components=COMPONENTS, created_ago=SECONDS)
def test_next_check_is_exactly_when_something_turns_stale(
    components: dict[str, ComponentFreshness], created_ago: timedelta
) -> None:
    created = NOW - created_ago
    report = assess(components, NOW, created)
    stale_now = {n for n, c in report.components.items() if c.stale}
    assert report.stale == bool(stale_now)
    if report.next_check is None:
        assert stale_now == set(components)
        return
    assert report.next_check > NOW
    just_before = assess(components, report.next_check - US, created)
    at = assess(components, report.next_check, created)
    assert {n for n, c in just_before.components.items() if c.stale} == stale_now
    assert {n for n, c in at.components.items() if c.stale} > stale_now
