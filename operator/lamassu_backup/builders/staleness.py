"""Is a policy's data older than its recovery-point objectives? The ``Stale`` condition.

Staleness is measured from the last *success* of each component, not from the last run: a
schedule that never fires, runs that all fail and an operator that was down look the same to
the person who needs a restore, and all three must turn ``Stale`` (Crunchy #3624, CNPG #3660).
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from datetime import datetime, timedelta

from ..models.types import format_duration
from .conditions import humanize_duration
from .schedule import require_utc

WITHIN_OBJECTIVE = "WithinObjective"
OBJECTIVE_EXCEEDED = "ObjectiveExceeded"
AWAITING_FIRST_BACKUP = "AwaitingFirstBackup"

_TICK = timedelta(microseconds=1)


@dataclass(frozen=True)
class ComponentFreshness:
    """Input: when a component last succeeded, and its recovery-point objective."""

    last_success: datetime | None
    rpo: timedelta


@dataclass(frozen=True)
class ComponentStaleness:
    """Output for one component."""

    stale: bool
    reason: str
    """WithinObjective, ObjectiveExceeded or AwaitingFirstBackup."""
    age: timedelta | None
    """Since the last success; None when it never succeeded."""
    stale_after: datetime
    """The instant after which it is (or was) stale: last success (or creation) + objective."""
    summary: str
    """One line for a person, e.g. 'postgres: last success 3h12m ago, objective 2h'."""


@dataclass(frozen=True)
class StalenessReport:
    """The Stale condition's content, per-component detail, and when to look again."""

    stale: bool
    reason: str
    """ObjectiveExceeded when any component is stale; else AwaitingFirstBackup when one has not
    succeeded yet; else WithinObjective.
    """
    message: str
    components: dict[str, ComponentStaleness]
    next_check: datetime | None
    """The first instant at which a component fresh now turns stale (a timer for the operator);
    None when none is fresh. It is strictly after the boundary, so a timer firing there sees the
    change.
    """


def assess(
    components: Mapping[str, ComponentFreshness], now: datetime, created_at: datetime
) -> StalenessReport:
    """Assess every component: stale when ``now - last_success > rpo``.

    A component that never succeeded is measured from ``created_at``: a brand-new policy gets one
    objective's worth of grace (AwaitingFirstBackup), then it is stale like any other.
    """
    now = require_utc(now, "now")
    created = require_utc(created_at, "created_at")
    results: dict[str, ComponentStaleness] = {}
    for name, freshness in components.items():
        if freshness.rpo < timedelta(0):
            raise ValueError(f"{name}: recovery-point objective cannot be negative")
        objective = format_duration(freshness.rpo)
        if freshness.last_success is None:
            stale_after = created + freshness.rpo
            stale = now > stale_after
            results[name] = ComponentStaleness(
                stale=stale,
                reason=OBJECTIVE_EXCEEDED if stale else AWAITING_FIRST_BACKUP,
                age=None,
                stale_after=stale_after,
                summary=(
                    f"{name}: never backed up, objective {objective}"
                    if stale
                    else f"{name}: awaiting first backup, objective {objective}"
                ),
            )
            continue
        last = require_utc(freshness.last_success, f"{name} last_success")
        age = now - last
        stale = age > freshness.rpo
        results[name] = ComponentStaleness(
            stale=stale,
            reason=OBJECTIVE_EXCEEDED if stale else WITHIN_OBJECTIVE,
            age=age,
            stale_after=last + freshness.rpo,
            summary=(
                f"{name}: last success {humanize_duration(max(age, timedelta(0)).total_seconds())}"
                f" ago, objective {objective}"
            ),
        )

    stale_ones = [r for r in results.values() if r.stale]
    fresh_ones = [r for r in results.values() if not r.stale]
    if stale_ones:
        reason = OBJECTIVE_EXCEEDED
        message = "; ".join(r.summary for r in stale_ones)
    elif any(r.reason == AWAITING_FIRST_BACKUP for r in fresh_ones):
        reason = AWAITING_FIRST_BACKUP
        message = "; ".join(r.summary for r in fresh_ones)
    else:
        reason = WITHIN_OBJECTIVE
        message = "; ".join(r.summary for r in fresh_ones) or "no components"
    next_check = min((r.stale_after for r in fresh_ones), default=None)
    return StalenessReport(
        stale=bool(stale_ones),
        reason=reason,
        message=message,
        components=results,
        next_check=next_check + _TICK if next_check is not None else None,
    )
