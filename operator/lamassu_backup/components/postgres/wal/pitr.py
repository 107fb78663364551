"""Point-in-time recovery into a scratch PostgreSQL server: preflight, fetch, verify, replay.

Order matters, and is the point:

1. The window is computed from the bucket's records and a target outside it is refused, naming
   the window, before a byte is downloaded.
2. Every WAL object the target needs and the base backup are fetched (side by side), each
   through :func:`stream_artifact`, which checks the stored SHA-256 and the plain SHA-256
   against its record; the base backup is also checked file by file with ``pg_verifybackup``
   against its own manifest. A corrupted object fails the restore here: no server has been
   started, nothing live was touched.
3. Only then is a scratch server started on the extracted base backup (no initdb), with
   ``recovery.signal``, a ``restore_command`` that copies from the verified local WAL directory,
   ``recovery_target_time`` and ``recovery_target_action = promote``, on a free loopback port.
   The server process needs no credentials and no access to the bucket.

Bringing the recovered databases into the live server is the existing verify-then-swap path
(dump from the scratch server, restore into scratch databases, verify, rename): the live
databases are never destroyed first.
"""

from __future__ import annotations

import os
import pwd
import shutil
import socket
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path

from ....builders import layout
from ....builders import wal as walb
from ....builders.manifest import parse as parse_manifest
from ....clients import postgres as pg
from ....clients.gpg import Keyring
from ....clients.s3 import S3Store
from ....errors import (
    ConfigurationError,
    DatabaseError,
    IntegrityError,
    SignatureError,
    StorageError,
)
from ....models.runner import ArtifactRecord
from ....models.wal import BaseBackupInfo, WalRecord
from ....runner.stream.fetch import FileSink, NullSink, ProcessSink, exit_text, stream_artifact
from .basebackup import base_backup_from_manifest

OUTSIDE_WINDOW = "OutsideRecoverableWindow"
"""The reason of a refused target (the window is status.recoverableFrom/Until on the policy)."""


@dataclass(frozen=True)
class StoredBase:
    """A base backup set as the bucket holds it."""

    info: BaseBackupInfo
    artifact: ArtifactRecord
    server_version: int


def load_archive(
    store: S3Store,
    prefix: str,
    *,
    verifier: Keyring | None = None,
    trusted: list[str] | None = None,
) -> tuple[list[StoredBase], list[WalRecord]]:
    """Every committed base backup (those with manifest.json) and every WAL record.

    With ``verifier`` (holding the ``trusted`` signer keys), a base backup whose manifest is not
    signed by one of them raises :class:`SignatureError`, as a dump set's would.
    """
    bases: list[StoredBase] = []
    for base_prefix in store.list_prefixes(prefix + walb.BASE_DIR):
        key = base_prefix + layout.MANIFEST
        if store.head(key) is None:
            continue  # not committed: the set is incomplete by definition
        body = store.get_bytes(key)
        if verifier is not None:
            if store.head(base_prefix + layout.SIGNATURE) is None:
                raise SignatureError(f"{store.url(key)} is not signed, and a signature is required")
            verifier.verify_detached(
                body, store.get_bytes(base_prefix + layout.SIGNATURE), trusted or []
            )
        info, artifact, version = base_backup_from_manifest(parse_manifest(body))
        bases.append(StoredBase(info, artifact, version))
    records = []
    for obj in store.list_keys(prefix + walb.WAL_DIR):
        if not obj.key.endswith(".json"):
            continue
        try:
            records.append(WalRecord.model_validate_json(store.get_bytes(obj.key)))
        except StorageError:
            if store.head(obj.key) is not None:
                raise
            # a partial snapshot's record, superseded by its complete segment since the listing
    return bases, records


def wal_artifact(record: WalRecord) -> ArtifactRecord:
    """A WAL record in the shape the verifying fetch checks against."""
    return ArtifactRecord(
        component="wal",
        name=record.name,
        kind=record.kind,
        key=record.key,
        size_bytes=record.size_bytes,
        plaintext_size_bytes=record.plaintext_size_bytes,
        sha256=record.sha256,
        plaintext_sha256=record.plaintext_sha256,
        compression=record.compression,
        encryption=record.encryption,
    )


