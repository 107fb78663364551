"""The awsKms component, pure side: runner settings, Secret references, objective."""

from __future__ import annotations

from datetime import timedelta
from typing import TYPE_CHECKING, Any

from ...builders import layout
from ..base import Component, Reference, RestoreRequest, SecretMounts, aws_refs
from .spec import AwsKmsSettings

if TYPE_CHECKING:
    from ...models.policy import Components


def artifact_keys() -> layout.ArtifactKeys:
    """aws-kms/kms-metadata.json.gpg with its sidecar."""
    return layout.artifact_keys("aws-kms", "kms-metadata.json")


class AwsKms(Component):
    """AWS KMS key metadata (aliases, policies, descriptions): key material cannot leave KMS."""

    name = "awsKms"
    attr = "aws_kms"
    package = "lamassu_backup.components.aws_kms"

    def runner_settings(
        self, mounts: SecretMounts, comps: Components, namespace: str
    ) -> dict[str, Any]:
        kms = comps.aws_kms
        assert kms is not None
        return {
            "aws_kms": AwsKmsSettings(
                region=kms.region,
                endpoint=kms.endpoint,
                key_ids=list(kms.key_ids),
                **mounts.aws(kms.credentials_secret, "kms"),
            )
        }

    def references(self, comps: Components) -> list[Reference]:
        assert comps.aws_kms is not None
        return aws_refs(
            "spec.components.awsKms.credentialsSecret", comps.aws_kms.credentials_secret
        )

    def rpo(self, comps: Components) -> timedelta:
        assert comps.aws_kms is not None
        return comps.aws_kms.recovery_point_objective

    def drilled(self, comps: Components) -> bool:
        # The scheduled drill reads the metadata when an engine's keys are in AWS KMS: the key
        # check resolves that engine's keys there (nothing is written anywhere).
        return comps.aws_kms is not None and comps.aws_kms.key_store_engine is not None

    def restore_settings(self, mounts: SecretMounts, req: RestoreRequest) -> dict[str, Any]:
        if req.policy is None or req.policy.components.aws_kms is None:
            return {}
        engine = req.policy.components.aws_kms.key_store_engine
        return {"aws_kms_key_store_engine": engine} if engine else {}


COMPONENT = AwsKms()
