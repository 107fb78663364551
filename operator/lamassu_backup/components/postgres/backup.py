"""The postgres component's backup step: one ``pg_dump -Fc`` per database (or schema), each
from its own exported snapshot, so every artifact is consistent and they dump in parallel."""

from __future__ import annotations

import functools
from concurrent.futures import ThreadPoolExecutor, wait
from typing import TYPE_CHECKING

from ...clients import postgres as pg
from ...errors import ConfigurationError
from ...models.runner import ArtifactRecord, ComponentOutcome
from ...runner.stream.pipeline import ProcessSource
from . import plan
from .compression import compression_label, compressor_argv
from .spec import CompressionAlgorithm, DatabaseLayout, PostgresSettings

# How long an interrupted run waits for its workers: their processes are killed, so they end in
# well under a second; the bound keeps a hung store from holding the runner past its grace period.
WORKERS_STOP_SECONDS = 10.0

if TYPE_CHECKING:
    from ...runner.backup.run import BackupRun
    from ...runner.backup.steps import BackupStep


def backup(run: BackupRun) -> ComponentOutcome:
    """One pg_dump per database (or schema), each from an exported snapshot."""
    settings = run.cfg.postgres
    if settings is None:
        raise ConfigurationError("component postgres is not configured")
    conn = run.ctx.pg_connection(settings)
    version = pg.server_version_num(conn)
    pg_dump = pg.pick_tool("pg_dump", version // 10000)
    pg_dump_major = pg.tool_major(pg_dump)
    if settings.layout == DatabaseLayout.DATABASES:
        targets: list[tuple[str, str | None]] = [(db, None) for db in settings.databases]
    else:
        targets = [(settings.database, s) for s in settings.schemas] or [(settings.database, None)]
    dump = functools.partial(
        _dump_database,
        run,
        conn,
        settings,
        version=version,
        pg_dump=pg_dump,
        pg_dump_major=pg_dump_major,
    )
    _ = run.keyring  # import the recipients once, before the workers share the keyring
    # A few databases at a time: the small ones finish while the big one streams, and each
    # pipeline is already several processes, so more than two buys nothing on small nodes.
    pool = ThreadPoolExecutor(max_workers=max(1, settings.parallel), thread_name_prefix="pg")
    futures = [pool.submit(dump, database, schema) for database, schema in targets]
    try:
        wait(futures)  # a SIGTERM raises here, in the main thread
    except BaseException:
        # The run's cancel kills every worker's pipeline (pg_dump, compressor, gpg), so each
        # aborts its upload and returns; wait for them so that what they stored is known (and
        # removed) before the runner reports, and queued databases never start.
        run.cancel.cancel()
        wait(futures, timeout=WORKERS_STOP_SECONDS)
        pool.shutdown(wait=False, cancel_futures=True)
        raise
    pool.shutdown(wait=True)
    artifacts = [f.result() for f in futures]  # raises the first database's failure
    return ComponentOutcome(
        component="postgres",
        ok=True,
        artifacts=artifacts,
        details={"serverVersionNum": version},
    )


def _dump_database(
    run: BackupRun,
    conn: pg.PgConnection,
    settings: PostgresSettings,
    database: str,
    schema: str | None,
    *,
    version: int,
    pg_dump: str,
    pg_dump_major: int | None,
) -> ArtifactRecord:
    """Dump one database (or schema) from its own exported snapshot into the set."""
    algorithm = settings.compression.algorithm
    level = settings.compression.level
    artifact_name = database if schema is None else f"{database}.{schema}"
    with pg.SnapshotSession(conn, database) as session:
        facts = pg.table_facts(session, schema)
        argv = pg.dump_command(
            pg_dump,
            database,
            snapshot=session.snapshot,
            compress_level=level if algorithm == CompressionAlgorithm.GZIP else 0,
            schema=schema,
        )
        source = ProcessSource(
            argv,
            env=conn.env(database),
            label=f"pg_dump of {artifact_name}",
            describe_error=functools.partial(pg_dump_error, artifact_name),
        )
        return run.store_artifact(
            source,
            plan.artifact_keys(artifact_name, algorithm.value),
            component="postgres",
            name=artifact_name,
            kind="pg-dump",
            compression=compression_label(algorithm, level),
            compressor=compressor_argv(algorithm, level),
            details={
                "database": database,
                **({"schema": schema} if schema else {}),
                "serverVersionNum": version,
                "pgDumpMajor": pg_dump_major,
                **facts,
            },
        )


def pg_dump_error(name: str, code: int, stderr: str) -> str:
    """A pg_dump failure for a person."""
    return f"pg_dump of {name} failed (exit {code}): {pg_error(stderr)}"


def pg_error(stderr: str) -> str:
    """The informative line of a pg_dump error."""
    lines = [ln.strip() for ln in stderr.splitlines() if ln.strip()]
    useful = [ln for ln in lines if "error" in ln.lower() or "fatal" in ln.lower()] or lines
    return "; ".join(useful[-2:])[:500] or "no error output"


STEP: BackupStep = backup
