"""Posting the services' Events through kopf (the one place the handlers do it)."""

from __future__ import annotations

import asyncio
from collections.abc import Callable
from typing import TypeVar, cast

import kopf

from ..services.common import Event

R = TypeVar("R")


def post(events: list[Event]) -> None:
    """Post each Event on its object (the message bounded as the API wants it)."""
    for event in events:
        target = cast(kopf.Body, event.target)
        kopf.event(target, type=event.type, reason=event.reason, message=event.message[:1000])


async def in_thread(work: Callable[[], R], events_of: Callable[[R], list[Event]]) -> R:
    """Run ``work`` in a worker thread and post its Events from that same thread.

    Why there: kopf cancels a daemon once its filter stops matching (a restore's loop, as soon
    as the status it just saved says Completed). Posting after the ``await`` would then drop
    the Events of a step whose status is already written; from the thread they always go out
    (kopf's queue takes Events from any thread)."""

    def run() -> R:
        result = work()
        post(events_of(result))
        return result

    return await asyncio.to_thread(run)
