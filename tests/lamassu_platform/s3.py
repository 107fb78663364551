"""An S3 (and KMS) endpoint over real HTTP: ``moto_server`` on a loopback port.

Why: the backup runner uploads with boto3 exactly as to AWS (multipart, SSE-KMS headers), so the
tests talk to an HTTP server rather than patching boto3 in process. One moto process serves every
AWS service on the same port, so the S3 buckets and the KMS keys used for SSE-KMS live together.
Moto accepts any credentials; fixed test values are used so nothing real can leak into a test.
"""

from __future__ import annotations

import http.client
import os
import shutil
import socket
import subprocess
import sys
import tempfile
from pathlib import Path
from types import TracebackType
from typing import Any, Self

import boto3
from botocore.config import Config

from ._util import REPO_ROOT, free_port, stop_process, wait_for

ACCESS_KEY = "AKIALAMASSUTEST00001"
SECRET_KEY = "lamassu-test-secret-key-not-a-real-one"
REGION = "us-east-1"


def _moto_server_binary() -> str:
    """The ``moto_server`` next to the running interpreter (the project's venv)."""
    candidate = Path(sys.executable).parent / "moto_server"
    return str(candidate) if candidate.exists() else "moto_server"


class S3Server:
    """``moto_server -H 127.0.0.1 -p <port>``, in its own process group, logging to a file."""

    host = "127.0.0.1"
    access_key = ACCESS_KEY
    secret_key = SECRET_KEY
    region = REGION

    def __init__(self, work_dir: Path | str, *, port: int | None = None) -> None:
        self.work_dir = Path(work_dir)
        self.port = port or free_port()
        self.log_file = self.work_dir / "moto_server.log"
        self._proc: subprocess.Popen[bytes] | None = None

    @property
    def endpoint(self) -> str:
        return f"http://{self.host}:{self.port}"

    def env(self) -> dict[str, str]:
        """AWS_* variables for a subprocess (the backup runner, the aws CLI) to use this server."""
        return {
            "AWS_ACCESS_KEY_ID": self.access_key,
            "AWS_SECRET_ACCESS_KEY": self.secret_key,
            "AWS_DEFAULT_REGION": self.region,
            "AWS_REGION": self.region,
            "AWS_ENDPOINT_URL": self.endpoint,
            "AWS_ENDPOINT_URL_S3": self.endpoint,
            "AWS_ENDPOINT_URL_KMS": self.endpoint,
        }

    def _request(self, method: str, path: str, timeout: float) -> int:
        conn = http.client.HTTPConnection(self.host, self.port, timeout=timeout)
        try:
            conn.request(method, path)
            resp = conn.getresponse()
            resp.read()
            return resp.status
        finally:
            conn.close()

    def _answers(self) -> bool:
        return self._request("GET", "/moto-api/data.json", timeout=2) == 200

    def start(self) -> Self:
        """Start moto_server and wait until it answers HTTP."""
        if self._proc is not None and self._proc.poll() is None:
            return self
        self.work_dir.mkdir(parents=True, exist_ok=True)
        env = {k: v for k, v in os.environ.items() if not k.startswith("AWS_")}
        env.update(
            {
                "AWS_ACCESS_KEY_ID": self.access_key,
                "AWS_SECRET_ACCESS_KEY": self.secret_key,
                "AWS_DEFAULT_REGION": self.region,
            }
        )
        with self.log_file.open("ab") as log:
            self._proc = subprocess.Popen(
                [_moto_server_binary(), "-H", self.host, "-p", str(self.port)],
                stdin=subprocess.DEVNULL,
                stdout=log,
                stderr=subprocess.STDOUT,
                env=env,
                cwd=self.work_dir,
                start_new_session=True,
            )
        proc = self._proc

        def ready() -> bool:
            if proc.poll() is not None:
                raise RuntimeError(f"moto_server exited with {proc.returncode}: {self._log_tail()}")
            return self._answers()

        try:
            wait_for(ready, timeout=60, interval=0.2, what="moto_server")
        except BaseException:
            self.stop()
            raise
        return self

    def _log_tail(self, lines: int = 20) -> str:
        try:
            return "\n".join(self.log_file.read_text(errors="replace").splitlines()[-lines:])
        except OSError:
            return ""

    def stop(self) -> None:
        """Stop the server's process group (nothing outlives the tests)."""
        if self._proc is not None:
            stop_process(self._proc)
            self._proc = None

    def __enter__(self) -> Self:
        return self.start()

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.stop()

    def reset(self) -> None:
        """Forget every bucket and key (moto's reset API), e.g. between test modules."""
        status = self._request("POST", "/moto-api/reset", timeout=10)
        if status != 200:
            raise RuntimeError(f"moto reset answered HTTP {status}")

    def client(self, service: str = "s3", **kwargs: Any) -> Any:
        """A boto3 client for ``service`` pointed at this server (path-style addressing)."""
        config = kwargs.pop("config", None) or Config(
            s3={"addressing_style": "path"},
            retries={"max_attempts": 2, "mode": "standard"},
        )
        factory: Any = boto3.client  # the stubs' overloads want a literal service name
        return factory(
            service,
            endpoint_url=self.endpoint,
            aws_access_key_id=self.access_key,
            aws_secret_access_key=self.secret_key,
            region_name=self.region,
            config=config,
            **kwargs,
        )

    def create_bucket(self, name: str, *, versioning: bool = False) -> str:
        """Create a bucket (optionally versioned); returns its name."""
        s3 = self.client("s3")
        s3.create_bucket(Bucket=name)
        if versioning:
            s3.put_bucket_versioning(Bucket=name, VersioningConfiguration={"Status": "Enabled"})
        return name

    def create_kms_key(
        self, alias: str | None = None, description: str = "lamassu backup"
    ) -> tuple[str, str]:
        """A symmetric KMS key for SSE-KMS; returns ``(key_id, arn)``. ``alias`` may be given with
        or without the ``alias/`` prefix."""
        kms = self.client("kms")
        meta = kms.create_key(
            Description=description,
            KeyUsage="ENCRYPT_DECRYPT",
            KeySpec="SYMMETRIC_DEFAULT",
        )["KeyMetadata"]
        if alias:
            name = alias if alias.startswith("alias/") else f"alias/{alias}"
            kms.create_alias(AliasName=name, TargetKeyId=meta["KeyId"])
        return str(meta["KeyId"]), str(meta["Arn"])


