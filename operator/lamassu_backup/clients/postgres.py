"""PostgreSQL through its own client tools (psql, pg_dump, pg_restore).

The tools are what the runbook uses and what a person would use by hand, and they stream; a
driver would add a dependency without adding safety. Passwords go to the tools through the
environment of the child process only, never argv, never logs.
"""

from __future__ import annotations

import glob
import json
import os
import re
import shutil
import subprocess
import threading
from collections.abc import Callable
from dataclasses import dataclass, field
from types import TracebackType
from typing import Protocol, Self

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


class Session:
    """A psql session: many statements over one connection and one process.

    Errors stop the session (ON_ERROR_STOP): the statement's error is raised and a later
    :meth:`run` starts a new session, so a failed statement never leaves one half-done.
    """

    _END = "\\q\n"
    _RESTARTABLE = True

    def __init__(self, conn: PgConnection, database: str) -> None:
        self.conn = conn
        self.database = database
        self._proc = self._start()
        self._stderr: list[str] = []
        self._err_thread = threading.Thread(target=self._drain_stderr, daemon=True)
        self._err_thread.start()

    def _start(self) -> subprocess.Popen[str]:
        return subprocess.Popen(
            [
                _psql(),
                "-X",
                "-q",
                "-A",
                "-t",
                "-F",
                "\t",
                "-v",
                "ON_ERROR_STOP=1",
                "-d",
                self.database,
            ],
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
            env=self.conn.env(self.database),
        )

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
        """Run SQL in the session; returns its rows."""
        if self._RESTARTABLE:
            self.restart()
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

    def restart(self) -> None:
        """A new process after a failed statement ended the previous one."""
        if self._proc.poll() is None:
            return
        self._stderr = []
        self._proc = self._start()
        self._err_thread = threading.Thread(target=self._drain_stderr, daemon=True)
        self._err_thread.start()

    def close(self) -> None:
        """End the session."""
        if self._proc.poll() is None:
            try:
                assert self._proc.stdin is not None
                self._proc.stdin.write(self._END)
                self._proc.stdin.close()
                self._proc.wait(timeout=10)
            except (BrokenPipeError, subprocess.TimeoutExpired, OSError):
                self._proc.kill()
                self._proc.wait()


class SnapshotSession(Session):
    """A psql session holding a REPEATABLE READ transaction with an exported snapshot.

    pg_dump ``--snapshot`` dumps exactly what this session sees, so the row counts and goose
    version recorded in the manifest describe the dump itself, even while Lamassu keeps writing.
    """

    _END = "ROLLBACK;\n\\q\n"
    _RESTARTABLE = False  # a new process would silently lose the snapshot

    def __init__(self, conn: PgConnection, database: str) -> None:
        super().__init__(conn, database)
        self.snapshot = self.run(
            "BEGIN ISOLATION LEVEL REPEATABLE READ READ ONLY; SELECT pg_export_snapshot();"
        )[0][0]


def table_facts(session: SnapshotSession, schema: str | None) -> dict[str, object]:
    """Row counts per table and the goose migration state, as seen by the session's snapshot."""
    return _facts(session.run, schema)


