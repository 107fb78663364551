"""The postgres component's restore: into scratch databases first, verify, then swap names in one
transaction; in a drill, into scratch databases that are dropped again.

The runbook drops the live database and restores into an empty one: a failed download, a wrong
key or a killed pg_restore leaves the CA without a database. Here the live database is not
touched until a complete copy exists next to it and has been verified (both checksums matched
while streaming, ``goose_db_version`` and every table's row count equal the manifest's). The swap
is two renames per database, all in one transaction (``ALTER DATABASE ... RENAME`` is
transactional), so either every database is swapped or none is; the previous databases are kept
as ``<db>__pre_restore_<suffix>`` until the caller finalizes (drop) or rolls back (rename back,
seconds whatever the size).

Database-level properties (owner, ACL such as CONNECT grants, settings, comment) do not travel
with pg_restore into a database it did not create. The live database's are copied onto the
restored one (a restore brings the data back; who may connect stays as the administrators set it
since); on a server without the database, they are read from the dump's own table of contents.
Object-level ownership and grants come with pg_restore (no ``--no-owner``, see
:func:`..clients.postgres.restore_command`).
"""

from __future__ import annotations

import os
import re
import subprocess
import threading
import time
from collections.abc import Callable, Sequence
from concurrent.futures import FIRST_EXCEPTION, ThreadPoolExecutor, wait
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

from ...clients import postgres as pg
from ...clients.gpg import Keyring
from ...clients.s3 import S3Store
from ...errors import ConfigurationError, DatabaseError, IntegrityError, LamassuBackupError
from ...models.runner import ArtifactRecord
from ...runner.restore.hooks import BaseHooks, PlanItem, Purpose
from ...runner.stream.fetch import FileSink, HeadTap, ProcessSink, stream_artifact
from .sinks import ScriptSink, pg_restore_error

if TYPE_CHECKING:
    from ...runner.restore.hooks import HooksFactory
    from ...runner.restore.keys import KeyInventory
    from ...runner.restore.run import RestoreRun

NAME = "postgres"

MAX_IDENT = 63
RESTORING = "__restoring"
PRE_RESTORE = "__pre_restore_"
ROLLED_BACK = "__rolled_back_"
DRILL = "__drill_"
DISCARD_PATIENCE = 60.0
"""Seconds a failed restore keeps trying to drop its scratch databases on an unreachable server."""
_UNREACHABLE = (
    "could not connect",
    "connection lost",
    "connection refused",
    "server closed the connection",
    "terminating connection",
    "the database system is starting up",
    "the database system is shutting down",
    "the database system is in recovery mode",
    "no connection to the server",
)


def _unreachable(message: str) -> bool:
    """Whether a PostgreSQL error says the server is (for now) out of reach, not that it refused."""
    lowered = message.lower()
    return any(text in lowered for text in _UNREACHABLE)


@dataclass
class PgTarget:
    """One database to restore: its artifacts (one, or one per schema) and its scratch name."""

    database: str
    scratch: str
    artifacts: list[ArtifactRecord]
    exists: bool = False
    evidence: dict[str, Any] = field(default_factory=dict)
    warnings: list[str] = field(default_factory=list)

    @property
    def size(self) -> int:
        """Stored bytes of its artifacts (the biggest databases start first)."""
        return sum(a.size_bytes for a in self.artifacts)


def artifact_database(artifact: ArtifactRecord) -> tuple[str, str | None]:
    """(database, schema) an artifact was dumped from."""
    details = artifact.details
    database = str(details.get("database") or artifact.name.split(".", 1)[0])
    schema = details.get("schema")
    return database, str(schema) if schema else None


def select_artifacts(artifacts: list[ArtifactRecord], wanted: list[str]) -> list[ArtifactRecord]:
    """The pg-dump artifacts ``wanted`` names (a database, or <db>.<schema>); all when empty."""
    dumps = [a for a in artifacts if a.component == "postgres"]
    if not wanted:
        return dumps
    chosen = [a for a in dumps if a.name in wanted or artifact_database(a)[0] in wanted]
    found = {a.name for a in chosen} | {artifact_database(a)[0] for a in chosen}
    missing = [w for w in wanted if w not in found]
    if missing:
        have = ", ".join(sorted(a.name for a in dumps)) or "none"
        raise ConfigurationError(
            f"the set has no dump of {', '.join(missing)} (it holds: {have}): fix spec.databases"
        )
    return chosen


