"""The backup runner against real PostgreSQL, GnuPG, an S3 server and OpenBao."""

from __future__ import annotations

import hashlib
import json
import subprocess
from pathlib import Path

import pytest

from lamassu_platform import datagen
from lamassu_platform.gpg import GpgKeys
from lamassu_platform.s3 import S3Server

from .conftest import ConfigFactory, run_runner

pytestmark = pytest.mark.platform


def keys_under(s3: S3Server, bucket: str, prefix: str) -> dict[str, int]:
    out: dict[str, int] = {}
    for page in s3.client().get_paginator("list_objects_v2").paginate(Bucket=bucket, Prefix=prefix):
        for item in page.get("Contents", []):
            out[item["Key"][len(prefix) :]] = item["Size"]
    return out


def test_backup_all_components_lands_in_the_layout(
    runner_config: ConfigFactory,
    s3: S3Server,
    dataset: datagen.Dataset,
    tmp_path: Path,
    gpg_keys: GpgKeys,
) -> None:
    cfg = runner_config(components=["postgres", "vault"])
    code, result, stderr = run_runner(cfg, "backup", tmp=tmp_path)
    assert code == 0, (result, stderr)
    assert result["ok"] is True
    objects = keys_under(s3, cfg.destination.bucket, cfg.set_prefix)
    expected = {f"postgres/{db}.dump.zst.gpg" for db in dataset.databases}
    expected |= {f"postgres/{db}.dump.sha256" for db in dataset.databases}
    expected |= {"vault/raft.snap.gpg", "vault/raft.snap.sha256"}
    expected |= {"vault/kv-lamassu-kms.json.gpg", "vault/kv-lamassu-kms.json.sha256"}
    expected |= {"manifest.json", "manifest.json.asc", "parts/postgres.json", "parts/vault.json"}
    assert set(objects) == expected
    assert all(size > 0 for size in objects.values())

    client = s3.client()
    manifest_bytes = client.get_object(
        Bucket=cfg.destination.bucket, Key=cfg.set_prefix + "manifest.json"
    )["Body"].read()
    assert result["manifestSha256"] == hashlib.sha256(manifest_bytes).hexdigest()
    manifest = json.loads(manifest_bytes)
    assert manifest["complete"] is True
    assert manifest["signedBy"] == gpg_keys.signing_fingerprint
    for artifact in manifest["artifacts"]:
        body = client.get_object(
            Bucket=cfg.destination.bucket, Key=cfg.set_prefix + artifact["key"]
        )
        data = body["Body"].read()
        assert hashlib.sha256(data).hexdigest() == artifact["sha256"]
        assert len(data) == artifact["sizeBytes"]
        assert body["ServerSideEncryption"] == "aws:kms"
    ca = next(a for a in manifest["artifacts"] if a["name"] == "ca")
    assert (
        ca["details"]["rowCounts"]["public.certificates"]
        == dataset.row_counts["ca"]["public.certificates"]
    )
    assert ca["details"]["goose"]["public"]["version"] > 0

    # The detached signature verifies with the signing public key, as a person would check it.
    sig = tmp_path / "manifest.json.asc"
    sig.write_bytes(
        client.get_object(Bucket=cfg.destination.bucket, Key=cfg.set_prefix + "manifest.json.asc")[
            "Body"
        ].read()
    )
    man = tmp_path / "manifest.json"
    man.write_bytes(manifest_bytes)
    home = gpg_keys.fresh_home("verify", gpg_keys.signing_public_asc)
    verify = subprocess.run(
        ["gpg", "--homedir", str(home), "--verify", str(sig), str(man)],
        capture_output=True,
        check=False,
    )
    assert verify.returncode == 0, verify.stderr
