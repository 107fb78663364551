"""The kopf handlers of LamassuRestore: thin, each parses the body, calls the restore service
and posts its Events.

The service does all the work from the API state; these handlers only decide when to call it:
on create and on start-up (resume), when one of its Jobs changes, and in a loop while the restore
is active that looks again when the service asks (the safety net that also waits for workloads
and health checks).
"""

from __future__ import annotations

from typing import Any

import kopf

from ..builders.restore_plan import DONE, LABEL_RESTORE
from ..clients.kube import KubeApi, load_config
from ..clients.workloads import WorkloadApi
from ..models.resources import GROUP, RESTORES, VERSION
from ..services import resources
from ..services.common import Event, Settings, now_utc
from ..services.restores import RestoreOutcome, RestoreService
from .events import in_thread


@kopf.on.startup()
async def restore_startup(memo: kopf.Memo, **_: Any) -> None:
    """The restore service, with its own API clients (the backup side keeps its own)."""
    api = load_config()
    memo.restores = RestoreService(KubeApi(api), WorkloadApi(api), Settings.from_env())


def _events(outcome: RestoreOutcome) -> list[Event]:
    return outcome.events


async def _reconcile(memo: kopf.Memo, restore: resources.Restore | None) -> None:
    if restore is not None:
        await in_thread(lambda: memo.restores.reconcile(restore, now_utc()), _events)


@kopf.on.create(GROUP, VERSION, RESTORES)
@kopf.on.resume(GROUP, VERSION, RESTORES)
async def restore_created(body: kopf.Body, memo: kopf.Memo, **_: Any) -> None:
    """A new restore, or one found on start-up: move it on from its recorded state."""
    await _reconcile(memo, resources.parse_restore(dict(body)))


def _active(status: kopf.Status, spec: kopf.Spec, **_: Any) -> bool:
    return status.get("phase", "Pending") not in {p.value for p in DONE}


def _unfinalized(status: kopf.Status, spec: kopf.Spec, **_: Any) -> bool:
    return (
        status.get("phase") == "Completed"
        and spec.get("mode") == "InPlace"
        and bool(status.get("swapSuffix"))
        and not status.get("finalizedAt")
    )


@kopf.daemon(GROUP, VERSION, RESTORES, cancellation_timeout=5, when=_active)
async def restore_loop(
    body: kopf.Body, memo: kopf.Memo, stopped: kopf.DaemonStopped, **_: Any
) -> None:
    """While active: move it on, then look again as soon as the service asks (Pods stopping or
    starting, backups, health checks, a missed Job event); a fixed timer would add its period
    to every wait."""
    restore = resources.parse_restore(dict(body))
    while not stopped:
        outcome = await in_thread(lambda: memo.restores.reconcile(restore, now_utc()), _events)
        await stopped.wait(outcome.requeue if outcome.requeue is not None else 2.0)


@kopf.timer(GROUP, VERSION, RESTORES, interval=60, initial_delay=10, when=_unfinalized)
async def restore_finalize(body: kopf.Body, memo: kopf.Memo, **_: Any) -> None:
    """After spec.finalizeAfter: drop the databases an in-place restore kept aside."""
    await _reconcile(memo, resources.parse_restore(dict(body)))


@kopf.on.event("batch", "v1", "jobs", labels={LABEL_RESTORE: kopf.PRESENT})
async def restore_job_event(
    event: kopf.RawEvent, body: kopf.Body, namespace: str | None, memo: kopf.Memo, **_: Any
) -> None:
    """A restore's runner Job changed: move its restore on now."""
    if event.get("type") is None:
        return  # the initial listing; restores are resumed by their own handler
    for owner in body.get("metadata", {}).get("ownerReferences") or []:
        if owner.get("kind") == "LamassuRestore":
            name = str(owner.get("name"))
            await _reconcile(
                memo, resources.read_restore(memo.restores.kube, namespace or "", name)
            )


@kopf.on.delete(GROUP, VERSION, RESTORES)
async def restore_deleted(body: kopf.Body, memo: kopf.Memo, **_: Any) -> None:
    """A restore deleted mid-way still gives its workloads back (its Jobs go with it: owned)."""
    restore = resources.parse_restore(dict(body))
    await in_thread(lambda: memo.restores.release(restore), lambda events: events)
    memo.restores.forget(restore.namespace, restore.name)
