"""The kopf handlers: each parses the body into the models, calls a service, posts its Events.

State lives in the API; the only memory is caches and wake-up signals, so a restarted operator
picks up where the last one left off. Services are synchronous; they run in worker threads so the
event loop keeps watching.
"""

from __future__ import annotations

import asyncio
import contextlib
import functools
import logging
from typing import Any

import kopf

from ..builders import wal_jobs
from ..builders.jobs import LABEL_SCHEDULED_DRILL, MANAGED_BY, job_ended, run_of
from ..clients.kube import KubeApi, load_config
from ..errors import LamassuBackupError
from ..models.resources import BACKUPS, GROUP, POLICIES, RESTORES, VERSION
from ..services import metrics, resources, wal_slot
from ..services.common import Event, Settings, now_utc, summarize
from ..services.config_watch import ConfigEvents, Watcher
from ..services.policies import PolicyService
from ..services.policy_loop import Next, PolicyLoops
from ..services.runs import RunService
from ..services.secrets import SecretChecks
from .events import in_thread, post
from .storage import TolerantDiffBaseStorage, TolerantProgressStorage

log = logging.getLogger("lamassu_backup")
DRILL_OVER = ("Completed", "Failed", "RolledBack")


def _configure(settings: kopf.OperatorSettings) -> None:
    """kopf keeps its marks under our own API group."""
    settings.persistence.progress_storage = TolerantProgressStorage(prefix=GROUP)
    settings.persistence.diffbase_storage = TolerantDiffBaseStorage(
        prefix=GROUP, key="last-handled-configuration"
    )
    settings.persistence.finalizer = f"{GROUP}/finalizer"
    settings.posting.level = logging.INFO
    settings.execution.max_workers = 16
    settings.watching.server_timeout = 300
    # Only our Jobs, filtered by the apiserver: a cluster's other Jobs cost neither watch
    # traffic nor per-object memory here.
    settings.watching.label_selectors["batch", "jobs"] = (
        f"app.kubernetes.io/managed-by={MANAGED_BY}"
    )


@kopf.on.startup()
async def startup(settings: kopf.OperatorSettings, memo: kopf.Memo, **_: Any) -> None:
    """Build the clients and services once."""
    _configure(settings)
    config = Settings.from_env()
    memo.kube = kube = KubeApi(load_config())
    checks = SecretChecks(kube, config.secret_check_seconds)  # one cache: loops and runs
    memo.runs = RunService(kube, config, checks=checks)
    memo.policies = PolicyService(kube, memo.runs, config, checks)
    memo.loops = PolicyLoops(kube, memo.policies, config)
    memo.config = ConfigEvents(kube, memo.loops)
    memo.resync = asyncio.create_task(resync(memo, max(1.0, config.backup_resync_seconds / 3)))
    metrics.serve(config.metrics_port)
    log.info("lamassu-backup operator started (metrics on :%s)", config.metrics_port)


@kopf.on.cleanup()
async def cleanup(memo: kopf.Memo, **_: Any) -> None:
    """Close what startup opened, so a stopping operator leaves no pool or thread behind."""
    task = getattr(memo, "resync", None)
    if task is not None:
        task.cancel()
    kube = getattr(memo, "kube", None)
    if kube is not None:
        kube.close()


# -- LamassuBackup ---------------------------------------------------------------------------


@kopf.index(GROUP, VERSION, BACKUPS)
def runs_by_policy(body: kopf.Body, namespace: str | None, **_: Any) -> dict[tuple[str, str], Any]:
    """Every run, grouped by policy: the policy loop reads it instead of listing the API."""
    summary = summarize(dict(body))
    return {(namespace or "", summary.policy): summary}


