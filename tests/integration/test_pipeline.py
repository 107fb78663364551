"""The streaming pipeline's refusals, against real gpg and the S3 server."""

from __future__ import annotations

import gzip
import io
import tarfile
from collections.abc import Iterator
from pathlib import Path

import pytest
import requests

from lamassu_backup.clients.gpg import Keyring
from lamassu_backup.clients.s3 import MIB, S3Connection, S3Store
from lamassu_backup.components.vault.raft import SnapshotVerifier
from lamassu_backup.errors import IntegrityError, LamassuBackupError
from lamassu_backup.runner.stream.pipeline import IterSource, ProcessSource, encrypt_to_store
from lamassu_platform.gpg import GpgKeys
from lamassu_platform.openbao import OpenBao
from lamassu_platform.s3 import S3Server

pytestmark = pytest.mark.platform
BUCKET = "pipeline-tests"


@pytest.fixture(scope="module")
def store(s3: S3Server) -> S3Store:
    s3.create_bucket(BUCKET)
    return S3Store(
        S3Connection(
            bucket=BUCKET,
            endpoint=s3.endpoint,
            force_path_style=True,
            access_key_id=s3.access_key,
            secret_access_key=s3.secret_key,
            sse="none",
            part_size=5 * MIB,
        )
    )


@pytest.fixture
def keyring(gpg_keys: GpgKeys, tmp_path: Path) -> Iterator[tuple[Keyring, list[str]]]:
    ring = Keyring(parent=str(tmp_path))
    keys = ring.import_recipients(gpg_keys.recipients_asc.read_text(), source="test")
    yield ring, [k.fingerprint for k in keys]
    ring.close()


def visible(store: S3Store, key: str) -> bool:
    return store.head(key) is not None


def test_empty_source_is_refused(store: S3Store, keyring: tuple[Keyring, list[str]]) -> None:
    ring, recipients = keyring
    upload = store.multipart("empty.gpg")
    with pytest.raises(IntegrityError, match="produced no data"):
        encrypt_to_store(
            IterSource([], label="empty dump"), keyring=ring, recipients=recipients, upload=upload
        )
    assert not visible(store, "empty.gpg")


def test_failing_source_process_aborts(store: S3Store, keyring: tuple[Keyring, list[str]]) -> None:
    """A dump that writes 12 MiB and then dies: two parts were uploaded, none stays."""
    ring, recipients = keyring
    upload = store.multipart("dies.gpg")
    source = ProcessSource(
        [
            "bash",
            "-c",
            "head -c 12582912 /dev/urandom; echo 'pg_dump: error: connection lost' >&2; exit 1",
        ],
        env=None,
        label="dump",
        describe_error=lambda code, err: f"dump failed (exit {code}): {err.strip()}",
    )
    with pytest.raises(LamassuBackupError, match="connection lost"):
        encrypt_to_store(source, keyring=ring, recipients=recipients, upload=upload)
    assert not visible(store, "dies.gpg")
    assert store.client.list_multipart_uploads(Bucket=BUCKET).get("Uploads", []) == []


def test_failing_compressor_aborts(store: S3Store, keyring: tuple[Keyring, list[str]]) -> None:
    ring, recipients = keyring
    upload = store.multipart("badzstd.gpg")
    with pytest.raises(LamassuBackupError, match="failed"):
        encrypt_to_store(
            IterSource([b"x" * 1000], label="data"),
            keyring=ring,
            recipients=recipients,
            upload=upload,
            compressor=["zstd", "--no-such-option"],
        )
    assert not visible(store, "badzstd.gpg")


def real_snapshot(openbao: OpenBao) -> bytes:
    resp = requests.get(
        f"{openbao.address}/v1/sys/storage/raft/snapshot",
        headers={"X-Vault-Token": openbao.root_token},
        verify=str(openbao.ca_cert_path),
        timeout=60,
    )
    resp.raise_for_status()
    return resp.content


def verify(data: bytes) -> dict[str, object]:
    verifier = SnapshotVerifier()
    for start in range(0, len(data), 4096):
        verifier.tap(data[start : start + 4096])
    return verifier.result()


def test_snapshot_verifier_accepts_a_real_snapshot(openbao: OpenBao) -> None:
    facts = verify(real_snapshot(openbao))
    assert isinstance(facts["stateBytes"], int)
    assert facts["stateBytes"] > 0
    assert facts["sealedSums"] is True


@pytest.mark.parametrize("cut", [0, 10, 0.5, -100])
def test_snapshot_verifier_refuses_truncated(openbao: OpenBao, cut: float) -> None:
    data = real_snapshot(openbao)
    size = (
        int(len(data) * cut) if isinstance(cut, float) else (cut if cut >= 0 else len(data) + cut)
    )
    with pytest.raises(IntegrityError, match="refused"):
        verify(data[:size])


def test_snapshot_verifier_refuses_a_tampered_state(openbao: OpenBao) -> None:
    original = real_snapshot(openbao)
    members: list[tuple[tarfile.TarInfo, bytes]] = []
    with tarfile.open(fileobj=io.BytesIO(original), mode="r:gz") as tar:
        for member in tar:
            handle = tar.extractfile(member)
            assert handle is not None
            members.append((member, handle.read()))
    out = io.BytesIO()
    with tarfile.open(fileobj=out, mode="w:gz") as tar:
        for member, body in members:
            data = bytes([body[0] ^ 1]) + body[1:] if member.name == "state.bin" else body
            tar.addfile(member, io.BytesIO(data))
    with pytest.raises(IntegrityError, match=r"checksum mismatch for state\.bin"):
        verify(out.getvalue())


def test_snapshot_verifier_refuses_other_gzip() -> None:
    with pytest.raises(IntegrityError, match="refused"):
        verify(gzip.compress(b"this is not a tar archive" * 100))
