"""Does a stored private key belong to its CA? The public key of each side, compared.

Lamassu names a key by the SHA-256 of its public key (``SubjectPublicKeyInfo``, DER) and keeps
the private key as PEM: the filesystem engine writes the PEM itself (PKCS#8, file
``<storage_directory>/<key id>``), the Vault KV engine base64 of it (field ``key``). A key that
is present but belongs to another key pair (a file overwritten, a KV value from another
install) makes the CA exactly as unable to sign as a missing one, so the check derives the
public key from the stored private key and compares it with the CA certificate's.

The certificate side is parsed here (it is public); the private key's public half is derived by
``openssl pkey`` with the key on its standard input (never on a command line, in a file or in
a log) and only the public key read back. Nothing here returns, logs or raises with key
material: a key that cannot be parsed is reported as unreadable, nothing more.
"""

from __future__ import annotations

import base64
import binascii
import contextlib
import hashlib
import subprocess

OPENSSL_TIMEOUT = 20.0
PEM_BEGIN = b"-----BEGIN "


def key_id_of(spki_der: bytes) -> str:
    """Lamassu's key id of a public key: hex SHA-256 of its DER SubjectPublicKeyInfo."""
    return hashlib.sha256(spki_der).hexdigest()


# -- DER, as far as a certificate's public key needs it ---------------------------------------


def _tlv(data: bytes, at: int) -> tuple[int, int, int]:
    """(tag, start of the content, end of the element) of the DER element at ``at``."""
    if at + 2 > len(data):
        raise ValueError("truncated DER")
    tag, length = data[at], data[at + 1]
    start = at + 2
    if length & 0x80:
        count = length & 0x7F
        if count == 0 or count > 4 or start + count > len(data):
            raise ValueError("bad DER length")
        length = int.from_bytes(data[start : start + count], "big")
        start += count
    end = start + length
    if end > len(data):
        raise ValueError("truncated DER")
    return tag, start, end


def spki_of_certificate_der(der: bytes) -> bytes:
    """The SubjectPublicKeyInfo (DER) of an X.509 certificate."""
    tag, start, _ = _tlv(der, 0)  # Certificate
    if tag != 0x30:
        raise ValueError("not a certificate")
    tag, at, tbs_end = _tlv(der, start)  # tbsCertificate
    if tag != 0x30:
        raise ValueError("not a certificate")
    if der[at] == 0xA0:  # [0] version
        at = _tlv(der, at)[2]
    # serialNumber, signature, issuer, validity, subject
    for _ in range(5):
        at = _tlv(der, at)[2]
    tag, _, end = _tlv(der, at)
    if tag != 0x30 or end > tbs_end:
        raise ValueError("no subjectPublicKeyInfo")
    return der[at:end]


def _pem_block(text: bytes, label: bytes) -> bytes | None:
    """The DER of the first PEM block of that label."""
    begin = b"-----BEGIN " + label + b"-----"
    at = text.find(begin)
    if at < 0:
        return None
    end = text.find(b"-----END ", at + len(begin))
    if end < 0:
        return None
    try:
        return base64.b64decode(b"".join(text[at + len(begin) : end].split()), validate=True)
    except (binascii.Error, ValueError):
        return None


def certificate_spki(stored: str | bytes) -> bytes | None:
    """The public key (DER SubjectPublicKeyInfo) of a certificate as ``ca.certificates`` stores
    it (base64 of the PEM), or as PEM or DER; None when it is none of those."""
    raw = stored.encode() if isinstance(stored, str) else bytes(stored)
    raw = raw.strip()
    if not raw:
        return None
    candidates = [raw]
    if PEM_BEGIN not in raw:
        with contextlib.suppress(binascii.Error, ValueError):
            candidates.insert(0, base64.b64decode(b"".join(raw.split()), validate=True))
    for data in candidates:
        der = _pem_block(data, b"CERTIFICATE") if PEM_BEGIN in data else data
        if der is None:
            continue
        try:
            return spki_of_certificate_der(der)
        except (ValueError, IndexError):
            continue
    return None


# -- the private key's public half ---------------------------------------------------------------


def private_key_pem(stored: str | bytes) -> bytes | None:
    """A private key PEM from what an engine stored: the PEM itself (filesystem) or base64 of it
    (Vault KV ``key``); None when it is neither."""
    raw = stored.encode() if isinstance(stored, str) else bytes(stored)
    if PEM_BEGIN in raw:
        return raw
    try:
        decoded = base64.b64decode(b"".join(raw.split()), validate=True)
    except (binascii.Error, ValueError):
        return None
    return decoded if PEM_BEGIN in decoded else None


def private_key_spki(pem: bytes) -> bytes | None:
    """The DER SubjectPublicKeyInfo of a private key (PKCS#8, PKCS#1 or SEC 1 PEM, unencrypted),
    derived by ``openssl pkey``; None when openssl cannot read it as a private key."""
    try:
        done = subprocess.run(
            ["openssl", "pkey", "-pubout", "-outform", "DER", "-passin", "pass:"],
            input=pem,
            capture_output=True,
            timeout=OPENSSL_TIMEOUT,
            check=False,
        )
    except (OSError, subprocess.TimeoutExpired):
        return None
    # Its stderr can quote what it could not parse: never kept.
    if done.returncode != 0 or not done.stdout:
        return None
    return done.stdout


def openssl_available() -> bool:
    """Whether ``openssl`` runs here (the runner image has it through ca-certificates)."""
    try:
        return (
            subprocess.run(
                ["openssl", "version"], capture_output=True, timeout=OPENSSL_TIMEOUT, check=False
            ).returncode
            == 0
        )
    except (OSError, subprocess.TimeoutExpired):
        return False
