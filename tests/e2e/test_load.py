"""Load, the long mode of issue 16 (``make load``; not in the default run): many policies with
one-minute schedules for a long while on the real platform, and the figures at the end.

``LOAD_POLICIES`` (50) policies, ``* * * * *``, for ``LOAD_MINUTES`` (30), each backing up the
config component (a Job and the commit Job per run: the operator's work is the same for every
component, the runners' is not what this measures) and keeping ``LOAD_KEEP`` (5) records, so
retention deletes runs all along and the objects the operator watches level off after a few
minutes (what a user's cluster looks like; memory that still grew then would be a leak). The
operator runs as the chart's Pod with the shipped periods (not the tests' shortened ones), so
the API rate is what a user would see.

Reported (and asserted): every tick accounted for (a run, or a Skipped or Missed record in the
policy's recentRuns, as the policy loop records them), no tick run twice, no orphaned Job; and,
as figures: runs completed/failed, the operator's RSS at the start, after a minute, over the
second half and at the end, with the record count every five minutes (read from /proc through
the pod runner, which started the container), and the operator's API requests per minute and
per run, by resource and verb (``apiserver_flowcontrol_dispatched_requests_total`` of one
FlowSchema per resource and verb matching only the operator's ServiceAccount: the apiserver's
request counters carry no user label).
"""

from __future__ import annotations

import contextlib
import os
import re
import time
from collections import Counter
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest
from kubernetes.client.exceptions import ApiException

from integration.faults import descendants
from lamassu_platform.operator_proc import OPERATOR_ACCOUNT, OPERATOR_NAMESPACE, Operator
from lamassu_platform.stack import Platform

from .conftest import GROUP, VERSION, Cluster

POLICIES = int(os.environ.get("LOAD_POLICIES", "50"))
MINUTES = float(os.environ.get("LOAD_MINUTES", "30"))
# Records each policy keeps (keepLast): retention deletes the older ones all along, so the number
# of objects the operator watches levels off within minutes and its memory should too.
KEEP = int(os.environ.get("LOAD_KEEP", "5"))

pytestmark = [
    pytest.mark.timeout(int(MINUTES * 60) + 1200),  # the run, then the last runs and the setup
    pytest.mark.platform,
    pytest.mark.e2e,
    pytest.mark.skipif(
        "LOAD_MINUTES" not in os.environ and "LOAD_POLICIES" not in os.environ,
        reason="the long mode: make load (LOAD_POLICIES, LOAD_MINUTES)",
    ),
]

FLOW_SCHEMA = "lamassu-load-operator"
FLOWCONTROL = ("flowcontrol.apiserver.k8s.io", "v1", "flowschemas")
# The requests the operator makes, one FlowSchema each (resource, verb), so the figures say where
# a run's requests go; anything else lands in the catch-all FLOW_SCHEMA.
RESOURCES = (
    "lamassubackups",
    "lamassubackups/status",
    "lamassubackuppolicies",
    "lamassubackuppolicies/status",
    "lamassurestores",
    "jobs",
    "pods",
    "events",
    "secrets",
    "configmaps",
    "serviceaccounts",
    "roles",
    "rolebindings",
    "deployments",
    "persistentvolumeclaims",
)
VERBS = ("get", "list", "watch", "create", "update", "patch", "delete")


def _schema_name(resource: str, verb: str) -> str:
    return f"{FLOW_SCHEMA}-{resource.replace('/', '-')}-{verb}"


def _schema(
    name: str, precedence: int, resource_rule: dict[str, Any], non_resource: bool
) -> dict[str, Any]:
    rule: dict[str, Any] = {
        "subjects": [
            {
                "kind": "ServiceAccount",
                "serviceAccount": {"name": OPERATOR_ACCOUNT, "namespace": OPERATOR_NAMESPACE},
            }
        ],
        "resourceRules": [resource_rule],
    }
    if non_resource:
        rule["nonResourceRules"] = [{"verbs": ["*"], "nonResourceURLs": ["*"]}]
    return {
        "apiVersion": "/".join(FLOWCONTROL[:2]),
        "kind": "FlowSchema",
        "metadata": {"name": name, "labels": {"app.kubernetes.io/part-of": FLOW_SCHEMA}},
        "spec": {
            "matchingPrecedence": precedence,
            "priorityLevelConfiguration": {"name": "workload-high"},
            "distinguisherMethod": {"type": "ByUser"},
            "rules": [rule],
        },
    }


