"""Backup benchmark: the runner against the runbook's pipeline and the source's own limit.

On Lamassu data of the requested size (six databases), in one run. The data is datagen's:
the real v3.8.0 schema (tests/platform/test_datagen_schema.py holds it to what the real
migrations create), scaled up with synthetic rows shaped like the real ones.

- ``pg_dump -Fc -Z0 | zstd -1 > /dev/null``: the source limit (dump and compress, nothing else);
- ``pg_dump -Fc > /dev/null``: pg_dump with its default compression, for reference;
- the runbook, exactly as written: pg_dump --compress=9 to a file, sha256sum, gpg --encrypt to a
  second file, rm, ``aws s3 cp --sse aws:kms`` (per database, like its multi-database loop);
- the runner (``lamassu-backup runner backup``), with each compression setting.

Run: ``make bench-backup`` (``BENCH_SIZE_MIB=1024`` by default).
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import shlex
import shutil
import sys
import tempfile
import threading
import time
from pathlib import Path

from lamassu_platform import datagen
from lamassu_platform.gpg import make_keys
from lamassu_platform.postgres import PostgresServer
from lamassu_platform.s3 import S3Server, VersityGateway

from .common import MIB, Measurement, dir_size, measure, table

BUCKET = "bench-backups"


def object_mib(s3: S3Server | VersityGateway, prefix: str) -> float:
    total = 0
    for page in s3.client().get_paginator("list_objects_v2").paginate(Bucket=BUCKET, Prefix=prefix):
        total += sum(item["Size"] for item in page.get("Contents", []))
    return total / MIB


class TempWatcher:
    """Samples a directory's size to find the peak temporary disk use of the runbook."""

    def __init__(self, path: Path) -> None:
        self.path = path
        self.peak = 0
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)

    def _run(self) -> None:
        while not self._stop.is_set():
            with contextlib.suppress(FileNotFoundError):
                self.peak = max(self.peak, dir_size(self.path))
            time.sleep(0.05)

    def __enter__(self) -> TempWatcher:
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        self._thread.join()


