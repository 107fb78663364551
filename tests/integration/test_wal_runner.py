"""The WAL runner commands as the operator's Pods run them (``lamassu-backup runner wal-ship``,
``runner base-backup`` and ``runner wal-drop-slot``, configured by ``LAMASSU_WAL_CONFIG`` and
Secret files), against the real PostgreSQL, S3 server and GnuPG: a base backup set lands signed
with its result in the termination message; the shipper ships WAL, writes its heartbeat, and
stops cleanly on SIGTERM; the slot drop waits for a receiver holding the slot, drops it once
free, finds nothing the second time, and names the server (never the password) when refused."""

from __future__ import annotations

import contextlib
import json
import os
import secrets as token
import signal
import subprocess
import sys
import time
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from lamassu_backup.clients import postgres as pgc
from lamassu_backup.components.postgres.wal.settings import (
    STATUS_KEY,
    WAL_CONFIG_ENV,
    ShipperStatus,
    WalRunConfig,
)
from lamassu_backup.runner.context import RunnerContext
from lamassu_backup.runner.wal import run
from lamassu_platform.postgres import PostgresServer
from lamassu_platform.s3 import S3Server

from .conftest import ConfigFactory, SecretDir

pytestmark = pytest.mark.platform

SET = "20261201T120000Z"


@pytest.fixture
def wal_config(
    pg: PostgresServer, runner_config: ConfigFactory, secrets: SecretDir, tmp_path: Path
) -> Iterator[WalRunConfig]:
    """A replication role (pg_hba line, REPLICATION, pg_switch_wal) and a WalRunConfig for it."""
    user, password = f"wal_{uuid.uuid4().hex[:6]}", token.token_urlsafe(18)
    slot = f"it_{uuid.uuid4().hex[:8]}"
    pg.create_replication_role(user, password)
    base = runner_config(components=["postgres"])
    assert base.postgres is not None
    server = base.postgres.model_copy(
        update={
            "username_file": secrets.put("repl-user", user),
            "password_file": secrets.put("repl-password", password),
        }
    )
    yield WalRunConfig(
        namespace="lamassu",
        policy=f"wal-{slot}",
        prefix=f"prod/lamassu/wal-{slot}/",
        destination=base.destination,
        gpg=base.gpg,
        postgres=server,
        slot_name=slot,
        partial_interval_seconds=1,
        status_interval_seconds=1,
        spool=str(tmp_path / "spool" / "wal"),
    )
    with contextlib.suppress(RuntimeError):
        drop = "SELECT pg_drop_replication_slot(slot_name) FROM pg_replication_slots WHERE "
        pg.psql(f"{drop}slot_name = '{slot}' AND NOT active;")
    with contextlib.suppress(RuntimeError):
        pg.psql(f"DROP ROLE IF EXISTS {user};")


def _env(cfg: WalRunConfig, termination: Path) -> dict[str, str]:
    return {
        **os.environ,
        WAL_CONFIG_ENV: cfg.model_dump_json(by_alias=True, exclude_none=True),
        "LAMASSU_TERMINATION_LOG": str(termination),
    }


def keys(s3: S3Server, cfg: WalRunConfig, under: str) -> list[str]:
    pages = s3.client().get_paginator("list_objects_v2")
    return [
        o["Key"]
        for page in pages.paginate(Bucket=cfg.destination.bucket, Prefix=cfg.prefix + under)
        for o in page.get("Contents", [])
    ]


def test_base_backup_lands_signed_with_its_result_in_the_termination_message(
    wal_config: WalRunConfig, s3: S3Server, tmp_path: Path
) -> None:
    termination = tmp_path / "termination-log"
    termination.write_text("")
    proc = subprocess.run(
        [sys.executable, "-m", "lamassu_backup", "runner", "base-backup", "--set-time", SET],
        env=_env(wal_config, termination),
        capture_output=True,
        text=True,
        timeout=300,
        check=False,
    )
    assert proc.returncode == 0, proc.stderr
    result: dict[str, Any] = json.loads(termination.read_text())
    assert result["ok"] is True
    assert result["action"] == "base-backup"
    assert result["components"] == {"postgresBase": "Completed"}
    assert result["evidence"]["setTime"] == "20261201T120000Z"
    stored = {k.rsplit("/", 1)[-1] for k in keys(s3, wal_config, "basebackups/20261201T120000Z/")}
    assert {"base.tar.zst.gpg", "base.tar.sha256", "manifest.json", "manifest.json.asc"} <= stored
    assert result["manifestKey"].endswith("basebackups/20261201T120000Z/manifest.json")


