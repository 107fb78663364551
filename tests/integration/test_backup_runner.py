"""The backup runner against real PostgreSQL, GnuPG, an S3 server and OpenBao."""

from __future__ import annotations

import contextlib
import hashlib
import json
import os
import signal
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from lamassu_platform import datagen
from lamassu_platform.gpg import GpgKeys
from lamassu_platform.openbao import OpenBao
from lamassu_platform.postgres import PostgresServer
from lamassu_platform.s3 import S3Server

from .conftest import ConfigFactory, SecretDir, run_runner
from .faults import FaultyS3Proxy

pytestmark = pytest.mark.platform


def keys_under(s3: S3Server, bucket: str, prefix: str) -> dict[str, int]:
    out: dict[str, int] = {}
    for page in s3.client().get_paginator("list_objects_v2").paginate(Bucket=bucket, Prefix=prefix):
        for item in page.get("Contents", []):
            out[item["Key"][len(prefix) :]] = item["Size"]
    return out


def test_backup_all_components_lands_in_the_layout(
    runner_config: ConfigFactory,
    s3: S3Server,
    dataset: datagen.Dataset,
    tmp_path: Path,
    gpg_keys: GpgKeys,
) -> None:
    cfg = runner_config(components=["postgres", "vault"])
    code, result, stderr = run_runner(cfg, "backup", tmp=tmp_path)
    assert code == 0, (result, stderr)
    assert result["ok"] is True
    objects = keys_under(s3, cfg.destination.bucket, cfg.set_prefix)
    expected = {f"postgres/{db}.dump.zst.gpg" for db in dataset.databases}
    expected |= {f"postgres/{db}.dump.sha256" for db in dataset.databases}
    expected |= {"vault/raft.snap.gpg", "vault/raft.snap.sha256"}
    expected |= {"vault/kv-lamassu-kms.json.gpg", "vault/kv-lamassu-kms.json.sha256"}
    expected |= {"manifest.json", "manifest.json.asc", "parts/postgres.json", "parts/vault.json"}
    assert set(objects) == expected
    assert all(size > 0 for size in objects.values())

    client = s3.client()
    manifest_bytes = client.get_object(
        Bucket=cfg.destination.bucket, Key=cfg.set_prefix + "manifest.json"
    )["Body"].read()
    assert result["manifestSha256"] == hashlib.sha256(manifest_bytes).hexdigest()
    manifest = json.loads(manifest_bytes)
    assert manifest["complete"] is True
    assert manifest["signedBy"] == gpg_keys.signing_fingerprint
    for artifact in manifest["artifacts"]:
        body = client.get_object(
            Bucket=cfg.destination.bucket, Key=cfg.set_prefix + artifact["key"]
        )
        data = body["Body"].read()
        assert hashlib.sha256(data).hexdigest() == artifact["sha256"]
        assert len(data) == artifact["sizeBytes"]
        assert body["ServerSideEncryption"] == "aws:kms"
    ca = next(a for a in manifest["artifacts"] if a["name"] == "ca")
    assert (
        ca["details"]["rowCounts"]["public.certificates"]
        == dataset.row_counts["ca"]["public.certificates"]
    )
    assert ca["details"]["goose"]["public"]["version"] > 0

    # The detached signature verifies with the signing public key, as a person would check it.
    sig = tmp_path / "manifest.json.asc"
    sig.write_bytes(
        client.get_object(Bucket=cfg.destination.bucket, Key=cfg.set_prefix + "manifest.json.asc")[
            "Body"
        ].read()
    )
    man = tmp_path / "manifest.json"
    man.write_bytes(manifest_bytes)
    home = gpg_keys.fresh_home("verify", gpg_keys.signing_public_asc)
    verify = subprocess.run(
        ["gpg", "--homedir", str(home), "--verify", str(sig), str(man)],
        capture_output=True,
        check=False,
    )
    assert verify.returncode == 0, verify.stderr


