"""Proof of recovery in Lamassu's own terms, on the real Lamassu v3.8.0 (kms + ca from source).

Back up a real install (six databases, the Vault KV engine's mount, the filesystem engine's
volume) with the backup runner; wipe the databases and both key stores; restore in place with
``lamassu-backup runner restore``; restart the services; then each CA, one per engine, signs a
new certificate through the real API that verifies against the CA certificate issued before the
backup, and every certificate from before is listed again. The same restore without the keys
is refused by the runner's validation, before anything live changes.

Where each engine keeps its keys comes from a policy, as the operator's Jobs get it
(``builders.jobs.key_store_settings``): the filesystem engine on the kms volume, every other
engine in Vault KV. Drills prove the filesystem side against the volume in the set: a set whose
volume lacks a key file, or a drill without the volume, is refused by CA, key id and engine.

The runner runs as a process, as its Job would, but not under the operator: this tier proves the
data path on real Lamassu data; the operator's Jobs are covered by test_operator.py. Lamassu runs
as its chart's workloads (kms StatefulSet with the PVC ``golang-engine-storage-kms-0``, ca
Deployment, from the ``lamassu`` image) on a control plane with the pod runner on runc: "services
down" is both scaled to 0 and their Pods gone, "up" is scaled back, as a restore does it.
``LAMASSU_SERVICES=host`` runs them as host processes instead.
"""

from __future__ import annotations

import contextlib
import datetime
import itertools
import json
import os
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import NameOID
from kubernetes import client

from lamassu_backup.builders import jobs
from lamassu_backup.models.policy import BackupPolicySpec
from lamassu_backup.models.runner import RestoreRunConfig, RunnerConfig
from lamassu_platform import images, sample
from lamassu_platform.controlplane import ControlPlane
from lamassu_platform.gpg import GpgKeys, make_keys
from lamassu_platform.lamassu import (
    DATABASES,
    FS_ENGINE,
    VAULT_ENGINE,
    Lamassu,
    LamassuClient,
    csr_pem,
    openssl_verify,
)
from lamassu_platform.lamassu_pods import KMS_PVC, LamassuPods
from lamassu_platform.openbao import OpenBao
from lamassu_platform.podrunner import PodRunner
from lamassu_platform.postgres import PostgresServer
from lamassu_platform.s3 import S3Server
from lamassu_platform.stack import api_client

pytestmark = pytest.mark.e2e

MOUNT = "lamassu-kms"
BUCKET = "lamassu-backups"
KEY_VOLUME = KMS_PVC
_N = itertools.count()


class Secrets:
    """Credentials as the Job gets them: one 0600 file each, never in argv or the config."""

    def __init__(self, root: Path) -> None:
        self.root = root
        root.mkdir(mode=0o700, parents=True, exist_ok=True)

    def put(self, name: str, value: str | bytes) -> str:
        path = self.root / name
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
        with os.fdopen(fd, "wb") as fh:
            fh.write(value.encode() if isinstance(value, str) else value)
        return str(path)


@pytest.fixture(scope="module")
def stack(tmp_path_factory: pytest.TempPathFactory) -> Iterator[dict[str, Any]]:
    """PostgreSQL, OpenBao, S3 (with KMS), GnuPG keys and the real Lamassu on them."""
    root = tmp_path_factory.mktemp("recovery")
    with contextlib.ExitStack() as stack:
        pods = None
        if os.environ.get("LAMASSU_SERVICES", "pods") != "host":
            cp = stack.enter_context(ControlPlane(root / "controlplane"))
            built = images.build(("lamassu",))
            runner = stack.enter_context(PodRunner(cp.kubeconfig, root / "pods", images=built))
            api = api_client(cp.kubeconfig)
            api_ns = {"metadata": {"name": "lamassu", "labels": sample.RESTRICTED_NAMESPACE}}
            client.CoreV1Api(api).create_namespace(api_ns)
            pods = LamassuPods(api, "lamassu", runner, images.ref_of(built, "lamassu"))
        pg = stack.enter_context(PostgresServer(root / "pg"))
        bao = stack.enter_context(OpenBao(root / "openbao", kv_mount=MOUNT))
        s3 = stack.enter_context(S3Server(root / "s3"))
        gpg = stack.enter_context(make_keys(root / "gpg"))
        lamassu = stack.enter_context(
            Lamassu(root / "lamassu", pg, openbao=bao, vault_mount=MOUNT, pods=pods)
        )
        s3.create_bucket(BUCKET)
        _, kms_arn = s3.create_kms_key(alias="alias/lamassu-backups")
        yield {
            "pg": pg,
            "bao": bao,
            "s3": s3,
            "gpg": gpg,
            "lamassu": lamassu,
            "kms_arn": kms_arn,
            "secrets": Secrets(root / "secrets"),
            "tmp": root,
        }


