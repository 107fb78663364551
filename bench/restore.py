"""Restore benchmark: the runner against the runbook's restore and pg_restore's own limit.

On Lamassu data of the requested size (six databases: datagen's, the real v3.8.0 schema with
synthetic rows shaped like the real ones, see bench/backup.py), in one run, each approach
restoring all six databases:

- ``pg_restore -j1`` (and ``-j2``) from local plain custom-format dump files: the limit (no
  download, no decryption, no verification, no swap);
- the runbook's restore as written, per database: ``aws s3 cp`` of the ``.dump.gpg`` (the
  runbook's backup: ``pg_dump --compress=9``), ``gpg --decrypt`` to a file, ``sha256sum -c``,
  ``DROP DATABASE``, ``CREATE DATABASE``, ``pg_restore``;
- the runner (``lamassu-backup runner restore``, InPlace), which streams from S3, checks both
  checksums, decrypts, decompresses, restores into scratch databases, verifies row counts and
  goose versions, checks key consistency, and swaps: variants for databases in parallel and for
  ``pg_restore -j2`` from a spool file.

Targets: the runner >= 2x faster than the runbook and <= 1.25x ``pg_restore -j1`` from a file.
Run: ``make bench-restore`` (``BENCH_SIZE_MIB=1024`` by default).
"""

from __future__ import annotations

import argparse
import json
import os
import shlex
import shutil
import subprocess
import sys
import tempfile
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from lamassu_platform import datagen
from lamassu_platform.gpg import GpgKeys, make_keys
from lamassu_platform.openbao import OpenBao
from lamassu_platform.postgres import PostgresServer
from lamassu_platform.s3 import S3Server

from .backup import TempWatcher, runbook_script
from .common import MIB, Measurement, dir_size, measure, table

BUCKET = "bench-backups"
KV_MOUNT = "lamassu-kms"


def settle(pg: PostgresServer) -> None:
    """Same starting line for every approach: dirty buffers written, page cache flushed."""
    pg.psql("CHECKPOINT;")
    subprocess.run(["sync"], check=False)


def runbook_restore_script(
    pg: PostgresServer, databases: list[str], endpoint: str, workdir: Path, stamp: str
) -> str:
    """The runbook's "Full Database Restore", command for command, once per database."""
    lines = ["set -euo pipefail", f"mkdir -p {shlex.quote(str(workdir))}"]
    for db in databases:
        local = shlex.quote(str(workdir / f"{db}_{stamp}.dump.gpg"))
        plain = shlex.quote(str(workdir / f"{db}_{stamp}.dump"))
        sums = shlex.quote(str(workdir / f"{db}_{stamp}.dump.sha256"))
        base = f"s3://{BUCKET}/runbook/database"
        lines += [
            f"aws --endpoint-url {endpoint} s3 cp {base}/{db}_{stamp}.dump.gpg {local} --only-show-errors",
            f"aws --endpoint-url {endpoint} s3 cp {base}/{db}_{stamp}.dump.sha256 {sums} --only-show-errors",
            f"gpg --batch --quiet --decrypt {local} > {plain}",
            # the runbook's .sha256 names the file by its backup path: check it where it was
            f"(cd {shlex.quote(str(workdir))} && sed 's#  .*/#  #' {sums} | sha256sum -c --quiet)",
            f'psql -X -q -d postgres -c "DROP DATABASE IF EXISTS {db};"',
            f'psql -X -q -d postgres -c "CREATE DATABASE {db};"',
            f"{pg.tool('pg_restore')} -d {db} {plain}",
            f"rm -f {local} {plain} {sums}",
        ]
    return "\n".join(lines)


def put(directory: Path, name: str, value: str | bytes) -> str:
    path = directory / name
    path.write_bytes(value if isinstance(value, bytes) else value.encode())
    path.chmod(0o600)
    return str(path)