def test_restore_by_hand_exactly_as_the_runbook(
    runner_config: ConfigFactory,
    s3: S3Server,
    pg: PostgresServer,
    dataset: datagen.Dataset,
    gpg_keys: GpgKeys,
    tmp_path: Path,
) -> None:
    """Break-glass: aws s3 cp, gpg --decrypt, (zstd -d), sha256sum -c, pg_restore: no operator."""
    cfg = runner_config(components=["postgres"])
    code, result, stderr = run_runner(cfg, "backup", tmp=tmp_path)
    assert code == 0, (result, stderr)
    work = tmp_path / "by-hand"
    work.mkdir()
    client = s3.client()
    for name in ("ca.dump.zst.gpg", "ca.dump.sha256"):
        client.download_file(
            cfg.destination.bucket, f"{cfg.set_prefix}postgres/{name}", str(work / name)
        )
    env = {**os.environ, "GNUPGHOME": str(gpg_keys.operator_home)}
    sh = "gpg --batch --decrypt ca.dump.zst.gpg | zstd -d -q > ca.dump && sha256sum -c ca.dump.sha256"
    check = subprocess.run(
        ["bash", "-o", "pipefail", "-c", sh],
        cwd=work,
        env=env,
        capture_output=True,
        text=True,
        check=False,
    )
    assert check.returncode == 0, check.stderr
    assert "ca.dump: OK" in check.stdout

    pg.create_database("ca_by_hand")
    try:
        restore = subprocess.run(
            [pg.tool("pg_restore"), "--no-owner", "-d", "ca_by_hand", str(work / "ca.dump")],
            env=pg.subprocess_env(),
            capture_output=True,
            text=True,
            check=False,
        )
        assert restore.returncode == 0, restore.stderr
        assert datagen.table_checksums(pg, "ca_by_hand") == datagen.table_checksums(pg, "ca")
    finally:
        pg.drop_database("ca_by_hand")


def set_objects(s3: S3Server, bucket: str, prefix: str) -> set[str]:
    return set(keys_under(s3, bucket, prefix))


def assert_not_complete(s3: S3Server, bucket: str, prefix: str, failed_folder: str) -> None:
    """The failed set never looks complete: no manifest (or one saying incomplete), no artifact
    of the failed component, and no multipart upload left behind."""
    objects = set_objects(s3, bucket, prefix)
    assert not any(k.startswith(failed_folder) for k in objects), objects
    if "manifest.json" in objects:
        body = s3.client().get_object(Bucket=bucket, Key=prefix + "manifest.json")["Body"].read()
        assert json.loads(body)["complete"] is False
    uploads = s3.client().list_multipart_uploads(Bucket=bucket, Prefix=prefix).get("Uploads", [])
    assert uploads == []


def test_postgres_unreachable(runner_config: ConfigFactory, s3: S3Server, tmp_path: Path) -> None:
    from lamassu_platform._util import free_port

    cfg = runner_config(components=["postgres"], overrides={"postgres": {"port": free_port()}})
    code, result, _ = run_runner(cfg, "backup", tmp=tmp_path)
    assert code != 0
    assert result["ok"] is False
    assert "PostgreSQL" in result["error"]
    assert "connect" in result["error"].lower() or "refused" in result["error"].lower()
    assert_not_complete(s3, cfg.destination.bucket, cfg.set_prefix, "postgres/")
    assert "manifest.json" not in set_objects(s3, cfg.destination.bucket, cfg.set_prefix)


def test_s3_refusing_mid_upload(runner_config: ConfigFactory, s3: S3Server, tmp_path: Path) -> None:
    """The third part of the big dump is refused: the upload is aborted, nothing of it is visible."""
    with FaultyS3Proxy(
        s3.endpoint, lambda method, path: method == "PUT" and "partNumber=2" in path
    ) as proxy:
        cfg = runner_config(
            components=["postgres"], overrides={"destination": {"endpoint": proxy.endpoint}}
        )
        code, result, _ = run_runner(cfg, "backup", tmp=tmp_path)
    assert proxy.refused, "the fault was never triggered"
    assert code != 0
    assert "UploadPart" in result["error"]
    assert "AccessDenied" in result["error"]
    assert_not_complete(s3, cfg.destination.bucket, cfg.set_prefix, "postgres/")


