"""Typed scalar values used by the resource models: durations, cron schedules, quantities.

They parse once, at the edge, so the rest of the code works with ``timedelta`` and validated
strings instead of re-parsing text. Each carries the JSON schema the CRD needs, so the apiserver
rejects the same bad input the models reject.
"""

from __future__ import annotations

import re
import zoneinfo
from datetime import UTC, datetime, timedelta
from typing import Annotated, Any

from croniter import CroniterBadDateError, croniter
from pydantic import AfterValidator, BeforeValidator, PlainSerializer, WithJsonSchema

_DURATION_UNITS = {"s": 1, "m": 60, "h": 3600, "d": 86400, "w": 7 * 86400}
_DURATION_RE = re.compile(r"^(?:[0-9]+[smhdw])+$")
_DURATION_PART_RE = re.compile(r"([0-9]+)([smhdw])")
DURATION_PATTERN = r"^([0-9]+[smhdw])+$"
MAX_DURATION = timedelta(days=36500)
"""No duration of a policy means anything beyond a century; past it, date arithmetic overflows."""

DURATION_MAX_LENGTH = 40
# What the apiserver accepts: one to four parts, each with few enough digits that no sum can
# overflow a date (at most ~1,100 years); the models then refuse anything above MAX_DURATION.
DURATION_CEL = (
    "self.matches('^(([0-9]{1,9}s)|([0-9]{1,7}m)|([0-9]{1,6}h)|([0-9]{1,5}d)|([0-9]{1,4}w)){1,4}$')"
)
DURATION_MESSAGE = (
    "must be a duration such as 30s, 15m, 1h30m, 90d or 2w (one to four parts, each a number "
    "and a unit s, m, h, d or w; at most 100 years)"
)

_RANDOM_FIELD = re.compile(r"(?<![a-z])[rh](?![a-z])", re.IGNORECASE)
"""croniter's R and H fields are random: a schedule must be the same on every evaluation."""
_NEVER_BASE = datetime(2026, 1, 1, tzinfo=UTC)

CRON_MACROS = (
    "@yearly",
    "@annually",
    "@monthly",
    "@weekly",
    "@daily",
    "@midnight",
    "@hourly",
)
CRON_PATTERN = r"^(@(yearly|annually|monthly|weekly|daily|midnight|hourly)|\S+( +\S+){4})$"


def parse_duration(value: Any) -> timedelta:
    """Parse ``90s``, ``30m``, ``1h30m``, ``90d``, ``2w`` into a timedelta.

    Days and weeks are accepted (unlike Go's ``time.ParseDuration``) because retention and
    recovery-point objectives are naturally written in days.
    """
    if isinstance(value, timedelta):
        return value
    if isinstance(value, bool) or not isinstance(value, str | int):
        raise ValueError("a duration is a string such as '30m', '24h' or '90d'")
    if isinstance(value, int):
        if value < 0:
            raise ValueError("a duration cannot be negative")
        return _bounded(value, value)
    text = value.strip()
    if not _DURATION_RE.match(text):
        raise ValueError(
            f"invalid duration {value!r}: use a number and a unit (s, m, h, d, w), "
            "e.g. '30m' or '90d'"
        )
    seconds = sum(int(n) * _DURATION_UNITS[u] for n, u in _DURATION_PART_RE.findall(text))
    return _bounded(seconds, value)


def _bounded(seconds: int, original: Any) -> timedelta:
    """Refuse before building the timedelta: a huge value must be an error, not an OverflowError."""
    if seconds > MAX_DURATION.total_seconds():
        raise ValueError(
            f"duration {original!r} is longer than 100 years (36500d); use a shorter one"
        )
    return timedelta(seconds=seconds)


def at_least(minimum: timedelta, why: str) -> AfterValidator:
    """A validator refusing durations below ``minimum``, saying why the floor exists."""

    def check(value: timedelta) -> timedelta:
        if value < minimum:
            raise ValueError(f"must be at least {format_duration(minimum)}: {why}")
        return value

    return AfterValidator(check)


def format_duration(value: timedelta) -> str:
    """Render a timedelta in the largest exact units, the inverse of :func:`parse_duration`."""
    seconds = int(value.total_seconds())
    if seconds == 0:
        return "0s"
    parts: list[str] = []
    for unit in ("w", "d", "h", "m", "s"):
        size = _DURATION_UNITS[unit]
        if unit == "w" and seconds % size != 0:
            continue  # weeks only when exact: '10d' reads better than '1w3d'
        count, seconds = divmod(seconds, size)
        if count:
            parts.append(f"{count}{unit}")
    return "".join(parts)


def validate_cron(value: str) -> str:
    """Accept 5-field cron or a macro such as ``@hourly``; seconds fields are refused."""
    text = " ".join(value.split())
    if text.startswith("@"):
        if text not in CRON_MACROS:
            raise ValueError(f"unknown cron macro {value!r}; use one of {', '.join(CRON_MACROS)}")
        return text
    if len(text.split(" ")) != 5:
        raise ValueError(
            f"invalid cron schedule {value!r}: five fields (minute hour day month weekday) "
            "or a macro such as @hourly"
        )
    if _RANDOM_FIELD.search(text):
        raise ValueError(
            f"cron schedule {value!r} uses a random or hashed field (R/H); "
            "use spec.jitter to spread runs deterministically"
        )
    if not croniter.is_valid(text):
        raise ValueError(f"invalid cron schedule {value!r}")
    try:
        croniter(text, _NEVER_BASE).get_next(datetime)
    except (CroniterBadDateError, ValueError):
        raise ValueError(
            f"cron schedule {value!r} never fires: no tick matches (e.g. February 30th)"
        ) from None
    return text


def validate_time_zone(value: str) -> str:
    """Refuse time zones the operator could not compute schedules in."""
    try:
        zoneinfo.ZoneInfo(value)
    except (zoneinfo.ZoneInfoNotFoundError, ValueError) as exc:
        raise ValueError(
            f"unknown time zone {value!r}; use an IANA name such as 'Etc/UTC'"
        ) from exc
    return value


def _quantity(value: Any) -> str:
    if isinstance(value, bool) or not isinstance(value, str | int | float):
        raise ValueError("a quantity is a number or a string such as '500m' or '256Mi'")
    return str(value)


Duration = Annotated[
    timedelta,
    BeforeValidator(parse_duration),
    PlainSerializer(format_duration, return_type=str),
    WithJsonSchema(
        {
            "type": "string",
            "maxLength": DURATION_MAX_LENGTH,
            "x-kubernetes-validations": [{"rule": DURATION_CEL, "message": DURATION_MESSAGE}],
        }
    ),
]
"""A duration written as ``30m``, ``24h``, ``90d``; held as a timedelta (at most 100 years)."""

CronSchedule = Annotated[
    str,
    AfterValidator(validate_cron),
    WithJsonSchema({"type": "string", "pattern": CRON_PATTERN}),
]
"""A 5-field cron expression or macro, validated with croniter."""

TimeZone = Annotated[str, AfterValidator(validate_time_zone)]
"""An IANA time zone name."""

Quantity = Annotated[
    str,
    BeforeValidator(_quantity),
    WithJsonSchema(
        {
            "x-kubernetes-int-or-string": True,
            "anyOf": [{"type": "integer"}, {"type": "string"}],
        }
    ),
]
"""A Kubernetes resource quantity (``1``, ``500m``, ``256Mi``)."""