def runner_configs(
    pg: PostgresServer,
    s3: S3Server,
    bao: OpenBao,
    keys: GpgKeys,
    kms_arn: str,
    dbs: list[str],
    secrets: Path,
) -> tuple[dict[str, Any], dict[str, Any]]:
    """The backup config (to make the set) and the restore config (to restore it)."""
    set_time = "20261124T100000Z"
    destination = {
        "bucket": BUCKET,
        "endpoint": s3.endpoint,
        "forcePathStyle": True,
        "accessKeyIdFile": put(secrets, "id", s3.access_key),
        "secretAccessKeyFile": put(secrets, "secret", s3.secret_key),
        "sse": "aws:kms",
        "kmsKeyId": kms_arn,
    }
    postgres = {
        "host": pg.host,
        "port": pg.port,
        "sslMode": "disable",
        "usernameFile": put(secrets, "user", pg.superuser),
        "passwordFile": put(secrets, "password", pg.password),
        "databases": dbs,
    }
    vault = {
        "address": bao.address,
        "caFile": str(bao.ca_cert_path),
        "tokenFile": put(secrets, "token", bao.root_token),
        "raftSnapshot": False,
        "kvMounts": [KV_MOUNT],
    }
    backup_cfg = {
        "namespace": "bench",
        "policy": "lamassu",
        "backup": "bench-restore",
        "setTime": set_time,
        "setPrefix": f"runner/{set_time}/",
        "components": ["postgres", "vault"],
        "destination": destination,
        "gpg": {
            "recipientsFile": put(secrets, "recipients.asc", keys.recipients_asc.read_bytes()),
            "signingKeyFile": put(secrets, "signing.asc", keys.signing_key_asc.read_bytes()),
        },
        "postgres": postgres,
        "vault": vault,
    }
    restore_cfg = {
        "namespace": "bench",
        "restore": "bench",
        "mode": "InPlace",
        "source": destination,
        "setPrefix": f"runner/{set_time}/",
        "components": ["postgres", "vault"],
        "decryptionKeyFile": put(secrets, "decryption.asc", keys.decryption_key_asc.read_bytes()),
        "signerKeyFile": put(secrets, "signer.asc", keys.signing_public_asc.read_bytes()),
        "postgres": postgres,
        "vault": vault,
    }
    return backup_cfg, restore_cfg


def run_cli(config: dict[str, Any], work: Path, *args: str) -> dict[str, Any]:
    """Run a runner command (unmeasured set-up or clean-up); its result."""
    term = work / "term.json"
    env = {
        **os.environ,
        "LAMASSU_RUNNER_CONFIG": json.dumps(config),
        "LAMASSU_RESTORE_CONFIG": json.dumps(config),
        "LAMASSU_TERMINATION_LOG": str(term),
    }
    proc = subprocess.run(
        [sys.executable, "-m", "lamassu_backup", "runner", *args],
        env=env,
        capture_output=True,
        text=True,
        check=False,
    )
    if proc.returncode != 0:
        raise RuntimeError(
            f"runner {' '.join(args)} failed: {term.read_text()} {proc.stderr[-2000:]}"
        )
    result: dict[str, Any] = json.loads(term.read_text())
    return result