def test_the_shipper_ships_beats_and_stops_cleanly_on_sigterm(
    wal_config: WalRunConfig, pg: PostgresServer, s3: S3Server, tmp_path: Path
) -> None:
    pg.psql("CREATE TABLE IF NOT EXISTS wal_runner_ticks (n integer);", "postgres")
    stderr = tmp_path / "shipper.err"
    with stderr.open("w") as err:
        proc = subprocess.Popen(
            [sys.executable, "-m", "lamassu_backup", "runner", "wal-ship"],
            env=_env(wal_config, tmp_path / "termination-log"),
            stdout=subprocess.DEVNULL,
            stderr=err,
        )
    try:
        deadline = time.monotonic() + 60
        shipped: list[str] = []
        while time.monotonic() < deadline and proc.poll() is None:
            pg.psql("INSERT INTO wal_runner_ticks VALUES (1);", "postgres")
            shipped = [k for k in keys(s3, wal_config, "wal/") if k.endswith(".json")]
            if shipped and keys(s3, wal_config, STATUS_KEY):
                break
            time.sleep(0.5)
        assert shipped, f"no WAL record shipped: {stderr.read_text()[-2000:]}"
        time.sleep(2.5)  # a heartbeat after the last write has been shipped
        proc.send_signal(signal.SIGTERM)
        assert proc.wait(timeout=20) == 0, stderr.read_text()[-2000:]
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
    body = (
        s3.client()
        .get_object(Bucket=wal_config.destination.bucket, Key=wal_config.prefix + STATUS_KEY)[
            "Body"
        ]
        .read()
    )
    beat = ShipperStatus.model_validate_json(body)
    assert beat.caught_up_at is not None
    assert beat.lag_bytes is not None
    assert beat.lag_bytes < 1024 * 1024
    assert beat.receiver_running is False  # the last beat comes after the receiver stopped
    assert "stopped:" in stderr.read_text()
    password = Path(wal_config.postgres.password_file).read_text().strip()
    assert password not in stderr.read_text()


def _drop(cfg: WalRunConfig, tmp_path: Path) -> tuple[int, dict[str, Any]]:
    termination = tmp_path / "drop-termination-log"
    termination.write_text("")
    proc = subprocess.run(
        [sys.executable, "-m", "lamassu_backup", "runner", "wal-drop-slot"],
        env=_env(cfg, termination),
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )
    result: dict[str, Any] = json.loads(termination.read_text())
    return proc.returncode, result


def _slot(pg: PostgresServer, slot: str) -> str:
    sql = f"SELECT slot_type FROM pg_replication_slots WHERE slot_name = '{slot}';"  # noqa: S608
    return pg.psql(sql).strip()


def test_drop_slot_drops_the_physical_slot_once_it_is_free_and_is_idempotent(
    wal_config: WalRunConfig, pg: PostgresServer, tmp_path: Path
) -> None:
    slot = wal_config.slot_name
    pg.psql(f"SELECT pg_create_physical_replication_slot('{slot}', true);")
    # held by a receiver: the drop waits for it to let go (here it never does: refused, named)
    receivers = pgc.installed_majors("pg_receivewal")
    receiver = subprocess.Popen(
        [
            receivers[max(receivers)],
            "-D",
            str(tmp_path),
            "--slot",
            slot,
            "--no-loop",
        ],
        env=pgc.PgConnection(
            pg.host,
            pg.port,
            Path(wal_config.postgres.username_file).read_text().strip(),
            Path(wal_config.postgres.password_file).read_text().strip(),
        ).env(),
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    try:
        deadline = time.monotonic() + 20
        active = f"SELECT active FROM pg_replication_slots WHERE slot_name = '{slot}';"  # noqa: S608
        while time.monotonic() < deadline and "t" not in pg.psql(active):
            time.sleep(0.2)
        ctx = RunnerContext()
        try:
            result, code = run.drop_slot(wal_config, ctx, wait=2, poll=0.5)
        finally:
            ctx.close()
        assert code == 1
        assert result.reason == "SlotInUse"
        assert slot in (result.error or "")
        assert _slot(pg, slot) == "physical"
    finally:
        receiver.terminate()
        receiver.wait(timeout=10)

    code, out = _drop(wal_config, tmp_path)
    assert (code, out["ok"], out["action"]) == (0, True, "wal-drop-slot")
    assert out["evidence"]["outcome"] == "Dropped"
    assert not _slot(pg, slot)
    code, out = _drop(wal_config, tmp_path)  # again: nothing to drop is fine
    assert (code, out["evidence"]["outcome"]) == (0, "Absent")


def test_drop_slot_with_a_role_without_replication_fails_naming_the_server_not_the_password(
    wal_config: WalRunConfig, pg: PostgresServer, tmp_path: Path
) -> None:
    slot = wal_config.slot_name
    pg.psql(f"SELECT pg_create_physical_replication_slot('{slot}', true);")
    user = Path(wal_config.postgres.username_file).read_text().strip()
    pg.psql(f"ALTER ROLE {user} NOREPLICATION;")
    code, out = _drop(wal_config, tmp_path)
    assert code == 1
    assert out["ok"] is False
    assert f"{pg.host}:{pg.port}" in out["error"]
    assert Path(wal_config.postgres.password_file).read_text().strip() not in json.dumps(out)
    assert _slot(pg, slot) == "physical"
