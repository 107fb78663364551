"""Every policy's own loop: one pass (tick, then retention and discovery when due), then sleep.

The handler owns only the waiting (an asyncio wake-up signal); a pass runs here, in a worker
thread, and says what comes next: how long to sleep. What is due between passes lives here too:
retention after a run succeeded, discovery on its interval (the first one soon after start, but
spread over a minute so a thousand policies do not look into their buckets at once).
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from datetime import timedelta
from typing import Any

from ..builders import schedule
from ..clients.kube import KubeApi
from ..errors import LamassuBackupError
from ..models.resources import LamassuBackupPolicy
from . import discovery, retention
from .common import Event, RunSummary, Settings, now_utc, ref, summarize
from .policies import PolicyService
from .resources import Policy, parse_policy, policy_records

log = logging.getLogger("lamassu_backup")


def discovery_delay(namespace: str, name: str, interval: float) -> float:
    """A stable per-policy delay below one minute (and below the discovery interval)."""
    span = timedelta(seconds=max(1.0, min(60.0, interval)))
    return schedule.jitter_offset(f"{namespace}/{name}/discovery", span).total_seconds()


@dataclass
class Next:
    """What one pass did, and what comes next."""

    events: list[Event] = field(default_factory=list)
    sleep: float = 30.0
    """Seconds until the next pass, unless a change wakes the loop sooner."""


class PolicyLoop:
    """One policy's loop: what is due, and one pass at a time."""

    def __init__(self, loops: PolicyLoops, namespace: str, name: str) -> None:
        self.loops = loops
        self.namespace = namespace
        self.name = name
        interval = loops.settings.discovery_interval_seconds
        self.next_discovery = loops.clock() + discovery_delay(namespace, name, interval)

    def step(self, body: dict[str, Any], runs: Sequence[RunSummary]) -> Next:
        """One pass over a snapshot of the policy: parsed here, inside the guard, so neither a
        bad body nor a bug ends the loop (it is said, and the pass is retried)."""
        policy: Policy | None = None
        out = Next(sleep=self.loops.settings.policy_max_sleep_seconds)
        try:
            policy = parse_policy(body)
            self._tick(policy, runs, out)
            if isinstance(policy, LamassuBackupPolicy):
                if self.loops.take_retention(self.namespace, self.name):
                    out.events += self._retention(policy)
                if self._discovery_due():
                    out.events += discovery.discover(
                        self.loops.kube, policy, runs, now_utc()
                    ).events
        except LamassuBackupError as exc:
            target = ref(policy) if policy is not None else ref(body)
            out.events.append(Event(target, "Warning", exc.reason, exc.message))
            out.sleep = min(out.sleep, 30.0)
        except Exception:  # a bug must not end the policy's loop; it is logged and retried
            log.exception("policy %s/%s: tick failed", self.namespace, self.name)
            out.sleep = 30.0
        out.sleep = max(out.sleep, 0.5)
        return out

    def _tick(self, policy: Policy, runs: Sequence[RunSummary], out: Next) -> None:
        result = self.loops.policies.tick(policy, runs, now_utc())
        if result.patch:
            self.loops.kube.patch_status(
                "LamassuBackupPolicy", self.namespace, self.name, result.patch
            )
        out.events += result.events
        out.sleep = result.sleep.total_seconds()

    def _retention(self, policy: LamassuBackupPolicy) -> list[Event]:
        """Retention decides on fresh records, not the index: the run that just finished may
        not have reached the index yet."""
        kube = self.loops.kube
        runs = [summarize(b) for b in policy_records(kube, self.namespace, self.name)]
        report = retention.apply(kube, policy, runs, now_utc())
        if report.deleted or report.errors:
            kube.patch_status(
                "LamassuBackupPolicy",
                self.namespace,
                self.name,
                {"retention": report.status(now_utc())},
            )
        return report.events

    def _discovery_due(self) -> bool:
        now = self.loops.clock()
        if now < self.next_discovery:
            return False
        self.next_discovery = now + self.loops.settings.discovery_interval_seconds
        return True


class PolicyLoops:
    """Every running policy loop, and what wakes one: a change, or a run of it that ended."""

    def __init__(
        self,
        kube: KubeApi,
        policies: PolicyService,
        settings: Settings,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.kube = kube
        self.policies = policies
        self.settings = settings
        self.clock = clock
        self._wakers: dict[tuple[str, str], Callable[[], None]] = {}
        self._retention_due: set[tuple[str, str]] = set()
        self._lock = threading.Lock()

    def __len__(self) -> int:
        with self._lock:
            return len(self._wakers)

    def open(self, namespace: str, name: str, wake: Callable[[], None]) -> PolicyLoop:
        """A policy's loop starts; ``wake`` (thread-safe) cuts its sleep short.

        Its first pass applies retention: a pass cut short by a crash (a set's manifest deleted,
        the rest not yet) is finished now, before discovery calls that record Lost, after which
        retention would drop the record only and leave the set's objects in the bucket.
        """
        with self._lock:
            self._wakers[(namespace, name)] = wake
            self._retention_due.add((namespace, name))
        return PolicyLoop(self, namespace, name)

    def close(self, loop: PolicyLoop) -> None:
        """A policy's loop ended (the policy was deleted, or the operator stops)."""
        with self._lock:
            self._wakers.pop((loop.namespace, loop.name), None)

    def wake(self, namespace: str, name: str) -> None:
        """Run a policy's next pass now (if its loop runs)."""
        with self._lock:
            waker = self._wakers.get((namespace, name))
        if waker is not None:
            waker()

    def changed(self, namespace: str, name: str) -> None:
        """A policy's spec or annotations changed: re-check its Secrets, and tick now."""
        self.policies.invalidate(namespace, name)
        self.wake(namespace, name)

    def secret_changed(self, namespace: str, secret: str) -> None:
        """A Secret appeared or changed: the policies referring to it re-check and tick now."""
        for policy in self.policies.invalidate_secret(namespace, secret):
            self.wake(namespace, policy)

    def run_ended(self, namespace: str, policy: str, *, succeeded: bool) -> None:
        """A run (or its drill) of a policy ended: the policy ticks now, and applies retention
        if it succeeded."""
        key = (namespace, policy)
        if succeeded:
            with self._lock:
                self._retention_due.add(key)
        self.wake(*key)

    def take_retention(self, namespace: str, name: str) -> bool:
        """Whether retention is due for a policy (and no longer, once asked)."""
        with self._lock:
            due = (namespace, name) in self._retention_due
            self._retention_due.discard((namespace, name))
        return due
