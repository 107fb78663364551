"""Point-in-time recovery on real PostgreSQL 15, the real S3 server and real GnuPG.

One private cluster (1 MiB WAL segments, so segments close in seconds; a replication role in
pg_hba) takes a row a second for the whole module while the shipper streams its WAL. The tests
run in file order over that one history: each adds an event (a base backup, a shipper restart,
a server restart, finally the server's destruction) and checks what a restore gets back.
Commit times come from ``track_commit_timestamp``: they are what recovery_target_time compares.
"""

from __future__ import annotations

import contextlib
import os
import pwd
import shutil
import signal
import tempfile
import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest

from lamassu_backup.builders import layout
from lamassu_backup.builders import wal as walb
from lamassu_backup.clients import postgres as pgc
from lamassu_backup.clients.gpg import Keyring
from lamassu_backup.clients.s3 import MIB, S3Connection, S3Store
from lamassu_backup.components.postgres.wal import pitr
from lamassu_backup.components.postgres.wal.basebackup import Signer, take_base_backup
from lamassu_backup.components.postgres.wal.pitr_swap import bring_into_live
from lamassu_backup.components.postgres.wal.wal_ship import WalShipper
from lamassu_backup.errors import (
    ConfigurationError,
    DatabaseError,
    IntegrityError,
    LamassuBackupError,
    SignatureError,
)
from lamassu_backup.models.runner import RestoreRunConfig
from lamassu_backup.models.wal import WalRecord
from lamassu_platform.gpg import GpgKeys
from lamassu_platform.postgres import PostgresServer
from lamassu_platform.s3 import S3Server

from .conftest import SecretDir
from .test_restore_runner import run_restore

pytestmark = [pytest.mark.platform, pytest.mark.timeout(300)]

BUCKET = "lamassu-pitr"
PREFIX = "prod/lamassu/lamassu/"
REPL_USER = "walship"
REPL_PASSWORD = "walship-test-password"
RECOVERY_POINT_TARGET = 15.0
PARTIAL_INTERVAL = 1.0


class WalServer(PostgresServer):
    """The platform's server with 1 MiB WAL segments (an initdb option)."""

    def _run_server_tool(self, argv: Any, *, timeout: float = 120) -> str:
        if Path(argv[0]).name == "initdb":
            argv = [*argv, "--wal-segsize=1"]
        return super()._run_server_tool(argv, timeout=timeout)


@dataclass
class Writer:
    """Inserts a row a second and records each row's commit time."""

    server: PostgresServer
    committed: dict[int, datetime] = field(default_factory=dict)
    stop: threading.Event = field(default_factory=threading.Event)
    paused: threading.Event = field(default_factory=threading.Event)
    n: int = 0

    def run(self) -> None:
        while not self.stop.is_set():
            if not self.paused.is_set():
                self.n += 1
                with contextlib.suppress(RuntimeError, OSError):
                    n = int(self.n)
                    sql = f"INSERT INTO ticks(n) VALUES ({n}); SELECT pg_xact_commit_timestamp(xmin) FROM ticks WHERE n = {n};"  # noqa: S608 - n is an int
                    out = self.server.psql(
                        sql,
                        "ca",
                        timeout=10,
                    ).strip()
                    self.committed[self.n] = datetime.fromisoformat(out).astimezone(UTC)
            self.stop.wait(1.0)


