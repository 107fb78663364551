"""OpenBao, the real thing: raft snapshot save and restore, sealing, the narrow backup token, Helm.

These pin down the behaviour the backup runner relies on: what a snapshot file contains and how
to check it offline, that ``snapshot-force`` brings deleted and changed keys back, how a sealed
server refuses reads, and that the ``lamassu-backup`` policy is enough for a snapshot and no more.
"""

from __future__ import annotations

import base64
import hashlib
import io
import json
import subprocess
import tarfile
import time
from collections.abc import Iterator
from pathlib import Path

import hvac
import pytest
import requests
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ec
from hvac.exceptions import Forbidden, InvalidRequest, VaultDown

from lamassu_platform._util import REPO_ROOT, wait_for
from lamassu_platform.openbao import OpenBao

pytestmark = pytest.mark.platform

# Member names of a raft snapshot as OpenBao 2.7 writes them, in archive order.
SNAPSHOT_MEMBERS = ["meta.json", "state.bin", "SHA256SUMS", "SHA256SUMS.sealed"]


@pytest.fixture(scope="module")
def openbao(tmp_path_factory: pytest.TempPathFactory) -> Iterator[OpenBao]:
    """One server for the module: starting one costs seconds, and tests restore what they change."""
    with OpenBao(tmp_path_factory.mktemp("openbao")) as server:
        yield server


@pytest.fixture(scope="module")
def backup_token(openbao: OpenBao) -> str:
    """A token with only the ``lamassu-backup`` policy, as the backup runner would get."""
    return openbao.create_backup_token()


def lamassu_keys(count: int) -> dict[str, str]:
    """Keys shaped like Lamassu's: id = SHA-256 hex of the public key, value = base64 PKCS#8 PEM."""
    keys: dict[str, str] = {}
    for _ in range(count):
        private = ec.generate_private_key(ec.SECP256R1())
        spki = private.public_key().public_bytes(
            serialization.Encoding.DER, serialization.PublicFormat.SubjectPublicKeyInfo
        )
        pem = private.private_bytes(
            serialization.Encoding.PEM,
            serialization.PrivateFormat.PKCS8,
            serialization.NoEncryption(),
        )
        keys[hashlib.sha256(spki).hexdigest()] = base64.b64encode(pem).decode()
    return keys


def save_snapshot(server: OpenBao, token: str, dest: Path) -> int:
    """Stream ``GET sys/storage/raft/snapshot`` to ``dest`` (never held in memory); bytes out."""
    with requests.get(
        f"{server.address}/v1/sys/storage/raft/snapshot",
        headers={"X-Vault-Token": token},
        verify=str(server.ca_cert_path),
        stream=True,
        timeout=120,
    ) as resp:
        resp.raise_for_status()
        assert resp.headers["Content-Type"] == "application/gzip"
        with dest.open("wb") as out:
            for chunk in resp.iter_content(chunk_size=1 << 16):
                out.write(chunk)
    return dest.stat().st_size


def restore_snapshot(server: OpenBao, token: str, src: Path) -> requests.Response:
    """Stream the file to ``POST sys/storage/raft/snapshot-force``."""
    with src.open("rb") as body:
        return requests.post(
            f"{server.address}/v1/sys/storage/raft/snapshot-force",
            headers={"X-Vault-Token": token},
            data=body,
            verify=str(server.ca_cert_path),
            timeout=120,
        )


