"""The real Lamassu IoT v3.8.0 (all six services, built from source) on the platform's PostgreSQL
and OpenBao.

These pin down what backups and restores of a real install rely on: the goose-migrated schema,
where each crypto engine keeps a CA's key (a file per key id; a KV v2 entry per key id), the CA
types (MANAGED, IMPORTED_WITH_KEY, IMPORTED_WITHOUT_KEY), the kms metadata binding of an imported
key whose id is not the CA's SKI, and that ``/health`` stays green while a CA whose key is gone
cannot sign: only signing proves a restore. The product's key consistency check runs on this
real data too. The other four services (device-manager, va, dms-manager, alerts) start without a
message bus and serve their databases (about 0.1 s each as processes).
"""

from __future__ import annotations

import datetime
import json
import shutil
import uuid
from collections.abc import Iterator
from pathlib import Path

import pytest
import requests
import yaml
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import NameOID

from lamassu_backup.clients import postgres as pg_client
from lamassu_backup.components.volumes.restore import filesystem_key_ids
from lamassu_backup.runner.restore import keys as restore_keys
from lamassu_platform.lamassu import (
    DATABASES,
    FS_ENGINE,
    KMS_BIND_KEY,
    SERVICES,
    VAULT_ENGINE,
    Lamassu,
    LamassuClient,
    LamassuError,
    csr_pem,
    goose_version,
    key_id_of,
    openssl_verify,
)
from lamassu_platform.openbao import OpenBao
from lamassu_platform.postgres import PostgresServer

pytestmark = pytest.mark.platform

ENGINES = (FS_ENGINE, VAULT_ENGINE)
# The newest migration of each database in v3.8.0 (engines/storage/postgres/migrations/<db>/).
LATEST_GOOSE = {
    "ca": 20260520120000,
    "devicemanager": 20260120114736,
    "dmsmanager": 20260604110000,
    "alerts": 1,
    "va": 1,
    "kms": 20251031174938,
}


# ------------------------------------------------------------------------------------ fixtures
@pytest.fixture(scope="module")
def pg(tmp_path_factory: pytest.TempPathFactory) -> Iterator[PostgresServer]:
    """One PostgreSQL for the module."""
    with PostgresServer(tmp_path_factory.mktemp("pg")) as server:
        yield server


@pytest.fixture(scope="module")
def openbao(tmp_path_factory: pytest.TempPathFactory) -> Iterator[OpenBao]:
    """One OpenBao for the module (the kms's ``vault-1`` engine)."""
    with OpenBao(tmp_path_factory.mktemp("openbao")) as server:
        yield server


@pytest.fixture(scope="module")
def lamassu(
    pg: PostgresServer, openbao: OpenBao, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[Lamassu]:
    """kms (filesystem + Vault KV engines), ca and the other four, from the built binaries."""
    with Lamassu(
        tmp_path_factory.mktemp("lamassu"), pg, openbao=openbao, services=SERVICES
    ) as services:
        yield services


@pytest.fixture(scope="module")
def api(lamassu: Lamassu) -> LamassuClient:
    """The HTTP client."""
    return lamassu.client()


@pytest.fixture(scope="module")
def profiles(api: LamassuClient) -> dict[str, str]:
    """Issuance profiles for CAs and for leaves."""
    return {
        "ca": api.create_profile("tests-ca", sign_as_ca=True, duration="365d"),
        "leaf": api.create_profile("tests-leaf"),
    }


# ------------------------------------------------------------------------------------ helpers
def outside_ca(common_name: str) -> tuple[str, str]:
    """A self-signed CA made outside Lamassu, with a SHA-1 SKI (so SKI != Lamassu's key id)."""
    key = ec.generate_private_key(ec.SECP256R1())
    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, common_name)])
    now = datetime.datetime.now(datetime.UTC)
    cert = (
        x509.CertificateBuilder()
        .subject_name(name)
        .issuer_name(name)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - datetime.timedelta(minutes=5))
        .not_valid_after(now + datetime.timedelta(days=365))
        .add_extension(x509.BasicConstraints(ca=True, path_length=None), critical=True)
        .add_extension(
            x509.KeyUsage(
                digital_signature=True,
                content_commitment=False,
                key_encipherment=False,
                data_encipherment=False,
                key_agreement=False,
                key_cert_sign=True,
                crl_sign=True,
                encipher_only=False,
                decipher_only=False,
            ),
            critical=True,
        )
        .add_extension(x509.SubjectKeyIdentifier.from_public_key(key.public_key()), critical=False)
        .sign(key, hashes.SHA256())
    )
    key_pem = key.private_bytes(
        serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()
    ).decode()
    return cert.public_bytes(serialization.Encoding.PEM).decode(), key_pem


def unique(prefix: str) -> str:
    """A CA id no other test uses."""
    return f"{prefix}-{uuid.uuid4().hex[:8]}"


