"""What a LamassuRestore asks of the rest of the operator: hold off backups and retention.

The policy loop and retention call these two functions (a small hook in each), so a restore's
namespace gets no scheduled run, run-now, verification or retention pass while a restore holds it,
and retention never deletes a set a restore reads or the safety set it took, whatever the outcome.
The answer comes from the API (the restores' status), so it survives an operator restart.
"""

from __future__ import annotations

from typing import Any

from ..builders.restore_plan import holds_namespace
from ..clients.kube import KubeApi
from ..models.restore import RestorePhase


def _restores(kube: KubeApi, namespace: str) -> list[dict[str, Any]]:
    return kube.list_custom("LamassuRestore", namespace)


def pause_reason(kube: KubeApi, namespace: str) -> str | None:
    """Why backups of ``namespace`` are paused now (None: they are not). Drills pause nothing:
    they write scratch targets only, and a scheduled drill must not stop the backups."""
    for body in sorted(_restores(kube, namespace), key=lambda b: b["metadata"]["name"]):
        status = body.get("status") or {}
        if holds_namespace((body.get("spec") or {}).get("mode"), status.get("phase")):
            return (
                f"LamassuRestore {body['metadata']['name']} is restoring this namespace "
                f"(phase {status['phase']}); backups resume when it ends"
            )
    return None


def protected_sets(kube: KubeApi, namespace: str) -> set[str]:
    """LamassuBackups retention must keep: the set of every restore not yet over (an in-place
    one until it is finalized) and the pre-restore set it took."""
    names: set[str] = set()
    over = {RestorePhase.FAILED.value, RestorePhase.ROLLED_BACK.value, RestorePhase.PLANNED.value}
    for body in _restores(kube, namespace):
        status = body.get("status") or {}
        phase = status.get("phase") or RestorePhase.PENDING.value
        finished = phase in over or (
            phase == RestorePhase.COMPLETED.value
            and (status.get("finalizedAt") or (body.get("spec") or {}).get("mode") != "InPlace")
        )
        if finished and phase != RestorePhase.COMPLETED.value:
            # A failed or rolled-back restore no longer reads its set; its safety set stays
            # protected until the restore object is deleted (it is the way back).
            names.update(n for n in [status.get("preRestoreBackup")] if n)
            continue
        if finished:
            continue
        for name in (
            (status.get("resolvedBackup") or {}).get("name"),
            (body.get("spec") or {}).get("backupRef", {}).get("name"),
            status.get("preRestoreBackup"),
        ):
            if name:
                names.add(str(name))
    return names
