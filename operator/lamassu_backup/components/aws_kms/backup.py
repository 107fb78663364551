"""The awsKms component's backup step: key metadata (aliases, policies, descriptions), with a
loud warning for keys scheduled for deletion."""

from __future__ import annotations

import json
from typing import TYPE_CHECKING

from ...errors import ConfigurationError
from ...models.runner import ComponentOutcome
from ...runner.stream.pipeline import IterSource
from . import plan

if TYPE_CHECKING:
    from ...runner.backup.run import BackupRun
    from ...runner.backup.steps import BackupStep


def backup(run: BackupRun) -> ComponentOutcome:
    """AWS KMS key metadata, with a loud warning for keys scheduled for deletion."""
    settings = run.cfg.aws_kms
    if settings is None:
        raise ConfigurationError("component awsKms is not configured")
    from ...clients.kms import KmsConnection, export_metadata

    document, warnings = export_metadata(
        KmsConnection(
            region=settings.region,
            endpoint=settings.endpoint,
            access_key_id=run.ctx.secret(settings.access_key_id_file, "AWS access key id"),
            secret_access_key=run.ctx.secret(
                settings.secret_access_key_file, "AWS secret access key"
            ),
            session_token=run.ctx.secret(settings.session_token_file, "AWS session token"),
        ),
        settings.key_ids,
    )
    body = json.dumps(document, sort_keys=True, indent=1, default=str).encode()
    record = run.store_artifact(
        IterSource([body], label="AWS KMS metadata"),
        plan.artifact_keys(),
        component="awsKms",
        name="kms",
        kind="kms-metadata",
        compression="none",
        details={"keys": len(document["keys"]), "pendingDeletion": len(warnings)},
    )
    return ComponentOutcome(component="awsKms", ok=True, artifacts=[record], warnings=warnings)


STEP: BackupStep = backup
