"""The vault component's backup step: a raft snapshot verified while it streams, and a logical
export of each KV v2 mount (every secret, every field of its latest version)."""

from __future__ import annotations

import json
from collections.abc import Iterator
from typing import TYPE_CHECKING, Any

from ...errors import ConfigurationError
from ...models.runner import ComponentOutcome
from ...runner.stream.pipeline import IterSource
from . import plan
from .raft import SnapshotVerifier

if TYPE_CHECKING:
    from ...clients.vault import VaultClient
    from ...runner.backup.run import BackupRun
    from ...runner.backup.steps import BackupStep


def backup(run: BackupRun) -> ComponentOutcome:
    """A verified raft snapshot and/or a logical export of each KV v2 mount."""
    settings = run.cfg.vault
    if settings is None:
        raise ConfigurationError("component vault is not configured")
    client, _ = run.ctx.vault_client(settings)
    client.check_ready()
    artifacts = []
    if settings.raft_snapshot:
        verifier = SnapshotVerifier()
        facts: dict[str, Any] = {}

        chunks = client.snapshot_chunks()
        try:
            record = run.store_artifact(
                _VerifiedSource(IterSource(chunks, label="Vault raft snapshot"), verifier, facts),
                plan.raft_keys(),
                component="vault",
                name="raft",
                kind="raft-snapshot",
                compression="none",
                taps=[verifier.tap],
                details=facts,
            )
        finally:
            chunks.close()
        artifacts.append(record)
    for mount in settings.kv_mounts:
        document = kv_export(client, mount)
        body = json.dumps(document, sort_keys=True, indent=1).encode()
        artifacts.append(
            run.store_artifact(
                IterSource([body], label=f"KV export of {mount}"),
                plan.kv_keys(mount),
                component="vault",
                name=mount,
                kind="kv-export",
                compression="none",
                details={"mount": mount, "secrets": len(document["secrets"])},
            )
        )
    return ComponentOutcome(component="vault", ok=True, artifacts=artifacts)


class _VerifiedSource:
    """Wraps the snapshot source: after the stream ends, the verifier must accept it."""

    def __init__(
        self, inner: IterSource, verifier: SnapshotVerifier, facts: dict[str, Any]
    ) -> None:
        self.label = inner.label
        self._inner = inner
        self._verifier = verifier
        self._facts = facts

    def chunks(self) -> Iterator[bytes]:
        return self._inner.chunks()

    def finish(self) -> None:
        self._inner.finish()
        self._facts.update(self._verifier.result())

    def kill(self) -> None:
        self._inner.kill()


def kv_export(client: VaultClient, mount: str) -> dict[str, Any]:
    """Every secret under a KV v2 mount, all fields of the latest version, with metadata."""
    secrets: dict[str, Any] = {}
    for path in client.kv_paths(mount):
        entry = client.kv_read(mount, path)
        meta = entry.get("metadata") or {}
        secrets[path] = {
            "data": entry.get("data") or {},
            "version": meta.get("version"),
            "createdTime": meta.get("created_time"),
            "customMetadata": meta.get("custom_metadata"),
        }
    return {"format": "lamassu-backup/kv-export/v1", "mount": mount, "secrets": secrets}


STEP: BackupStep = backup