def _flow_schemas() -> list[dict[str, Any]]:
    """One FlowSchema per (resource, verb) for the operator's ServiceAccount alone (precedence
    above the built-in ``service-accounts``), and a catch-all for the rest."""
    everywhere = {"clusterScope": True, "namespaces": ["*"], "apiGroups": ["*"]}
    out = [
        _schema(
            _schema_name(resource, verb),
            400 + i,
            {**everywhere, "verbs": [verb], "resources": [resource]},
            non_resource=False,
        )
        for i, (resource, verb) in enumerate((r, v) for r in RESOURCES for v in VERBS)
    ]
    out.append(_schema(FLOW_SCHEMA, 599, {**everywhere, "verbs": ["*"], "resources": ["*"]}, True))
    return out


def _delete_flow_schemas(cluster: Cluster) -> None:
    group, version, plural = FLOWCONTROL
    for item in cluster.custom.list_cluster_custom_object(
        group, version, plural, label_selector=f"app.kubernetes.io/part-of={FLOW_SCHEMA}"
    )["items"]:
        with contextlib.suppress(ApiException):
            cluster.custom.delete_cluster_custom_object(
                group, version, plural, item["metadata"]["name"]
            )


@contextlib.contextmanager
def operator_flow_schemas(cluster: Cluster) -> Iterator[None]:
    """The FlowSchemas that count the operator's requests, for the duration of the block."""
    group, version, plural = FLOWCONTROL
    _delete_flow_schemas(cluster)
    for body in _flow_schemas():
        cluster.custom.create_cluster_custom_object(group, version, plural, body)
    try:
        yield
    finally:
        _delete_flow_schemas(cluster)


def operator_requests(cluster: Cluster) -> Counter[str]:
    """Requests the apiserver dispatched for the operator so far, by "resource verb" (its
    FlowSchemas' counters; "other" for the catch-all)."""
    names = {_schema_name(r, v): f"{r} {v}" for r in RESOURCES for v in VERBS}
    names[FLOW_SCHEMA] = "other"
    host = cluster.api.configuration.host
    text = cluster.api.rest_client.request("GET", host + "/metrics").data.decode()
    out: Counter[str] = Counter()
    for line in text.splitlines():
        if not line.startswith("apiserver_flowcontrol_dispatched_requests_total{"):
            continue
        schema = re.search(r'flow_schema="([^"]+)"', line)
        if schema and schema.group(1) in names:
            out[names[schema.group(1)]] += int(float(line.rsplit(" ", 1)[1]))
    return out


@pytest.fixture(scope="module")
def operator(platform: Platform, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Operator]:
    """The chart's operator with the shipped periods (this module runs alone: ``make load``)."""
    op = Operator(platform, tmp_path_factory.mktemp("load-operator") / "operator.log", fast=False)
    op.start()
    yield op
    op.stop()


# ----------------------------------------------------------------------------------- figures
def operator_rss_mib(platform: Platform, operator: Operator) -> float:
    """The resident memory of the operator container's processes, from /proc: the pod runner
    started the container (``runc run``), its processes are that process's descendants."""
    runner = platform.pod_runner
    assert runner is not None
    key = f"{OPERATOR_NAMESPACE}/{operator.pod_name}"
    worker = next(w for w in list(runner._workers.values()) if w.key == key)
    total_kib = 0
    for c in worker.containers:
        assert c.proc is not None, f"{key}: container {c.name} not started"
        for pid in [c.proc.pid, *descendants(c.proc.pid)]:
            with contextlib.suppress(OSError):
                status = Path(f"/proc/{pid}/status").read_text()
                name = re.search(r"^Name:\s+(\S+)", status, re.M)
                if name and name.group(1).startswith("runc"):
                    continue  # runc's own process, not the container's
                rss = re.search(r"^VmRSS:\s+(\d+)", status, re.M)
                total_kib += int(rss.group(1)) if rss else 0
    return total_kib / 1024


