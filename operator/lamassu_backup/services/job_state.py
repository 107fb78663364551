"""Where a runner Job is, and what its runner said: read from the Job and its Pod.

Every service that follows a runner Job (backups, drills, restores) reads it the same way;
the runner's own result arrives as the Pod's termination message.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime
from typing import Any

from pydantic import ValidationError

from ..clients.kube import KubeApi
from ..models.runner import RunnerResult
from .common import parse_time


@dataclass(frozen=True)
class JobState:
    """Where a Job is, and what its runner said."""

    done: bool
    ok: bool
    reason: str | None = None
    message: str | None = None
    result: RunnerResult | None = None
    started_at: datetime | None = None
    completed_at: datetime | None = None


def job_state(kube: KubeApi, job: dict[str, Any]) -> JobState:
    """Read a Job's conditions and its newest Pod's termination message."""
    status = job.get("status") or {}
    started = parse_time(status.get("startTime"))
    finished_at = parse_time(status.get("completionTime"))
    conditions = {
        c.get("type"): c for c in status.get("conditions") or [] if c.get("status") == "True"
    }
    complete = "Complete" in conditions or "SuccessCriteriaMet" in conditions
    failed = conditions.get("Failed") or conditions.get("FailureTarget")
    if not complete and not failed:
        return JobState(done=False, ok=False, started_at=started)
    name = job["metadata"]["name"]
    result, text = _termination(kube, job["metadata"]["namespace"], name)
    if complete:
        return JobState(True, True, None, None, result, started, finished_at)
    assert failed is not None
    reason = str(failed.get("reason") or "JobFailed")
    if result is not None and result.error:
        message = result.error
    elif text:
        message = text
    else:
        message = str(failed.get("message") or f"Job {name} failed")
    if reason == "DeadlineExceeded":
        message = (
            f"the Job ran past its deadline (spec.runner.activeDeadline) and was stopped. {message}"
        )
    return JobState(
        True,
        False,
        result.reason if result and result.reason else reason,
        message,
        result,
        started,
        finished_at or parse_time(failed.get("lastTransitionTime")),
    )


def _termination(
    kube: KubeApi, namespace: str, job_name: str
) -> tuple[RunnerResult | None, str | None]:
    for pod in kube.job_pods(namespace, job_name):
        for container in (pod.get("status") or {}).get("containerStatuses") or []:
            terminated = (container.get("state") or {}).get("terminated")
            if not terminated:
                continue
            message = str(terminated.get("message") or "").strip()
            if not message:
                return (
                    None,
                    f"the runner exited with code {terminated.get('exitCode')} ({terminated.get('reason')})",
                )
            try:
                return RunnerResult.model_validate_json(message), None
            except ValidationError:
                return None, message[-1000:]
    return None, None


def ended_pod_state(kube: KubeApi, job: dict[str, Any]) -> JobState | None:
    """The outcome of a Job without retries whose runner has reported and exited, read from its
    Pod before the Job controller marks the Job (it batches Pod updates: a second or more).

    Only for ``backoffLimit: 0`` (no second Pod can follow) and only when the runner wrote its
    result: anything else (an eviction, a deadline, a Pod killed before it reported) is left to
    the Job's own conditions, which say why. None: not ended, or not this case.
    """
    spec = job.get("spec") or {}
    if spec.get("backoffLimit") != 0:
        return None
    meta = job["metadata"]
    for pod in kube.job_pods(meta["namespace"], meta["name"]):
        for container in (pod.get("status") or {}).get("containerStatuses") or []:
            terminated = (container.get("state") or {}).get("terminated")
            if not terminated:
                continue
            try:
                result = RunnerResult.model_validate_json(str(terminated.get("message") or ""))
            except ValidationError:
                return None
            started = parse_time((job.get("status") or {}).get("startTime"))
            ended = parse_time(terminated.get("finishedAt"))
            if terminated.get("exitCode") == 0 and result.ok:
                return JobState(True, True, None, None, result, started, ended)
            if terminated.get("exitCode") != 0 and not result.ok:
                message = result.error or f"the runner exited with code {terminated['exitCode']}"
                return JobState(
                    True, False, result.reason or "JobFailed", message, result, started, ended
                )
            return None
    return None
