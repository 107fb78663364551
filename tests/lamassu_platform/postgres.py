"""A private PostgreSQL cluster per test session, on loopback, with password (SCRAM) auth.

Why: the backup runner talks to PostgreSQL exactly as it would in a cluster (TCP, a password,
``pg_dump``/``pg_restore``), so the tests need a real server, not a mock. The cluster is tuned for
speed (no fsync), which is fine because it is thrown away after the run.

The server refuses to run as root, so when we are root the cluster files belong to the
``postgres`` OS user and ``initdb``/``pg_ctl`` run through ``runuser``. If ``postgres`` cannot reach
the requested directory (pytest's ``/tmp/pytest-of-root`` is mode 0700), the cluster lives in a
private directory under the system temp dir instead, and ``data_dir/cluster`` points at it.
"""

from __future__ import annotations

import base64
import contextlib
import hashlib
import hmac
import os
import pwd
import secrets
import shutil
import signal
import stat
import subprocess
import tempfile
import time
from collections.abc import Mapping, Sequence
from pathlib import Path
from types import TracebackType
from typing import Self
from urllib.parse import quote

from ._util import free_port, wait_for

DEFAULT_MAJOR = 15
PG_OS_USER = "postgres"

# Settings for a throw-away test cluster: durability off, enough memory for the 1 GiB data set.
TEST_SETTINGS: dict[str, str] = {
    "fsync": "off",
    "synchronous_commit": "off",
    "full_page_writes": "off",
    "shared_buffers": "256MB",
    "work_mem": "32MB",
    "maintenance_work_mem": "256MB",
    "max_wal_size": "4GB",
    "checkpoint_timeout": "30min",
    "max_connections": "50",
    "password_encryption": "scram-sha-256",
    "timezone": "UTC",
    "log_timezone": "UTC",
    "datestyle": "iso, mdy",
    "lc_messages": "C",
    "log_line_prefix": "%m [%p] %q%u@%d ",
    "log_min_messages": "warning",
    # never copy a failing statement (it may carry a password) into the server log
    "log_min_error_statement": "panic",
}


def bin_dir_for(major: int) -> Path:
    """The Debian location of a server major's binaries (``/usr/lib/postgresql/<major>/bin``)."""
    return Path(f"/usr/lib/postgresql/{major}/bin")


def scram_sha256_verifier(password: str, *, iterations: int = 4096) -> str:
    """The SCRAM-SHA-256 verifier PostgreSQL stores for ``password`` (RFC 5802/7677).

    Sending the verifier instead of the password keeps the clear text out of SQL text, server
    logs and error messages. (ASCII passwords need no SASLprep, which is all the tests use.)
    """
    salt = os.urandom(16)
    salted = hashlib.pbkdf2_hmac("sha256", password.encode(), salt, iterations)
    client_key = hmac.new(salted, b"Client Key", hashlib.sha256).digest()
    stored_key = hashlib.sha256(client_key).digest()
    server_key = hmac.new(salted, b"Server Key", hashlib.sha256).digest()

    def b64(raw: bytes) -> str:
        return base64.b64encode(raw).decode("ascii")

    return f"SCRAM-SHA-256${iterations}:{b64(salt)}${b64(stored_key)}:{b64(server_key)}"


def _sql_literal(value: str) -> str:
    return "'" + value.replace("'", "''") + "'"


def _sql_ident(value: str) -> str:
    return '"' + value.replace('"', '""') + '"'