def run(kind: str, cfg: RunnerConfig | RestoreRunConfig, tmp: Path) -> tuple[int, dict[str, Any]]:
    """``lamassu-backup runner backup|restore`` as its Job runs it; exit code and result."""
    termination = tmp / f"termination-{next(_N)}"
    termination.write_text("")
    var = "LAMASSU_RUNNER_CONFIG" if kind == "backup" else "LAMASSU_RESTORE_CONFIG"
    proc = subprocess.run(
        [sys.executable, "-m", "lamassu_backup", "runner", kind],
        env={
            **os.environ,
            var: cfg.model_dump_json(by_alias=True, exclude_none=True),
            "LAMASSU_TERMINATION_LOG": str(termination),
        },
        capture_output=True,
        text=True,
        timeout=600,
        check=False,
    )
    text = termination.read_text()
    result = json.loads(text) if text else {}
    if not result:
        result = {"stderr": proc.stderr[-2000:]}
    return proc.returncode, result


def key_stores() -> dict[str, Any]:
    """The restore config's key store fields, from a policy declaring the chart's default:
    the filesystem engine's directory is the kms volume (``vault.keyStoreEngines`` left empty,
    so every other engine is looked for in the KV export)."""
    policy = BackupPolicySpec.model_validate(
        {
            "components": {
                "vault": {
                    "address": "https://openbao:8200",
                    "auth": {"tokenSecret": {"name": "t", "key": "token"}},
                    "kvMounts": [MOUNT],
                },
                "volumes": [
                    {"name": KEY_VOLUME, "claimName": KEY_VOLUME, "keyStoreEngine": FS_ENGINE}
                ],
            },
            "destination": {"s3": {"bucket": BUCKET}},
            "encryption": {"gpg": {"recipientsSecret": {"name": "gpg", "key": "r.asc"}}},
        }
    )
    vault_engines, filesystem = jobs.key_store_settings(policy)
    assert vault_engines == []
    return {
        "keyStoreEngines": vault_engines,
        "filesystemKeyStores": [s.model_dump(by_alias=True) for s in filesystem],
    }


