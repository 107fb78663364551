"""The LamassuRestore phase machine and its decisions, as pure functions.

The service reads the API and acts; everything it decides (which phase comes next, which set a
point in time means, which restore holds a namespace, in which order workloads stop and start,
whether the runner's evidence validates) is decided here, so it is unit-tested without a cluster
and an operator restarted at any point decides the same again from the same status.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

from ..models.restore import RestoreMode, RestorePhase, RestoreSpec
from . import layout

LABEL_RESTORE = "backup.lamassu.io/restore"
REPLICAS_ANNOTATION = "backup.lamassu.io/restore-replicas"
"""On a workload scaled down: its replicas before, so even a lost status can scale it back."""
SCALED_BY_ANNOTATION = "backup.lamassu.io/scaled-down-by"
"""On a workload scaled down: the LamassuRestore that did it."""

ACTIVE_PHASES = frozenset(
    {
        RestorePhase.PAUSING_BACKUPS,
        RestorePhase.PRE_RESTORE_BACKUP,
        RestorePhase.SCALING_DOWN,
        RestorePhase.RESTORING,
        RestorePhase.VALIDATING,
        RestorePhase.ROLLING_BACK,
        RestorePhase.SCALING_UP,
    }
)
"""Phases in which an in-place restore holds its namespace: backups paused, no other restore
runs. A drill in these phases holds nothing (see :func:`holds_namespace`)."""

DONE = frozenset(
    {RestorePhase.COMPLETED, RestorePhase.FAILED, RestorePhase.ROLLED_BACK, RestorePhase.PLANNED}
)

# Backup phases that count as a usable set.
USABLE_BACKUP_PHASES = ("Completed", "PartiallyFailed")

COMPONENT_ORDER = ("postgres", "vault", "config", "volumes", "awsKms")
"""Every component, in the order a restore takes them."""

BARE_SET_COMPONENTS = ("postgres", "vault", "config")
"""What a restore of a bare S3 set (no record in the cluster, so its contents are read only by the
plan) restores unless spec.components says otherwise: the databases and key stores the spec
has a target for, and the configuration; volumes need their claims to exist first."""


def holds_namespace(mode: str | None, phase: str | None) -> bool:
    """Whether a restore in ``phase`` holds its namespace (backups paused, restores wait).

    Only an in-place restore does: a drill writes scratch targets only, so it pauses no backup
    and never makes an in-place restore wait (a scheduled drill every few minutes would
    otherwise hold a real recovery back). No mode means the spec's default, Drill.
    """
    in_place = (mode or RestoreMode.DRILL.value) != RestoreMode.DRILL.value
    return in_place and phase in {p.value for p in ACTIVE_PHASES}


def steps(spec: RestoreSpec) -> list[RestorePhase]:
    """The working phases of a restore, in order (the terminal phase is not a step)."""
    has_workloads = spec.workloads is not None
    if spec.dry_run:
        return [RestorePhase.PLANNING]
    if spec.mode == RestoreMode.DRILL:
        return [RestorePhase.PLANNING, RestorePhase.RESTORING]
    out = [RestorePhase.PLANNING, RestorePhase.PAUSING_BACKUPS]
    if spec.pre_restore_backup:
        out.append(RestorePhase.PRE_RESTORE_BACKUP)
    if has_workloads:
        out.append(RestorePhase.SCALING_DOWN)
    out += [RestorePhase.RESTORING, RestorePhase.VALIDATING]
    if has_workloads:
        out.append(RestorePhase.SCALING_UP)
    return out


def plan_job_needed(spec: RestoreSpec) -> bool:
    """Whether Planning runs the runner's ``plan`` Job (the whole set verified, the plan listed).

    A dry run is that Job. An in-place restore needs it: the set must verify before the
    pre-restore backup and the scale-down, which already touch the live platform. A drill does
    not: its own Job verifies the whole set (signature, both checksums) before it restores into
    scratch targets, and touches nothing live, so a second pass over the set would only double
    the time the set is streamed.
    """
    return spec.dry_run or spec.mode != RestoreMode.DRILL


def next_phase(spec: RestoreSpec, current: RestorePhase) -> RestorePhase:
    """The phase after ``current`` succeeded."""
    order = steps(spec)
    if current == RestorePhase.PENDING:
        return order[0]
    if current not in order:
        return current
    index = order.index(current)
    if index + 1 < len(order):
        return order[index + 1]
    return RestorePhase.PLANNED if spec.dry_run else RestorePhase.COMPLETED


def failure_path(
    spec: RestoreSpec, current: RestorePhase, *, scaled: bool, swapped: bool
) -> RestorePhase:
    """Where a failure in ``current`` goes: roll back what was swapped, scale back what was
    stopped, then end (the end phase is kept in status.outcome meanwhile)."""
    if swapped and spec.mode == RestoreMode.IN_PLACE and current == RestorePhase.VALIDATING:
        return RestorePhase.ROLLING_BACK
    if scaled:
        return RestorePhase.SCALING_UP
    return RestorePhase.FAILED


# -- source resolution ---------------------------------------------------------------------


@dataclass(frozen=True)
class Candidate:
    """A LamassuBackup that could be the set to restore."""

    name: str
    phase: str
    set_time: datetime | None
    location: str | None
    components: frozenset[str] = frozenset()
    """The components that completed in the set."""
    subset: bool = False
    """The run was asked for some components only (a config backup after a change, say)."""


def parse_api_time(value: Any) -> datetime | None:
    """A time as the API writes it (RFC 3339), or None (also for a malformed one)."""
    if not value:
        return None
    try:
        moment = datetime.fromisoformat(str(value).replace("Z", "+00:00"))
    except ValueError:
        return None
    return moment if moment.tzinfo else moment.replace(tzinfo=UTC)


def set_moment(body: dict[str, Any]) -> datetime | None:
    """When a LamassuBackup's set was taken: its folder's time, else its scheduled time, its
    start, its creation. One function, so the controller and ``kubectl lamassu`` pick the same
    set for the same ``pointInTime``."""
    status = body.get("status") or {}
    spec = body.get("spec") or {}
    folder = str(status.get("setTime") or "")
    if layout.is_set_folder(folder):
        with_time: datetime | None = None
        try:
            with_time = layout.parse_set_time(folder)
        except ValueError:
            with_time = None
        if with_time is not None:
            return with_time
    return (
        parse_api_time(spec.get("scheduledTime"))
        or parse_api_time(status.get("startedAt"))
        or parse_api_time((body.get("metadata") or {}).get("creationTimestamp"))
    )


def completed_components(body: dict[str, Any]) -> frozenset[str]:
    """Components that completed in a set (its per-component results, else its artifacts)."""
    status = body.get("status") or {}
    results = status.get("components") or {}
    if results:
        return frozenset(
            str(name)
            for name, result in results.items()
            if isinstance(result, dict) and result.get("phase") == "Completed"
        )
    return frozenset(
        str(a.get("component")) for a in status.get("artifacts") or [] if a.get("component")
    )


def candidate_of(body: dict[str, Any]) -> Candidate:
    """A LamassuBackup as the API returns it, as a candidate set."""
    status = body.get("status") or {}
    return Candidate(
        name=str((body.get("metadata") or {}).get("name") or ""),
        phase=str(status.get("phase") or ""),
        set_time=set_moment(body),
        location=status.get("location"),
        components=completed_components(body),
        subset=bool((body.get("spec") or {}).get("components")),
    )


def choose_backup(
    candidates: Iterable[Candidate],
    point_in_time: datetime | None,
    need: Iterable[str] = (),
) -> str | None:
    """The newest usable set taken at or before ``point_in_time`` (None: the newest of all).

    With components named (``need``), a Completed or PartiallyFailed set holding each of them
    complete; with none named, only a Completed run of every component counts, so neither the
    config-only set a ConfigMap change made a minute ago nor a set with a failed part stands in
    for the last full backup.
    """
    wanted = set(need)
    usable = [
        c
        for c in candidates
        if c.location
        and c.set_time is not None
        and (point_in_time is None or c.set_time <= point_in_time)
        and (
            (c.phase in USABLE_BACKUP_PHASES and wanted <= c.components)
            if wanted
            else (c.phase == "Completed" and not c.subset)
        )
    ]
    if not usable:
        return None
    return max(usable, key=lambda c: (c.set_time, c.name)).name


def confirm_name(backup: str | None, location: str) -> str:
    """What spec.confirm must say: the LamassuBackup's name, or for a bare S3 set (no record in
    the cluster) the set's folder, e.g. 20261124T100000Z-1a2b3c4d."""
    return backup or location.rstrip("/").rsplit("/", 1)[-1]