def check_name(name: str) -> str:
    """Refuse names PostgreSQL would silently truncate (two names could then collide)."""
    if len(name.encode()) > MAX_IDENT:
        raise ConfigurationError(
            f"database name {name!r} is longer than {MAX_IDENT} bytes; PostgreSQL would "
            "truncate it: use a shorter restore name or swap suffix"
        )
    return name


def plan_targets(
    artifacts: list[ArtifactRecord], scratch_name: Callable[[str], str]
) -> list[PgTarget]:
    """Group artifacts by database, biggest first."""
    by_db: dict[str, PgTarget] = {}
    for artifact in artifacts:
        database, _ = artifact_database(artifact)
        target = by_db.get(database)
        if target is None:
            target = PgTarget(database, check_name(scratch_name(database)), [])
            by_db[database] = target
        target.artifacts.append(artifact)
    return sorted(by_db.values(), key=lambda t: (-t.size, t.database))


def verify_facts(target: PgTarget, artifact: ArtifactRecord, facts: dict[str, Any]) -> None:
    """Row counts and goose versions of the restored copy equal the manifest's, or raise."""
    details = artifact.details
    expected_rows: dict[str, int] = details.get("rowCounts") or {}
    actual_rows: dict[str, int] = facts["rowCounts"]
    where = f"database {target.database} (restored as {target.scratch}, from {artifact.key})"
    if not expected_rows:
        target.warnings.append(f"{artifact.key}: the manifest records no row counts to verify")
    else:
        missing = sorted(set(expected_rows) - set(actual_rows))
        extra = sorted(set(actual_rows) - set(expected_rows))
        wrong = sorted(
            t for t in expected_rows if t in actual_rows and actual_rows[t] != expected_rows[t]
        )
        if missing or extra or wrong:
            parts = []
            if missing:
                parts.append(f"missing tables {', '.join(missing[:5])}")
            if extra:
                parts.append(f"unexpected tables {', '.join(extra[:5])}")
            parts += [
                f"{t} has {actual_rows[t]} rows, the manifest says {expected_rows[t]}"
                for t in wrong[:5]
            ]
            raise IntegrityError(
                f"{where}: the restored data does not match the manifest: {'; '.join(parts)}. "
                "The live database was not touched"
            )
    expected_goose: dict[str, dict[str, int]] = details.get("goose") or {}
    actual_goose: dict[str, dict[str, int]] = facts["goose"]
    for schema, want in expected_goose.items():
        got = actual_goose.get(schema)
        if (
            got is None
            or got.get("version") != want.get("version")
            or got.get("rows") != want.get("rows")
        ):
            found = "no goose_db_version table" if got is None else f"version {got.get('version')}"
            raise IntegrityError(
                f"{where}: goose_db_version in schema {schema} is {found}, the manifest says "
                f"version {want.get('version')}: the migration state would not match the "
                "data. The live database was not touched"
            )


def _goose_summary(facts: dict[str, Any]) -> Any:
    goose: dict[str, dict[str, int]] = facts.get("goose") or {}
    if len(goose) == 1:
        return next(iter(goose.values())).get("version")
    return {s: g.get("version") for s, g in goose.items()}