def server_tool(tool: str, major: int) -> str:
    """``tool`` of exactly the base backup's major: a server only starts on a data directory of
    its own major, so a newer one (fine for pg_dump) would fail late, after the download."""
    found = pg.installed_majors(tool)
    path = found.get(major)
    if path is None:
        have = ", ".join(str(m) for m in sorted(found)) or "none"
        raise ConfigurationError(
            f"the base backup is of a PostgreSQL {major} server, and recovering it needs the "
            f"PostgreSQL {major} server binaries (postgres, pg_ctl) in the runner image "
            f"(it has {tool} for: {have}); use a runner image with them",
            reason="ServerBinariesMissing",
        )
    return path


def free_port() -> int:
    """A free loopback TCP port for the scratch server."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


# A missing file (the server asks for timeline history files that may not exist) exits 1, quietly.
_PY_COPY = (
    "import os,shutil,sys; s,d=sys.argv[1:]; "
    "sys.exit(1) if not os.path.exists(s) else shutil.copyfile(s,d)"
)


def _copy_program() -> str:
    """What the scratch server's ``restore_command`` copies a WAL file with: ``cp``, or the
    runner's own Python where there is none (the runner image ships no coreutils)."""
    cp = shutil.which("cp")
    return f'"{cp}"' if cp else f'"{sys.executable}" -c "{_PY_COPY}"'


def _conf_value(value: str) -> str:
    return "'" + value.replace("'", "''") + "'"


@dataclass
class ScratchServer:
    """The recovered server: its files, port and how to stop it."""

    root: Path
    datadir: Path
    port: int
    pg_ctl: str
    log_file: Path
    run_as: list[str] = field(default_factory=list)
    socket_dir: Path | None = None

    def connection(self, user: str, password: str) -> pg.PgConnection:
        """A connection to it (the roles and passwords are the source server's)."""
        return pg.PgConnection(
            host="127.0.0.1", port=self.port, user=user, password=password, sslmode="disable"
        )

    def local_connection(self, user: str) -> pg.PgConnection:
        """A connection over its private Unix socket, which trusts any role of the recovered
        server: no password, and it works whatever the source's pg_hba.conf allowed."""
        if self.socket_dir is None:
            raise DatabaseError("the scratch server has no private socket")
        return pg.PgConnection(
            host=str(self.socket_dir), port=self.port, user=user, password="", sslmode="disable"
        )

    def log_tail(self, lines: int = 15) -> str:
        """The end of the scratch server's log."""
        try:
            return "\n".join(self.log_file.read_text(errors="replace").splitlines()[-lines:])
        except OSError:
            return ""

    def stop(self) -> None:
        """Stop the server (fast shutdown)."""
        if not (self.datadir / "postmaster.pid").exists():
            return
        subprocess.run(
            [*self.run_as, self.pg_ctl, "-D", str(self.datadir), "-m", "fast", "-w", "stop"],
            capture_output=True,
            check=False,
            timeout=120,
        )

    def close(self) -> None:
        """Stop it and delete its files."""
        self.stop()
        shutil.rmtree(self.root, ignore_errors=True)


@dataclass
class RecoveryResult:
    """What a point-in-time recovery did."""

    server: ScratchServer
    plan: walb.RecoveryPlan
    wal_files: int
    fetched_bytes: int
    fetch_seconds: float
    replay_seconds: float


def wait_recovered(server: ScratchServer, *, timeout: float, target: str) -> None:
    """Until the postmaster reports ``ready``: recovery ended and the server promoted.

    ``pg_ctl -w`` returns as soon as a server in archive recovery runs (a standby without hot
    standby would otherwise never be "ready"), so the postmaster.pid status line is read instead;
    it needs no connection, and a server whose recovery failed is gone from it.
    """
    pid_file = server.datadir / "postmaster.pid"
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        try:
            lines = pid_file.read_text().splitlines()
        except OSError:
            lines = []
        if len(lines) >= 8 and lines[7].strip() == "ready":
            return
        alive = False
        if lines:
            try:
                os.kill(int(lines[0]), 0)
                alive = True
            except (ValueError, ProcessLookupError):
                alive = False
            except PermissionError:
                alive = True
        if not alive:
            raise DatabaseError(
                f"the scratch server stopped before finishing recovery to {target}:\n"
                f"{server.log_tail()}"
            )
        time.sleep(0.1)
    raise DatabaseError(
        f"recovery to {target} did not finish within {timeout:.0f}s:\n{server.log_tail()}"
    )


