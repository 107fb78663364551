"""Continuous WAL shipping: ``pg_receivewal`` into a local spool, each file streamed to S3.

Why pg_receivewal over the replication protocol rather than an ``archive_command``: it needs from
the user's PostgreSQL only a role with REPLICATION and a pg_hba line, no configuration change and
no restart; the WAL protocol stays PostgreSQL's own code.

Every complete segment goes through the same pipeline as the dumps (SHA-256 -> zstd -> gpg ->
SHA-256 -> S3 multipart), its size is checked in the store, and only then is its record written:
the record is the commit point, so an interrupted upload is never a segment. The segment in
progress (``.partial``) is snapshotted every ``partial_interval`` seconds when it changed and
shipped under its own key, so the recovery point is seconds even when a segment takes hours to
fill; the complete segment supersedes it.

The physical replication slot is the shipper's, not pg_receivewal's: it is advanced only to the
end of what is committed in the bucket. pg_receivewal's own slot feedback would release the
server's copy as soon as the WAL is on local disk, so a receiver that died with unshipped
segments in a lost spool would leave a hole in the archive. Here the server keeps that WAL, and
an empty spool is seeded so pg_receivewal streams again from the slot's segment: receiver
crashes, lost spools and server restarts leave no gap."""

from __future__ import annotations

import contextlib
import os
import re
import shutil
import signal
import subprocess
import threading
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path

from ....builders import wal as walb
from ....clients import postgres as pg
from ....clients.gpg import Keyring
from ....clients.s3 import S3Store
from ....errors import ConfigurationError, IntegrityError, LamassuBackupError
from ....models.wal import WalRecord
from ....runner.stream.pipeline import CHUNK, IterSource, StderrTail, StreamStats, encrypt_to_store
from ..compression import compression_label, compressor_argv
from ..spec import CompressionAlgorithm
from .walinfo import wal_facts

PARTIAL = ".partial"


def file_chunks(path: Path) -> Iterator[bytes]:
    """A file's bytes, a chunk at a time."""
    with path.open("rb") as fh:
        while data := fh.read(CHUNK):
            yield data


@dataclass
class ShipStats:
    """What a shipper did, for logs, metrics and the benchmark."""

    segments: int = 0
    partials: int = 0
    history: int = 0
    plain_bytes: int = 0
    stored_bytes: int = 0
    receiver_starts: int = 0
    last_shipped: str | None = None
    last_commit: datetime | None = None
    errors: list[str] = field(default_factory=list)


