"""The real services the backup tests stand on: PostgreSQL with synthetic Lamassu data, an S3/KMS
server over HTTP, and GnuPG keys. If these are wrong, every backup/restore test above them lies."""

from __future__ import annotations

import base64
import hashlib
import os
import subprocess
import zlib
from collections.abc import Iterator
from pathlib import Path

import pytest
from cryptography import x509
from cryptography.hazmat.primitives import serialization

from lamassu_platform import datagen
from lamassu_platform.gpg import GpgKeys, make_keys, run_gpg
from lamassu_platform.postgres import PostgresServer
from lamassu_platform.s3 import S3Server

pytestmark = pytest.mark.platform

SIZE_MIB = 20
SEED = 1


# ------------------------------------------------------------------------------------ fixtures
@pytest.fixture(scope="module")
def pg(tmp_path_factory: pytest.TempPathFactory) -> Iterator[PostgresServer]:
    with PostgresServer(tmp_path_factory.mktemp("pg")) as server:
        yield server


@pytest.fixture(scope="module")
def pg_other(tmp_path_factory: pytest.TempPathFactory) -> Iterator[PostgresServer]:
    """A second cluster: regenerating there proves determinism without touching ``pg``."""
    with PostgresServer(tmp_path_factory.mktemp("pg-other")) as server:
        yield server


@pytest.fixture(scope="module")
def dataset(pg: PostgresServer) -> datagen.Dataset:
    return datagen.generate(pg, SIZE_MIB, seed=SEED)


@pytest.fixture(scope="module")
def checksums(pg: PostgresServer, dataset: datagen.Dataset) -> dict[str, dict[str, str]]:
    return {db: datagen.table_checksums(pg, db) for db in dataset.databases}


@pytest.fixture(scope="module")
def s3(tmp_path_factory: pytest.TempPathFactory) -> Iterator[S3Server]:
    with S3Server(tmp_path_factory.mktemp("s3")) as server:
        yield server


@pytest.fixture(scope="module")
def gpg_keys(tmp_path_factory: pytest.TempPathFactory) -> Iterator[GpgKeys]:
    with make_keys(tmp_path_factory.mktemp("gpg")) as keys:
        yield keys


# ---------------------------------------------------------------------------------- PostgreSQL
def test_postgres_password_auth(pg: PostgresServer) -> None:
    assert pg.psql("SELECT current_user;").strip() == "postgres"
    assert pg.psql("SHOW password_encryption;").strip() == "scram-sha-256"
    assert pg.psql("SHOW fsync;").strip() == "off"
    assert oct(pg.password_file.stat().st_mode & 0o777) == "0o600"
    assert pg.password not in pg.dsn("ca")
    assert pg.password not in pg.conninfo("ca")
    # libpq clients find the password through the passfile named in the DSN
    out = subprocess.run(
        [pg.tool("psql"), "-X", "-At", "-d", pg.dsn("postgres"), "-c", "SELECT 1"],
        capture_output=True,
        text=True,
        env={"PATH": os.environ["PATH"]},
        check=True,
    )
    assert out.stdout.strip() == "1"
    with pytest.raises(RuntimeError, match="password authentication failed"):
        pg.psql("SELECT 1;", user="postgres", password="wrong")


def test_postgres_non_superuser_role(pg: PostgresServer) -> None:
    pg.create_role("lamassu_owner", "owner-pw", createdb=True)
    pg.create_database("owned_by_lamassu", owner="lamassu_owner")
    out = pg.psql(
        "SELECT current_user, current_setting('is_superuser');",
        "owned_by_lamassu",
        user="lamassu_owner",
        password="owner-pw",
    )
    assert out.split() == ["lamassu_owner", "off"]
    pg.set_password("lamassu_owner", "new-pw")
    with pytest.raises(RuntimeError, match="password authentication failed"):
        pg.psql("SELECT 1;", user="lamassu_owner", password="owner-pw")
    assert pg.psql("SELECT 1;", user="lamassu_owner", password="new-pw").strip() == "1"
    pg.drop_database("owned_by_lamassu")


def test_postgres_stop_leaves_no_process(tmp_path: Path) -> None:
    server = PostgresServer(tmp_path / "short-lived")
    server.start()
    pid = server.postmaster_pid()
    assert pid is not None
    server.close()
    assert server.postmaster_pid() is None
    status = Path(f"/proc/{pid}/status")
    if status.exists():  # an exited, not-yet-reaped process is a zombie: it holds nothing
        assert "State:\tZ" in status.read_text()


