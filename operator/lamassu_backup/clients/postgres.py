"""PostgreSQL through its own client tools (psql, pg_dump, pg_restore).

The tools are what the runbook uses and what a person would use by hand, and they stream; a
driver would add a dependency without adding safety. Passwords go to the tools through the
environment of the child process only, never argv, never logs.
"""

from __future__ import annotations

import glob
import os
import re
import shutil
import subprocess
import threading
from dataclasses import dataclass, field
from types import TracebackType
from typing import Self

from ..errors import DatabaseError

_BIN_GLOB = os.environ.get("LAMASSU_PG_BIN_GLOB", "/usr/lib/postgresql/*/bin")
_MARK = "__lamassu_backup_end__"


@dataclass(frozen=True)
class PgConnection:
    """Where a server is and who we are."""

    host: str
    port: int
    user: str
    password: str = field(repr=False)
    sslmode: str = "prefer"
    sslrootcert: str | None = None

    def env(self, database: str = "postgres") -> dict[str, str]:
        """Environment for a client tool (libpq reads it); inherits PATH and locale only."""
        env = {k: v for k, v in os.environ.items() if k in ("PATH", "LANG", "LC_ALL", "HOME", "TZ")}
        env.update(
            {
                "PGHOST": self.host,
                "PGPORT": str(self.port),
                "PGUSER": self.user,
                "PGPASSWORD": self.password,
                "PGDATABASE": database,
                "PGSSLMODE": self.sslmode,
                "PGCONNECT_TIMEOUT": "10",
                "PGAPPNAME": "lamassu-backup",
            }
        )
        if self.sslrootcert:
            env["PGSSLROOTCERT"] = self.sslrootcert
        return env


def installed_majors(tool: str) -> dict[int, str]:
    """Major version -> path of ``tool`` for every installed PostgreSQL client."""
    found: dict[int, str] = {}
    for directory in glob.glob(_BIN_GLOB):
        match = re.search(r"/(\d+)/bin$", directory)
        path = os.path.join(directory, tool)
        if match and os.access(path, os.X_OK):
            found[int(match.group(1))] = path
    if not found:
        on_path = shutil.which(tool)
        if on_path:
            out = subprocess.run(
                [on_path, "--version"], capture_output=True, text=True, check=False
            ).stdout
            match = re.search(r"(\d+)(?:\.\d+)?", out)
            if match:
                found[int(match.group(1))] = on_path
    return found


def pick_tool(tool: str, server_major: int) -> str:
    """The oldest installed ``tool`` whose major is >= the server's (pg_dump must not be older)."""
    majors = installed_majors(tool)
    usable = sorted(m for m in majors if m >= server_major)
    if not usable:
        have = ", ".join(str(m) for m in sorted(majors)) or "none"
        raise DatabaseError(
            f"no {tool} for PostgreSQL {server_major} or newer is installed (have: {have}); "
            "use a runner image with a newer PostgreSQL client"
        )
    return majors[usable[0]]


def tool_major(path: str) -> int | None:
    """The PostgreSQL major of an installed tool path, from its directory, if it says."""
    match = re.search(r"/(\d+)/bin/[^/]+$", path)
    return int(match.group(1)) if match else None


def _psql() -> str:
    majors = installed_majors("psql")
    if not majors:
        raise DatabaseError("psql is not installed in the runner image")
    return majors[max(majors)]


def _error_text(stderr: str) -> str:
    lines = [ln.strip() for ln in stderr.splitlines() if ln.strip()]
    useful = [ln for ln in lines if "ERROR" in ln or "FATAL" in ln or "error" in ln] or lines
    return "; ".join(useful[-3:])[:600]


def query(conn: PgConnection, database: str, sql: str, timeout: float = 120) -> list[list[str]]:
    """Run SQL with psql and return rows of text fields (tab separated, unaligned)."""
    try:
        proc = subprocess.run(
            [_psql(), "-X", "-q", "-A", "-t", "-F", "\t", "-v", "ON_ERROR_STOP=1", "-d", database],
            input=sql,
            capture_output=True,
            text=True,
            env=conn.env(database),
            timeout=timeout,
            check=False,
        )
    except subprocess.TimeoutExpired:
        raise DatabaseError(
            f"PostgreSQL {conn.host}:{conn.port}/{database}: query timed out"
        ) from None
    if proc.returncode != 0:
        raise DatabaseError(
            f"PostgreSQL {conn.host}:{conn.port}/{database}: {_error_text(proc.stderr)}"
        )
    return [line.split("\t") for line in proc.stdout.splitlines() if line]


def server_version_num(conn: PgConnection) -> int:
    """server_version_num, e.g. 150018."""
    rows = query(conn, "postgres", "SHOW server_version_num;")
    return int(rows[0][0])


