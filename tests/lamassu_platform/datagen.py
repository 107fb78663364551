"""Synthetic Lamassu data: the six service databases, shaped like the real ones, of a chosen size.

Why: backup and restore must be tested (and timed) against data that looks like a Lamassu
deployment: the exact database names, goose ``goose_db_version`` tables, a ``ca.certificates`` table
holding the bulk as incompressible base64 PEM text, jsonb columns, timestamptz edge values
(Lamassu's zero time ``0001-01-01``), foreign keys, and CA keys whose ids tie ``kms.kms_keys``, the
CA certificates' ``subject_key_id`` and the crypto engine's key store together.

Everything is derived from ``seed``: the same seed and size give byte-identical table contents
(compare with :func:`table_checksums`). The CA keys are real EC P-256 keys and the CA certificates
real X.509 certificates, signed with deterministic ECDSA (RFC 6979) so they are reproducible too.
Rows are streamed with ``COPY ... FROM STDIN`` through ``psql``; primary keys and indexes are built
after the load, which is what makes 1 GiB take well under a minute and a half.
"""

from __future__ import annotations

import base64
import datetime as dt
import hashlib
import json
import random
import subprocess
import tempfile
import threading
import time
import uuid
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass, field
from typing import Literal

from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import NameOID

from .postgres import PostgresServer

Layout = Literal["databases", "schemas"]

SERVICES: tuple[str, ...] = ("ca", "devicemanager", "dmsmanager", "alerts", "va", "kms")
SCHEMAS_DATABASE = "lamassu"
ENGINE_ID = "vault-1"
MIB = 1024 * 1024

# On-disk bytes (heap + TOAST + indexes, all tables) one leaf certificate brings with it,
# including its share of devices; measured on PostgreSQL 15 and used to hit the requested size.
BYTES_PER_LEAF = 3925
MIN_LEAVES = 60
N_ROOT_CAS = 4
N_INTERMEDIATE_CAS = 8
N_PUBLIC_ONLY_KEYS = 4
LEAVES_PER_DEVICE = 3

EPOCH = dt.datetime(2024, 1, 1, tzinfo=dt.UTC)
# Go's zero time.Time: how Lamassu stores "not revoked"
ZERO_TIME = "0001-01-01 00:00:00+00"

# goose versions applied per service (different per database, like the real migrations).
GOOSE_VERSIONS: dict[str, list[int]] = {
    "ca": [
        0,
        1,
        20241215165048,
        20250107164937,
        20250115095852,
        20250702124800,
        20250704101200,
        20250904183000,
        20251106120000,
        20251217120000,
    ],
    "devicemanager": [
        0,
        1,
        20251217120000,
        20260119070459,
        20260120114736,
        20260317120000,
    ],
    "dmsmanager": [0, 1, 20251217120000, 20260113212700],
    "alerts": [0, 1, 2],
    "va": [0, 1],
    "kms": [0, 1, 20251031174938],
}

_GOOSE_DDL = """
CREATE TABLE goose_db_version (
    id serial PRIMARY KEY,
    version_id bigint NOT NULL,
    is_applied boolean NOT NULL,
    tstamp timestamp DEFAULT now()
);
"""

