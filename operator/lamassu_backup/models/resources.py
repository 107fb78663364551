"""The three custom resources: whole-object models and the facts their CRDs are built from."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, Literal

from pydantic import Field

from .backup import BackupSpec, BackupStatus
from .base import CRModel
from .policy import BackupPolicySpec, BackupPolicyStatus
from .restore import RestoreSpec, RestoreStatus

GROUP = "backup.lamassu.io"
VERSION = "v1alpha1"
API_VERSION = f"{GROUP}/{VERSION}"
CATEGORY = "lamassu"


class Identity:
    """Who an object is, read from its metadata in one place (every service reads it here)."""

    if TYPE_CHECKING:
        api_version: str
        kind: str
        metadata: dict[str, Any]

    @property
    def name(self) -> str:
        """metadata.name."""
        return str(self.metadata.get("name") or "")

    @property
    def namespace(self) -> str:
        """metadata.namespace."""
        return str(self.metadata.get("namespace") or "")

    @property
    def uid(self) -> str:
        """metadata.uid."""
        return str(self.metadata.get("uid") or "")

    @property
    def generation(self) -> int | None:
        """metadata.generation: the spec generation, for observedGeneration."""
        value = self.metadata.get("generation")
        return int(value) if value is not None else None

    @property
    def creation_timestamp(self) -> str | None:
        """metadata.creationTimestamp, as the API wrote it."""
        value = self.metadata.get("creationTimestamp")
        return str(value) if value else None

    @property
    def annotations(self) -> dict[str, str]:
        """metadata.annotations."""
        return dict(self.metadata.get("annotations") or {})


class _Resource(Identity, CRModel):
    api_version: Literal["backup.lamassu.io/v1alpha1"] = Field(
        "backup.lamassu.io/v1alpha1", alias="apiVersion"
    )
    """API version."""

    metadata: dict[str, Any] = Field(default_factory=dict)
    """Object metadata."""


class LamassuBackupPolicy(_Resource):
    """What to back up, when, where to, and how long to keep it."""

    kind: Literal["LamassuBackupPolicy"] = "LamassuBackupPolicy"
    """Kind."""

    spec: BackupPolicySpec
    """Desired state."""

    status: BackupPolicyStatus | None = None
    """Observed state."""


class LamassuBackup(_Resource):
    """One backup run: the set's location, checksums and verification."""

    kind: Literal["LamassuBackup"] = "LamassuBackup"
    """Kind."""

    spec: BackupSpec
    """Desired state."""

    status: BackupStatus | None = None
    """Observed state."""


class LamassuRestore(_Resource):
    """A restore or a drill of one backup set."""

    kind: Literal["LamassuRestore"] = "LamassuRestore"
    """Kind."""

    spec: RestoreSpec
    """Desired state."""

    status: RestoreStatus | None = None
    """Observed state."""


@dataclass(frozen=True)
class PrinterColumn:
    """A column of ``kubectl get``."""

    name: str
    json_path: str
    type: str = "string"
    description: str = ""
    priority: int = 0


@dataclass(frozen=True)
class ResourceKind:
    """Everything the CRD generator needs to know about one kind beyond its models."""

    model: type[_Resource]
    kind: str
    plural: str
    singular: str
    short_names: tuple[str, ...]
    columns: tuple[PrinterColumn, ...] = field(default=())

    @property
    def crd_name(self) -> str:
        """The CRD's metadata.name."""
        return f"{self.plural}.{GROUP}"


def _condition(type_: str) -> str:
    return f'.status.conditions[?(@.type=="{type_}")].status'


_AGE = PrinterColumn("Age", ".metadata.creationTimestamp", "date")

KINDS: tuple[ResourceKind, ...] = (
    ResourceKind(
        model=LamassuBackupPolicy,
        kind="LamassuBackupPolicy",
        plural="lamassubackuppolicies",
        singular="lamassubackuppolicy",
        short_names=("lbp",),
        columns=(
            PrinterColumn("Schedule", ".spec.schedule", description="Cron schedule"),
            PrinterColumn("Last Success", ".status.lastSuccessfulTime", "date"),
            PrinterColumn("Next", ".status.nextScheduleTime", description="Next run (UTC)"),
            PrinterColumn("Stale", _condition("Stale"), description="A component is past its RPO"),
            PrinterColumn("Ready", _condition("Ready")),
            _AGE,
        ),
    ),
    ResourceKind(
        model=LamassuBackup,
        kind="LamassuBackup",
        plural="lamassubackups",
        singular="lamassubackup",
        short_names=("lbk",),
        columns=(
            PrinterColumn("Policy", ".spec.policyRef.name"),
            PrinterColumn("Trigger", ".spec.trigger", priority=1),
            PrinterColumn("Phase", ".status.phase"),
            PrinterColumn("Size", ".status.size"),
            PrinterColumn("Started", ".status.startedAt", "date"),
            PrinterColumn("Duration", ".status.duration"),
            PrinterColumn("Verified", ".status.verification.phase"),
            PrinterColumn("Location", ".status.location", priority=1),
            _AGE,
        ),
    ),
    ResourceKind(
        model=LamassuRestore,
        kind="LamassuRestore",
        plural="lamassurestores",
        singular="lamassurestore",
        short_names=("lrs",),
        columns=(
            PrinterColumn("Backup", ".status.resolvedBackup.name"),
            PrinterColumn(
                "Point In Time",
                ".status.resolvedBackup.pointInTime.requested",
                description="Point-in-time restore: the target (latest or a time)",
                priority=1,
            ),
            PrinterColumn("Mode", ".spec.mode"),
            PrinterColumn("Phase", ".status.phase"),
            PrinterColumn("Step", ".status.step"),
            PrinterColumn(
                "RTO", ".status.recoveryTimeSeconds", "number", "Measured recovery time (s)"
            ),
            _AGE,
        ),
    ),
)

KINDS_BY_NAME = {k.kind: k for k in KINDS}


def parse_resource(obj: dict[str, Any]) -> LamassuBackupPolicy | LamassuBackup | LamassuRestore:
    """Validate a whole object (e.g. a manifest file) against the model of its kind."""
    kind = obj.get("kind")
    if kind not in KINDS_BY_NAME:
        raise ValueError(f"unknown kind {kind!r}; expected one of {', '.join(KINDS_BY_NAME)}")
    model = KINDS_BY_NAME[str(kind)].model
    result = model.model_validate(obj)
    assert isinstance(result, LamassuBackupPolicy | LamassuBackup | LamassuRestore)
    return result


PLURALS: dict[str, str] = {k.kind: k.plural for k in KINDS}
"""Kind -> plural: the one table every client, handler and test helper uses."""

POLICIES, BACKUPS, RESTORES = (
    PLURALS["LamassuBackupPolicy"],
    PLURALS["LamassuBackup"],
    PLURALS["LamassuRestore"],
)