def verify_snapshot_offline(path: Path) -> dict[str, object]:
    """Check a snapshot without a server: gzip'd tar, SHA256SUMS matches, meta.json consistent.

    SHA256SUMS.sealed is the same list encrypted with the barrier key: only a server holding the
    unseal key can check it, so offline we only require that it is present and non-empty.
    """
    with path.open("rb") as fh:
        assert fh.read(2) == b"\x1f\x8b", "not gzip"
    with tarfile.open(path, mode="r:gz") as tar:
        members = tar.getmembers()
        names = [m.name for m in members]
        assert names == SNAPSHOT_MEMBERS, names
        assert all(m.isfile() for m in members)
        blobs: dict[str, bytes] = {}
        for member in members:
            extracted = tar.extractfile(member)
            assert extracted is not None
            blobs[member.name] = extracted.read()
    sums: dict[str, str] = {}
    for line in blobs["SHA256SUMS"].decode().splitlines():
        digest, name = line.split("  ", 1)  # sha256sum(1) format: "<64 hex>  <name>"
        assert len(digest) == 64, line
        assert all(c in "0123456789abcdef" for c in digest), line
        sums[name] = digest
    assert sorted(sums) == ["meta.json", "state.bin"]
    for name, digest in sums.items():
        assert hashlib.sha256(blobs[name]).hexdigest() == digest, f"checksum mismatch: {name}"
    meta = json.loads(blobs["meta.json"])
    assert meta["Size"] == len(blobs["state.bin"])
    assert blobs["SHA256SUMS.sealed"]
    return meta  # type: ignore[no-any-return]


def test_helm_version_from_cached_build() -> None:
    """The Helm CLI built from its Go module runs and reports the pinned version."""
    out = subprocess.run(
        ["bash", str(REPO_ROOT / "scripts/build-helm.sh")],
        check=True,
        stdout=subprocess.PIPE,
        text=True,
    )
    helm = out.stdout.strip().splitlines()[-1]
    version = subprocess.run(
        [helm, "version", "--template", "{{.Version}}"],
        check=True,
        stdout=subprocess.PIPE,
        text=True,
    ).stdout.strip()
    assert version == "v3.21.4"


def test_backup_token_can_snapshot_but_not_change_policies(
    openbao: OpenBao, backup_token: str, tmp_path: Path
) -> None:
    """The runner's token takes a snapshot and reads keys, and cannot widen its own rights."""
    openbao.write_keys(openbao.kv_mount, lamassu_keys(1))
    assert save_snapshot(openbao, backup_token, tmp_path / "snap.tar.gz") > 0
    verify_snapshot_offline(tmp_path / "snap.tar.gz")

    narrow = openbao.client(backup_token)
    key_ids = narrow.secrets.kv.v2.list_secrets(path="", mount_point=openbao.kv_mount)
    assert key_ids["data"]["keys"]
    with pytest.raises(Forbidden):
        narrow.sys.create_or_update_policy(name="lamassu-backup", policy='path "*" {}')
    with pytest.raises(Forbidden):
        narrow.sys.enable_secrets_engine("kv", path="not-allowed", options={"version": "2"})
    assert 'path "*"' not in openbao.client().sys.read_policy("lamassu-backup")["data"]["rules"]


def test_snapshot_save_change_restore(openbao: OpenBao, backup_token: str, tmp_path: Path) -> None:
    """Save, then change and delete keys, then snapshot-force: the saved keys come back exactly."""
    mount = openbao.kv_mount
    openbao.write_keys(mount, lamassu_keys(5))
    before = openbao.read_keys(mount)
    assert len(before) >= 5

    snap = tmp_path / "raft.snap"
    save_snapshot(openbao, backup_token, snap)
    meta = verify_snapshot_offline(snap)
    assert meta["Version"] == 1
    assert meta["Index"]

    gone, changed = sorted(before)[:2]
    kv = openbao.client().secrets.kv.v2
    kv.delete_metadata_and_all_versions(path=gone, mount_point=mount)
    openbao.write_keys(mount, {changed: base64.b64encode(b"not the key").decode()})
    openbao.write_keys(mount, lamassu_keys(1))  # a key born after the backup
    assert openbao.read_keys(mount) != before

    began = time.monotonic()
    resp = restore_snapshot(openbao, backup_token, snap)
    assert resp.status_code == 204, resp.text
    # Observed with OpenBao 2.7.2 (same cluster, so the same keyring): 204 comes back at once and
    # the restore runs after it; requests block for ~5 s until it is done, then see the restored
    # data. The node stays unsealed and active: no re-unseal. A 204 alone proves nothing, so the
    # runner must read back.
    wait_for(lambda: openbao.read_keys(mount) == before, timeout=60, what="restored keys")
    print(f"snapshot-force (same cluster): keys back after {time.monotonic() - began:.2f}s")
    assert not openbao.is_sealed()
    # The token was in the snapshot, so the runner can go on using it after a restore.
    narrow = openbao.client(backup_token)
    assert narrow.secrets.kv.v2.list_secrets(path="", mount_point=mount)