@dataclass
class Pitr:
    """The shared history: server, writer, shipper, store and keys."""

    server: WalServer
    store: S3Store
    keyring: Keyring
    recipients: list[str]
    decrypt: Keyring
    trusted: list[str]
    spool: Path
    workdir: Path
    writer: Writer
    shipper: WalShipper | None = None
    ship_stop: threading.Event = field(default_factory=threading.Event)
    ship_thread: threading.Thread | None = None
    base_stop: datetime | None = None
    writer_thread: threading.Thread | None = None

    def repl_conn(self) -> pgc.PgConnection:
        return pgc.PgConnection(
            host=self.server.host,
            port=self.server.port,
            user=REPL_USER,
            password=REPL_PASSWORD,
            sslmode="disable",
        )

    def admin_conn(self) -> pgc.PgConnection:
        return pgc.PgConnection(
            host=self.server.host,
            port=self.server.port,
            user=self.server.superuser,
            password=self.server.password,
            sslmode="disable",
        )

    def start_shipper(self) -> WalShipper:
        self.ship_stop = threading.Event()
        self.shipper = WalShipper(
            self.repl_conn(),
            store=self.store,
            prefix=PREFIX,
            keyring=self.keyring,
            recipients=self.recipients,
            spool=self.spool,
            slot="lamassu_backup",
            partial_interval=PARTIAL_INTERVAL,
        )
        self.ship_thread = threading.Thread(
            target=self.shipper.run, args=(self.ship_stop,), daemon=True
        )
        self.ship_thread.start()
        return self.shipper

    def stop_shipper(self) -> None:
        self.ship_stop.set()
        if self.ship_thread is not None:
            self.ship_thread.join(timeout=60)
            assert not self.ship_thread.is_alive()

    def window_until(self) -> datetime | None:
        bases, records = pitr.load_archive(self.store, PREFIX)
        return walb.recovery_window([b.info for b in bases], records).recoverable_until

    def wait_shipped(self, moment: datetime, timeout: float = 30) -> None:
        """Until the shipped WAL holds a commit after ``moment``."""
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            until = self.window_until()
            if until is not None and until > moment:
                return
            time.sleep(0.5)
        raise AssertionError(f"no shipped commit after {moment} within {timeout}s")

    def recover(self, target: str) -> pitr.RecoveryResult:
        pw = pwd.getpwnam("postgres")
        as_root = os.geteuid() == 0
        return pitr.recover(
            self.store,
            PREFIX,
            target,
            keyring=self.decrypt,
            passphrase=None,
            workdir=self.workdir,
            run_as=["runuser", "-u", "postgres", "--"] if as_root else [],
            owner=(pw.pw_uid, pw.pw_gid) if as_root else None,
            verifier=self.decrypt,
            trusted=self.trusted,
        )

    def restored_rows(self, result: pitr.RecoveryResult) -> list[int]:
        conn = result.server.connection(self.server.superuser, self.server.password)
        try:
            rows = pgc.query(conn, "ca", "SELECT n FROM ticks ORDER BY n;")
        except DatabaseError as exc:
            raise AssertionError(f"{exc.message}\n{result.server.log_tail(40)}") from None
        return [int(r[0]) for r in rows]

    def chain_gaps(self) -> list[str]:
        bases, records = pitr.load_archive(self.store, PREFIX)
        chain = walb.build_chain(records)
        assert chain is not None
        usable, reasons = walb.usable_base_backups([b.info for b in bases], chain)
        assert usable, reasons
        first = walb.parse_segment(usable[0].start_wal, chain.segment_size)[1]
        return [
            walb.segment_name(chain.timeline, n, chain.segment_size) for n in chain.missing(first)
        ]


