"""The WAL runners: ``runner wal-ship`` (the shipper Deployment's one process), ``runner
base-backup`` (one Job per base backup) and ``runner wal-drop-slot`` (the shipper's slot, once the
shipper is gone).

Both read a :class:`WalRunConfig` as the backup runner reads its :class:`RunnerConfig` (JSON in
an environment variable, credentials in mounted Secret files) and go through the engine in
``components/postgres/wal``. The shipper runs until SIGTERM (the Deployment scaled down,
deleted, or its Pod evicted): it stops pg_receivewal, ships what it flushed, writes a last
heartbeat and exits 0, well inside the Pod's grace period. Nothing is lost by a SIGKILL either:
the slot is advanced only to what the bucket holds.
"""

from __future__ import annotations

import contextlib
import os
import signal
import sys
import threading
import time
from collections import deque
from collections.abc import Callable
from datetime import UTC, datetime
from pathlib import Path
from types import FrameType
from typing import Any

from ...builders import layout
from ...builders import wal as walb
from ...clients import postgres as pg
from ...clients.gpg import Keyring
from ...clients.s3 import S3Store
from ...components.postgres.wal.basebackup import COMPONENT, Signer, take_base_backup
from ...components.postgres.wal.settings import STATUS_KEY, ShipperStatus, WalRunConfig
from ...components.postgres.wal.wal_ship import WalShipper
from ...errors import ConfigurationError, DatabaseError, LamassuBackupError
from ...models.runner import RunnerResult, S3Settings
from ..context import RunnerContext

RECIPIENTS_FIELD = "spec.encryption.gpg.recipientsSecret"
CAUGHT_UP_SLACK = 23
"""Bytes between the server's position and the bucket's that still count as caught up: less
than the smallest WAL record (its 24-byte header), i.e. only alignment and page-header padding."""


def encryption_label(destination: S3Settings) -> str:
    """``gpg`` or ``gpg+<sse>``, as the backup runner records it."""
    return "gpg" if destination.sse == "none" else f"gpg+{destination.sse}"


def _recipients(ctx: RunnerContext, cfg: WalRunConfig, keyring: Keyring) -> list[str]:
    armored = ctx.required(cfg.gpg.recipients_file, f"encryption recipients ({RECIPIENTS_FIELD})")
    return [k.fingerprint for k in keyring.import_recipients(armored, source=RECIPIENTS_FIELD)]


class Heartbeat:
    """Writes :class:`ShipperStatus` to the bucket: lag, liveness, and the caught-up time.

    ``caught_up_at`` is measured, not assumed: the server's WAL position is sampled at each beat,
    and once the bucket's end (the slot) reaches a sample, everything written up to that sample's
    time is recoverable. On an idle server that is "now"; behind a stalled upload it stays put.
    """

    def __init__(
        self,
        shipper: WalShipper,
        store: S3Store,
        cfg: WalRunConfig,
        conn: pg.PgConnection,
        log: Callable[[str], None],
    ) -> None:
        self.shipper = shipper
        self.store = store
        self.cfg = cfg
        self.conn = conn
        self.log = log
        self.samples: deque[tuple[datetime, int]] = deque(maxlen=10_000)
        self.caught_up_at: datetime | None = None
        self.lag: int | None = None

    def sample(self, now: datetime) -> None:
        """Read the server's position and move ``caught_up_at`` to the newest sample reached."""
        try:
            rows = pg.query(self.conn, "postgres", "SELECT pg_current_wal_lsn();", timeout=30)
            current = walb.parse_lsn(rows[0][0])
        except (LamassuBackupError, ValueError, IndexError) as exc:
            self.lag = None
            self.log(f"heartbeat: cannot read the server's WAL position: {exc}")
            return
        self.samples.append((now, current))
        confirmed = self.shipper.confirmed_lsn
        self.lag = max(0, current - confirmed)
        reached = [t for t, lsn in self.samples if lsn <= confirmed + CAUGHT_UP_SLACK]
        if reached:
            self.caught_up_at = max(reached)
            while self.samples and self.samples[0][0] <= self.caught_up_at:
                self.samples.popleft()

    def beat(self) -> None:
        """Sample, then write the heartbeat (a failed write is logged; the next beat retries)."""
        now = datetime.now(UTC)
        self.sample(now)
        stats = self.shipper.stats
        status = ShipperStatus(
            updated_at=now,
            caught_up_at=self.caught_up_at,
            lag_bytes=self.lag,
            receiver_running=self.shipper.receiver_alive(),
            segments=stats.segments,
            partials=stats.partials,
            last_shipped=stats.last_shipped,
            last_error=stats.errors[-1][:300] if stats.errors else None,
            pod=os.environ.get("HOSTNAME"),
        )
        try:
            self.store.put_bytes(
                self.cfg.prefix + STATUS_KEY,
                status.model_dump_json(by_alias=True, exclude_none=True).encode(),
                "application/json",
            )
        except LamassuBackupError as exc:
            self.log(f"heartbeat not written: {exc.message}")

    def loop(self, stop: threading.Event) -> None:
        """Beat every ``statusIntervalSeconds`` until ``stop``."""
        while not stop.wait(self.cfg.status_interval_seconds):
            self.beat()


