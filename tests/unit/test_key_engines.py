"""Key consistency for every engine a Lamassu install can have, with real keys and certificates.

Each engine's store is built by its component's reader from what that engine really writes
(Lamassu v3.8.0: the filesystem engine a PKCS#8 PEM file per key id, the Vault KV engine base64
of it in field ``key``, the PKCS#11 engine SoftHSM token objects, the AWS KMS engine a key with
alias ``alias/<key id>``), then checked against CAs whose certificates carry the real public
keys: present and matching passes; missing, another key pair, unreadable, pending deletion or
disabled fails naming the CA, the key id and the engine; and no key material ever appears in
what the check reports.
"""

from __future__ import annotations

import base64
import datetime
import hashlib
import os
import shutil
import struct
import subprocess
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import boto3
import pytest
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec, rsa
from cryptography.x509.oid import NameOID
from moto import mock_aws

from lamassu_backup.clients.kms import KmsConnection, export_metadata
from lamassu_backup.components.aws_kms.restore import AwsKmsHooks, metadata_store
from lamassu_backup.components.vault.restore import export_key_values, key_ids_of
from lamassu_backup.components.volumes import softhsm
from lamassu_backup.components.volumes.restore import (
    filesystem_key_ids,
    filesystem_key_reader,
    pkcs11_store,
)
from lamassu_backup.models.policy import BackupPolicySpec
from lamassu_backup.models.runner import RestoreRunConfig, RunnerResult
from lamassu_backup.runner.context import RunnerContext
from lamassu_backup.runner.restore import key_material, keys
from lamassu_backup.runner.restore.run import RestoreRun

FS, VAULT, HSM, AWS = "filesystem-1", "vault-1", "pkcs11-1", "aws-kms-1"
PrivateKey = ec.EllipticCurvePrivateKey | rsa.RSAPrivateKey

pytestmark = pytest.mark.skipif(
    not key_material.openssl_available(), reason="openssl is needed to derive public keys"
)


# -- real keys and CA certificates ------------------------------------------------------------


def spki(key: PrivateKey) -> bytes:
    return key.public_key().public_bytes(
        serialization.Encoding.DER, serialization.PublicFormat.SubjectPublicKeyInfo
    )


def key_id(key: PrivateKey) -> str:
    """Lamassu's key id: hex SHA-256 of the DER public key."""
    return hashlib.sha256(spki(key)).hexdigest()


def pkcs8(key: PrivateKey) -> bytes:
    """What Lamassu's software engine marshals: PKCS#8, PEM, unencrypted."""
    return key.private_bytes(
        serialization.Encoding.PEM,
        serialization.PrivateFormat.PKCS8,
        serialization.NoEncryption(),
    )


def ca_certificate(key: PrivateKey, cn: str) -> str:
    """A self-signed CA certificate as ``ca.certificates.certificate`` holds it: base64 PEM."""
    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, cn)])
    now = datetime.datetime.now(datetime.UTC)
    cert = (
        x509.CertificateBuilder()
        .subject_name(name)
        .issuer_name(name)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now)
        .not_valid_after(now + datetime.timedelta(days=30))
        .add_extension(x509.BasicConstraints(ca=True, path_length=None), critical=True)
        .sign(key, hashes.SHA256())
    )
    return base64.b64encode(cert.public_bytes(serialization.Encoding.PEM)).decode()


@dataclass(frozen=True)
class Ca:
    key: PrivateKey
    key_id: str
    cert: keys.CaCert

    @property
    def secret(self) -> bytes:
        """A piece of the private key that must never be reported."""
        return pkcs8(self.key).splitlines()[2]


def make_ca(name: str, engine: str, *, rsa_key: bool = False) -> Ca:
    key: PrivateKey = (
        rsa.generate_private_key(public_exponent=65537, key_size=2048)
        if rsa_key
        else ec.generate_private_key(ec.SECP256R1())
    )
    kid = key_id(key)
    cert = keys.CaCert(f"s-{name}", kid, "MANAGED", engine, name, ca_certificate(key, name))
    return Ca(key, kid, cert)


