"""Bring a point-in-time recovery into the live server through the verify-then-swap path.

The recovered scratch server holds every database as of the target time. Copying its files over
the live server would destroy the live databases first; instead each database is dumped from
the scratch server and restored into a scratch database next to the live one
(:class:`..restore.PostgresRestore`, unchanged: database-level properties, one transaction
of renames, the previous databases kept as ``<db>__pre_restore_<suffix>`` for rollback). The
verification compares the restored copy with the recovered server itself: every table's row
count and the goose state must be equal, or nothing is swapped.
"""

from __future__ import annotations

import hashlib
import re
import subprocess
from collections.abc import Callable
from pathlib import Path
from typing import Any

from ....clients import postgres as pg
from ....clients.gpg import Keyring
from ....clients.s3 import S3Store
from ....errors import ConfigurationError, DatabaseError
from ....models.runner import ArtifactRecord
from ....runner.stream.fetch import FetchStats, HeadTap, exit_text
from ....runner.stream.pipeline import CHUNK, StderrTail, widen_pipe
from ..restore import RESTORING, PgTarget, PostgresRestore, plan_targets


class RecoveredServerRestore(PostgresRestore):
    """PostgresRestore whose dumps come from the recovered server instead of the bucket."""

    def __init__(
        self,
        live: pg.PgConnection,
        recovered: pg.PgConnection,
        *,
        store: S3Store,
        keyring: Keyring,
        scratch_dir: Path,
        parallel: int = 1,
        copy_props: bool = True,
    ) -> None:
        super().__init__(
            live,
            store=store,
            set_prefix="",
            keyring=keyring,
            passphrase=None,
            scratch_dir=scratch_dir,
            parallel=parallel,
            copy_props=copy_props,
        )
        self.recovered = recovered
        self.pg_dump = pg.pick_tool("pg_dump", pg.server_version_num(recovered) // 10000)

    def _load(self, target: PgTarget, artifact: ArtifactRecord) -> tuple[Path, Any]:
        """pg_dump (recovered server) | pg_restore (scratch database on the live server)."""
        head = HeadTap(0 if target.exists else HeadTap().limit)
        source = f"{target.scratch} (from the recovered server)"
        sink = self._scratch_sink(target, source)
        argv = pg.dump_command(
            self.pg_dump, target.database, snapshot=None, compress_level=0, schema=None
        )
        digest, size = hashlib.sha256(), 0
        dump = subprocess.Popen(
            argv,
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            env=self.recovered.env(target.database),
        )
        assert dump.stdout is not None
        errors = StderrTail(dump.stderr)
        widen_pipe(dump.stdout.fileno())
        sink.start()
        try:
            while data := dump.stdout.read(CHUNK):
                digest.update(data)
                size += len(data)
                head(data)
                sink.write(data)
            code = dump.wait()
            if code != 0:
                text = errors.text().decode(errors="replace").strip()[-300:]
                raise DatabaseError(
                    f"pg_dump of {target.database} from the recovered server failed "
                    f"({exit_text(code)}): {text}"
                )
            sink.finish()
        except BaseException:
            sink.kill()
            if dump.poll() is None:
                dump.kill()
                dump.wait()
            raise
        safe = re.sub(r"[^A-Za-z0-9._-]", "_", target.database)
        head_file = self.scratch_dir / f"{safe}.head"
        if head.data:
            head_file.write_bytes(bytes(head.data))
        return head_file, FetchStats(0, "", size, digest.hexdigest(), 0.0)


def recovered_artifacts(recovered: pg.PgConnection, databases: list[str]) -> list[ArtifactRecord]:
    """One record per database, carrying the recovered server's own row counts and goose state:
    what the restored copy is verified against."""
    out = []
    for database in databases:
        facts = pg.database_facts(pg.OneShot(recovered, database), None)
        out.append(
            ArtifactRecord(
                component="postgres",
                name=database,
                kind="pitr-recovered",
                key=f"pitr://{database}",
                size_bytes=0,
                plaintext_size_bytes=0,
                sha256="",
                plaintext_sha256="",
                compression="none",
                encryption="none",
                details={"database": database, **facts},
            )
        )
    return out


def restore_beside(
    restore: RecoveredServerRestore,
    databases: list[str],
    scratch_name: Callable[[str], str],
) -> list[PgTarget]:
    """Every database of the recovered server into its scratch copy on the live server,
    verified against the recovered server's own row counts and goose state; raises (after
    dropping the scratch copies) on the first that does not match. The live databases are not
    touched: :meth:`RecoveredServerRestore.swap` is the one step that changes them."""
    missing = sorted(
        set(databases) - set(pg.list_databases(pg.OneShot(restore.recovered, "postgres")))
    )
    if missing:
        raise ConfigurationError(
            f"the recovered server has no database {', '.join(missing)}: the point in time is "
            "before it was created, or spec.databases names a database the server never had"
        )
    targets = plan_targets(recovered_artifacts(restore.recovered, databases), scratch_name)
    restore.prepare(targets)
    return targets


def bring_into_live(
    live: pg.PgConnection,
    recovered: pg.PgConnection,
    databases: list[str],
    *,
    suffix: str,
    store: S3Store,
    keyring: Keyring,
    scratch_dir: Path,
) -> tuple[list[str], list[dict[str, Any]]]:
    """Restore ``databases`` from the recovered server into the live one, verify, swap.

    Returns the names the previous databases are kept under (finalize drops them, rollback
    renames them back: :func:`..restore.finalize`, :func:`..restore.swap_back`) and the
    evidence per database. On any failure the scratch databases are dropped and the live ones
    were never touched.
    """
    restore = RecoveredServerRestore(
        live, recovered, store=store, keyring=keyring, scratch_dir=scratch_dir
    )
    try:
        targets = restore_beside(restore, databases, lambda db: f"{db}{RESTORING}")
        kept = restore.swap(suffix)
        return kept, [{"database": t.database, **t.evidence} for t in targets]
    finally:
        restore.close()