class WalShipper:
    """Runs pg_receivewal and ships what it writes; :meth:`run` until ``stop`` is set.

    ``conn`` is a role with REPLICATION; ``prefix`` the policy prefix (``<prefix>/<ns>/<policy>/``).
    """

    def __init__(
        self,
        conn: pg.PgConnection,
        *,
        store: S3Store,
        prefix: str,
        keyring: Keyring,
        recipients: list[str],
        spool: Path,
        slot: str,
        partial_interval: float = 2.0,
        compression_level: int = 1,
        encryption_label: str = "gpg",
        server_major: int | None = None,
        log: Callable[[str], None] | None = None,
    ) -> None:
        self.conn = conn
        self.store = store
        self.prefix = prefix
        self.keyring = keyring
        self.recipients = recipients
        self.spool = spool
        self.slot = slot
        self.partial_interval = partial_interval
        self.compressor = compressor_argv(CompressionAlgorithm.ZSTD, compression_level)
        self.compression = compression_label(CompressionAlgorithm.ZSTD, compression_level)
        self.encryption = encryption_label
        major = server_major or pg.server_version_num(conn) // 10000
        self.receivewal = pg.pick_tool("pg_receivewal", major)
        self.waldump = pg.pick_tool("pg_waldump", major)
        self.log = log or (lambda _msg: None)
        self.stats = ShipStats()
        self._proc: subprocess.Popen[bytes] | None = None
        self._stderr: StderrTail | None = None
        self._shipped: set[str] = set()
        self._partial_seen: dict[str, tuple[int, int]] = {}
        self._partial_keys: dict[str, list[str]] = {}
        self._segment_size = 0
        self._aborted = False
        self._confirmed = 0
        if not re.fullmatch(r"[a-z0-9_]{1,63}", slot):
            raise ConfigurationError(
                f"replication slot name {slot!r}: use lower-case letters, digits and '_' "
                "(at most 63)"
            )
        self.snap_dir = spool.parent / f"{spool.name}.snap"

    # -- the receiver --------------------------------------------------------------------------

    def ensure_slot(self) -> None:
        """Create the physical slot, reserving WAL now (an existing one is kept as it is)."""
        try:
            lsn = pg.slot_restart_lsn(self.conn, self.slot)
            if lsn is None:
                pg.create_physical_slot(self.conn, self.slot)
                lsn = pg.slot_restart_lsn(self.conn, self.slot)
        except LamassuBackupError as exc:
            raise LamassuBackupError(
                f"replication slot {self.slot} on {self.conn.host}:{self.conn.port}: "
                f"{exc.message} (check the credentials; the role needs REPLICATION)",
                reason="SlotFailed",
            ) from None
        self._confirmed = walb.parse_lsn(lsn) if lsn else 0

    def confirm(self, lsn: int) -> None:
        """Advance the slot to ``lsn``: the server may now recycle the WAL before it.

        Called only after the object holding the WAL up to ``lsn`` and its record are committed,
        so the server's copy is released by the bucket's, never by the spool's.
        """
        if lsn <= self._confirmed:
            return
        pg.advance_slot(self.conn, self.slot, walb.format_lsn(lsn))
        self._confirmed = lsn

    @property
    def confirmed_lsn(self) -> int:
        """The end of what the bucket holds (the slot's position): the heartbeat's recovery point."""
        return self._confirmed

    def unshipped_bytes(self) -> int:
        """WAL the server holds for the slot: written but not yet committed to the bucket."""
        return pg.slot_retained_bytes(self.conn, self.slot)

    def _seed_spool(self) -> None:
        """With an empty spool, make pg_receivewal start where the slot (the bucket) is.

        pg_receivewal resumes from the newest file in its directory, else at the server's
        current position, which would leave a gap after a lost spool. A zero-filled
        ``.partial`` of the slot's segment makes it stream that whole segment again (pg_receivewal
        always restarts at a segment's beginning, and the slot kept it on the server).
        """
        self.spool.mkdir(parents=True, exist_ok=True)
        if any(walb.is_segment_name(n.removesuffix(PARTIAL)) for n in os.listdir(self.spool)):
            return
        timeline, size = pg.wal_position(self.conn)
        name = walb.segment_name(timeline, walb.segment_of(self._confirmed, size), size)
        with (self.spool / f"{name}{PARTIAL}").open("wb") as fh:
            fh.truncate(size)

    def start_receiver(self) -> None:
        """Start pg_receivewal (it reconnects by itself when the server restarts).

        It runs without ``--slot``: the slot is the shipper's, advanced by :meth:`confirm` when a
        file is in the bucket; pg_receivewal's own feedback would advance it when the file is
        merely on local disk.
        """
        self._seed_spool()
        self._proc = subprocess.Popen(
            [
                self.receivewal,
                "-D",
                str(self.spool),
                "--status-interval",
                "1",
                "--verbose",
            ],
            env=self.conn.env(),
            stdout=subprocess.DEVNULL,
            stderr=subprocess.PIPE,
            start_new_session=True,
        )
        self._stderr = StderrTail(self._proc.stderr)
        self.stats.receiver_starts += 1

    def receiver_alive(self) -> bool:
        """Whether pg_receivewal runs."""
        return self._proc is not None and self._proc.poll() is None

    def stop_receiver(self) -> None:
        """SIGINT (pg_receivewal flushes and exits cleanly), then SIGKILL if it lingers."""
        proc = self._proc
        if proc is None:
            return
        if proc.poll() is None:
            with contextlib.suppress(ProcessLookupError):
                proc.send_signal(signal.SIGINT)
            try:
                proc.wait(timeout=10)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait()
        self._proc = None

    @property
    def receiver_pid(self) -> int | None:
        """pg_receivewal's pid while it runs (for CPU accounting)."""
        return self._proc.pid if self.receiver_alive() and self._proc else None

    def abort(self) -> None:
        """Die as a crash would: SIGKILL the receiver, no final shipping round (tests, drills)."""
        self._aborted = True
        proc = self._proc
        if proc is not None and proc.poll() is None:
            proc.kill()

    def receiver_errors(self) -> str:
        """The tail of pg_receivewal's stderr (connection errors, slot errors)."""
        return self._stderr.text().decode(errors="replace")[-500:] if self._stderr else ""

    # -- shipping ------------------------------------------------------------------------------

    def _segment_bytes(self, path: Path) -> int:
        size = path.stat().st_size
        if not self._segment_size:
            self._segment_size = size
        return size

    def _upload(
        self, source_chunks: Iterator[bytes] | list[bytes], key: str, label: str
    ) -> StreamStats:
        """Stream one file into ``key``; raise unless the store holds exactly what was sent."""
        upload = self.store.multipart(self.prefix + key)
        stats = encrypt_to_store(
            IterSource(source_chunks, label=label),
            keyring=self.keyring,
            recipients=self.recipients,
            upload=upload,
            compressor=self.compressor,
        )
        info = self.store.head(self.prefix + key)
        if info is None or info.size != stats.stored_bytes:
            raise IntegrityError(
                f"{self.store.url(self.prefix + key)}: stored {stats.stored_bytes} bytes but the "
                f"store holds {'nothing' if info is None else info.size}"
            )
        self.stats.plain_bytes += stats.plain_bytes
        self.stats.stored_bytes += stats.stored_bytes
        return stats

    def _commit_record(self, record: WalRecord, record_key: str) -> None:
        self.store.put_bytes(
            self.prefix + record_key,
            record.model_dump_json(by_alias=True, exclude_none=True).encode(),
            "application/json",
        )

    def ship_segment(self, path: Path) -> WalRecord:
        """Ship one complete segment, then drop the partial snapshot it supersedes."""
        name = path.name
        size = self._segment_bytes(path)
        timeline, segno = walb.parse_segment(name, size)
        key, record_key = walb.wal_keys(name, timeline)
        facts = wal_facts(self.waldump, path.parent, name, segment_end=(segno + 1) * size)
        stats = self._upload(file_chunks(path), key, f"WAL segment {name}")
        record = WalRecord(
            name=name,
            kind="segment",
            timeline=timeline,
            key=key,
            size_bytes=stats.stored_bytes,
            sha256=stats.stored_sha256,
            plaintext_size_bytes=stats.plain_bytes,
            plaintext_sha256=stats.plain_sha256,
            compression=self.compression,
            encryption=self.encryption,
            segment_size=size,
            end_lsn=walb.format_lsn(facts.end_lsn) if facts.end_lsn is not None else None,
            first_commit_time=facts.first_commit,
            last_commit_time=facts.last_commit,
            shipped_at=datetime.now(UTC),
        )
        self._commit_record(record, record_key)
        # The complete segment supersedes every snapshot of it (this run's and earlier runs').
        stale = [
            obj.key
            for obj in self.store.list_keys(self.prefix + walb.partial_prefix(name, timeline))
        ]
        stale.sort(key=lambda k: not k.endswith(".json"))  # the record first: then no reader
        if stale:
            self.store.delete_keys(stale)
        self._partial_keys.pop(name, None)
        self._note(record)
        self.confirm((segno + 1) * size)
        self.stats.segments += 1
        return record

    def ship_partial(self, path: Path) -> WalRecord | None:
        """Snapshot the segment in progress and ship it, when it changed since the last time."""
        name = path.name[: -len(PARTIAL)]
        try:
            st = path.stat()
        except FileNotFoundError:  # pg_receivewal just completed it
            return None
        mark = (st.st_mtime_ns, st.st_size)
        if self._partial_seen.get(name) == mark:
            return None
        self.snap_dir.mkdir(parents=True, exist_ok=True)
        snap = self.snap_dir / name
        try:
            shutil.copyfile(path, snap)
        except FileNotFoundError:
            return None
        try:
            size = self._segment_bytes(snap)
            timeline, _ = walb.parse_segment(name, size)
            facts = wal_facts(self.waldump, self.snap_dir, name, segment_end=None)
            segno = walb.parse_segment(name, size)[1]
            if facts.end_lsn is None or facts.end_lsn <= segno * size:
                return None  # nothing valid yet (a freshly seeded or just-opened segment)
            snapshot = f"{time.time_ns() // 1_000_000:x}"
            key, record_key = walb.wal_keys(name, timeline, partial=True, snapshot=snapshot)
            stats = self._upload(file_chunks(snap), key, f"WAL partial {name}")
        finally:
            snap.unlink(missing_ok=True)
        record = WalRecord(
            name=name,
            kind="partial",
            timeline=timeline,
            key=key,
            size_bytes=stats.stored_bytes,
            sha256=stats.stored_sha256,
            plaintext_size_bytes=stats.plain_bytes,
            plaintext_sha256=stats.plain_sha256,
            compression=self.compression,
            encryption=self.encryption,
            segment_size=size,
            end_lsn=walb.format_lsn(facts.end_lsn) if facts.end_lsn is not None else None,
            first_commit_time=facts.first_commit,
            last_commit_time=facts.last_commit,
            shipped_at=datetime.now(UTC),
        )
        # The complete segment may have landed while this snapshot streamed: never let an
        # older snapshot's record reappear next to it.
        full_record = walb.wal_keys(name, timeline)[1]
        if self.store.head(self.prefix + full_record) is not None:
            self.store.delete_keys([self.prefix + key])
            return None
        self._commit_record(record, record_key)
        self._partial_seen[name] = mark
        # Keep the previous snapshot one more round for a restore that read the old record.
        keys = self._partial_keys.setdefault(name, [])
        keys.append(key)
        if len(keys) > 2:
            self.store.delete_keys([self.prefix + k for k in keys[:-2]])
            del keys[:-2]
        self._note(record)
        self.stats.partials += 1
        if facts.end_lsn is not None:
            self.confirm(facts.end_lsn)
        return record

    def ship_history(self, path: Path) -> None:
        """Ship a timeline history file (small, immutable)."""
        timeline = int(path.name.split(".", 1)[0], 16)
        key = f"{walb.WAL_DIR}{timeline:08X}/{path.name}.zst.gpg"
        record_key = f"{walb.WAL_DIR}{timeline:08X}/{path.name}.json"
        stats = self._upload([path.read_bytes()], key, f"timeline history {path.name}")
        self._commit_record(
            WalRecord(
                name=path.name,
                kind="history",
                timeline=timeline,
                key=key,
                size_bytes=stats.stored_bytes,
                sha256=stats.stored_sha256,
                plaintext_size_bytes=stats.plain_bytes,
                plaintext_sha256=stats.plain_sha256,
                compression=self.compression,
                encryption=self.encryption,
                shipped_at=datetime.now(UTC),
            ),
            record_key,
        )
        self.stats.history += 1

    def _note(self, record: WalRecord) -> None:
        self.stats.last_shipped = record.name
        if record.last_commit_time is not None and (
            self.stats.last_commit is None or record.last_commit_time > self.stats.last_commit
        ):
            self.stats.last_commit = record.last_commit_time

    def _already_shipped(self, name: str, record_key: str) -> bool:
        if name in self._shipped:
            return True
        if self.store.head(self.prefix + record_key) is not None:
            self._shipped.add(name)
            return True
        return False

    def ship_once(self) -> int:
        """Ship every complete file not shipped yet, then the partial; returns files shipped.

        Shipped complete segments are removed from the spool except the newest, which tells a
        restarted pg_receivewal where to resume when no partial file exists.
        """
        shipped = 0
        names = sorted(os.listdir(self.spool)) if self.spool.is_dir() else []
        for name in names:
            if walb.is_history_name(name):
                timeline = int(name.split(".", 1)[0], 16)
                if not self._already_shipped(name, f"{walb.WAL_DIR}{timeline:08X}/{name}.json"):
                    self.ship_history(self.spool / name)
                    self._shipped.add(name)
                    shipped += 1
        complete = [n for n in names if walb.is_segment_name(n)]
        for name in complete:
            path = self.spool / name
            size = self._segment_bytes(path)
            timeline, _ = walb.parse_segment(name, size)
            if not self._already_shipped(name, walb.wal_keys(name, timeline)[1]):
                self.ship_segment(path)
                self._shipped.add(name)
                shipped += 1
        for name in complete[:-1]:
            (self.spool / name).unlink(missing_ok=True)
        for name in names:
            partial = name.endswith(PARTIAL) and walb.is_segment_name(name[: -len(PARTIAL)])
            if partial and self.ship_partial(self.spool / name) is not None:
                shipped += 1
        return shipped

    # -- the loop ------------------------------------------------------------------------------

    def run(self, stop: threading.Event, *, restart_delay: float = 1.0) -> ShipStats:
        """Receive and ship until ``stop`` is set; restarts pg_receivewal when it dies.

        A failed upload is retried on the next round (the file stays in the spool, the slot keeps
        the server's copy); the last error is kept in :attr:`stats`.
        """
        self.ensure_slot()
        try:
            while not stop.is_set() and not self._aborted:
                if not self.receiver_alive():
                    if self._proc is not None:
                        self.log(f"pg_receivewal exited: {self.receiver_errors()}")
                        self._proc = None
                        if stop.wait(restart_delay):
                            break
                    self.start_receiver()
                try:
                    self.ship_once()
                except LamassuBackupError as exc:
                    self.stats.errors.append(exc.message)
                    self.log(f"shipping failed, retrying: {exc.message}")
                except Exception as exc:  # noqa: BLE001 - one bad round must not end shipping
                    self.stats.errors.append(f"{type(exc).__name__}: {exc}")
                    self.log(f"shipping failed, retrying: {type(exc).__name__}: {exc}")
                stop.wait(self.partial_interval)
        finally:
            self.stop_receiver()
            # What pg_receivewal flushed on its way out is shipped now, not at the next start.
            if not self._aborted:
                with contextlib.suppress(LamassuBackupError):
                    self.ship_once()
        return self.stats
