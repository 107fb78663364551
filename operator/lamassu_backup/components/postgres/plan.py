"""The postgres component, pure side: runner settings, Secret references, objective."""

from __future__ import annotations

from datetime import timedelta
from typing import TYPE_CHECKING, Any

from ...builders import layout
from ..base import Component, Reference, RestoreRequest, SecretMounts, basic_refs, key_refs
from .spec import PostgresComponent, PostgresSettings

if TYPE_CHECKING:
    from ...models.policy import Components
    from ...models.runner import RestoreRunConfig

FIELD = "spec.components.postgres"


def artifact_keys(database: str, algorithm: str) -> layout.ArtifactKeys:
    """postgres/<db>.dump[.zst|.lz4].gpg with sidecar postgres/<db>.dump.sha256."""
    return layout.artifact_keys(
        "postgres",
        f"{layout.safe_segment(database)}.dump",
        layout.compression_suffix(algorithm),
    )


def settings(mounts: SecretMounts, pg: PostgresComponent) -> PostgresSettings:
    """Runner settings for the PostgreSQL server, with its credentials mounted."""
    user_file, password_file = mounts.basic(pg.credentials_secret, "postgres")
    return PostgresSettings(
        host=pg.host,
        port=pg.port,
        ssl_mode=pg.ssl_mode,
        ca_file=mounts.ref(pg.ca_secret, "postgres-ca.crt"),
        username_file=user_file,
        password_file=password_file,
        layout=pg.layout,
        databases=list(pg.databases),
        database=pg.database,
        schemas=list(pg.schemas),
        compression=pg.compression,
        parallel=pg.parallel,
    )


def restore_target(mounts: SecretMounts, req: RestoreRequest) -> PostgresSettings | None:
    """The server a restore writes into: ``spec.target.postgres``, else the policy's."""
    target = req.spec.target.postgres if req.spec is not None and req.spec.target else None
    if target is not None:
        user_file, password_file = mounts.basic(target.credentials_secret, "postgres")
        return PostgresSettings(
            host=target.host,
            port=target.port,
            ssl_mode=target.ssl_mode,
            ca_file=mounts.ref(target.ca_secret, "postgres-ca.crt"),
            username_file=user_file,
            password_file=password_file,
        )
    if req.policy is not None and req.policy.components.postgres is not None:
        return settings(mounts, req.policy.components.postgres)
    return None


class Postgres(Component):
    """Lamassu's PostgreSQL databases, one ``pg_dump -Fc`` artifact per database (or schema)."""

    name = "postgres"
    attr = "postgres"
    package = "lamassu_backup.components.postgres"

    def runner_settings(
        self, mounts: SecretMounts, comps: Components, namespace: str
    ) -> dict[str, Any]:
        assert comps.postgres is not None
        return {"postgres": settings(mounts, comps.postgres)}

    def references(self, comps: Components) -> list[Reference]:
        assert comps.postgres is not None
        return [
            *basic_refs(f"{FIELD}.credentialsSecret", comps.postgres.credentials_secret),
            *key_refs(f"{FIELD}.caSecret", comps.postgres.ca_secret),
        ]

    def rpo(self, comps: Components) -> timedelta:
        assert comps.postgres is not None
        return comps.postgres.recovery_point_objective

    def drilled(self, comps: Components) -> bool:
        return True

    def restore_settings(self, mounts: SecretMounts, req: RestoreRequest) -> dict[str, Any]:
        out: dict[str, Any] = {}
        if req.spec is not None:
            out["postgres_jobs"] = req.spec.options.postgres.jobs
            out["keep_previous"] = req.spec.options.postgres.keep_previous
        # Rolling back or finalizing renames databases whatever the subset restored.
        if req.step in ("rollback", "finalize") or self.name in req.components:
            out["postgres"] = restore_target(mounts, req)
        return out

    def restore_module(self, config: RestoreRunConfig | None) -> str:
        """A point-in-time restore's hooks recover from the WAL archive (``wal.pitr_restore``)."""
        if config is not None and config.pitr is not None:
            return f"{self.package}.wal.pitr_restore"
        return super().restore_module(config)


COMPONENT = Postgres()
