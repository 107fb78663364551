"""Prometheus metrics, named after Velero's and CloudNativePG's so existing alerts translate.

Exported directly by the operator (no Pushgateway): staleness is a gauge per component, so
``lamassu_backup_stale == 1`` or ``time() - lamassu_backup_last_success_timestamp_seconds > ...``
are alert rules on their own.
"""

from __future__ import annotations

import contextlib

from prometheus_client import CollectorRegistry, Counter, Gauge, start_http_server

REGISTRY = CollectorRegistry(auto_describe=True)
_LABELS = ("namespace", "policy")

LAST_SUCCESS = Gauge(
    "lamassu_backup_last_success_timestamp_seconds",
    "Unix time of the last successful backup of a component.",
    [*_LABELS, "component"],
    registry=REGISTRY,
)
LAST_FAILURE = Gauge(
    "lamassu_backup_last_failure_timestamp_seconds",
    "Unix time of the last failed or partially failed run.",
    _LABELS,
    registry=REGISTRY,
)
LAST_DURATION = Gauge(
    "lamassu_backup_last_run_duration_seconds",
    "Wall time of the last finished run.",
    _LABELS,
    registry=REGISTRY,
)
LAST_SIZE = Gauge(
    "lamassu_backup_last_run_size_bytes",
    "Stored bytes of a component in the last finished run.",
    [*_LABELS, "component"],
    registry=REGISTRY,
)
RUNS = Counter(
    "lamassu_backup_runs_total",
    "Runs by outcome: Completed, PartiallyFailed, Failed, Skipped, Missed.",
    [*_LABELS, "outcome"],
    registry=REGISTRY,
)
STALE = Gauge(
    "lamassu_backup_stale",
    "1 when a component's last success is older than its recovery-point objective.",
    [*_LABELS, "component"],
    registry=REGISTRY,
)
AGE = Gauge(
    "lamassu_backup_age_seconds",
    "Seconds since a component's last successful backup (when the policy was last evaluated).",
    [*_LABELS, "component"],
    registry=REGISTRY,
)
LAST_VERIFIED = Gauge(
    "lamassu_backup_last_verification_timestamp_seconds",
    "Unix time of the last successful test restore (verification) of a policy's sets.",
    _LABELS,
    registry=REGISTRY,
)
VERIFICATIONS = Counter(
    "lamassu_backup_verifications_total",
    "Test restores by outcome: Verified, Failed.",
    [*_LABELS, "outcome"],
    registry=REGISTRY,
)
RETENTION_DELETED = Counter(
    "lamassu_backup_retention_deleted_total",
    "Sets deleted by retention.",
    _LABELS,
    registry=REGISTRY,
)
RETENTION_ERRORS = Counter(
    "lamassu_backup_retention_errors_total",
    "Retention passes that failed to delete a set.",
    _LABELS,
    registry=REGISTRY,
)

WAL_RECOVERABLE_FROM = Gauge(
    "lamassu_backup_wal_recoverable_from_timestamp_seconds",
    "Unix time of the start of the point-in-time recovery window (oldest usable base backup).",
    _LABELS,
    registry=REGISTRY,
)
WAL_RECOVERABLE_UNTIL = Gauge(
    "lamassu_backup_wal_recoverable_until_timestamp_seconds",
    "Unix time of the last commit in the shipped WAL (end of the recovery window).",
    _LABELS,
    registry=REGISTRY,
)
WAL_LAST_SHIPPED = Gauge(
    "lamassu_backup_wal_last_shipped_timestamp_seconds",
    "Unix time of the newest WAL upload (segment or partial snapshot).",
    _LABELS,
    registry=REGISTRY,
)
WAL_LAG_BYTES = Gauge(
    "lamassu_backup_wal_lag_bytes",
    "WAL the server keeps for the shipper's slot that the bucket does not hold yet.",
    _LABELS,
    registry=REGISTRY,
)
WAL_BASE_BACKUPS = Gauge(
    "lamassu_backup_wal_base_backups",
    "Base backups a point-in-time restore can start from.",
    _LABELS,
    registry=REGISTRY,
)
WAL_SHIPPER_UP = Gauge(
    "lamassu_backup_wal_shipper_up",
    "1 when the WAL shipper Deployment has its replica available.",
    _LABELS,
    registry=REGISTRY,
)
WAL_GAUGES = (
    WAL_RECOVERABLE_FROM,
    WAL_RECOVERABLE_UNTIL,
    WAL_LAST_SHIPPED,
    WAL_LAG_BYTES,
    WAL_BASE_BACKUPS,
    WAL_SHIPPER_UP,
)


def forget_wal(namespace: str, policy: str) -> None:
    """Drop a policy's WAL series (archiving disabled, or the policy deleted)."""
    for metric in WAL_GAUGES:
        with contextlib.suppress(KeyError):
            metric.remove(namespace, policy)


_serving: set[int] = set()


def serve(port: int) -> None:
    """Expose /metrics on ``port`` (0 disables); once per port, so the command line can bind it
    before kopf starts (a taken port must end the process, not be retried by kopf forever)."""
    if port and port not in _serving:
        start_http_server(port, registry=REGISTRY)
        _serving.add(port)


def forget_policy(namespace: str, policy: str) -> None:
    """Drop a deleted policy's series so dashboards do not show ghosts."""
    for metric in (LAST_SUCCESS, LAST_SIZE, STALE, AGE):
        for labels in list(metric._metrics):
            if labels[:2] == (namespace, policy):
                metric.remove(*labels)
    for metric in (LAST_FAILURE, LAST_DURATION, LAST_VERIFIED):
        with contextlib.suppress(KeyError):
            metric.remove(namespace, policy)
    forget_wal(namespace, policy)