# ------------------------------------------------------------------------------------- datagen
def test_dataset_has_the_lamassu_databases_and_tables(
    pg: PostgresServer, dataset: datagen.Dataset
) -> None:
    assert dataset.databases == sorted(datagen.SERVICES)
    assert set(datagen.SERVICES) <= set(pg.databases())
    expected = {
        "ca": {"certificates", "ca_certificates", "issuance_profiles"},
        "devicemanager": {"devices", "device_groups"},
        "dmsmanager": {"dms"},
        "alerts": {"events", "subscriptions"},
        "va": {"va_role"},
        "kms": {"kms_keys"},
    }
    for db, tables in expected.items():
        counts = dataset.row_counts[db]
        assert set(counts) == {f"public.{t}" for t in tables | {"goose_db_version"}}
        assert all(n > 0 for n in counts.values()), counts
        versions = [
            int(r[0])
            for r in pg.rows(
                "SELECT version_id FROM goose_db_version WHERE is_applied ORDER BY id;",
                db,
            )
        ]
        assert versions == datagen.GOOSE_VERSIONS[db]
    # the bulk sits in ca.certificates, as in a real deployment
    ca_size = int(pg.psql("SELECT pg_total_relation_size('certificates');", "ca"))
    assert ca_size > 0.7 * dataset.data_bytes
    assert dataset.row_counts["ca"]["public.ca_certificates"] == len(dataset.ca_key_ids)


def test_dataset_size_within_tolerance(dataset: datagen.Dataset) -> None:
    target = SIZE_MIB * datagen.MIB
    assert 0.85 * target <= dataset.data_bytes <= 1.15 * target, dataset.data_bytes
    assert dataset.database_bytes > dataset.data_bytes


def test_certificate_column_is_base64_pem_and_incompressible(
    pg: PostgresServer,
) -> None:
    rows = pg.rows(
        "SELECT certificate FROM certificates WHERE NOT is_ca ORDER BY serial_number LIMIT 50;",
        "ca",
    )
    sample = "".join(r[0] for r in rows).encode()
    for (value,) in rows[:5]:
        pem = base64.b64decode(value)
        assert pem.startswith(b"-----BEGIN CERTIFICATE-----\nMII")
        assert 1000 <= len(pem) <= 3100
    # base64 of base64 carries ~4.5 bits/char: an entropy coder gets ~0.6, nothing gets 0.3
    assert len(zlib.compress(sample, 9)) > 0.55 * len(sample)
    serials = pg.rows("SELECT serial_number FROM certificates LIMIT 20;", "ca")
    assert all(s[0] == s[0].lower() and int(s[0], 16) >= 0 for s in serials)


def test_ca_keys_tie_kms_and_certificates_together(
    pg: PostgresServer, dataset: datagen.Dataset
) -> None:
    assert datagen.ca_key_consistency(pg, dataset) == []
    assert 8 <= len(dataset.private_keys) <= 20
    assert set(dataset.private_keys) == set(dataset.ca_key_ids)
    kms = {
        r[0]: r[1] == "t" for r in pg.rows("SELECT key_id, has_private_key FROM kms_keys;", "kms")
    }
    assert {k for k, has in kms.items() if has} == set(dataset.ca_key_ids)
    assert {k for k, has in kms.items() if not has} == set(dataset.public_only_key_ids)
    certs = {
        r[0]: r[1]
        for r in pg.rows("SELECT subject_key_id, certificate FROM certificates WHERE is_ca;", "ca")
    }
    assert set(certs) == set(dataset.ca_key_ids)
    for key_id, b64_pem in dataset.private_keys.items():
        key = serialization.load_pem_private_key(base64.b64decode(b64_pem), password=None)
        spki = key.public_key().public_bytes(
            serialization.Encoding.DER, serialization.PublicFormat.SubjectPublicKeyInfo
        )
        assert hashlib.sha256(spki).hexdigest() == key_id
        cert = x509.load_pem_x509_certificate(base64.b64decode(certs[key_id]))
        assert (
            cert.public_key().public_bytes(
                serialization.Encoding.DER,
                serialization.PublicFormat.SubjectPublicKeyInfo,
            )
            == spki
        )
        ski = cert.extensions.get_extension_for_class(x509.SubjectKeyIdentifier).value
        assert ski.digest.hex() == key_id
    leaf_akis = {
        r[0]
        for r in pg.rows(
            "SELECT DISTINCT authority_key_id FROM certificates WHERE NOT is_ca;", "ca"
        )
    }
    assert leaf_akis <= set(dataset.ca_key_ids)