@pytest.fixture(scope="module")
def cas() -> dict[str, Ca]:
    """Two CAs per software engine (one EC, one RSA) and a stranger key pair."""
    return {
        "ec": make_ca("ca-ec", FS),
        "rsa": make_ca("ca-rsa", FS, rsa_key=True),
        "other": make_ca("ca-other", FS),
    }


def assert_no_secret(report: keys.KeyReport, *secrets: bytes) -> None:
    text = f"{report.message()} {report.evidence()} {report.failures}".encode()
    for secret in secrets:
        assert secret not in text


# -- the certificate and key readers ---------------------------------------------------------------


def test_public_keys_of_certificates_and_private_keys_agree(cas: dict[str, Ca]) -> None:
    for ca in cas.values():
        from_cert = key_material.certificate_spki(ca.cert.certificate)
        assert from_cert == spki(ca.key)
        pem = key_material.private_key_pem(pkcs8(ca.key))
        assert pem is not None
        assert key_material.private_key_spki(pem) == from_cert
        # The Vault engine's value (base64 of the PEM) and a plain PEM certificate read alike.
        stored = base64.b64encode(pkcs8(ca.key))
        assert key_material.private_key_pem(stored) == pkcs8(ca.key)
        assert key_material.certificate_spki(base64.b64decode(ca.cert.certificate)) == from_cert
    assert key_material.private_key_spki(b"-----BEGIN PRIVATE KEY-----\nAAAA\n") is None
    assert key_material.private_key_pem(b"not a key") is None
    assert key_material.certificate_spki("bm90IGEgY2VydA==") is None


def test_traditional_ec_and_pkcs1_keys_are_read_too(cas: dict[str, Ca]) -> None:
    """Lamassu's ParsePrivateKey falls back to PKCS#1 and SEC 1: so does the check."""
    for ca in (cas["ec"], cas["rsa"]):
        traditional = ca.key.private_bytes(
            serialization.Encoding.PEM,
            serialization.PrivateFormat.TraditionalOpenSSL,
            serialization.NoEncryption(),
        )
        assert key_material.private_key_spki(traditional) == spki(ca.key)


# -- filesystem and Vault KV: presence and key pair ----------------------------------------------

StoreFactory = Callable[[Path, dict[str, bytes]], keys.KeyStore]


def filesystem_store(tmp: Path, files: dict[str, bytes]) -> keys.KeyStore:
    """What the volumes component reads from a filesystem engine's directory."""
    directory = tmp / "fs"
    directory.mkdir()
    for name, content in files.items():
        (directory / name).write_bytes(content)
    return keys.KeyStore(
        FS,
        "filesystem",
        frozenset(filesystem_key_ids(directory)),
        "scratch copy of volume kms-fs",
        read_key=filesystem_key_reader(directory),
    )


def vault_store(tmp: Path, files: dict[str, bytes]) -> keys.KeyStore:
    """What the vault component reads from a KV export (``<mount>/<key id>``, field ``key``)."""
    export = {
        "secrets": {
            f"{kid}": {"data": {"key": base64.b64encode(pem).decode()}}
            for kid, pem in files.items()
        }
    }
    found = key_ids_of(export_key_values(export), "scratch mount(s) lamassu-drill-x")
    [store] = keys.shared_stores(found.ids, found.source, [FS], [], found.read_key)
    return store


ENGINES = {"filesystem": filesystem_store, "vault-kv": vault_store}