@pytest.fixture(scope="module")
def history(s3: S3Server, gpg_keys: GpgKeys, kms_key: str) -> Iterator[Pitr]:
    # The server runs as the postgres user: its files and the scratch servers' must be
    # reachable by it, so they live in a private 0755 directory outside pytest's 0700 tree.
    base = Path(tempfile.mkdtemp(prefix="lamassu-pitr-"))
    base.chmod(0o755)
    server = WalServer(
        base / "live",
        settings={
            "full_page_writes": "on",
            "track_commit_timestamp": "on",
            "wal_level": "replica",
            "max_wal_senders": "5",
            "max_replication_slots": "5",
            # Small, so a checkpoint removes old segments: only the slot keeps them for us.
            "min_wal_size": "2MB",
            "max_wal_size": "4MB",
        },
    )
    s3.create_bucket(BUCKET)
    store = S3Store(
        S3Connection(
            bucket=BUCKET,
            region=s3.region,
            endpoint=s3.endpoint,
            force_path_style=True,
            access_key_id=s3.access_key,
            secret_access_key=s3.secret_key,
            sse="aws:kms",
            kms_key_id=kms_key,
            part_size=5 * MIB,
        )
    )
    keyring = Keyring()
    recipients = [
        k.fingerprint
        for k in keyring.import_recipients(gpg_keys.recipients_asc.read_text(), source="recipients")
    ]
    decrypt = Keyring()
    decrypt.import_secret(gpg_keys.decryption_key_asc.read_text(), source="decryption key")
    signing = Keyring()
    signer_key = next(
        k
        for k in signing.import_secret(gpg_keys.signing_key_asc.read_text(), source="signing key")
        if k.can_sign
    )
    trusted = [
        k.fingerprint
        for k in decrypt.import_public(gpg_keys.signing_public_asc.read_text(), source="signer")
    ]
    workdir = base / "scratch"
    workdir.mkdir(mode=0o755)
    server.start()
    hba = server.pgdata / "pg_hba.conf"
    hba.write_text(hba.read_text() + "host  replication all 127.0.0.1/32 scram-sha-256\n")
    server.create_role(REPL_USER, REPL_PASSWORD)
    server.psql(f"ALTER ROLE {REPL_USER} REPLICATION; SELECT pg_reload_conf();")
    server.create_database("ca")
    server.psql(
        "CREATE TABLE ticks (n integer PRIMARY KEY, at timestamptz DEFAULT now());"
        "CREATE TABLE filler (id integer, pad text);",
        "ca",
    )
    writer = Writer(server)
    state = Pitr(
        server=server,
        store=store,
        keyring=keyring,
        recipients=recipients,
        decrypt=decrypt,
        trusted=trusted,
        spool=base / "spool",
        workdir=workdir,
        writer=writer,
    )
    writer_thread = threading.Thread(target=writer.run, daemon=True)
    state.writer_thread = writer_thread
    try:
        state.start_shipper()
        writer_thread.start()
        time.sleep(3)
        backup, _ = take_base_backup(
            state.admin_conn(),
            store=store,
            prefix=PREFIX,
            keyring=keyring,
            recipients=recipients,
            set_time=layout.set_time(datetime.now(UTC)),
            namespace="lamassu",
            policy="lamassu",
            signer=Signer(signing, signer_key.fingerprint),
        )
        state.base_stop = backup.stop_time
        yield state
    finally:
        writer.stop.set()
        writer_thread.join(timeout=20)
        state.stop_shipper()
        keyring.close()
        decrypt.close()
        signing.close()
        if os.environ.get("LAMASSU_KEEP_PITR"):
            print(f"kept {base}: {server.log_file}")
            server.stop()
        else:
            server.close()
            shutil.rmtree(base, ignore_errors=True)


def test_base_backup_is_a_committed_set_with_the_server_facts(history: Pitr) -> None:
    bases, _ = pitr.load_archive(history.store, PREFIX)
    assert len(bases) == 1
    info = bases[0].info
    assert info.timeline == 1
    assert info.segment_size == 1024 * 1024
    assert walb.parse_lsn(info.stop_lsn) > walb.parse_lsn(info.start_lsn)
    assert info.start_wal in info.backup_label
    assert info.start_time <= info.stop_time
    sidecar = history.store.get_bytes(
        PREFIX + walb.base_backup_prefix(info.set_time) + "base.tar.sha256"
    ).decode()
    assert sidecar == f"{bases[0].artifact.plaintext_sha256}  base.tar\n"
    # Signed like a dump set: an altered manifest (an earlier stop time would widen the window)
    # is refused before anything is planned from it.
    pitr.load_archive(history.store, PREFIX, verifier=history.decrypt, trusted=history.trusted)
    key = PREFIX + walb.base_backup_prefix(info.set_time) + layout.MANIFEST
    original = history.store.get_bytes(key)
    stop = info.stop_time.isoformat().replace("+00:00", "Z")
    assert stop.encode() in original
    history.store.put_bytes(key, original.replace(stop.encode(), b"2026-01-01T00:00:00Z"))
    try:
        with pytest.raises(SignatureError):
            pitr.load_archive(
                history.store, PREFIX, verifier=history.decrypt, trusted=history.trusted
            )
    finally:
        history.store.put_bytes(key, original)