def ship(cfg: WalRunConfig, ctx: RunnerContext, stop: threading.Event | None = None) -> int:
    """Ship WAL until SIGTERM/SIGINT (or ``stop``); 0 on a clean stop, 1 when it cannot start."""
    stop = stop or threading.Event()

    def log(message: str) -> None:
        stamp = datetime.now(UTC).strftime("%H:%M:%S")
        print(f"{stamp} wal-ship: {ctx.redactor.redact(message)}", file=sys.stderr, flush=True)

    def on_signal(signum: int, frame: FrameType | None) -> None:
        stop.set()

    previous: list[tuple[signal.Signals, Any]] = []
    if threading.current_thread() is threading.main_thread():
        for sig in (signal.SIGTERM, signal.SIGINT):
            previous.append((sig, signal.signal(sig, on_signal)))
    keyring: Keyring | None = None
    try:
        store = ctx.store(cfg.destination)
        store.check_bucket()
        conn = ctx.pg_connection(cfg.postgres)
        major = pg.server_version_num(conn) // 10000
        waldumps = pg.installed_majors("pg_waldump")
        if major not in waldumps:
            # pg_waldump reads only its own major's WAL: a newer one fails on every segment.
            have = ", ".join(str(m) for m in sorted(waldumps)) or "none"
            raise ConfigurationError(
                f"WAL shipping of a PostgreSQL {major} server needs pg_waldump {major}; this "
                f"runner image has {have} (use a runner image with the server's major)",
                reason="UnsupportedServerVersion",
            )
        keyring = ctx.keyring()
        shipper = WalShipper(
            conn,
            store=store,
            prefix=cfg.prefix,
            keyring=keyring,
            recipients=_recipients(ctx, cfg, keyring),
            spool=Path(cfg.spool),
            slot=cfg.slot_name,
            partial_interval=cfg.partial_interval_seconds,
            compression_level=cfg.compression_level,
            encryption_label=encryption_label(cfg.destination),
            server_major=major,
            log=log,
        )
        heartbeat = Heartbeat(shipper, store, cfg, conn, log)
        beats = threading.Thread(target=heartbeat.loop, args=(stop,), name="heartbeat", daemon=True)
        log(
            f"shipping WAL of {cfg.postgres.host}:{cfg.postgres.port} (slot {cfg.slot_name}) to "
            f"{store.url(cfg.prefix + walb.WAL_DIR)}"
        )
        beats.start()
        stats = shipper.run(stop)
        stop.set()
        beats.join(timeout=5)
        heartbeat.beat()
        log(f"stopped: {stats.segments} segments, {stats.partials} partial snapshots shipped")
    except LamassuBackupError as exc:
        log(f"cannot ship WAL ({exc.reason}): {exc.message}")
        return 1
    else:
        return 0
    finally:
        for signum, handler in previous:
            signal.signal(signum, handler)
        if keyring is not None:
            keyring.close()


def _signer(ctx: RunnerContext, cfg: WalRunConfig) -> Signer | None:
    """The manifest signer, as for dump sets (none without signingKeySecret)."""
    found = ctx.signer(cfg.gpg)
    return Signer(*found) if found is not None else None