def consistency(lamassu: Lamassu, pg: PostgresServer) -> restore_keys.KeyReport:
    """The product's key consistency check on the live databases and both engines' stores."""
    conn = pg_client.PgConnection(
        host=pg.host, port=pg.port, user=pg.superuser, password=pg.password, sslmode="disable"
    )
    kms_rows, ca_rows = pg_client.key_inventory(
        pg_client.OneShot(conn, "ca"), "public", pg_client.OneShot(conn, "kms"), "public"
    )
    stores = [
        restore_keys.KeyStore(
            FS_ENGINE,
            "filesystem",
            frozenset(filesystem_key_ids(lamassu.fs_dir)),
            "the kms volume",
        ),
        restore_keys.KeyStore(
            VAULT_ENGINE, "vault-kv", frozenset(lamassu.vault_key_ids()), lamassu.vault_mount
        ),
    ]
    return restore_keys.check_inventory(kms_rows, ca_rows, stores)


# ------------------------------------------------------------------------------------ tests
def test_services_start_from_the_built_binaries_on_migrated_databases(
    lamassu: Lamassu, pg: PostgresServer, api: LamassuClient
) -> None:
    """Six databases at their latest goose version; both engines up; both services healthy."""
    assert lamassu.running("kms")
    assert lamassu.running("ca")
    assert api.health()
    assert lamassu.startup_seconds is not None
    assert lamassu.startup_seconds < 60
    assert {db: goose_version(pg, db) for db in DATABASES} == LATEST_GOOSE
    columns = {
        r[0]
        for r in pg.rows(
            "SELECT column_name FROM information_schema.columns WHERE table_name = 'certificates';",
            "ca",
        )
    }
    assert {"extensions_key_usage", "extensions_extended_key_usage", "type"} <= columns
    assert {e["id"] for e in api.engines()} == set(ENGINES)


def test_configs_are_the_charts_configmaps(lamassu: Lamassu) -> None:
    """``<service>-config`` with key ``config`` for all six; the file mode keeps secrets private;
    every event bus is off (the platform has no RabbitMQ)."""
    maps = {m["metadata"]["name"]: m for m in lamassu.configmaps("lamassu")}
    assert set(maps) == {f"{name}-config" for name in SERVICES}
    for cm in maps.values():
        cfg = yaml.safe_load(cm["data"]["config"])
        buses = {k: v for k, v in cfg.items() if k.endswith("event_bus")}
        assert buses, cm["metadata"]["name"]
        assert all(v == {"enabled": False} for v in buses.values()), cm["metadata"]["name"]
    kms = yaml.safe_load(maps["kms-config"]["data"]["config"])
    assert kms["crypto_engines"]["default_id"] == FS_ENGINE
    assert [e["type"] for e in kms["crypto_engines"]["engines"]] == [
        "filesystem",
        "hashicorp_vault",
    ]
    assert oct(lamassu.config_path("kms").stat().st_mode & 0o777) == "0o600"


@pytest.mark.parametrize("engine", ENGINES)
def test_a_ca_on_each_engine_signs_a_csr_that_openssl_verifies(
    engine: str,
    lamassu: Lamassu,
    api: LamassuClient,
    profiles: dict[str, str],
    tmp_path: Path,
) -> None:
    """MANAGED CA, key id = SKI = SHA-256 of its public key, stored in its engine; leaf verifies."""
    ca = api.create_ca(
        unique(engine), f"Test CA {engine}", profile_id=profiles["ca"], engine_id=engine
    )
    assert ca.type == "MANAGED"
    assert ca.engine_id == engine
    assert ca.subject_key_id == key_id_of(ca.certificate_pem)
    in_fs = ca.subject_key_id in lamassu.fs_key_ids()
    in_vault = ca.subject_key_id in lamassu.vault_key_ids()
    assert (in_fs, in_vault) == (engine == FS_ENGINE, engine == VAULT_ENGINE)
    if engine == FS_ENGINE:
        assert oct((lamassu.fs_dir / ca.subject_key_id).stat().st_mode & 0o777) == "0o600"

    leaf = api.sign_csr(ca.id, csr_pem("device-1"), profile_id=profiles["leaf"])
    assert leaf.type == "IMPORTED_WITHOUT_KEY"
    verified = openssl_verify(ca.certificate_pem, leaf.certificate_pem, tmp_path)
    assert verified.returncode == 0, verified.stdout + verified.stderr
    assert verified.stdout.strip().endswith(": OK")
    # And against a different CA it does not verify (the check can fail).
    other, _ = outside_ca("unrelated")
    assert openssl_verify(other, leaf.certificate_pem, tmp_path).returncode != 0
    assert leaf.serial_number in {c.serial_number for c in api.list_certificates()}


