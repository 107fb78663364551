"""Verification: scheduled drills of a policy's newest set, and the evidence they leave.

One service for both halves: starting a drill Job (the policy's schedule decides when) and
following it to its evidence and the Verified condition on the run (the run's reconcile asks).
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any

from ..builders import conditions as cond
from ..builders import jobs, layout
from ..clients.kube import KubeApi
from ..errors import LamassuBackupError
from ..models.backup import BackupPhase, BackupSpec, BackupStatus, VerificationPhase
from ..models.common import ConditionStatus
from ..models.policy import BackupPolicySpec
from . import metrics
from .common import Event, RunSummary, iso, ref, set_time_of
from .job_state import job_state


@dataclass
class Outcome:
    """What following a drill did."""

    patch: dict[str, Any] | None = None
    events: list[Event] = field(default_factory=list)
    finished: bool = False
    succeeded: bool = False


def track(
    kube: KubeApi, body: dict[str, Any], spec: BackupSpec, status: BackupStatus, now: datetime
) -> Outcome:
    """Follow a run's drill Job; when it ends, record the evidence and the Verified condition."""
    assert status.verification is not None
    verification = status.verification
    namespace = body["metadata"]["namespace"]
    job_name = verification.job_name or ""
    job = kube.get_job(namespace, job_name)
    policy_name = spec.policy_ref.name
    update: dict[str, Any]
    if job is None:
        update = {
            "phase": VerificationPhase.FAILED.value,
            "message": f"the verification Job {job_name} was deleted before it finished",
        }
    else:
        state = job_state(kube, job)
        if not state.done:
            return Outcome()
        evidence = state.result.evidence if state.result else {}
        if state.ok and state.result is not None and state.result.ok:
            update = {
                "phase": VerificationPhase.VERIFIED.value,
                "verifiedAt": iso(now),
                "message": evidence_summary(evidence),
                "evidence": evidence,
            }
        else:
            update = {
                "phase": VerificationPhase.FAILED.value,
                "message": state.message
                or (state.result.error if state.result else None)
                or "the drill failed",
                "evidence": evidence,
            }
    merged = {**verification.to_api(), **update}
    verified = merged["phase"] == VerificationPhase.VERIFIED.value
    metrics.VERIFICATIONS.labels(namespace, policy_name, merged["phase"]).inc()
    if verified:
        metrics.LAST_VERIFIED.labels(namespace, policy_name).set(now.timestamp())
    conditions = cond.set_condition(
        status.conditions,
        type=cond.VERIFIED,
        status=ConditionStatus.TRUE if verified else ConditionStatus.FALSE,
        reason="DrillSucceeded" if verified else "DrillFailed",
        message=str(merged.get("message") or ""),
        now=now,
        generation=body["metadata"].get("generation"),
    )
    event = Event(
        ref(body),
        "Normal" if verified else "Warning",
        "Verified" if verified else "VerificationFailed",
        str(merged.get("message")),
    )
    return Outcome(
        patch={"verification": merged, "conditions": [c.to_api() for c in conditions]},
        events=[event],
        finished=True,
        succeeded=verified,
    )


def evidence_summary(evidence: dict[str, Any]) -> str:
    """One line from a drill's evidence, for the Verified condition and Event."""
    parts = []
    rto = evidence.get("recoveryTimeSeconds") or evidence.get("seconds")
    if rto is not None:
        parts.append(f"restored in {float(rto):.1f}s")
    dbs = evidence.get("databases")
    if isinstance(dbs, dict):
        parts.append(f"{len(dbs)} database(s) verified")
    keys = evidence.get("keyConsistency")
    if isinstance(keys, dict):
        missing = keys.get("missing") or []
        parts.append("key consistency OK" if not missing else f"{len(missing)} key(s) missing")
    return "; ".join(parts) or json.dumps(evidence)[:200] or "drill succeeded"


def start(
    kube: KubeApi,
    policy: BackupPolicySpec,
    *,
    namespace: str,
    policy_name: str,
    runs: Sequence[RunSummary],
    tick: datetime,
    now: datetime,
) -> list[tuple[str, str, str]]:
    """A drill Job for the newest completed set; returns (type, reason, message) for the policy's
    Events. The run's status says the drill is Running, so its own reconcile then follows it."""
    candidates = sorted(
        (r for r in runs if r.phase == BackupPhase.COMPLETED.value and r.completed_at),
        key=lambda r: r.completed_at or now,
    )
    if not candidates:
        return [("Warning", "VerificationSkipped", "no completed set to test-restore yet")]
    target = candidates[-1]
    backup = kube.get_custom("LamassuBackup", namespace, target.name)
    if backup is None:
        return []
    components = [
        c for c, phase in target.components.items() if phase == BackupPhase.COMPLETED.value
    ]
    owner = jobs.Owner(backup["apiVersion"], backup["kind"], target.name, backup["metadata"]["uid"])
    job = jobs.verify_job(
        policy,
        namespace=namespace,
        policy_name=policy_name,
        backup_name=target.name,
        set_time=set_time_of(backup),
        components=components,
        tick=layout.set_time(tick),
        owner=owner,
    )
    if job is None:
        return []
    try:
        kube.create_job(job)
    except LamassuBackupError as exc:
        return [("Warning", "VerificationFailed", f"could not start the drill Job: {exc.message}")]
    kube.patch_status(
        "LamassuBackup",
        namespace,
        target.name,
        {
            "verification": {
                "phase": "Running",
                "jobName": job["metadata"]["name"],
                "startedAt": iso(now),
            }
        },
    )
    return [
        (
            "Normal",
            "VerificationStarted",
            f"test-restoring {target.name} into scratch targets ({job['metadata']['name']})",
        )
    ]