def base_backup(cfg: WalRunConfig, ctx: RunnerContext) -> tuple[RunnerResult, int]:
    """One base backup into ``basebackups/<setTime>/``; the result and the exit code (0: ok)."""
    started = time.monotonic()
    result = RunnerResult(ok=False, action="base-backup")
    set_time = cfg.set_time or layout.set_time(datetime.now(UTC))
    keyring: Keyring | None = None
    signer: Signer | None = None
    previous = None
    if threading.current_thread() is threading.main_thread():
        # pg_basebackup runs in the pipeline; SIGTERM ends the run without a manifest, so the
        # set is incomplete by definition (exit 1), as for a dump.
        previous = signal.signal(signal.SIGTERM, signal.default_int_handler)
    try:
        store = ctx.store(cfg.destination)
        store.check_bucket()
        conn = ctx.pg_connection(cfg.postgres)
        keyring = ctx.keyring()
        recipients = _recipients(ctx, cfg, keyring)
        signer = _signer(ctx, cfg)
        info, manifest = take_base_backup(
            conn,
            store=store,
            prefix=cfg.prefix,
            keyring=keyring,
            recipients=recipients,
            set_time=set_time,
            namespace=cfg.namespace,
            policy=cfg.policy,
            compression_level=cfg.compression_level,
            encryption_label=encryption_label(cfg.destination),
            signer=signer,
        )
        result.ok = True
        result.components[COMPONENT] = "Completed"
        result.manifest_key = cfg.prefix + walb.base_backup_prefix(set_time) + layout.MANIFEST
        result.size_bytes = manifest.total_size()
        result.evidence = {
            "setTime": set_time,
            "startLsn": info.start_lsn,
            "stopLsn": info.stop_lsn,
            "startWal": info.start_wal,
            "stopTime": info.stop_time.isoformat(),
            "timeline": info.timeline,
        }
    except LamassuBackupError as exc:
        result.error = ctx.redactor.redact(exc.message)
        result.reason = exc.reason
        result.components[COMPONENT] = f"Failed: {exc.reason}"
    except KeyboardInterrupt:
        result.error = "interrupted (SIGTERM): no manifest written, the base backup is incomplete"
        result.reason = "Interrupted"
        result.components[COMPONENT] = "Failed: Interrupted"
    finally:
        if previous is not None:
            signal.signal(signal.SIGTERM, previous)
        if signer is not None:
            signer.keyring.close()
        if keyring is not None:
            with contextlib.suppress(Exception):
                keyring.close()
    result.seconds = round(time.monotonic() - started, 3)
    return result, 0 if result.ok else 1


ACTIVE_WAIT_SECONDS = 60.0
"""How long the slot drop waits for a process using the slot to let it go (a shipper's last
``pg_replication_slot_advance``) before it fails, naming the process."""


def drop_slot(
    cfg: WalRunConfig, ctx: RunnerContext, *, wait: float = ACTIVE_WAIT_SECONDS, poll: float = 2.0
) -> tuple[RunnerResult, int]:
    """Drop the shipper's physical slot ``cfg.slot_name``: once the shipper is gone the slot only
    makes the server keep WAL forever. Only a physical slot of that name is dropped, and only
    while no process uses it; an absent slot is fine (dropped before), a logical one of that
    name is not the shipper's and is left alone. The outcome is ``evidence.outcome``: Dropped,
    Absent or NotPhysical; exit 1 when the server refused or the slot stayed in use."""
    started = time.monotonic()
    result = RunnerResult(ok=False, action="wal-drop-slot")
    where = f"{cfg.postgres.host}:{cfg.postgres.port}"
    try:
        conn = ctx.pg_connection(cfg.postgres)
        deadline = time.monotonic() + wait
        while True:
            info = pg.slot_info(conn, cfg.slot_name)
            if info is None:
                outcome = "Absent"
                break
            if info.slot_type != "physical":
                outcome = "NotPhysical"
                break
            if not info.active and pg.drop_inactive_physical_slot(conn, cfg.slot_name):
                outcome = "Dropped"
                break
            if time.monotonic() >= deadline:
                raise DatabaseError(
                    f"replication slot {cfg.slot_name} on {where} is still in use (process "
                    f"{info.active_pid or '?'}) after {wait:.0f} s: something other than the "
                    "stopped shipper streams through it; stop it, or keep the slot",
                    reason="SlotInUse",
                )
            time.sleep(poll)
        result.ok = True
        result.evidence = {"slot": cfg.slot_name, "server": where, "outcome": outcome}
    except LamassuBackupError as exc:
        result.error = ctx.redactor.redact(exc.message)
        result.reason = exc.reason
    result.seconds = round(time.monotonic() - started, 3)
    return result, 0 if result.ok else 1
