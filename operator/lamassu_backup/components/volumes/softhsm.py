"""A SoftHSM v2 token directory, read offline and without its PIN: which key ids it holds.

Lamassu's PKCS#11 engine names each key pair by its key id (the hex SHA-256 of the public key's
DER SubjectPublicKeyInfo) in the private key's ``CKA_LABEL``. SoftHSM's file object store
(``objectstore.backend = file``, its default) keeps one directory per token under ``tokendir``:
``token.object`` and one ``<uuid>.object`` file per object. A private object's byte-string
attributes (its label and id among them) are encrypted with a key that only the user PIN
unlocks, so the private key labels cannot be read here; the public key objects are public
(``CKA_PRIVATE`` false: the modulus and exponent, or the curve and point, in the clear). The key
id is computed from each public key exactly as Lamassu computes it, so the token is checked key
by key without the PIN, and without softhsm2-util, p11tool or pkcs11-tool (none of which can
list private objects without the PIN either).

A token this cannot list (SoftHSM's SQLite backend, an unknown file format) is checked for
presence only: the directory and its object files are there, and the evidence says so.

Object file format (SoftHSM 2.x ``ObjectFile``): an 8-byte generation counter, then per
attribute a big-endian u64 attribute type, a u64 value kind (1 boolean: 1 byte; 2 unsigned
long: u64; 3 byte string, 4 attribute map, 5 mechanism set: u64 length then that many bytes,
for 5 that many u64s) and the value.
"""

from __future__ import annotations

import hashlib
import struct
from dataclasses import dataclass, field
from pathlib import Path

CKA_CLASS = 0x000
CKA_PRIVATE = 0x002
CKA_KEY_TYPE = 0x100
CKA_MODULUS = 0x120
CKA_PUBLIC_EXPONENT = 0x122
CKA_EC_PARAMS = 0x180
CKA_EC_POINT = 0x181
CKO_PUBLIC_KEY = 2
CKO_PRIVATE_KEY = 3
CKK_RSA = 0
CKK_EC = 3

BOOLEAN, ULONG, BYTES, ATTRMAP, MECHSET = 1, 2, 3, 4, 5
TOKEN_FILE = "token.object"  # noqa: S105 - a file name, no secret
SQLITE_FILE = "sqlite3.db"
MAX_OBJECT_BYTES = 1 << 20

OID_RSA = bytes.fromhex("06092a864886f70d010101")
OID_EC = bytes.fromhex("06072a8648ce3d0201")


class TokenFormatError(ValueError):
    """An object file that is not SoftHSM's file format."""


def parse_object(data: bytes) -> dict[int, int | bool | bytes]:
    """The attributes of one SoftHSM object file (booleans, unsigned longs, byte strings; maps
    and mechanism sets are skipped)."""
    if len(data) < 8:
        raise TokenFormatError("shorter than its generation counter")
    at = 8
    attrs: dict[int, int | bool | bytes] = {}
    while at < len(data):
        if at + 16 > len(data):
            raise TokenFormatError("truncated attribute header")
        kind_of, kind = struct.unpack_from(">QQ", data, at)
        at += 16
        if kind == BOOLEAN:
            if at + 1 > len(data):
                raise TokenFormatError("truncated boolean")
            attrs[kind_of] = data[at] != 0
            at += 1
        elif kind == ULONG:
            if at + 8 > len(data):
                raise TokenFormatError("truncated unsigned long")
            attrs[kind_of] = struct.unpack_from(">Q", data, at)[0]
            at += 8
        elif kind in (BYTES, ATTRMAP, MECHSET):
            if at + 8 > len(data):
                raise TokenFormatError("truncated length")
            length = struct.unpack_from(">Q", data, at)[0]
            at += 8
            size = length * 8 if kind == MECHSET else length
            if at + size > len(data):
                raise TokenFormatError("truncated value")
            if kind == BYTES:
                attrs[kind_of] = data[at : at + size]
            at += size
        else:
            raise TokenFormatError(f"unknown attribute kind {kind}")
    return attrs


# -- DER: just enough to rebuild a SubjectPublicKeyInfo -------------------------------------------


