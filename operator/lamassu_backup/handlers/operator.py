"""The kopf handlers: each validates, calls a service, patches status, posts Events.

State lives in the API; the only memory is caches and wake-up signals, so a restarted operator
picks up where the last one left off. Services are synchronous; they run in worker threads so the
event loop keeps watching.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from datetime import timedelta
from typing import Any, cast

import kopf

from ..builders import schedule
from ..builders.jobs import MANAGED_BY, run_of
from ..clients.kube import KubeApi, load_config
from ..errors import LamassuBackupError
from ..models.policy import BackupPolicySpec
from ..models.resources import BACKUPS, GROUP, POLICIES, VERSION
from ..services import discovery, metrics, retention
from ..services.common import Event, Settings, now_utc, ref, summarize
from ..services.config_watch import ChangeTracker, Watcher, content_hash
from ..services.policies import PolicyService
from ..services.runs import RunService
from .storage import TolerantDiffBaseStorage, TolerantProgressStorage

log = logging.getLogger("lamassu_backup")


@kopf.on.startup()
async def startup(settings: kopf.OperatorSettings, memo: kopf.Memo, **_: Any) -> None:
    """Build the clients once; configure kopf to keep its marks under our own API group."""
    settings.persistence.progress_storage = TolerantProgressStorage(prefix=GROUP)
    settings.persistence.diffbase_storage = TolerantDiffBaseStorage(
        prefix=GROUP, key="last-handled-configuration"
    )
    settings.persistence.finalizer = f"{GROUP}/finalizer"
    settings.posting.level = logging.INFO
    settings.execution.max_workers = 16
    settings.watching.server_timeout = 300
    config = Settings.from_env()
    kube = KubeApi(load_config())
    memo.settings = config
    memo.kube = kube
    memo.runs = RunService(kube, config)
    memo.policies = PolicyService(kube, memo.runs, config)
    memo.changes = ChangeTracker()
    memo.loop = asyncio.get_running_loop()
    memo.wakers = {}
    memo.retention_due = set()
    metrics.serve(config.metrics_port)
    log.info("lamassu-backup operator started (metrics on :%s)", config.metrics_port)


@kopf.on.cleanup()
async def cleanup(memo: kopf.Memo, **_: Any) -> None:
    """Close what startup opened, so a stopping operator leaves no pool or thread behind."""
    kube = getattr(memo, "kube", None)
    if kube is not None:
        kube.close()


def _post(events: list[Event]) -> None:
    for event in events:
        target = cast(kopf.Body, event.target)
        kopf.event(target, type=event.type, reason=event.reason, message=event.message[:1000])


def _wake(memo: kopf.Memo, namespace: str | None, policy: str) -> None:
    waker = memo.wakers.get((namespace, policy))
    if waker is not None:
        memo.loop.call_soon_threadsafe(waker.set)


# -- LamassuBackup ---------------------------------------------------------------------------


@kopf.index(GROUP, VERSION, BACKUPS)
def runs_by_policy(body: kopf.Body, namespace: str | None, **_: Any) -> dict[tuple[str, str], Any]:
    """Every run, grouped by policy: the policy loop reads it instead of listing the API."""
    summary = summarize(dict(body))
    return {(namespace or "", summary.policy): summary}


def reconcile_backup(body: dict[str, Any], memo: kopf.Memo) -> None:
    """Move one run forward and report it."""
    outcome = memo.runs.reconcile(body, now_utc())  # writes the status itself, under its lock
    meta = body["metadata"]
    _post(outcome.events)
    if outcome.finished:
        policy = (body.get("spec") or {}).get("policyRef", {}).get("name", "")
        if outcome.succeeded:
            memo.retention_due.add((meta["namespace"], policy))
        _wake(memo, meta["namespace"], policy)


@kopf.on.create(GROUP, VERSION, BACKUPS)
@kopf.on.resume(GROUP, VERSION, BACKUPS)
def backup_created(body: kopf.Body, memo: kopf.Memo, **_: Any) -> None:
    """A new run (or one found on start-up): start or adopt its Jobs."""
    reconcile_backup(dict(body), memo)


def _active(status: kopf.Status, **_: Any) -> bool:
    phase = status.get("phase", "Pending")
    verifying = (status.get("verification") or {}).get("phase") == "Running"
    return phase in ("Pending", "Running") or verifying


@kopf.timer(GROUP, VERSION, BACKUPS, interval=30, initial_delay=5, when=_active)
def backup_resync(body: kopf.Body, memo: kopf.Memo, **_: Any) -> None:
    """Safety net: a run whose Job events were missed still moves on (and never stays Running)."""
    reconcile_backup(dict(body), memo)


@kopf.on.delete(GROUP, VERSION, BACKUPS, optional=True)
def backup_deleted(namespace: str | None, name: str, memo: kopf.Memo, **_: Any) -> None:
    """Forget per-run state (the set in S3 stays: only retention deletes data)."""
    memo.runs.forget(namespace or "", name)


@kopf.on.event("batch", "v1", "jobs", labels={"app.kubernetes.io/managed-by": MANAGED_BY})
def job_event(
    event: kopf.RawEvent, body: kopf.Body, namespace: str | None, memo: kopf.Memo, **_: Any
) -> None:
    """A runner Job changed (or vanished): update its run right away."""
    if event.get("type") is None:
        return  # the initial listing; runs are resumed by their own handler
    backup = run_of(dict(body))
    if not backup:
        return
    current = memo.kube.get_custom("LamassuBackup", namespace or "", backup)
    if current is not None:
        reconcile_backup(current, memo)


# -- LamassuBackupPolicy ---------------------------------------------------------------------


@kopf.index(GROUP, VERSION, POLICIES)
def config_watchers(
    body: kopf.Body, namespace: str | None, name: str, **_: Any
) -> dict[str, Watcher]:
    """Policies that back up configuration on change, by namespace."""
    try:
        spec = BackupPolicySpec.model_validate(dict(body.get("spec") or {}))
    except ValueError:
        return {}
    config = spec.components.config
    if config is None or not config.backup_on_change:
        return {}
    return {namespace or "": Watcher.from_spec(name, config)}


@kopf.daemon(GROUP, VERSION, POLICIES, cancellation_timeout=10)
async def policy_loop(
    body: kopf.Body,
    namespace: str | None,
    name: str,
    memo: kopf.Memo,
    stopped: kopf.DaemonStopped,
    **kwargs: Any,
) -> None:
    """The policy's own loop: sleep until something is due, then tick."""
    runs_by_policy: kopf.Index[tuple[str, str], Any] = kwargs["runs_by_policy"]
    namespace = namespace or ""
    waker = memo.wakers.setdefault((namespace, name), asyncio.Event())
    settings: Settings = memo.settings
    # The first look into the bucket comes soon (a fresh cluster after a disaster wants its
    # sets back) but spread over a minute, so a thousand policies do not start at once.
    next_discovery = time.monotonic() + discovery_delay(
        namespace, name, settings.discovery_interval_seconds
    )
    try:
        while not stopped:
            waker.clear()
            snapshot = dict(body)
            runs = list(runs_by_policy.get((namespace, name), []))
            sleep = settings.policy_max_sleep_seconds
            try:
                result = await asyncio.to_thread(memo.policies.tick, snapshot, runs, now_utc())
                if result.patch:
                    await asyncio.to_thread(
                        memo.kube.patch_status, "LamassuBackupPolicy", namespace, name, result.patch
                    )
                _post(result.events)
                sleep = result.sleep.total_seconds()
                if (namespace, name) in memo.retention_due:
                    memo.retention_due.discard((namespace, name))
                    # Retention decides on fresh records, not the index: the run that just
                    # finished may not have reached the index yet.
                    fresh = await asyncio.to_thread(_runs_of, memo.kube, namespace, name)
                    report = await asyncio.to_thread(
                        retention.apply, memo.kube, snapshot, fresh, now_utc()
                    )
                    _post(report.events)
                    if report.deleted or report.errors:
                        await asyncio.to_thread(
                            memo.kube.patch_status,
                            "LamassuBackupPolicy",
                            namespace,
                            name,
                            {"retention": report.status(now_utc())},
                        )
                if time.monotonic() >= next_discovery:
                    next_discovery = time.monotonic() + settings.discovery_interval_seconds
                    found = await asyncio.to_thread(
                        discovery.discover, memo.kube, snapshot, runs, now_utc()
                    )
                    _post(found.events)
            except LamassuBackupError as exc:
                _post([Event(ref(snapshot), "Warning", exc.reason, exc.message)])
                sleep = min(sleep, 30.0)
            except Exception:  # a bug must not end the policy's loop; it is logged and retried
                log.exception("policy %s/%s: tick failed", namespace, name)
                sleep = 30.0
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(waker.wait(), timeout=max(sleep, 0.5))
                # Woken by a change: let the watch deliver the related updates to the index.
                await asyncio.sleep(1.0)
            if stopped:
                break
    finally:
        memo.wakers.pop((namespace, name), None)