def software_case(case: str, cas: dict[str, Ca]) -> tuple[dict[str, bytes], str | None]:
    """What the store holds under each CA's key id, and the problem expected for ca-ec."""
    ec_ca, rsa_ca, other = cas["ec"], cas["rsa"], cas["other"]
    held = {ec_ca.key_id: pkcs8(ec_ca.key), rsa_ca.key_id: pkcs8(rsa_ca.key)}
    if case == "present-and-matching":
        return held, None
    if case == "missing":
        del held[ec_ca.key_id]
        return held, "CA key not in the store"
    if case == "another-key-pair":
        held[ec_ca.key_id] = pkcs8(other.key)
        return held, "private key does not match the CA certificate's public key"
    if case == "unreadable":
        held[ec_ca.key_id] = (
            b"-----BEGIN PRIVATE KEY-----\nbm90IGEga2V5\n-----END PRIVATE KEY-----\n"
        )
        return held, "stored private key cannot be read as a private key"
    raise AssertionError(case)


@pytest.mark.parametrize("engine", sorted(ENGINES))
@pytest.mark.parametrize(
    "case", ["present-and-matching", "missing", "another-key-pair", "unreadable"]
)
def test_software_engines(engine: str, case: str, cas: dict[str, Ca], tmp_path: Path) -> None:
    held, problem = software_case(case, cas)
    store = ENGINES[engine](tmp_path, held)
    ec_ca, rsa_ca = cas["ec"], cas["rsa"]
    kms = [
        keys.KmsKey(ec_ca.key_id, FS, bound_serials=(ec_ca.cert.serial,)),
        keys.KmsKey(rsa_ca.key_id, FS, bound_serials=(rsa_ca.cert.serial,)),
    ]
    report = keys.check_stores(
        kms, [ec_ca.cert, rsa_ca.cert], [store], key_material.private_key_spki
    )
    assert_no_secret(report, *(ca.secret for ca in cas.values()))
    if problem is None:
        assert report.ok, report.message()
        assert report.matched_cas == 2
        assert report.evidence()["casKeyMatched"] == 2
        return
    assert not report.ok
    assert report.matched_cas == 1  # the RSA CA still proves its key
    [failure] = report.failures
    assert failure.ca == "ca-ec (serial s-ca-ec)"
    assert failure.key_id == ec_ca.key_id
    assert failure.engine.startswith(f"engine {FS} ({engine}, ")
    assert failure.problem == problem
    assert "CA ca-ec (serial s-ca-ec)" in report.message()


def test_without_a_certificate_or_a_deriver_the_key_is_checked_for_presence(
    cas: dict[str, Ca], tmp_path: Path
) -> None:
    ca = cas["ec"]
    store = filesystem_store(tmp_path, {ca.key_id: pkcs8(cas["other"].key)})
    bare = keys.CaCert(ca.cert.serial, ca.key_id, "MANAGED", FS, "ca-ec")
    assert keys.check_stores([keys.KmsKey(ca.key_id, FS)], [bare], [store]).ok
    report = keys.check_stores([keys.KmsKey(ca.key_id, FS)], [ca.cert], [store], None)
    assert report.ok
    assert report.matched_cas == 0


# -- PKCS#11: a SoftHSM token directory ---------------------------------------------------------


def _attr(kind_of: int, value: bool | int | bytes) -> bytes:
    if isinstance(value, bool):
        return struct.pack(">QQ", kind_of, 1) + (b"\xff" if value else b"\x00")
    if isinstance(value, int):
        return struct.pack(">QQQ", kind_of, 2, value)
    return struct.pack(">QQQ", kind_of, 3, len(value)) + value


def softhsm_object(attrs: dict[int, bool | int | bytes]) -> bytes:
    """One object file in SoftHSM 2's file format (generation counter, then the attributes)."""
    return struct.pack(">Q", 1) + b"".join(_attr(t, v) for t, v in sorted(attrs.items()))


