"""The handlers' Event posting: Events of saved work go out even if kopf cancels the daemon."""

from __future__ import annotations

import asyncio
import contextlib
import threading

import pytest

from lamassu_backup.handlers import events as events_mod
from lamassu_backup.services.common import Event


def _event(reason: str) -> Event:
    return Event({"kind": "LamassuRestore", "metadata": {"name": "r"}}, "Normal", reason, "m")


def test_events_of_a_cancelled_await_are_still_posted(monkeypatch: pytest.MonkeyPatch) -> None:
    """kopf cancels a restore's daemon as soon as its saved phase is terminal: the Events of
    that last reconcile (ScalingUp, Completed) must not be lost with the cancelled await."""
    posted: list[str] = []
    done = threading.Event()
    release = threading.Event()

    def fake_post(events: list[Event]) -> None:
        posted.extend(e.reason for e in events)
        done.set()

    monkeypatch.setattr(events_mod, "post", fake_post)

    def work() -> list[Event]:
        release.wait(5)
        return [_event("ScalingUp"), _event("Completed")]

    async def scenario() -> None:
        task = asyncio.create_task(events_mod.in_thread(work, lambda evs: evs))
        await asyncio.sleep(0.05)
        task.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await task
        release.set()
        await asyncio.to_thread(done.wait, 5)

    asyncio.run(scenario())
    assert posted == ["ScalingUp", "Completed"]


def test_in_thread_returns_the_result_and_posts_its_events(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    posted: list[str] = []
    monkeypatch.setattr(events_mod, "post", lambda evs: posted.extend(e.reason for e in evs))
    result = asyncio.run(events_mod.in_thread(lambda: [_event("Planning")], lambda evs: evs))
    assert [e.reason for e in result] == ["Planning"]
    assert posted == ["Planning"]