def test_generation_is_deterministic(
    pg: PostgresServer,
    pg_other: PostgresServer,
    dataset: datagen.Dataset,
    checksums: dict[str, dict[str, str]],
) -> None:
    again = datagen.generate(pg_other, SIZE_MIB, seed=SEED)
    assert again.private_keys == dataset.private_keys
    assert again.row_counts == dataset.row_counts
    for db in dataset.databases:
        assert datagen.table_checksums(pg_other, db) == checksums[db], db
        assert datagen.sequence_values(pg_other, db) == datagen.sequence_values(pg, db)
    other_seed = datagen.generate(pg_other, SIZE_MIB, seed=SEED + 1)
    assert other_seed.private_keys.keys().isdisjoint(dataset.private_keys)
    assert (
        datagen.table_checksums(pg_other, "ca")["public.certificates"]
        != checksums["ca"]["public.certificates"]
    )


def test_schemas_layout(pg_other: PostgresServer, checksums: dict[str, dict[str, str]]) -> None:
    ds = datagen.generate(pg_other, SIZE_MIB, seed=SEED, layout="schemas")
    assert ds.databases == [datagen.SCHEMAS_DATABASE]
    assert ds.locations["kms"] == ("lamassu", "kms")
    got = datagen.table_checksums(pg_other, "lamassu")
    # one schema per service, each with its own goose table, holding the same rows as the
    # six-database layout for the same seed and size
    for service in datagen.SERVICES:
        for qualified, value in checksums[service].items():
            table = qualified.split(".", 1)[1]
            assert got[f"{service}.{table}"] == value, (service, table)
    assert datagen.ca_key_consistency(pg_other, ds) == []


def test_checksums_survive_pg_dump_and_restore(
    pg: PostgresServer,
    dataset: datagen.Dataset,
    checksums: dict[str, dict[str, str]],
    tmp_path: Path,
) -> None:
    dump = tmp_path / "ca.dump"
    env = pg.subprocess_env()
    subprocess.run(
        [pg.tool("pg_dump"), "-Fc", "-Z0", "-d", "ca", "-f", str(dump)],
        env=env,
        check=True,
    )
    pg.drop_database("ca_restored")
    pg.create_database("ca_restored")
    subprocess.run(
        [pg.tool("pg_restore"), "--exit-on-error", "-d", "ca_restored", str(dump)],
        env=env,
        check=True,
    )
    try:
        assert datagen.table_checksums(pg, "ca_restored") == checksums["ca"]
        assert datagen.sequence_values(pg, "ca_restored") == datagen.sequence_values(pg, "ca")
    finally:
        pg.drop_database("ca_restored")


# ------------------------------------------------------------------------------------------ S3
def test_s3_multipart_upload_and_download(s3: S3Server) -> None:
    client = s3.client()
    bucket = s3.create_bucket("lamassu-backups")
    body = os.urandom(11 * 1024 * 1024)
    parts_data = [body[: 5 << 20], body[5 << 20 : 10 << 20], body[10 << 20 :]]
    upload = client.create_multipart_upload(Bucket=bucket, Key="database/ca.dump.gpg")
    parts = []
    for number, chunk in enumerate(parts_data, start=1):
        resp = client.upload_part(
            Bucket=bucket,
            Key="database/ca.dump.gpg",
            PartNumber=number,
            UploadId=upload["UploadId"],
            Body=chunk,
        )
        parts.append({"PartNumber": number, "ETag": resp["ETag"]})
    client.complete_multipart_upload(
        Bucket=bucket,
        Key="database/ca.dump.gpg",
        UploadId=upload["UploadId"],
        MultipartUpload={"Parts": parts},
    )
    head = client.head_object(Bucket=bucket, Key="database/ca.dump.gpg")
    assert head["ContentLength"] == len(body)
    assert head["ETag"].strip('"').endswith("-3")
    got = client.get_object(Bucket=bucket, Key="database/ca.dump.gpg")["Body"].read()
    assert got == body