def _facts(run: Callable[[str], list[list[str]]], schema: str | None) -> dict[str, object]:
    where = (
        f"AND n.nspname = {_literal(schema)}"
        if schema
        else "AND n.nspname NOT IN ('pg_catalog', 'information_schema') "
        "AND n.nspname NOT LIKE 'pg_toast%'"
    )
    # Identifiers and literals are quoted with _ident/_literal; names come from the catalog.
    tables = run(
        "SELECT n.nspname, c.relname FROM pg_class c JOIN pg_namespace n ON n.oid = c.relnamespace "
        f"WHERE c.relkind IN ('r', 'p') {where} ORDER BY 1, 2"
    )
    counts: dict[str, int] = {}
    if tables:
        union = " UNION ALL ".join(
            f"SELECT {_literal(s + '.' + t)}, count(*) FROM {_ident(s)}.{_ident(t)}"
            for s, t in tables
        )
        for name, count in run(union):
            counts[name] = int(count)
    goose: dict[str, object] = {}
    for s, t in tables:
        if t == "goose_db_version":
            rows = run(
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


# -- restore -----------------------------------------------------------------------------------
#
# A restore never writes into a live database: it restores into a scratch database, verifies it,
# and swaps names in one transaction (ALTER DATABASE ... RENAME is transactional, so the swap of
# every database is atomic). The functions below are the SQL of those steps; names are always
# quoted with _ident/_literal.

_BUSY = "is being accessed by other users"
# GUCs whose value is a list of quoted elements (pg_dump's variable_is_guc_list_quote).
_LIST_GUCS = frozenset(
    {
        "local_preload_libraries",
        "search_path",
        "session_preload_libraries",
        "shared_preload_libraries",
        "temp_tablespaces",
        "unix_socket_directories",
    }
)


def ident(name: str) -> str:
    """A quoted SQL identifier."""
    return _ident(name)


def script_command(pg_restore: str) -> list[str]:
    """pg_restore argv rendering the dump read from stdin as a SQL script on stdout."""
    return [pg_restore, "--file", "-"]


def psql_script_command(database: str) -> list[str]:
    """psql argv running a script from stdin into ``database``, stopping at the first error."""
    return [_psql(), "-X", "-q", "--no-password", "-v", "ON_ERROR_STOP=1", "-d", database]


def restore_command(
    pg_restore: str, database: str, *, jobs: int = 1, path: str | None = None
) -> list[str]:
    """pg_restore argv: into ``database``, stopping at the first error, from stdin or ``path``.

    Ownership and privileges are restored (no --no-owner/--no-acl): Lamassu's services run goose
    migrations as the role that owns their tables, so a restore that re-owned everything to the
    restoring admin would break the next upgrade. The roles must exist on the target server.
    """
    argv = [pg_restore, "--exit-on-error", "--no-password", "--dbname", database]
    if jobs > 1:
        argv += ["--jobs", str(jobs)]
    if path:
        argv.append(path)
    return argv


class Sql(Protocol):
    """Something that runs SQL on one database: a :class:`Session`, or :class:`OneShot`."""

    def run(self, sql: str) -> list[list[str]]:
        """Rows of the last statement."""
        ...


class OneShot:
    """One psql process per call (statements that are rare, or must not share a session)."""

    def __init__(self, conn: PgConnection, database: str, timeout: float = 600) -> None:
        self.conn = conn
        self.database = database
        self.timeout = timeout

    def run(self, sql: str) -> list[list[str]]:
        """Run SQL; rows of its last statement."""
        return query(self.conn, self.database, sql, timeout=self.timeout)


def list_databases(sql: Sql) -> list[str]:
    """Names of every database."""
    return [r[0] for r in sql.run("SELECT datname FROM pg_database ORDER BY 1")]


@dataclass(frozen=True)
class DatabaseProps:
    """Database-level properties: what pg_restore does not carry into a database it did not create.

    Object-level ownership and grants come with pg_restore; these belong to the database itself.
    """

    owner: str
    encoding: str
    collate: str
    ctype: str
    conn_limit: int
    acl: tuple[tuple[str | None, str, str, bool], ...] | None
    """(grantee or None for PUBLIC, grantor, privilege, grantable); None = the default ACL."""
    settings: tuple[tuple[str | None, str], ...]
    """(role or None for every role, "name=value") from pg_db_role_setting."""
    comment: str | None
    icu_locale: str | None = None


def database_props(sql: Sql, name: str, version: int) -> DatabaseProps | None:
    """The properties of a database, or None when it does not exist."""
    icu = "NULL"
    if version >= 170000:
        icu = "CASE WHEN d.datlocprovider = 'i' THEN d.datlocale END"
    elif version >= 150000:
        icu = "CASE WHEN d.datlocprovider = 'i' THEN d.daticulocale END"
    text = (
        "SELECT json_build_object("
        "'owner', pg_get_userbyid(d.datdba), "
        "'encoding', pg_encoding_to_char(d.encoding), "
        "'collate', d.datcollate, 'ctype', d.datctype, 'connLimit', d.datconnlimit, "
        f"'icu', {icu}, "
        "'aclDefault', d.datacl IS NULL, "
        "'acl', (SELECT coalesce(json_agg(json_build_array("
        "CASE WHEN a.grantee = 0 THEN NULL ELSE pg_get_userbyid(a.grantee) END, "
        "pg_get_userbyid(a.grantor), a.privilege_type, a.is_grantable)), '[]') "
        "FROM aclexplode(d.datacl) a), "
        "'settings', (SELECT coalesce(json_agg(json_build_array("
        "CASE WHEN s.setrole = 0 THEN NULL ELSE pg_get_userbyid(s.setrole) END, c)), '[]') "
        "FROM pg_db_role_setting s, unnest(s.setconfig) c WHERE s.setdatabase = d.oid), "
        "'comment', shobj_description(d.oid, 'pg_database')"
        f") FROM pg_database d WHERE d.datname = {_literal(name)}"
    )
    rows = sql.run(text)
    if not rows:
        return None
    data = json.loads(rows[0][0])
    return DatabaseProps(
        owner=data["owner"],
        encoding=data["encoding"],
        collate=data["collate"],
        ctype=data["ctype"],
        conn_limit=int(data["connLimit"]),
        acl=None
        if data["aclDefault"]
        else tuple((g, gr, p, bool(w)) for g, gr, p, w in data["acl"]),
        settings=tuple((r, c) for r, c in data["settings"]),
        comment=data["comment"],
        icu_locale=data.get("icu"),
    )


def create_database(sql: Sql, name: str, *, like: DatabaseProps | None) -> None:
    """An empty database (from template0) with the encoding, locale and owner of ``like``."""
    text = f"CREATE DATABASE {_ident(name)} TEMPLATE template0"
    if like is not None:
        text += (
            f" OWNER {_ident(like.owner)} ENCODING {_literal(like.encoding)}"
            f" LC_COLLATE {_literal(like.collate)} LC_CTYPE {_literal(like.ctype)}"
        )
        if like.icu_locale:
            text += f" LOCALE_PROVIDER icu ICU_LOCALE {_literal(like.icu_locale)}"
    sql.run(text)


def drop_database(sql: Sql, name: str, version: int) -> None:
    """Drop a database if it exists, ending its sessions first (scratch and kept databases only)."""
    if version >= 130000:
        sql.run(f"DROP DATABASE IF EXISTS {_ident(name)} WITH (FORCE)")
        return
    sql.run(
        "SELECT pg_terminate_backend(pid) FROM pg_stat_activity "
        f"WHERE datname = {_literal(name)} AND pid <> pg_backend_pid()"
    )
    sql.run(f"DROP DATABASE IF EXISTS {_ident(name)}")


def _setting_value(name: str, value: str) -> str:
    """The SQL for a stored setting value (list GUCs are split and quoted element by element)."""
    if name.lower() not in _LIST_GUCS:
        return _literal(value)
    elements: list[str] = []
    current: list[str] = []
    quoted = False
    i = 0
    while i < len(value):
        ch = value[i]
        if ch == '"':
            if quoted and i + 1 < len(value) and value[i + 1] == '"':
                current.append('"')
                i += 1
            else:
                quoted = not quoted
        elif ch == "," and not quoted:
            elements.append("".join(current).strip())
            current = []
        else:
            current.append(ch)
        i += 1
    elements.append("".join(current).strip())
    return ", ".join(_literal(e) for e in elements if e)


def database_props_sql(name: str, props: DatabaseProps) -> str:
    """Statements giving database ``name`` the owner, ACL, settings and comment of ``props``."""
    db = _ident(name)
    out = [
        f"ALTER DATABASE {db} OWNER TO {_ident(props.owner)};",
        f"ALTER DATABASE {db} CONNECTION LIMIT {int(props.conn_limit)};",
        f"ALTER DATABASE {db} RESET ALL;",
    ]
    if props.acl is not None:
        out += [
            f"REVOKE ALL ON DATABASE {db} FROM PUBLIC;",
            f"REVOKE ALL ON DATABASE {db} FROM {_ident(props.owner)};",
        ]
        for grantee, grantor, privilege, grantable in props.acl:
            who = "PUBLIC" if grantee is None else _ident(grantee)
            option = " WITH GRANT OPTION" if grantable else ""
            grant = f"GRANT {privilege} ON DATABASE {db} TO {who}{option};"
            if grantor != props.owner:
                grant = f"SET ROLE {_ident(grantor)}; {grant} RESET ROLE;"
            out.append(grant)
    for role, setting in props.settings:
        key, _, value = setting.partition("=")
        target = f"ALTER ROLE {_ident(role)} IN DATABASE {db}" if role else f"ALTER DATABASE {db}"
        out.append(f"{target} SET {_ident(key)} TO {_setting_value(key, value)};")
    comment = _literal(props.comment) if props.comment is not None else "NULL"
    out.append(f"COMMENT ON DATABASE {db} IS {comment};")
    return "\n".join(out)


def _pg_dump_ident(name: str) -> str:
    """How pg_dump writes a database name (fmtId without the keyword list: quoted unless plain)."""
    if re.fullmatch(r"[a-z_][a-z0-9_]*", name):
        return name
    return _ident(name)


def archive_database_sql(pg_restore: str, archive: str, original: str, target: str) -> list[str]:
    """Database-level statements stored in a custom-format archive, retargeted at ``target``.

    pg_dump (11+) records the database's owner, ACL, settings and comment in every archive, but
    pg_restore emits them only with --create, for the original name. This reads them from the
    archive's table of contents (``archive`` may be just the head of the dump: the TOC comes
    first) and rewrites the database name, for a restore onto a server where the database does
    not exist yet.
    """
    proc = subprocess.run(
        [pg_restore, "--create", "--schema-only", "--file", "-", archive],
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )
    if proc.returncode != 0 and not proc.stdout:
        raise DatabaseError(
            f"reading the database properties of {original} from its dump failed: "
            f"{_error_text(proc.stderr)}"
        )
    names = {_pg_dump_ident(original), _ident(original)}
    new = _ident(target)
    out: list[str] = []
    for line in proc.stdout.splitlines():
        if not line.endswith(";"):
            continue
        for name in names:
            patterns = (
                f"ALTER DATABASE {name} OWNER TO ",
                f"ALTER DATABASE {name} SET ",
                f"ALTER DATABASE {name} CONNECTION LIMIT ",
                f"COMMENT ON DATABASE {name} IS ",
            )
            if line.startswith(patterns):
                out.append(line.replace(f"DATABASE {name} ", f"DATABASE {new} ", 1))
            elif line.startswith(("GRANT ", "REVOKE ")) and f" ON DATABASE {name} " in line:
                out.append(line.replace(f" ON DATABASE {name} ", f" ON DATABASE {new} ", 1))
            elif line.startswith("ALTER ROLE ") and f" IN DATABASE {name} SET " in line:
                out.append(line.replace(f" IN DATABASE {name} ", f" IN DATABASE {new} ", 1))
    return out


def run_statements(sql: Sql, statements: list[str]) -> None:
    """Run statements in one transaction."""
    if statements:
        sql.run("BEGIN;\n" + "\n".join(statements) + "\nCOMMIT;")


def rename_databases(
    conn: PgConnection, renames: list[tuple[str, str]], version: int, *, attempts: int = 3
) -> None:
    """Rename databases in ONE transaction, ending every session on them first.

    Either every rename happens or none does. A session that connects between the terminate and
    the rename makes PostgreSQL refuse (after waiting 5 s for it to go); the transaction is then
    retried, and a persistent client is reported.
    """
    if not renames:
        return
    names = ", ".join(_literal(n) for pair in renames for n in pair)
    wait = ", 5000" if version >= 140000 else ""
    sql = (
        "SET lock_timeout = '30s';\nBEGIN;\n"
        f"SELECT count(pg_terminate_backend(pid{wait})) FROM pg_stat_activity "
        f"WHERE datname IN ({names}) AND pid <> pg_backend_pid();\n"
        + "".join(
            f"ALTER DATABASE {_ident(old)} RENAME TO {_ident(new)};\n" for old, new in renames
        )
        + "COMMIT;"
    )
    for attempt in range(attempts):
        try:
            query(conn, "postgres", sql)
        except DatabaseError as exc:
            if _BUSY not in exc.message or attempt == attempts - 1:
                if _BUSY in exc.message:
                    raise DatabaseError(
                        f"{exc.message}: a client keeps reconnecting; scale the Lamassu "
                        "workloads down (spec.workloads) and retry",
                        reason="DatabaseBusy",
                    ) from None
                raise
            continue
        return


def database_facts(sql: Sql, schema: str | None) -> dict[str, object]:
    """Row counts per table and the goose state of the database ``sql`` is connected to (or of
    one of its schemas), now."""
    return _facts(sql.run, schema)


_KEYLESS_TYPES_SQL = "('IMPORTED_WITHOUT_KEY', 'EXTERNAL')"
"""CA types with no key: v3.8.0's IMPORTED_WITHOUT_KEY, named EXTERNAL before its migration."""


def key_references(
    ca: Sql, ca_schema: str, kms: Sql, kms_schema: str
) -> tuple[list[tuple[str, str]], list[tuple[str, str]]]:
    """What must resolve in the key store: (kms key id, engine) of every kms_keys row with a
    private key, and (serial number, subject key id) of every CA certificate that has a key.

    CAs imported without their key (IMPORTED_WITHOUT_KEY; EXTERNAL before Lamassu v3.8.0
    renamed it) are not expected to have one.
    """
    kms_rows = kms.run(
        f"SELECT key_id, engine_id FROM {_ident(kms_schema)}.kms_keys WHERE has_private_key "
        "ORDER BY 1"
    )
    ca_rows = ca.run(
        f"SELECT serial_number, coalesce(subject_key_id, '') FROM {_ident(ca_schema)}.certificates "
        f"WHERE is_ca AND coalesce(type, '') NOT IN {_KEYLESS_TYPES_SQL} ORDER BY 1"
    )
    return [(r[0], r[1]) for r in kms_rows], [(r[0], r[1]) for r in ca_rows]


def key_inventory(
    ca: Sql, ca_schema: str, kms: Sql, kms_schema: str
) -> tuple[list[tuple[str, str, bool, str, str]], list[tuple[str, str, str, str, str, str]]]:
    """Every kms key and every CA certificate, with what linking one to the other needs.

    kms rows: (key id, engine id, has private key, aliases JSON, metadata JSON: it holds the
    ``lamassu.io/kms/binded-resources`` binding); CA rows: (serial, subject key id, type, engine
    id, CA id, certificate: base64 of its PEM, to match the stored key with). The caller decides
    which CAs need a key (their type says) and where it lives.
    """
    kms_rows = kms.run(
        "SELECT key_id, coalesce(engine_id, ''), "
        "CASE WHEN coalesce(has_private_key, true) THEN 't' ELSE 'f' END, "
        "coalesce(aliases::text, '[]'), coalesce(metadata::text, '{}') "
        f"FROM {_ident(kms_schema)}.kms_keys ORDER BY 1"
    )
    schema = _ident(ca_schema)
    ca_rows = ca.run(
        "SELECT c.serial_number, coalesce(c.subject_key_id, ''), coalesce(c.type, ''), "
        "coalesce(c.engine_id, ''), coalesce(min(a.id), ''), "
        "translate(coalesce(c.certificate, ''), E'\\n\\r\\t', '') "
        f"FROM {schema}.certificates c LEFT JOIN {schema}.ca_certificates a "
        "ON a.serial_number = c.serial_number WHERE c.is_ca "
        "GROUP BY 1, 2, 3, 4, 6 ORDER BY 1"
    )
    return (
        [(r[0], r[1], r[2] == "t", r[3], r[4]) for r in kms_rows],
        [(r[0], r[1], r[2], r[3], r[4], r[5] if len(r) > 5 else "") for r in ca_rows],
    )


def user_schemas(sql: Sql) -> list[str]:
    """Schemas holding anything a restore of the database must not lose (``public`` only when it
    holds relations: every database has it)."""
    rows = sql.run(
        "SELECT n.nspname FROM pg_namespace n WHERE n.nspname NOT LIKE 'pg\\_%' "
        "AND n.nspname <> 'information_schema' AND (n.nspname <> 'public' OR EXISTS "
        "(SELECT 1 FROM pg_class c WHERE c.relnamespace = n.oid)) ORDER BY 1",
    )
    return [r[0] for r in rows]


# -- WAL shipping (point-in-time recovery) ------------------------------------------------------


def slot_restart_lsn(conn: PgConnection, slot: str) -> str | None:
    """restart_lsn of a replication slot ('' when it reserves nothing), None when it is absent."""
    rows = query(
        conn,
        "postgres",
        f"SELECT coalesce(restart_lsn::text, '') FROM pg_replication_slots "
        f"WHERE slot_name = {_literal(slot)};",
    )
    return rows[0][0] if rows else None


def create_physical_slot(conn: PgConnection, slot: str) -> None:
    """A physical slot that reserves WAL from now on (REPLICATION needed)."""
    query(conn, "postgres", f"SELECT pg_create_physical_replication_slot({_literal(slot)}, true);")


@dataclass(frozen=True)
class SlotInfo:
    """What pg_replication_slots says of one slot."""

    slot_type: str
    """physical or logical."""

    active: bool
    active_pid: str
    """The process using it ('' when none)."""


def slot_info(conn: PgConnection, slot: str) -> SlotInfo | None:
    """One replication slot's type and activity, None when it does not exist."""
    rows = query(
        conn,
        "postgres",
        "SELECT slot_type, active, coalesce(active_pid::text, '') FROM pg_replication_slots "
        f"WHERE slot_name = {_literal(slot)};",
    )
    if not rows:
        return None
    return SlotInfo(rows[0][0], rows[0][1] == "t", rows[0][2] if len(rows[0]) > 2 else "")


def drop_inactive_physical_slot(conn: PgConnection, slot: str) -> bool:
    """Drop the slot only if it is physical and no process uses it (one statement, so the check
    and the drop see the same slot); True when this call dropped it (REPLICATION needed)."""
    rows = query(
        conn,
        "postgres",
        "SELECT count(*) FROM (SELECT pg_drop_replication_slot(slot_name) FROM "
        f"pg_replication_slots WHERE slot_name = {_literal(slot)} AND slot_type = 'physical' "
        "AND NOT active) AS dropped;",
    )
    return bool(rows) and rows[0][0] == "1"


def advance_slot(conn: PgConnection, slot: str, lsn: str) -> None:
    """Move a physical slot forward to ``lsn`` (the server may recycle the WAL before it)."""
    query(
        conn, "postgres", f"SELECT pg_replication_slot_advance({_literal(slot)}, {_literal(lsn)});"
    )


def slot_retained_bytes(conn: PgConnection, slot: str) -> int:
    """Bytes of WAL the server keeps for a slot (current position minus restart_lsn)."""
    rows = query(
        conn,
        "postgres",
        "SELECT coalesce(pg_current_wal_lsn() - restart_lsn, 0) FROM pg_replication_slots "
        f"WHERE slot_name = {_literal(slot)};",
    )
    return int(float(rows[0][0])) if rows else 0


def wal_position(conn: PgConnection) -> tuple[int, int]:
    """(current timeline, wal_segment_size in bytes) of a primary."""
    rows = query(
        conn,
        "postgres",
        "SELECT pg_walfile_name(pg_current_wal_lsn()), "
        "(SELECT setting FROM pg_settings WHERE name = 'wal_segment_size');",
    )
    return int(rows[0][0][:8], 16), int(rows[0][1])