def restore_components(
    spec: RestoreSpec, in_set: Iterable[str], *, bare_set: bool = False
) -> list[str]:
    """The components this restore touches: the spec's, or by default everything in the set.

    In place, "everything" includes the configuration and the key volumes (the filesystem
    engine's keys live there: a restore without them brings back CAs whose keys are gone); a
    drill leaves configuration out (it has no scratch copy to restore into). A bare S3 set is
    known only once planned: its default is :data:`BARE_SET_COMPONENTS`, postgres and vault only
    with a target (``spec.target``) to restore into.
    """
    if spec.components:
        return [str(c) for c in spec.components]
    available = set(in_set)
    if bare_set:
        targets = spec.target
        available = {
            c
            for c in BARE_SET_COMPONENTS
            if c == "config"
            or (c == "postgres" and targets is not None and targets.postgres is not None)
            or (c == "vault" and targets is not None and targets.vault is not None)
        }
    if spec.mode == RestoreMode.DRILL:
        available.discard("config")
    return [c for c in COMPONENT_ORDER if c in available]


# -- one restore at a time per namespace ---------------------------------------------------


@dataclass(frozen=True)
class RestoreRef:
    """Another restore in the namespace, as the lock sees it."""

    name: str
    phase: str
    created: datetime | None
    dry_run: bool
    drill: bool = False


