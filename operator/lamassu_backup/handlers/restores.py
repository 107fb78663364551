"""The kopf handlers of LamassuRestore: thin, each calls the restore service and posts Events.

The service does all the work from the API state; these handlers only decide when to call it:
on create and on start-up (resume), when one of its Jobs changes, and on a short timer while the
restore is active (the safety net that also waits for workloads and health checks).
"""

from __future__ import annotations

import asyncio
from typing import Any, cast

import kopf

from ..builders.restore_plan import DONE, LABEL_RESTORE
from ..clients.kube import KubeApi, load_config
from ..clients.workloads import WorkloadApi
from ..models.resources import GROUP, RESTORES, VERSION
from ..services.common import Event, Settings, now_utc
from ..services.restores import RestoreService


@kopf.on.startup()
async def restore_startup(memo: kopf.Memo, **_: Any) -> None:
    """The restore service, with its own API clients (the backup side keeps its own)."""
    api = load_config()
    memo.restores = RestoreService(KubeApi(api), WorkloadApi(api), Settings.from_env())


def _post(events: list[Event]) -> None:
    for event in events:
        target = cast(kopf.Body, event.target)
        kopf.event(target, type=event.type, reason=event.reason, message=event.message[:1000])


async def _reconcile(memo: kopf.Memo, namespace: str, name: str) -> None:
    outcome = await asyncio.to_thread(memo.restores.reconcile, namespace, name, now_utc())
    _post(outcome.events)


@kopf.on.create(GROUP, VERSION, RESTORES)
@kopf.on.resume(GROUP, VERSION, RESTORES)
async def restore_created(namespace: str | None, name: str, memo: kopf.Memo, **_: Any) -> None:
    """A new restore, or one found on start-up: move it on from its recorded state."""
    await _reconcile(memo, namespace or "", name)


def _active(status: kopf.Status, spec: kopf.Spec, **_: Any) -> bool:
    return status.get("phase", "Pending") not in {p.value for p in DONE}


def _unfinalized(status: kopf.Status, spec: kopf.Spec, **_: Any) -> bool:
    return (
        status.get("phase") == "Completed"
        and spec.get("mode") == "InPlace"
        and bool(status.get("swapSuffix"))
        and not status.get("finalizedAt")
    )


@kopf.timer(GROUP, VERSION, RESTORES, interval=2, initial_delay=1, when=_active)
async def restore_tick(namespace: str | None, name: str, memo: kopf.Memo, **_: Any) -> None:
    """While active: wait for workloads, backups, health checks (and any missed Job event)."""
    await _reconcile(memo, namespace or "", name)


@kopf.timer(GROUP, VERSION, RESTORES, interval=60, initial_delay=10, when=_unfinalized)
async def restore_finalize(namespace: str | None, name: str, memo: kopf.Memo, **_: Any) -> None:
    """After spec.finalizeAfter: drop the databases an in-place restore kept aside."""
    await _reconcile(memo, namespace or "", name)


@kopf.on.event("batch", "v1", "jobs", labels={LABEL_RESTORE: kopf.PRESENT})
async def restore_job_event(
    event: kopf.RawEvent, body: kopf.Body, namespace: str | None, memo: kopf.Memo, **_: Any
) -> None:
    """A restore's runner Job changed: move its restore on now."""
    if event.get("type") is None:
        return  # the initial listing; restores are resumed by their own handler
    for owner in body.get("metadata", {}).get("ownerReferences") or []:
        if owner.get("kind") == "LamassuRestore":
            await _reconcile(memo, namespace or "", str(owner.get("name")))


@kopf.on.delete(GROUP, VERSION, RESTORES)
async def restore_deleted(
    body: kopf.Body, namespace: str | None, name: str, memo: kopf.Memo, **_: Any
) -> None:
    """A restore deleted mid-way still gives its workloads back (its Jobs go with it: owned)."""
    _post(await asyncio.to_thread(memo.restores.release, dict(body)))
    memo.restores.forget(namespace or "", name)