def discovery_delay(namespace: str, name: str, interval: float) -> float:
    """A stable per-policy delay below one minute (and below the discovery interval)."""
    span = timedelta(seconds=max(1.0, min(60.0, interval)))
    return schedule.jitter_offset(f"{namespace}/{name}/discovery", span).total_seconds()


def _runs_of(kube: KubeApi, namespace: str, policy: str) -> list[Any]:
    """Every run of a policy, read from the API now."""
    runs = [summarize(b) for b in kube.list_custom("LamassuBackup", namespace)]
    return [r for r in runs if r.policy == policy]


@kopf.on.update(GROUP, VERSION, POLICIES, field="spec")
@kopf.on.update(GROUP, VERSION, POLICIES, field="metadata.annotations")
def policy_changed(namespace: str | None, name: str, memo: kopf.Memo, **_: Any) -> None:
    """A spec or annotation change: re-check Secrets and tick now."""
    memo.policies.invalidate(namespace or "", name)
    _wake(memo, namespace or "", name)


@kopf.on.delete(GROUP, VERSION, POLICIES, optional=True)
def policy_deleted(namespace: str | None, name: str, **_: Any) -> None:
    """Drop its metric series; its records and sets stay."""
    metrics.forget_policy(namespace or "", name)


# -- configuration objects -------------------------------------------------------------------