# Tables are created without primary keys/indexes (the _POST_DDL adds them after the load).
_DDL: dict[str, str] = {
    "ca": """
CREATE TABLE certificates (
    serial_number text NOT NULL,
    metadata jsonb NOT NULL DEFAULT '{}',
    issuer_meta_serial_number text,
    issuer_meta_id text,
    issuer_meta_level int8,
    status text NOT NULL CHECK (status IN ('ACTIVE', 'EXPIRED', 'REVOKED', 'INACTIVE')),
    certificate text,
    key_meta_type varchar(255),
    key_meta_bits int8,
    key_meta_strength text,
    subject_common_name text,
    subject_organization text,
    subject_organization_unit text,
    subject_country text,
    subject_state text,
    subject_locality text,
    issuer_common_name text,
    issuer_organization text,
    issuer_organization_unit text,
    issuer_country text,
    issuer_state text,
    issuer_locality text,
    valid_from timestamptz,
    valid_to timestamptz,
    revocation_timestamp timestamptz,
    revocation_reason varchar(255),
    "type" text,
    engine_id text,
    is_ca boolean NOT NULL DEFAULT false,
    subject_key_id text,
    authority_key_id text,
    key_usage jsonb NOT NULL DEFAULT '[]',
    extended_key_usages jsonb NOT NULL DEFAULT '[]'
);
CREATE TABLE issuance_profiles (
    id text PRIMARY KEY,
    name text NOT NULL,
    description text,
    validity_type text NOT NULL,
    validity_time timestamptz,
    validity_duration text,
    sign_as_ca boolean NOT NULL DEFAULT false,
    honor_key_usage boolean NOT NULL DEFAULT true,
    key_usage jsonb NOT NULL DEFAULT '[]',
    honor_extended_key_usages boolean NOT NULL DEFAULT true,
    extended_key_usages jsonb NOT NULL DEFAULT '[]',
    honor_subject boolean NOT NULL DEFAULT true,
    subject_common_name text NOT NULL DEFAULT '',
    subject_organization text DEFAULT '',
    crypto_enforcement_enabled boolean NOT NULL DEFAULT false,
    crypto_enforcement_allow_rsa_keys boolean NOT NULL DEFAULT true,
    crypto_enforcement_allow_ecdsa_keys boolean NOT NULL DEFAULT true
);
CREATE TABLE ca_certificates (
    id text PRIMARY KEY,
    serial_number text NOT NULL UNIQUE,
    "level" int8 NOT NULL,
    creation_ts timestamptz,
    validity_type text,
    validity_time timestamptz,
    validity_duration text,
    profile_id text REFERENCES issuance_profiles (id)
);
""",
    "devicemanager": """
CREATE TABLE devices (
    id text NOT NULL,
    tags jsonb NOT NULL DEFAULT '[]',
    status text,
    icon text,
    icon_color text,
    creation_timestamp timestamptz,
    metadata jsonb NOT NULL DEFAULT '{}',
    dms_owner text,
    identity_slot jsonb,
    extra_slots jsonb NOT NULL DEFAULT '{}',
    events jsonb NOT NULL DEFAULT '{}'
);
CREATE TABLE device_groups (
    id uuid PRIMARY KEY,
    name text NOT NULL UNIQUE,
    description text,
    parent_id uuid REFERENCES device_groups (id) ON DELETE CASCADE,
    criteria jsonb NOT NULL DEFAULT '[]',
    created_at timestamptz,
    updated_at timestamptz
);
CREATE INDEX idx_device_groups_parent ON device_groups (parent_id);
""",
    "dmsmanager": """
CREATE TABLE dms (
    id text PRIMARY KEY,
    "name" text,
    metadata jsonb NOT NULL DEFAULT '{}',
    creation_date timestamptz,
    settings jsonb NOT NULL
);
""",
    "alerts": """
CREATE TABLE events (
    event_type text PRIMARY KEY,
    "event" jsonb,
    last_seen timestamptz,
    total_seen int8
);
CREATE TABLE subscriptions (
    id text PRIMARY KEY,
    user_id text,
    event_type text,
    subscription_date timestamptz,
    conditions jsonb NOT NULL DEFAULT '[]',
    channel jsonb NOT NULL
);
""",
    "va": """
CREATE TABLE va_role (
    ca_ski text PRIMARY KEY,
    crl_refresh_interval text,
    crl_validity text,
    crl_subject_key_id_signer text,
    crl_regenerate_on_revoke boolean,
    latest_crl_version numeric,
    latest_crl_valid_from timestamptz,
    latest_crl_valid_until timestamptz
);
""",
    "kms": """
CREATE TABLE kms_keys (
    key_id text PRIMARY KEY,
    engine_id text NOT NULL,
    name text NOT NULL,
    algorithm text NOT NULL,
    size int8 NOT NULL,
    public_key text NOT NULL,
    creation_ts timestamptz,
    metadata jsonb NOT NULL DEFAULT '{}',
    aliases jsonb NOT NULL DEFAULT '[]',
    has_private_key boolean NOT NULL DEFAULT true,
    tags jsonb NOT NULL DEFAULT '[]'
);
""",
}

_POST_DDL: dict[str, str] = {
    "ca": """
ALTER TABLE certificates ADD CONSTRAINT certificates_pkey PRIMARY KEY (serial_number);
CREATE INDEX certificates_issuer_sn_idx ON certificates (issuer_meta_serial_number);
CREATE INDEX certificates_status_idx ON certificates (status);
ALTER TABLE ca_certificates ADD CONSTRAINT fk_serial_number FOREIGN KEY (serial_number)
    REFERENCES certificates (serial_number) ON DELETE CASCADE;
""",
    "devicemanager": """
ALTER TABLE devices ADD CONSTRAINT devices_pkey PRIMARY KEY (id);
CREATE INDEX devices_dms_owner_idx ON devices (dms_owner);
""",
}


@dataclass(frozen=True)
class CaInfo:
    """One generated CA: its key id (= SKI = kms key id) and identity."""

    index: int
    ca_id: str
    serial_number: str
    key_id: str
    level: int
    common_name: str
    issuer_index: int  # itself for a root


@dataclass
class Dataset:
    """What :func:`generate` made. Sizes: ``data_bytes`` is the tables' own size (heap, TOAST,
    indexes), the figure ``size_mib`` aims at; ``database_bytes`` adds each database's catalog."""

    layout: Layout
    seed: int
    size_mib: int
    databases: list[str]
    locations: dict[str, tuple[str, str]]  # service -> (database, schema)
    # key_id -> base64 of the PKCS#8 PEM (the Vault KV field "key" at <mount>/<key_id>)
    private_keys: dict[str, str]
    ca_key_ids: list[str]
    public_only_key_ids: list[str]
    engine_id: str
    row_counts: dict[str, dict[str, int]]  # database -> "schema.table" -> rows
    data_bytes: int
    database_bytes: int
    seconds: float
    cas: list[CaInfo] = field(default_factory=list)
    # seconds per generation phase
    phases: dict[str, float] = field(default_factory=dict)

    @property
    def total_rows(self) -> int:
        return sum(n for per_db in self.row_counts.values() for n in per_db.values())