def configs(
    stack: dict[str, Any], set_time: str = "20261201T100000Z"
) -> tuple[RunnerConfig, dict[str, Any]]:
    """The backup config, and the pieces a restore of its set needs."""
    pg: PostgresServer = stack["pg"]
    bao: OpenBao = stack["bao"]
    s3: S3Server = stack["s3"]
    gpg: GpgKeys = stack["gpg"]
    lamassu: Lamassu = stack["lamassu"]
    secrets: Secrets = stack["secrets"]
    destination = {
        "bucket": BUCKET,
        "region": s3.region,
        "endpoint": s3.endpoint,
        "forcePathStyle": True,
        "accessKeyIdFile": secrets.put("s3-id", s3.access_key),
        "secretAccessKeyFile": secrets.put("s3-secret", s3.secret_key),
        "sse": "aws:kms",
        "kmsKeyId": stack["kms_arn"],
        "partSizeMib": 5,
    }
    postgres = {
        "host": pg.host,
        "port": pg.port,
        "sslMode": "disable",
        "usernameFile": secrets.put("pg-user", pg.superuser),
        "passwordFile": secrets.put("pg-password", pg.password),
        "databases": list(DATABASES),
    }
    vault = {
        "address": bao.address,
        "caFile": str(bao.ca_cert_path),
        # Backup, restore and drill rights (a drill creates and drops scratch mounts).
        "tokenFile": secrets.put("vault-token", bao.create_operator_token(MOUNT)),
        "raftSnapshot": False,
        "kvMounts": [MOUNT],
    }
    volumes = [{"name": KEY_VOLUME, "path": str(lamassu.fs_dir)}]
    backup = RunnerConfig.model_validate(
        {
            "namespace": "lamassu",
            "policy": "lamassu",
            "backup": f"lamassu-{set_time.lower()}",
            "setTime": set_time,
            "setPrefix": f"prod/lamassu/lamassu/{set_time}/",
            "components": ["postgres", "vault", "volumes"],
            "destination": destination,
            "gpg": {
                "recipientsFile": secrets.put("recipients.asc", gpg.recipients_asc.read_bytes()),
                "signingKeyFile": secrets.put("signing.asc", gpg.signing_key_asc.read_bytes()),
            },
            "postgres": postgres,
            "vault": vault,
            "volumes": volumes,
        }
    )
    restore = {
        "namespace": "lamassu",
        "mode": "InPlace",
        "step": "restore",
        "source": destination,
        "setPrefix": backup.set_prefix,
        "backup": backup.backup,
        "decryptionKeyFile": secrets.put("decryption.asc", gpg.decryption_key_asc.read_bytes()),
        "signerKeyFile": secrets.put("signer.asc", gpg.signing_public_asc.read_bytes()),
        "postgres": postgres,
        "vault": vault,
        "volumes": volumes,
        **key_stores(),
    }
    return backup, restore


def outside_ca_pem(common_name: str) -> str:
    """A CA certificate made outside Lamassu, to import without its key (IMPORTED_WITHOUT_KEY)."""
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
        .add_extension(x509.SubjectKeyIdentifier.from_public_key(key.public_key()), critical=False)
        .sign(key, hashes.SHA256())
    )
    return cert.public_bytes(serialization.Encoding.PEM).decode()


def wipe(stack: dict[str, Any]) -> None:
    """Lose everything: services down, six empty databases, no key in either engine."""
    pg: PostgresServer = stack["pg"]
    bao: OpenBao = stack["bao"]
    lamassu: Lamassu = stack["lamassu"]
    lamassu.stop()
    for db in DATABASES:
        pg.drop_database(db)
        pg.create_database(db)
    kv = bao.client().secrets.kv.v2
    for key_id in bao.list_key_ids(MOUNT):
        kv.delete_metadata_and_all_versions(path=key_id, mount_point=MOUNT)
    for path in lamassu.fs_dir.iterdir():
        if path.is_file():
            path.unlink()
    assert not bao.list_key_ids(MOUNT)
    assert not lamassu.fs_key_ids()