def test_s3_sse_kms(s3: S3Server) -> None:
    client = s3.client()
    bucket = s3.create_bucket("lamassu-backups-kms")
    key_id, arn = s3.create_kms_key(alias="lamassu-backup")
    client.put_object(
        Bucket=bucket,
        Key="small",
        Body=b"secret",
        ServerSideEncryption="aws:kms",
        SSEKMSKeyId=arn,
    )
    head = client.head_object(Bucket=bucket, Key="small")
    assert head["ServerSideEncryption"] == "aws:kms"
    assert key_id in head["SSEKMSKeyId"]
    assert client.get_object(Bucket=bucket, Key="small")["Body"].read() == b"secret"

    upload = client.create_multipart_upload(
        Bucket=bucket, Key="big", ServerSideEncryption="aws:kms", SSEKMSKeyId=arn
    )
    assert upload["ServerSideEncryption"] == "aws:kms"
    chunks = [os.urandom(5 << 20), os.urandom(1024)]
    parts = [
        {
            "PartNumber": n,
            "ETag": client.upload_part(
                Bucket=bucket,
                Key="big",
                PartNumber=n,
                UploadId=upload["UploadId"],
                Body=c,
            )["ETag"],
        }
        for n, c in enumerate(chunks, start=1)
    ]
    client.complete_multipart_upload(
        Bucket=bucket,
        Key="big",
        UploadId=upload["UploadId"],
        MultipartUpload={"Parts": parts},
    )
    head = client.head_object(Bucket=bucket, Key="big")
    assert head["ServerSideEncryption"] == "aws:kms"
    assert key_id in head["SSEKMSKeyId"]
    assert client.get_object(Bucket=bucket, Key="big")["Body"].read() == b"".join(chunks)


# ----------------------------------------------------------------------------------------- GPG
def test_gpg_encrypt_to_recipients_and_decrypt_elsewhere(gpg_keys: GpgKeys, tmp_path: Path) -> None:
    plain = tmp_path / "ca.dump"
    plain.write_bytes(os.urandom(256 * 1024))
    sender = gpg_keys.fresh_home("sender-enc", gpg_keys.recipients_asc)
    run_gpg(
        sender,
        [
            "--encrypt",
            "--recipient",
            gpg_keys.encryption_fingerprint,
            "--output",
            str(tmp_path / "ca.dump.gpg"),
            str(plain),
        ],
    )
    restorer = gpg_keys.fresh_home("restorer", gpg_keys.decryption_key_asc)
    out = run_gpg(restorer, ["--decrypt", str(tmp_path / "ca.dump.gpg")]).stdout
    assert out == plain.read_bytes()
    # the operator home is what a person follows the runbook with: `gpg --decrypt`
    assert (
        run_gpg(gpg_keys.operator_home, ["--decrypt", str(tmp_path / "ca.dump.gpg")]).stdout
        == plain.read_bytes()
    )
    wrong = run_gpg(gpg_keys.wrong_home, ["--decrypt", str(tmp_path / "ca.dump.gpg")], check=False)
    assert wrong.returncode != 0
    assert b"No secret key" in wrong.stderr


def test_gpg_detached_signature(gpg_keys: GpgKeys, tmp_path: Path) -> None:
    data = tmp_path / "manifest.json"
    data.write_bytes(b'{"databases": ["ca", "kms"]}\n')
    signer = gpg_keys.fresh_home("signer", gpg_keys.signing_key_asc)
    run_gpg(
        signer,
        [
            "--local-user",
            gpg_keys.signing_fingerprint,
            "--detach-sign",
            "--output",
            str(tmp_path / "manifest.json.sig"),
            str(data),
        ],
    )
    verifier = gpg_keys.fresh_home("verifier", gpg_keys.signing_public_asc)
    ok = run_gpg(
        verifier,
        [
            "--status-fd",
            "1",
            "--verify",
            str(tmp_path / "manifest.json.sig"),
            str(data),
        ],
    )
    assert f"VALIDSIG {gpg_keys.signing_fingerprint}" in ok.stdout.decode()
    data.write_bytes(b'{"databases": ["ca"]}\n')
    bad = run_gpg(
        verifier,
        ["--verify", str(tmp_path / "manifest.json.sig"), str(data)],
        check=False,
    )
    assert bad.returncode != 0
    assert b"BAD signature" in bad.stderr