# ---------------------------------------------------------------------------------- ticking
def minute_ticks(after: datetime, until: datetime) -> list[str]:
    """The ``* * * * *`` ticks in (after, until], as the API writes them."""
    tick = after.replace(second=0, microsecond=0) + timedelta(minutes=1)
    out = []
    while tick <= until:
        out.append(tick.strftime("%Y-%m-%dT%H:%M:%SZ"))
        tick += timedelta(minutes=1)
    return out


class Tally:
    """What each tick became, merged from every look (a record may leave recentRuns or be
    deleted by retention later; what was seen once stays counted)."""

    def __init__(self, cluster: Cluster, ns: str) -> None:
        self.cluster = cluster
        self.ns = ns
        self.runs: dict[str, dict[str, Any]] = {}  # run name -> its last seen body
        self.records: dict[tuple[str, str], str] = {}  # (policy, tick) -> Skipped / Missed

    def look(self) -> None:
        for run in self.cluster.backups(self.ns):
            if run["spec"].get("trigger") == "Scheduled":
                self.runs[run["metadata"]["name"]] = run
        for policy in self.cluster.custom.list_namespaced_custom_object(
            GROUP, VERSION, self.ns, "lamassubackuppolicies"
        )["items"]:
            for record in (policy.get("status") or {}).get("recentRuns") or []:
                if record.get("phase") in ("Skipped", "Missed") and record.get("scheduledTime"):
                    key = (policy["metadata"]["name"], record["scheduledTime"])
                    self.records[key] = record["phase"]

    def of_tick(self) -> dict[tuple[str, str], list[str]]:
        """(policy, tick) -> what it became (more than one entry: a tick run twice)."""
        out: dict[tuple[str, str], list[str]] = {}
        for run in self.runs.values():
            key = (run["spec"]["policyRef"]["name"], run["spec"].get("scheduledTime") or "")
            out.setdefault(key, []).append("run")
        for key, phase in self.records.items():
            out.setdefault(key, []).append(phase)
        return out

    def in_progress(self) -> list[str]:
        ended = ("Completed", "Failed", "PartiallyFailed", "Lost")
        return [
            n for n, r in self.runs.items() if (r.get("status") or {}).get("phase") not in ended
        ]


def orphaned_jobs(cluster: Cluster, ns: str) -> list[str]:
    """Jobs whose run is gone, or still active once every run has ended."""
    names = {b["metadata"]["name"] for b in cluster.backups(ns)}
    orphans = []
    for job in cluster.batch.list_namespaced_job(ns).items:
        run = (job.metadata.labels or {}).get(f"{GROUP}/backup")
        if (run and run not in names) or (job.status.active or 0) > 0:
            orphans.append(job.metadata.name)
    return orphans