def reconcile_backup(namespace: str, name: str, memo: kopf.Memo) -> None:
    """Move one run forward and report it; a run that ended wakes its policy. An API error
    (the apiserver away, a conflict) is logged; :func:`resync` tries again."""
    try:
        outcome = memo.runs.reconcile(namespace, name, now_utc())  # reads it, writes its status
    except LamassuBackupError as exc:
        log.warning("LamassuBackup %s/%s: %s (tried again shortly)", namespace, name, exc.message)
        return
    post(outcome.events)
    if outcome.finished:
        memo.loops.run_ended(namespace, outcome.policy, succeeded=outcome.succeeded)


@kopf.on.event(GROUP, VERSION, BACKUPS)
def backup_event(
    event: kopf.RawEvent, namespace: str | None, name: str, memo: kopf.Memo, **_: Any
) -> None:
    """A new run, or one found on start-up (the initial listing): start or adopt its Jobs; a
    deleted one: forget it (its set in S3 stays: only retention deletes data).

    A raw event handler, not on.create/resume with a timer: those keep kopf's marks on every
    record (three patches a run: the finalizer a timer needs, added and removed, and the last
    handled configuration) and each record's whole body in memory. The safety net is
    :func:`resync`, over the runs that have not ended.
    """
    kind = event.get("type")
    if kind in (None, "ADDED"):
        reconcile_backup(namespace or "", name, memo)
    elif kind == "DELETED":
        memo.runs.forget(namespace or "", name)


async def resync(memo: kopf.Memo, period: float) -> None:
    """Reconcile each run that has not ended and that nothing reconciled for a while: a Job
    event missed still moves it on (it never stays Running), and what no event says (a Job that
    cannot create its Pod, a deadline passed) is seen."""
    while True:
        await asyncio.sleep(period)
        for namespace, name in memo.runs.due():
            try:
                await asyncio.to_thread(reconcile_backup, namespace, name, memo)
            except Exception:  # an API error or a bug: logged, and tried again next period
                log.exception("LamassuBackup %s/%s: resync failed", namespace, name)


@kopf.on.event("batch", "v1", "jobs", labels={"app.kubernetes.io/managed-by": MANAGED_BY})
def job_event(
    event: kopf.RawEvent, body: kopf.Body, namespace: str | None, memo: kopf.Memo, **_: Any
) -> None:
    """A runner Job ended (or vanished): update its run right away. Other changes of a Job
    (its Pod started, became ready) change nothing in the run: not reading it for them saves
    most of a run's requests; :func:`resync` sees what no Job event says."""
    if event.get("type") is None or not job_ended(dict(body), event.get("type")):
        return  # the initial listing (runs are resumed by their own handler), or still running
    if (name := run_of(dict(body))) and memo.runs.active(namespace or "", name):
        reconcile_backup(namespace or "", name, memo)  # an ended run's Jobs change nothing
    elif policy := wal_jobs.base_backup_policy(dict(body)):
        memo.loops.wake(namespace or "", policy)  # a base backup ended: show the new window


@kopf.on.event(GROUP, VERSION, RESTORES, labels={LABEL_SCHEDULED_DRILL: kopf.PRESENT})
def drill_event(event: kopf.RawEvent, body: kopf.Body, memo: kopf.Memo, **_: Any) -> None:
    """A scheduled drill (a Drill LamassuRestore) ended: its set records the outcome now."""
    if event.get("type") is None or (body.get("status") or {}).get("phase") not in DRILL_OVER:
        return  # the initial listing (runs are resumed by their own handler), or still running
    if name := (body.get("spec") or {}).get("backupRef", {}).get("name"):
        reconcile_backup(body.metadata.namespace or "", name, memo)


# -- LamassuBackupPolicy ---------------------------------------------------------------------


@kopf.index(GROUP, VERSION, POLICIES)
def config_watchers(body: kopf.Body, namespace: str | None, **_: Any) -> dict[str, Watcher]:
    """Policies that back up configuration on change, by namespace."""
    try:
        watcher = Watcher.of(resources.parse_policy(dict(body)))
    except ValueError:
        return {}  # a status the models refuse: the policy's loop says so
    return {namespace or "": watcher} if watcher is not None else {}


