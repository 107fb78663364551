"""CA key material: deterministic EC P-256 keys and real CA certificates made from them.

Why apart: a CA key's id ties ``kms.kms_keys``, the CA certificates' ``subject_key_id`` and the
crypto engine's key store together; the loader derives ids and private keys from here, the row
generators the certificates and public keys.
"""

from __future__ import annotations

import datetime as dt
import hashlib

from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import NameOID


def ca_keys(seed: int, count: int, label: str) -> list[ec.EllipticCurvePrivateKey]:
    # the order n of the P-256 group
    order = 0xFFFFFFFF00000000FFFFFFFFFFFFFFFFBCE6FAADA7179E84F3B9CAC2FC632551
    keys = []
    for i in range(count):
        digest = hashlib.sha256(f"lamassu-datagen|{seed}|{label}|{i}".encode()).digest()
        scalar = int.from_bytes(digest, "big") % (order - 1) + 1
        keys.append(ec.derive_private_key(scalar, ec.SECP256R1()))
    return keys


def key_id_of(key: ec.EllipticCurvePublicKey) -> str:
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


def ca_certificate(
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