def test_many_policies_every_minute(
    cluster: Cluster, operator: Operator, platform: Platform
) -> None:
    ns = cluster.namespace()
    spec = platform.sample_policy()["spec"]
    keep = dict.fromkeys(("keepDaily", "keepWeekly", "keepMonthly", "keepVerified"), 0)
    with operator_flow_schemas(cluster):
        time.sleep(2)
        requests_start, rss_start = operator_requests(cluster), operator_rss_mib(platform, operator)
        began = time.monotonic()
        created: dict[str, datetime] = {}
        for i in range(POLICIES):
            name = f"load-{i:02d}"
            body = cluster.policy(
                ns,
                name,
                schedule="* * * * *",
                components={"config": spec["components"]["config"]},
                retention={**keep, "keepLast": KEEP},
                recentRunsLimit=50,
            )
            created[name] = datetime.fromisoformat(body["metadata"]["creationTimestamp"])
        tally = Tally(cluster, ns)
        # Stop half way through a minute: the last tick was 30 s before, none is on the edge.
        end = datetime.now(UTC) + timedelta(minutes=MINUTES)
        end = end.replace(second=30, microsecond=0)
        rss_peak, rss_warm = rss_start, 0.0  # warm: after the first minute of runs
        samples: list[tuple[float, float, int]] = []  # (minute, RSS MiB, records)
        while datetime.now(UTC) < end:
            tally.look()
            rss = operator_rss_mib(platform, operator)
            rss_peak = max(rss_peak, rss)
            samples.append(((time.monotonic() - began) / 60, rss, len(cluster.backups(ns))))
            if not rss_warm and time.monotonic() - began >= 60:
                rss_warm = rss
            time.sleep(min(15.0, max(0.0, (end - datetime.now(UTC)).total_seconds())))
        for name in created:
            cluster.custom.patch_namespaced_custom_object(
                GROUP, VERSION, ns, "lamassubackuppolicies", name, {"spec": {"suspend": True}}
            )
        suspended_at = datetime.now(UTC)
        minutes = (time.monotonic() - began) / 60
        requests_end = operator_requests(cluster)
        deadline = time.monotonic() + 300
        tally.look()
        while tally.in_progress() and time.monotonic() < deadline:
            time.sleep(5)
            tally.look()
        rss_end = operator_rss_mib(platform, operator)

    expected = {(p, t) for p, at in created.items() for t in minute_ticks(at, suspended_at)}
    seen = tally.of_tick()
    unaccounted = sorted(expected - set(seen))
    twice = sorted(k for k, v in seen.items() if len(v) > 1)
    outcomes = [v[0] for k, v in seen.items() if k in expected]
    phases = [(r.get("status") or {}).get("phase") for r in tally.runs.values()]
    # Retention deletes records all along; their Jobs go with them (the garbage collector,
    # in the background): a Job counts as orphaned once it has had a minute for that.
    deadline = time.monotonic() + 60
    while (orphans := orphaned_jobs(cluster, ns)) and time.monotonic() < deadline:
        time.sleep(5)
    requests = requests_end - requests_start
    total = sum(requests.values())
    per_run = max(1, len(phases))
    where = ", ".join(f"{k} {v / per_run:.1f}" for k, v in requests.most_common(12) if v)
    # RSS every five minutes, and over the second half (the records have levelled off by then).
    series = " ".join(
        f"{m:.0f}m:{r:.0f}MiB/{n}" for m, r, n in samples if m >= 1 and int(m) % 5 == 0
    )
    half = [r for m, r, _ in samples if m >= MINUTES / 2]
    figures = (
        f"load: {POLICIES} policies x {MINUTES:g} min (* * * * *, config, keepLast {KEEP}); "
        f"ticks expected {len(expected)}, accounted {len(expected) - len(unaccounted)} "
        f"(runs {outcomes.count('run')}, Skipped {outcomes.count('Skipped')}, "
        f"Missed {outcomes.count('Missed')}); run twice {len(twice)}; "
        f"runs completed {phases.count('Completed')}, failed "
        f"{sum(p in ('Failed', 'PartiallyFailed') for p in phases)}, "
        f"not ended {len(tally.in_progress())}; orphaned Jobs {len(orphans)}; "
        f"operator RSS before the policies {rss_start:.1f} MiB, after 1 min {rss_warm:.1f}, "
        f"peak {rss_peak:.1f}, end {rss_end:.1f}; second half {min(half, default=0):.1f}"
        f"-{max(half, default=0):.1f}; RSS/records every 5 min: {series}; API requests/min "
        f"{total / minutes:.1f} ({total:.0f} in {minutes:.1f} min, {total / per_run:.1f} per "
        f"run: {where})"
    )
    print("\n" + figures)
    if platform.root.exists():
        (platform.root.parent / "load.txt").write_text(figures + "\n")
    assert not unaccounted, f"ticks not accounted for: {unaccounted[:10]}"
    assert not twice, f"ticks run twice: {twice[:10]}"
    assert not orphans, orphans
    assert not tally.in_progress(), tally.in_progress()