def test_snapshot_force_into_a_fresh_server_needs_the_source_unseal_key(
    openbao: OpenBao, backup_token: str, tmp_path: Path
) -> None:
    """Disaster recovery into a new cluster: it seals itself and opens with the source's key.

    The snapshot carries the source's keyring and tokens, so the target's own unseal key and
    root token stop working; the source's unseal key and root token take over.
    """
    mount = openbao.kv_mount
    openbao.write_keys(mount, lamassu_keys(2))
    before = openbao.read_keys(mount)
    snap = tmp_path / "dr.snap"
    save_snapshot(openbao, backup_token, snap)

    with OpenBao(tmp_path / "target", node_id="dr-target-0") as target:
        target_key = target.unseal_key_file.read_text()
        began = time.monotonic()
        resp = restore_snapshot(target, target.root_token, snap)
        assert resp.status_code == 204, resp.text
        wait_for(target.is_sealed, timeout=60, what="target sealed after restore")
        print(f"snapshot-force (new cluster): sealed after {time.monotonic() - began:.2f}s")
        with pytest.raises(InvalidRequest, match="failed to decrypt keys"):
            target.client().sys.submit_unseal_key(key=target_key)

        target.adopt_credentials(
            openbao.token_file.read_text(), openbao.unseal_key_file.read_text()
        )
        target.unseal()
        assert target.read_keys(mount) == before
        # The runner's token came along with the snapshot.
        assert target.client(backup_token).secrets.kv.v2.list_secrets(path="", mount_point=mount)


def test_snapshot_force_refuses_a_damaged_file(
    openbao: OpenBao, backup_token: str, tmp_path: Path
) -> None:
    """A snapshot whose content does not match its checksums is refused and changes nothing."""
    good = tmp_path / "good.snap"
    save_snapshot(openbao, backup_token, good)
    before = openbao.read_keys(openbao.kv_mount)

    with tarfile.open(good, mode="r:gz") as tar:
        blobs = {m.name: tar.extractfile(m).read() for m in tar.getmembers()}  # type: ignore[union-attr]
    state = bytearray(blobs["state.bin"])
    state[len(state) // 2] ^= 0xFF
    blobs["state.bin"] = bytes(state)
    bad = tmp_path / "bad.snap"
    with tarfile.open(bad, mode="w:gz") as tar:
        for name in SNAPSHOT_MEMBERS:
            info = tarfile.TarInfo(name)
            info.size, info.mode = len(blobs[name]), 0o600
            tar.addfile(info, io.BytesIO(blobs[name]))

    resp = restore_snapshot(openbao, backup_token, bad)
    assert resp.status_code >= 400, resp.text
    print(f"damaged snapshot refused: HTTP {resp.status_code} {resp.json().get('errors')}")
    assert not openbao.is_sealed()
    assert openbao.read_keys(openbao.kv_mount) == before


def test_sealed_server_refuses_reads(openbao: OpenBao) -> None:
    """Sealed, every read fails with HTTP 503 'sealed' (hvac: VaultDown) until unsealed."""
    mount = openbao.kv_mount
    before = openbao.read_keys(mount)
    key_id = next(iter(before))
    openbao.seal()
    try:
        with pytest.raises(VaultDown, match="sealed"):
            openbao.client().secrets.kv.v2.read_secret_version(
                path=key_id, mount_point=mount, raise_on_deleted_version=True
            )
        raw = requests.get(
            f"{openbao.address}/v1/{mount}/data/{key_id}",
            headers={"X-Vault-Token": openbao.token_file.read_text()},
            verify=str(openbao.ca_cert_path),
            timeout=10,
        )
        assert raw.status_code == 503
        assert any("sealed" in e for e in raw.json()["errors"]), raw.text
        assert hvac.Client(url=openbao.address, verify=str(openbao.ca_cert_path)).sys.is_sealed()
    finally:
        openbao.unseal()
    assert openbao.read_keys(mount) == before