def blocking_restore(me: RestoreRef, others: Sequence[RestoreRef]) -> str | None:
    """The restore that must finish before ``me`` may start, if any.

    An in-place restore holding the namespace (an active phase) blocks everyone; among the
    in-place ones waiting, the oldest goes first (name breaks ties), so two operators, or one
    restarted, agree. Dry runs and drills never block anyone; a drill waits only while an
    in-place restore holds the namespace (never behind one that waits), so neither can keep
    the other waiting forever.
    """
    if me.dry_run:
        return None
    active = {p.value for p in ACTIVE_PHASES}
    waiting = {RestorePhase.PENDING.value, RestorePhase.PLANNING.value}
    contenders = [o for o in others if o.name != me.name and not o.dry_run and not o.drill]
    for other in sorted(contenders, key=lambda o: o.name):
        if other.phase in active:
            return other.name
    if me.drill:
        return None
    mine = _age_key(me)
    for other in sorted(contenders, key=_age_key):
        if other.phase not in waiting:
            continue
        if _age_key(other) < mine:
            return other.name
    return None


def _age_key(ref: RestoreRef) -> tuple[float, str]:
    return (ref.created.timestamp() if ref.created else float("inf"), ref.name)


# -- workloads -------------------------------------------------------------------------------


@dataclass(frozen=True)
class Workload:
    """A Deployment or StatefulSet the restore stops and starts."""

    kind: str
    name: str
    replicas: int
    """spec.replicas now."""

    running: int
    """status.replicas now (Pods that exist)."""

    labels: dict[str, str]
    annotations: dict[str, str]


def is_key_service(workload: Workload) -> bool:
    """Lamassu's kms (the key service) stops last and starts first: the others depend on it."""
    names = {
        workload.name,
        workload.labels.get("app.kubernetes.io/name", ""),
        workload.labels.get("app.kubernetes.io/component", ""),
    }
    return any(n == "kms" or n.endswith("-kms") for n in names)


def scale_down_order(workloads: Iterable[Workload]) -> list[Workload]:
    """API services first, StatefulSets after Deployments, kms last."""
    return sorted(
        workloads, key=lambda w: (is_key_service(w), w.kind == "StatefulSet", w.kind, w.name)
    )


def stop_groups(workloads: Iterable[Workload]) -> list[list[Workload]]:
    """The scale-down order as groups stopped together: the API Deployments at once, then the
    StatefulSets, then kms. A group starts stopping only once the one before has stopped, so
    the order holds; within a group nothing depends on another, so waiting one by one would
    only add up their stop times."""
    groups: list[list[Workload]] = []
    last: tuple[bool, bool] | None = None
    for w in scale_down_order(workloads):
        key = (is_key_service(w), w.kind == "StatefulSet")
        if key != last:
            groups.append([])
            last = key
        groups[-1].append(w)
    return groups


def scale_up_order(workloads: Iterable[Workload]) -> list[Workload]:
    """The reverse: kms first, the API services last."""
    return list(reversed(scale_down_order(workloads)))


def recorded_replicas(workload: Workload, restore: str) -> int:
    """The replicas to record before scaling down: the annotation this restore left on an earlier
    pass (the workload is already at 0 then), else what it runs now."""
    if workload.annotations.get(SCALED_BY_ANNOTATION) == restore:
        value = workload.annotations.get(REPLICAS_ANNOTATION, "")
        if value.isdigit():
            return int(value)
    return workload.replicas


# -- validation --------------------------------------------------------------------------------


def evidence_problems(evidence: dict[str, Any], components: Sequence[str]) -> list[str]:
    """What the runner's evidence says is wrong (row counts, goose versions, key consistency).

    The runner already refuses a database whose counts or goose version differ from the manifest
    before the swap; this re-reads its evidence so a runner that skipped a check cannot pass.
    """
    problems: list[str] = []
    postgres = evidence.get("postgres")
    if "postgres" in components:
        if not isinstance(postgres, dict) or not postgres:
            problems.append("the runner reported no PostgreSQL evidence")
        else:
            for database, facts in sorted(postgres.items()):
                if isinstance(facts, dict) and facts.get("verified") is False:
                    problems.append(f"database {database}: not verified")
    keys = evidence.get("keyConsistency")
    if isinstance(keys, dict):
        missing = keys.get("missing") or []
        if missing:
            problems.append(f"key consistency: {len(missing)} key(s) missing from the key store")
    return problems


# -- names ---------------------------------------------------------------------------------------


def job_name(restore: str, step: str) -> str:
    """Deterministic name of a restore's runner Job for ``step`` (plan, restore, rollback,
    finalize): a restarted operator finds it and never creates a second one."""
    return layout.bounded_name(restore, step)


def pre_restore_backup_name(restore: str, uid: str) -> str:
    """Deterministic name of the safety LamassuBackup; the restore's uid keeps a later restore of
    the same name from mistaking an older safety set for its own."""
    return layout.bounded_name(restore, "prerestore", uid.replace("-", "")[:8], limit=253)


def swap_suffix(created: datetime) -> str:
    """The suffix of the databases kept aside, from the restore's creation (stable on restart)."""
    return created.strftime("%Y%m%d%H%M%S")
