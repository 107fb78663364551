"""The fault matrix of issue 16, runner side: each cell a fault injected into a real server (or the
runner itself) while the runner streams, and the end state it must leave, checked for real.

Cell                    Fault (and when)                                   Expected end state
----------------------  -------------------------------------------------  ----------------------------------------------
pg-restart-mid-dump     PostgreSQL stopped and started again while         backup exit 1, postgres "Failed" naming
                        pg_dump streams (it has written >= 1 MiB)          PostgreSQL; nothing under postgres/ in the
                                                                           bucket, no multipart upload; the manifest
                                                                           (vault only) says complete=false and claims
                                                                           no postgres artifact
pg-restart-mid-restore  PostgreSQL stopped (2 s) and started again while   restore exit 1 (not 3), nothing changed; the
                        pg_restore streams into <db>__restoring            live database identical table by table (row
                        (it has read >= 4 MiB)                             counts and checksums); no __restoring left
s3-stop-mid-upload      the S3 server process killed while the big dump    backup exit 1 naming S3; once S3 is back and
                        uploads (its multipart upload begun, a small       the commit step has run (as the operator runs
                        database already stored), started again after      it after the component Job): no object of
                        the runner ended                                   the component, no incomplete multipart upload
s3-stop-mid-download    the S3 server process killed while pg_restore      restore exit 1 naming S3, live identical,
                        reads the dump (>= 2 MiB)                          no scratch database left
openbao-sealed-mid-kv   OpenBao sealed right after the first KV write of   exit 3: the undo cannot reach a sealed Vault;
                        an in-place KV restore succeeded (an HTTPS proxy   evidence.changed names the mount, the error
                        seals the real server before it answers)           says putting the writes back failed (sealed);
                                                                           after unseal exactly that one path differs
                                                                           from before (the report is true)
scratch-full            the runner's scratch (LAMASSU_SCRATCH) a 4 MiB     restore exit 1, the error names the scratch
                        tmpfs; a spooled restore (postgresJobs 2) of a     directory and that it is full; live identical,
                        bigger dump                                        no scratch database left
sigkill-restore-rerun   the runner's process group SIGKILLed (a Pod        first attempt: no result, live identical; the
                        killed) while pg_restore streams (>= 4 MiB),       re-run drops the first attempt's __restoring,
                        then the same config run again (a new Pod)         exits 0 and the database equals the backed up
                                                                           one (as an uninterrupted restore leaves it)
sigkill-backup-rerun    the backup runner's group SIGKILLed while the      the re-run completes: manifest complete, row
                        dump uploads, then run again                       counts as the source; no stale multipart upload
two-restores-at-once    two in-place restores (different restores) of the one completes (exit 0, database as backed
                        same set and database started together             up); the other is refused before it changes
                                                                           anything (exit 1, RestoreInProgress); nothing
                                                                           live lost, no scratch left
restore-during-backup   an in-place restore of a database while a backup   the restore completes (exit 0); the backup's
                        of that server dumps it                            dump of it is cut by the swap and fails
                                                                           cleanly (nothing of it stored), or finished
                                                                           first; nothing live lost

What was injected at which byte, the end state seen and the seconds each cell took are printed at
the end of the run (and written to ``fault-matrix.txt`` in pytest's base temp dir).
"""

from __future__ import annotations

import json
import os
import re
import signal
import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest

from lamassu_backup.models.runner import RestoreRunConfig, RunnerConfig
from lamassu_platform import datagen
from lamassu_platform.openbao import OpenBao
from lamassu_platform.postgres import PostgresServer
from lamassu_platform.s3 import S3Server

from .conftest import ConfigFactory, SecretDir, run_runner
from .faults import (
    FaultMatrix,
    FaultyS3Proxy,
    HookedTlsProxy,
    RestartableS3,
    fault_matrix,
    small_tmpfs,
    wait_for_stream,
)
from .test_restore_runner import (
    RestoreFactory,
    databases_like,
    kv_state,
    own_db,
    restore_config,
    restore_token,
    run_restore,
    unique,
)

pytestmark = pytest.mark.platform

__all__ = ["fault_matrix", "own_db", "restore_config"]  # fixtures, imported to be used here

