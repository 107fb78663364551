"""Real services for the runner tests: PostgreSQL with Lamassu data, an S3 server, OpenBao, GnuPG.

Session-scoped: starting them once keeps the tier fast; tests that damage a service (sealing
OpenBao, stopping PostgreSQL) restore it before they end.
"""

from __future__ import annotations

import itertools
import json
import os
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest

from lamassu_backup.models.runner import RunnerConfig
from lamassu_platform import datagen
from lamassu_platform.gpg import GpgKeys, make_keys
from lamassu_platform.openbao import OpenBao
from lamassu_platform.postgres import PostgresServer
from lamassu_platform.s3 import S3Server

DATA_MIB = 20
SEED = 7
KV_MOUNT = "lamassu-kms"


@pytest.fixture(scope="session")
def pg(tmp_path_factory: pytest.TempPathFactory) -> Iterator[PostgresServer]:
    with PostgresServer(tmp_path_factory.mktemp("pg")) as server:
        yield server


@pytest.fixture(scope="session")
def dataset(pg: PostgresServer) -> datagen.Dataset:
    return datagen.generate(pg, DATA_MIB, seed=SEED)


@pytest.fixture(scope="session")
def s3(tmp_path_factory: pytest.TempPathFactory) -> Iterator[S3Server]:
    with S3Server(tmp_path_factory.mktemp("s3")) as server:
        yield server


@pytest.fixture(scope="session")
def kms_key(s3: S3Server) -> str:
    _, arn = s3.create_kms_key(alias="alias/lamassu-backups")
    return arn


@pytest.fixture(scope="session")
def openbao(
    tmp_path_factory: pytest.TempPathFactory, dataset: datagen.Dataset
) -> Iterator[OpenBao]:
    with OpenBao(tmp_path_factory.mktemp("bao"), kv_mount=KV_MOUNT) as server:
        server.write_keys(KV_MOUNT, dataset.private_keys)
        yield server


@pytest.fixture(scope="session")
def gpg_keys(tmp_path_factory: pytest.TempPathFactory) -> Iterator[GpgKeys]:
    keys = make_keys(tmp_path_factory.mktemp("gpg"))
    try:
        yield keys
    finally:
        keys.cleanup()


class SecretDir:
    """Files standing in for the Job's mounted Secret volumes."""

    def __init__(self, root: Path) -> None:
        self.root = root
        root.mkdir(parents=True, exist_ok=True)

    def put(self, name: str, value: str | bytes) -> str:
        path = self.root / name
        path.write_bytes(value if isinstance(value, bytes) else value.encode())
        path.chmod(0o600)
        return str(path)


@pytest.fixture
def secrets(tmp_path: Path) -> SecretDir:
    return SecretDir(tmp_path / "secrets")


ConfigFactory = Callable[..., RunnerConfig]
_SET_COUNTER = itertools.count()


@pytest.fixture
def runner_config(
    pg: PostgresServer,
    dataset: datagen.Dataset,
    s3: S3Server,
    openbao: OpenBao,
    gpg_keys: GpgKeys,
    kms_key: str,
    secrets: SecretDir,
) -> ConfigFactory:
    """Builds a RunnerConfig against the real services; keyword overrides per test."""

    def make(
        *,
        components: list[str] | None = None,
        bucket: str = "lamassu-backups",
        set_time: str | None = None,
        sign: bool = True,
        overrides: dict[str, Any] | None = None,
    ) -> RunnerConfig:
        n = next(_SET_COUNTER)
        set_time = set_time or f"20261124T{10 + n // 60:02d}{n % 60:02d}00Z"
        if s3.client().list_buckets().get("Buckets") is not None and bucket not in [
            b["Name"] for b in s3.client().list_buckets()["Buckets"]
        ]:
            s3.create_bucket(bucket)
        data: dict[str, Any] = {
            "namespace": "lamassu",
            "policy": "lamassu",
            "backup": f"lamassu-{set_time.lower()}",
            "setTime": set_time,
            "setPrefix": f"prod/lamassu/lamassu/{set_time}/",
            "components": components or ["postgres", "vault"],
            "destination": {
                "bucket": bucket,
                "region": s3.region,
                "endpoint": s3.endpoint,
                "forcePathStyle": True,
                "accessKeyIdFile": secrets.put("s3-id", s3.access_key),
                "secretAccessKeyFile": secrets.put("s3-secret", s3.secret_key),
                "sse": "aws:kms",
                "kmsKeyId": kms_key,
                "partSizeMib": 5,
            },
            "gpg": {
                "recipientsFile": secrets.put(
                    "recipients.asc", gpg_keys.recipients_asc.read_bytes()
                ),
                **(
                    {
                        "signingKeyFile": secrets.put(
                            "signing.asc", gpg_keys.signing_key_asc.read_bytes()
                        )
                    }
                    if sign
                    else {}
                ),
            },
            "postgres": {
                "host": pg.host,
                "port": pg.port,
                "sslMode": "disable",
                "usernameFile": secrets.put("pg-user", pg.superuser),
                "passwordFile": secrets.put("pg-password", pg.password),
                "databases": list(dataset.databases),
            },
            "vault": {
                "address": openbao.address,
                "caFile": str(openbao.ca_cert_path),
                "tokenFile": secrets.put("vault-token", openbao.create_backup_token(KV_MOUNT)),
                "raftSnapshot": True,
                "kvMounts": [KV_MOUNT],
            },
        }
        for key, value in (overrides or {}).items():
            if isinstance(value, dict) and isinstance(data.get(key), dict):
                data[key] = {**data[key], **value}
            else:
                data[key] = value
        return RunnerConfig.model_validate(data)

    return make


def run_runner(
    cfg: RunnerConfig, *args: str, env: dict[str, str] | None = None, tmp: Path
) -> tuple[int, dict[str, Any], str]:
    """Run the real runner command as a Job would; returns exit code, result JSON and stderr."""
    import subprocess
    import sys

    termination = tmp / "termination-log"
    termination.write_text("")
    full_env = {
        **os.environ,
        "LAMASSU_RUNNER_CONFIG": cfg.model_dump_json(by_alias=True, exclude_none=True),
        "LAMASSU_TERMINATION_LOG": str(termination),
        **(env or {}),
    }
    proc = subprocess.run(
        [sys.executable, "-m", "lamassu_backup", "runner", *args],
        env=full_env,
        capture_output=True,
        text=True,
        timeout=600,
        check=False,
    )
    text = termination.read_text()
    assert len(text.encode()) <= 4096, "termination message over 4 KiB"
    result = json.loads(text) if text else {}
    return proc.returncode, result, proc.stderr
