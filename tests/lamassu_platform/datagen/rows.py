"""Row generators: every table's rows as ``COPY`` text lines, all derived from the seed.

Why apart: this is where the data looks like Lamassu's (incompressible base64 PEM, jsonb
columns, Go's zero time, devices referring to their certificates' serials) and where
determinism lives: the same seed gives the same lines, in any process.
"""

from __future__ import annotations

import base64
import datetime as dt
import hashlib
import json
import random
import uuid
from collections.abc import Iterator

from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ec

from .keys import ca_certificate, key_id_of
from .schema import ENGINE_ID, GOOSE_VERSIONS, KMS_BIND_KEY, CaInfo

LEAVES_PER_DEVICE = 3

EPOCH = dt.datetime(2024, 1, 1, tzinfo=dt.UTC)
# Go's zero time.Time: how Lamassu stores "not revoked"
ZERO_TIME = "0001-01-01 00:00:00+00"


# --------------------------------------------------------------------------- deterministic bits
def derive(seed: int, *parts: object) -> int:
    text = "|".join(["lamassu-datagen", str(seed), *map(str, parts)])
    return int.from_bytes(hashlib.sha256(text.encode()).digest()[:16], "big")


def derived_uuid(seed: int, *parts: object) -> str:
    return str(uuid.UUID(int=derive(seed, "uuid", *parts), version=4))


def _ts(seconds: float) -> str:
    return (EPOCH + dt.timedelta(seconds=seconds)).strftime("%Y-%m-%d %H:%M:%S+00")


class Serials:
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
    engine_id: str,
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
        engine_id,
        "t" if is_ca else "f",
        ski,
        aki,
        key_usage,
        eku,
    ]
    return "\t".join(fields) + "\n"


CERT_COLUMNS = (
    "serial_number, metadata, issuer_meta_serial_number, issuer_meta_id, issuer_meta_level, "
    "status, certificate, key_meta_type, key_meta_bits, key_meta_strength, subject_common_name, "
    "subject_organization, subject_organization_unit, subject_country, subject_state, "
    "subject_locality, issuer_common_name, issuer_organization, issuer_organization_unit, "
    "issuer_country, issuer_state, issuer_locality, valid_from, valid_to, revocation_timestamp, "
    "revocation_reason, type, engine_id, is_ca, subject_key_id, authority_key_id, "
    "extensions_key_usage, extensions_extended_key_usage"
)


def _ca_name(cn: str) -> tuple[str, str, str, str, str, str]:
    return (cn, "Lamassu Test", "PKI", "ES", "Gipuzkoa", "Arrasate")


def leaf_rows(
    seed: int, n_leaves: int, cas: list[CaInfo], n_dms: int, serials: Serials
) -> Iterator[str]:
    """The bulk: one row per device certificate, ~1-3 KB of incompressible base64 PEM each."""
    rng = random.Random(derive(seed, "certificates"))
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
            # Devices enrol with their own keys (EST): Lamassu signs their CSRs, so the leaf
            # is IMPORTED_WITHOUT_KEY and no engine holds its key.
            cert_type="IMPORTED_WITHOUT_KEY",
            engine_id="",
            is_ca=False,
            ski=raw[der_len : der_len + 20].hex(),
            aki=issuer.key_id,
            key_usage=_KU_LEAF,
            eku=_EKU[i % len(_EKU)],
        )


def device_rows(
    seed: int, n_devices: int, n_leaves: int, n_dms: int, serials: Serials
) -> Iterator[str]:
    rng = random.Random(derive(seed, "devices"))
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


def device_group_rows(seed: int) -> Iterator[str]:
    ids = [derived_uuid(seed, "group", g) for g in range(20)]
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


def dms_rows(seed: int, n_dms: int, cas: list[CaInfo]) -> Iterator[str]:
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


def event_rows(seed: int) -> Iterator[str]:
    for i, et in enumerate(_EVENT_TYPES):
        event = {
            "specversion": "1.0",
            "id": derived_uuid(seed, "event", i),
            "source": "lamassuiot",
            "type": et,
            "time": _ts(86400 * 30 + i * 97).replace(" ", "T").replace("+00", "Z"),
            "datacontenttype": "application/json",
            "data": {"sequence": i},
        }
        yield ("\t".join([et, _json(event), _ts(86400 * 30 + i * 97), str(1000 + 37 * i)]) + "\n")