MIB = 1024 * 1024
CRASHY_BUCKET = "lamassu-fault-matrix"


# ------------------------------------------------------------------------------------ helpers
def start(
    cfg: RunnerConfig | RestoreRunConfig, tmp: Path, env: dict[str, str] | None = None
) -> tuple[subprocess.Popen[str], Path]:
    """The runner as a Job's container starts it, in its own process group (a Pod)."""
    restore = isinstance(cfg, RestoreRunConfig)
    termination = tmp / f"termination-{time.monotonic_ns()}"
    termination.write_text("")
    variable = "LAMASSU_RESTORE_CONFIG" if restore else "LAMASSU_RUNNER_CONFIG"
    proc = subprocess.Popen(
        [sys.executable, "-m", "lamassu_backup", "runner", "restore" if restore else "backup"],
        env={
            **os.environ,
            variable: cfg.model_dump_json(by_alias=True, exclude_none=True),
            "LAMASSU_TERMINATION_LOG": str(termination),
            **(env or {}),
        },
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
        text=True,
        start_new_session=True,
    )
    return proc, termination


def finish(
    proc: subprocess.Popen[str], termination: Path, timeout: float = 300
) -> tuple[int, dict[str, Any], str]:
    _, stderr = proc.communicate(timeout=timeout)
    text = termination.read_text()
    return proc.returncode, json.loads(text) if text else {}, stderr


def live_state(pg: PostgresServer, db: str) -> dict[str, Any]:
    """Row counts and a checksum of every table: what "the live database is as before" means."""
    return {"rows": datagen.row_counts(pg, db), "sha": datagen.table_checksums(pg, db)}


def backup_of(runner_config: ConfigFactory, tmp: Path, dbs: list[str], **more: Any) -> RunnerConfig:
    cfg = runner_config(components=["postgres"], overrides={"postgres": {"databases": dbs}, **more})
    code, result, stderr = run_runner(cfg, "backup", tmp=tmp)
    assert code == 0, (result, stderr)
    return cfg


def inflate(pg: PostgresServer, db: str, mib: int) -> None:
    """A ``filler`` table of ``mib`` MiB of hex text (about 2:1 under zstd): a dump big enough
    that a fault lands while it streams, however fast the servers are."""
    rows = int(mib) * 1024
    pg.psql(
        "CREATE TABLE filler (id int PRIMARY KEY, blob text NOT NULL);"  # noqa: S608 - an int
        "INSERT INTO filler SELECT i, (SELECT string_agg(md5(random()::text || i || j), '') "
        f"FROM generate_series(1, 32) j) FROM generate_series(1, {rows}) i;",
        db,
    )


def no_leftovers(pg: PostgresServer, dbs: list[str]) -> None:
    assert [d for db in dbs for d in databases_like(pg, db)] == dbs, "a scratch database was left"


@dataclass
class Changed:
    """A database of its own, backed up, then changed: the set's config and the live state on
    both sides of the change (what a restore must bring back, and what a failed one must keep)."""

    db: str
    cfg: RunnerConfig
    backed_up: dict[str, Any]
    changed: dict[str, Any]


ChangedFactory = Callable[..., Changed]


@pytest.fixture
def changed_since_backup(
    runner_config: ConfigFactory, own_db: Callable[..., str], pg: PostgresServer, tmp_path: Path
) -> ChangedFactory:
    """``make(change, template="ca", before=None, **config)``: a copy of ``template``
    (``before(db)`` run on it first), backed up with ``config`` overrides, then ``change`` (SQL,
    or a function of the database) applied."""

    def make(
        change: str | Callable[[str], None],
        template: str = "ca",
        before: Callable[[str], None] | None = None,
        **more: Any,
    ) -> Changed:
        db = own_db(template)
        if before is not None:
            before(db)
        cfg = backup_of(runner_config, tmp_path, [db], **more)
        backed_up = live_state(pg, db)
        if isinstance(change, str):
            pg.psql(change, db)
        else:
            change(db)
        return Changed(db, cfg, backed_up, live_state(pg, db))

    return make


def assert_secret_free(text: str, *secrets: str) -> None:
    for secret in secrets:
        assert secret not in text