class Bench:
    """The servers, the sets and the measurements of one run."""

    def __init__(
        self, work: Path, pg: PostgresServer, s3: S3Server, bao: OpenBao, size_mib: int, seed: int
    ) -> None:
        self.work = work
        self.pg = pg
        self.s3 = s3
        self.rows: list[Measurement] = []
        self.notes: list[str] = []
        self.keys = make_keys(work / "gpg")
        print(f"generating {size_mib} MiB of Lamassu data ...", flush=True)
        dataset = datagen.generate(pg, size_mib, seed=seed)
        bao.write_keys(KV_MOUNT, dataset.private_keys)
        self.dbs = list(dataset.databases)
        print(
            f"  {dataset.data_bytes / MIB:.0f} MiB in tables, "
            f"{dataset.database_bytes / MIB:.0f} MiB in databases ({dataset.seconds:.1f}s)",
            flush=True,
        )
        self.before = {db: datagen.table_checksums(pg, db) for db in self.dbs}
        s3.create_bucket(BUCKET)
        _, self.kms_arn = s3.create_kms_key(alias="alias/bench")
        secrets = work / "secrets"
        secrets.mkdir()
        self.backup_cfg, self.restore_cfg = runner_configs(
            pg, s3, bao, self.keys, self.kms_arn, self.dbs, secrets
        )
        self.env = {**os.environ, **pg.env(), **s3.env(), "GNUPGHOME": str(self.keys.keygen_home)}
        self.stamp = datetime.now(UTC).strftime("%Y%m%d_%H%M%S")
        self.plain_dir = work / "plain"

    def same_data(self) -> bool:
        """Every table's content checksum equals the original's."""
        return all(datagen.table_checksums(self.pg, db) == self.before[db] for db in self.dbs)

    def make_sets(self, runbook: bool) -> None:
        """The runner's set, the runbook's objects, and plain dump files (not measured)."""
        print("making the sets (runner, runbook) and local plain dumps ...", flush=True)
        run_cli(self.backup_cfg, self.work, "backup")
        if runbook:
            script = runbook_script(
                self.pg,
                self.dbs,
                self.keys.encryption_fingerprint,
                self.s3.endpoint,
                self.kms_arn,
                self.work / "runbook-backup",
            )
            script = script.replace("TIMESTAMP=$(date +%Y%m%d_%H%M%S)", f"TIMESTAMP={self.stamp}")
            subprocess.run(["bash", "-c", script], env=self.env, check=True, capture_output=True)
        self.plain_dir.mkdir()
        for db in self.dbs:
            with (self.plain_dir / f"{db}.dump").open("wb") as out:
                argv = [self.pg.tool("pg_dump"), "-Fc", "-Z0", "-d", db]
                subprocess.run(argv, env=self.env, stdout=out, check=True)

    def limit(self, jobs: int) -> None:
        """pg_restore from local plain files into new databases."""
        settle(self.pg)
        loop = " && ".join(
            f'psql -X -q -d postgres -c "CREATE DATABASE bl_{db};" && '
            f"{self.pg.tool('pg_restore')} -j {jobs} -d bl_{db} {self.plain_dir / f'{db}.dump'}"
            for db in self.dbs
        )
        name = f"limit: pg_restore -j{jobs} from a local file"
        m = measure(name, ["bash", "-o", "pipefail", "-c", loop], env=self.env)
        m.object_mib = dir_size(self.plain_dir) / MIB
        self.rows.append(m)
        for db in self.dbs:
            self.pg.drop_database(f"bl_{db}")

    def runbook(self) -> None:
        """The runbook's restore, as written."""
        settle(self.pg)
        runbook_dir = self.work / "runbook-restore"
        script = runbook_restore_script(
            self.pg, self.dbs, self.s3.endpoint, runbook_dir, self.stamp
        )
        with TempWatcher(runbook_dir) as watcher:
            m = measure(
                "runbook as written (s3 cp, gpg, sha256sum, drop, create, pg_restore)",
                ["bash", "-c", script],
                env=self.env,
            )
        m.temp_peak_mib = watcher.peak / MIB
        self.rows.append(m)
        if m.ok:
            self.notes.append(f"runbook: restored data equals the original: {self.same_data()}")

    def runner(self, i: int, name: str, extra: dict[str, Any]) -> None:
        """The runner, in place: streamed, verified, swapped; then finalized (not measured)."""
        settle(self.pg)
        config = {**self.restore_cfg, **extra, "restore": f"bench-{i}", "swapSuffix": f"b{i}"}
        term = self.work / f"term-{i}.json"
        env = {
            **os.environ,
            "LAMASSU_RESTORE_CONFIG": json.dumps(config),
            "LAMASSU_TERMINATION_LOG": str(term),
        }
        m = measure(name, [sys.executable, "-m", "lamassu_backup", "runner", "restore"], env=env)
        if term.exists() and term.read_text():
            result = json.loads(term.read_text())
            m.extra = {"timings": json.dumps(result.get("evidence", {}).get("timings", {}))}
            if not result.get("ok"):
                m.ok = False
                m.note = str(result.get("error"))[:300]
        self.rows.append(m)
        if m.ok:
            self.notes.append(
                f"{name}: restored data equals the original: {self.same_data()}; "
                f"phases {m.extra.get('timings')}"
            )
            run_cli({**config, "step": "finalize"}, self.work, "restore")


