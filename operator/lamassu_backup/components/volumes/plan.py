"""The volumes component, pure side: which claims a Job mounts, and where each filesystem
engine's keys are for the restore's key check."""

from __future__ import annotations

from datetime import timedelta
from typing import TYPE_CHECKING, Any

from ...builders import layout
from ..base import VOLUMES_ROOT, Component, PodVolumes, RestoreRequest, SecretMounts
from .spec import FilesystemKeyStore, VolumeSettings

if TYPE_CHECKING:
    from ...models.policy import Components


def artifact_keys(name: str) -> layout.ArtifactKeys:
    """volumes/<name>.tar.gz.gpg with its sidecar."""
    return layout.artifact_keys("volumes", f"{layout.safe_segment(name)}.tar.gz")


def claim_mounts(comps: Components, *, read_only: bool) -> PodVolumes:
    """The policy's volumes as Pod volumes and mounts at ``VOLUMES_ROOT/<name>`` (backups read
    them; an in-place restore writes them, or reads a key store it checks the keys against)."""
    volumes: list[dict[str, Any]] = []
    mounts: list[dict[str, Any]] = []
    for vol in comps.volumes:
        vname = layout.bounded_name("data", vol.name)
        volumes.append(
            {
                "name": vname,
                "persistentVolumeClaim": {"claimName": vol.claim_name, "readOnly": read_only},
            }
        )
        mount: dict[str, Any] = {
            "name": vname,
            "mountPath": f"{VOLUMES_ROOT}/{vol.name}",
            "readOnly": read_only,
        }
        if vol.sub_path:
            mount["subPath"] = vol.sub_path
        mounts.append(mount)
    return volumes, mounts


def filesystem_key_stores(comps: Components) -> list[FilesystemKeyStore]:
    """The filesystem and PKCS#11 (SoftHSM) crypto engines whose keys are on one of the policy's
    volumes."""
    return [
        FilesystemKeyStore(
            engine=v.key_store_engine,
            type=v.key_store_type,
            volume=v.name,
            path=v.key_store_path,
        )
        for v in comps.volumes
        if v.key_store_engine
    ]


def settings(comps: Components) -> list[VolumeSettings]:
    """Where the runner finds (or restores) each volume."""
    return [VolumeSettings(name=v.name, path=f"{VOLUMES_ROOT}/{v.name}") for v in comps.volumes]


class Volumes(Component):
    """PersistentVolumeClaims archived as files (filesystem engine keys, SoftHSM tokens, CRLs);
    ReadWriteOnce claims pin its Job to the node that has them mounted."""

    name = "volumes"
    attr = "volumes"
    package = "lamassu_backup.components.volumes"

    def runner_settings(
        self, mounts: SecretMounts, comps: Components, namespace: str
    ) -> dict[str, Any]:
        return {"volumes": settings(comps)}

    def rpo(self, comps: Components) -> timedelta:
        return comps.volumes_recovery_point_objective

    def claims(self, comps: Components) -> list[tuple[str, str]]:
        return [
            (f"spec.components.volumes[{i}].claimName", v.claim_name)
            for i, v in enumerate(comps.volumes)
        ]

    def pod_volumes(self, comps: Components) -> PodVolumes:
        return claim_mounts(comps, read_only=True)

    def drilled(self, comps: Components) -> bool:
        # The scheduled drill restores the volumes only when a filesystem engine keeps its keys
        # on one: the key check reads them from the scratch copy (the set is read, not claims).
        return bool(filesystem_key_stores(comps))

    def restore_settings(self, mounts: SecretMounts, req: RestoreRequest) -> dict[str, Any]:
        if req.policy is None:
            return {}
        comps = req.policy.components
        out: dict[str, Any] = {"filesystem_key_stores": filesystem_key_stores(comps)}
        if not req.drill:
            out["volumes"] = settings(comps)
        return out

    def restore_pod_volumes(self, req: RestoreRequest) -> PodVolumes:
        # In place the live volumes are mounted: written when they are restored, read otherwise
        # (the key check compares the restored databases with the key store they will meet).
        if req.policy is None or req.drill:
            return [], []
        read_only = self.name not in req.components or req.step == "plan"
        return claim_mounts(req.policy.components, read_only=read_only)


COMPONENT = Volumes()
