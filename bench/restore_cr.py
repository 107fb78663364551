"""LamassuRestore benchmark: the runner's restore alone against the resource end to end.

On the real local platform (control plane, pod runner, PostgreSQL with synthetic Lamassu data of
the requested size, S3/KMS, OpenBao), with the operator running as a process under the chart's
RBAC and its shipped settings (``Operator(..., fast=False)``), in one run, from the same set (a
``LamassuBackup`` of postgres + vault taken by the operator):

- (a) the runner alone: ``lamassu-backup runner restore`` in place, as ``bench.restore`` runs it,
  with the settings the operator's restore Job uses (streamed, two databases at a time);
- (b) a ``LamassuRestore`` InPlace end to end (``backupRef``, pre-restore set, two Deployments
  matching ``workloads.selector`` scaled down and back), split into the phases the resource
  records in ``status.steps``, and the controller's own overhead: end to end minus the
  pre-restore backup step and minus the runner's restore (the restore Job's own ``seconds``, from
  its termination message);
- (c) disaster recovery: a ``LamassuRestore`` with ``source.s3`` and ``target`` servers in a
  namespace holding only the Secrets (no policy, no backup record), its wall time.

Before each restore, rows are deleted and a CA key is removed from the key store (as the e2e
tests do); each restore must bring the table checksums and the key back.

Targets: controller overhead <= 10 s; the DR restore of 1 GiB <= 5 min.
Run: ``make bench-restore-cr`` (``BENCH_SIZE_MIB=1024`` by default).
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import sys
import tempfile
import time
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

from kubernetes import client

from e2e.conftest import GROUP, VERSION, Cluster
from e2e.test_restore import PART_OF, DeploymentController, checksums, damage, deployment
from lamassu_platform.operator_proc import Operator
from lamassu_platform.stack import BUCKET, KV_MOUNT, NAMESPACE, Platform

from .common import MIB, Measurement, measure
from .restore import run_cli, runner_configs, settle

RESTORES = "lamassurestores"
KEY = {"name": "backup-gpg-private", "key": "private.asc"}
SIGNER = {"name": "backup-gpg-signing-public", "key": "signing-public.asc"}
PHASES = [
    "Planning",
    "PausingBackups",
    "PreRestoreBackup",
    "ScalingDown",
    "Restoring",
    "Validating",
    "ScalingUp",
]
OVERHEAD_TARGET_S = 10.0
DR_TARGET_S = 300.0


def parse(moment: str | None) -> datetime | None:
    return datetime.fromisoformat(moment.replace("Z", "+00:00")) if moment else None


def step_seconds(step: dict[str, Any]) -> float | None:
    started, completed = parse(step.get("startedAt")), parse(step.get("completedAt"))
    if started is None or completed is None:
        return None
    return (completed - started).total_seconds()


class Run:
    """The platform, the operator, the set, and what each approach measured."""

    def __init__(self, platform: Platform, size_mib: int, work: Path) -> None:
        self.platform = platform
        self.cluster = Cluster(platform)
        self.size_mib = size_mib
        self.work = work
        self.timeout = max(600.0, size_mib * 1.0)
        self.notes: list[str] = []
        self.runner_row: Measurement | None = None
        self.runner_seconds: float | None = None
        self.cr: dict[str, Any] = {}
        self.cr_wall = 0.0
        self.cr_runner: dict[str, float | None] = {}
        self.cr_pre_backup_wall: float | None = None
        self.dr: dict[str, Any] = {}
        self.dr_wall = 0.0
        self.dr_runner: dict[str, float | None] = {}
        assert platform.dataset is not None
        self.dbs = list(platform.dataset.databases)
        print(
            f"platform up: {platform.dataset.data_bytes / MIB:.0f} MiB in tables, "
            f"{platform.dataset.database_bytes / MIB:.0f} MiB in databases",
            flush=True,
        )
        self.before = checksums(platform)

    # -- the set ------------------------------------------------------------------------------

    def make_set(self) -> None:
        """A policy (postgres + vault, never due during the run) and one completed set."""
        spec = self.platform.sample_policy()["spec"]
        components = {
            "postgres": spec["components"]["postgres"],
            "vault": spec["components"]["vault"],
        }
        due = datetime.now(UTC) + timedelta(hours=12)
        self.cluster.policy(
            NAMESPACE,
            "lamassu",
            components=components,
            schedule=f"{due.minute} {due.hour} * * *",
            timeZone="UTC",
        )
        print("taking the set (LamassuBackup through the operator) ...", flush=True)
        started = time.monotonic()
        self.cluster.backup(NAMESPACE, "good", "lamassu")
        good = self.cluster.wait_phase(
            NAMESPACE, "good", ("Completed", "Failed", "PartiallyFailed"), timeout=self.timeout
        )
        if good["status"]["phase"] != "Completed":
            raise RuntimeError(f"the set failed: {good['status']}")
        self.location: str = good["status"]["location"]
        self.notes.append(
            f"the set: {self.location} ({time.monotonic() - started:.1f} s, "
            f"{sum(a.get('sizeBytes', 0) for a in good['status'].get('artifacts', [])) / MIB:.0f} MiB)"
        )

    def damaged(self) -> str:
        """Rows deleted and a CA key removed; the data settled for every approach alike."""
        doomed = damage(self.platform)
        assert self.platform.pg is not None
        settle(self.platform.pg)
        return doomed

    def back(self, doomed: str) -> str:
        assert self.platform.openbao is not None
        same = checksums(self.platform) == self.before
        key = doomed in self.platform.openbao.read_keys(KV_MOUNT)
        return f"table checksums equal the original: {same}; the removed key is back: {key}"

    # -- (a) the runner alone -----------------------------------------------------------------

    def runner_alone(self) -> None:
        p = self.platform
        assert p.pg is not None
        assert p.s3 is not None
        assert p.openbao is not None
        assert p.gpg is not None
        secrets = self.work / "secrets"
        secrets.mkdir(exist_ok=True)
        _, restore_cfg = runner_configs(
            p.pg, p.s3, p.openbao, p.gpg, p.kms_key_arn, self.dbs, secrets
        )
        prefix = self.location.split("/", 3)[3].rstrip("/") + "/"
        restore_cfg["source"]["bucket"] = BUCKET
        restore_cfg["source"].pop("sse", None)
        restore_cfg["source"].pop("kmsKeyId", None)
        # What the operator's restore Job runs: streamed, two databases at a time (the defaults).
        config = {
            **restore_cfg,
            "namespace": NAMESPACE,
            "restore": "bench-runner",
            "setPrefix": prefix,
            "postgresJobs": 1,
            "postgresParallel": 2,
            "swapSuffix": "benchrunner",
        }
        doomed = self.damaged()
        print("(a) the runner alone ...", flush=True)
        term = self.work / "term-runner.json"
        env = {
            **os.environ,
            "LAMASSU_RESTORE_CONFIG": json.dumps(config),
            "LAMASSU_TERMINATION_LOG": str(term),
        }
        m = measure(
            "(a) runner restore alone (in place)",
            [sys.executable, "-m", "lamassu_backup", "runner", "restore"],
            env=env,
        )
        if term.exists() and term.read_text():
            result = json.loads(term.read_text())
            self.runner_seconds = result.get("seconds")
            m.extra = {"timings": json.dumps(result.get("evidence", {}).get("timings", {}))}
            if not result.get("ok"):
                m.ok = False
                m.note = str(result.get("error"))[:300]
        self.runner_row = m
        if m.ok:
            self.notes.append(f"(a) {self.back(doomed)}; runner phases {m.extra.get('timings')}")
            run_cli({**config, "step": "finalize"}, self.work, "restore")
        else:
            self.notes.append(f"(a) FAILED: {m.note}")

    # -- (b) and (c) through the operator -------------------------------------------------------

    def create_restore(self, ns: str, name: str, **spec: Any) -> float:
        body = {
            "apiVersion": f"{GROUP}/{VERSION}",
            "kind": "LamassuRestore",
            "metadata": {"name": name, "namespace": ns},
            "spec": {"decryptionKeySecret": KEY, "signerKeySecret": SIGNER, **spec},
        }
        started = time.monotonic()
        self.cluster.custom.create_namespaced_custom_object(GROUP, VERSION, ns, RESTORES, body)
        return started

    def wait_done(self, ns: str, name: str, started: float) -> tuple[dict[str, Any], float]:
        """Poll (0.2 s) until a terminal phase; the client-clock wall time from the create."""
        deadline = started + self.timeout
        while time.monotonic() < deadline:
            obj = self.cluster.get(RESTORES, ns, name)
            phase = ((obj or {}).get("status") or {}).get("phase")
            if obj is not None and phase in ("Completed", "Failed", "RolledBack"):
                return obj, time.monotonic() - started
            time.sleep(0.2)
        raise TimeoutError(f"{ns}/{name} did not end within {self.timeout:.0f} s")

    def job_seconds(self, ns: str, job: str | None) -> float | None:
        """The runner's own measured time (``seconds`` of its termination message)."""
        if not job:
            return None
        core = client.CoreV1Api(self.cluster.api)
        for pod in core.list_namespaced_pod(ns, label_selector=f"job-name={job}").items:
            for cs in (pod.status.container_statuses or []) if pod.status else []:
                term = cs.state.terminated if cs.state else None
                if term is not None and term.message:
                    try:
                        seconds = json.loads(term.message).get("seconds")
                    except ValueError:
                        continue
                    return float(seconds) if seconds is not None else None
        return None

    def runner_times(self, ns: str, obj: dict[str, Any]) -> dict[str, float | None]:
        return {
            s["name"]: self.job_seconds(ns, s.get("job")) for s in obj["status"].get("steps", [])
        }

    def in_place(self) -> None:
        ns = NAMESPACE
        with DeploymentController(self.cluster, ns):
            deployment(self.cluster, ns, "ca", 2)
            deployment(self.cluster, ns, "kms", 1)
            time.sleep(1)  # their status reported before the restore looks
            doomed = self.damaged()
            print("(b) LamassuRestore InPlace end to end ...", flush=True)
            started = self.create_restore(
                ns,
                "bench-inplace",
                backupRef={"name": "good"},
                mode="InPlace",
                confirm="good",
                finalizeAfter="0s",
                workloads={"selector": {"matchLabels": PART_OF}},
            )
            self.cr, self.cr_wall = self.wait_done(ns, "bench-inplace", started)
        status = self.cr["status"]
        self.cr_runner = self.runner_times(ns, self.cr)
        pre = status.get("preRestoreBackup")
        if pre:
            body = self.cluster.get("lamassubackups", ns, pre) or {}
            s, c = (
                parse((body.get("status") or {}).get("startedAt")),
                parse((body.get("status") or {}).get("completedAt")),
            )
            if s and c:
                self.cr_pre_backup_wall = (c - s).total_seconds()
        if status["phase"] == "Completed":
            self.notes.append(f"(b) {self.back(doomed)}")
            self.cluster.wait(
                "finalize of (b)",
                lambda: (
                    (self.cluster.get(RESTORES, ns, "bench-inplace") or {})
                    .get("status", {})
                    .get("finalizedAt")
                ),
                timeout=self.timeout,
            )
        else:
            self.notes.append(f"(b) ended {status['phase']}: {status.get('message')}")

    def disaster_recovery(self) -> None:
        spec = self.platform.sample_policy()["spec"]
        pg, vault, s3 = (
            spec["components"]["postgres"],
            spec["components"]["vault"],
            spec["destination"]["s3"],
        )
        ns = self.cluster.namespace()  # fresh: the sample install's Secrets only
        assert self.cluster.backups(ns) == []
        folder = self.location.rstrip("/").rsplit("/", 1)[-1]
        doomed = self.damaged()
        print("(c) disaster recovery from source.s3 into an empty namespace ...", flush=True)
        started = self.create_restore(
            ns,
            "bench-dr",
            source={
                "s3": {
                    "bucket": BUCKET,
                    "path": self.location.split("/", 3)[3],
                    "endpoint": s3["endpoint"],
                    "forcePathStyle": True,
                    "credentialsSecret": {"name": "backup-s3"},
                }
            },
            target={
                "postgres": {
                    "host": pg["host"],
                    "port": pg["port"],
                    "sslMode": "disable",
                    "credentialsSecret": {"name": "lamassu-postgres"},
                },
                "vault": {
                    "address": vault["address"],
                    "caSecret": vault["caSecret"],
                    "auth": vault["auth"],
                },
            },
            components=["postgres", "vault"],
            mode="InPlace",
            confirm=folder,
            finalizeAfter="0s",
        )
        self.dr, self.dr_wall = self.wait_done(ns, "bench-dr", started)
        self.dr_ns = ns
        self.dr_runner = self.runner_times(ns, self.dr)
        status = self.dr["status"]
        if status["phase"] == "Completed":
            self.notes.append(f"(c) {self.back(doomed)}")
        else:
            self.notes.append(f"(c) ended {status['phase']}: {status.get('message')}")

    # -- the report -----------------------------------------------------------------------------

    def report(self) -> bool:
        print()
        print(
            f"Restore of {self.size_mib} MiB of synthetic Lamassu data (six databases, postgres + "
            "vault), the operator with its shipped settings, S3 on this machine"
        )
        head = f"{'approach / step':<58} {'wall s':>8} {'runner s':>9}  note"
        print(head)
        print("-" * (len(head) + 30))

        def fmt(v: float | None) -> str:
            return "-" if v is None else f"{v:.2f}"

        ok = True
        a = self.runner_row
        if a is not None:
            ok &= a.ok
            print(
                f"{a.name:<58} {a.wall:>8.2f} {fmt(self.runner_seconds):>9}  "
                f"CPU {a.cpu:.1f} s, peak RSS {a.peak_rss_mib:.0f} MiB"
                + ("" if a.ok else f"  FAILED {a.note}")
            )
        status = self.cr.get("status") or {}
        ok &= status.get("phase") == "Completed"
        print(
            f"{'(b) LamassuRestore InPlace, end to end (client clock)':<58} {self.cr_wall:>8.2f} "
            f"{'':>9}  {status.get('phase')}, recoveryTimeSeconds {status.get('recoveryTimeSeconds')}"
        )
        steps = {s["name"]: s for s in status.get("steps", [])}
        for name in PHASES:
            step = steps.get(name)
            if step is None:
                print(f"    {name:<54} {'-':>8} {'-':>9}  not recorded")
                continue
            note = step.get("phase", "")
            if name == "PreRestoreBackup" and self.cr_pre_backup_wall is not None:
                note += f" (its LamassuBackup ran {self.cr_pre_backup_wall:.0f} s, API seconds)"
            print(
                f"    {name:<54} {fmt(step_seconds(step)):>8} {fmt(self.cr_runner.get(name)):>9}  "
                f"{note}"
            )
        recorded = sum(v for s in steps.values() if (v := step_seconds(s)) is not None)
        listed: list[dict[str, Any]] = status.get("steps") or []
        first = parse(listed[0].get("startedAt")) if listed else None
        created = parse((self.cr.get("metadata") or {}).get("creationTimestamp"))
        if first is not None and created is not None:
            print(
                f"    {'(create -> Planning, API clock, seconds precision)':<54} "
                f"{(first - created).total_seconds():>8.2f}"
            )
        print(f"    {'(sum of the steps)':<54} {recorded:>8.2f}")
        pre = step_seconds(steps["PreRestoreBackup"]) if "PreRestoreBackup" in steps else None
        restore_runner = self.cr_runner.get("Restoring")
        plan_runner = self.cr_runner.get("Planning")
        dr_status = self.dr.get("status") or {}
        ok &= dr_status.get("phase") == "Completed"
        dr_steps = {s["name"]: s for s in dr_status.get("steps", [])}
        print(
            f"{'(c) DR from source.s3 into an empty namespace (client clock)':<58} "
            f"{self.dr_wall:>8.2f} {'':>9}  {dr_status.get('phase')}, recoveryTimeSeconds "
            f"{dr_status.get('recoveryTimeSeconds')}"
        )
        for name, step in dr_steps.items():
            print(
                f"    {name:<54} {fmt(step_seconds(step)):>8} "
                f"{fmt(self.dr_runner.get(name)):>9}  {step.get('phase')}"
            )
        print()
        for note in self.notes:
            print(note)
        print()
        self.verdicts(pre, restore_runner, plan_runner)
        return bool(ok)

    def breakdown(self, overhead: float) -> None:
        """Where the overhead goes: each step's wall time, minus its runner's own time for the
        steps that run a Job (what is left there is Pod start, the interpreter, and the Job's
        end reaching the controller); the rest is between steps (create -> Planning, events)."""
        steps = {s["name"]: s for s in (self.cr.get("status") or {}).get("steps", [])}
        parts: list[str] = []
        accounted = 0.0
        for name in PHASES:
            step = steps.get(name)
            wall = step_seconds(step) if step else None
            if wall is None or name == "PreRestoreBackup":
                continue
            runner = self.cr_runner.get(name)
            if name == "Restoring" and runner is not None:
                parts.append(f"{name} Job around the runner {wall - runner:.2f}")
                accounted += wall - runner
            elif runner is not None:
                parts.append(f"{name} {wall:.2f} (runner {runner:.2f})")
                accounted += wall
            elif wall >= 0.05:
                parts.append(f"{name} {wall:.2f}")
                accounted += wall
        parts.append(f"outside the steps {overhead - accounted:.2f}")
        print("  the overhead by step: " + "; ".join(parts))

    def verdicts(
        self, pre: float | None, restore_runner: float | None, plan_runner: float | None
    ) -> None:
        """The controller's overhead and the DR time, against their targets."""
        if pre is not None and restore_runner is not None:
            overhead = self.cr_wall - pre - restore_runner
            print(
                f"controller overhead = end to end {self.cr_wall:.2f} - pre-restore backup step "
                f"{pre:.2f} - runner restore {restore_runner:.2f} = {overhead:.2f} s "
                f"(target <= {OVERHEAD_TARGET_S:.0f} s: {'met' if overhead <= OVERHEAD_TARGET_S else 'NOT met'})"
            )
            if plan_runner is not None:
                print(
                    f"  of which the runner's plan step (the whole set verified before anything "
                    f"live is touched): {plan_runner:.2f} s; without it {overhead - plan_runner:.2f} s"
                )
            self.breakdown(overhead)
            if self.runner_row is not None and self.runner_row.ok:
                print(
                    f"  the restore Job's runner took {restore_runner:.2f} s vs {self.runner_seconds} s "
                    f"alone ((a), {self.runner_row.wall:.2f} s wall with interpreter start)"
                )
        else:
            print("controller overhead: not computable (a step or the runner's seconds missing)")
        if self.size_mib >= 1024:
            verdict = "met" if self.dr_wall <= DR_TARGET_S else "NOT met"
        else:
            verdict = "the target is for 1024 MiB: run with BENCH_SIZE_MIB=1024 to judge it"
        print(
            f"DR restore: {self.dr_wall:.1f} s for {self.size_mib} MiB "
            f"(target <= {DR_TARGET_S:.0f} s for 1024 MiB: {verdict})"
        )


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument(
        "--size-mib", type=int, default=int(os.environ.get("BENCH_SIZE_MIB", "1024"))
    )
    parser.add_argument("--seed", type=int, default=1)
    parser.add_argument("--keep", action="store_true", help="keep the work directory (logs)")
    args = parser.parse_args()
    work = Path(tempfile.mkdtemp(prefix="bench-restore-cr-"))
    print(f"starting the platform with {args.size_mib} MiB of Lamassu data ...", flush=True)
    with Platform(work / "platform", data_mib=args.size_mib, seed=args.seed) as platform:
        run = Run(platform, args.size_mib, work)
        # The shipped settings (not the tests' shortened periods), as a host process.
        operator = Operator(platform, work / "operator.log", fast=False, pod=False)
        operator.start()
        try:
            run.make_set()
            run.runner_alone()
            run.in_place()
            run.disaster_recovery()
        finally:
            operator.stop()
    ok = run.report()
    if ok and not args.keep:
        shutil.rmtree(work, ignore_errors=True)
    else:
        print(f"work directory kept (operator log, pod logs): {work}")
    return 0 if ok else 1


if __name__ == "__main__":
    raise SystemExit(main())