def test_a_refused_replication_login_names_the_fix_and_not_the_password(history: Pitr) -> None:
    wrong = "not-the-walship-password-4711"
    conn = pgc.PgConnection(
        host=history.server.host,
        port=history.server.port,
        user=REPL_USER,
        password=wrong,
        sslmode="disable",
    )
    shipper = WalShipper(
        conn,
        store=history.store,
        prefix=PREFIX,
        keyring=history.keyring,
        recipients=history.recipients,
        spool=history.workdir / "never",
        slot="lamassu_backup",
        server_major=15,
    )
    with pytest.raises(LamassuBackupError) as caught:
        shipper.ensure_slot()
    assert caught.value.reason == "SlotFailed"
    assert "password authentication failed" in caught.value.message
    assert "REPLICATION" in caught.value.message
    assert wrong not in caught.value.message


def test_target_outside_the_window_is_refused_naming_it(history: Pitr) -> None:
    assert history.base_stop is not None
    history.wait_shipped(history.base_stop)
    # A moment the database had rows, but before the base backup ended: nothing can reach it.
    first_commit = min(history.writer.committed.values())
    assert first_commit < history.base_stop
    before = first_commit.isoformat()
    after = (datetime.now(UTC) + timedelta(hours=1)).isoformat()
    for target, side in (
        (before, "before the end of the oldest base backup"),
        (after, "after the last shipped commit"),
    ):
        with pytest.raises(ConfigurationError) as caught:
            history.recover(target)
        message = caught.value.message
        assert caught.value.reason == "OutsideRecoverableWindow"
        assert side in message
        assert f"from {history.base_stop.isoformat()} until " in message
    assert not list(history.workdir.iterdir()), "a refused restore must not start anything"
    with pytest.raises(ConfigurationError, match="RFC 3339"):
        history.recover("2026-12-01 10:00:00")  # no offset: ambiguous, refused


def test_restore_to_a_time_between_two_writes_has_exactly_the_rows_committed_by_then(
    history: Pitr,
) -> None:
    assert history.base_stop is not None
    committed = history.writer.committed
    time.sleep(4)
    after_base = sorted((n, t) for n, t in committed.items() if t > history.base_stop)
    (n1, t1), (n2, t2) = after_base[1], after_base[2]
    target = t1 + (t2 - t1) / 2
    history.wait_shipped(t2)
    result = history.recover(target.isoformat())
    try:
        rows = history.restored_rows(result)
        assert rows == sorted(n for n, t in committed.items() if t <= target)
        assert n1 in rows
        assert n2 not in rows
        assert result.plan.target_time == target
    finally:
        result.server.close()