@pytest.fixture
def pg_restarted(pg: PostgresServer) -> Iterator[PostgresServer]:
    """The session's server, running again after the test whatever happened."""
    yield pg
    if pg.postmaster_pid() is None:
        pg.start()


@pytest.fixture(scope="module")
def crashy_s3(tmp_path_factory: pytest.TempPathFactory) -> Iterator[RestartableS3]:
    with RestartableS3(tmp_path_factory.mktemp("crashy-s3")) as server:
        server.client().create_bucket(Bucket=CRASHY_BUCKET)
        yield server


def crashy_destination(server: RestartableS3, secrets: SecretDir) -> dict[str, Any]:
    return {
        "bucket": CRASHY_BUCKET,
        "endpoint": server.endpoint,
        "region": server.region,
        "accessKeyIdFile": secrets.put("crashy-id", server.access_key),
        "secretAccessKeyFile": secrets.put("crashy-secret", server.secret_key),
        "sse": "none",
        "kmsKeyId": None,
    }


# ------------------------------------------------------------------------------- PostgreSQL
def test_postgres_restarted_mid_dump(
    runner_config: ConfigFactory,
    own_db: Callable[..., str],
    pg_restarted: PostgresServer,
    s3: S3Server,
    fault_matrix: FaultMatrix,
    tmp_path: Path,
) -> None:
    pg = pg_restarted
    with fault_matrix.cell("pg-restart-mid-dump") as cell:
        db = own_db("ca")
        cfg = runner_config(
            components=["postgres", "vault"], overrides={"postgres": {"databases": [db]}}
        )
        proc, termination = start(cfg, tmp_path)
        _, seen = wait_for_stream(proc, "pg_dump", "wchar", MIB)
        pg.stop()
        pg.start()
        cell.at = f"pg_dump of {db} at {seen / MIB:.1f} MiB written"
        code, result, stderr = finish(proc, termination)

        assert code == 1, (result, stderr)
        assert result["components"]["vault"] == "Completed"
        assert result["components"]["postgres"].startswith("Failed"), result
        assert "PostgreSQL" in result["error"] or "pg_dump" in result["error"], result["error"]
        assert db in result["error"]
        bucket, prefix = cfg.destination.bucket, cfg.set_prefix
        client = s3.client()
        keys = [
            o["Key"][len(prefix) :]
            for o in client.list_objects_v2(Bucket=bucket, Prefix=prefix).get("Contents", [])
        ]
        assert not [k for k in keys if k.startswith("postgres/")], keys
        assert client.list_multipart_uploads(Bucket=bucket, Prefix=prefix).get("Uploads", []) == []
        manifest = json.loads(
            client.get_object(Bucket=bucket, Key=prefix + "manifest.json")["Body"].read()
        )
        assert manifest["complete"] is False
        assert manifest["components"]["postgres"]["status"] == "Failed"
        assert {a["component"] for a in manifest["artifacts"]} == {"vault"}
        assert_secret_free(json.dumps(result) + stderr, pg.password, s3.secret_key)
        cell.end = f"exit 1, postgres {result['components']['postgres']}; no postgres/ object, no upload; manifest complete=false, vault only"


def test_postgres_restarted_mid_restore(
    changed_since_backup: ChangedFactory,
    restore_config: RestoreFactory,
    pg_restarted: PostgresServer,
    fault_matrix: FaultMatrix,
    tmp_path: Path,
) -> None:
    pg = pg_restarted
    with fault_matrix.cell("pg-restart-mid-restore") as cell:
        case = changed_since_backup("UPDATE certificates SET status = 'REVOKED' WHERE NOT is_ca;")
        db, cfg, before = case.db, case.cfg, case.changed
        proc, termination = start(restore_config(cfg, components=["postgres"]), tmp_path)
        _, seen = wait_for_stream(proc, "pg_restore", "rchar", 4 * MIB)
        pg.stop()
        time.sleep(2)
        pg.start()
        cell.at = f"pg_restore into {db}__restoring at {seen / MIB:.1f} MiB read; down 2 s"
        code, result, stderr = finish(proc, termination)

        assert code == 1, (result, stderr)
        assert "changed" not in result["evidence"], result["evidence"]
        assert result["components"]["postgres"].startswith("Failed"), result
        assert live_state(pg, db) == before
        no_leftovers(pg, [db])
        cell.end = f"exit 1 ({result['reason']}), live identical ({sum(before['rows'].values())} rows, {len(before['sha'])} tables), no scratch db"