def _tar_error(code: int, stderr: str) -> IntegrityError:
    return IntegrityError(f"extracting the base backup failed ({exit_text(code)}): {stderr[-300:]}")


SCRATCH_HBA = "local all all trust\nhost all all 127.0.0.1/32 md5\n"
"""The scratch server's pg_hba.conf: its private socket (a 0700 directory) trusts every role,
loopback asks for the source's passwords; the source's own pg_hba.conf (which may allow only
hostssl from its network, or live outside the data directory) is not used."""


def _recovery_conf(
    plan: walb.RecoveryPlan, *, port: int, wal_dir: Path, socket_dir: Path, root: Path
) -> str:
    settings = {
        "port": str(port),
        "listen_addresses": "127.0.0.1",
        "unix_socket_directories": str(socket_dir),
        "restore_command": f'{_copy_program()} "{wal_dir}/%f" "%p"',
        "recovery_target_action": "promote",
        "recovery_target_timeline": "current",
        "archive_mode": "off",
        "hot_standby": "off",  # pg_ctl -w then returns only once recovery ended and it promoted
        "primary_conninfo": "",
        "primary_slot_name": "",
        "shared_buffers": "64MB",
        "logging_collector": "off",
        # The source's files and libraries may not exist here: its own pg_hba.conf, TLS key
        # files and preloaded extensions are not needed to read the data back.
        "hba_file": str(root / "pg_hba.conf"),
        "ident_file": str(root / "pg_ident.conf"),
        "ssl": "off",
        "shared_preload_libraries": "",
    }
    if plan.target_time is not None:
        settings["recovery_target_time"] = plan.target_time.isoformat()
        settings["recovery_target_inclusive"] = "on"
    lines = ["# written by lamassu-backup point-in-time recovery"]
    lines += [f"{k} = {_conf_value(v)}" for k, v in settings.items()]
    return "\n".join(lines) + "\n"


def _chown_tree(root: Path, owner: tuple[int, int]) -> None:
    uid, gid = owner
    os.chown(root, uid, gid)
    for dirpath, dirnames, filenames in os.walk(root):
        for name in dirnames + filenames:
            os.chown(os.path.join(dirpath, name), uid, gid, follow_symlinks=False)


class Superseded(Exception):  # noqa: N818 - a signal to retry, not an error
    """A partial snapshot was replaced (its segment completed) between listing and fetching."""


def _fetch_wal(
    store: S3Store,
    prefix: str,
    wanted: list[WalRecord],
    *,
    keyring: Keyring,
    passphrase: str | None,
    wal_dir: Path | None,
    stop: threading.Event,
) -> int:
    fetched = 0
    for record in wanted:
        if stop.is_set():
            break
        path = wal_dir / record.name if wal_dir is not None else None
        try:
            stats = stream_artifact(
                store,
                prefix + record.key,
                wal_artifact(record),
                keyring=keyring,
                passphrase=passphrase,
                sink=FileSink(path, f"WAL {record.name}") if path is not None else NullSink(),
            )
        except StorageError:
            if record.kind == "partial" and store.head(prefix + record.key) is None:
                raise Superseded(record.name) from None
            raise
        fetched += stats.stored_bytes
        if path is None:
            continue
        if record.kind == "partial" and path.stat().st_size < record.segment_size:
            with path.open("r+b") as fh:  # recovery reads whole segments; the rest is zeros
                fh.truncate(record.segment_size)
    return fetched