def test_imported_cas_with_and_without_key(
    lamassu: Lamassu, pg: PostgresServer, api: LamassuClient, profiles: dict[str, str]
) -> None:
    """With key: IMPORTED_WITH_KEY, key bound to the CA by metadata (SKI is not the key id).
    Without: IMPORTED_WITHOUT_KEY, no key anywhere, and it cannot sign."""
    cert_pem, key_pem = outside_ca("Imported With Key")
    with_key = api.import_ca(
        unique("imp-key"), cert_pem, profile_id=profiles["leaf"], key_pem=key_pem
    )
    assert with_key.type == "IMPORTED_WITH_KEY"
    kid = key_id_of(cert_pem)
    assert with_key.subject_key_id != kid  # SHA-1 SKI from the outside CA
    assert kid in lamassu.fs_key_ids()  # the kms's default engine
    sql = f"SELECT metadata::text FROM kms_keys WHERE key_id = '{kid}';"  # noqa: S608 - hex
    meta = json.loads(pg.psql(sql, "kms").strip())
    assert {"resource_type": "certificate", "resource_id": with_key.serial_number} in meta[
        KMS_BIND_KEY
    ]

    bare_pem, _ = outside_ca("Imported Without Key")
    without = api.import_ca(unique("imp-nokey"), bare_pem, profile_id=profiles["leaf"])
    assert without.type == "IMPORTED_WITHOUT_KEY"
    assert key_id_of(bare_pem) not in lamassu.fs_key_ids() | lamassu.vault_key_ids()
    with pytest.raises(LamassuError):
        api.sign_csr(without.id, csr_pem("nope"), profile_id=profiles["leaf"])
    ids = {c.id for c in api.list_cas()}
    assert {with_key.id, without.id} <= ids
    cas, certs = api.stats()
    assert cas >= 2
    assert certs >= cas


def test_key_consistency_on_real_lamassu_data(
    lamassu: Lamassu, pg: PostgresServer, api: LamassuClient, profiles: dict[str, str]
) -> None:
    """The product's check passes on a real install with an IMPORTED_WITHOUT_KEY CA and a
    binding-linked imported CA, and names the CA, key id and engine when a key file is gone."""
    bare_pem, _ = outside_ca("Keyless For Consistency")
    api.import_ca(unique("keyless"), bare_pem, profile_id=profiles["leaf"])
    cert_pem, key_pem = outside_ca("Bound For Consistency")
    api.import_ca(unique("bound"), cert_pem, profile_id=profiles["leaf"], key_pem=key_pem)
    ca = api.create_ca(
        unique("victim"), "Victim CA", profile_id=profiles["ca"], engine_id=FS_ENGINE
    )
    report = consistency(lamassu, pg)
    assert report.ok, report.message()
    assert report.keyless_cas >= 1
    assert report.cas >= 3

    path = lamassu.fs_dir / ca.subject_key_id
    moved = path.with_name(".aside")
    path.rename(moved)
    try:
        report = consistency(lamassu, pg)
    finally:
        moved.rename(path)
    assert not report.ok
    message = report.message()
    assert ca.id in message
    assert ca.subject_key_id in message
    assert f"engine {FS_ENGINE}" in message


def test_a_deleted_key_file_fails_signing_while_health_stays_green(
    lamassu: Lamassu, api: LamassuClient, profiles: dict[str, str], tmp_path: Path
) -> None:
    """What makes ``/health`` worthless as restore proof: the key is gone, the service is green."""
    ca = api.create_ca(
        unique("lost"), "Lost Key CA", profile_id=profiles["ca"], engine_id=FS_ENGINE
    )
    path = lamassu.fs_dir / ca.subject_key_id
    shutil.move(path, tmp_path / "key.pem")
    try:
        assert api.health()
        with pytest.raises(LamassuError) as err:
            api.sign_csr(ca.id, csr_pem("device-2"), profile_id=profiles["leaf"])
        assert err.value.status == 500
        assert "could not get signing key" in err.value.body
        assert api.health()
    finally:
        shutil.move(tmp_path / "key.pem", path)
    leaf = api.sign_csr(ca.id, csr_pem("device-3"), profile_id=profiles["leaf"])
    assert openssl_verify(ca.certificate_pem, leaf.certificate_pem, tmp_path).returncode == 0


def test_the_other_four_services_run_without_a_message_bus(
    lamassu: Lamassu, pg: PostgresServer, api: LamassuClient, profiles: dict[str, str]
) -> None:
    """device-manager, va, dms-manager and alerts are healthy and serve their own databases.
    Without the bus the va gets no ``va_role`` for a new CA (it makes one only on a ``ca.#``
    event), so its role lookup answers 404: the CRL side waits for RabbitMQ."""
    assert api.health_by_service() == dict.fromkeys(SERVICES, True)
    before = api.device_count()
    device = api.create_device(unique("device"), dms_id="tests-dms")
    assert device["status"] == "NO_IDENTITY"
    assert api.device_count() == before + 1
    sql = f"SELECT count(*) FROM devices WHERE id = '{device['id']}';"  # noqa: S608 - our id
    assert pg.psql(sql, "devicemanager").strip() == "1"
    assert api.dms_count() == int(pg.psql("SELECT count(*) FROM dms;", "dmsmanager").strip())

    ca = api.create_ca(
        unique("no-bus"), "No Bus CA", profile_id=profiles["ca"], engine_id=FS_ENGINE
    )
    role = requests.get(f"{lamassu.url('va')}/v1/roles/{ca.subject_key_id}", timeout=10)
    assert role.status_code == 404, role.text
    events = requests.get(f"{lamassu.url('alerts')}/v1/events/latest", timeout=10)
    assert events.status_code == 200, events.text