# --------------------------------------------------------------------------- deterministic bits
def _derive(seed: int, *parts: object) -> int:
    text = "|".join(["lamassu-datagen", str(seed), *map(str, parts)])
    return int.from_bytes(hashlib.sha256(text.encode()).digest()[:16], "big")


def _uuid(seed: int, *parts: object) -> str:
    return str(uuid.UUID(int=_derive(seed, "uuid", *parts), version=4))


def _ts(seconds: float) -> str:
    return (EPOCH + dt.timedelta(seconds=seconds)).strftime("%Y-%m-%d %H:%M:%S+00")


class _Serials:
    """Leaf serial numbers computed from (seed, index), so devices can refer to them without
    generating the certificates (and the two tables can be loaded in parallel)."""

    def __init__(self, seed: int) -> None:
        self._prefix = hashlib.blake2b(f"serial|{seed}".encode(), digest_size=16)

    def __call__(self, index: int) -> str:
        h = self._prefix.copy()
        h.update(index.to_bytes(8, "big"))
        return h.hexdigest()


def _json(value: object) -> str:
    return json.dumps(value, separators=(",", ":"), sort_keys=True)


# ----------------------------------------------------------------------------- CA key material
def _ca_keys(seed: int, count: int, label: str) -> list[ec.EllipticCurvePrivateKey]:
    # the order n of the P-256 group
    order = 0xFFFFFFFF00000000FFFFFFFFFFFFFFFFBCE6FAADA7179E84F3B9CAC2FC632551
    keys = []
    for i in range(count):
        digest = hashlib.sha256(f"lamassu-datagen|{seed}|{label}|{i}".encode()).digest()
        scalar = int.from_bytes(digest, "big") % (order - 1) + 1
        keys.append(ec.derive_private_key(scalar, ec.SECP256R1()))
    return keys


def _key_id(key: ec.EllipticCurvePublicKey) -> str:
    der = key.public_bytes(
        serialization.Encoding.DER, serialization.PublicFormat.SubjectPublicKeyInfo
    )
    return hashlib.sha256(der).hexdigest()


def _subject(cn: str) -> x509.Name:
    return x509.Name(
        [
            x509.NameAttribute(NameOID.COUNTRY_NAME, "ES"),
            x509.NameAttribute(NameOID.STATE_OR_PROVINCE_NAME, "Gipuzkoa"),
            x509.NameAttribute(NameOID.LOCALITY_NAME, "Arrasate"),
            x509.NameAttribute(NameOID.ORGANIZATION_NAME, "Lamassu Test"),
            x509.NameAttribute(NameOID.ORGANIZATIONAL_UNIT_NAME, "PKI"),
            x509.NameAttribute(NameOID.COMMON_NAME, cn),
        ]
    )


def _ca_certificate(
    *,
    subject_cn: str,
    key: ec.EllipticCurvePrivateKey,
    issuer_cn: str,
    issuer_key: ec.EllipticCurvePrivateKey,
    serial: int,
    not_before: dt.datetime,
    ski: str,
    aki: str,
) -> bytes:
    """A real CA certificate, signed with deterministic ECDSA so reruns give the same bytes."""
    builder = (
        x509.CertificateBuilder()
        .subject_name(_subject(subject_cn))
        .issuer_name(_subject(issuer_cn))
        .public_key(key.public_key())
        .serial_number(serial)
        .not_valid_before(not_before)
        .not_valid_after(not_before + dt.timedelta(days=3650))
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
        .add_extension(x509.SubjectKeyIdentifier(bytes.fromhex(ski)), critical=False)
        .add_extension(x509.AuthorityKeyIdentifier(bytes.fromhex(aki), None, None), critical=False)
    )
    cert = builder.sign(issuer_key, hashes.SHA256(), ecdsa_deterministic=True)
    return cert.public_bytes(serialization.Encoding.PEM)


# ----------------------------------------------------------------------------- row generators
_STATUSES = ["ACTIVE"] * 14 + ["EXPIRED"] * 3 + ["REVOKED"] * 2 + ["INACTIVE"]
_REASONS = [
    "KeyCompromise",
    "Superseded",
    "CessationOfOperation",
    "AffiliationChanged",
    "PrivilegeWithdrawn",
]
_OUS = ["Production", "Field", "Factory", "Lab", "Fleet", "Retail"]
_LOCALITIES = [
    ("ES", "Gipuzkoa", "Arrasate"),
    ("ES", "Bizkaia", "Bilbao"),
    ("DE", "Bayern", "Munich"),
    ("FR", "Occitanie", "Toulouse"),
    ("US", "Oregon", "Portland"),
]
_KEY_TYPES = [
    ("ECDSA", 256, "MEDIUM"),
    ("ECDSA", 384, "HIGH"),
    ("RSA", 2048, "MEDIUM"),
    ("RSA", 4096, "HIGH"),
    ("ECDSA", 256, "MEDIUM"),
]
_EKU = ['["ClientAuth"]', '["ClientAuth","ServerAuth"]', '["ServerAuth"]']
_KU_LEAF = '["DigitalSignature","KeyEncipherment"]'
_KU_CA = '["CertSign","CRLSign","DigitalSignature"]'
_PEM_HEAD = b"-----BEGIN CERTIFICATE-----\n"
_PEM_TAIL = b"\n-----END CERTIFICATE-----\n"