class VersityGateway:
    """The Versity S3 Gateway on a loopback port, objects in a directory: a fast S3 server for
    the benchmarks (it accepts SSE headers and ignores them; it has no KMS)."""

    region = "us-east-1"
    access_key = ACCESS_KEY
    secret_key = SECRET_KEY

    def __init__(self, work_dir: Path | str) -> None:
        self.work_dir = Path(work_dir)
        self.port = free_port()
        self.log_path = self.work_dir / "versitygw.log"
        self._proc: subprocess.Popen[bytes] | None = None

    @property
    def endpoint(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def start(self) -> Self:
        binary = (
            subprocess.run(
                ["bash", str(REPO_ROOT / "scripts" / "build-versitygw.sh")],
                check=True,
                capture_output=True,
                text=True,
            )
            .stdout.strip()
            .splitlines()[-1]
        )
        # Objects in memory (tmpfs): the benchmark measures the pipeline, not this disk.
        root = self.root = Path(tempfile.mkdtemp(prefix="lamassu-vgw-", dir="/dev/shm"))
        self.work_dir.mkdir(parents=True, exist_ok=True)
        log = self.log_path.open("ab")
        self._proc = subprocess.Popen(
            [
                binary,
                "--port",
                f"127.0.0.1:{self.port}",
                "--access",
                self.access_key,
                "--secret",
                self.secret_key,
                "--region",
                self.region,
                "--quiet",
                "posix",
                str(root),
            ],
            stdout=log,
            stderr=subprocess.STDOUT,
            start_new_session=True,
        )
        wait_for(self._answers, timeout=30, what="versitygw to answer")
        return self

    def _answers(self) -> bool:
        with socket.create_connection(("127.0.0.1", self.port), timeout=1):
            return True

    def stop(self) -> None:
        if self._proc is not None:
            stop_process(self._proc)
            self._proc = None
        if getattr(self, "root", None) is not None:
            shutil.rmtree(self.root, ignore_errors=True)

    def __enter__(self) -> Self:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()

    def client(self, service: str = "s3") -> Any:
        """A boto3 client for this server."""
        factory: Any = boto3.client  # the stubs' overloads want a literal service name
        return factory(
            service,
            endpoint_url=self.endpoint,
            region_name=self.region,
            aws_access_key_id=self.access_key,
            aws_secret_access_key=self.secret_key,
            config=Config(s3={"addressing_style": "path"}),
        )

    def create_bucket(self, name: str) -> None:
        self.client().create_bucket(Bucket=name)

    def env(self) -> dict[str, str]:
        return {
            "AWS_ACCESS_KEY_ID": self.access_key,
            "AWS_SECRET_ACCESS_KEY": self.secret_key,
            "AWS_DEFAULT_REGION": self.region,
        }
