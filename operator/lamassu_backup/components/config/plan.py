"""The config component, pure side: which objects to archive, where a restore applies them."""

from __future__ import annotations

from datetime import timedelta
from typing import TYPE_CHECKING, Any

from ...builders import layout
from ..base import Component, RestoreRequest, SecretMounts
from .spec import ConfigSettings

if TYPE_CHECKING:
    from ...models.policy import Components


def artifact_keys() -> layout.ArtifactKeys:
    """config/config.tar.gz.gpg with its sidecar."""
    return layout.artifact_keys("config", "config.tar.gz")


class Config(Component):
    """Lamassu's ConfigMaps and Secrets, archived as YAML (read with the runner's own
    ServiceAccount: no Secret references of its own)."""

    name = "config"
    attr = "config"
    package = "lamassu_backup.components.config"

    def runner_settings(
        self, mounts: SecretMounts, comps: Components, namespace: str
    ) -> dict[str, Any]:
        config = comps.config
        assert config is not None
        return {
            "config": ConfigSettings(
                namespace=namespace,
                config_maps=list(config.config_maps),
                secrets=list(config.secrets),
                selector=config.selector.to_query() if config.selector else None,
            )
        }

    def rpo(self, comps: Components) -> timedelta:
        assert comps.config is not None
        return comps.config.recovery_point_objective

    def restore_settings(self, mounts: SecretMounts, req: RestoreRequest) -> dict[str, Any]:
        if self.name not in req.components:
            return {}
        target = req.spec.target.namespace if req.spec is not None and req.spec.target else None
        return {"config": ConfigSettings(namespace=target or req.namespace)}


COMPONENT = Config()