def fetch_verified(
    store: S3Store,
    prefix: str,
    plan: walb.RecoveryPlan,
    records: list[WalRecord],
    stored: StoredBase,
    *,
    keyring: Keyring,
    passphrase: str | None,
    wal_dir: Path | None,
    datadir: Path | None,
    verifybackup: str | None,
) -> int:
    """Fetch the WAL and the base backup, each checked as it streams; returns the bytes read.

    Without ``wal_dir`` and ``datadir`` nothing is kept: what a restore's plan step does before
    anything live is touched (a damaged segment fails the restore before the pre-restore backup
    and the scale-down). A partial snapshot superseded meanwhile raises :class:`Superseded`
    after everything else was read.

    The WAL streams in a second thread while the base backup does (two cores: gpg and zstd of
    one overlap the other's). Raises the first object that does not match, the WAL's first: a
    damaged segment is the likelier and the more specific error. No server has started yet.
    """
    history = [r for r in records if r.kind == "history" and r.timeline <= plan.base.timeline]
    stop = threading.Event()
    with ThreadPoolExecutor(max_workers=1, thread_name_prefix="pitr-wal") as pool:
        wal = pool.submit(
            _fetch_wal,
            store,
            prefix,
            [*history, *plan.records],
            keyring=keyring,
            passphrase=passphrase,
            wal_dir=wal_dir,
            stop=stop,
        )
        try:
            fetched = _fetch_base(
                store,
                prefix,
                stored,
                keyring=keyring,
                passphrase=passphrase,
                datadir=datadir,
                verifybackup=verifybackup,
            )
        except BaseException:
            stop.set()
            if wal.exception() is not None:
                raise wal.exception() from None  # type: ignore[misc]
            raise
        return fetched + wal.result()


def _fetch_base(
    store: S3Store,
    prefix: str,
    stored: StoredBase,
    *,
    keyring: Keyring,
    passphrase: str | None,
    datadir: Path | None,
    verifybackup: str | None,
) -> int:
    base_key = prefix + walb.base_backup_prefix(stored.info.set_time) + stored.artifact.key
    stats = stream_artifact(
        store,
        base_key,
        stored.artifact,
        keyring=keyring,
        passphrase=passphrase,
        sink=NullSink()
        if datadir is None
        else ProcessSink(
            ["tar", "-x", "-f", "-", "-C", str(datadir)],
            env=None,
            label="extraction of the base backup",
            describe_error=_tar_error,
        ),
    )
    if verifybackup is not None and datadir is not None:
        proc = subprocess.run(
            [verifybackup, "--no-parse-wal", "--quiet", str(datadir)],
            capture_output=True,
            text=True,
            check=False,
            timeout=3600,
        )
        if proc.returncode != 0:
            raise IntegrityError(
                f"base backup {stored.info.set_time} fails pg_verifybackup: "
                f"{proc.stderr.strip()[-400:]}"
            )
    return stats.stored_bytes


def plan_target(
    store: S3Store,
    prefix: str,
    target: str,
    *,
    verifier: Keyring | None = None,
    trusted: list[str] | None = None,
) -> tuple[walb.RecoveryPlan, list[WalRecord], StoredBase]:
    """The recovery plan for ``target`` from what the bucket holds now, the WAL records and the
    base backup chosen; a target outside the window raises :class:`ConfigurationError`
    (reason ``OutsideRecoverableWindow``, naming the window) before anything is downloaded."""
    try:
        moment = walb.parse_target(target)
    except ValueError as exc:
        raise ConfigurationError(str(exc)) from None
    bases, records = load_archive(store, prefix, verifier=verifier, trusted=trusted)
    try:
        plan = walb.plan_recovery(moment, [b.info for b in bases], records)
    except walb.OutsideWindowError as exc:
        raise ConfigurationError(str(exc), reason=OUTSIDE_WINDOW) from None
    stored = next(b for b in bases if b.info.set_time == plan.base.set_time)
    return plan, records, stored


