"""Standard Kubernetes conditions as small pure functions, and the printer-column formats.

Status is rebuilt by applying these to the current list and patching once (as cloudnative-pg's
status transactions do); ``lastTransitionTime`` moves only when the status flips, so a condition
that stays False for a week says so, instead of looking fresh at every reconcile.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from datetime import datetime

from ..models.common import Condition, ConditionStatus
from .schedule import require_utc

READY = "Ready"
"""The policy is valid and its dependencies (Secrets, bucket) are usable."""

STALE = "Stale"
"""At least one component's last success is older than its recovery-point objective."""

LAST_RUN_SUCCEEDED = "LastRunSucceeded"
"""The newest finished run completed every component."""

VERIFIED = "Verified"
"""A test restore succeeded recently enough (verification.maxAge)."""

COMPLETED = "Completed"
"""On a LamassuBackup or LamassuRestore: the run has finished, successfully or not."""


def set_condition(
    conditions: Sequence[Condition],
    *,
    type: str,  # the Kubernetes field name, so call sites read like the API
    status: ConditionStatus | str,
    reason: str,
    message: str,
    now: datetime,
    generation: int | None,
) -> list[Condition]:
    """A new list with condition ``type`` set; the input is not modified.

    ``lastTransitionTime`` becomes ``now`` when the status changes (or was never recorded) and is
    kept otherwise. The position of an existing condition is kept and a new one is appended, so
    ``kubectl describe`` output does not reshuffle; a duplicate of ``type`` (written by hand) is
    dropped, as the API allows one condition per type.
    """
    status = ConditionStatus(status)
    now = require_utc(now, "now")
    result: list[Condition] = []
    found = False
    for condition in conditions:
        if condition.type != type:
            result.append(condition)
            continue
        if found:
            continue
        found = True
        unchanged = condition.status == status and condition.last_transition_time is not None
        result.append(
            Condition(
                type=type,
                status=status,
                reason=reason,
                message=message,
                last_transition_time=condition.last_transition_time if unchanged else now,
                observed_generation=generation,
            )
        )
    if not found:
        result.append(
            Condition(
                type=type,
                status=status,
                reason=reason,
                message=message,
                last_transition_time=now,
                observed_generation=generation,
            )
        )
    return result


def get_condition(conditions: Sequence[Condition], type: str) -> Condition | None:
    """The condition of ``type``, or None."""
    return next((c for c in conditions if c.type == type), None)


def is_true(conditions: Sequence[Condition], type: str) -> bool:
    """True only when the condition exists and is True (Unknown and missing are not True)."""
    condition = get_condition(conditions, type)
    return condition is not None and condition.status == ConditionStatus.TRUE


_BYTE_UNITS = ("KiB", "MiB", "GiB", "TiB", "PiB", "EiB")


def humanize_bytes(n: int) -> str:
    """``1288490189`` -> ``1.2 GiB``: binary units, one decimal, as ``kubectl`` shows quantities."""
    if n < 0:
        raise ValueError("a size cannot be negative")
    if n < 1024:
        return f"{n} B"
    value = float(n)
    for unit in _BYTE_UNITS:
        value /= 1024
        # move up when rounding would print 1024.0 of this unit
        if round(value, 1) < 1024 or unit == _BYTE_UNITS[-1]:
            return f"{value:.1f} {unit}"
    raise AssertionError("unreachable")  # pragma: no cover


_TIME_UNITS = (("d", 86400), ("h", 3600), ("m", 60), ("s", 1))


def humanize_duration(seconds: float) -> str:
    """``303`` -> ``5m3s``, ``11545`` -> ``3h12m``: the two largest units, truncated.

    Two units are what a person reads in a column; truncation never overstates an age.
    """
    if not math.isfinite(seconds):
        raise ValueError("a duration must be finite")
    sign = "-" if seconds < 0 else ""
    remaining = int(abs(seconds))
    parts: list[str] = []
    for unit, size in _TIME_UNITS:
        count, remaining = divmod(remaining, size)
        if parts:
            if count:
                parts.append(f"{count}{unit}")
            break
        if count:
            parts.append(f"{count}{unit}")
    return sign + "".join(parts) if parts else "0s"