def test_a_restored_lamassu_signs_with_every_ca_and_keeps_every_certificate(
    stack: dict[str, Any],
) -> None:
    """Back up, wipe, refuse a restore without keys, restore with them, sign and verify."""
    lamassu: Lamassu = stack["lamassu"]
    pg: PostgresServer = stack["pg"]
    tmp: Path = stack["tmp"]
    api: LamassuClient = lamassu.client()
    ca_profile = api.create_profile("recovery-ca", sign_as_ca=True, duration="365d")
    leaf_profile = api.create_profile("recovery-leaf")
    cas = {
        engine: api.create_ca(
            f"recovery-{engine}", f"Recovery CA {engine}", profile_id=ca_profile, engine_id=engine
        )
        for engine in (FS_ENGINE, VAULT_ENGINE)
    }
    old = {
        api.sign_csr(ca.id, csr_pem(f"old-{engine}-{i}"), profile_id=leaf_profile).serial_number
        for engine, ca in cas.items()
        for i in range(3)
    }
    before_stats = api.stats()
    before_serials = {c.serial_number for c in api.list_certificates()}
    assert old <= before_serials

    backup_cfg, restore = configs(stack)
    code, result = run("backup", backup_cfg, tmp)
    assert code == 0, result

    # Without the keys: the set's databases only, the key stores empty. Refused, nothing swapped.
    wipe(stack)
    keyless = RestoreRunConfig.model_validate(
        {**restore, "restore": "recovery-nokeys", "components": ["postgres"]}
    )
    code, result = run("restore", keyless, tmp)
    assert code != 0, result
    assert result["reason"] == "KeyConsistencyFailed", result
    # Each engine's keys were looked for in its own store: the live (wiped) volume for the
    # filesystem engine, the live (wiped) KV mount for the other.
    for ca in cas.values():
        assert f"CA {ca.id} (serial {ca.serial_number}): key {ca.subject_key_id}" in result["error"]
    assert f"engine {FS_ENGINE} (filesystem, live volume {KEY_VOLUME})" in result["error"]
    assert "any engine (vault-kv, live KV mount(s)" in result["error"]
    assert pg.rows("SELECT count(*) FROM pg_tables WHERE schemaname = 'public';", "ca") == [["0"]]

    # With the keys: databases, the KV mount and the filesystem volume.
    full = RestoreRunConfig.model_validate(
        {**restore, "restore": "recovery", "components": ["postgres", "vault", "volumes"]}
    )
    code, result = run("restore", full, tmp)
    assert code == 0, result
    consistency = result["evidence"]["keyConsistency"]
    assert consistency["ok"] is True
    assert consistency["cas"] == len(cas)
    # Both engines' keys, as real Lamassu wrote them (a PEM file, a base64 PEM KV value), are
    # proven to be their CA certificates' key pairs, not merely present.
    assert consistency["casKeyMatched"] == len(cas), consistency
    assert "uncheckedKeys" not in consistency
    assert f"volume {KEY_VOLUME} as restored" in consistency["source"]
    assert cas[FS_ENGINE].subject_key_id in lamassu.fs_key_ids()
    assert cas[VAULT_ENGINE].subject_key_id in lamassu.vault_key_ids()
    lamassu.prepare_databases()  # the restored databases belong to the restoring superuser
    lamassu.start_services()

    assert api.stats() == before_stats
    assert {c.serial_number for c in api.list_certificates()} == before_serials
    for engine, ca in cas.items():
        leaf = api.sign_csr(ca.id, csr_pem(f"new-{engine}"), profile_id=leaf_profile)
        out = tmp / f"verify-{engine}"
        out.mkdir()
        verified = openssl_verify(ca.certificate_pem, leaf.certificate_pem, out)
        assert verified.returncode == 0, (engine, verified.stdout, verified.stderr)


