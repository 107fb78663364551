"""datagen's tables are the real Lamassu v3.8.0 schema, so benchmarks and restore tests cannot
drift from what they claim to model: the real migrations (``goose-lamassu up``, built from the
pinned source) create one copy, datagen the other, and every table, column (order, type,
nullability, default), constraint and index must match, as must the goose versions."""

from __future__ import annotations

from collections.abc import Iterator

import pytest

from lamassu_platform import datagen
from lamassu_platform.lamassu import (
    DATABASES,
    DB_USER,
    VAULT_ENGINE,
    Lamassu,
    csr_pem,
    lamassu_bin_dir,
    migrate,
    openssl_verify,
)
from lamassu_platform.openbao import OpenBao
from lamassu_platform.postgres import PostgresServer

pytestmark = pytest.mark.platform


@pytest.fixture(scope="module")
def real(tmp_path_factory: pytest.TempPathFactory) -> Iterator[PostgresServer]:
    """A server whose six databases the real migrations created."""
    with PostgresServer(tmp_path_factory.mktemp("pg-real")) as server:
        server.create_role(DB_USER, "migrate-pass")
        for db in DATABASES:
            server.create_database(db, owner=DB_USER)
        migrate(server, lamassu_bin_dir(), "migrate-pass", DATABASES)
        yield server


@pytest.fixture(scope="module")
def synthetic(tmp_path_factory: pytest.TempPathFactory) -> Iterator[PostgresServer]:
    """A server with datagen's smallest data set."""
    with PostgresServer(tmp_path_factory.mktemp("pg-datagen")) as server:
        datagen.generate(server, 1, seed=3)
        yield server


def test_datagen_databases_are_lamassus() -> None:
    """Same six fixed names (the migration folder is chosen by the database name)."""
    assert datagen.SERVICES == DATABASES


@pytest.mark.parametrize("db", DATABASES)
def test_datagen_tables_match_the_migrated_schema(
    db: str, real: PostgresServer, synthetic: PostgresServer
) -> None:
    """Tables, columns in order with types/nullability/defaults, constraints, indexes."""
    want = datagen.describe_schema(real, db)
    got = datagen.describe_schema(synthetic, db)
    assert got["tables"] == want["tables"]
    assert got["constraints"] == want["constraints"]
    assert got["indexes"] == want["indexes"]


@pytest.mark.parametrize("db", DATABASES)
def test_datagen_goose_versions_are_the_migrations(
    db: str, real: PostgresServer, synthetic: PostgresServer
) -> None:
    """Every applied version, in order (a restore must bring back exactly these)."""
    sql = "SELECT version_id FROM goose_db_version WHERE is_applied ORDER BY id;"
    want = [int(r[0]) for r in real.rows(sql, db)]
    assert want == datagen.GOOSE_VERSIONS[db]
    assert [int(r[0]) for r in synthetic.rows(sql, db)] == want


def test_datagen_values_have_lamassus_shapes(synthetic: PostgresServer) -> None:
    """v3.8.0 type values, kms names and the metadata binding of every CA's key."""
    types = {r[0] for r in synthetic.rows("SELECT DISTINCT type FROM certificates;", "ca")}
    assert types <= {"MANAGED", "IMPORTED_WITH_KEY", "IMPORTED_WITHOUT_KEY"}
    cas = dict(
        synthetic.rows("SELECT serial_number, subject_key_id FROM certificates WHERE is_ca;", "ca")
    )
    rows = synthetic.rows(
        "SELECT key_id, name, metadata -> 'lamassu.io/kms/binded-resources' -> 0 ->> "
        "'resource_id' FROM kms_keys WHERE has_private_key;",
        "kms",
    )
    assert len(rows) == len(cas)
    for key_id, name, bound in rows:
        assert name.startswith("Key For CA CN=")
        assert cas[bound] == key_id


def test_the_real_lamassu_serves_datagen_data_and_its_cas_sign(
    tmp_path_factory: pytest.TempPathFactory,
) -> None:
    """The strongest shape check: the real kms and ca run on datagen's databases, list every
    CA, and a datagen CA (key in Vault KV, as datagen writes it) signs a CSR that verifies."""
    with (
        PostgresServer(tmp_path_factory.mktemp("pg-served")) as server,
        OpenBao(tmp_path_factory.mktemp("bao-served"), kv_mount="lamassu-kms") as bao,
    ):
        dataset = datagen.generate(server, 1, seed=5)
        assert dataset.engine_id == VAULT_ENGINE
        bao.write_keys("lamassu-kms", dataset.private_keys)
        with Lamassu(
            tmp_path_factory.mktemp("lamassu-served"),
            server,
            openbao=bao,
            vault_mount="lamassu-kms",
        ) as services:
            api = services.client()
            listed = {ca.id: ca for ca in api.list_cas()}
            assert set(listed) == {ca.ca_id for ca in dataset.cas}
            issuing = next(ca for ca in dataset.cas if ca.level > 0)
            ca = listed[issuing.ca_id]
            assert (ca.type, ca.engine_id, ca.subject_key_id) == (
                "MANAGED",
                VAULT_ENGINE,
                issuing.key_id,
            )
            leaf = api.sign_csr(ca.id, csr_pem("datagen-device"), profile_id="profile-00")
            tmp = tmp_path_factory.mktemp("verify")
            root = listed[dataset.cas[issuing.issuer_index].ca_id]
            verified = openssl_verify(
                root.certificate_pem, leaf.certificate_pem, tmp, intermediates=ca.certificate_pem
            )
            assert verified.returncode == 0, verified.stdout + verified.stderr
