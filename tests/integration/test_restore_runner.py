"""The restore runner against real PostgreSQL, GnuPG, an S3 server, OpenBao and an apiserver.

Every refusal test checks the live database byte for byte (table checksums before and after);
tests that would damage the session's shared data work on their own copies (databases cloned
from the dataset with ``CREATE DATABASE ... TEMPLATE``, their own KV mounts, their own OpenBao).
"""

from __future__ import annotations

import itertools
import json
import os
import signal
import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest

from lamassu_backup.models.runner import RestoreRunConfig, RunnerConfig
from lamassu_platform import datagen
from lamassu_platform.gpg import GpgKeys
from lamassu_platform.openbao import OpenBao
from lamassu_platform.postgres import PostgresServer
from lamassu_platform.s3 import S3Server

from .conftest import DATA_MIB, KV_MOUNT, SEED, ConfigFactory, SecretDir, run_runner
from .faults import descendants

pytestmark = pytest.mark.platform

RestoreFactory = Callable[..., RestoreRunConfig]
_N = itertools.count()


# ------------------------------------------------------------------------------------- helpers
def unique(prefix: str) -> str:
    return f"{prefix}{os.getpid() % 1000}{next(_N)}"


def clone_database(pg: PostgresServer, source: str, name: str, *, owner: str | None = None) -> None:
    """An own copy of a dataset database (same content, same goose table)."""
    pg.drop_database(name)
    owner_sql = f' OWNER "{owner}"' if owner else ""
    pg.psql(f'CREATE DATABASE "{name}" TEMPLATE "{source}"{owner_sql};')


def checksums(pg: PostgresServer, databases: list[str]) -> dict[str, dict[str, str]]:
    return {db: datagen.table_checksums(pg, db) for db in databases}


def databases_like(pg: PostgresServer, fragment: str) -> list[str]:
    return [d for d in pg.databases() if fragment in d]


def restore_env(
    cfg: RestoreRunConfig, termination: Path, env: dict[str, str] | None
) -> dict[str, str]:
    termination.write_text("")
    return {
        **os.environ,
        "LAMASSU_RESTORE_CONFIG": cfg.model_dump_json(by_alias=True, exclude_none=True),
        "LAMASSU_TERMINATION_LOG": str(termination),
        **(env or {}),
    }


def read_result(termination: Path) -> dict[str, Any]:
    text = termination.read_text()
    assert len(text.encode()) <= 4096, "termination message over 4 KiB"
    return json.loads(text) if text else {}


def run_restore(
    cfg: RestoreRunConfig,
    *,
    tmp: Path,
    step: str | None = None,
    env: dict[str, str] | None = None,
    **overrides: Any,
) -> tuple[int, dict[str, Any], str]:
    """Run ``lamassu-backup runner restore`` as a Job would; exit code, result, stderr."""
    update = {**({"step": step} if step else {}), **overrides}
    if update:
        cfg = RestoreRunConfig.model_validate({**cfg.model_dump(), **update})
    termination = tmp / f"termination-{next(_N)}"
    proc = subprocess.run(
        [sys.executable, "-m", "lamassu_backup", "runner", "restore"],
        env=restore_env(cfg, termination, env),
        capture_output=True,
        text=True,
        timeout=600,
        check=False,
    )
    return proc.returncode, read_result(termination), proc.stderr


def backup(cfg: RunnerConfig, tmp: Path) -> dict[str, Any]:
    code, result, stderr = run_runner(cfg, "backup", tmp=tmp)
    assert code == 0, (result, stderr)
    return result


@pytest.fixture
def restore_config(gpg_keys: GpgKeys, secrets: SecretDir, openbao: OpenBao) -> RestoreFactory:
    """A RestoreRunConfig for the set a backup RunnerConfig wrote, against the same servers."""

    def make(backup_cfg: RunnerConfig, **overrides: Any) -> RestoreRunConfig:
        data: dict[str, Any] = {
            "namespace": backup_cfg.namespace,
            "restore": unique("restore-"),
            "mode": "InPlace",
            "step": "restore",
            "source": backup_cfg.destination.model_dump(by_alias=True, exclude_none=True),
            "setPrefix": backup_cfg.set_prefix,
            "backup": backup_cfg.backup,
            "decryptionKeyFile": secrets.put(
                "decryption.asc", gpg_keys.decryption_key_asc.read_bytes()
            ),
            "signerKeyFile": secrets.put("signer.asc", gpg_keys.signing_public_asc.read_bytes()),
            "postgres": backup_cfg.postgres.model_dump(by_alias=True, exclude_none=True)
            if backup_cfg.postgres
            else None,
            "vault": backup_cfg.vault.model_dump(by_alias=True, exclude_none=True)
            if backup_cfg.vault
            else None,
        }
        data.update(overrides)
        return RestoreRunConfig.model_validate({k: v for k, v in data.items() if v is not None})

    return make


@pytest.fixture
def own_db(pg: PostgresServer, dataset: datagen.Dataset) -> Iterator[Callable[..., str]]:
    """Own copies of dataset databases, dropped (with every scratch or kept copy) at the end."""
    made: list[str] = []

    def make(source: str = "ca", *, owner: str | None = None) -> str:
        name = unique(f"t_{source}_")
        clone_database(pg, source, name, owner=owner)
        made.append(name)
        return name

    yield make
    for name in made:
        for db in databases_like(pg, name):
            pg.drop_database(db)


def object_key(cfg: RunnerConfig, relative: str) -> str:
    return cfg.set_prefix + relative