def _recover_once(
    store: S3Store,
    prefix: str,
    target: str,
    *,
    keyring: Keyring,
    passphrase: str | None,
    workdir: Path,
    run_as: Sequence[str] = (),
    owner: tuple[int, int] | None = None,
    verify_backup: bool = True,
    start_timeout: int = 600,
    verifier: Keyring | None = None,
    trusted: list[str] | None = None,
) -> RecoveryResult:
    """One attempt of :func:`recover`."""
    plan, records, stored = plan_target(store, prefix, target, verifier=verifier, trusted=trusted)
    major = stored.server_version // 10000
    pg_ctl = server_tool("pg_ctl", major)
    verifybackup = pg.pick_tool("pg_verifybackup", major)

    started = time.monotonic()
    root = Path(tempfile.mkdtemp(prefix="pitr-", dir=workdir))
    root.chmod(0o755)
    datadir, wal_dir, socket_dir = root / "data", root / "wal", root / "s"
    for path in (datadir, wal_dir, socket_dir):
        path.mkdir(mode=0o700)
    server = ScratchServer(
        root=root,
        datadir=datadir,
        port=free_port(),
        pg_ctl=pg_ctl,
        log_file=root / "server.log",
        run_as=list(run_as),
        socket_dir=socket_dir,
    )
    try:
        fetched = fetch_verified(
            store,
            prefix,
            plan,
            records,
            stored,
            keyring=keyring,
            passphrase=passphrase,
            wal_dir=wal_dir,
            datadir=datadir,
            verifybackup=verifybackup if verify_backup else None,
        )
        fetch_seconds = time.monotonic() - started
        (root / "pg_hba.conf").write_text(SCRATCH_HBA)
        (root / "pg_ident.conf").write_text("")
        (datadir / "postgresql.conf").touch()  # absent when the source kept it in /etc
        with (datadir / "postgresql.auto.conf").open("a") as fh:
            fh.write(
                _recovery_conf(
                    plan, port=server.port, wal_dir=wal_dir, socket_dir=socket_dir, root=root
                )
            )
        (datadir / "recovery.signal").touch()
        datadir.chmod(0o700)
        if owner is not None:
            _chown_tree(root, owner)
        replay_started = time.monotonic()
        proc = subprocess.run(
            [
                *run_as,
                pg_ctl,
                "-D",
                str(datadir),
                "-l",
                str(server.log_file),
                "-w",
                "-t",
                str(start_timeout),
                "start",
            ],
            capture_output=True,
            text=True,
            check=False,
            timeout=start_timeout + 30,
        )
        if proc.returncode != 0:
            raise DatabaseError(
                f"the scratch server did not finish recovery to {target}: "
                f"{proc.stderr.strip()[-200:]}\n{server.log_tail()}"
            )
        wait_recovered(server, timeout=start_timeout, target=target)
        replay_seconds = time.monotonic() - replay_started
    except BaseException:
        server.close()
        raise
    return RecoveryResult(
        server=server,
        plan=plan,
        wal_files=len(plan.records),
        fetched_bytes=fetched,
        fetch_seconds=round(fetch_seconds, 3),
        replay_seconds=round(replay_seconds, 3),
    )


def recover(
    store: S3Store,
    prefix: str,
    target: str,
    *,
    keyring: Keyring,
    passphrase: str | None,
    workdir: Path,
    run_as: Sequence[str] = (),
    owner: tuple[int, int] | None = None,
    verify_backup: bool = True,
    start_timeout: int = 600,
    verifier: Keyring | None = None,
    trusted: list[str] | None = None,
) -> RecoveryResult:
    """Recover ``prefix``'s archive to ``target`` (RFC 3339 or ``latest``) in a scratch server.

    ``run_as`` prefixes the server commands and ``owner`` owns its files when the runner is root
    (PostgreSQL refuses to run as root); a runner image runs as the postgres user and needs
    neither. The caller closes the returned server.
    """
    for _attempt in range(3):
        try:
            return _recover_once(
                store,
                prefix,
                target,
                keyring=keyring,
                passphrase=passphrase,
                workdir=workdir,
                run_as=run_as,
                owner=owner,
                verify_backup=verify_backup,
                start_timeout=start_timeout,
                verifier=verifier,
                trusted=trusted,
            )
        except Superseded:
            continue  # the segment in progress completed meanwhile: plan again with it
    raise StorageError(f"the WAL under {store.url(prefix)} kept changing while it was fetched")


def server_account() -> tuple[list[str], tuple[int, int] | None]:
    """(command prefix, file owner) for the scratch server: nothing when the runner is not root
    (its image runs as a fixed non-root user), the ``postgres`` account when it is (PostgreSQL
    refuses to run as root)."""
    if os.geteuid() != 0:
        return [], None
    try:
        account = pwd.getpwnam("postgres")
    except KeyError:
        raise ConfigurationError(
            "the runner runs as root and there is no postgres account to run the scratch "
            "server as: run the runner as a non-root user"
        ) from None
    return ["runuser", "-u", "postgres", "--"], (account.pw_uid, account.pw_gid)