def runbook_script(
    pg: PostgresServer,
    databases: list[str],
    recipient: str,
    endpoint: str,
    kms_key: str,
    workdir: Path,
) -> str:
    """The runbook's multi-database backup, command for command, with its S3 upload."""
    pg_dump = pg.tool("pg_dump")
    lines = [
        "set -euo pipefail",
        f"BACKUP_DIR={shlex.quote(str(workdir))}",
        "TIMESTAMP=$(date +%Y%m%d_%H%M%S)",
        'mkdir -p "${BACKUP_DIR}"',
    ]
    for db in databases:
        base = f'"${{BACKUP_DIR}}/{db}_${{TIMESTAMP}}.dump"'
        lines += [
            f"{pg_dump} -h {pg.host} -p {pg.port} -U {pg.superuser} -d {db} --format=custom --compress=9 --file={base}",
            f'sha256sum {base} > {base[:-1]}.sha256"',
            f'gpg --batch --trust-model always --encrypt --recipient {recipient} --output {base[:-1]}.gpg" {base}',
            f"rm {base}",
            f'aws --endpoint-url {endpoint} s3 cp {base[:-1]}.gpg" s3://{BUCKET}/runbook/database/ --sse aws:kms --sse-kms-key-id {kms_key} --only-show-errors',
            f'aws --endpoint-url {endpoint} s3 cp {base[:-1]}.sha256" s3://{BUCKET}/runbook/database/ --only-show-errors',
        ]
    return "\n".join(lines)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument(
        "--size-mib", type=int, default=int(os.environ.get("BENCH_SIZE_MIB", "1024"))
    )
    parser.add_argument("--seed", type=int, default=1)
    parser.add_argument("--compressions", default="zstd,lz4")
    parser.add_argument(
        "--s3",
        choices=["moto", "versitygw"],
        default=os.environ.get("BENCH_S3", "versitygw"),
        help="the S3 server: moto (the tests' server; its own ingest speed dominates) or versitygw",
    )
    args = parser.parse_args()
    if shutil.which("aws") is None:
        print("the runbook uses the aws CLI; install awscli to include it", file=sys.stderr)
    work = Path(tempfile.mkdtemp(prefix="bench-backup-"))
    rows: list[Measurement] = []
    try:
        server = VersityGateway(work / "s3") if args.s3 == "versitygw" else S3Server(work / "s3")
        with PostgresServer(work / "pg") as pg, server as s3:
            keys = make_keys(work / "gpg")
            print(f"generating {args.size_mib} MiB of Lamassu data ...", flush=True)
            dataset = datagen.generate(pg, args.size_mib, seed=args.seed)
            print(
                f"  {dataset.data_bytes / MIB:.0f} MiB in tables, {dataset.database_bytes / MIB:.0f} MiB in databases ({dataset.seconds:.1f}s)"
            )
            s3.create_bucket(BUCKET)
            kms_arn = (
                s3.create_kms_key(alias="alias/bench")[1]
                if isinstance(s3, S3Server)
                else "arn:aws:kms:us-east-1:123456789012:key/bench"
            )
            env = {**os.environ, **pg.env(), **s3.env(), "GNUPGHOME": str(keys.keygen_home)}
            dbs = list(dataset.databases)
            pg_dump = pg.tool("pg_dump")
            loop = " && ".join(
                f"{pg_dump} -Fc -Z0 -d {db} | zstd -q -1 -T1 > /dev/null" for db in dbs
            )
            rows.append(
                measure(
                    "source limit: pg_dump -Fc -Z0 | zstd -1",
                    ["bash", "-o", "pipefail", "-c", loop],
                    env=env,
                )
            )
            loop = " && ".join(f"{pg_dump} -Fc -d {db} > /dev/null" for db in dbs)
            rows.append(
                measure(
                    "pg_dump -Fc (default gzip) > /dev/null",
                    ["bash", "-o", "pipefail", "-c", loop],
                    env=env,
                )
            )

            runbook_dir = work / "runbook"
            script = runbook_script(
                pg, dbs, keys.encryption_fingerprint, s3.endpoint, kms_arn, runbook_dir
            )
            with TempWatcher(runbook_dir) as watcher:
                m = measure(
                    "runbook as written (file, sha256sum, gpg, aws cp)",
                    ["bash", "-c", script],
                    env=env,
                )
            m.temp_peak_mib = watcher.peak / MIB
            m.object_mib = object_mib(s3, "runbook/")
            rows.append(m)

            secrets = work / "secrets"
            secrets.mkdir()

            def put(name: str, value: str | bytes) -> str:
                path = secrets / name
                path.write_bytes(value if isinstance(value, bytes) else value.encode())
                return str(path)

            for i, algorithm in enumerate(args.compressions.split(",")):
                set_time = f"20261124T1{i}0000Z"
                config = {
                    "namespace": "bench",
                    "policy": "lamassu",
                    "backup": f"bench-{i}",
                    "setTime": set_time,
                    "setPrefix": f"runner/{algorithm}/{set_time}/",
                    "components": ["postgres"],
                    "destination": {
                        "bucket": BUCKET,
                        "endpoint": s3.endpoint,
                        "forcePathStyle": True,
                        "accessKeyIdFile": put("id", s3.access_key),
                        "secretAccessKeyFile": put("secret", s3.secret_key),
                        "sse": "aws:kms",
                        "kmsKeyId": kms_arn,
                    },
                    "gpg": {
                        "recipientsFile": put("recipients.asc", keys.recipients_asc.read_bytes())
                    },
                    "postgres": {
                        "host": pg.host,
                        "port": pg.port,
                        "sslMode": "disable",
                        "usernameFile": put("user", pg.superuser),
                        "passwordFile": put("password", pg.password),
                        "databases": dbs,
                        "compression": {"algorithm": algorithm, "level": 1},
                    },
                }
                runner_env = {
                    **os.environ,
                    "LAMASSU_RUNNER_CONFIG": json.dumps(config),
                    "LAMASSU_TERMINATION_LOG": str(work / f"term-{i}"),
                }
                m = measure(
                    f"runner ({algorithm}-1, streamed)",
                    [sys.executable, "-m", "lamassu_backup", "runner", "backup"],
                    env=runner_env,
                )
                m.object_mib = object_mib(s3, f"runner/{algorithm}/")
                rows.append(m)
    finally:
        shutil.rmtree(work, ignore_errors=True)

    print()
    print(
        f"Backup of {args.size_mib} MiB of Lamassu data (the real v3.8.0 schema, six databases), "
        "S3 server on this machine"
    )
    print(table(rows, "source limit: pg_dump -Fc -Z0 | zstd -1"))
    runbook = next(r for r in rows if r.name.startswith("runbook"))
    limit = rows[0]
    for r in rows:
        if r.name.startswith("runner"):
            print(
                f"{r.name}: {runbook.wall / r.wall:.1f}x faster than the runbook, {r.wall / limit.wall:.2f}x the source limit, "
                f"object {r.object_mib / runbook.object_mib:.2f}x the runbook's, peak RSS {r.peak_rss_mib:.0f} MiB, "
                f"local disk {r.disk_written_mib:.1f} MiB"
            )
    return 0 if all(r.ok for r in rows) else 1


if __name__ == "__main__":
    raise SystemExit(main())