class PostgresRestore:
    """Restores databases into scratch copies, verifies them, swaps them in (or drops them)."""

    def __init__(
        self,
        conn: pg.PgConnection,
        *,
        store: S3Store,
        set_prefix: str,
        keyring: Keyring,
        passphrase: str | None,
        scratch_dir: Path,
        jobs: int = 1,
        parallel: int = 1,
        copy_props: bool = True,
    ) -> None:
        self.conn = conn
        self.store = store
        self.set_prefix = set_prefix
        self.keyring = keyring
        self.passphrase = passphrase
        self.scratch_dir = scratch_dir
        self.jobs = jobs
        self.parallel = max(1, parallel)
        self.copy_props = copy_props
        self.version = pg.server_version_num(conn)
        self.pg_restore = pg.pick_tool("pg_restore", self.version // 10000)
        # A newer pg_restore than the server restores through a script (see ScriptSink):
        # one client dumps every server, and restores into every one too.
        client = pg.tool_major(self.pg_restore)
        self.script_mode = (client is not None and client > self.version // 10000) or (
            os.environ.get("LAMASSU_RESTORE_VIA_SCRIPT") == "1"  # forces it (tests, debugging)
        )
        if self.script_mode:
            self.jobs = 1  # a script runs in one psql session; parallel pg_restore needs -d
        self.created: list[str] = []
        self.targets: list[PgTarget] = []
        # One admin session for every CREATE/DROP: a psql process per statement costs more than
        # many a statement (40 ms each, hundreds of them on a server with many databases).
        self.admin = pg.Session(conn, "postgres")
        self._lock = threading.Lock()

    def close(self) -> None:
        """End the admin session."""
        self.admin.close()

    # -- scratch restore -----------------------------------------------------------------------

    def prepare(self, targets: list[PgTarget]) -> None:
        """Restore every target into its scratch database and verify it; raise on the first
        failure after dropping every scratch database (the live ones are never touched)."""
        self.targets = targets
        with self._lock:
            existing = set(pg.list_databases(self.admin))
        for target in targets:
            target.exists = target.database in existing
        try:
            if self.parallel == 1 or len(targets) == 1:
                for target in targets:
                    self._restore_one(target)
            else:
                self._restore_parallel(targets)
        except BaseException:
            self.discard()
            raise

    def _restore_parallel(self, targets: list[PgTarget]) -> None:
        """Several databases at once; the first failure (or a signal) stops the others."""
        with ThreadPoolExecutor(self.parallel, thread_name_prefix="pg-restore") as pool:
            futures = [pool.submit(self._restore_one, t) for t in targets]
            try:
                done, _ = wait(futures, return_when=FIRST_EXCEPTION)
                first = next((f.exception() for f in done if f.exception() is not None), None)
            except BaseException:
                first = None
                for future in futures:
                    future.cancel()
                self.discard()  # ends the running pg_restore sessions: their workers stop now
                raise
            if first is not None:
                for future in futures:
                    future.cancel()
                self.discard()
        if first is not None:
            raise first

    def _restore_one(self, target: PgTarget) -> None:
        started = time.monotonic()
        with self._lock:
            live = (
                pg.database_props(self.admin, target.database, self.version)
                if target.exists
                else None
            )
            pg.drop_database(self.admin, target.scratch, self.version)  # an interrupted run's
            pg.create_database(self.admin, target.scratch, like=live)
            self.created.append(target.scratch)
        t_verify = 0.0
        head_file: Path | None = None
        rows = tables = plain = 0
        shas: list[str] = []
        goose: dict[str, Any] = {}
        session: pg.Session | None = None
        try:
            for artifact in target.artifacts:
                _, schema = artifact_database(artifact)
                if head_file is not None:
                    head_file.unlink(missing_ok=True)
                head_file, stats = self._load(target, artifact)
                t1 = time.monotonic()
                if session is None:
                    session = pg.Session(self.conn, target.scratch)
                facts = pg.database_facts(session, schema)
                verify_facts(target, artifact, facts)
                t_verify += time.monotonic() - t1
                counts: dict[str, int] = facts["rowCounts"]  # type: ignore[assignment]
                rows += sum(counts.values())
                tables += len(counts)
                plain += stats.plain_bytes
                shas.append(stats.plain_sha256[:16])
                goose[artifact.name] = _goose_summary(facts)
            assert session is not None
            if self.copy_props:
                self._copy_props(target, live, head_file, session)
        finally:
            if session is not None:
                session.close()
            if head_file is not None:
                head_file.unlink(missing_ok=True)
        target.evidence = {
            "sha": shas[0] if len(shas) == 1 else shas,
            "bytes": plain,
            "tables": tables,
            "rows": rows,
            "goose": goose[target.artifacts[0].name] if len(goose) == 1 else goose,
            "seconds": round(time.monotonic() - started, 2),
            "verifySeconds": round(t_verify, 2),
        }

    def _copy_props(
        self,
        target: PgTarget,
        live: pg.DatabaseProps | None,
        head: Path | None,
        session: pg.Session,
    ) -> None:
        """Owner, ACL, settings, comment: the live database's, else those the dump records."""
        if live is not None:
            statements = [pg.database_props_sql(target.scratch, live)]
        elif head is not None:
            statements = pg.archive_database_sql(
                self.pg_restore, str(head), target.database, target.scratch
            )
        else:
            return
        try:
            pg.run_statements(session, statements)
        except LamassuBackupError as exc:
            raise DatabaseError(
                f"database {target.database}: giving {target.scratch} the database-level "
                f"owner, privileges and settings failed: {exc.message}. The live database was "
                "not touched"
            ) from None

    def _scratch_sink(self, target: PgTarget, source: str) -> ProcessSink | ScriptSink:
        """pg_restore into the scratch database, or its script through psql when the runner's
        pg_restore is newer than the live server; ``source`` names the dump in errors."""
        if self.script_mode:
            return ScriptSink(
                pg.script_command(self.pg_restore),
                pg.psql_script_command(target.scratch),
                env=self.conn.env(target.scratch),
                server_major=self.version // 10000,
                label=f"pg_restore script into {target.scratch}",
                describe_error=pg_restore_error(source),
            )
        return ProcessSink(
            pg.restore_command(self.pg_restore, target.scratch),
            env=self.conn.env(target.scratch),
            label=f"pg_restore into {target.scratch}",
            describe_error=pg_restore_error(source),
        )

    def _load(self, target: PgTarget, artifact: ArtifactRecord) -> tuple[Path, Any]:
        """Stream one dump into the scratch database; returns a file holding the dump's TOC."""
        key = self.set_prefix + artifact.key
        safe = re.sub(r"[^A-Za-z0-9._-]", "_", artifact.name)
        if self.jobs == 1:
            # The dump's table of contents is kept only when it is needed: for the
            # database-level properties of a database the server does not have.
            head = HeadTap(0 if target.exists else HeadTap().limit)
            sink = self._scratch_sink(target, f"{target.scratch} (from {artifact.key})")
            stats = stream_artifact(
                self.store,
                key,
                artifact,
                keyring=self.keyring,
                passphrase=self.passphrase,
                sink=sink,
                taps=[head],
            )
            head_file = self.scratch_dir / f"{safe}.head"
            if head.data:
                head_file.write_bytes(bytes(head.data))
            return head_file, stats
        # pg_restore -j needs a seekable file: spool the verified dump, then restore in parallel.
        spool = self.scratch_dir / f"{safe}.dump"
        stats = stream_artifact(
            self.store,
            key,
            artifact,
            keyring=self.keyring,
            passphrase=self.passphrase,
            sink=FileSink(spool, f"spool of {artifact.key}"),
        )
        try:
            proc = subprocess.run(
                pg.restore_command(
                    self.pg_restore, target.scratch, jobs=self.jobs, path=str(spool)
                ),
                env=self.conn.env(target.scratch),
                capture_output=True,
                text=True,
                check=False,
            )
            if proc.returncode != 0:
                raise pg_restore_error(f"{target.scratch} (from {artifact.key})")(
                    proc.returncode, proc.stderr
                )
            head_file = self.scratch_dir / f"{safe}.head"
            with spool.open("rb") as src:
                head_file.write_bytes(src.read(HeadTap().limit))
        finally:
            spool.unlink(missing_ok=True)
        return head_file, stats

    def discard(self, patience: float = DISCARD_PATIENCE) -> list[str]:
        """Drop every scratch database this run created; returns what could not be dropped.

        A server that restarted (the likeliest reason the restore failed) refuses connections
        for a while: keep trying for ``patience`` seconds rather than leave an orphaned
        ``__restoring`` copy behind (a retried Job would drop it, a failed restore is not
        retried)."""
        left: list[str] = []
        deadline = time.monotonic() + patience
        for name in list(self.created):
            while True:
                try:
                    with self._lock:
                        pg.drop_database(self.admin, name, self.version)
                    self.created.remove(name)
                except LamassuBackupError as exc:
                    if _unreachable(exc.message) and time.monotonic() < deadline:
                        time.sleep(1)
                        continue
                    left.append(name)
                break
        return left

    # -- swap ----------------------------------------------------------------------------------

    def swap(self, suffix: str) -> list[str]:
        """Swap every verified scratch database in, in one transaction; returns the kept names."""
        renames: list[tuple[str, str]] = []
        kept: list[str] = []
        with self._lock:
            existing = set(pg.list_databases(self.admin))
        for target in self.targets:
            if target.exists:
                aside = check_name(f"{target.database}{PRE_RESTORE}{suffix}")
                if aside in existing:
                    raise ConfigurationError(
                        f"database {aside} already exists: a previous restore with swap suffix "
                        f"{suffix} was not finalized; finalize or roll it back first"
                    )
                renames.append((target.database, aside))
                kept.append(aside)
            renames.append((target.scratch, target.database))
        pg.rename_databases(self.conn, renames, self.version)
        self.created = []
        return kept


def kept_databases(conn: pg.PgConnection, suffix: str, wanted: list[str]) -> list[str]:
    """Live names whose previous copy is kept under ``suffix`` (filtered by ``wanted``)."""
    marker = f"{PRE_RESTORE}{suffix}"
    databases = pg.list_databases(pg.OneShot(conn, "postgres"))
    names = [n[: -len(marker)] for n in databases if n.endswith(marker)]
    if wanted:
        allowed = {w.split(".", 1)[0] for w in wanted}
        names = [n for n in names if n in allowed]
    return sorted(names)


def swap_back(conn: pg.PgConnection, databases: list[str], suffix: str) -> list[str]:
    """Put the kept databases back under their names (one transaction), drop the restored ones.

    Returns the databases rolled back. Rolling back is renames only: seconds, whatever the size.
    """
    version = pg.server_version_num(conn)
    admin = pg.OneShot(conn, "postgres")
    existing = set(pg.list_databases(admin))
    renames: list[tuple[str, str]] = []
    drops: list[str] = []
    done: list[str] = []
    for db in databases:
        aside = f"{db}{PRE_RESTORE}{suffix}"
        if aside not in existing:
            continue
        if db in existing:
            doomed = check_name(f"{db}{ROLLED_BACK}{suffix}")
            renames.append((db, doomed))
            drops.append(doomed)
        renames.append((aside, db))
        done.append(db)
    pg.rename_databases(conn, renames, version)
    for name in drops:
        pg.drop_database(admin, name, version)
    return done


def finalize(conn: pg.PgConnection, databases: list[str], suffix: str) -> list[str]:
    """Drop the kept copies; returns their names."""
    version = pg.server_version_num(conn)
    admin = pg.OneShot(conn, "postgres")
    dropped = []
    for db in databases:
        name = f"{db}{PRE_RESTORE}{suffix}"
        pg.drop_database(admin, name, version)
        dropped.append(name)
    return dropped


LOCK_CLASS = "lamassu-backup in-place restore"
"""The first key of the advisory locks an in-place restore holds on each database it replaces."""


def lock_databases(conn: pg.PgConnection, databases: list[str]) -> pg.Session:
    """Take a session-level advisory lock per database, or refuse: two in-place restores of
    the same database would share its ``__restoring`` scratch copy (each dropping the other's,
    one swapping in what the other half restored). The session holds the locks until it ends
    (the run's end, or its process killed), so a re-run after a crash is never locked out."""
    session = pg.Session(conn, "postgres")
    names = ", ".join("'" + d.replace("'", "''") + "'" for d in databases)  # SQL literals
    try:
        rows = session.run(
            f"SELECT d FROM unnest(ARRAY[{names}]::text[]) d "  # noqa: S608 - quoted literals
            f"WHERE NOT pg_try_advisory_lock(hashtext('{LOCK_CLASS}'), hashtext(d))"
        )
    except BaseException:
        session.close()
        raise
    if rows:
        session.close()
        busy = ", ".join(r[0] for r in rows)
        raise LamassuBackupError(
            f"another in-place restore is restoring database(s) {busy} on "
            f"{conn.host}:{conn.port} now; nothing was changed: retry once it has ended",
            reason="RestoreInProgress",
        )
    return session


def require_whole_databases(conn: pg.PgConnection, targets: list[PgTarget]) -> None:
    """An in-place swap replaces whole databases: refuse when the live one holds schemas the
    restore does not bring back (a partial restore of the one-database layout)."""
    existing = set(pg.list_databases(pg.OneShot(conn, "postgres")))
    for target in targets:
        schemas = {artifact_database(a)[1] for a in target.artifacts}
        if None in schemas or target.database not in existing:
            continue
        live = set(pg.user_schemas(pg.OneShot(conn, target.database)))
        lost = sorted(live - {s for s in schemas if s})
        if lost:
            raise ConfigurationError(
                f"database {target.database} also holds schemas {', '.join(lost)} that this "
                "restore does not bring back, and an in-place restore swaps whole databases: "
                "restore every schema of the set (empty spec.databases) or run a Drill"
            )


class PostgresHooks(BaseHooks):
    """The databases in a restore: restored beside the live ones and verified, then swapped in
    (one transaction; swapped back when a later component fails), or dropped after a drill."""

    name = NAME
    order = 20

    def __init__(self, run: RestoreRun) -> None:
        super().__init__(run)
        self.pgr: PostgresRestore | None = None
        self.lock: pg.Session | None = None
        """Holds the in-place restore's advisory locks until the run ends."""

    def conn(self) -> pg.PgConnection:
        """The target PostgreSQL server."""
        settings = self.run.cfg.postgres
        if settings is None:
            raise ConfigurationError(
                "the postgres component needs a target server (spec.target.postgres or the "
                "policy's)"
            )
        return self.run.ctx.pg_connection(settings)

    def select(self, artifacts: list[ArtifactRecord]) -> None:
        self.artifacts = select_artifacts(artifacts, self.run.cfg.databases)

    def _drill_name(self, database: str) -> str:
        return f"{database}{DRILL}{self.run.id}"

    def _restorer(self, copy_props: bool) -> PostgresRestore:
        """The PostgreSQL restorer for the target server."""
        run = self.run
        return PostgresRestore(
            self.conn(),
            store=run.set.store,
            set_prefix=run.cfg.set_prefix,
            keyring=run.set.keyring,
            passphrase=run.set.passphrase,
            scratch_dir=run.ctx.scratch,
            jobs=run.cfg.postgres_jobs,
            parallel=run.cfg.postgres_parallel,
            copy_props=copy_props,
        )

    def _restore_databases(
        self, pgr: PostgresRestore, scratch_name: Callable[[str], str]
    ) -> list[PgTarget]:
        """Every selected database into its scratch copy, verified."""
        targets = plan_targets(self.artifacts, scratch_name)
        with self.run.phase("postgres", NAME):
            pgr.prepare(targets)
        self.run.evidence["postgres"] = {t.database: t.evidence for t in targets}
        for target in targets:
            for text in target.warnings:
                self.run.warn(text)
        return targets

    # -- before anything live changes ------------------------------------------------------------

    def plan(self, item: PlanItem, drill: bool) -> None:
        if drill:
            for target in plan_targets(self.artifacts, self._drill_name):
                item(f"database {target.scratch}", "restore, verify, drop")
            return
        existing: set[str] = set()
        if self.run.cfg.postgres is not None:
            existing = set(pg.list_databases(pg.OneShot(self.conn(), "postgres")))
        suffix = self.run.cfg.swap_suffix or "<time>"
        for target in plan_targets(self.artifacts, lambda d: f"{d}{RESTORING}"):
            rows = sum(sum((a.details.get("rowCounts") or {}).values()) for a in target.artifacts)
            if target.database in existing:
                aside = f"{target.database}{PRE_RESTORE}{suffix}"
                action = f"restore into {target.scratch}, verify, swap in; keep the live as {aside}"
            else:
                action = f"restore into {target.scratch}, verify, rename to {target.database}"
            item(f"database {target.database}", action, f"{rows} rows")

    def require(self) -> None:
        self.conn()

    def verify(self, purpose: Purpose) -> None:
        if purpose == "plan":  # otherwise verified while restored beside (prepare)
            super().verify(purpose)

    def prepare(self, suffix: str | None) -> None:
        if suffix is None:
            self.pgr = self._restorer(copy_props=False)
            self._restore_databases(self.pgr, self._drill_name)
            self.run.result.components[NAME] = "Verified"
            return
        self.pgr = self._restorer(copy_props=True)
        # Every database into <db>__restoring, verified; refuses what the swap cannot do.
        targets = plan_targets(self.artifacts, lambda d: f"{d}{RESTORING}")
        self.lock = lock_databases(self.pgr.conn, [t.database for t in targets])
        require_whole_databases(self.pgr.conn, targets)
        for target in targets:
            check_name(f"{target.database}{PRE_RESTORE}{suffix}")
        self._restore_databases(self.pgr, lambda d: f"{d}{RESTORING}")

    # -- key consistency -------------------------------------------------------------------------

    def _key_locations(self) -> dict[str, tuple[str, str]]:
        """Where the ca and kms tables are: the restored copies first, else the live databases."""
        found: dict[str, tuple[str, str]] = {}
        for target in self.pgr.targets if self.pgr is not None else []:
            for artifact in target.artifacts:
                database, schema = artifact_database(artifact)
                found[schema or database] = (target.scratch, schema or "public")
        if ("ca" not in found or "kms" not in found) and self.run.cfg.postgres is not None:
            existing = set(pg.list_databases(pg.OneShot(self.conn(), "postgres")))
            for service in ("ca", "kms"):
                if service not in found and service in existing:
                    found[service] = (service, "public")
        return found

    def key_inventory(self) -> KeyInventory | None:
        where = self._key_locations()
        if "ca" not in where or "kms" not in where:
            return None

        def read() -> tuple[Sequence[Sequence[Any]], Sequence[Sequence[Any]]]:
            conn = self.conn()
            return pg.key_inventory(
                pg.OneShot(conn, where["ca"][0]),
                where["ca"][1],
                pg.OneShot(conn, where["kms"][0]),
                where["kms"][1],
            )

        return read

    def needs_key_check(self) -> bool:
        return bool(self.artifacts)

    # -- in place ----------------------------------------------------------------------------------

    def apply(self, suffix: str) -> None:
        if self.pgr is None:
            return
        with self.run.phase("swap", NAME):
            kept = self.pgr.swap(suffix)
        self.run.changed.append(NAME)
        self.run.evidence["swapSuffix"] = suffix
        self.run.evidence["kept"] = kept
        self.run.result.components[NAME] = "Completed"

    def undo(self, suffix: str) -> str | None:
        if self.pgr is None or NAME not in self.run.changed:
            return None
        try:
            with self.run.phase("swapBack", NAME):
                swap_back(self.pgr.conn, [t.database for t in self.pgr.targets], suffix)
        except LamassuBackupError as again:
            raise LamassuBackupError(
                f"swapping the databases back failed too: {again.message}", reason=again.reason
            ) from None
        self.run.changed.remove(NAME)
        return "the databases had been swapped: they were swapped back"

    def discard(self) -> None:
        if self.pgr is not None:
            left = self.pgr.discard()
            if left:
                self.run.warn(
                    f"scratch databases left behind (drop them by hand): {', '.join(left)}"
                )

    def close(self) -> None:
        if self.pgr is not None:
            self.pgr.close()
        if self.lock is not None:
            self.lock.close()  # ends the session: its advisory locks go with it
            self.lock = None

    # -- drill -------------------------------------------------------------------------------------

    def teardown(self) -> list[str]:
        left: list[str] = []
        if self.pgr is not None:
            left += self.pgr.discard()
            self.pgr.close()
            try:
                databases = pg.list_databases(pg.OneShot(self.pgr.conn, "postgres"))
                marker = f"{DRILL}{self.run.id}"
                left += [n for n in databases if n.endswith(marker) and n not in left]
            except LamassuBackupError as exc:
                self.run.warn(f"could not check for leftover scratch databases: {exc.message}")
        return left

    # -- finalize / rollback -----------------------------------------------------------------------

    def finalize(self, suffix: str) -> list[str]:
        cfg = self.run.cfg
        if cfg.postgres is None:
            return []
        dropped: list[str] = []
        with self.run.phase("finalize", NAME):
            conn = self.conn()
            dbs = kept_databases(conn, suffix, cfg.databases)
            if cfg.keep_previous:
                self.run.evidence["kept"] = [f"{d}{PRE_RESTORE}{suffix}" for d in dbs]
            else:
                dropped += finalize(conn, dbs, suffix)
        self.run.result.components[NAME] = "Completed"
        return dropped

    def rollback(self, suffix: str) -> list[str]:
        if self.run.cfg.postgres is None:
            return []
        with self.run.phase("swapBack", NAME):
            conn = self.conn()
            kept = kept_databases(conn, suffix, self.run.cfg.databases)
            rolled = swap_back(conn, kept, suffix)
        self.run.result.components[NAME] = "RolledBack"
        return rolled


HOOKS: HooksFactory = PostgresHooks
