"""Loading: create the databases (or schemas), stream the rows in with ``COPY``, index, measure.

Why apart: this is the fast path (psql ``COPY ... FROM STDIN``, the bulk tables in parallel,
primary keys and indexes after the load) and the sizing that hits ``size_mib``.
"""

from __future__ import annotations

import base64
import subprocess
import tempfile
import threading
import time
from collections.abc import Callable, Iterable

from cryptography.hazmat.primitives import serialization

from ..postgres import PostgresServer
from . import inspection
from .keys import ca_keys, key_id_of
from .rows import (
    CERT_COLUMNS,
    LEAVES_PER_DEVICE,
    Serials,
    ca_cert_rows,
    ca_link_rows,
    derive,
    derived_uuid,
    device_group_rows,
    device_rows,
    dms_rows,
    event_rows,
    goose_rows,
    kms_rows,
    leaf_rows,
    profile_rows,
    subscription_rows,
    va_rows,
)
from .schema import (
    DDL,
    ENGINE_ID,
    GOOSE_DDL,
    MIB,
    POST_DDL,
    SCHEMAS_DATABASE,
    SERVICES,
    CaInfo,
    Dataset,
    Layout,
)

# On-disk bytes (heap + TOAST + indexes, all tables) one leaf certificate brings with it,
# including its share of devices; measured on PostgreSQL 15 and used to hit the requested size.
BYTES_PER_LEAF = 3925
MIN_LEAVES = 60
N_ROOT_CAS = 4
N_INTERMEDIATE_CAS = 8
N_PUBLIC_ONLY_KEYS = 4


class _Copy:
    """A ``COPY ... FROM STDIN`` stream through ``psql``, fed from a row iterator."""

    def __init__(
        self, server: PostgresServer, db: str, schema: str, table: str, columns: str
    ) -> None:
        self.server, self.db, self.target = server, db, f"{schema}.{table}"
        self.sql = f"COPY {schema}.{table} ({columns}) FROM STDIN"

    def run(self, rows: Iterable[str]) -> int:
        count = 0
        with tempfile.TemporaryFile() as err:
            proc = subprocess.Popen(
                [
                    self.server.tool("psql"),
                    "-X",
                    "-q",
                    "-v",
                    "ON_ERROR_STOP=1",
                    "-d",
                    self.db,
                    "-c",
                    self.sql,
                ],
                stdin=subprocess.PIPE,
                stdout=subprocess.DEVNULL,
                stderr=err,
                env=self.server.subprocess_env(),
            )
            assert proc.stdin is not None
            buf: list[str] = []
            size = 0
            try:
                for row in rows:
                    buf.append(row)
                    size += len(row)
                    count += 1
                    if size >= 1 << 20:
                        proc.stdin.write("".join(buf).encode())
                        buf, size = [], 0
                proc.stdin.write("".join(buf).encode())
                proc.stdin.close()
            except BrokenPipeError:
                pass  # psql stopped reading: its exit status and stderr say why
            except BaseException:
                proc.kill()  # a failing row generator must not leave psql waiting on stdin
                proc.wait()
                raise
            rc = proc.wait()
            if rc != 0:
                err.seek(0)
                raise RuntimeError(
                    f"COPY into {self.db}/{self.target} failed: {err.read().decode()}"
                )
        return count


def _run_parallel(jobs: list[Callable[[], None]]) -> None:
    """Run loader jobs in threads (the work is in psql/PostgreSQL; Python only feeds them)."""
    errors: list[BaseException] = []

    def wrap(job: Callable[[], None]) -> None:
        try:
            job()
        except BaseException as exc:  # noqa: BLE001 - re-raised in the caller
            errors.append(exc)

    threads = [threading.Thread(target=wrap, args=(job,)) for job in jobs]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    if errors:
        raise errors[0]


def _locations(layout: Layout) -> dict[str, tuple[str, str]]:
    if layout == "databases":
        return {s: (s, "public") for s in SERVICES}
    if layout == "schemas":
        return {s: (SCHEMAS_DATABASE, s) for s in SERVICES}
    raise ValueError(f"unknown layout {layout!r}")