def test_a_recovery_is_brought_into_live_by_verify_then_swap(history: Pitr) -> None:
    committed = history.writer.committed
    recent = sorted((n, t) for n, t in committed.items())[-3:]
    (_, t1), (_, t2) = recent[0], recent[1]
    target = t1 + (t2 - t1) / 2
    history.wait_shipped(t2)
    result = history.recover(target.isoformat())
    try:
        kept, evidence = bring_into_live(
            history.admin_conn(),
            result.server.connection(history.server.superuser, history.server.password),
            ["ca"],
            suffix="pitr1",
            store=history.store,
            keyring=history.decrypt,
            scratch_dir=history.workdir,
        )
    finally:
        result.server.close()
    swapped = datetime.now(UTC)
    expected = sorted(n for n, t in committed.items() if t <= target)
    live = {int(r[0]) for r in history.server.rows("SELECT n FROM ticks;", "ca")}
    undone = {n for n, t in list(committed.items()) if target < t <= swapped and n not in live}
    assert set(expected) <= live
    assert (
        not {n for n, t in committed.items() if target < t < swapped - timedelta(seconds=2)} & live
    )
    assert kept == ["ca__pre_restore_pitr1"]
    assert evidence[0]["rows"] == len(expected)
    before = int(history.server.psql("SELECT count(*) FROM ticks;", "ca__pre_restore_pitr1"))
    assert before > len(expected), "the previous database is kept aside, whole"
    for n in undone:  # the live history no longer has them: later restores must not either
        committed.pop(n, None)


# -- the restore runner's point-in-time steps (what a LamassuRestore's Jobs run) -----------------


@dataclass
class RunnerSetup:
    """What a runner Job gets: the store, the keys, the live server, as files."""

    history: Pitr
    secrets: SecretDir
    gpg_keys: GpgKeys
    s3: S3Server
    kms_key: str
    tmp: Path

    def config(self, at: str, *, mode: str = "InPlace", name: str = "pitr") -> RestoreRunConfig:
        put, server = self.secrets.put, self.history.server
        return RestoreRunConfig.model_validate(
            {
                "namespace": "lamassu",
                "restore": name,
                "mode": mode,
                "source": {
                    "bucket": BUCKET,
                    "region": self.s3.region,
                    "endpoint": self.s3.endpoint,
                    "forcePathStyle": True,
                    "accessKeyIdFile": put("s3-id", self.s3.access_key),
                    "secretAccessKeyFile": put("s3-secret", self.s3.secret_key),
                    "sse": "aws:kms",
                    "kmsKeyId": self.kms_key,
                    "partSizeMib": 5,
                },
                "setPrefix": PREFIX,
                "components": ["postgres"],
                "decryptionKeyFile": put(
                    "decryption.asc", self.gpg_keys.decryption_key_asc.read_bytes()
                ),
                "signerKeyFile": put("signer.asc", self.gpg_keys.signing_public_asc.read_bytes()),
                "postgres": {
                    "host": server.host,
                    "port": server.port,
                    "sslMode": "disable",
                    "usernameFile": put("pg-user", server.superuser),
                    "passwordFile": put("pg-password", server.password),
                },
                "pitr": {"archivePrefix": PREFIX, "pointInTime": at, "databases": ["ca"]},
            }
        )

    def run(
        self, cfg: RestoreRunConfig, step: str, **overrides: Any
    ) -> tuple[int, dict[str, Any], str]:
        # The scratch server runs as the postgres user: its files go under the shared 0755 area.
        env = {"LAMASSU_SCRATCH": str(self.history.workdir)}
        return run_restore(cfg, tmp=self.tmp, step=step, env=env, **overrides)


@pytest.fixture
def runner(
    history: Pitr,
    secrets: SecretDir,
    gpg_keys: GpgKeys,
    s3: S3Server,
    kms_key: str,
    tmp_path: Path,
) -> RunnerSetup:
    return RunnerSetup(history, secrets, gpg_keys, s3, kms_key, tmp_path)


def between_recent_writes(history: Pitr) -> tuple[datetime, int, int]:
    """A moment between two recent commits (after any earlier swap), shipped."""
    time.sleep(3)
    recent = sorted(history.writer.committed.items())[-3:]
    (n1, t1), (n2, t2) = recent[0], recent[1]
    history.wait_shipped(t2)
    return t1 + (t2 - t1) / 2, n1, n2


