"""Posting the services' Events through kopf (the one place the handlers do it)."""

from __future__ import annotations

from typing import cast

import kopf

from ..services.common import Event


def post(events: list[Event]) -> None:
    """Post each Event on its object (the message bounded as the API wants it)."""
    for event in events:
        target = cast(kopf.Body, event.target)
        kopf.event(target, type=event.type, reason=event.reason, message=event.message[:1000])