# -------------------------------------------------------------------------------------- S3
def test_s3_stopped_mid_upload(
    runner_config: ConfigFactory,
    own_db: Callable[..., str],
    pg: PostgresServer,
    crashy_s3: RestartableS3,
    secrets: SecretDir,
    fault_matrix: FaultMatrix,
    tmp_path: Path,
) -> None:
    with fault_matrix.cell("s3-stop-mid-upload") as cell:
        big, small = own_db("ca"), own_db("va")
        inflate(pg, big, 48)
        cfg = runner_config(
            components=["postgres"],
            overrides={
                "postgres": {"databases": [big, small]},
                "destination": crashy_destination(crashy_s3, secrets),
            },
        )
        prefix = cfg.set_prefix
        proc, termination = start(cfg, tmp_path)
        deadline = time.monotonic() + 60
        while not (
            crashy_s3.uploads(CRASHY_BUCKET, prefix)
            and any(k.startswith("postgres/") for k in crashy_s3.objects(CRASHY_BUCKET, prefix))
        ):
            assert proc.poll() is None, "the runner ended before its upload was seen"
            assert time.monotonic() < deadline, "no upload seen"
            time.sleep(0.01)
        (upload,) = crashy_s3.client().list_multipart_uploads(Bucket=CRASHY_BUCKET, Prefix=prefix)[
            "Uploads"
        ]
        crashy_s3.kill()
        cell.at = f"upload of {upload['Key'].rsplit('/', 1)[-1]} begun, {small} stored"
        try:
            code, result, stderr = finish(proc, termination)
        finally:
            crashy_s3.start()
        assert code == 1, (result, stderr)
        assert "S3" in result["error"], result["error"]
        left_by_run = (
            crashy_s3.objects(CRASHY_BUCKET, prefix),
            crashy_s3.uploads(CRASHY_BUCKET, prefix),
        )

        # The operator runs the commit Job once every component Job has ended.
        code, commit, stderr = run_runner(cfg, "commit", "--allow-partial", tmp=tmp_path)
        assert code == 1, (commit, stderr)
        assert commit["reason"] == "NothingStored", commit
        objects = crashy_s3.objects(CRASHY_BUCKET, prefix)
        assert not [k for k in objects if not k.startswith("parts/")], objects
        assert "manifest.json" not in objects
        assert crashy_s3.uploads(CRASHY_BUCKET, prefix) == []
        cell.end = (
            f"exit 1 (S3); left by the run: {len(left_by_run[0])} object(s), "
            f"{len(left_by_run[1])} upload(s); after the commit step: none"
        )


def test_s3_stopped_mid_download(
    changed_since_backup: ChangedFactory,
    restore_config: RestoreFactory,
    pg: PostgresServer,
    crashy_s3: RestartableS3,
    secrets: SecretDir,
    fault_matrix: FaultMatrix,
    tmp_path: Path,
) -> None:
    with fault_matrix.cell("s3-stop-mid-download") as cell:
        case = changed_since_backup(
            "DELETE FROM certificates WHERE status = 'REVOKED';",
            before=lambda db: inflate(pg, db, 64),
            destination=crashy_destination(crashy_s3, secrets),
        )
        db, cfg, before = case.db, case.cfg, case.changed
        proc, termination = start(restore_config(cfg, components=["postgres"]), tmp_path)
        _, seen = wait_for_stream(proc, "pg_restore", "rchar", MIB)
        crashy_s3.kill()
        cell.at = f"GetObject of {db}'s 64 MiB dump, pg_restore at {seen / MIB:.1f} MiB read"
        try:
            code, result, stderr = finish(proc, termination)
        finally:
            crashy_s3.start()
        assert code == 1, (result, stderr)
        assert "S3" in result["error"] or "s3://" in result["error"], result["error"]
        assert "changed" not in result["evidence"]
        assert live_state(pg, db) == before
        no_leftovers(pg, [db])
        cell.end = f"exit 1 ({result['reason']}), live identical, no scratch db"