class SnapshotSession:
    """A psql session holding a REPEATABLE READ transaction with an exported snapshot.

    pg_dump ``--snapshot`` dumps exactly what this session sees, so the row counts and goose
    version recorded in the manifest describe the dump itself, even while Lamassu keeps writing.
    """

    def __init__(self, conn: PgConnection, database: str) -> None:
        self.conn = conn
        self.database = database
        self._proc = subprocess.Popen(
            [_psql(), "-X", "-q", "-A", "-t", "-F", "\t", "-v", "ON_ERROR_STOP=1", "-d", database],
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
            env=conn.env(database),
        )
        self._stderr: list[str] = []
        self._err_thread = threading.Thread(target=self._drain_stderr, daemon=True)
        self._err_thread.start()
        self.snapshot = self.run(
            "BEGIN ISOLATION LEVEL REPEATABLE READ READ ONLY; SELECT pg_export_snapshot();"
        )[0][0]

    def _drain_stderr(self) -> None:
        assert self._proc.stderr is not None
        for line in self._proc.stderr:
            self._stderr.append(line)

    def __enter__(self) -> Self:
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.close()

    def run(self, sql: str) -> list[list[str]]:
        """Run SQL in the session's transaction; returns its rows."""
        assert self._proc.stdin is not None
        assert self._proc.stdout is not None
        try:
            self._proc.stdin.write(sql.rstrip().rstrip(";") + ";\n\\echo " + _MARK + "\n")
            self._proc.stdin.flush()
        except BrokenPipeError:
            pass
        rows: list[list[str]] = []
        for raw in self._proc.stdout:
            line = raw.rstrip("\n")
            if line == _MARK:
                return rows
            if line:
                rows.append(line.split("\t"))
        self._proc.wait(timeout=10)
        self._err_thread.join(timeout=2)
        raise DatabaseError(
            f"PostgreSQL {self.conn.host}:{self.conn.port}/{self.database}: "
            f"{_error_text(''.join(self._stderr)) or 'connection lost'}"
        )

    def close(self) -> None:
        """End the transaction and the session."""
        if self._proc.poll() is None:
            try:
                assert self._proc.stdin is not None
                self._proc.stdin.write("ROLLBACK;\n\\q\n")
                self._proc.stdin.close()
                self._proc.wait(timeout=10)
            except (BrokenPipeError, subprocess.TimeoutExpired, OSError):
                self._proc.kill()
                self._proc.wait()


def table_facts(session: SnapshotSession, schema: str | None) -> dict[str, object]:
    """Row counts per table and the goose migration state, as seen by the session's snapshot."""
    where = (
        f"AND n.nspname = {_literal(schema)}"
        if schema
        else "AND n.nspname NOT IN ('pg_catalog', 'information_schema') "
        "AND n.nspname NOT LIKE 'pg_toast%'"
    )
    # Identifiers and literals are quoted with _ident/_literal; names come from the catalog.
    tables = session.run(
        "SELECT n.nspname, c.relname FROM pg_class c JOIN pg_namespace n ON n.oid = c.relnamespace "
        f"WHERE c.relkind IN ('r', 'p') {where} ORDER BY 1, 2"
    )
    counts: dict[str, int] = {}
    if tables:
        union = " UNION ALL ".join(
            f"SELECT {_literal(s + '.' + t)}, count(*) FROM {_ident(s)}.{_ident(t)}"
            for s, t in tables
        )
        for name, count in session.run(union):
            counts[name] = int(count)
    goose: dict[str, object] = {}
    for s, t in tables:
        if t == "goose_db_version":
            rows = session.run(
                f"SELECT coalesce(max(version_id) FILTER (WHERE is_applied), 0), count(*) "
                f"FROM {_ident(s)}.goose_db_version"
            )
            goose[s] = {"version": int(rows[0][0]), "rows": int(rows[0][1])}
    return {"rowCounts": counts, "goose": goose}


def _ident(name: str) -> str:
    return '"' + name.replace('"', '""') + '"'


def _literal(text: str) -> str:
    return "'" + text.replace("'", "''") + "'"


def dump_command(
    pg_dump: str, database: str, *, snapshot: str | None, compress_level: int, schema: str | None
) -> list[str]:
    """pg_dump argv: custom format (what pg_restore and the runbook use), to stdout."""
    argv = [
        pg_dump,
        "--format=custom",
        f"--compress={compress_level}",
        "--no-password",
        "--dbname",
        database,
    ]
    if snapshot:
        argv += ["--snapshot", snapshot]
    if schema:
        argv += ["--schema", schema]
    return argv
