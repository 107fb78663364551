"""Operator benchmark: how fast a policy becomes a Job, and what 1,000 policies cost.

On the real local platform, with the operator running as a process under the chart's RBAC:

- latency: a new policy carrying the run-now annotation -> its first runner Job observed
  (watch), over N policies (p50, p90, max); the same for a LamassuBackup created directly;
- scale: RSS and CPU of the operator with 0 and then 1,000 policies, and the time until every
  policy has been evaluated once (status.observedGeneration set), then the idle CPU over one
  policy period, with the operator's shipped settings (not the tests' shortened ones).

Run: ``make bench-operator`` (BENCH_POLICIES=1000, BENCH_RUNS=20).
"""

from __future__ import annotations

import argparse
import os
import statistics
import tempfile
import threading
import time
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

from kubernetes import client, watch

from lamassu_platform.operator_proc import Operator
from lamassu_platform.stack import NAMESPACE, Platform

GROUP, VERSION = "backup.lamassu.io", "v1alpha1"
IDLE_WINDOW_SECONDS = 310


class JobWatcher:
    """Records when each Job is first seen (client clock)."""

    def __init__(self, api: client.ApiClient, namespace: str) -> None:
        self.seen: dict[str, float] = {}
        self._stop = False
        self._batch = client.BatchV1Api(api)
        self._namespace = namespace
        self._thread = threading.Thread(target=self._run, daemon=True)
        self._thread.start()

    def _run(self) -> None:
        w = watch.Watch()
        while not self._stop:
            try:
                for event in w.stream(
                    self._batch.list_namespaced_job, self._namespace, timeout_seconds=5
                ):
                    labels = event["object"].metadata.labels or {}
                    backup = labels.get(f"{GROUP}/backup")
                    if backup and backup not in self.seen:
                        self.seen[backup] = time.monotonic()
            except Exception:  # noqa: BLE001 - the apiserver going away at the end is expected
                time.sleep(0.5)

    def stop(self) -> None:
        """Ends the watch before the platform goes down (no traceback at teardown)."""
        self._stop = True
        self._thread.join(timeout=10)

    def wait_for(self, backup_prefix: str, timeout: float = 60) -> float:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            for name, when in list(self.seen.items()):
                if name.startswith(backup_prefix):
                    return when
            time.sleep(0.005)
        raise TimeoutError(backup_prefix)


def percentile(values: list[float], q: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, round(q * (len(ordered) - 1)))]


def policy_body(
    platform: Platform, name: str, annotations: dict[str, str] | None = None
) -> dict[str, Any]:
    body = platform.sample_policy(name)
    body["spec"]["components"] = {"config": body["spec"]["components"]["config"]}
    # Daily, twelve hours from now: no scheduled run of the 1,000 lands inside the measurement.
    due = datetime.now(UTC) + timedelta(hours=12)
    body["spec"]["schedule"] = f"{due.minute} {due.hour} * * *"
    body["spec"]["timeZone"] = "UTC"
    if annotations:
        body["metadata"]["annotations"] = annotations
    return body


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument(
        "--policies", type=int, default=int(os.environ.get("BENCH_POLICIES", "1000"))
    )
    parser.add_argument("--runs", type=int, default=int(os.environ.get("BENCH_RUNS", "20")))
    args = parser.parse_args()
    work = Path(tempfile.mkdtemp(prefix="bench-operator-"))
    with Platform(work / "platform", data_mib=2) as platform:
        api = platform.api()
        custom = client.CustomObjectsApi(api)
        operator = Operator(platform, work / "operator.log", fast=False, pod=False)
        operator.start()
        try:
            time.sleep(3)
            base_rss, base_cpu = operator.rss_mib(), operator.cpu_seconds()
            watcher = JobWatcher(api, NAMESPACE)
            policy_latency = []
            for i in range(args.runs):
                name = f"lat-{i}"
                body = policy_body(platform, name, {"backup.lamassu.io/run-now": "1"})
                started = time.monotonic()
                custom.create_namespaced_custom_object(
                    GROUP, VERSION, NAMESPACE, "lamassubackuppolicies", body
                )
                policy_latency.append(watcher.wait_for(f"{name}-") - started)
            backup_latency = []
            for i in range(args.runs):
                name = f"direct-{i}"
                started = time.monotonic()
                custom.create_namespaced_custom_object(
                    GROUP,
                    VERSION,
                    NAMESPACE,
                    "lamassubackups",
                    {
                        "apiVersion": f"{GROUP}/{VERSION}",
                        "kind": "LamassuBackup",
                        "metadata": {"name": name},
                        "spec": {"policyRef": {"name": "lat-0"}},
                    },
                )
                backup_latency.append(watcher.wait_for(name) - started)
            # Let the runs finish before the scale part.
            time.sleep(20)
            before_rss, before_cpu = operator.rss_mib(), operator.cpu_seconds()
            created = time.monotonic()
            for i in range(args.policies):
                custom.create_namespaced_custom_object(
                    GROUP,
                    VERSION,
                    NAMESPACE,
                    "lamassubackuppolicies",
                    policy_body(platform, f"scale-{i:04d}"),
                )
            create_seconds = time.monotonic() - created
            deadline = time.monotonic() + 900
            evaluated = 0
            while time.monotonic() < deadline:
                items = custom.list_namespaced_custom_object(
                    GROUP, VERSION, NAMESPACE, "lamassubackuppolicies"
                )["items"]
                evaluated = sum(
                    1
                    for p in items
                    if p["metadata"]["name"].startswith("scale-")
                    and (p.get("status") or {}).get("observedGeneration")
                )
                if evaluated >= args.policies:
                    break
                time.sleep(2)
            all_seen = time.monotonic() - created
            # Idle cost over one whole policy period (LAMASSU_POLICY_MAX_SLEEP_SECONDS, 300 s by
            # default): every policy re-evaluated and its Secret references re-checked once.
            settle_cpu = operator.cpu_seconds()
            time.sleep(IDLE_WINDOW_SECONDS)
            idle_cpu = operator.cpu_seconds() - settle_cpu
            rss = operator.rss_mib()
            watcher.stop()
        finally:
            operator.stop()
    print()
    print(f"Operator on the local platform (2 cores), {args.runs} runs each")
    print(f"{'measure':<58} {'p50 s':>7} {'p90 s':>7} {'max s':>7}")
    for label, values in (
        ("policy created (with run-now) -> first Job", policy_latency),
        ("LamassuBackup created -> first Job", backup_latency),
    ):
        print(
            f"{label:<58} {statistics.median(values):>7.2f} {percentile(values, 0.9):>7.2f} {max(values):>7.2f}"
        )
    print()
    print(f"operator RSS at start: {base_rss:.0f} MiB (CPU {base_cpu:.1f} s)")
    print(f"operator RSS before the scale test: {before_rss:.0f} MiB (CPU {before_cpu:.1f} s)")
    print(
        f"{args.policies} policies created in {create_seconds:.1f} s; all {evaluated} evaluated after {all_seen:.1f} s"
    )
    print(f"operator RSS with {args.policies + 2 * args.runs} policies: {rss:.0f} MiB")
    print(
        f"idle CPU over the next {IDLE_WINDOW_SECONDS} s (every policy re-evaluated once): "
        f"{idle_cpu:.1f} s ({idle_cpu / IDLE_WINDOW_SECONDS * 100:.1f}% of one core)"
    )
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