def _config_event(
    kind: str,
    event: kopf.RawEvent,
    *,
    body: kopf.Body,
    namespace: str,
    name: str,
    memo: kopf.Memo,
    watchers: kopf.Index[str, Watcher],
) -> None:
    etype = event.get("type")
    if kind == "Secret" and etype is not None:
        # A referenced Secret may have appeared or changed: re-check the policies' references.
        for policy in memo.policies.invalidate_secret(namespace, name):
            _wake(memo, namespace, policy)
    matching = [
        w
        for w in watchers.get(namespace, [])
        if w.selects(kind, name, dict(body.get("metadata", {}).get("labels") or {}))
    ]
    digest = None if etype == "DELETED" else content_hash(dict(body))
    changed = memo.changes.changed(kind, namespace, name, digest, initial=etype is None)
    if not matching or not changed:
        return
    now = now_utc()
    for watcher in matching:
        if not memo.changes.due(namespace, watcher.policy, now):
            continue
        policy = memo.kube.get_custom("LamassuBackupPolicy", namespace, watcher.policy)
        if policy is None:
            continue
        created = memo.policies.on_config_change(policy, now)
        if created:
            _post(
                [
                    Event(
                        ref(policy),
                        "Normal",
                        "ConfigChanged",
                        f"{kind} {name} changed: started {created}",
                    )
                ]
            )


@kopf.on.event("", "v1", "configmaps")
def configmap_event(
    event: kopf.RawEvent,
    body: kopf.Body,
    namespace: str | None,
    name: str,
    memo: kopf.Memo,
    **kwargs: Any,
) -> None:
    """A ConfigMap changed: back up configuration if a policy selects it."""
    _config_event(
        "ConfigMap",
        event,
        body=body,
        namespace=namespace or "",
        name=name,
        memo=memo,
        watchers=kwargs["config_watchers"],
    )


@kopf.on.event("", "v1", "secrets")
def secret_event(
    event: kopf.RawEvent,
    body: kopf.Body,
    namespace: str | None,
    name: str,
    memo: kopf.Memo,
    **kwargs: Any,
) -> None:
    """A Secret changed: back up configuration if a policy selects it (and re-check references)."""
    _config_event(
        "Secret",
        event,
        body=body,
        namespace=namespace or "",
        name=name,
        memo=memo,
        watchers=kwargs["config_watchers"],
    )


@kopf.on.probe(id="policies")
def probe_policies(memo: kopf.Memo, **_: Any) -> int:
    """Liveness detail: how many policy loops run."""
    return len(memo.wakers)