@kopf.daemon(GROUP, VERSION, POLICIES, cancellation_timeout=10)
async def policy_loop(
    body: kopf.Body,
    namespace: str | None,
    name: str,
    memo: kopf.Memo,
    stopped: kopf.DaemonStopped,
    **kwargs: Any,
) -> None:
    """The policy's own loop: a pass (its service says how long to sleep), then sleep."""
    runs_by_policy: kopf.Index[tuple[str, str], Any] = kwargs["runs_by_policy"]
    waker = asyncio.Event()
    wake = functools.partial(asyncio.get_running_loop().call_soon_threadsafe, waker.set)
    loop = memo.loops.open(namespace or "", name, wake)
    try:
        while not stopped:
            waker.clear()
            runs = list(runs_by_policy.get((loop.namespace, name), []))
            step = await in_thread(functools.partial(loop.step, dict(body), runs), _step_events)
            await _sleep(waker, step.sleep)
    finally:
        memo.loops.close(loop)


def _step_events(step: Next) -> list[Event]:
    return step.events


async def _sleep(waker: asyncio.Event, seconds: float) -> None:
    """Sleep, unless a change wakes the loop sooner (then let the watch update the index)."""
    with contextlib.suppress(TimeoutError):
        await asyncio.wait_for(waker.wait(), timeout=seconds)
        await asyncio.sleep(1.0)


@kopf.on.update(GROUP, VERSION, POLICIES, field="spec")
@kopf.on.update(GROUP, VERSION, POLICIES, field="metadata.annotations")
def policy_changed(namespace: str | None, name: str, memo: kopf.Memo, **_: Any) -> None:
    """A spec or annotation change: re-check Secrets and tick now."""
    memo.loops.changed(namespace or "", name)


@kopf.on.delete(GROUP, VERSION, POLICIES, optional=True)
def policy_deleted(namespace: str | None, name: str, **_: Any) -> None:
    """Drop its metric series; its records and sets stay."""
    metrics.forget_policy(namespace or "", name)


@kopf.on.delete(GROUP, VERSION, POLICIES, id="replication-slot")
async def policy_slot(namespace: str | None, name: str, memo: kopf.Memo, **_: Any) -> None:
    """A policy that shipped WAL goes once its replication slot is dropped on the server (or kept,
    as its annotation asks); the waits are in the event loop, a failed drop is retried."""
    for _look in range(40):
        work = functools.partial(wal_slot.finalize, memo.kube, namespace or "", name, now_utc())
        step = await in_thread(work, _slot_events)
        if step.done:
            return
        if step.failed:
            raise kopf.TemporaryError(step.message, delay=step.delay(now_utc(), 60.0))
        await asyncio.sleep(step.delay(now_utc(), 10.0))
    raise kopf.TemporaryError("the replication slot is still being dropped", delay=1)


def _slot_events(step: wal_slot.SlotStep) -> list[Event]:
    return step.events


# -- configuration objects -------------------------------------------------------------------


def _config_event(kind: str, memo: kopf.Memo, **kwargs: Any) -> None:
    namespace = kwargs["namespace"] or ""
    events = memo.config.on_event(
        kind,
        kwargs["event"].get("type"),
        dict(kwargs["body"]),
        namespace=namespace,
        name=kwargs["name"],
        watchers=kwargs["config_watchers"].get(namespace, []),
        now=now_utc(),
    )
    post(events)


@kopf.on.event("", "v1", "configmaps")
def configmap_event(memo: kopf.Memo, **kwargs: Any) -> None:
    """A ConfigMap changed: back up configuration if a policy selects it."""
    _config_event("ConfigMap", memo, **kwargs)


@kopf.on.event("", "v1", "secrets")
def secret_event(memo: kopf.Memo, **kwargs: Any) -> None:
    """A Secret changed: back up configuration if a policy selects it (and re-check references)."""
    _config_event("Secret", memo, **kwargs)


@kopf.on.probe(id="policies")
def probe_policies(memo: kopf.Memo, **_: Any) -> int:
    """Liveness detail: how many policy loops run."""
    return len(memo.loops)