def subscription_rows(seed: int) -> Iterator[str]:
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
                    derived_uuid(seed, "subscription", i),
                    f"user-{i % 7}",
                    _EVENT_TYPES[i % len(_EVENT_TYPES)],
                    _ts(3600 * i),
                    _json(conditions),
                    _json(channel),
                ]
            )
            + "\n"
        )


def goose_rows(service: str) -> Iterator[str]:
    for n, version in enumerate(GOOSE_VERSIONS[service]):
        tstamp = (EPOCH + dt.timedelta(days=7 * n, seconds=n)).strftime("%Y-%m-%d %H:%M:%S")
        yield f"{version}\tt\t{tstamp}\n"


# ------------------------------------------------------------------- rows from the CA keys
def ca_cert_rows(cas: list[CaInfo], keys: list[ec.EllipticCurvePrivateKey]) -> Iterator[str]:
    """The CAs' own certificates: real X.509, in the same table as the leaves."""
    for ca in cas:
        issuer = cas[ca.issuer_index]
        not_before = EPOCH - dt.timedelta(days=400 - ca.index)
        pem = ca_certificate(
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
            engine_id=ENGINE_ID,
            is_ca=True,
            ski=ca.key_id,
            aki=issuer.key_id,
            key_usage=_KU_CA,
            eku="[]",
        )


def profile_rows() -> Iterator[str]:
    """Six issuance profiles; ``profile-05`` signs as a CA (the roots use it)."""
    for p in range(6):
        yield (
            "\t".join(
                [
                    f"profile-{p:02d}",
                    f"Profile {p}",
                    f"issuance profile {p}",
                    "Duration",
                    ZERO_TIME,
                    ["1y", "2y", "90d", "30d", "5y", "10y"][p],
                    "t" if p == 5 else "f",
                    "t",
                    _KU_CA if p == 5 else _KU_LEAF,
                    "t",
                    _EKU[p % len(_EKU)],
                    "t",
                    "",
                    "Lamassu Test",
                    "",
                    "",
                    "",
                    "",
                    "t",
                    "t" if p % 2 else "f",
                    "t",
                    "[2048,3072,4096]" if p % 2 else "",
                    "t",
                    "[256,384]" if p % 2 else "",
                ]
            )
            + "\n"
        )


def ca_link_rows(cas: list[CaInfo]) -> Iterator[str]:
    """``ca_certificates``: which certificate is which CA, its level and profile."""
    for ca in cas:
        yield (
            "\t".join(
                [
                    ca.serial_number,
                    "{}",
                    ca.ca_id,
                    _ts(-86400 * (400 - ca.index)),
                    str(ca.level),
                    "profile-05" if ca.level == 0 else f"profile-{ca.index % 5:02d}",
                ]
            )
            + "\n"
        )


def va_rows(seed: int, cas: list[CaInfo]) -> Iterator[str]:
    """One VA role (CRL settings and latest CRL version) per CA key."""
    for ca in cas:
        version = 1 + derive(seed, "crl", ca.index) % 500
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


def kms_rows(
    cas: list[CaInfo],
    keys: list[ec.EllipticCurvePrivateKey],
    extra_keys: list[ec.EllipticCurvePrivateKey],
) -> Iterator[str]:
    """``kms_keys``: one per CA key (with its private key), plus imported public-only keys."""
    # As the kms writes them: a CA's key is named after the CA and bound to its certificate
    # by metadata; imported public keys have no name and no binding.
    entries = [
        (key, True, f"Key For CA CN={ca.common_name}", ca.serial_number)
        for ca, key in zip(cas, keys, strict=True)
    ]
    entries += [(key, False, "", "") for key in extra_keys]
    for n, (key, has_private, name, serial) in enumerate(entries):
        pub = key.public_key()
        pem = pub.public_bytes(
            serialization.Encoding.PEM,
            serialization.PublicFormat.SubjectPublicKeyInfo,
        )
        kid = key_id_of(pub)
        binding = (
            {KMS_BIND_KEY: [{"resource_id": serial, "resource_type": "certificate"}]}
            if serial
            else {}
        )
        yield (
            "\t".join(
                [
                    _json(binding),
                    name,
                    "ECDSA",
                    "256",
                    base64.b64encode(pem).decode("ascii"),
                    _ts(-86400 * 401 + n),
                    ENGINE_ID,
                    kid,
                    "[]",
                    "t" if has_private else "f",
                    "[]",
                ]
            )
            + "\n"
        )
