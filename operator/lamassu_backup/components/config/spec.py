"""The config component's models: which ConfigMaps and Secrets a set archives."""

from __future__ import annotations

from datetime import timedelta

from pydantic import Field

from ...models.base import CRModel, Rule, RunnerModel
from ...models.common import LabelSelector, ObjectName
from ...models.types import Duration

LAMASSU_CONFIGMAPS = [
    "ca-config",
    "kms-config",
    "va-config",
    "device-manager-config",
    "dms-manager-config",
    "alerts-config",
]
"""The ConfigMaps the Lamassu chart creates, one per service."""


class ConfigComponent(CRModel):
    """Lamassu's ConfigMaps and Secrets (service configs, TLS), archived as YAML."""

    __rules__ = (
        Rule(
            "size(self.configMaps) > 0 || size(self.secrets) > 0 || has(self.selector)",
            "config needs configMaps, secrets or a selector",
            lambda m: bool(m.config_maps or m.secrets or m.selector),
        ),
    )

    config_maps: list[ObjectName] = Field(default_factory=lambda: list(LAMASSU_CONFIGMAPS))
    """ConfigMaps by name (default: the six Lamassu service configs)."""

    secrets: list[ObjectName] = Field(
        default_factory=lambda: ["downstream-cert", "root-downstream-cert"]
    )
    """Secrets by name (default: the TLS Secrets of the Lamassu chart)."""

    selector: LabelSelector | None = None
    """ConfigMaps and Secrets with these labels are included as well."""

    backup_on_change: bool = False
    """A change to a selected object triggers a config-only backup run."""

    recovery_point_objective: Duration = timedelta(days=8)
    """Stale when the last successful config backup is older than this."""


class ConfigSettings(RunnerModel):
    """Which ConfigMaps and Secrets to archive."""

    namespace: str
    config_maps: list[str] = Field(default_factory=list)
    secrets: list[str] = Field(default_factory=list)
    selector: str | None = None