def public_key_object(key: PrivateKey) -> bytes:
    """A public key object as SoftHSM keeps it: its public numbers in the clear."""
    attrs: dict[int, bool | int | bytes] = {
        softhsm.CKA_CLASS: softhsm.CKO_PUBLIC_KEY,
        softhsm.CKA_PRIVATE: False,
        0x003: b"tmp-label",  # CKA_LABEL: the uuid crypto11 generated, never renamed
    }
    if isinstance(key, rsa.RSAPrivateKey):
        numbers = key.public_key().public_numbers()
        attrs[softhsm.CKA_KEY_TYPE] = softhsm.CKK_RSA
        attrs[softhsm.CKA_MODULUS] = numbers.n.to_bytes((numbers.n.bit_length() + 7) // 8, "big")
        attrs[softhsm.CKA_PUBLIC_EXPONENT] = numbers.e.to_bytes(3, "big")
    else:
        point = key.public_key().public_bytes(
            serialization.Encoding.X962, serialization.PublicFormat.UncompressedPoint
        )
        attrs[softhsm.CKA_KEY_TYPE] = softhsm.CKK_EC
        attrs[softhsm.CKA_EC_PARAMS] = bytes.fromhex("06082a8648ce3d030107")  # P-256
        attrs[softhsm.CKA_EC_POINT] = bytes([0x04, len(point)]) + point
    return softhsm_object(attrs)


def private_key_object() -> bytes:
    """A private key object: its label is encrypted (here: random bytes), its class is not."""
    return softhsm_object(
        {
            softhsm.CKA_CLASS: softhsm.CKO_PRIVATE_KEY,
            softhsm.CKA_PRIVATE: True,
            0x003: os.urandom(48),
        }
    )


def write_token(tokendir: Path, *pairs: PrivateKey) -> Path:
    token = tokendir / "2d4af8df-0e93-acb8-f6ec-d5d740ea3b1d"
    token.mkdir(parents=True)
    (token / "token.object").write_bytes(softhsm_object({0x003: b"lamassuHSM"}))
    (token / "generation").write_bytes(struct.pack(">Q", 1))
    for i, key in enumerate(pairs):
        (token / f"{i:08x}-pub.object").write_bytes(public_key_object(key))
        (token / f"{i:08x}-priv.object").write_bytes(private_key_object())
    return token


def hsm_ca(ca: Ca) -> keys.CaCert:
    return keys.CaCert(
        ca.cert.serial, ca.key_id, "MANAGED", HSM, ca.cert.ca_id, ca.cert.certificate
    )


def hsm_check(store: keys.KeyStore, *ca_list: Ca) -> keys.KeyReport:
    return keys.check_stores(
        [keys.KmsKey(c.key_id, HSM) for c in ca_list],
        [hsm_ca(c) for c in ca_list],
        [store],
        key_material.private_key_spki,
    )


def test_softhsm_key_ids_are_computed_from_public_key_objects(
    cas: dict[str, Ca], tmp_path: Path
) -> None:
    write_token(tmp_path / "tokens", cas["ec"].key, cas["rsa"].key)
    found = softhsm.scan(tmp_path / "tokens")
    assert found.key_ids == {cas["ec"].key_id, cas["rsa"].key_id}
    assert (found.tokens, found.object_files, found.private_keys) == (1, 4, 2)
    assert found.listed
    # One token's directory names that token alone.
    assert softhsm.scan(next((tmp_path / "tokens").iterdir())).key_ids == found.key_ids


@pytest.mark.parametrize("case", ["present", "missing-key", "no-token-directory", "sqlite-store"])
def test_pkcs11_engine(case: str, cas: dict[str, Ca], tmp_path: Path) -> None:
    tokendir = tmp_path / "tokens"
    ec_ca, rsa_ca = cas["ec"], cas["rsa"]
    if case == "present":
        write_token(tokendir, ec_ca.key, rsa_ca.key)
    elif case == "missing-key":
        write_token(tokendir, rsa_ca.key)
    elif case == "sqlite-store":
        (tokendir / "a-token").mkdir(parents=True)
        (tokendir / "a-token" / "sqlite3.db").write_bytes(b"SQLite format 3\x00")
    store = pkcs11_store(HSM, tokendir, "scratch copy of volume softhsm, tokens")
    report = hsm_check(store, ec_ca, rsa_ca)
    if case == "present":
        assert report.ok, report.message()
        assert (report.kms_keys, report.cas, report.present_only) == (2, 2, 0)
        assert report.evidence()["stores"] == [
            f"{HSM}: 1 SoftHSM token(s), 4 object file(s), 2 key id(s) from public keys, "
            "2 private key(s)"
        ]
    elif case == "sqlite-store":
        assert report.ok, report.message()
        assert report.present_only == 2
        ev = report.evidence()
        assert ev["presentOnlyKeys"] == 2
        assert ev["stores"][0].startswith(f"{HSM}: presence only, key labels need the PIN: ")
    else:
        assert not report.ok
        failure = next(f for f in report.failures if f.key_id == ec_ca.key_id)
        assert failure.ca == "ca-ec (serial s-ca-ec)"
        assert failure.engine.startswith(f"engine {HSM} (pkcs11, ")
        if case == "no-token-directory":
            assert "no SoftHSM token directory" in failure.engine
            assert len(report.failures) == 2


SOFTHSM_MODULE = Path("/usr/lib/softhsm/libsofthsm2.so")


@pytest.fixture
def real_token(tmp_path: Path) -> tuple[Path, dict[str, str]]:
    """A token made by SoftHSM itself (softhsm2 and opensc's pkcs11-tool, Debian packages),
    with an EC and an RSA key pair generated inside it as Lamassu's PKCS#11 engine does."""
    if not (shutil.which("softhsm2-util") and shutil.which("pkcs11-tool")) or not (
        SOFTHSM_MODULE.exists()
    ):
        pytest.skip("softhsm2 and opensc are not installed (scripts/install-system-deps.sh)")
    tokendir = tmp_path / "tokens"
    tokendir.mkdir()
    conf = tmp_path / "softhsm2.conf"
    conf.write_text(f"directories.tokendir = {tokendir}\nobjectstore.backend = file\n")
    env = {**os.environ, "SOFTHSM2_CONF": str(conf)}
    pin = "1234"  # a throwaway token's PIN, for the tools only: the check never needs it

    def tool(*args: str) -> bytes:
        return subprocess.run(args, env=env, check=True, capture_output=True).stdout

    init = ["softhsm2-util", "--init-token", "--free", "--label", "lamassu"]
    tool(*init, "--pin", pin, "--so-pin", pin)
    base = ["pkcs11-tool", "--module", str(SOFTHSM_MODULE), "--token-label", "lamassu"]
    ids: dict[str, str] = {}
    for name, spec in (("ec", "EC:prime256v1"), ("rsa", "rsa:2048")):
        hex_id = "01" if name == "ec" else "02"
        tool(*base, "--login", "--pin", pin, "--keypairgen", "--key-type", spec, "--id", hex_id)
        out = tmp_path / f"{name}.der"
        tool(*base, "--read-object", "--type", "pubkey", "--id", hex_id, "-o", str(out))
        ids[name] = hashlib.sha256(out.read_bytes()).hexdigest()
    return tokendir, ids


def test_a_real_softhsm_token_is_read_without_its_pin(
    real_token: tuple[Path, dict[str, str]],
) -> None:
    tokendir, ids = real_token
    found = softhsm.scan(tokendir)
    assert found.listed
    assert found.key_ids == set(ids.values())
    assert found.private_keys == 2
    store = pkcs11_store(HSM, tokendir, "volume softhsm as restored")
    present = keys.KmsKey(ids["ec"], HSM)
    gone = keys.KmsKey("f" * 64, HSM)
    assert keys.check_stores([present], [keys.CaCert("s-1", ids["ec"], "MANAGED", HSM)], [store]).ok
    report = keys.check_stores(
        [gone], [keys.CaCert("s-2", "f" * 64, "MANAGED", HSM, "ca-2")], [store]
    )
    assert not report.ok
    assert str(report.failures[0]).startswith(
        f"CA ca-2 (serial s-2): key {'f' * 64} in engine {HSM}"
    )


# -- AWS KMS: aliases and key states, offline from the set's metadata --------------------------------


@pytest.fixture
def aws_metadata(cas: dict[str, Ca]) -> Iterator[Callable[[str], dict[str, Any]]]:
    """The awsKms backup's metadata document, from real KMS calls (moto): the EC CA's key under
    alias/<its key id>, in the state a case asks for; the RSA CA's key always Enabled."""
    with mock_aws():
        client = boto3.client("kms", region_name="eu-west-1")

        def make(case: str) -> dict[str, Any]:
            for ca in (cas["ec"], cas["rsa"]):
                if ca is cas["ec"] and case == "no-alias":
                    client.create_key(KeySpec="ECC_NIST_P256", KeyUsage="SIGN_VERIFY")
                    continue
                made = client.create_key(KeySpec="ECC_NIST_P256", KeyUsage="SIGN_VERIFY")
                kms_id = made["KeyMetadata"]["KeyId"]
                client.create_alias(AliasName=f"alias/{ca.key_id}", TargetKeyId=kms_id)
                if ca is cas["ec"] and case == "pending-deletion":
                    client.schedule_key_deletion(KeyId=kms_id, PendingWindowInDays=7)
                if ca is cas["ec"] and case == "disabled":
                    client.disable_key(KeyId=kms_id)
            doc, _ = export_metadata(
                KmsConnection("eu-west-1", access_key_id="test", secret_access_key="test"), []
            )
            return doc

        yield make


@pytest.mark.parametrize("case", ["enabled", "no-alias", "pending-deletion", "disabled"])
def test_aws_kms_engine(
    case: str, cas: dict[str, Ca], aws_metadata: Callable[[str], dict[str, Any]]
) -> None:
    doc = aws_metadata(case)
    store = metadata_store(AWS, doc, "the set's AWS KMS metadata")
    ec_ca, rsa_ca = cas["ec"], cas["rsa"]
    certs = [
        keys.CaCert(c.cert.serial, c.key_id, "MANAGED", AWS, c.cert.ca_id, c.cert.certificate)
        for c in (ec_ca, rsa_ca)
    ]
    kms = [keys.KmsKey(c.key_id, AWS, bound_serials=(c.cert.serial,)) for c in (ec_ca, rsa_ca)]
    report = keys.check_stores(kms, certs, [store], key_material.private_key_spki)
    if case == "enabled":
        assert report.ok, report.message()
        assert (report.kms_keys, report.cas) == (2, 2)
        return
    assert not report.ok
    [failure] = report.failures
    assert (failure.ca, failure.key_id) == ("ca-ec (serial s-ca-ec)", ec_ca.key_id)
    assert failure.engine == f"engine {AWS} (aws-kms, the set's AWS KMS metadata)"
    expected = {
        "no-alias": "CA key not in the store",
        "pending-deletion": "is pending deletion",
        "disabled": "is Disabled",
    }[case]
    assert expected in failure.problem
    if case != "no-alias":
        assert report.unusable_keys == [ec_ca.key_id]
        assert report.evidence()["unusableKeys"] == 1


# -- the runner: each component's store, and one check over all engines -------------------------------


def runner(tmp_path: Path, **cfg: Any) -> RestoreRun:
    config = RestoreRunConfig.model_validate(
        {
            "namespace": "lamassu",
            "restore": "r",
            "source": {"bucket": "b"},
            "setPrefix": "p/",
            "decryptionKeyFile": str(tmp_path / "absent"),
            **cfg,
        }
    )
    scratch = tmp_path / "scratch"
    scratch.mkdir(exist_ok=True)
    return RestoreRun(config, RunnerContext(str(scratch)), RunnerResult(ok=False, action="drill"))


def test_one_drill_checks_every_engine_and_names_each_failure(
    cas: dict[str, Ca], tmp_path: Path, aws_metadata: Callable[[str], dict[str, Any]]
) -> None:
    """Filesystem, PKCS#11 (SoftHSM) and AWS KMS stores from their components, Vault KV as the
    shared store: one CA per engine, each with a different fault, each named."""
    fs_ca, hsm_ca_, aws_ca, vault_ca = (
        make_ca("ca-fs", FS),
        make_ca("ca-hsm", HSM),
        make_ca("ca-aws", AWS),
        make_ca("ca-vault", VAULT),
    )
    run = runner(
        tmp_path,
        mode="Drill",
        keyStoreEngines=[VAULT],
        filesystemKeyStores=[
            {"engine": FS, "volume": "kms-fs"},
            {"engine": HSM, "type": "pkcs11", "volume": "softhsm", "path": "tokens"},
        ],
        awsKmsKeyStoreEngine=AWS,
    )
    fs_root = tmp_path / "fs-copy"
    fs_root.mkdir()
    (fs_root / fs_ca.key_id).write_bytes(pkcs8(cas["other"].key))  # another key pair
    hsm_root = tmp_path / "hsm-copy"
    write_token(hsm_root / "tokens", cas["rsa"].key)  # not ca-hsm's key
    run.restored_volumes["kms-fs"] = (fs_root, "scratch copy of volume kms-fs")
    run.restored_volumes["softhsm"] = (hsm_root, "scratch copy of volume softhsm")
    aws = next(p for p in run.parts if isinstance(p, AwsKmsHooks))
    aws.doc, aws.source = aws_metadata("enabled"), "the set's AWS KMS metadata"  # not ca-aws's
    vault = key_ids_of(
        {vault_ca.key_id: base64.b64encode(pkcs8(vault_ca.key)).decode()}, "scratch mount(s) m"
    )
    stores = run.key_stores(vault.ids, vault.source, vault.read_key)
    assert {s.engine_id: s.kind for s in stores} == {
        FS: "filesystem",
        HSM: "pkcs11",
        AWS: "aws-kms",
        VAULT: "vault-kv",
    }
    every = (fs_ca, hsm_ca_, aws_ca, vault_ca)
    kms_rows = [(c.key_id, c.cert.engine_id, True, "[]", "{}") for c in every]
    ca_rows = [
        (c.cert.serial, c.key_id, "MANAGED", c.cert.engine_id, c.cert.ca_id, c.cert.certificate)
        for c in every
    ]
    report = keys.check_inventory(kms_rows, ca_rows, stores, key_material.private_key_spki)
    assert not report.ok
    failed = {
        f.ca.split(" ")[0]: (f.key_id, f.engine.split(" (")[0], f.problem) for f in report.failures
    }
    assert failed == {
        "ca-fs": (
            fs_ca.key_id,
            f"engine {FS}",
            "private key does not match the CA certificate's public key",
        ),
        "ca-hsm": (hsm_ca_.key_id, f"engine {HSM}", "CA key not in the store"),
        "ca-aws": (aws_ca.key_id, f"engine {AWS}", "CA key not in the store"),
    }
    assert report.matched_cas == 1  # ca-vault: present and its own key pair
    assert_no_secret(report, *(c.secret for c in (*every, *cas.values())))


def test_a_drill_without_the_aws_metadata_fails_the_aws_keys_in_place_leaves_them(
    tmp_path: Path, cas: dict[str, Ca]
) -> None:
    ca = cas["ec"]
    kms = [keys.KmsKey(ca.key_id, AWS)]
    cert = [keys.CaCert(ca.cert.serial, ca.key_id, "MANAGED", AWS, "ca-ec")]
    drill = runner(tmp_path, mode="Drill", awsKmsKeyStoreEngine=AWS)
    report = keys.check_stores(kms, cert, drill.key_stores(None, ""))
    assert not report.ok
    assert "awsKms metadata: not in the restored set" in report.message()
    assert any(AWS in w for w in drill.result.warnings)
    in_place = runner(tmp_path, mode="InPlace", awsKmsKeyStoreEngine=AWS)
    assert in_place.key_stores(None, "") == []


# -- the policy API ---------------------------------------------------------------------------------

POLICY: dict[str, Any] = {
    "components": {
        "postgres": {"host": "db", "credentialsSecret": {"name": "pg"}},
        "vault": {
            "address": "https://vault:8200",
            "auth": {"tokenSecret": {"name": "vault-token", "key": "token"}},
            "keyStoreEngines": [VAULT],
        },
        "awsKms": {"region": "eu-west-1", "keyStoreEngine": AWS},
        "volumes": [
            {"name": "kms-fs", "claimName": "fs", "keyStoreEngine": FS},
            {
                "name": "softhsm",
                "claimName": "softhsm-v2-data",
                "keyStoreEngine": HSM,
                "keyStoreType": "pkcs11",
            },
        ],
    },
    "destination": {"s3": {"bucket": "lamassu-backups"}},
    "encryption": {"gpg": {"recipientsSecret": {"name": "gpg-pub", "key": "r.asc"}}},
    "verification": {"decryptionKeySecret": {"name": "gpg-priv", "key": "p.asc"}},
}


def test_every_engine_is_declared_on_the_policy_and_reaches_the_runner() -> None:
    from lamassu_backup.builders import jobs
    from lamassu_backup.components.base import RestoreRequest, SecretMounts

    spec = BackupPolicySpec.model_validate(POLICY)
    assert [v.key_store_type for v in spec.components.volumes] == ["filesystem", "pkcs11"]
    assert spec.components.aws_kms is not None
    assert spec.components.aws_kms.key_store_engine == AWS
    again = BackupPolicySpec.model_validate(spec.to_api())
    assert again.components.volumes[1].key_store_type == "pkcs11"
    settings = jobs.component_restore_settings(
        SecretMounts(),
        RestoreRequest(namespace="lamassu", policy=spec, components=[], drill=True),
    )
    assert [(s.engine, s.type) for s in settings["filesystem_key_stores"]] == [
        (FS, "filesystem"),
        (HSM, "pkcs11"),
    ]
    assert settings["aws_kms_key_store_engine"] == AWS
    assert settings["key_store_engines"] == [VAULT]


@pytest.mark.parametrize(
    ("change", "message"),
    [
        (
            lambda c: c["volumes"][1].pop("keyStoreEngine"),
            "keyStoreType needs keyStoreEngine",
        ),
        (
            lambda c: c["volumes"][1].update(keyStoreType="hashicorp_vault"),
            "Input should be 'filesystem' or 'pkcs11'",
        ),
        (
            lambda c: c["awsKms"].update(keyStoreEngine=VAULT),
            "awsKms.keyStoreEngine names an engine whose keys are in AWS KMS",
        ),
        (
            lambda c: c["awsKms"].update(keyStoreEngine=HSM),
            "awsKms.keyStoreEngine names an engine whose keys are in AWS KMS",
        ),
    ],
    ids=["type-without-engine", "unknown-type", "aws-engine-in-vault", "aws-engine-on-volume"],
)
def test_bad_engine_declarations_are_refused(
    change: Callable[[dict[str, Any]], object], message: str
) -> None:
    import copy

    from pydantic import ValidationError

    spec = copy.deepcopy(POLICY)
    change(spec["components"])
    with pytest.raises(ValidationError) as info:
        BackupPolicySpec.model_validate(spec)
    assert message in str(info.value)