# ---------------------------------------------------------------------------------- OpenBao
def test_openbao_sealed_between_kv_writes(
    runner_config: ConfigFactory,
    restore_config: RestoreFactory,
    dataset: datagen.Dataset,
    openbao: OpenBao,
    secrets: SecretDir,
    fault_matrix: FaultMatrix,
    tmp_path: Path,
) -> None:
    with fault_matrix.cell("openbao-sealed-mid-kv") as cell:
        mount = unique("kv-seal-")
        openbao.enable_kv(mount)
        openbao.write_keys(mount, dataset.private_keys)
        try:
            token = secrets.put("token", restore_token(openbao, mount))
            vault = {"raftSnapshot": False, "kvMounts": [mount], "tokenFile": token}
            cfg = runner_config(components=["vault"], overrides={"vault": vault})
            code, result, stderr = run_runner(cfg, "backup", tmp=tmp_path)
            assert code == 0, (result, stderr)
            lost = sorted(dataset.private_keys)[:4]  # four paths the restore will write back
            for path in lost:
                openbao.client().secrets.kv.v2.delete_metadata_and_all_versions(
                    path=path, mount_point=mount
                )
            before = kv_state(openbao, mount)
            writes: list[str] = []

            def seal_after_first_write(method: str, path: str, status: int) -> None:
                if method in ("PUT", "POST") and f"/v1/{mount}/data/" in path and status < 300:
                    writes.append(path)
                    if len(writes) == 1:
                        openbao.seal()

            with HookedTlsProxy(
                openbao.address, openbao.ca_cert_path, tmp_path / "proxy", seal_after_first_write
            ) as proxy:
                address = {"address": proxy.address, "caFile": str(proxy.ca_path)}
                rcfg = restore_config(
                    cfg, components=["vault"], vault={**vault, **address, "tokenFile": token}
                )
                try:
                    code, result, stderr = run_restore(rcfg, tmp=tmp_path)
                finally:
                    if openbao.is_sealed():
                        openbao.unseal()
            cell.at = f"sealed after KV write 1 of {len(lost)} ({mount})"
            assert len(writes) == 1, proxy.seen

            after = kv_state(openbao, mount)
            written = sorted(set(after[0]) - set(before[0]))
            if code == 1:  # everything undone: KV exactly as before
                assert after == before
                cell.end = "exit 1, every path as before"
            else:  # loud and true: exit 3, the mount named, exactly the written path differs
                assert code == 3, (result, stderr)
                assert result["evidence"]["changed"] == [f"vault:{mount}"], result["evidence"]
                assert "putting the KV writes back failed" in result["error"], result["error"]
                assert "sealed" in result["error"], result["error"]
                assert len(written) == 1, (written, lost)
                assert written[0] == lost[0]
                assert {p: after[1][p] for p in before[1]} == before[1]
                cell.end = f"exit 3, evidence.changed [vault:{mount[:12]}..], 1 path written (the first), others as before"
            assert_secret_free(json.dumps(result) + stderr, Path(token).read_text())
            assert "PRIVATE" not in json.dumps(result) + stderr
        finally:
            openbao.client().sys.disable_secrets_engine(mount)


# ---------------------------------------------------------------------------------- scratch
def test_scratch_volume_full(
    changed_since_backup: ChangedFactory,
    restore_config: RestoreFactory,
    pg: PostgresServer,
    fault_matrix: FaultMatrix,
    tmp_path: Path,
) -> None:
    with fault_matrix.cell("scratch-full") as cell:
        case = changed_since_backup("DELETE FROM certificates WHERE status = 'REVOKED';")
        db, cfg, before = case.db, case.cfg, case.changed
        with small_tmpfs(tmp_path / "scratch", "4m") as scratch:
            code, result, stderr = run_restore(
                restore_config(cfg, components=["postgres"], postgresJobs=2),
                tmp=tmp_path,
                env={"LAMASSU_SCRATCH": str(scratch)},
            )
            assert not list(scratch.iterdir()), "the scratch area was not cleaned"
        assert code == 1, (result, stderr)
        full_at = re.search(r"full after (\d+) bytes", result["error"])
        cell.at = "spool of the dump on a 4 MiB tmpfs (LAMASSU_SCRATCH), full at byte " + (
            full_at.group(1) if full_at else "?"
        )
        assert str(scratch) in result["error"], result["error"]
        assert "full" in result["error"] or "No space left" in result["error"], result["error"]
        assert "changed" not in result["evidence"]
        assert live_state(pg, db) == before
        no_leftovers(pg, [db])
        cell.end = f"exit 1 ({result['reason']}), error names {scratch.name}/ full; live identical"