class PostgresServer:
    """One PostgreSQL cluster: ``start()`` (initdb on first use), ``stop()``, ``close()``.

    ``stop()`` keeps the files so the server can be started again; ``close()`` (and leaving the
    ``with`` block) also removes a cluster that had to live outside ``data_dir``.
    """

    host = "127.0.0.1"
    superuser = "postgres"

    def __init__(
        self,
        data_dir: Path | str,
        *,
        major: int = DEFAULT_MAJOR,
        bin_dir: Path | str | None = None,
        port: int | None = None,
        settings: Mapping[str, str] | None = None,
    ) -> None:
        self.data_dir = Path(data_dir).resolve()
        self.major = major
        self.bin_dir = Path(bin_dir) if bin_dir is not None else bin_dir_for(major)
        if not (self.bin_dir / "postgres").exists():
            raise FileNotFoundError(f"no PostgreSQL server binaries in {self.bin_dir}")
        self.port = port or free_port()
        self.settings = dict(TEST_SETTINGS)
        self.settings.update(settings or {})
        self._as_postgres = os.geteuid() == 0
        self._external_root: Path | None = None
        self.root = self._choose_root()
        self.pgdata = self.root / "data"
        self.socket_dir = self.pgdata / "socket"
        self.log_file = self.root / "server.log"
        self.password_file = self.root / "superuser.password"
        self.pgpass_file = self.root / "pgpass"
        self._password: str | None = None

    # ----------------------------------------------------------------- layout and ownership
    def _postgres_can_reach(self, path: Path) -> bool:
        """Whether the ``postgres`` user can traverse every ancestor of ``path``."""
        if not self._as_postgres:
            return True
        pw = pwd.getpwnam(PG_OS_USER)
        for parent in [path, *path.parents]:
            if not parent.exists():
                continue
            st = parent.stat()
            if st.st_uid == pw.pw_uid:
                ok = bool(st.st_mode & stat.S_IXUSR)
            elif st.st_gid == pw.pw_gid:
                ok = bool(st.st_mode & stat.S_IXGRP)
            else:
                ok = bool(st.st_mode & stat.S_IXOTH)
            if not ok:
                return False
        return True

    def _choose_root(self) -> Path:
        self.data_dir.mkdir(parents=True, exist_ok=True)
        link = self.data_dir / "cluster"
        if link.is_symlink():  # a previous instance on the same data_dir left its cluster
            target = link.resolve()
            if target.is_dir():
                self._external_root = target
                return target
            link.unlink()
        candidate = self.data_dir / "cluster"
        # The unix socket path must fit in sun_path (107 bytes) with ".s.PGSQL.<port>".
        short_enough = len(str(candidate / "data" / "socket")) + 18 < 107
        if self._postgres_can_reach(self.data_dir) and short_enough:
            return candidate
        external = Path(tempfile.mkdtemp(prefix="lamassu-pg-"))
        link.symlink_to(external)
        self._external_root = external
        return external

    def _chown(self, path: Path) -> None:
        if self._as_postgres:
            pw = pwd.getpwnam(PG_OS_USER)
            os.chown(path, pw.pw_uid, pw.pw_gid)

    def _as_server_user(self, argv: Sequence[str]) -> list[str]:
        if self._as_postgres:
            return ["runuser", "-u", PG_OS_USER, "--", *argv]
        return list(argv)

    def _run_server_tool(self, argv: Sequence[str], *, timeout: float = 120) -> str:
        env = {k: v for k, v in os.environ.items() if not k.startswith("PG")}
        env.update({"LC_ALL": "C", "LANG": "C", "TZ": "UTC"})
        proc = subprocess.run(
            self._as_server_user(argv),
            cwd=self.root,
            env=env,
            capture_output=True,
            text=True,
            timeout=timeout,
            check=False,
        )
        if proc.returncode != 0:
            raise RuntimeError(
                f"{Path(argv[0]).name} failed (exit {proc.returncode}): "
                f"{proc.stderr.strip() or proc.stdout.strip()}\n{self._log_tail()}"
            )
        return proc.stdout

    def _log_tail(self, lines: int = 30) -> str:
        try:
            text = self.log_file.read_text(errors="replace")
        except OSError:
            return ""
        return "server log tail:\n" + "\n".join(text.splitlines()[-lines:])

    # ------------------------------------------------------------------------ credentials
    @property
    def password(self) -> str:
        """The superuser's password (read from ``password_file``; never log it)."""
        if self._password is None:
            self._password = self.password_file.read_text().strip()
        return self._password

    def _write_secret(self, path: Path, content: str) -> None:
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
        with os.fdopen(fd, "w") as fh:
            fh.write(content)
        os.chmod(path, 0o600)

    def _write_pgpass(self) -> None:
        self._write_secret(
            self.pgpass_file,
            f"{self.host}:{self.port}:*:{self.superuser}:{self.password}\n",
        )

    # ------------------------------------------------------------------------- lifecycle
    @property
    def initialized(self) -> bool:
        return (self.pgdata / "PG_VERSION").exists()

    def initdb(self) -> None:
        """Create the cluster: superuser with a random password, SCRAM everywhere, test settings."""
        self.root.mkdir(parents=True, exist_ok=True)
        os.chmod(self.root, 0o700)
        self._chown(self.root)
        self._write_secret(self.password_file, secrets.token_urlsafe(24) + "\n")
        self._chown(self.password_file)
        self._run_server_tool(
            [
                str(self.bin_dir / "initdb"),
                "-D",
                str(self.pgdata),
                "-U",
                self.superuser,
                f"--pwfile={self.password_file}",
                "--auth-local=scram-sha-256",
                "--auth-host=scram-sha-256",
                "--encoding=UTF8",
                "--locale=C",
                "--no-instructions",
            ],
            timeout=300,
        )
        self.socket_dir.mkdir(mode=0o700, exist_ok=True)
        self._chown(self.socket_dir)
        (self.pgdata / "pg_hba.conf").write_text(
            "# written by lamassu_platform.postgres: SCRAM only, loopback only\n"
            "local all all scram-sha-256\n"
            "host  all all 127.0.0.1/32 scram-sha-256\n"
        )
        self._write_conf()

    def _write_conf(self) -> None:
        conf = dict(self.settings)
        conf.update(
            {
                "listen_addresses": "127.0.0.1",
                "port": str(self.port),
                "unix_socket_directories": str(self.socket_dir),
            }
        )
        lines = ["# written by lamassu_platform.postgres (rewritten on every start)"]
        for key, value in conf.items():
            quoted = value if value.isdigit() else _sql_literal(value)
            lines.append(f"{key} = {quoted}")
        target = self.pgdata / "lamassu_test.conf"
        target.write_text("\n".join(lines) + "\n")
        self._chown(target)
        main_conf = self.pgdata / "postgresql.conf"
        include = "include = 'lamassu_test.conf'\n"
        if include not in main_conf.read_text():
            with main_conf.open("a") as fh:
                fh.write(include)

    def start(self) -> Self:
        """initdb if needed, then start the server and wait until it accepts a login."""
        if not self.initialized:
            self.initdb()
        else:
            self._write_conf()  # the port may have changed
        self._write_pgpass()
        if self.log_file.exists():
            self._chown(self.log_file)
        self._run_server_tool(
            [
                str(self.bin_dir / "pg_ctl"),
                "-D",
                str(self.pgdata),
                "-l",
                str(self.log_file),
                "-w",
                "-t",
                "120",
                "start",
            ],
            timeout=180,
        )
        wait_for(
            lambda: self.psql("SELECT 1").strip() == "1",
            timeout=60,
            what="PostgreSQL login",
        )
        return self

    def postmaster_pid(self) -> int | None:
        """The running postmaster's pid, from ``postmaster.pid`` (None when not running)."""
        try:
            first = (self.pgdata / "postmaster.pid").read_text().splitlines()[0]
            pid = int(first.strip())
        except (OSError, ValueError, IndexError):
            return None
        try:
            os.kill(pid, 0)
        except ProcessLookupError:
            return None
        return pid

    def stop(self) -> None:
        """``pg_ctl stop -m fast``; if that fails, SIGKILL the postmaster's process group."""
        pid = self.postmaster_pid()
        if pid is None:
            return
        with contextlib.suppress(RuntimeError, subprocess.TimeoutExpired):
            self._run_server_tool(
                [
                    str(self.bin_dir / "pg_ctl"),
                    "-D",
                    str(self.pgdata),
                    "-m",
                    "fast",
                    "-w",
                    "-t",
                    "60",
                    "stop",
                ],
                timeout=90,
            )
        if self.postmaster_pid() is None:
            return
        try:  # the postmaster leads its own process group (pg_ctl starts it with setsid)
            os.killpg(pid, signal.SIGKILL)
        except (ProcessLookupError, PermissionError):
            with contextlib.suppress(ProcessLookupError):
                os.kill(pid, signal.SIGKILL)
        deadline = time.monotonic() + 15
        while time.monotonic() < deadline and self.postmaster_pid() is not None:
            time.sleep(0.1)

    def close(self) -> None:
        """Stop, and remove a cluster that lives outside ``data_dir``."""
        self.stop()
        if self._external_root is not None:
            shutil.rmtree(self._external_root, ignore_errors=True)
            link = self.data_dir / "cluster"
            if link.is_symlink():
                link.unlink()
            self._external_root = None

    def __enter__(self) -> Self:
        return self.start()

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.close()

    # ------------------------------------------------------------------ client side
    def tool(self, name: str) -> str:
        """Path of a client tool (``psql``, ``pg_dump``, ``pg_restore``) of this server's major."""
        return str(self.bin_dir / name)

    def env(self) -> dict[str, str]:
        """PG* variables a subprocess (psql, pg_dump, the backup runner) needs to log in."""
        return {
            "PGHOST": self.host,
            "PGPORT": str(self.port),
            "PGUSER": self.superuser,
            "PGPASSWORD": self.password,
            "PGSSLMODE": "disable",
            "PGCONNECT_TIMEOUT": "10",
        }

    def subprocess_env(self) -> dict[str, str]:
        """``os.environ`` minus any inherited PG*, plus :meth:`env`."""
        env = {k: v for k, v in os.environ.items() if not k.startswith("PG")}
        env.update(self.env())
        return env

    def dsn(self, dbname: str = "postgres") -> str:
        """A libpq URI without the password (it comes from ``passfile``), safe to log."""
        return (
            f"postgresql://{self.superuser}@{self.host}:{self.port}/{quote(dbname, safe='')}"
            f"?passfile={quote(str(self.pgpass_file), safe='')}&sslmode=disable"
        )

    def conninfo(self, dbname: str = "postgres") -> str:
        """A libpq keyword/value string without the password (uses ``passfile``)."""
        return (
            f"host={self.host} port={self.port} user={self.superuser} dbname='{dbname}' "
            f"passfile='{self.pgpass_file}' sslmode=disable"
        )

    def psql(
        self,
        sql: str,
        db: str = "postgres",
        *,
        user: str | None = None,
        password: str | None = None,
        timeout: float = 600,
        extra_args: Sequence[str] = (),
    ) -> str:
        """Run SQL through ``psql`` (ON_ERROR_STOP, unaligned, tuples only, tab-separated).

        The SQL goes on stdin, so it may hold several statements and secrets stay out of argv.
        """
        env = self.subprocess_env()
        if user is not None:
            env["PGUSER"] = user
            if password is not None:
                env["PGPASSWORD"] = password
        proc = subprocess.run(
            [
                self.tool("psql"),
                "-X",
                "-q",
                "-A",
                "-t",
                "-F",
                "\t",
                "-v",
                "ON_ERROR_STOP=1",
                "-d",
                db,
                *extra_args,
                "-f",
                "-",
            ],
            input=sql,
            env=env,
            capture_output=True,
            text=True,
            timeout=timeout,
            check=False,
        )
        if proc.returncode != 0:
            raise RuntimeError(
                f"psql on {db!r} failed (exit {proc.returncode}): {proc.stderr.strip()}"
            )
        return proc.stdout

    def rows(self, sql: str, db: str = "postgres") -> list[list[str]]:
        """A query's result as rows of text fields (NULL shows as the empty string)."""
        return [line.split("\t") for line in self.psql(sql, db).splitlines() if line]

    def create_role(
        self, name: str, password: str, *, login: bool = True, createdb: bool = False
    ) -> None:
        """A non-superuser role, e.g. the owner of the Lamassu databases in a restore test."""
        opts = [
            "LOGIN" if login else "NOLOGIN",
            "CREATEDB" if createdb else "NOCREATEDB",
        ]
        verifier = scram_sha256_verifier(password)
        self.psql(
            f"CREATE ROLE {_sql_ident(name)} {' '.join(opts)} PASSWORD {_sql_literal(verifier)};"
        )

    def create_replication_role(self, name: str, password: str) -> None:
        """What WAL shipping asks of a user's server: a role with REPLICATION, a ``host
        replication`` pg_hba line for loopback, and EXECUTE on ``pg_switch_wal()`` (base backups
        then end in a closed segment); the configuration is reloaded, not restarted."""
        hba = self.pgdata / "pg_hba.conf"
        line = "host  replication all 127.0.0.1/32 scram-sha-256\n"
        if line not in hba.read_text():
            hba.write_text(hba.read_text() + line)
        self.create_role(name, password)
        self.psql(
            f"ALTER ROLE {_sql_ident(name)} REPLICATION; "
            f"GRANT EXECUTE ON FUNCTION pg_switch_wal() TO {_sql_ident(name)}; "
            "SELECT pg_reload_conf();"
        )

    def set_password(self, name: str, password: str) -> None:
        """Change a role's password (sent as a SCRAM verifier, never in clear)."""
        verifier = scram_sha256_verifier(password)
        self.psql(f"ALTER ROLE {_sql_ident(name)} PASSWORD {_sql_literal(verifier)};")

    def create_database(self, name: str, *, owner: str | None = None) -> None:
        """``CREATE DATABASE`` (template0, so it is empty whatever template1 holds)."""
        owner_sql = f" OWNER {_sql_ident(owner)}" if owner else ""
        self.psql(f"CREATE DATABASE {_sql_ident(name)}{owner_sql} TEMPLATE template0;")

    def drop_database(self, name: str) -> None:
        """``DROP DATABASE IF EXISTS ... WITH (FORCE)`` (kicks out leftover sessions)."""
        self.psql(f"DROP DATABASE IF EXISTS {_sql_ident(name)} WITH (FORCE);")

    def databases(self) -> list[str]:
        """Names of the non-template databases."""
        out = self.psql("SELECT datname FROM pg_database WHERE NOT datistemplate ORDER BY 1;")
        return out.split()

    def database_size(self, name: str) -> int:
        """``pg_database_size`` in bytes."""
        return int(self.psql(f"SELECT pg_database_size({_sql_literal(name)});").strip())

    def server_version_num(self) -> int:
        """``server_version_num`` (e.g. 150012)."""
        return int(self.psql("SHOW server_version_num;").strip())