def flip_byte(s3: S3Server, bucket: str, key: str) -> None:
    client = s3.client()
    data = bytearray(client.get_object(Bucket=bucket, Key=key)["Body"].read())
    data[len(data) // 2] ^= 0x01
    client.put_object(Bucket=bucket, Key=key, Body=bytes(data))


# --------------------------------------------------------------------------------- round trip
def test_round_trip_restores_every_table_of_the_six_databases(
    runner_config: ConfigFactory,
    restore_config: RestoreFactory,
    pg: PostgresServer,
    dataset: datagen.Dataset,
    openbao: OpenBao,
    tmp_path: Path,
) -> None:
    """Back up, damage every database and a CA key, restore in place: everything as it was."""
    dbs = list(dataset.databases)
    before = checksums(pg, dbs)
    cfg = runner_config(components=["postgres", "vault"])
    backup(cfg, tmp_path)
    doomed_key = dataset.ca_key_ids[0]
    try:
        pg.psql("DELETE FROM certificates WHERE NOT is_ca AND status = 'REVOKED';", "ca")
        pg.psql("UPDATE devices SET status = 'DECOMMISSIONED';", "devicemanager")
        pg.psql("DELETE FROM dms;", "dmsmanager")
        pg.psql("DROP TABLE subscriptions;", "alerts")
        pg.psql("TRUNCATE va_role;", "va")
        pg.psql(
            "INSERT INTO goose_db_version (version_id, is_applied) VALUES (20990101000000, true);"
            "DELETE FROM kms_keys WHERE NOT has_private_key;",
            "kms",
        )
        openbao.client().secrets.kv.v2.delete_metadata_and_all_versions(
            path=doomed_key, mount_point=KV_MOUNT
        )
        damaged = checksums(pg, dbs)
        assert all(damaged[db] != before[db] for db in dbs)

        rcfg = restore_config(cfg, components=["postgres", "vault"])
        code, result, stderr = run_restore(rcfg, tmp=tmp_path)
        assert code == 0, (result.get("error"), result, stderr)
        assert result["ok"] is True
        assert checksums(pg, dbs) == before
        assert openbao.read_keys(KV_MOUNT) == dataset.private_keys
        ev = result["evidence"]
        assert ev["vault"][KV_MOUNT]["created"] == 1
        assert ev["vault"][KV_MOUNT]["unchanged"] == len(dataset.private_keys) - 1
        assert ev["keyConsistency"]["ok"] is True
        for db in dbs:
            rows = sum(dataset.row_counts[db].values())
            assert ev["postgres"][db]["rows"] == rows
        assert ev["postgres"]["ca"]["goose"] == datagen.GOOSE_VERSIONS["ca"][-1]
        suffix = ev["swapSuffix"]
        kept = sorted(ev["kept"])
        assert kept == sorted(f"{db}__pre_restore_{suffix}" for db in dbs)
        # The kept databases are the damaged ones, ready for a rollback until finalized.
        assert datagen.table_checksums(pg, f"ca__pre_restore_{suffix}") == damaged["ca"]
        assert not databases_like(pg, "__restoring")

        code, result, stderr = run_restore(rcfg, tmp=tmp_path, step="finalize", swap_suffix=suffix)
        assert code == 0, (result, stderr)
        assert sorted(result["evidence"]["dropped"]) == kept
        assert not databases_like(pg, "__pre_restore_")
        assert checksums(pg, dbs) == before
    except BaseException:
        # Shared data must survive a failing test: regenerate it (deterministic).
        for db in databases_like(pg, "__"):
            pg.drop_database(db)
        datagen.generate(pg, DATA_MIB, seed=SEED)
        openbao.write_keys(KV_MOUNT, dataset.private_keys)
        raise


# ------------------------------------------------------------------------ refusals before damage
def _strip_signature(
    s3: S3Server, cfg: RunnerConfig, rcfg: RestoreRunConfig, gpg: GpgKeys, secrets: SecretDir
) -> RestoreRunConfig:
    s3.client().delete_object(
        Bucket=cfg.destination.bucket, Key=object_key(cfg, "manifest.json.asc")
    )
    return rcfg


def _tamper_manifest(
    s3: S3Server, cfg: RunnerConfig, rcfg: RestoreRunConfig, gpg: GpgKeys, secrets: SecretDir
) -> RestoreRunConfig:
    client = s3.client()
    key = object_key(cfg, "manifest.json")
    manifest = json.loads(client.get_object(Bucket=cfg.destination.bucket, Key=key)["Body"].read())
    manifest["artifacts"][0]["details"]["rowCounts"] = {}
    client.put_object(Bucket=cfg.destination.bucket, Key=key, Body=json.dumps(manifest).encode())
    return rcfg


def _flip_byte(
    s3: S3Server, cfg: RunnerConfig, rcfg: RestoreRunConfig, gpg: GpgKeys, secrets: SecretDir
) -> RestoreRunConfig:
    assert cfg.postgres is not None
    db = cfg.postgres.databases[0]
    flip_byte(s3, cfg.destination.bucket, object_key(cfg, f"postgres/{db}.dump.zst.gpg"))
    return rcfg


def _drop_manifest(
    s3: S3Server, cfg: RunnerConfig, rcfg: RestoreRunConfig, gpg: GpgKeys, secrets: SecretDir
) -> RestoreRunConfig:
    s3.client().delete_object(Bucket=cfg.destination.bucket, Key=object_key(cfg, "manifest.json"))
    return rcfg


def _other_signer(
    s3: S3Server, cfg: RunnerConfig, rcfg: RestoreRunConfig, gpg: GpgKeys, secrets: SecretDir
) -> RestoreRunConfig:
    return rcfg.model_copy(
        update={"signer_key_file": secrets.put("other.asc", gpg.wrong_public_asc.read_bytes())}
    )


def _no_signer(
    s3: S3Server, cfg: RunnerConfig, rcfg: RestoreRunConfig, gpg: GpgKeys, secrets: SecretDir
) -> RestoreRunConfig:
    return rcfg.model_copy(update={"signer_key_file": None})


def _wrong_key(
    s3: S3Server, cfg: RunnerConfig, rcfg: RestoreRunConfig, gpg: GpgKeys, secrets: SecretDir
) -> RestoreRunConfig:
    return rcfg.model_copy(
        update={"decryption_key_file": secrets.put("wrong.asc", gpg.wrong_secret_asc.read_bytes())}
    )


FAULTS = {
    "flipped-byte": (
        _flip_byte,
        "IntegrityCheckFailed",
        "the stored object does not match the manifest",
    ),
    "missing-manifest": (_drop_manifest, "ManifestMissing", "has no manifest.json"),
    "tampered-manifest": (_tamper_manifest, "SignatureInvalid", "signature does not verify"),
    "untrusted-signer": (_other_signer, "SignatureInvalid", "signature does not verify"),
    "stripped-signature": (_strip_signature, "SignatureInvalid", "signature was removed"),
    "no-signer-key": (_no_signer, "SignatureInvalid", "no signer key is configured"),
    "wrong-decryption-key": (_wrong_key, "EncryptionFailed", "does not match any recipient"),
}


@pytest.fixture(scope="module")
def refusal_db(pg: PostgresServer, dataset: datagen.Dataset) -> Iterator[dict[str, Any]]:
    """One own database (and, once made, one set of it) for every refusal test."""
    db = unique("t_refuse_")
    clone_database(pg, "ca", db)
    shared: dict[str, Any] = {"db": db}
    yield shared
    for name in databases_like(pg, db):
        pg.drop_database(name)


@pytest.fixture
def refusal_set(
    refusal_db: dict[str, Any],
    runner_config: ConfigFactory,
    pg: PostgresServer,
    s3: S3Server,
    tmp_path: Path,
) -> RunnerConfig:
    """A private copy of the shared set (the faults damage it), its database changed since."""
    if "cfg" not in refusal_db:
        db = refusal_db["db"]
        cfg = runner_config(components=["postgres"], overrides={"postgres": {"databases": [db]}})
        backup(cfg, tmp_path)
        # The live database differs from the set: a restore would change it.
        pg.psql("DELETE FROM certificates WHERE status = 'REVOKED';", db)
        refusal_db["cfg"] = cfg
    base: RunnerConfig = refusal_db["cfg"]
    prefix = f"{base.set_prefix.rstrip('/')}-copy{next(_N)}/"
    client = s3.client()
    bucket = base.destination.bucket
    for page in client.get_paginator("list_objects_v2").paginate(
        Bucket=bucket, Prefix=base.set_prefix
    ):
        for item in page.get("Contents", []):
            rest = item["Key"][len(base.set_prefix) :]
            client.copy_object(
                Bucket=bucket, Key=prefix + rest, CopySource={"Bucket": bucket, "Key": item["Key"]}
            )
    return base.model_copy(update={"set_prefix": prefix})


@pytest.mark.parametrize("fault", sorted(FAULTS))
def test_refuses_before_touching_the_live_database(
    fault: str,
    refusal_set: RunnerConfig,
    restore_config: RestoreFactory,
    pg: PostgresServer,
    s3: S3Server,
    gpg_keys: GpgKeys,
    secrets: SecretDir,
    tmp_path: Path,
) -> None:
    damage, reason, message = FAULTS[fault]
    cfg = refusal_set
    assert cfg.postgres is not None
    db = cfg.postgres.databases[0]
    live = datagen.table_checksums(pg, db)
    rcfg = damage(s3, cfg, restore_config(cfg, components=["postgres"]), gpg_keys, secrets)

    code, result, stderr = run_restore(rcfg, tmp=tmp_path)

    assert code == 1, (result, stderr)
    assert result["ok"] is False
    assert result["reason"] == reason, result["error"]
    assert message in result["error"]
    assert datagen.table_checksums(pg, db) == live
    assert databases_like(pg, db) == [db], "a scratch database was left behind"
    text = json.dumps(result) + stderr
    assert pg.password not in text
    assert s3.secret_key not in text
    assert "PRIVATE KEY" not in text


def test_plan_verifies_the_whole_set_and_changes_nothing(
    refusal_set: RunnerConfig,
    restore_config: RestoreFactory,
    pg: PostgresServer,
    s3: S3Server,
    tmp_path: Path,
) -> None:
    """dryRun (or step plan): every artifact streamed and checked, the plan in order, no change."""
    cfg = refusal_set
    assert cfg.postgres is not None
    db = cfg.postgres.databases[0]
    live = datagen.table_checksums(pg, db)
    rcfg = restore_config(cfg, dryRun=True)

    code, result, stderr = run_restore(rcfg, tmp=tmp_path)

    assert code == 0, (result.get("error"), stderr)
    assert result["action"] == "plan"
    assert result["components"] == {"postgres": "Planned"}
    (item,) = result["evidence"]["plan"]
    assert item == {
        "component": "postgres",
        "target": f"database {db}",
        "action": f"restore into {db}__restoring, verify, swap in; keep the live as {db}__pre_restore_<time>",
        "detail": f"{sum(datagen.row_counts(pg, 'ca').values())} rows",
    }
    assert datagen.table_checksums(pg, db) == live
    assert databases_like(pg, db) == [db]
    # The plan streams every artifact: a damaged one fails the plan.
    flip_byte(s3, cfg.destination.bucket, object_key(cfg, f"postgres/{db}.dump.zst.gpg"))
    code, result, _ = run_restore(rcfg, tmp=tmp_path)
    assert code == 1
    assert result["reason"] == "IntegrityCheckFailed"
    assert result["components"] == {"postgres": "Failed: IntegrityCheckFailed"}


def interrupt_half_way(
    rcfg: RestoreRunConfig, tmp: Path, act: Callable[[int, int], None]
) -> tuple[int, dict[str, Any], str]:
    """Run a restore; once a pg_restore has read 4 MiB of its dump, ``act(runner, pg_restore)``."""
    termination = tmp / f"termination-{next(_N)}"
    proc = subprocess.Popen(
        [sys.executable, "-m", "lamassu_backup", "runner", "restore"],
        env=restore_env(rcfg, termination, None),
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
        text=True,
    )
    done = False
    deadline = time.monotonic() + 60
    while not done and proc.poll() is None and time.monotonic() < deadline:
        for pid, name in descendants(proc.pid).items():
            if name != "pg_restore":
                continue
            try:
                read = int(Path(f"/proc/{pid}/io").read_text().split("rchar:")[1].split()[0])
            except (OSError, IndexError, ValueError):
                continue
            if read > 4 * 1024 * 1024:
                act(proc.pid, pid)
                done = True
                break
        time.sleep(0.002)
    _, stderr = proc.communicate(timeout=120)
    assert done, "pg_restore was never seen half-way"
    return proc.returncode, read_result(termination), stderr


def test_pg_restore_killed_half_way_leaves_the_live_database_intact(
    runner_config: ConfigFactory,
    restore_config: RestoreFactory,
    own_db: Callable[..., str],
    pg: PostgresServer,
    tmp_path: Path,
) -> None:
    db = own_db("ca")
    cfg = runner_config(components=["postgres"], overrides={"postgres": {"databases": [db]}})
    backup(cfg, tmp_path)
    pg.psql("UPDATE certificates SET status = 'REVOKED' WHERE NOT is_ca;", db)
    live = datagen.table_checksums(pg, db)

    code, result, stderr = interrupt_half_way(
        restore_config(cfg, components=["postgres"]),
        tmp_path,
        lambda _, pg_restore: os.kill(pg_restore, signal.SIGKILL),
    )

    assert code == 1, (result, stderr)
    assert f"pg_restore into {db}__restoring" in result["error"]
    assert "killed by signal 9" in result["error"]
    assert result["components"]["postgres"].startswith("Failed")
    assert datagen.table_checksums(pg, db) == live
    assert databases_like(pg, db) == [db]


def test_a_stopped_job_cleans_up_its_scratch_databases(
    runner_config: ConfigFactory,
    restore_config: RestoreFactory,
    own_db: Callable[..., str],
    pg: PostgresServer,
    tmp_path: Path,
) -> None:
    """SIGTERM (the Job deleted) while two databases restore at once: both scratch copies go."""
    dbs = [own_db("ca"), own_db("devicemanager")]
    cfg = runner_config(components=["postgres"], overrides={"postgres": {"databases": dbs}})
    backup(cfg, tmp_path)
    live = checksums(pg, dbs)

    code, result, stderr = interrupt_half_way(
        restore_config(cfg, components=["postgres"], postgresParallel=2),
        tmp_path,
        lambda runner, _: os.kill(runner, signal.SIGTERM),
    )

    assert code == 1, (result, stderr)
    assert result["reason"] == "Interrupted"
    assert checksums(pg, dbs) == live
    assert [d for db in dbs for d in databases_like(pg, db)] == dbs


# ---------------------------------------------------------------------- ownership, swap, rollback
def _db_props(pg: PostgresServer, db: str) -> list[list[str]]:
    """Owner, connection limit, ACL, settings, comment of a database (names are the test's)."""
    columns = (
        "pg_get_userbyid(d.datdba), d.datconnlimit, "
        "coalesce((SELECT string_agg(a::text, ',' ORDER BY a::text) FROM unnest(d.datacl) a), ''), "
        "coalesce((SELECT string_agg(c, ',' ORDER BY c) FROM pg_db_role_setting s, unnest(s.setconfig) c "
        "WHERE s.setdatabase = d.oid), ''), coalesce(shobj_description(d.oid, 'pg_database'), '')"
    )
    return pg.rows(f"SELECT {columns} FROM pg_database d WHERE d.datname = '{db}';")  # noqa: S608


def _object_owners(pg: PostgresServer, db: str) -> list[list[str]]:
    return pg.rows(
        "SELECT c.relname, pg_get_userbyid(c.relowner), coalesce(c.relacl::text, '') FROM pg_class c "
        "JOIN pg_namespace n ON n.oid = c.relnamespace WHERE n.nspname = 'public' ORDER BY 1;",
        db,
    )


def test_owner_grants_and_settings_survive_swap_and_fresh_server(
    runner_config: ConfigFactory,
    restore_config: RestoreFactory,
    own_db: Callable[..., str],
    pg: PostgresServer,
    tmp_path: Path,
) -> None:
    """A database owned by a non-superuser role, with CONNECT granted to another role only."""
    owner, reader = unique("lamassu_owner_"), unique("lamassu_reader_")
    pg.create_role(owner, "owner-password-1")
    pg.create_role(reader, "reader-password-1")
    db = own_db("kms", owner=owner)
    pg.psql(
        f'ALTER TABLE kms_keys OWNER TO "{owner}"; ALTER TABLE goose_db_version OWNER TO "{owner}";'
        f'GRANT SELECT ON kms_keys TO "{reader}";',
        db,
    )
    pg.psql(
        f'REVOKE ALL ON DATABASE "{db}" FROM PUBLIC; GRANT CONNECT ON DATABASE "{db}" TO "{reader}";'
        f"ALTER DATABASE \"{db}\" SET statement_timeout = '30s';"
        f'ALTER DATABASE "{db}" SET search_path = public, "$user";'
        f'ALTER ROLE "{reader}" IN DATABASE "{db}" SET work_mem = \'8MB\';'
        f'ALTER DATABASE "{db}" CONNECTION LIMIT 40;'
        f"COMMENT ON DATABASE \"{db}\" IS 'Lamassu KMS (it''s ours)';"
    )
    props, owners = _db_props(pg, db), _object_owners(pg, db)
    original = datagen.table_checksums(pg, db)
    cfg = runner_config(components=["postgres"], overrides={"postgres": {"databases": [db]}})
    backup(cfg, tmp_path)
    pg.psql("DELETE FROM kms_keys;", db)
    rcfg = restore_config(cfg, components=["postgres"])

    code, result, stderr = run_restore(rcfg, tmp=tmp_path)
    assert code == 0, (result.get("error"), stderr)
    assert datagen.table_checksums(pg, db) == original
    assert _db_props(pg, db) == props
    assert _object_owners(pg, db) == owners
    suffix = result["evidence"]["swapSuffix"]
    code, result, _ = run_restore(rcfg, tmp=tmp_path, step="finalize", swap_suffix=suffix)
    assert code == 0

    # A server without the database (a fresh cluster, the roles created): the database-level
    # properties come from the dump itself.
    pg.drop_database(db)
    code, result, stderr = run_restore(rcfg, tmp=tmp_path)
    assert code == 0, (result.get("error"), stderr)
    assert result["evidence"]["kept"] == []
    assert datagen.table_checksums(pg, db) == original
    assert _db_props(pg, db) == props
    assert _object_owners(pg, db) == owners


def test_rollback_puts_the_previous_databases_back(
    runner_config: ConfigFactory,
    restore_config: RestoreFactory,
    own_db: Callable[..., str],
    pg: PostgresServer,
    tmp_path: Path,
) -> None:
    """Restore with pg_restore -j2 from a spool file, then roll back on request: seconds."""
    dbs = [own_db("devicemanager"), own_db("dmsmanager")]
    original = checksums(pg, dbs)
    cfg = runner_config(components=["postgres"], overrides={"postgres": {"databases": dbs}})
    backup(cfg, tmp_path)
    for db in dbs:
        pg.psql("CREATE TABLE added_later (x int); INSERT INTO added_later VALUES (1);", db)
    damaged = checksums(pg, dbs)
    rcfg = restore_config(cfg, components=["postgres"], postgresJobs=2, swapSuffix="r1")

    code, result, stderr = run_restore(rcfg, tmp=tmp_path)
    assert code == 0, (result.get("error"), stderr)
    assert checksums(pg, dbs) == original
    code, result, stderr = run_restore(rcfg, tmp=tmp_path, step="rollback")
    assert code == 0, (result.get("error"), stderr)
    assert sorted(result["evidence"]["rolledBack"]) == sorted(dbs)
    assert result["evidence"]["timings"]["swapBack"] < 5
    assert checksums(pg, dbs) == damaged
    assert not [d for db in dbs for d in databases_like(pg, db) if d != db]


# ------------------------------------------------------------------------------------ drills
DRILL_POLICY = """
path "sys/mounts" {{ capabilities = ["read"] }}
path "sys/mounts/{mount}-drill-*" {{ capabilities = ["create", "read", "update", "delete", "sudo"] }}
path "{mount}-drill-*" {{ capabilities = ["create", "read", "update", "delete", "list"] }}
"""


def restore_token(openbao: OpenBao, mount: str) -> str:
    """A token for a drill of ``mount``: the backup policy plus scratch mounts."""
    client = openbao.client()
    backup_policy = openbao.write_backup_policy(mount, name=f"backup-{mount}")
    client.sys.create_or_update_policy(
        name=f"drill-{mount}", policy=DRILL_POLICY.format(mount=mount)
    )
    return openbao.create_token([backup_policy, f"drill-{mount}"])


def test_drill_restores_into_scratch_targets_and_leaves_nothing(
    runner_config: ConfigFactory,
    restore_config: RestoreFactory,
    pg: PostgresServer,
    dataset: datagen.Dataset,
    openbao: OpenBao,
    secrets: SecretDir,
    tmp_path: Path,
) -> None:
    dbs = list(dataset.databases)
    before = checksums(pg, dbs)
    cfg = runner_config(components=["postgres", "vault"])
    backup(cfg, tmp_path)
    assert cfg.vault is not None
    vault = {
        **cfg.vault.model_dump(by_alias=True, exclude_none=True),
        "tokenFile": secrets.put("drill-token", restore_token(openbao, KV_MOUNT)),
    }
    rcfg = restore_config(cfg, mode="Drill", vault=vault)

    code, result, stderr = run_restore(rcfg, tmp=tmp_path)

    assert code == 0, (result.get("error"), stderr)
    ev = result["evidence"]
    assert result["action"] == "drill"
    assert set(ev["postgres"]) == set(dbs)
    for db in dbs:
        assert ev["postgres"][db]["rows"] == sum(dataset.row_counts[db].values())
        assert len(ev["postgres"][db]["sha"]) == 16
    assert ev["postgres"]["kms"]["goose"] == datagen.GOOSE_VERSIONS["kms"][-1]
    assert ev["keyConsistency"]["ok"] is True
    assert ev["keyConsistency"]["kmsKeys"] == len(dataset.ca_key_ids)
    # Each CA's key read back from the scratch mount is its certificate's key pair.
    assert ev["keyConsistency"]["casKeyMatched"] == ev["keyConsistency"]["cas"] > 0
    assert ev["keyConsistency"]["source"].startswith(f"scratch mount(s) {KV_MOUNT}-drill-")
    assert ev["vault"][KV_MOUNT]["secrets"] == len(dataset.private_keys)
    assert ev["recoveryTimeSeconds"] > 0
    assert ev["teardown"] == {"left": []}
    assert not databases_like(pg, "__drill_")
    mounts = openbao.client().sys.list_mounted_secrets_engines()["data"]
    assert not [m for m in mounts if "-drill-" in m]
    assert checksums(pg, dbs) == before


def test_drill_reports_a_key_missing_from_the_kv_data(
    runner_config: ConfigFactory,
    restore_config: RestoreFactory,
    pg: PostgresServer,
    dataset: datagen.Dataset,
    openbao: OpenBao,
    secrets: SecretDir,
    tmp_path: Path,
) -> None:
    """The key store of the set lacks one CA's key and holds another's under the wrong id: the
    drill fails and names both, cleanly, without a word of either key."""
    mount = unique("keys-")
    openbao.enable_kv(mount)
    missing, swapped, other = dataset.ca_key_ids[3], dataset.ca_key_ids[4], dataset.ca_key_ids[5]
    held = {k: v for k, v in dataset.private_keys.items() if k != missing}
    held[swapped] = dataset.private_keys[other]
    openbao.write_keys(mount, held)
    try:
        token = secrets.put("token", restore_token(openbao, mount))
        cfg = runner_config(
            components=["postgres", "vault"],
            overrides={
                "postgres": {"databases": ["ca", "kms"]},
                "vault": {"raftSnapshot": False, "kvMounts": [mount], "tokenFile": token},
            },
        )
        backup(cfg, tmp_path)
        code, result, stderr = run_restore(restore_config(cfg, mode="Drill"), tmp=tmp_path)
    finally:
        openbao.client().sys.disable_secrets_engine(mount)

    assert code == 1, (result, stderr)
    assert result["reason"] == "KeyConsistencyFailed"
    assert missing in result["error"]
    assert "1 kms key(s) with a private key are not in" in result["error"]
    assert "1 CA certificate(s) have no key" in result["error"]
    assert f"key {swapped} in" in result["error"]
    assert "private key does not match the CA certificate's public key" in result["error"]
    ev = result["evidence"]["keyConsistency"]
    assert ev["ok"] is False
    assert ev["missingKmsKeyIds"] == [missing[:16]]
    assert ev["casWithoutKey"] == 1
    assert ev["casKeyMismatch"] == 1
    text = json.dumps(result) + stderr
    for value in (dataset.private_keys[other], dataset.private_keys[missing]):
        assert value[20:80] not in text
    assert result["components"]["keyConsistency"] == "Failed: KeyConsistencyFailed"
    assert result["evidence"]["teardown"] == {"left": []}
    assert not databases_like(pg, "__drill_")
    assert not [
        m for m in openbao.client().sys.list_mounted_secrets_engines()["data"] if "-drill-" in m
    ]


# -------------------------------------------------------------------------------------- Vault
def test_kv_restore_never_overwrites_a_differing_key_unless_told(
    runner_config: ConfigFactory,
    restore_config: RestoreFactory,
    dataset: datagen.Dataset,
    openbao: OpenBao,
    secrets: SecretDir,
    tmp_path: Path,
) -> None:
    mount = unique("kv-")
    openbao.enable_kv(mount)
    openbao.write_keys(mount, dataset.private_keys)
    rotated, lost = dataset.ca_key_ids[0], dataset.ca_key_ids[1]
    try:
        token = secrets.put("token", restore_token(openbao, mount))
        cfg = runner_config(
            components=["vault"],
            overrides={"vault": {"raftSnapshot": False, "kvMounts": [mount], "tokenFile": token}},
        )
        backup(cfg, tmp_path)
        openbao.write_keys(mount, {rotated: "cm90YXRlZA=="})
        openbao.client().secrets.kv.v2.delete_metadata_and_all_versions(
            path=lost, mount_point=mount
        )
        rcfg = restore_config(cfg, components=["vault"])

        code, result, stderr = run_restore(rcfg, tmp=tmp_path, step="plan")
        assert code == 0, (result.get("error"), stderr)
        (item,) = result["evidence"]["plan"]
        assert item["target"] == f"KV mount {mount}"
        assert "create 1" in item["detail"]
        assert "conflicting (left as they are) 1" in item["detail"]
        assert lost not in openbao.read_keys(mount)

        code, result, stderr = run_restore(rcfg, tmp=tmp_path)
        assert code == 0, (result.get("error"), stderr)
        ev = result["evidence"]["vault"][mount]
        assert (ev["created"], ev["conflicting"], ev["overwritten"]) == (1, 1, 0)
        assert ev["conflictingPaths"] == [rotated[:24]]
        assert any(rotated in w for w in result["warnings"])
        keys = openbao.read_keys(mount)
        assert keys[lost] == dataset.private_keys[lost]
        assert keys[rotated] == "cm90YXRlZA=="

        code, result, stderr = run_restore(rcfg, tmp=tmp_path, overwrite_existing=True)
        assert code == 0, (result.get("error"), stderr)
        assert result["evidence"]["vault"][mount]["overwritten"] == 1
        assert openbao.read_keys(mount) == dataset.private_keys
    finally:
        openbao.client().sys.disable_secrets_engine(mount)


def test_raft_snapshot_restore_is_proven_by_reading_back(
    runner_config: ConfigFactory,
    restore_config: RestoreFactory,
    dataset: datagen.Dataset,
    secrets: SecretDir,
    tmp_path_factory: pytest.TempPathFactory,
    tmp_path: Path,
) -> None:
    """Its own OpenBao: the snapshot replaces everything (a shared server would lose state)."""
    with OpenBao(tmp_path_factory.mktemp("bao-raft"), kv_mount=KV_MOUNT) as bao:
        bao.write_keys(KV_MOUNT, dataset.private_keys)
        token = secrets.put("own-token", bao.create_backup_token(KV_MOUNT))
        vault = {"address": bao.address, "caFile": str(bao.ca_cert_path), "tokenFile": token}
        cfg = runner_config(components=["vault"], overrides={"vault": vault})
        backup(cfg, tmp_path)
        lost = dataset.ca_key_ids[2]
        bao.client().secrets.kv.v2.delete_metadata_and_all_versions(path=lost, mount_point=KV_MOUNT)
        bao.write_keys(KV_MOUNT, {"0" * 64: "aW50cnVkZXI="})

        rcfg = restore_config(cfg, components=["vault"], vaultMethod="RaftSnapshot")
        code, result, stderr = run_restore(rcfg, tmp=tmp_path)

        assert code == 0, (result.get("error"), stderr)
        ev = result["evidence"]["vault"]
        assert ev["method"] == "RaftSnapshot"
        assert ev["canary"] is True
        assert ev["verifiedMounts"] == [KV_MOUNT]
        assert ev["snapshot"]["stateBytes"] > 0
        assert bao.read_keys(KV_MOUNT) == dataset.private_keys
        assert result["evidence"]["keyConsistency"]["ok"] is True


# ------------------------------------------------------------------------------------- config
@pytest.fixture(scope="module")
def control_plane(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Any]:
    """A real apiserver (etcd + kube-apiserver), for server-side apply."""
    from lamassu_platform.controlplane import ControlPlane, ControlPlaneError

    try:
        with ControlPlane(tmp_path_factory.mktemp("cp")) as cp:
            yield cp
    except ControlPlaneError as exc:  # pragma: no cover - depends on the cached build
        pytest.skip(f"no control plane: {exc}")


def test_config_is_planned_then_server_side_applied(
    runner_config: ConfigFactory,
    restore_config: RestoreFactory,
    control_plane: Any,
    tmp_path: Path,
) -> None:
    from kubernetes import client, config

    api = config.new_client_from_config(config_file=str(control_plane.kubeconfig))
    core = client.CoreV1Api(api)
    namespace = unique("lamassu-")
    core.create_namespace({"metadata": {"name": namespace}})
    labels = {"app.kubernetes.io/part-of": "lamassu"}
    core.create_namespaced_config_map(
        namespace,
        {
            "metadata": {"name": "ca-config", "labels": labels},
            "data": {"config": "db: ca\nport: 8085\n"},
        },
    )
    core.create_namespaced_config_map(
        namespace,
        {
            "metadata": {"name": "kms-config", "labels": labels},
            "data": {"config": "engine: vault\n"},
        },
    )
    core.create_namespaced_secret(
        namespace,
        {
            "metadata": {"name": "downstream-cert"},
            "type": "kubernetes.io/tls",
            "data": {"tls.crt": "Y2VydA==", "tls.key": "a2V5"},
        },
    )
    env = {"LAMASSU_KUBECONFIG": str(control_plane.kubeconfig)}
    settings = {
        "namespace": namespace,
        "configMaps": ["ca-config", "kms-config"],
        "secrets": ["downstream-cert"],
    }
    cfg = runner_config(components=["config"], overrides={"config": settings})
    code, result, stderr = run_runner(cfg, "backup", env=env, tmp=tmp_path)
    assert code == 0, (result, stderr)
    # Drift: a changed key plus a key added by hand, a deleted ConfigMap, an untouched Secret.
    core.patch_namespaced_config_map(
        "ca-config", namespace, {"data": {"config": "db: other\n", "extra": "x"}}
    )
    core.delete_namespaced_config_map("kms-config", namespace)
    rcfg = restore_config(cfg, components=["config"], config={"namespace": namespace})

    code, result, stderr = run_restore(rcfg, tmp=tmp_path, step="plan", env=env)
    assert code == 0, (result.get("error"), stderr)
    plan = {p["target"]: p for p in result["evidence"]["plan"]}
    assert plan[f"ConfigMap {namespace}/ca-config"]["action"] == "update"
    assert (
        plan[f"ConfigMap {namespace}/ca-config"]["detail"]
        == "keys config; kept live-only keys extra"
    )
    assert plan[f"ConfigMap {namespace}/kms-config"]["action"] == "create"
    assert plan[f"Secret {namespace}/downstream-cert"]["action"] == "unchanged"
    assert "Y2VydA" not in json.dumps(result)
    with pytest.raises(client.ApiException):
        core.read_namespaced_config_map("kms-config", namespace)

    code, result, stderr = run_restore(rcfg, tmp=tmp_path, env=env)
    assert code == 0, (result.get("error"), stderr)
    assert result["evidence"]["config"] == {"create": 1, "update": 1, "unchanged": 1}
    restored = core.read_namespaced_config_map("ca-config", namespace)
    assert restored.data == {"config": "db: ca\nport: 8085\n", "extra": "x"}
    assert "lamassu-backup" in {m.manager for m in restored.metadata.managed_fields}
    assert core.read_namespaced_config_map("kms-config", namespace).data == {
        "config": "engine: vault\n"
    }
    assert core.read_namespaced_config_map("kms-config", namespace).metadata.labels == labels
    core.delete_namespace(namespace)
    api.close()


def kv_state(openbao: OpenBao, mount: str) -> tuple[list[str], dict[str, Any]]:
    """Every path of a mount (listed, deleted versions included) and the live data of each."""
    kv = openbao.client().secrets.kv.v2
    paths = openbao.list_key_ids(mount)
    live: dict[str, Any] = {}
    for path in paths:
        try:
            live[path] = kv.read_secret_version(
                path=path, mount_point=mount, raise_on_deleted_version=True
            )["data"]["data"]
        except Exception:  # noqa: BLE001, S112 - a deleted latest version reads as absent
            continue
    return paths, live


def config_state(core: Any, namespace: str) -> dict[str, Any]:
    """Every ConfigMap and Secret of the namespace the test made: data, labels, type."""
    out: dict[str, Any] = {}
    for cm in core.list_namespaced_config_map(namespace).items:
        if cm.metadata.name != "kube-root-ca.crt":
            out[f"ConfigMap/{cm.metadata.name}"] = (cm.data, cm.metadata.labels)
    for secret in core.list_namespaced_secret(namespace).items:
        if not secret.metadata.name.startswith("restore-"):  # not the undo journal
            out[f"Secret/{secret.metadata.name}"] = (
                secret.data,
                secret.metadata.labels,
                secret.type,
            )
    return out


def test_kv_and_config_are_put_back_by_an_undo_and_by_the_rollback_step(
    runner_config: ConfigFactory,
    restore_config: RestoreFactory,
    dataset: datagen.Dataset,
    openbao: OpenBao,
    secrets: SecretDir,
    control_plane: Any,
    tmp_path: Path,
) -> None:
    """After the KV writes and the config applies, the apiserver refuses the last object (an
    immutable Secret changed since): every KV path and every object is as before, exit 1. Then a
    restore that succeeds, and its rollback step (another process, from the undo journal): the
    same again."""
    from kubernetes import client, config

    api = config.new_client_from_config(config_file=str(control_plane.kubeconfig))
    core = client.CoreV1Api(api)
    namespace = unique("lamassu-")
    core.create_namespace({"metadata": {"name": namespace}})
    labels = {"app.kubernetes.io/part-of": "lamassu"}
    core.create_namespaced_config_map(
        namespace, {"metadata": {"name": "ca-config", "labels": labels}, "data": {"config": "v1"}}
    )
    core.create_namespaced_config_map(
        namespace, {"metadata": {"name": "kms-config"}, "data": {"config": "engine: vault"}}
    )
    core.create_namespaced_secret(
        namespace,
        {
            "metadata": {"name": "z-cert"},
            "type": "kubernetes.io/tls",
            "data": {"tls.crt": "Y2VydA==", "tls.key": "a2V5"},
            "immutable": True,
        },
    )
    mount = unique("kv-")
    openbao.enable_kv(mount)
    openbao.write_keys(mount, dataset.private_keys)
    rotated, lost = dataset.ca_key_ids[0], dataset.ca_key_ids[1]
    env = {"LAMASSU_KUBECONFIG": str(control_plane.kubeconfig)}
    try:
        token = secrets.put("token", restore_token(openbao, mount))
        cfg = runner_config(
            components=["vault", "config"],
            overrides={
                "vault": {"raftSnapshot": False, "kvMounts": [mount], "tokenFile": token},
                "config": {
                    "namespace": namespace,
                    "configMaps": ["ca-config", "kms-config"],
                    "secrets": ["z-cert"],
                },
            },
        )
        code, result, stderr = run_runner(cfg, "backup", env=env, tmp=tmp_path)
        assert code == 0, (result, stderr)
        # Since the backup: a key rotated, one lost, a config changed, one deleted.
        openbao.write_keys(mount, {rotated: "cm90YXRlZA=="})
        openbao.client().secrets.kv.v2.delete_metadata_and_all_versions(
            path=lost, mount_point=mount
        )
        core.patch_namespaced_config_map(
            "ca-config", namespace, {"data": {"config": "v2", "extra": "x"}}
        )
        core.delete_namespaced_config_map("kms-config", namespace)
        core.delete_namespaced_secret("z-cert", namespace)
        core.create_namespaced_secret(
            namespace,
            {
                "metadata": {"name": "z-cert"},
                "type": "kubernetes.io/tls",
                "data": {"tls.crt": "bmV3", "tls.key": "bmV3"},
                "immutable": True,
            },
        )
        kv_before, config_before = kv_state(openbao, mount), config_state(core, namespace)
        rcfg = restore_config(
            cfg,
            components=["vault", "config"],
            namespace=namespace,  # the undo journal's
            config={"namespace": namespace},
            overwriteExisting=True,
            swapSuffix="u1",
        )

        code, result, stderr = run_restore(rcfg, tmp=tmp_path, env=env)

        assert code == 1, (result, stderr)
        assert "applying Secret" in result["error"]
        assert "the KV writes were undone" in result["error"]
        assert "the config was put back" in result["error"]
        assert sorted(result["evidence"]["rolledBack"]) == ["config", "vault"]
        assert "changed" not in result["evidence"]
        assert kv_state(openbao, mount) == kv_before
        assert config_state(core, namespace) == config_before
        assert "cm90YXRlZA" not in stderr + json.dumps(result)  # no value reaches a log

        # A restore that succeeds, then the rollback step, in another process, from the journal.
        core.delete_namespaced_secret("z-cert", namespace)
        config_before = config_state(core, namespace)
        journaled = rcfg.model_copy(update={"journal": "restore-undo"})
        code, result, stderr = run_restore(journaled, tmp=tmp_path, env=env)
        assert code == 0, (result.get("error"), stderr)
        assert openbao.read_keys(mount) == dataset.private_keys
        assert core.read_namespaced_config_map("kms-config", namespace).data == {
            "config": "engine: vault"
        }
        assert core.read_namespaced_secret("restore-undo", namespace).data
        code, result, stderr = run_restore(journaled, tmp=tmp_path, step="rollback", env=env)
        assert code == 0, (result.get("error"), stderr)
        assert f"vault:{mount}" in result["evidence"]["rolledBack"]
        assert "config:ConfigMap/kms-config" in result["evidence"]["rolledBack"]
        assert kv_state(openbao, mount) == kv_before
        assert config_state(core, namespace) == config_before
        with pytest.raises(client.ApiException):
            core.read_namespaced_secret("restore-undo", namespace)  # dropped once used
    finally:
        openbao.client().sys.disable_secrets_engine(mount)
        core.delete_namespace(namespace)
        api.close()


# ------------------------------------------------------------------------ other layouts, volumes
def test_one_database_with_schemas_layout(
    runner_config: ConfigFactory,
    restore_config: RestoreFactory,
    pg: PostgresServer,
    tmp_path: Path,
) -> None:
    """Lamassu's proposed layout: one database ``lamassu``, one schema per service."""
    try:
        datagen.generate(pg, 1, seed=SEED, layout="schemas")  # the shared KV keys match
        before = datagen.table_checksums(pg, "lamassu")
        postgres = {"layout": "Schemas", "database": "lamassu", "schemas": list(datagen.SERVICES)}
        cfg = runner_config(components=["postgres"], overrides={"postgres": postgres})
        backup(cfg, tmp_path)
        code, result, stderr = run_restore(restore_config(cfg, mode="Drill"), tmp=tmp_path)
        assert code == 0, (result.get("error"), stderr)
        ev = result["evidence"]["postgres"]["lamassu"]
        assert ev["goose"]["lamassu.ca"] == datagen.GOOSE_VERSIONS["ca"][-1]
        assert len(ev["sha"]) == len(datagen.SERVICES)
        assert not databases_like(pg, "__drill_")

        pg.psql("DELETE FROM ca.certificates WHERE NOT is_ca; DROP TABLE alerts.events;", "lamassu")
        code, result, stderr = run_restore(restore_config(cfg), tmp=tmp_path)
        assert code == 0, (result.get("error"), stderr)
        assert datagen.table_checksums(pg, "lamassu") == before
        # Restoring one schema in place would drop the others with the swap: refused.
        code, result, _ = run_restore(restore_config(cfg, databases=["lamassu.ca"]), tmp=tmp_path)
        assert code == 1
        assert "also holds schemas alerts, devicemanager, dmsmanager, kms, va" in result["error"]
        assert datagen.table_checksums(pg, "lamassu") == before
    finally:
        for db in databases_like(pg, "lamassu"):
            pg.drop_database(db)


def test_volume_restored_in_place_and_in_a_drill(
    runner_config: ConfigFactory,
    restore_config: RestoreFactory,
    tmp_path: Path,
) -> None:
    """File crypto engine keys: swapped in with modes kept, old files aside until finalize."""
    volume = tmp_path / "kms-fs"
    (volume / "keys").mkdir(parents=True)
    originals = {}
    for i in range(3):
        key = volume / "keys" / f"{i:064x}.pem"
        key.write_bytes(os.urandom(200))
        key.chmod(0o600)
        originals[key.name] = key.read_bytes()
    volumes = [{"name": "kms-fs-keys", "path": str(volume)}]
    cfg = runner_config(components=["volumes"], overrides={"volumes": volumes})
    backup(cfg, tmp_path)
    (volume / "keys" / f"{0:064x}.pem").write_bytes(b"overwritten")
    (volume / "keys" / f"{1:064x}.pem").unlink()
    (volume / "keys" / "stray.pem").write_bytes(b"new")
    rcfg = restore_config(cfg, components=["volumes"], volumes=volumes)

    code, result, stderr = run_restore(rcfg.model_copy(update={"mode": "Drill"}), tmp=tmp_path)
    assert code == 0, (result.get("error"), stderr)
    assert result["evidence"]["volumes"] == {"kms-fs-keys": 3}
    assert result["evidence"]["teardown"] == {"left": []}

    code, result, stderr = run_restore(rcfg, tmp=tmp_path)
    assert code == 0, (result.get("error"), stderr)
    restored = {p.name: p.read_bytes() for p in (volume / "keys").iterdir()}
    assert restored == originals
    assert all((volume / "keys" / n).stat().st_mode & 0o777 == 0o600 for n in originals)
    aside = [p for p in volume.iterdir() if p.name.startswith(".lamassu-pre-restore-")]
    assert len(aside) == 1
    assert (aside[0] / "keys" / "stray.pem").read_bytes() == b"new"
    suffix = aside[0].name.removeprefix(".lamassu-pre-restore-")
    code, result, _ = run_restore(rcfg, tmp=tmp_path, step="finalize", swap_suffix=suffix)
    assert code == 0
    assert [p.name for p in volume.iterdir()] == ["keys"]


def test_a_failure_after_the_swap_swaps_the_databases_back(
    runner_config: ConfigFactory,
    restore_config: RestoreFactory,
    own_db: Callable[..., str],
    pg: PostgresServer,
    control_plane: Any,
    tmp_path: Path,
) -> None:
    """The apiserver refuses the config (an immutable ConfigMap changed since): the databases,
    already swapped, are swapped back; nothing else had changed, so the exit code is 1."""
    from kubernetes import client, config

    api = config.new_client_from_config(config_file=str(control_plane.kubeconfig))
    core = client.CoreV1Api(api)
    namespace = unique("lamassu-")
    core.create_namespace({"metadata": {"name": namespace}})
    core.create_namespaced_config_map(
        namespace, {"metadata": {"name": "ca-config"}, "data": {"config": "v1"}, "immutable": True}
    )
    db = own_db("va")
    env = {"LAMASSU_KUBECONFIG": str(control_plane.kubeconfig)}
    cfg = runner_config(
        components=["postgres", "config"],
        overrides={
            "postgres": {"databases": [db]},
            "config": {"namespace": namespace, "configMaps": ["ca-config"]},
        },
    )
    code, result, stderr = run_runner(cfg, "backup", env=env, tmp=tmp_path)
    assert code == 0, (result, stderr)
    core.delete_namespaced_config_map("ca-config", namespace)
    core.create_namespaced_config_map(
        namespace, {"metadata": {"name": "ca-config"}, "data": {"config": "v2"}, "immutable": True}
    )
    pg.psql("TRUNCATE va_role;", db)
    live = datagen.table_checksums(pg, db)
    rcfg = restore_config(cfg, config={"namespace": namespace})

    code, result, stderr = run_restore(rcfg, tmp=tmp_path, env=env)

    assert code == 1, (result, stderr)
    assert "they were swapped back" in result["error"]
    assert "applying ConfigMap" in result["error"]
    assert result["evidence"]["rolledBack"] == ["postgres"]
    assert result["components"]["postgres"] == "RolledBack"
    assert result["components"]["config"].startswith("Failed")
    assert datagen.table_checksums(pg, db) == live
    assert databases_like(pg, db) == [db]
    core.delete_namespace(namespace)
    api.close()


def test_a_restore_through_a_script_matches_a_direct_one(
    runner_config: ConfigFactory,
    restore_config: RestoreFactory,
    pg: PostgresServer,
    dataset: datagen.Dataset,
    tmp_path: Path,
) -> None:
    """The path a newer pg_restore than the server takes (the runner image's pg_restore 17 into
    PostgreSQL 15 or 16): pg_restore renders SQL, psql runs it. Forced here on a server whose
    client has the same major, it must restore every table exactly as the direct path does."""
    dbs = ["ca", "kms"]
    before = checksums(pg, dbs)
    cfg = runner_config(components=["postgres"])
    backup(cfg, tmp_path)
    try:
        pg.psql("DELETE FROM certificates WHERE NOT is_ca;", "ca")
        pg.psql("DELETE FROM kms_keys WHERE NOT has_private_key;", "kms")
        assert checksums(pg, dbs) != before
        rcfg = restore_config(cfg, components=["postgres"], databases=dbs, keyConsistency=False)
        code, result, stderr = run_restore(
            rcfg, tmp=tmp_path, env={"LAMASSU_RESTORE_VIA_SCRIPT": "1"}
        )
        assert code == 0, (result.get("error"), stderr)
        assert checksums(pg, dbs) == before
        suffix = result["evidence"]["swapSuffix"]
        code, result, stderr = run_restore(rcfg, tmp=tmp_path, step="finalize", swap_suffix=suffix)
        assert code == 0, (result, stderr)
    except BaseException:
        for db in databases_like(pg, "__"):
            pg.drop_database(db)
        datagen.generate(pg, DATA_MIB, seed=SEED)
        raise