# ---------------------------------------------------------------------------------- SIGKILL
def test_runner_sigkilled_mid_restore_then_rerun(
    changed_since_backup: ChangedFactory,
    restore_config: RestoreFactory,
    pg: PostgresServer,
    fault_matrix: FaultMatrix,
    tmp_path: Path,
) -> None:
    with fault_matrix.cell("sigkill-restore-rerun") as cell:
        case = changed_since_backup("DELETE FROM certificates WHERE NOT is_ca;")
        db, cfg, original, damaged = case.db, case.cfg, case.backed_up, case.changed
        rcfg = restore_config(cfg, components=["postgres"], swapSuffix="k1")
        proc, termination = start(rcfg, tmp_path)
        _, seen = wait_for_stream(proc, "pg_restore", "rchar", 4 * MIB)
        os.killpg(proc.pid, signal.SIGKILL)
        cell.at = f"runner group SIGKILLed, pg_restore at {seen / MIB:.1f} MiB read"
        code, result, _ = finish(proc, termination)
        assert code == -signal.SIGKILL
        assert result == {}
        assert live_state(pg, db) == damaged
        orphans = [d for d in databases_like(pg, db) if d != db]

        code, result, stderr = run_restore(rcfg, tmp=tmp_path)  # a new Pod, the same config
        assert code == 0, (result.get("error"), stderr)
        assert live_state(pg, db) == original
        assert not databases_like(pg, f"{db}__restoring")
        assert result["evidence"]["kept"] == [f"{db}__pre_restore_k1"]
        code, result, stderr = run_restore(rcfg, tmp=tmp_path, step="finalize")
        assert code == 0, (result, stderr)
        no_leftovers(pg, [db])
        cell.end = f"left by the kill: {orphans or 'nothing'}; re-run exit 0, equals the backup, scratch dropped"


def test_backup_runner_sigkilled_mid_upload_then_rerun(
    runner_config: ConfigFactory,
    own_db: Callable[..., str],
    pg: PostgresServer,
    s3: S3Server,
    fault_matrix: FaultMatrix,
    tmp_path: Path,
) -> None:
    with fault_matrix.cell("sigkill-backup-rerun") as cell:
        db = own_db("ca")
        cfg = runner_config(components=["postgres"], overrides={"postgres": {"databases": [db]}})
        proc, termination = start(cfg, tmp_path)
        _, seen = wait_for_stream(proc, "pg_dump", "wchar", 2 * MIB)
        os.killpg(proc.pid, signal.SIGKILL)
        cell.at = f"backup runner group SIGKILLed, pg_dump at {seen / MIB:.1f} MiB written"
        finish(proc, termination)
        bucket, prefix = cfg.destination.bucket, cfg.set_prefix
        stale = s3.client().list_multipart_uploads(Bucket=bucket, Prefix=prefix).get("Uploads", [])

        code, result, stderr = run_runner(cfg, "backup", tmp=tmp_path)
        assert code == 0, (result, stderr)
        manifest = json.loads(
            s3.client().get_object(Bucket=bucket, Key=prefix + "manifest.json")["Body"].read()
        )
        assert manifest["complete"] is True
        (artifact,) = manifest["artifacts"]
        assert artifact["details"]["rowCounts"] == datagen.row_counts(pg, db)
        assert (
            s3.client().list_multipart_uploads(Bucket=bucket, Prefix=prefix).get("Uploads", [])
            == []
        )
        cell.end = f"stale uploads after the kill: {len(stale)}; re-run complete, none left"