def _b64_pem_of(pem: bytes) -> str:
    return base64.b64encode(pem).decode("ascii")


def _cert_row(
    *,
    serial: str,
    metadata: str,
    issuer: CaInfo | None,
    status: str,
    certificate: str,
    key_meta: tuple[str, int, str],
    subject: tuple[str, str, str, str, str, str],
    issuer_name: tuple[str, str, str, str, str, str],
    valid_from: str,
    valid_to: str,
    revocation_ts: str,
    revocation_reason: str,
    cert_type: str,
    is_ca: bool,
    ski: str,
    aki: str,
    key_usage: str,
    eku: str,
) -> str:
    fields = [
        serial,
        metadata,
        issuer.serial_number if issuer else r"\N",
        issuer.ca_id if issuer else r"\N",
        str(issuer.level) if issuer else r"\N",
        status,
        certificate,
        key_meta[0],
        str(key_meta[1]),
        key_meta[2],
        *subject,
        *issuer_name,
        valid_from,
        valid_to,
        revocation_ts,
        revocation_reason,
        cert_type,
        ENGINE_ID,
        "t" if is_ca else "f",
        ski,
        aki,
        key_usage,
        eku,
    ]
    return "\t".join(fields) + "\n"


_CERT_COLUMNS = (
    "serial_number, metadata, issuer_meta_serial_number, issuer_meta_id, issuer_meta_level, "
    "status, certificate, key_meta_type, key_meta_bits, key_meta_strength, subject_common_name, "
    "subject_organization, subject_organization_unit, subject_country, subject_state, "
    "subject_locality, issuer_common_name, issuer_organization, issuer_organization_unit, "
    "issuer_country, issuer_state, issuer_locality, valid_from, valid_to, revocation_timestamp, "
    "revocation_reason, type, engine_id, is_ca, subject_key_id, authority_key_id, key_usage, "
    "extended_key_usages"
)


def _ca_name(cn: str) -> tuple[str, str, str, str, str, str]:
    return (cn, "Lamassu Test", "PKI", "ES", "Gipuzkoa", "Arrasate")


def _leaf_rows(
    seed: int, n_leaves: int, cas: list[CaInfo], n_dms: int, serials: _Serials
) -> Iterator[str]:
    """The bulk: one row per device certificate, ~1-3 KB of incompressible base64 PEM each."""
    rng = random.Random(_derive(seed, "certificates"))
    rand, randbytes = rng.random, rng.randbytes
    issuers = [ca for ca in cas if ca.level > 0] or cas
    issuer_names = {ca.index: _ca_name(ca.common_name) for ca in cas}
    b64 = base64.b64encode
    for i in range(n_leaves):
        der_len = 700 + int(rand() * 1300)
        raw = randbytes(der_len + 20)
        body = b64(b"\x30\x82" + der_len.to_bytes(2, "big") + raw[:der_len])
        pem = (
            _PEM_HEAD + b"\n".join([body[j : j + 64] for j in range(0, len(body), 64)]) + _PEM_TAIL
        )
        issuer = issuers[int(rand() * len(issuers))]
        status = _STATUSES[int(rand() * len(_STATUSES))]
        device = i // LEAVES_PER_DEVICE
        dms = device % n_dms
        country, state, locality = _LOCALITIES[device % len(_LOCALITIES)]
        issued = i * 37.0 + rand() * 30
        if status == "REVOKED":
            revoked = _ts(issued + 86400 * (1 + int(rand() * 200)))
            reason = _REASONS[int(rand() * len(_REASONS))]
        else:
            revoked, reason = ZERO_TIME, "Unspecified"
        metadata = (
            f'{{"lamassu.io/ra/dms-id":"dms-{dms:03d}","lamassu.io/device-id":'
            f'"device-{device:09d}","lamassu.io/ra/batch":{i // 5000}'
            + (f',"lamassu.io/ra/notes":"{raw[der_len:].hex()}"' if rand() < 0.3 else "")
            + "}"
        )
        yield _cert_row(
            serial=serials(i),
            metadata=metadata,
            issuer=issuer,
            status=status,
            certificate=b64(pem).decode("ascii"),
            key_meta=_KEY_TYPES[i % len(_KEY_TYPES)],
            subject=(
                f"device-{device:09d}.lamassu.test",
                "Lamassu Test",
                _OUS[device % len(_OUS)],
                country,
                state,
                locality,
            ),
            issuer_name=issuer_names[issuer.index],
            valid_from=_ts(issued),
            valid_to=_ts(issued + 86400 * 365),
            revocation_ts=revoked,
            revocation_reason=reason,
            cert_type="MANAGED" if rand() < 0.9 else "IMPORTED",
            is_ca=False,
            ski=raw[der_len : der_len + 20].hex(),
            aki=issuer.key_id,
            key_usage=_KU_LEAF,
            eku=_EKU[i % len(_EKU)],
        )