def live_ticks(history: Pitr) -> list[int]:
    return sorted(int(r[0]) for r in history.server.rows("SELECT n FROM ticks;", "ca"))


def forget_undone(history: Pitr) -> None:
    """Rows an in-place restore undid are no longer the live history: later tests must not
    expect them."""
    live = set(live_ticks(history))
    for n in [n for n in history.writer.committed if n not in live]:
        history.writer.committed.pop(n, None)


def damaged_segment(history: Pitr, target: datetime | None) -> tuple[WalRecord, str, bytes, bytes]:
    """A complete segment a recovery to ``target`` needs: its record, key, bytes, and those
    bytes with one flipped."""
    bases, records = pitr.load_archive(history.store, PREFIX)
    plan = walb.plan_recovery(target, [b.info for b in bases], records)
    victim = next(r for r in plan.records if r.kind == "segment")
    key = PREFIX + victim.key
    original = history.store.get_bytes(key)
    damaged = bytearray(original)
    damaged[len(damaged) // 2] ^= 0xFF
    return victim, key, original, bytes(damaged)


def test_the_runner_refuses_a_target_outside_the_window_before_anything(
    runner: RunnerSetup,
) -> None:
    history = runner.history
    assert history.base_stop is not None
    before = min(history.writer.committed.values()).isoformat()
    after = (datetime.now(UTC) + timedelta(hours=1)).isoformat()
    databases = history.server.databases()
    for at, side, steps in (
        (after, "after the last shipped commit", [("plan", "InPlace"), ("restore", "InPlace")]),
        (
            before,
            "before the end of the oldest base backup",
            [("plan", "InPlace"), ("restore", "Drill")],
        ),
    ):
        for step, mode in steps:
            code, result, stderr = runner.run(
                runner.config(at, mode=mode), step, swap_suffix="refused"
            )
            assert code == 1, (result, stderr)
            assert result["reason"] == "OutsideRecoverableWindow"
            assert f"spec.source.pointInTime {at}" in result["error"]
            assert side in result["error"]
            assert f"from {history.base_stop.isoformat()} until " in result["error"]
    assert history.server.databases() == databases, "nothing created, renamed or dropped"
    assert not list(history.workdir.iterdir()), "no scratch server was started"


def test_the_runner_restores_in_place_to_a_time_between_two_writes(runner: RunnerSetup) -> None:
    """Plan, restore and finalize as the LamassuRestore's Jobs run them; the target is after the
    previous in-place restore's swap, so this recovers through it: the archive went on, on the
    same prefix and timeline, and stays restorable."""
    history = runner.history
    target, n1, n2 = between_recent_writes(history)
    cfg = runner.config(target.isoformat(), name="pitr-inplace")
    code, result, stderr = runner.run(cfg, "plan")
    assert code == 0, (result, stderr)
    planned = result["evidence"]["pitr"]
    assert planned["target"] == target.isoformat()
    assert planned["baseBackup"]
    assert history.base_stop is not None
    assert planned["recoverableFrom"] == history.base_stop.isoformat()
    assert planned["verifiedBytes"] > 0
    assert [p["target"] for p in result["evidence"]["plan"]] == ["database ca"]
    history.writer.paused.set()
    time.sleep(1.5)
    try:
        expected = sorted(n for n, t in history.writer.committed.items() if t <= target)
        code, result, stderr = runner.run(cfg, "restore", swap_suffix="pitrrun")
        assert code == 0, (result, stderr)
        live = live_ticks(history)
        assert live == expected
        assert n1 in live
        assert n2 not in live
        evidence = result["evidence"]
        assert evidence["kept"] == ["ca__pre_restore_pitrrun"]
        assert evidence["postgres"]["ca"]["rows"] >= len(expected)
        assert evidence["pitr"]["rows"] == evidence["postgres"]["ca"]["rows"]
        assert "same prefix and timeline" in evidence["pitr"]["archiveAfter"]
        assert result["components"] == {"postgres": "Completed"}
        print(
            f"in-place point-in-time restore: {evidence['recoveryTimeSeconds']} s "
            f"(fetch {evidence['pitr']['fetchSeconds']} s, replay "
            f"{evidence['pitr']['replaySeconds']} s, {evidence['pitr']['walFiles']} WAL files)"
        )
        code, result, stderr = runner.run(cfg, "finalize", swap_suffix="pitrrun")
        assert code == 0, (result, stderr)
        assert "ca__pre_restore_pitrrun" not in history.server.databases()
    finally:
        forget_undone(history)
        history.writer.paused.clear()
    assert not [d for d in history.server.databases() if d.endswith("__restoring")]
    assert not list(history.workdir.iterdir()), "the scratch server and its files are gone"


def test_a_point_in_time_drill_recovers_checks_and_tears_down(runner: RunnerSetup) -> None:
    history = runner.history
    target, _, _ = between_recent_writes(history)
    before = history.server.databases()
    code, result, stderr = runner.run(
        runner.config(target.isoformat(), mode="Drill", name="pitr-drill"), "restore"
    )
    assert code == 0, (result, stderr)
    evidence = result["evidence"]
    expected = [n for n, t in history.writer.committed.items() if t <= target]
    assert evidence["pitr"]["rows"] >= len(expected)
    assert evidence["pitr"]["target"] == target.isoformat()
    assert evidence["recoveryTimeSeconds"] > 0
    assert evidence["teardown"] == {"left": []}
    assert result["components"] == {"postgres": "Verified"}
    assert history.server.databases() == before, "the drill copies are gone"
    assert not list(history.workdir.iterdir())


def test_a_corrupted_wal_object_fails_the_runner_before_the_swap(runner: RunnerSetup) -> None:
    history = runner.history
    target, _, _ = between_recent_writes(history)
    victim, key, original, damaged = damaged_segment(history, target)
    cfg = runner.config(target.isoformat(), name="pitr-corrupt")
    history.writer.paused.set()
    time.sleep(1.5)
    try:
        live_before = live_ticks(history)
        databases = history.server.databases()
        history.store.put_bytes(key, damaged)
        for step in ("plan", "restore"):  # the plan refuses it; a restore run anyway too
            code, result, stderr = runner.run(cfg, step, swap_suffix="corrupt")
            assert code == 1, (step, result, stderr)
            assert result["reason"] == "IntegrityCheckFailed"
            assert victim.key in result["error"]
            assert "changed" not in result["evidence"]
        assert live_ticks(history) == live_before, "the live database is unchanged"
        assert history.server.databases() == databases
    finally:
        history.store.put_bytes(key, original)
        history.writer.paused.clear()
    assert not list(history.workdir.iterdir()), "no scratch server was left"


def test_a_corrupted_segment_fails_the_restore_on_fetch_before_any_server_starts(
    history: Pitr,
) -> None:
    victim, key, original, damaged = damaged_segment(history, None)
    history.store.put_bytes(key, damaged)
    live_before = len(history.writer.committed)
    try:
        with pytest.raises(IntegrityError) as caught:
            history.recover("latest")
        assert victim.key in caught.value.message
        assert "altered or corrupted" in caught.value.message
    finally:
        history.store.put_bytes(key, original)
    assert not list(history.workdir.iterdir()), "the scratch area must be gone, no server started"
    time.sleep(1.5)
    assert len(history.writer.committed) > live_before, "the live server kept taking writes"


def test_the_stream_survives_its_own_crash_and_a_lost_spool_without_a_gap(
    history: Pitr, monkeypatch: pytest.MonkeyPatch
) -> None:
    shipper = history.shipper
    assert shipper is not None
    assert shipper.unshipped_bytes() < 2 * 1024 * 1024, "the slot follows the bucket"
    # Uploads stall (the store is unreachable) while pg_receivewal keeps receiving: complete
    # segments pile up in the spool, on local disk only.
    monkeypatch.setattr(shipper, "ship_once", lambda: 0)
    stalled_at = datetime.now(UTC)
    for _ in range(4):
        history.server.psql(
            "INSERT INTO filler SELECT g, repeat('x', 400) FROM generate_series(1, 2500) g;"
            "SELECT pg_switch_wal();",
            "ca",
        )
    deadline = time.monotonic() + 20
    while sum(walb.is_segment_name(p.name) for p in history.spool.iterdir()) < 4:
        assert time.monotonic() < deadline, "pg_receivewal did not receive the segments"
        time.sleep(0.2)
    # Then the shipper dies as its Pod would (no last round) and the spool goes with it; a
    # checkpoint removes every segment no slot holds.
    shipper.abort()
    history.stop_shipper()
    shutil.rmtree(history.spool)
    history.server.psql("CHECKPOINT;")
    slot = history.server.psql(
        "SELECT wal_status FROM pg_replication_slots WHERE slot_name = 'lamassu_backup';"
    ).strip()
    assert slot == "extended", "the server keeps more than max_wal_size, for the slot only"
    held, oldest = history.server.psql(
        "SELECT pg_walfile_name(restart_lsn + 1), (SELECT min(name) FROM pg_ls_waldir()) "
        "FROM pg_replication_slots WHERE slot_name = 'lamassu_backup';"
    ).split()
    assert oldest <= held, "the server kept every segment from the slot's position on"
    restarted = history.start_shipper()
    history.wait_shipped(stalled_at + timedelta(seconds=2))
    assert history.chain_gaps() == []
    assert restarted.stats.segments >= 4, "the segments only the lost spool had were shipped"


def test_the_stream_survives_a_server_restart_without_a_gap(history: Pitr) -> None:
    history.writer.paused.set()
    history.server.stop()
    time.sleep(1)
    history.server.start()
    restarted = datetime.now(UTC)
    history.writer.paused.clear()
    history.wait_shipped(restarted, timeout=45)  # pg_receivewal retries every 5 s
    assert history.chain_gaps() == []


def test_latest_after_the_server_is_destroyed_loses_at_most_the_recovery_point_target(
    history: Pitr,
) -> None:
    # Steady writes into a fresh segment: 1 MiB takes far longer than this to fill, so only the
    # partial snapshots can bring these rows back.
    history.server.psql("SELECT pg_switch_wal();")
    time.sleep(6)
    # The disaster: the server and its files, and the shipper with it (no final round).
    history.writer.stop.set()
    assert history.writer_thread is not None
    history.writer_thread.join(timeout=20)
    pid = history.server.postmaster_pid()
    assert pid is not None
    os.killpg(pid, signal.SIGKILL)
    destroyed = datetime.now(UTC)
    history.ship_stop.set()
    assert history.shipper is not None
    history.shipper.abort()
    if history.ship_thread is not None:
        history.ship_thread.join(timeout=30)
    shutil.rmtree(history.server.pgdata, ignore_errors=True)
    committed = dict(history.writer.committed)
    result = history.recover("latest")
    try:
        rows = history.restored_rows(result)
    finally:
        result.server.close()
    assert rows == sorted(n for n in committed if n <= rows[-1]), (
        "a restore to latest must hold every row committed up to its newest one"
    )
    newest_restored = committed[rows[-1]]
    last_committed = max(t for t in committed.values() if t <= destroyed)
    lost_seconds = (last_committed - newest_restored).total_seconds()
    print(
        f"recovery point: lost {lost_seconds:.1f} s "
        f"({len([n for n in committed if n > rows[-1]])} rows) after destruction"
    )
    assert lost_seconds <= RECOVERY_POINT_TARGET
    # The design's own bound: a snapshot every PARTIAL_INTERVAL, plus one upload.
    assert lost_seconds <= 3 * PARTIAL_INTERVAL + 1