def test_a_drill_checks_the_filesystem_keys_in_the_volume_of_the_set(stack: dict[str, Any]) -> None:
    """A drill restores the kms volume into scratch and checks the filesystem engine's keys
    there: a good set passes; a set whose volume lacks a CA's key file, and a drill without the
    volume, are refused naming the CA, the key id and the engine. Nothing live changes."""
    lamassu: Lamassu = stack["lamassu"]
    pg: PostgresServer = stack["pg"]
    tmp: Path = stack["tmp"]
    lamassu.start_services()  # a no-op after the recovery test; else a fresh start
    api: LamassuClient = lamassu.client()
    profile = api.create_profile("drill-ca", sign_as_ca=True, duration="365d")
    ca = api.create_ca("drill-fs", "Drill CA filesystem", profile_id=profile, engine_id=FS_ENGINE)
    leaf_profile = api.create_profile("drill-leaf")
    keyless = api.import_ca(
        "drill-keyless", outside_ca_pem("Drill keyless"), profile_id=leaf_profile
    )
    assert keyless.type == "IMPORTED_WITHOUT_KEY"
    key_file = lamassu.fs_dir / ca.subject_key_id
    assert key_file.is_file()

    good_cfg, restore = configs(stack, "20261201T110000Z")
    assert run("backup", good_cfg, tmp)[0] == 0
    aside = tmp / "drill-key-aside"
    key_file.rename(aside)  # the key file is lost before the next backup
    try:
        bad_cfg, bad_restore = configs(stack, "20261201T120000Z")
        assert run("backup", bad_cfg, tmp)[0] == 0
    finally:
        aside.rename(key_file)
    # The key file holds another key pair (overwritten by hand, or from another install).
    original = key_file.read_bytes()
    stranger = ec.generate_private_key(ec.SECP256R1()).private_bytes(
        serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()
    )
    key_file.write_bytes(stranger)
    try:
        swapped_cfg, swapped_restore = configs(stack, "20261201T130000Z")
        assert run("backup", swapped_cfg, tmp)[0] == 0
    finally:
        key_file.write_bytes(original)
    live_keys = lamassu.fs_key_ids()
    live_dbs = set(pg.databases())

    def drill(name: str, cfg: dict[str, Any], components: list[str]) -> tuple[int, dict[str, Any]]:
        return run(
            "restore",
            RestoreRunConfig.model_validate(
                {**cfg, "restore": name, "mode": "Drill", "components": components}
            ),
            tmp,
        )

    everything = ["postgres", "vault", "volumes"]
    code, result = drill("drill-good", restore, everything)
    assert code == 0, result
    ev = result["evidence"]
    assert ev["keyConsistency"]["ok"] is True, ev["keyConsistency"]
    assert f"scratch copy of volume {KEY_VOLUME}" in ev["keyConsistency"]["source"]
    assert "uncheckedKeys" not in ev["keyConsistency"]
    assert ev["keyConsistency"]["keylessCas"] >= 1  # the imported CA without a key: no failure
    assert ev["volumes"][KEY_VOLUME] >= 1
    assert ev["teardown"]["left"] == []

    code, result = drill("drill-lost-key", bad_restore, everything)
    assert code == 1, result
    assert result["reason"] == "KeyConsistencyFailed", result
    error = result["error"]
    assert f"CA {ca.id} (serial {ca.serial_number})" in error
    assert ca.subject_key_id in error
    assert keyless.id not in error
    assert f"engine {FS_ENGINE} (filesystem, scratch copy of volume {KEY_VOLUME})" in error
    named = f"{ca.id} (serial {ca.serial_number})"[:40]  # the evidence cuts names short
    missing = result["evidence"]["keyConsistency"]["missing"]
    assert missing == [f"{named}|{ca.subject_key_id[:16]}|{FS_ENGINE}"]
    assert result["evidence"]["teardown"]["left"] == []

    code, result = drill("drill-other-key-pair", swapped_restore, everything)
    assert code == 1, result
    assert result["reason"] == "KeyConsistencyFailed", result
    error = result["error"]
    assert f"CA {ca.id} (serial {ca.serial_number}): key {ca.subject_key_id}" in error
    assert f"engine {FS_ENGINE} (filesystem, scratch copy of volume {KEY_VOLUME})" in error
    assert "private key does not match the CA certificate's public key" in error
    assert result["evidence"]["keyConsistency"]["casKeyMismatch"] == 1
    assert stranger.splitlines()[1].decode() not in json.dumps(result)
    assert result["evidence"]["teardown"]["left"] == []

    code, result = drill("drill-no-volume", restore, ["postgres", "vault"])
    assert code == 1, result
    assert result["reason"] == "KeyConsistencyFailed", result
    unrestored = f"engine {FS_ENGINE} (filesystem, volume {KEY_VOLUME}: not in the restored set)"
    assert unrestored in result["error"]
    assert ca.subject_key_id in result["error"]
    assert any(KEY_VOLUME in w and FS_ENGINE in w for w in result["warnings"]), result

    # Drills touch nothing live: the same key files, no scratch database left, and the CA signs.
    assert lamassu.fs_key_ids() == live_keys
    assert set(pg.databases()) == live_dbs
    leaf = api.sign_csr(ca.id, csr_pem("after-drills"), profile_id=profile)
    out = tmp / "verify-after-drills"
    out.mkdir()
    assert openssl_verify(ca.certificate_pem, leaf.certificate_pem, out).returncode == 0