def _der(tag: int, content: bytes) -> bytes:
    n = len(content)
    if n < 0x80:
        return bytes([tag, n]) + content
    size = n.to_bytes((n.bit_length() + 7) // 8, "big")
    return bytes([tag, 0x80 | len(size)]) + size + content


def _integer(value: bytes) -> bytes:
    value = value.lstrip(b"\x00") or b"\x00"
    if value[0] & 0x80:
        value = b"\x00" + value
    return _der(0x02, value)


def _unwrap_octets(value: bytes) -> bytes:
    """``CKA_EC_POINT`` is the DER OCTET STRING of the point (some tokens store it bare)."""
    if len(value) > 2 and value[0] == 0x04:
        length = value[1]
        start = 2
        if length & 0x80:
            count = length & 0x7F
            length = int.from_bytes(value[2 : 2 + count], "big")
            start = 2 + count
        if start + length == len(value):
            return value[start:]
    return value


def public_key_spki(attrs: dict[int, int | bool | bytes]) -> bytes | None:
    """The DER SubjectPublicKeyInfo of a public key object (RSA or EC), as Go's
    ``x509.MarshalPKIXPublicKey`` writes it; None for anything else."""
    key_type = attrs.get(CKA_KEY_TYPE)
    if key_type == CKK_RSA:
        modulus, exponent = attrs.get(CKA_MODULUS), attrs.get(CKA_PUBLIC_EXPONENT)
        if not isinstance(modulus, bytes) or not isinstance(exponent, bytes) or not modulus:
            return None
        algorithm = _der(0x30, OID_RSA + b"\x05\x00")
        key = _der(0x30, _integer(modulus) + _integer(exponent))
    elif key_type == CKK_EC:
        params, point = attrs.get(CKA_EC_PARAMS), attrs.get(CKA_EC_POINT)
        if not isinstance(params, bytes) or not isinstance(point, bytes) or not params:
            return None
        if params[0] != 0x06:  # a named curve (its OID) is what Lamassu creates
            return None
        algorithm = _der(0x30, OID_EC + params)
        key = _unwrap_octets(point)
    else:
        return None
    return _der(0x30, algorithm + _der(0x03, b"\x00" + key))


# -- the token directory ------------------------------------------------------------------------


@dataclass
class TokenScan:
    """What a token directory holds, as far as it can be told without the PIN."""

    tokens: int = 0
    object_files: int = 0
    private_keys: int = 0
    key_ids: set[str] = field(default_factory=set)
    """Key ids of the public key objects (Lamassu's naming: SHA-256 of the public key)."""
    unlisted: list[str] = field(default_factory=list)
    """Tokens whose objects could not be read (SQLite backend, unknown format): why."""

    @property
    def present(self) -> bool:
        return self.tokens > 0

    @property
    def listed(self) -> bool:
        """Whether every token was read object by object."""
        return self.present and not self.unlisted

    def note(self) -> str:
        """For the evidence: what was checked, and what could not be."""
        if not self.present:
            return "no SoftHSM token directory"
        if self.unlisted:
            return (
                f"presence only, key labels need the PIN: {self.tokens} SoftHSM token(s), "
                f"{self.object_files} object file(s) ({self.unlisted[0][:48]})"
            )
        return (
            f"{self.tokens} SoftHSM token(s), {self.object_files} object file(s), "
            f"{len(self.key_ids)} key id(s) from public keys, {self.private_keys} private key(s)"
        )


def _token_dirs(directory: Path) -> list[Path]:
    """The tokens: ``directory`` itself when it is one, else its sub-directories that are."""
    if not directory.is_dir():
        return []
    if (directory / TOKEN_FILE).is_file() or (directory / SQLITE_FILE).is_file():
        return [directory]
    return sorted(
        p
        for p in directory.iterdir()
        if p.is_dir() and ((p / TOKEN_FILE).is_file() or (p / SQLITE_FILE).is_file())
    )


def scan(directory: Path) -> TokenScan:
    """Every token in ``directory`` (SoftHSM's tokendir, or one token's directory)."""
    out = TokenScan()
    for token in _token_dirs(directory):
        out.tokens += 1
        if (token / SQLITE_FILE).is_file() and not (token / TOKEN_FILE).is_file():
            out.unlisted.append(f"token {token.name}: SQLite object store")
            continue
        for path in sorted(token.glob("*.object")):
            if path.name == TOKEN_FILE or not path.is_file():
                continue
            out.object_files += 1
            try:
                if path.stat().st_size > MAX_OBJECT_BYTES:
                    raise TokenFormatError("too large for an object file")
                attrs = parse_object(path.read_bytes())
            except (OSError, TokenFormatError) as exc:
                out.unlisted.append(f"token {token.name}: {path.name}: {exc}"[:100])
                continue
            kind = attrs.get(CKA_CLASS)
            if kind == CKO_PRIVATE_KEY:
                out.private_keys += 1
            elif kind == CKO_PUBLIC_KEY and attrs.get(CKA_PRIVATE) is True:
                out.unlisted.append(f"token {token.name}: private public key objects")
            elif kind == CKO_PUBLIC_KEY:
                spki = public_key_spki(attrs)
                if spki is not None:
                    out.key_ids.add(hashlib.sha256(spki).hexdigest())
    return out