def plan_leaves(size_mib: int) -> int:
    """How many leaf certificates make ``size_mib`` MiB of table data (deterministic)."""
    return max(MIN_LEAVES, (size_mib * MIB) // BYTES_PER_LEAF)


def generate(
    server: PostgresServer,
    size_mib: int,
    seed: int = 1,
    layout: Layout = "databases",
    *,
    replace: bool = True,
) -> Dataset:
    """Create the Lamassu databases (or the ``lamassu`` database's schemas) filled with
    ``size_mib`` MiB of deterministic data. ``replace`` drops what is already there."""
    started = time.monotonic()
    phases: dict[str, float] = {}
    mark = [started]

    def phase(name: str) -> None:
        now = time.monotonic()
        phases[name] = round(now - mark[0], 3)
        mark[0] = now

    locations = _locations(layout)
    databases = sorted({db for db, _ in locations.values()})
    for db in databases:
        if replace:
            server.drop_database(db)
        server.create_database(db)
    phase("create_databases")

    # --- CA keys and certificates (real, deterministic)
    n_cas = N_ROOT_CAS + N_INTERMEDIATE_CAS
    keys = ca_keys(seed, n_cas, "ca-key")
    extra_keys = ca_keys(seed, N_PUBLIC_ONLY_KEYS, "public-only-key")
    cas: list[CaInfo] = []
    for i, key in enumerate(keys):
        level = 0 if i < N_ROOT_CAS else 1
        cas.append(
            CaInfo(
                index=i,
                ca_id=derived_uuid(seed, "ca", i),
                serial_number=f"{derive(seed, 'ca-serial', i):032x}",
                key_id=key_id_of(key.public_key()),
                level=level,
                common_name=f"Lamassu Test {'Root' if level == 0 else 'Issuing'} CA {i:02d}",
                issuer_index=i if level == 0 else i % N_ROOT_CAS,
            )
        )
    private_keys = {
        ca.key_id: base64.b64encode(
            key.private_bytes(
                serialization.Encoding.PEM,
                serialization.PrivateFormat.PKCS8,
                serialization.NoEncryption(),
            )
        ).decode("ascii")
        for ca, key in zip(cas, keys, strict=True)
    }

    n_leaves = plan_leaves(size_mib)
    n_devices = (n_leaves + LEAVES_PER_DEVICE - 1) // LEAVES_PER_DEVICE
    n_dms = max(3, min(50, n_leaves // 20000 + 3))
    serials = Serials(seed)

    # --- DDL
    for service, (db, schema) in locations.items():
        create_schema = f"CREATE SCHEMA {schema};\n" if schema != "public" else ""
        server.psql(
            f"{create_schema}SET search_path TO {schema};\n{GOOSE_DDL}{DDL[service]}",
            db,
        )

    def load(service: str, table: str, columns: str, rows: Iterable[str]) -> Callable[[], None]:
        db, schema = locations[service]

        def job() -> None:
            _Copy(server, db, schema, table, columns).run(rows)

        return job

    small_jobs: list[Callable[[], None]] = [
        load(s, "goose_db_version", "version_id, is_applied, tstamp", goose_rows(s))
        for s in SERVICES
    ]
    small_jobs += [
        load(
            "ca",
            "issuance_profiles",
            "id, name, description, validity_type, validity_time, validity_duration, sign_as_ca, "
            "honor_key_usage, key_usage, honor_extended_key_usages, extended_key_usages, "
            "honor_subject, subject_common_name, subject_organization, subject_organization_unit, "
            "subject_country, subject_state, subject_locality, honor_extensions, "
            "crypto_enforcement_enabled, crypto_enforcement_allow_rsa_keys, "
            "crypto_enforcement_allowed_rsa_key_sizes, crypto_enforcement_allow_ecdsa_keys, "
            "crypto_enforcement_allowed_ecdsa_key_sizes",
            profile_rows(),
        ),
        load("ca", "certificates", CERT_COLUMNS, ca_cert_rows(cas, keys)),
        load(
            "ca",
            "ca_certificates",
            'serial_number, metadata, id, creation_ts, "level", profile_id',
            ca_link_rows(cas),
        ),
        load(
            "devicemanager",
            "device_groups",
            "id, name, description, parent_id, criteria, created_at, updated_at",
            device_group_rows(seed),
        ),
        load(
            "dmsmanager",
            "dms",
            'id, "name", metadata, creation_date, settings',
            dms_rows(seed, n_dms, cas),
        ),
        load(
            "alerts",
            "events",
            'event_type, "event", last_seen, total_seen',
            event_rows(seed),
        ),
        load(
            "alerts",
            "subscriptions",
            "id, user_id, event_type, subscription_date, conditions, channel",
            subscription_rows(seed),
        ),
        load(
            "va",
            "va_role",
            "ca_ski, crl_refresh_interval, crl_validity, crl_subject_key_id_signer, "
            "crl_regenerate_on_revoke, latest_crl_version, latest_crl_valid_from, "
            "latest_crl_valid_until",
            va_rows(seed, cas),
        ),
        load(
            "kms",
            "kms_keys",
            "metadata, name, algorithm, size, public_key, creation_ts, engine_id, key_id, "
            "aliases, has_private_key, tags",
            kms_rows(cas, keys, extra_keys),
        ),
    ]
    phase("ddl")
    for job in small_jobs:  # sequential: ca_certificates' FK needs the profiles first
        job()
    phase("small_tables")

    _run_parallel(
        [
            load(
                "ca",
                "certificates",
                CERT_COLUMNS,
                leaf_rows(seed, n_leaves, cas, n_dms, serials),
            ),
            load(
                "devicemanager",
                "devices",
                "id, tags, status, icon, icon_color, creation_timestamp, metadata, dms_owner, "
                "identity_slot, extra_slots, events",
                device_rows(seed, n_devices, n_leaves, n_dms, serials),
            ),
        ]
    )
    phase("bulk_copy")

    def post(service: str) -> Callable[[], None]:
        db, schema = locations[service]

        def job() -> None:
            server.psql(f"SET search_path TO {schema};\n{POST_DDL[service]}", db)

        return job

    _run_parallel([post(service) for service in POST_DDL])
    phase("indexes")
    for db in databases:
        server.psql("ANALYZE;", db)
    phase("analyze")

    counts = {db: inspection.row_counts(server, db) for db in databases}
    data_bytes = inspection.data_bytes(server, databases)
    database_bytes = sum(server.database_size(db) for db in databases)
    phase("measure")
    return Dataset(
        layout=layout,
        seed=seed,
        size_mib=size_mib,
        databases=databases,
        locations=locations,
        private_keys=private_keys,
        ca_key_ids=[ca.key_id for ca in cas],
        public_only_key_ids=[key_id_of(k.public_key()) for k in extra_keys],
        engine_id=ENGINE_ID,
        row_counts=counts,
        data_bytes=data_bytes,
        database_bytes=database_bytes,
        seconds=time.monotonic() - started,
        cas=cas,
        phases=phases,
    )
