"""The config component's backup step: the selected ConfigMaps and Secrets as YAML files in a
deterministic tar.gz (server-set fields removed, so a restore can apply them as they are)."""

from __future__ import annotations

import io
import os
import tarfile
from typing import TYPE_CHECKING, Any

import yaml

from ...builders import layout
from ...errors import ConfigurationError, LamassuBackupError
from ...models.runner import ComponentOutcome
from ...runner.stream.pipeline import IterSource
from . import plan

if TYPE_CHECKING:
    from ...runner.backup.run import BackupRun
    from ...runner.backup.steps import BackupStep

_SERVER_FIELDS = (
    "managedFields",
    "resourceVersion",
    "uid",
    "creationTimestamp",
    "generation",
    "selfLink",
    "ownerReferences",
)


def backup(run: BackupRun) -> ComponentOutcome:
    """ConfigMaps and Secrets as YAML files in a tar.gz."""
    settings = run.cfg.config
    if settings is None:
        raise ConfigurationError("component config is not configured")
    from ...clients.kube import ConfigReader, load_config, not_found

    reader = ConfigReader(load_config(os.environ.get("LAMASSU_KUBECONFIG")))
    objects: dict[tuple[str, str], dict[str, Any]] = {}
    for kind, names, read in (
        ("ConfigMap", settings.config_maps, reader.config_map),
        ("Secret", settings.secrets, reader.secret),
    ):
        for name in names:
            try:
                obj = read(settings.namespace, name)
            except LamassuBackupError as exc:
                if not_found(exc):
                    field = "configMaps" if kind == "ConfigMap" else "secrets"
                    raise ConfigurationError(
                        f"{kind} {settings.namespace}/{name} does not exist: "
                        "create it or remove it "
                        f"from spec.components.config.{field}"
                    ) from None
                raise
            obj.setdefault("kind", kind)
            objects[(kind, name)] = obj
    if settings.selector:
        for obj in reader.select(settings.namespace, settings.selector):
            objects[(obj["kind"], obj["metadata"]["name"])] = obj
    if not objects:
        raise ConfigurationError("the config component selected no ConfigMap or Secret")
    archive = config_archive(objects, run.cfg.set_time)
    index = sorted(f"{k}/{n}" for k, n in objects)
    return ComponentOutcome(
        component="config",
        ok=True,
        artifacts=[
            run.store_artifact(
                IterSource([archive], label="config archive"),
                plan.artifact_keys(),
                component="config",
                name="config",
                kind="config-archive",
                compression="gzip",
                details={"objects": index},
            )
        ],
    )


def config_archive(objects: dict[tuple[str, str], dict[str, Any]], set_time: str) -> bytes:
    """A deterministic tar.gz of the objects (server-set fields removed), one YAML file each."""
    mtime = layout.parse_set_time(set_time).timestamp()
    buffer = io.BytesIO()
    with tarfile.open(fileobj=buffer, mode="w:gz", format=tarfile.PAX_FORMAT) as tar:
        for (kind, name), obj in sorted(objects.items()):
            clean = dict(obj)
            clean.pop("status", None)
            meta = {
                k: v for k, v in (clean.get("metadata") or {}).items() if k not in _SERVER_FIELDS
            }
            annotations = {
                k: v
                for k, v in (meta.get("annotations") or {}).items()
                if k != "kubectl.kubernetes.io/last-applied-configuration"
            }
            if annotations:
                meta["annotations"] = annotations
            else:
                meta.pop("annotations", None)
            clean["metadata"] = meta
            clean.setdefault("apiVersion", "v1")
            data = yaml.safe_dump(clean, sort_keys=True).encode()
            info = tarfile.TarInfo(
                f"{'configmaps' if kind == 'ConfigMap' else 'secrets'}/{name}.yaml"
            )
            info.size = len(data)
            info.mtime = int(mtime)
            info.mode = 0o600
            tar.addfile(info, io.BytesIO(data))
    return buffer.getvalue()


STEP: BackupStep = backup