def _device_rows(
    seed: int, n_devices: int, n_leaves: int, n_dms: int, serials: _Serials
) -> Iterator[str]:
    rng = random.Random(_derive(seed, "devices"))
    rand = rng.random
    statuses = ["ACTIVE"] * 6 + [
        "RENEWAL_PENDING",
        "EXPIRING_SOON",
        "REVOKED",
        "NO_IDENTITY",
        "DECOMMISSIONED",
    ]
    colors = [
        "#25ee32-#222222",
        "#ff5733-#ffffff",
        "#1f77b4-#000000",
        "#9467bd-#ffffff",
    ]
    for d in range(n_devices):
        created = d * 37.0 * LEAVES_PER_DEVICE
        status = statuses[int(rand() * len(statuses))]
        first = d * LEAVES_PER_DEVICE
        n_versions = 1 + int(rand() * LEAVES_PER_DEVICE)
        versions = {str(v): serials(first + v) for v in range(n_versions) if first + v < n_leaves}
        events = {
            _ts(created + 3600 * v).replace(" ", "T").replace("+00", "Z"): {
                "type": "RENEWED" if v else "CREATED",
                "description": f"certificate with serial {versions[str(v)]} issued",
            }
            for v in range(len(versions))
        }
        identity = (
            None
            if status == "NO_IDENTITY" or not versions
            else {
                "status": "ACTIVE" if status == "ACTIVE" else status,
                "active_version": len(versions) - 1,
                "type": "x509",
                "versions": versions,
                "events": events,
            }
        )
        tags = ["fleet-" + str(d % 17), "zone-" + "abcdef"[d % 6]] + (
            ["critical"] if d % 11 == 0 else []
        )
        metadata = {
            "lamassu.io/device/model": f"LMS-{d % 40:02d}",
            "lamassu.io/device/firmware": f"{1 + d % 5}.{d % 13}.{d % 7}",
            "location": {
                "lat": round(43.0 + rand(), 6),
                "lon": round(-2.5 + rand(), 6),
            },
        }
        device_events = {
            _ts(created).replace(" ", "T").replace("+00", "Z"): {
                "type": "CREATED",
                "description": "device registered by EST enrollment",
            }
        }
        fields = [
            f"device-{d:09d}",
            _json(tags),
            status,
            "CgProcessor",
            colors[d % len(colors)],
            _ts(created),
            _json(metadata),
            f"dms-{d % n_dms:03d}",
            _json(identity) if identity is not None else r"\N",
            "{}",
            _json(device_events),
        ]
        yield "\t".join(fields) + "\n"