@pytest.mark.parametrize(
    ("content", "message"),
    [
        ("secret", "PRIVATE key"),
        ("garbage", "holds no OpenPGP public key"),
    ],
)
def test_unusable_recipient_key(
    runner_config: ConfigFactory,
    s3: S3Server,
    gpg_keys: GpgKeys,
    secrets: SecretDir,
    tmp_path: Path,
    content: str,
    message: str,
) -> None:
    value = gpg_keys.decryption_key_asc.read_bytes() if content == "secret" else b"not a key\n"
    cfg = runner_config(
        components=["postgres"],
        overrides={"gpg": {"recipientsFile": secrets.put("bad.asc", value)}},
    )
    code, result, _ = run_runner(cfg, "backup", tmp=tmp_path)
    assert code != 0
    assert message in result["error"]
    assert "recipientsSecret" in result["error"]
    assert "PRIVATE KEY BLOCK" not in json.dumps(result)
    assert_not_complete(s3, cfg.destination.bucket, cfg.set_prefix, "postgres/")


def test_openbao_sealed(
    runner_config: ConfigFactory, openbao: OpenBao, s3: S3Server, tmp_path: Path
) -> None:
    cfg = runner_config(components=["postgres", "vault"])
    openbao.seal()
    try:
        code, result, _ = run_runner(cfg, "backup", tmp=tmp_path)
    finally:
        openbao.unseal()
    assert code != 0
    assert result["components"]["postgres"] == "Completed"
    assert result["components"]["vault"].startswith("Failed")
    assert "sealed" in result["error"]
    assert_not_complete(s3, cfg.destination.bucket, cfg.set_prefix, "vault/")
    manifest = json.loads(
        s3.client()
        .get_object(Bucket=cfg.destination.bucket, Key=cfg.set_prefix + "manifest.json")["Body"]
        .read()
    )
    assert manifest["complete"] is False
    assert manifest["components"]["vault"]["status"] == "Failed"
    assert {a["component"] for a in manifest["artifacts"]} == {"postgres"}


def test_no_secret_reaches_the_output(
    runner_config: ConfigFactory, s3: S3Server, pg: PostgresServer, openbao: OpenBao, tmp_path: Path
) -> None:
    """Even when a tool fails, the result, stdout and stderr carry no secret value."""
    from lamassu_platform._util import free_port

    cfg = runner_config(
        components=["postgres", "vault"], overrides={"postgres": {"port": free_port()}}
    )
    code, result, stderr = run_runner(cfg, "backup", tmp=tmp_path)
    assert code != 0
    text = json.dumps(result) + stderr
    token = Path(cfg.vault.token_file).read_text() if cfg.vault and cfg.vault.token_file else ""
    for secret in (pg.password, s3.secret_key, token):
        assert secret
        assert secret not in text


def test_volume_archive_keeps_files_and_modes(
    runner_config: ConfigFactory, s3: S3Server, gpg_keys: GpgKeys, tmp_path: Path
) -> None:
    """File crypto engine keys (0600 PEMs) survive a backup and a by-hand restore byte for byte."""
    volume = tmp_path / "kms-fs"
    (volume / "keys").mkdir(parents=True)
    for i in range(3):
        key = volume / "keys" / f"{i:064x}.pem"
        key.write_bytes(os.urandom(256))
        key.chmod(0o600)
    cfg = runner_config(
        components=["volumes"],
        overrides={"volumes": [{"name": "kms-fs-keys", "path": str(volume)}]},
    )
    code, result, stderr = run_runner(cfg, "backup", tmp=tmp_path)
    assert code == 0, (result, stderr)
    out = tmp_path / "restored"
    out.mkdir()
    blob = s3.client().get_object(
        Bucket=cfg.destination.bucket, Key=cfg.set_prefix + "volumes/kms-fs-keys.tar.gz.gpg"
    )
    encrypted = tmp_path / "v.gpg"
    encrypted.write_bytes(blob["Body"].read())
    env = {**os.environ, "GNUPGHOME": str(gpg_keys.operator_home)}
    sh = f"gpg --batch --decrypt {encrypted} | tar -xz -C {out}"
    done = subprocess.run(
        ["bash", "-o", "pipefail", "-c", sh], env=env, capture_output=True, text=True, check=False
    )
    assert done.returncode == 0, done.stderr
    for original in (volume / "keys").iterdir():
        copy = out / "keys" / original.name
        assert copy.read_bytes() == original.read_bytes()
        assert copy.stat().st_mode & 0o777 == 0o600