# ------------------------------------------------------------------------------ concurrency
def test_two_restores_at_once(
    changed_since_backup: ChangedFactory,
    restore_config: RestoreFactory,
    pg: PostgresServer,
    fault_matrix: FaultMatrix,
    tmp_path: Path,
) -> None:
    with fault_matrix.cell("two-restores-at-once") as cell:
        case = changed_since_backup("DELETE FROM certificates WHERE NOT is_ca;")
        db, cfg, original, damaged = case.db, case.cfg, case.backed_up, case.changed
        first = restore_config(cfg, components=["postgres"], swapSuffix="a1")
        second = restore_config(cfg, components=["postgres"], swapSuffix="b2")
        one, t_one = start(first, tmp_path)
        time.sleep(0.3)
        two, t_two = start(second, tmp_path)
        cell.at = "second restore started 0.3 s after the first"
        outcomes = [finish(one, t_one), finish(two, t_two)]
        codes = sorted(code for code, _, _ in outcomes)
        reasons = [r.get("reason") for _, r, _ in outcomes]
        state = live_state(pg, db)
        assert codes == [0, 1], outcomes
        assert "RestoreInProgress" in reasons, reasons
        refused = next(r for c, r, _ in outcomes if c == 1)
        assert "changed" not in refused["evidence"]
        assert state == original, "the live database is neither the backup nor as it was"
        kept = [d for d in databases_like(pg, db) if "__pre_restore_" in d]
        assert len(kept) == 1
        assert live_state(pg, kept[0]) == damaged
        assert not databases_like(pg, f"{db}__restoring")
        for name in kept:
            pg.drop_database(name)
        cell.end = "one exit 0 (database = backup), one exit 1 RestoreInProgress, nothing lost"


def test_restore_while_a_backup_dumps_the_server(
    changed_since_backup: ChangedFactory,
    runner_config: ConfigFactory,
    restore_config: RestoreFactory,
    pg: PostgresServer,
    s3: S3Server,
    fault_matrix: FaultMatrix,
    tmp_path: Path,
) -> None:
    with fault_matrix.cell("restore-during-backup") as cell:
        # A small set (restored in about a second), then 64 MiB more since the set.
        case = changed_since_backup(lambda db: inflate(pg, db, 64), template="va")
        db, cfg, original, damaged = case.db, case.cfg, case.backed_up, case.changed

        def slow_parts(method: str, path: str) -> bool:
            """Each part 1 s late: the dump streams (back-pressured) for several seconds."""
            if method == "PUT" and "partNumber=" in path:
                time.sleep(1)
            return False

        with FaultyS3Proxy(s3.endpoint, slow_parts) as proxy:
            other = runner_config(
                components=["postgres"],
                overrides={
                    "postgres": {"databases": [db]},
                    "destination": {"endpoint": proxy.endpoint},
                },
            )
            backing_up, t_backup = start(other, tmp_path)
            _, seen = wait_for_stream(backing_up, "pg_dump", "wchar", 256 * 1024)
            cell.at = f"restore started with the backup's pg_dump at {seen / MIB:.1f} MiB (of 64+)"
            code, result, stderr = run_restore(
                restore_config(cfg, components=["postgres"], swapSuffix="c3"), tmp=tmp_path
            )
            b_code, b_result, b_stderr = finish(backing_up, t_backup)
        assert code == 0, (result.get("error"), stderr)
        assert live_state(pg, db) == original
        assert live_state(pg, f"{db}__pre_restore_c3") == damaged
        bucket, prefix = other.destination.bucket, other.set_prefix
        uploads = s3.client().list_multipart_uploads(Bucket=bucket, Prefix=prefix)
        assert uploads.get("Uploads", []) == []
        if b_code == 0:  # the dump ended before the swap: a complete set of the damaged data
            (artifact,) = json.loads(
                s3.client().get_object(Bucket=bucket, Key=prefix + "manifest.json")["Body"].read()
            )["artifacts"]
            assert artifact["details"]["rowCounts"] == damaged["rows"]
            backup_end = "backup completed first (a set of the data before the restore)"
        else:
            assert b_result["components"]["postgres"].startswith("Failed"), b_result
            keys = s3.client().list_objects_v2(Bucket=bucket, Prefix=prefix + "postgres/")
            assert keys.get("KeyCount", 0) == 0, (keys, b_stderr)
            backup_end = (
                f"backup exit 1 (postgres {b_result['components']['postgres']}), nothing stored"
            )
        pg.drop_database(f"{db}__pre_restore_c3")
        cell.end = f"restore exit 0 (database = backup); {backup_end}"