def _device_group_rows(seed: int) -> Iterator[str]:
    ids = [_uuid(seed, "group", g) for g in range(20)]
    for g in range(20):
        parent = ids[(g - 1) // 4] if g else None
        criteria = [{"field": "tags", "operand": "contains", "value": f"fleet-{g}"}]
        if g % 3 == 0:
            criteria.append({"field": "status", "operand": "eq", "value": "ACTIVE"})
        yield (
            "\t".join(
                [
                    ids[g],
                    f"group-{g:02d}",
                    f"devices of fleet {g}",
                    parent or r"\N",
                    _json(criteria),
                    _ts(3600 * g),
                    _ts(3600 * g + 86400),
                ]
            )
            + "\n"
        )


def _dms_rows(seed: int, n_dms: int, cas: list[CaInfo]) -> Iterator[str]:
    intermediates = [ca for ca in cas if ca.level > 0] or cas
    for i in range(n_dms):
        ca = intermediates[i % len(intermediates)]
        settings = {
            "enrollment_settings": {
                "enrollment_protocol": "EST_RFC7030",
                "enrollment_ca": ca.ca_id,
                "protocol_est_rfc7030": {
                    "auth_mode": "CLIENT_CERTIFICATE",
                    "client_certificate_settings": {
                        "validation_cas": [intermediates[(i + 1) % len(intermediates)].ca_id],
                        "chain_level_validation": -1,
                        "allow_expired": False,
                    },
                },
                "device_provisioning_profile": {
                    "icon": "BiSolidCreditCardFront",
                    "icon_color": "#25ee32-#222222",
                    "metadata": {"provisioned-by": f"dms-{i:03d}"},
                    "tags": ["iot", f"dms-{i}"],
                },
                "registration_mode": "JITP",
                "enable_replaceable_enrollment": True,
                "verify_csr_signature": True,
            },
            "reenrollment_settings": {
                "additional_validation_cas": [],
                "reenrollment_delta": "1w",
                "enable_expired_renewal": i % 2 == 0,
                "preventive_delta": "31d",
                "critical_delta": "7d",
            },
            "server_keygen_settings": {
                "enabled": i % 3 == 0,
                "key": {"type": "ECDSA", "bits": 256},
            },
            "ca_distribution_settings": {
                "include_enrollment_ca": True,
                "include_system_ca": True,
                "managed_cas": [c.ca_id for c in cas[: 1 + i % 3]],
            },
        }
        metadata = {"lamassu.io/owner": f"team-{i % 4}", "seed": seed}
        yield (
            "\t".join(
                [
                    f"dms-{i:03d}",
                    f"DMS {i:03d}",
                    _json(metadata),
                    _ts(60 * i),
                    _json(settings),
                ]
            )
            + "\n"
        )


_EVENT_TYPES = [
    "ca.create",
    "ca.update.status",
    "ca.update.metadata",
    "ca.delete",
    "ca.sign.certificate",
    "certificate.create",
    "certificate.update.status",
    "certificate.update.metadata",
    "certificate.import",
    "device.create",
    "device.update.status",
    "device.update.identity_slot",
    "device.update.metadata",
    "device.decommission",
    "dms.create",
    "dms.update",
    "dms.delete",
    "dms.enroll",
    "dms.reenroll",
    "kms.create",
    "kms.import",
    "kms.delete",
    "va.role.update",
    "va.crl.create",
    "alert.subscribe",
]


def _event_rows(seed: int) -> Iterator[str]:
    for i, et in enumerate(_EVENT_TYPES):
        event = {
            "specversion": "1.0",
            "id": _uuid(seed, "event", i),
            "source": "lamassuiot",
            "type": et,
            "time": _ts(86400 * 30 + i * 97).replace(" ", "T").replace("+00", "Z"),
            "datacontenttype": "application/json",
            "data": {"sequence": i},
        }
        yield ("\t".join([et, _json(event), _ts(86400 * 30 + i * 97), str(1000 + 37 * i)]) + "\n")


def _subscription_rows(seed: int) -> Iterator[str]:
    for i in range(40):
        channel = (
            {
                "type": "EMAIL",
                "name": f"ops-{i}",
                "config": {"email": f"ops{i}@lamassu.test"},
            }
            if i % 3
            else {
                "type": "WEBHOOK",
                "name": f"hook-{i}",
                "config": {"url": f"https://hooks.lamassu.test/{i}", "method": "POST"},
            }
        )
        conditions = [{"type": "JSON-PATH", "condition": "$.data.status"}] if i % 2 else []
        yield (
            "\t".join(
                [
                    _uuid(seed, "subscription", i),
                    f"user-{i % 7}",
                    _EVENT_TYPES[i % len(_EVENT_TYPES)],
                    _ts(3600 * i),
                    _json(conditions),
                    _json(channel),
                ]
            )
            + "\n"
        )


def _goose_rows(service: str) -> Iterator[str]:
    for n, version in enumerate(GOOSE_VERSIONS[service]):
        tstamp = (EPOCH + dt.timedelta(days=7 * n, seconds=n)).strftime("%Y-%m-%d %H:%M:%S")
        yield f"{version}\tt\t{tstamp}\n"


# ------------------------------------------------------------------------------------ loading
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
    keys = _ca_keys(seed, n_cas, "ca-key")
    extra_keys = _ca_keys(seed, N_PUBLIC_ONLY_KEYS, "public-only-key")
    cas: list[CaInfo] = []
    for i, key in enumerate(keys):
        level = 0 if i < N_ROOT_CAS else 1
        cas.append(
            CaInfo(
                index=i,
                ca_id=_uuid(seed, "ca", i),
                serial_number=f"{_derive(seed, 'ca-serial', i):032x}",
                key_id=_key_id(key.public_key()),
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
    serials = _Serials(seed)

    def ca_cert_rows() -> Iterator[str]:
        for ca in cas:
            issuer = cas[ca.issuer_index]
            not_before = EPOCH - dt.timedelta(days=400 - ca.index)
            pem = _ca_certificate(
                subject_cn=ca.common_name,
                key=keys[ca.index],
                issuer_cn=issuer.common_name,
                issuer_key=keys[issuer.index],
                serial=int(ca.serial_number, 16),
                not_before=not_before,
                ski=ca.key_id,
                aki=issuer.key_id,
            )
            yield _cert_row(
                serial=ca.serial_number,
                metadata=_json(
                    {
                        "lamassu.io/ca/level": ca.level,
                        "lamassu.io/ca/expiration-deltas": [{"delta": "2w", "name": "Preventive"}],
                    }
                ),
                issuer=issuer,
                status="ACTIVE",
                certificate=_b64_pem_of(pem),
                key_meta=("ECDSA", 256, "MEDIUM"),
                subject=_ca_name(ca.common_name),
                issuer_name=_ca_name(issuer.common_name),
                valid_from=not_before.strftime("%Y-%m-%d %H:%M:%S+00"),
                valid_to=(not_before + dt.timedelta(days=3650)).strftime("%Y-%m-%d %H:%M:%S+00"),
                revocation_ts=ZERO_TIME,
                revocation_reason="Unspecified",
                cert_type="MANAGED",
                is_ca=True,
                ski=ca.key_id,
                aki=issuer.key_id,
                key_usage=_KU_CA,
                eku="[]",
            )

    def profile_rows() -> Iterator[str]:
        for p in range(6):
            yield (
                "\t".join(
                    [
                        f"profile-{p:02d}",
                        f"Profile {p}",
                        f"issuance profile {p}",
                        "Duration",
                        r"\N",
                        ["1y", "2y", "90d", "30d", "5y", "10y"][p],
                        "t" if p == 5 else "f",
                        "t",
                        _KU_CA if p == 5 else _KU_LEAF,
                        "t",
                        _EKU[p % len(_EKU)],
                        "t",
                        "",
                        "Lamassu Test",
                        "t" if p % 2 else "f",
                        "t",
                        "t",
                    ]
                )
                + "\n"
            )

    def ca_link_rows() -> Iterator[str]:
        for ca in cas:
            yield (
                "\t".join(
                    [
                        ca.ca_id,
                        ca.serial_number,
                        str(ca.level),
                        _ts(-86400 * (400 - ca.index)),
                        "Duration",
                        r"\N",
                        "2y" if ca.level else "10y",
                        "profile-05" if ca.level == 0 else f"profile-{ca.index % 5:02d}",
                    ]
                )
                + "\n"
            )

    def va_rows() -> Iterator[str]:
        for ca in cas:
            version = 1 + _derive(seed, "crl", ca.index) % 500
            yield (
                "\t".join(
                    [
                        ca.key_id,
                        "24h",
                        "48h",
                        ca.key_id,
                        "t" if ca.index % 2 else "f",
                        str(version),
                        _ts(86400 * 300),
                        _ts(86400 * 302),
                    ]
                )
                + "\n"
            )

    def kms_rows() -> Iterator[str]:
        entries = [(key, True, f"ca-{ca.ca_id}") for ca, key in zip(cas, keys, strict=True)]
        entries += [(key, False, f"imported-{n}") for n, key in enumerate(extra_keys)]
        for n, (key, has_private, name) in enumerate(entries):
            pub = key.public_key()
            pem = pub.public_bytes(
                serialization.Encoding.PEM,
                serialization.PublicFormat.SubjectPublicKeyInfo,
            )
            kid = _key_id(pub)
            yield (
                "\t".join(
                    [
                        kid,
                        ENGINE_ID,
                        name,
                        "ECDSA",
                        "256",
                        base64.b64encode(pem).decode("ascii"),
                        _ts(-86400 * 401 + n),
                        _json({"lamassu.io/kms/usage": "ca" if has_private else "verify"}),
                        _json([f"alias/{kid}"] if has_private else []),
                        "t" if has_private else "f",
                        _json(["ca"] if has_private else ["imported"]),
                    ]
                )
                + "\n"
            )

    # --- DDL
    for service, (db, schema) in locations.items():
        create_schema = f"CREATE SCHEMA {schema};\n" if schema != "public" else ""
        server.psql(
            f"{create_schema}SET search_path TO {schema};\n{_GOOSE_DDL}{_DDL[service]}",
            db,
        )

    def load(service: str, table: str, columns: str, rows: Iterable[str]) -> Callable[[], None]:
        db, schema = locations[service]

        def job() -> None:
            _Copy(server, db, schema, table, columns).run(rows)

        return job

    small_jobs: list[Callable[[], None]] = [
        load(s, "goose_db_version", "version_id, is_applied, tstamp", _goose_rows(s))
        for s in SERVICES
    ]
    small_jobs += [
        load(
            "ca",
            "issuance_profiles",
            "id, name, description, validity_type, validity_time, validity_duration, sign_as_ca, "
            "honor_key_usage, key_usage, honor_extended_key_usages, extended_key_usages, "
            "honor_subject, subject_common_name, subject_organization, crypto_enforcement_enabled, "
            "crypto_enforcement_allow_rsa_keys, crypto_enforcement_allow_ecdsa_keys",
            profile_rows(),
        ),
        load("ca", "certificates", _CERT_COLUMNS, ca_cert_rows()),
        load(
            "ca",
            "ca_certificates",
            'id, serial_number, "level", creation_ts, validity_type, validity_time, '
            "validity_duration, profile_id",
            ca_link_rows(),
        ),
        load(
            "devicemanager",
            "device_groups",
            "id, name, description, parent_id, criteria, created_at, updated_at",
            _device_group_rows(seed),
        ),
        load(
            "dmsmanager",
            "dms",
            'id, "name", metadata, creation_date, settings',
            _dms_rows(seed, n_dms, cas),
        ),
        load(
            "alerts",
            "events",
            'event_type, "event", last_seen, total_seen',
            _event_rows(seed),
        ),
        load(
            "alerts",
            "subscriptions",
            "id, user_id, event_type, subscription_date, conditions, channel",
            _subscription_rows(seed),
        ),
        load(
            "va",
            "va_role",
            "ca_ski, crl_refresh_interval, crl_validity, crl_subject_key_id_signer, "
            "crl_regenerate_on_revoke, latest_crl_version, latest_crl_valid_from, "
            "latest_crl_valid_until",
            va_rows(),
        ),
        load(
            "kms",
            "kms_keys",
            "key_id, engine_id, name, algorithm, size, public_key, creation_ts, metadata, "
            "aliases, has_private_key, tags",
            kms_rows(),
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
                _CERT_COLUMNS,
                _leaf_rows(seed, n_leaves, cas, n_dms, serials),
            ),
            load(
                "devicemanager",
                "devices",
                "id, tags, status, icon, icon_color, creation_timestamp, metadata, dms_owner, "
                "identity_slot, extra_slots, events",
                _device_rows(seed, n_devices, n_leaves, n_dms, serials),
            ),
        ]
    )
    phase("bulk_copy")

    def post(service: str) -> Callable[[], None]:
        db, schema = locations[service]

        def job() -> None:
            server.psql(f"SET search_path TO {schema};\n{_POST_DDL[service]}", db)

        return job

    _run_parallel([post(service) for service in _POST_DDL])
    phase("indexes")
    for db in databases:
        server.psql("ANALYZE;", db)
    phase("analyze")

    counts = {db: row_counts(server, db) for db in databases}
    data_bytes = sum(_data_bytes(server, db) for db in databases)
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
        public_only_key_ids=[_key_id(k.public_key()) for k in extra_keys],
        engine_id=ENGINE_ID,
        row_counts=counts,
        data_bytes=data_bytes,
        database_bytes=database_bytes,
        seconds=time.monotonic() - started,
        cas=cas,
        phases=phases,
    )


# --------------------------------------------------------------------------------- inspection
_USER_TABLES = """
SELECT n.nspname, c.relname
FROM pg_class c JOIN pg_namespace n ON n.oid = c.relnamespace
WHERE c.relkind = 'r' AND n.nspname NOT IN ('pg_catalog', 'information_schema')
  AND n.nspname NOT LIKE 'pg\\_toast%' AND n.nspname NOT LIKE 'pg\\_temp%'
ORDER BY 1, 2;
"""

# Fixed output settings, so the text of every value (hence the checksum) is the same on any server.
_STABLE_OUTPUT = (
    "SET TimeZone = 'UTC'; SET DateStyle = 'ISO, MDY'; SET IntervalStyle = 'postgres'; "
    "SET extra_float_digits = 1; SET bytea_output = 'hex';\n"
)


def _ident(name: str) -> str:
    return '"' + name.replace('"', '""') + '"'


def _literal(text: str) -> str:
    return "'" + text.replace("'", "''") + "'"


def user_tables(server: PostgresServer, db: str) -> list[tuple[str, str]]:
    """(schema, table) of every ordinary table outside the system schemas."""
    return [(r[0], r[1]) for r in server.rows(_USER_TABLES, db)]


def table_checksums(server: PostgresServer, db: str) -> dict[str, str]:
    """``"schema.table" -> "<rows>:<md5>"`` over every column of every row, order-independent
    (the md5 of the sorted per-row md5s), so a restore can be compared with the original."""
    tables = user_tables(server, db)
    if not tables:
        return {}
    digest = "md5(coalesce(string_agg(h, '' ORDER BY h COLLATE \"C\"), ''))"
    # names are quoted with _ident/_literal and come from the catalog, not from users
    parts = [
        f"SELECT {_literal(s + '.' + t)}, count(*), {digest} "  # noqa: S608
        f"FROM (SELECT md5(x::text) AS h FROM ONLY {_ident(s)}.{_ident(t)} x) q"
        for s, t in tables
    ]
    out = server.rows(_STABLE_OUTPUT + "\nUNION ALL\n".join(parts) + ";", db)
    return {r[0]: f"{r[1]}:{r[2]}" for r in out}


def row_counts(server: PostgresServer, db: str) -> dict[str, int]:
    """``"schema.table" -> exact row count`` for every user table."""
    tables = user_tables(server, db)
    if not tables:
        return {}
    parts = [
        f"SELECT {_literal(s + '.' + t)}, count(*) FROM ONLY {_ident(s)}.{_ident(t)}"  # noqa: S608
        for s, t in tables
    ]
    return {r[0]: int(r[1]) for r in server.rows("\nUNION ALL\n".join(parts) + ";", db)}


def sequence_values(server: PostgresServer, db: str) -> dict[str, str]:
    """``"schema.sequence" -> "last_value:is_called"`` (pg_dump restores these with setval)."""
    rows = server.rows(
        "SELECT schemaname || '.' || sequencename, coalesce(last_value::text, ''), "
        "CASE WHEN last_value IS NULL THEN 'f' ELSE 't' END FROM pg_sequences ORDER BY 1;",
        db,
    )
    return {r[0]: f"{r[1]}:{r[2]}" for r in rows}


def _data_bytes(server: PostgresServer, db: str) -> int:
    out = server.psql(
        "SELECT coalesce(sum(pg_total_relation_size(c.oid)), 0) FROM pg_class c "
        "JOIN pg_namespace n ON n.oid = c.relnamespace WHERE c.relkind = 'r' "
        "AND n.nspname NOT IN ('pg_catalog', 'information_schema') "
        "AND n.nspname NOT LIKE 'pg\\_toast%';",
        db,
    )
    return int(out.strip())


def data_bytes(server: PostgresServer, databases: Iterable[str]) -> int:
    """Sum of ``pg_total_relation_size`` over the user tables of ``databases``."""
    return sum(_data_bytes(server, db) for db in databases)


def ca_key_consistency(server: PostgresServer, dataset: Dataset) -> list[str]:
    """Problems tying CA certificates, KMS keys and the private keys together (empty = good):
    every CA certificate's subject_key_id has a kms key with a private key, and every such key
    has an entry in ``dataset.private_keys``."""
    ca_db, ca_schema = dataset.locations["ca"]
    kms_db, kms_schema = dataset.locations["kms"]
    skis = {
        r[0]
        for r in server.rows(
            f"SELECT subject_key_id FROM {_ident(ca_schema)}.certificates WHERE is_ca;",  # noqa: S608
            ca_db,
        )
    }
    with_private = {
        r[0]
        for r in server.rows(
            f"SELECT key_id FROM {_ident(kms_schema)}.kms_keys WHERE has_private_key;",  # noqa: S608
            kms_db,
        )
    }
    problems = [
        f"CA certificate SKI {s} has no kms key with a private key"
        for s in sorted(skis - with_private)
    ]
    problems += [
        f"kms key {k} has no private key in the engine"
        for k in sorted(with_private - set(dataset.private_keys))
    ]
    return problems