def test_aws_kms_metadata_warns_about_pending_deletion(
    runner_config: ConfigFactory, s3: S3Server, secrets: SecretDir, tmp_path: Path
) -> None:
    kms = s3.client("kms")
    doomed = kms.create_key(Description="issuing CA key")["KeyMetadata"]["KeyId"]
    kms.create_alias(AliasName=f"alias/{doomed[:8]}-ca", TargetKeyId=doomed)
    kms.schedule_key_deletion(KeyId=doomed, PendingWindowInDays=7)
    cfg = runner_config(
        components=["awsKms"],
        overrides={
            "awsKms": {
                "region": s3.region,
                "endpoint": s3.endpoint,
                "accessKeyIdFile": secrets.put("kms-id", s3.access_key),
                "secretAccessKeyFile": secrets.put("kms-secret", s3.secret_key),
            }
        },
    )
    code, result, stderr = run_runner(cfg, "backup", tmp=tmp_path)
    assert code == 0, (result, stderr)
    warnings = " ".join(result["warnings"])
    assert doomed in warnings
    assert "scheduled for deletion" in warnings
    manifest = json.loads(
        s3.client()
        .get_object(Bucket=cfg.destination.bucket, Key=cfg.set_prefix + "manifest.json")["Body"]
        .read()
    )
    assert manifest["components"]["awsKms"]["warnings"]
    assert manifest["artifacts"][0]["details"]["pendingDeletion"] >= 1


def test_a_run_never_writes_into_another_runs_committed_set(
    runner_config: ConfigFactory, s3: S3Server, tmp_path: Path
) -> None:
    """Issue 10: a second run pointed at a committed set's folder is refused, whole.

    Before, it wrote its artifacts into the folder and replaced the manifest, while the first
    run's record went on claiming a manifest SHA-256 that was no longer in the bucket.
    """
    first = runner_config(components=["vault"])
    code, result, stderr = run_runner(first, "backup", tmp=tmp_path)
    assert code == 0, (result, stderr)
    bucket, prefix = first.destination.bucket, first.set_prefix
    before = s3.client().get_object(Bucket=bucket, Key=prefix + "manifest.json")["Body"].read()
    assert hashlib.sha256(before).hexdigest() == result["manifestSha256"]

    intruder = first.model_copy(update={"backup": first.backup + "-other"})
    code, result, _ = run_runner(intruder, "backup", tmp=tmp_path)
    assert code != 0
    assert "SetAlreadyCommitted" in json.dumps(result)
    code, result, _ = run_runner(intruder, "commit", "--allow-partial", tmp=tmp_path)
    assert code != 0
    assert "already holds the set of backup" in json.dumps(result)
    after = s3.client().get_object(Bucket=bucket, Key=prefix + "manifest.json")["Body"].read()
    assert after == before

    # The same run's commit, retried (a Job retry after it wrote the manifest), is a no-op.
    code, result, stderr = run_runner(first, "commit", "--allow-partial", tmp=tmp_path)
    assert code == 0, (result, stderr)
    assert result["manifestSha256"] == hashlib.sha256(before).hexdigest()
    final = s3.client().get_object(Bucket=bucket, Key=prefix + "manifest.json")["Body"].read()
    assert final == before


# ------------------------------------------------------------------------------------ SIGTERM
def _processes_below(pid: int) -> dict[int, str]:
    """pid -> command name of every live process below ``pid``."""
    parents: dict[int, tuple[int, str]] = {}
    for stat in Path("/proc").glob("[0-9]*/stat"):
        try:
            text = stat.read_text()
        except OSError:
            continue
        rest = text[text.rindex(")") + 2 :].split()
        if rest[0] != "Z":
            parents[int(stat.parent.name)] = (
                int(rest[1]),
                text[text.index("(") + 1 : text.rindex(")")],
            )
    found: dict[int, str] = {}
    frontier = [pid]
    while frontier:
        current = frontier.pop()
        for child, (ppid, name) in parents.items():
            if ppid == current and child not in found:
                found[child] = name
                frontier.append(child)
    return found