VARIANTS = [
    ("runner (streamed, one database at a time)", {"postgresJobs": 1, "postgresParallel": 1}),
    ("runner (streamed, two databases at a time)", {"postgresJobs": 1, "postgresParallel": 2}),
    ("runner (spooled, pg_restore -j2)", {"postgresJobs": 2, "postgresParallel": 1}),
]


def medians(rows: list[Measurement]) -> list[Measurement]:
    """One row per approach: the median run by wall time (runs interleave, so load drifts
    affect every approach alike), failed if any run failed."""
    by_name: dict[str, list[Measurement]] = {}
    for row in rows:
        by_name.setdefault(row.name, []).append(row)
    out = []
    for runs in by_name.values():
        ordered = sorted(runs, key=lambda r: r.wall)
        median = ordered[len(ordered) // 2]
        failed = next((r for r in runs if not r.ok), None)
        if failed is not None:
            median.ok, median.note = False, failed.note
        if len(runs) > 1:
            median.name = f"{median.name} [{len(runs)} runs]"
            median.extra["walls"] = " ".join(f"{r.wall:.2f}" for r in runs)
        out.append(median)
    return out


def report(rows: list[Measurement], notes: list[str], size_mib: int) -> None:
    """The table, and each runner variant against the targets."""
    rows = medians(rows)
    print()
    print(
        f"Restore of {size_mib} MiB of Lamassu data (the real v3.8.0 schema, six databases), "
        "S3 on this machine"
    )
    print(table(rows, rows[0].name))
    for note in notes:
        print(note)
    for r in rows:
        if "walls" in r.extra:
            print(f"{r.name}: wall times {r.extra['walls']} s")
    limit = rows[0]
    runbook = next((r for r in rows if r.name.startswith("runbook") and r.ok), None)
    for r in rows:
        if not r.name.startswith("runner") or not r.ok:
            continue
        vs = (
            f"{runbook.wall / r.wall:.1f}x faster than the runbook (target >= 2), "
            if runbook
            else ""
        )
        print(
            f"{r.name}: {vs}{r.wall / limit.wall:.2f}x pg_restore -j1 from a file (target <= 1.25), "
            f"peak RSS {r.peak_rss_mib:.0f} MiB, local disk written {r.disk_written_mib:.1f} MiB"
        )


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument(
        "--size-mib", type=int, default=int(os.environ.get("BENCH_SIZE_MIB", "1024"))
    )
    parser.add_argument("--seed", type=int, default=1)
    parser.add_argument("--skip-runbook", action="store_true", help="leave the runbook out")
    parser.add_argument(
        "--repeat", type=int, default=1, help="rounds of every approach (the median is shown)"
    )
    args = parser.parse_args()
    runbook = not args.skip_runbook and shutil.which("aws") is not None
    if not runbook and not args.skip_runbook:
        print("the runbook uses the aws CLI; install awscli to include it", file=sys.stderr)
    work = Path(tempfile.mkdtemp(prefix="bench-restore-"))
    try:
        with (
            PostgresServer(work / "pg") as pg,
            S3Server(work / "s3") as s3,
            OpenBao(work / "bao", kv_mount=KV_MOUNT) as bao,
        ):
            bench = Bench(work, pg, s3, bao, args.size_mib, args.seed)
            bench.make_sets(runbook)
            for round_ in range(args.repeat):
                bench.limit(1)
                bench.limit(2)
                if runbook:
                    bench.runbook()
                for i, (name, extra) in enumerate(VARIANTS):
                    bench.runner(round_ * len(VARIANTS) + i, name, extra)
    finally:
        shutil.rmtree(work, ignore_errors=True)
    report(bench.rows, bench.notes, args.size_mib)
    return 0 if all(r.ok for r in bench.rows) else 1


if __name__ == "__main__":
    raise SystemExit(main())
