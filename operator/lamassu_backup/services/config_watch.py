"""Backup on change: which policies care about a ConfigMap or Secret, and did its content change.

Content hashes are kept in memory and seeded from the initial listing, so the operator starting
up (or re-listing) never looks like a change; a change made while the operator was down is
caught by the next scheduled run instead.
"""

from __future__ import annotations

import hashlib
import json
import threading
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any

from ..clients.kube import KubeApi
from ..components.config.spec import ConfigComponent
from ..models.common import LabelSelector
from ..models.resources import LamassuBackupPolicy
from .common import Event, ref
from .policy_loop import PolicyLoops
from .resources import Policy, read_policy

DEBOUNCE = timedelta(seconds=30)


@dataclass(frozen=True)
class Watcher:
    """A policy with ``backupOnChange`` and what it selects."""

    policy: str
    config_maps: frozenset[str]
    secrets: frozenset[str]
    selector: LabelSelector | None

    @classmethod
    def from_spec(cls, policy: str, config: ConfigComponent) -> Watcher:
        """From a policy's config component."""
        return cls(
            policy, frozenset(config.config_maps), frozenset(config.secrets), config.selector
        )

    @classmethod
    def of(cls, policy: Policy) -> Watcher | None:
        """The watcher of a policy that backs up configuration on change (else None)."""
        if not isinstance(policy, LamassuBackupPolicy):
            return None
        config = policy.spec.components.config
        if config is None or not config.backup_on_change:
            return None
        return cls.from_spec(policy.name, config)

    def selects(self, kind: str, name: str, labels: dict[str, str]) -> bool:
        """Does this policy back up that object?"""
        names = self.config_maps if kind == "ConfigMap" else self.secrets
        return name in names or (self.selector is not None and self.selector.matches(labels))


def content_hash(body: dict[str, Any]) -> str:
    """What a change means: data and labels, not resourceVersion or managed fields."""
    relevant = {
        "data": body.get("data"),
        "binaryData": body.get("binaryData"),
        "type": body.get("type"),
        "labels": (body.get("metadata") or {}).get("labels"),
    }
    return hashlib.sha256(json.dumps(relevant, sort_keys=True, default=str).encode()).hexdigest()


class ChangeTracker:
    """Remembers content hashes and when each policy last got an on-change run."""

    def __init__(self) -> None:
        self._hashes: dict[tuple[str, str, str], str] = {}
        self._last_run: dict[tuple[str, str], datetime] = {}
        self._lock = threading.Lock()

    def changed(
        self, kind: str, namespace: str, name: str, digest: str | None, *, initial: bool
    ) -> bool:
        """Record the object's hash; True when it differs from a hash seen before."""
        key = (kind, namespace, name)
        with self._lock:
            before = self._hashes.get(key)
            if digest is None:
                self._hashes.pop(key, None)
                return before is not None and not initial
            self._hashes[key] = digest
            if initial:
                return False
            return before != digest

    def due(self, namespace: str, policy: str, now: datetime) -> bool:
        """Coalesce bursts (a Helm upgrade touches six ConfigMaps at once) into one run."""
        key = (namespace, policy)
        with self._lock:
            last = self._last_run.get(key)
            if last is not None and now - last < DEBOUNCE:
                return False
            self._last_run[key] = now
            return True


class ConfigEvents:
    """A ConfigMap or Secret event: the policies it concerns re-check or back up on change."""

    def __init__(self, kube: KubeApi, loops: PolicyLoops) -> None:
        self.kube = kube
        self.loops = loops
        self.changes = ChangeTracker()

    def on_event(
        self,
        kind: str,
        event_type: str | None,
        body: dict[str, Any],
        *,
        namespace: str,
        name: str,
        watchers: Sequence[Watcher],
        now: datetime,
    ) -> list[Event]:
        """React to one watch event (``event_type`` None: the initial listing)."""
        if kind == "Secret" and event_type is not None:
            # A referenced Secret may have appeared or changed: re-check the policies' references.
            self.loops.secret_changed(namespace, name)
        labels = dict((body.get("metadata") or {}).get("labels") or {})
        matching = [w for w in watchers if w.selects(kind, name, labels)]
        digest = None if event_type == "DELETED" else content_hash(body)
        changed = self.changes.changed(kind, namespace, name, digest, initial=event_type is None)
        if not matching or not changed:
            return []
        events: list[Event] = []
        for watcher in matching:
            if not self.changes.due(namespace, watcher.policy, now):
                continue
            policy = read_policy(self.kube, namespace, watcher.policy)
            if policy is None:
                continue
            created = self.loops.policies.on_config_change(policy, now)
            if created:
                message = f"{kind} {name} changed: started {created}"
                events.append(Event(ref(policy), "Normal", "ConfigChanged", message))
        return events
