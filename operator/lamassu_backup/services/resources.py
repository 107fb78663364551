"""Our objects as the services take them: parsed once into the models, or the reason they are not.

The handlers parse a body here, once, and hand the typed object down; a service reading one of
our objects from the API (fresh, under its lock) parses it here too. A spec the models refuse
is not an exception: it becomes an :class:`Invalid`, with the object's identity and parsed
status, so the service can report the field by name (a condition and an Event) instead of
crashing. A status the models refuse (ours to write, so a hand edit) still raises: kopf logs
it and retries, as for any bug.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Generic, TypeVar

from pydantic import ValidationError
from pydantic_core import ErrorDetails

from ..builders import layout
from ..builders.jobs import LABEL_POLICY
from ..clients.kube import KubeApi
from ..models.backup import BackupStatus
from ..models.base import StatusModel
from ..models.policy import BackupPolicyStatus
from ..models.resources import (
    API_VERSION,
    Identity,
    LamassuBackup,
    LamassuBackupPolicy,
    LamassuRestore,
)
from ..models.restore import RestoreStatus

S = TypeVar("S", bound=StatusModel)
R = TypeVar("R", LamassuBackupPolicy, LamassuBackup, LamassuRestore)


@dataclass(frozen=True)
class Invalid(Identity, Generic[S]):
    """One of our objects whose spec the models refuse: who it is, its status, and why."""

    api_version: str
    kind: str
    metadata: dict[str, Any]
    status: S
    errors: list[ErrorDetails]
    """The spec's validation errors, their locations relative to the spec."""

    raw_spec: dict[str, Any]
    """The spec as found: read only for what a report of it needs (a metric label)."""

    @property
    def detail(self) -> str:
        """The first error's message alone."""
        return str(self.errors[0]["msg"])

    @property
    def message(self) -> str:
        """The first error, naming its field: ``spec.schedule: ...``."""
        where = ".".join(str(p) for p in self.errors[0].get("loc", ()))
        return f"spec.{where}: {self.detail}" if where else self.detail


Policy = LamassuBackupPolicy | Invalid[BackupPolicyStatus]
Backup = LamassuBackup | Invalid[BackupStatus]
Restore = LamassuRestore | Invalid[RestoreStatus]


def _parse(body: dict[str, Any], model: type[R], status: type[S]) -> R | Invalid[S]:
    try:
        parsed = model.model_validate(body)
    except ValidationError as exc:
        errors = exc.errors()
        if not all(e["loc"][:1] == ("spec",) for e in errors):
            raise  # not (only) the spec: a bug or a hand-edited status
        return Invalid(
            api_version=str(body.get("apiVersion") or API_VERSION),
            kind=str(body.get("kind") or model.model_fields["kind"].default),
            metadata=dict(body.get("metadata") or {}),
            status=status.model_validate(body.get("status") or {}),
            errors=[{**e, "loc": e["loc"][1:]} for e in errors],
            raw_spec=dict(body.get("spec") or {}),
        )
    if parsed.status is None:
        parsed.status = status.model_validate({})  # type: ignore[assignment]
    return parsed


def parse_policy(body: dict[str, Any]) -> Policy:
    """A LamassuBackupPolicy body, typed (its status always set)."""
    return _parse(body, LamassuBackupPolicy, BackupPolicyStatus)


def parse_backup(body: dict[str, Any]) -> Backup:
    """A LamassuBackup body, typed (its status always set)."""
    return _parse(body, LamassuBackup, BackupStatus)


def parse_restore(body: dict[str, Any]) -> Restore:
    """A LamassuRestore body, typed (its status always set)."""
    return _parse(body, LamassuRestore, RestoreStatus)


def read_policy(kube: KubeApi, namespace: str, name: str) -> Policy | None:
    """A LamassuBackupPolicy read now, typed; None when it does not exist."""
    body = kube.get_custom("LamassuBackupPolicy", namespace, name)
    return None if body is None else parse_policy(body)


def read_backup(kube: KubeApi, namespace: str, name: str) -> Backup | None:
    """A LamassuBackup read now, typed; None when it does not exist."""
    body = kube.get_custom("LamassuBackup", namespace, name)
    return None if body is None else parse_backup(body)


def read_restore(kube: KubeApi, namespace: str, name: str) -> Restore | None:
    """A LamassuRestore read now, typed; None when it does not exist."""
    body = kube.get_custom("LamassuRestore", namespace, name)
    return None if body is None else parse_restore(body)


def policy_label(backup: Backup) -> dict[str, str] | None:
    """The policy label a record lacks (a LamassuBackup written by hand), to set once; None when
    it has the right one. :func:`policy_records` finds records by it."""
    policy = policy_of(backup)
    if not policy:
        return None
    value = layout.label_value(policy)
    if (backup.metadata.get("labels") or {}).get(LABEL_POLICY) == value:
        return None
    return {LABEL_POLICY: value}


def policy_records(kube: KubeApi, namespace: str, policy: str) -> list[dict[str, Any]]:
    """A policy's LamassuBackup bodies, read now: by its label, so a pass costs what the policy
    holds, not what the namespace holds (fifty policies in one namespace would otherwise read
    each other's records on every run). The label value may be a shortened name: filtered again
    by spec.policyRef.name."""
    selector = f"{LABEL_POLICY}={layout.label_value(policy)}"
    return [
        b
        for b in kube.list_custom("LamassuBackup", namespace, selector)
        if ((b.get("spec") or {}).get("policyRef") or {}).get("name") == policy
    ]


def policy_of(backup: Backup) -> str:
    """The policy a run belongs to (spec.policyRef.name), read even from a spec that is invalid."""
    if isinstance(backup, Invalid):
        return str((backup.raw_spec.get("policyRef") or {}).get("name", ""))
    return backup.spec.policy_ref.name


def stored(status: StatusModel) -> dict[str, Any]:
    """A parsed status as the API holds it: only the fields it has (none of the models'
    defaults), so a patch computed against it writes what the API does not have yet."""
    return status.model_dump(by_alias=True, exclude_none=True, exclude_unset=True, mode="json")
