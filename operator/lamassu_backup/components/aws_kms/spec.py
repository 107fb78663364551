"""The awsKms component's models: AWS KMS key metadata (key material cannot leave KMS)."""

from __future__ import annotations

from datetime import timedelta

from pydantic import Field

from ...models.base import CRModel, RunnerModel
from ...models.common import ENGINE_ID_MAX, AwsCredentialsSecretRef
from ...models.types import Duration


class AwsKmsComponent(CRModel):
    """AWS KMS key metadata (aliases, key policies, descriptions): key material cannot leave KMS."""

    region: str = Field(min_length=1)
    """AWS region of the keys."""

    endpoint: str | None = None
    """Endpoint override for KMS-compatible services."""

    credentials_secret: AwsCredentialsSecretRef | None = None
    """AWS credentials; when absent, the runner Pod's ambient credentials (IRSA) are used."""

    key_ids: list[str] = Field(default_factory=list)
    """Keys to record; empty means every key in the account and region."""

    recovery_point_objective: Duration = timedelta(days=8)
    """Stale when the last successful metadata backup is older than this."""

    key_store_engine: str | None = Field(default=None, min_length=1, max_length=ENGINE_ID_MAX)
    """The kms crypto engine of type aws_kms (its id in kms-config, e.g. aws-kms-1) whose keys
    are in this account and region. A restore or drill then checks each of that engine's CA
    keys against the metadata in the set, offline: the alias ``alias/<key id>`` exists and its
    key is neither pending deletion nor disabled."""


class AwsKmsSettings(RunnerModel):
    """AWS KMS metadata to record."""

    region: str
    endpoint: str | None = None
    access_key_id_file: str | None = None
    secret_access_key_file: str | None = None
    session_token_file: str | None = None
    key_ids: list[str] = Field(default_factory=list)