def _alive(pid: int) -> bool:
    try:
        return Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0] != "Z"
    except OSError:
        return False


@pytest.fixture
def big_database(pg: PostgresServer) -> Iterator[str]:
    """A database whose dump takes seconds to stream (~130 MiB of hex text)."""
    name = f"t_big_{os.getpid()}"
    pg.drop_database(name)
    pg.create_database(name)
    pg.psql(
        "CREATE TABLE big (id int PRIMARY KEY, payload text NOT NULL); "
        "INSERT INTO big SELECT g, md5(g::text) || md5((-g)::text) "
        "FROM generate_series(1, 1500000) g;",
        name,
    )
    yield name
    pg.drop_database(name)


def test_sigterm_mid_stream_stops_cleans_up_and_records_interrupted(
    runner_config: ConfigFactory, s3: S3Server, big_database: str, tmp_path: Path
) -> None:
    """The Job deleted (or past its deadline) while two dumps stream in the worker threads.

    The runner kills the pipelines (pg_dump, zstd, gpg), aborts the uploads, removes what the
    component stored (the small database's dump may already be complete), records the component
    as Interrupted, commits nothing and exits within seconds, far inside the grace period.
    """
    cfg = runner_config(
        components=["postgres"],
        overrides={"postgres": {"databases": [big_database, "ca"], "parallel": 2}},
    )
    termination = tmp_path / "termination-log"
    termination.write_text("")
    proc = subprocess.Popen(
        [sys.executable, "-m", "lamassu_backup", "runner", "backup", "--component", "postgres"],
        env={
            **os.environ,
            "LAMASSU_RUNNER_CONFIG": cfg.model_dump_json(by_alias=True, exclude_none=True),
            "LAMASSU_TERMINATION_LOG": str(termination),
        },
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
        text=True,
    )
    pipeline: dict[int, str] = {}
    deadline = time.monotonic() + 120
    while proc.poll() is None and time.monotonic() < deadline:
        below = _processes_below(proc.pid)
        dumps = [p for p, name in below.items() if name == "pg_dump"]
        written = 0
        for pid in dumps:
            with contextlib.suppress(OSError, IndexError, ValueError):
                io = Path(f"/proc/{pid}/io").read_text()
                written = max(written, int(io.split("wchar:")[1].split()[0]))
        if written > 8 * 1024 * 1024:
            pipeline = below
            break
        time.sleep(0.005)
    assert pipeline, f"the big dump was never seen mid-stream: {proc.poll()}"
    assert {"pg_dump", "zstd", "gpg"} <= set(pipeline.values()), pipeline
    sent = time.monotonic()
    proc.send_signal(signal.SIGTERM)
    _, stderr = proc.communicate(timeout=60)
    took = time.monotonic() - sent

    assert proc.returncode != 0
    assert took < 5, f"the runner took {took:.1f}s to stop after SIGTERM: {stderr[-2000:]}"
    leftover = {p: name for p, name in pipeline.items() if _alive(p)}
    assert not leftover, f"processes outlived the runner: {leftover}"
    result = json.loads(termination.read_text())
    assert result["reason"] == "Interrupted", (result, stderr[-2000:])
    assert result["components"] == {"postgres": "Failed: Interrupted"}
    assert "SIGTERM" in result["error"]

    bucket, prefix = cfg.destination.bucket, cfg.set_prefix
    objects = set_objects(s3, bucket, prefix)
    assert objects == {"parts/postgres.json"}, objects  # no dump, no sidecar, no manifest
    uploads = s3.client().list_multipart_uploads(Bucket=bucket, Prefix=prefix).get("Uploads", [])
    assert uploads == []
    part = json.loads(
        s3.client().get_object(Bucket=bucket, Key=prefix + "parts/postgres.json")["Body"].read()
    )
    assert part["ok"] is False
    assert part["reason"] == "Interrupted"
    assert part.get("artifacts", []) == []
