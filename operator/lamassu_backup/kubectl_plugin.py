"""``kubectl lamassu``: back up, list, restore, drill and check Lamassu backups from kubectl.

A kubectl plugin (the ``kubectl-lamassu`` console script), in the manner of ``kubectl cnpg`` and
``velero``. It only creates and reads resources through the Kubernetes API; the operator does the
work. It never talks to S3 or to a database, and never reads a Secret.

The functions above ``build_parser`` are pure (choosing a set, building a restore, rendering) and
are unit-tested; the commands below them only add the API calls.
"""

from __future__ import annotations

import argparse
import json
import re
import sys
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any, TextIO

import yaml
from pydantic import ValidationError

from . import __version__
from .builders import layout, restore_plan
from .builders.conditions import humanize_bytes, humanize_duration
from .builders.jobs import LABEL_POLICY
from .clients.kube import KubeApi, connect, guard
from .errors import LamassuBackupError
from .models.backup import BackupPhase, Trigger
from .models.common import ComponentName, LabelSelector, LocalObjectRef, SecretKeyRef
from .models.resources import API_VERSION
from .models.restore import RestoreMode, RestoreSpec, Validation, Workloads
from .models.restore import RestoreSource as RestoreSourceSpec

PROG = "kubectl lamassu"
RUN_NOW_ANNOTATION = "backup.lamassu.io/run-now"
"""The policy annotation the operator acts on once per new value (services/policies.py)."""

CREATED_BY_ANNOTATION = "backup.lamassu.io/created-by"
REQUESTED_ANNOTATION = "backup.lamassu.io/requested-source"
"""How the plugin chose the set (latest, or at a time), for whoever reads the restore later."""

COMPONENT_ORDER = [c.value for c in ComponentName]
OUTPUTS = ("table", "yaml", "json")


class PluginError(LamassuBackupError):
    """A refusal or a failure, shown to the person as one line."""

    reason = "PluginError"


# -- time and choosing -------------------------------------------------------------------------


def _set_folder_time(text: str) -> datetime | None:
    """The time of a set folder name (``20261124T100000Z``, with or without its run id)."""
    if not re.match(r"^\d{8}T\d{6}Z", text):
        return None
    try:
        return layout.parse_set_time(text)
    except ValueError:
        return None


def parse_time_arg(text: str) -> datetime:
    """``--at``: an RFC 3339 time with a zone (``2026-11-24T10:00:00Z``), or a set's folder name
    (``20261124T100000Z``, with or without its run id). A time without a zone is refused: at 3 a.m. nobody should guess it.
    """
    value = text.strip()
    folder = _set_folder_time(value)
    if folder is not None:
        return folder
    if re.match(r"^\d{4}-\d{2}-\d{2}[Tt ]\d{2}:\d{2}", value):
        try:
            moment = datetime.fromisoformat(value.replace("z", "Z").replace("Z", "+00:00"))
        except ValueError:
            pass
        else:
            if moment.tzinfo is not None:
                return moment.astimezone(UTC)
            raise PluginError(
                f"bad time {text!r}: it has no time zone; add one, e.g. {value}Z (UTC) or {value}+02:00"
            )
    raise PluginError(
        f"bad time {text!r}: use RFC 3339 with a zone (e.g. 2026-11-24T10:00:00Z) "
        "or a set time (e.g. 20261124T100000Z)"
    )


parse_api_time = restore_plan.parse_api_time


def iso(moment: datetime | None) -> str:
    """RFC 3339 with a Z; empty for None."""
    if moment is None:
        return ""
    return moment.astimezone(UTC).isoformat(timespec="seconds").replace("+00:00", "Z")


def set_moment(backup: dict[str, Any]) -> datetime | None:
    """When a set was taken (the controller's rule: builders.restore_plan.set_moment)."""
    return restore_plan.set_moment(backup)


def policy_of(backup: dict[str, Any]) -> str:
    """The policy a LamassuBackup belongs to."""
    return str(((backup.get("spec") or {}).get("policyRef") or {}).get("name") or "")


def set_components(backup: dict[str, Any]) -> set[str]:
    """Components that completed in a set (builders.restore_plan.completed_components)."""
    return set(restore_plan.completed_components(backup))


def policy_components(policy: dict[str, Any]) -> list[str]:
    """Components a policy backs up, in the order a restore applies them."""
    configured = (policy.get("spec") or {}).get("components") or {}
    return [c for c in COMPONENT_ORDER if configured.get(c)]


def archives_wal(policy: dict[str, Any] | None) -> bool:
    """Whether a policy ships WAL (``spec.components.postgres.walArchiving.enabled``)."""
    postgres = (((policy or {}).get("spec") or {}).get("components") or {}).get("postgres") or {}
    return bool((postgres.get("walArchiving") or {}).get("enabled"))


def restorable_reason(backup: dict[str, Any], need: Sequence[str]) -> str | None:
    """Why a set cannot be restored for the ``need``-ed components; None if it can.

    A Completed set qualifies; a PartiallyFailed one when every needed component completed in it
    (the controller accepts both); anything else, or a set without a location, does not.
    """
    status = backup.get("status") or {}
    phase = status.get("phase") or BackupPhase.PENDING.value
    done = set_components(backup)
    missing = [c for c in need if c not in done]
    if phase == BackupPhase.COMPLETED.value:
        if missing:
            return f"it holds no {', '.join(missing)} (it holds {', '.join(sorted(done)) or 'nothing'})"
    elif phase == BackupPhase.PARTIALLY_FAILED.value and need:
        if missing:
            return f"it is PartiallyFailed and {', '.join(missing)} did not complete in it"
    else:
        return f"it is {phase}: only a Completed set can be restored"
    if not status.get("location"):
        return "it records no location in the bucket"
    return None


def touched_components(
    mode: RestoreMode, available: Iterable[str], requested: Sequence[str] = ()
) -> list[str]:
    """The components a restore touches: the requested ones, else the controller's defaults
    among ``available`` (builders.restore_plan decides, so the plugin shows what will happen).
    """
    probe = RestoreSpec(
        backup_ref=LocalObjectRef(name="probe"),
        mode=mode,
        dry_run=True,
        components=[ComponentName(c) for c in requested],
        decryption_key_secret=SecretKeyRef(name="probe", key="probe"),
    )
    ordered = [c for c in COMPONENT_ORDER if c in set(available)]
    return restore_plan.restore_components(probe, ordered)


def choose_backup(
    backups: Iterable[dict[str, Any]],
    *,
    policy: str,
    at: datetime | None,
    need: Sequence[str],
) -> dict[str, Any] | None:
    """The set of ``policy`` the controller would restore for ``pointInTime`` ``at`` (None:
    latest) and these components: builders.restore_plan.choose_backup decides for both, so
    ``restore --latest`` shows the very set the operator will pick."""
    mine = {str(b["metadata"]["name"]): b for b in backups if policy_of(b) == policy}
    chosen = restore_plan.choose_backup(
        [restore_plan.candidate_of(b) for b in mine.values()], at, need
    )
    return mine.get(chosen) if chosen is not None else None


# -- building resources ------------------------------------------------------------------------


def split_list(values: Sequence[str] | None) -> list[str]:
    """``--components a,b --components c`` -> [a, b, c], order kept, duplicates dropped."""
    out: list[str] = []
    for value in values or []:
        for raw in value.split(","):
            item = raw.strip()
            if item and item not in out:
                out.append(item)
    return out


def parse_components(values: Sequence[str] | None) -> list[str]:
    """Component names, checked against the known ones."""
    names = split_list(values)
    unknown = [n for n in names if n not in COMPONENT_ORDER]
    if unknown:
        raise PluginError(
            f"unknown component {', '.join(unknown)}: use {', '.join(COMPONENT_ORDER)}"
        )
    return names


def parse_secret_ref(text: str, flag: str) -> SecretKeyRef:
    """``NAME:KEY`` -> a Secret key reference."""
    name, sep, key = text.partition(":")
    if not sep or not name or not key:
        raise PluginError(
            f"{flag} {text!r}: write it as SECRET:KEY, e.g. backup-gpg-private:private.asc"
        )
    try:
        return SecretKeyRef(name=name, key=key)
    except ValidationError as exc:
        raise PluginError(f"{flag} {text!r}: {first_error(exc)}") from None


def parse_selector(text: str) -> LabelSelector:
    """``a=b,c=d`` (kubectl's -l, equality only) -> a label selector."""
    labels: dict[str, str] = {}
    for part in split_list([text]):
        key, sep, value = part.partition("=")
        key, value = key.strip(), value.strip().lstrip("=")
        if not sep or not key or key.endswith("!"):
            raise PluginError(
                f"selector {text!r}: only key=value pairs, e.g. app.kubernetes.io/part-of=lamassu"
            )
        labels[key] = value
    return LabelSelector(match_labels=labels)


def first_error(exc: ValidationError) -> str:
    """The first message of a pydantic error, without pydantic's decoration."""
    errors = exc.errors()
    if not errors:
        return str(exc)
    message = str(errors[0].get("msg", ""))
    return message.removeprefix("Value error, ")


def policy_secret(policy: dict[str, Any] | None, key: str) -> SecretKeyRef | None:
    """A Secret reference from the policy's verification settings (what its drills use)."""
    ref = (((policy or {}).get("spec") or {}).get("verification") or {}).get(key)
    if not ref or not ref.get("name") or not ref.get("key"):
        return None
    return SecretKeyRef(name=str(ref["name"]), key=str(ref["key"]))


@dataclass
class RestoreRequest:
    """What a person asked for, after the set was chosen."""

    backup: dict[str, Any]
    mode: RestoreMode
    components: list[str] = field(default_factory=list)
    databases: list[str] = field(default_factory=list)
    dry_run: bool = False
    decryption_key: SecretKeyRef | None = None
    passphrase: SecretKeyRef | None = None
    signer_key: SecretKeyRef | None = None
    selector: LabelSelector | None = None
    pre_restore_backup: bool = True
    health_checks: list[str] = field(default_factory=list)
    requested: str | None = None
    """latest, or the --at time, when the set was chosen for the person."""
    point_in_time: str | None = None
    """``latest`` or an RFC 3339 time: the policy archives WAL, so postgres is recovered to that
    moment from its archive (``source.policyRef`` + ``pointInTime``) instead of the set's dumps;
    the set still gives the other components."""

    @property
    def backup_name(self) -> str:
        return str(self.backup["metadata"]["name"])


def restore_name(backup: str, mode: RestoreMode, dry_run: bool, now: datetime) -> str:
    """A fresh, readable name: <backup>-<drill|restore|plan>-<UTC time>."""
    verb = "plan" if dry_run else ("drill" if mode == RestoreMode.DRILL else "restore")
    return layout.bounded_name(backup, verb, now.astimezone(UTC).strftime("%Y%m%d%H%M%S"))


def _source_fields(req: RestoreRequest) -> dict[str, Any]:
    if req.point_in_time is None:
        return {"backup_ref": LocalObjectRef(name=req.backup_name)}
    # The controller picks the set for the other components by the same rule as the plugin
    # (builders.restore_plan.choose_backup), so confirming the chosen set's name holds.
    source = RestoreSourceSpec(
        policy_ref=LocalObjectRef(name=policy_of(req.backup)), point_in_time=req.point_in_time
    )
    return {"source": source}


def _in_place_fields(req: RestoreRequest) -> dict[str, Any]:
    if req.mode != RestoreMode.IN_PLACE:
        return {}
    fields: dict[str, Any] = {"pre_restore_backup": req.pre_restore_backup}
    if not req.dry_run:
        # A point-in-time restore of postgres alone reads no set: the policy is what it confirms.
        archive_only = req.point_in_time is not None and req.components == ["postgres"]
        fields["confirm"] = policy_of(req.backup) if archive_only else req.backup_name
    if req.selector is not None:
        fields["workloads"] = Workloads(selector=req.selector)
    return fields


def restore_body(req: RestoreRequest, *, name: str, namespace: str) -> dict[str, Any]:
    """The LamassuRestore for a request, built with the resource's own model (so its rules, e.g.
    confirm for an in-place restore, are checked here as the apiserver will check them).
    """
    if req.decryption_key is None:
        raise PluginError(
            "no decryption key: pass --decryption-key-secret SECRET:KEY (the policy has no "
            "verification.decryptionKeySecret to default to)"
        )
    kwargs: dict[str, Any] = {
        "mode": req.mode,
        "decryption_key_secret": req.decryption_key,
        **_source_fields(req),
        **_in_place_fields(req),
    }
    optional = {
        "components": [ComponentName(c) for c in req.components],
        "databases": req.databases,
        "dry_run": req.dry_run,
        "decryption_key_passphrase_secret": req.passphrase,
        "signer_key_secret": req.signer_key,
        "validation": Validation(health_checks=req.health_checks) if req.health_checks else None,
    }
    kwargs.update({k: v for k, v in optional.items() if v})
    try:
        spec = RestoreSpec(**kwargs)
    except ValidationError as exc:
        raise PluginError(f"invalid restore: {first_error(exc)}") from None
    annotations = {CREATED_BY_ANNOTATION: "kubectl-lamassu"}
    if req.requested:
        annotations[REQUESTED_ANNOTATION] = req.requested
    policy = policy_of(req.backup)
    labels = {LABEL_POLICY: layout.label_value(policy)} if policy else {}
    return {
        "apiVersion": API_VERSION,
        "kind": "LamassuRestore",
        "metadata": {
            "name": name,
            "namespace": namespace,
            "labels": labels,
            "annotations": annotations,
        },
        "spec": spec.model_dump(by_alias=True, exclude_unset=True, exclude_none=True, mode="json"),
    }


def restore_targets(
    backup: dict[str, Any], mode: RestoreMode, requested: Sequence[str], databases: Sequence[str]
) -> list[tuple[str, str, str, str]]:
    """What a restore of the set overwrites, in the order the restore applies it:
    (component, target, kind, size). Unknown components or databases are refused.
    """
    artifacts = list((backup.get("status") or {}).get("artifacts") or [])
    name = backup["metadata"]["name"]
    held = {str(a.get("component")) for a in artifacts}
    for c in requested:
        if c not in held:
            raise PluginError(
                f"backup {name} holds no {c} artifacts (it holds {', '.join(sorted(held)) or 'none'})"
            )
    if databases:
        dbs = {str(a.get("name")) for a in artifacts if a.get("component") == "postgres"}
        missing = [d for d in databases if d not in dbs]
        if missing:
            raise PluginError(
                f"backup {name} holds no database {', '.join(missing)} "
                f"(it holds {', '.join(sorted(dbs)) or 'none'})"
            )
    order = {c: i for i, c in enumerate(["postgres", "vault", "volumes", "config", "awsKms"])}
    components = touched_components(mode, held, requested)
    if artifacts and not components:
        raise PluginError(
            f"backup {name} holds none of the components a {mode.value} restore touches by "
            f"default (it holds {', '.join(sorted(held))}): pass --components"
        )
    rows: list[tuple[int, str, str, str, str]] = []
    for a in artifacts:
        component = str(a.get("component"))
        if component not in components:
            continue
        if databases and component == "postgres" and a.get("name") not in databases:
            continue
        size = a.get("plaintextSizeBytes") or a.get("sizeBytes")
        rows.append(
            (
                order.get(component, len(order)),
                component,
                str(a.get("name")),
                str(a.get("kind", "")),
                humanize_bytes(int(size)) if isinstance(size, int) else "",
            )
        )
    rows.sort(key=lambda r: (r[0], r[2]))
    return [r[1:] for r in rows]


def plan_summary(req: RestoreRequest, *, namespace: str, now: datetime) -> str:
    """What an in-place restore will do, for the person who must confirm it."""
    backup = req.backup
    status = backup.get("status") or {}
    moment = set_moment(backup)
    taken = f"{iso(moment)} ({age(moment, now)} ago)" if moment else "unknown time"
    verified = (status.get("verification") or {}).get("phase") or "not verified"
    lines = [
        f"In-place restore of {req.backup_name} into namespace {namespace}"
        + (" (dry run: nothing changes)" if req.dry_run else ""),
        f"  Set:         taken {taken}, {status.get('size') or size_of(status) or 'size unknown'},"
        f" {verified}",
        f"  Location:    {status.get('location') or 'unknown'}",
        "  Overwrites, in order:",
    ]
    targets = restore_targets(backup, req.mode, req.components, req.databases)
    if not targets:
        lines.append("    (the set lists no artifacts)")
    width = max((len(t[0]) for t in targets), default=0)
    lines.extend(
        f"    {c.ljust(width)}  {t}" + (f"  ({k}{', ' + s if s else ''})" if k else "")
        for c, t, k, s in targets
    )
    if req.selector is not None and req.selector.match_labels:
        sel = ",".join(f"{k}={v}" for k, v in req.selector.match_labels.items())
        lines.append(f"  Workloads:   scaled to zero first, then back: {sel}")
    else:
        lines.append(
            "  Workloads:   none selected (pass -l/--workload-selector to stop Lamassu first)"
        )
    lines.append(
        "  Safety set:  a full backup is taken first; nothing is restored unless it completes"
        if req.pre_restore_backup
        else "  Safety set:  none (--no-pre-restore-backup)"
    )
    lines.append(
        "  The operator verifies the set (signature, both checksums) before anything live changes."
    )
    return "\n".join(lines)


def confirm_in_place(
    backup_name: str,
    given: str | None,
    *,
    interactive: bool,
    ask: Callable[[str], str],
) -> None:
    """An in-place restore goes ahead only when the person typed (or passed) the backup's name."""
    if given is not None:
        if given != backup_name:
            raise PluginError(
                f"--confirm {given!r} does not match the backup {backup_name}: nothing was created"
            )
        return
    if not interactive:
        raise PluginError(
            f"refusing an in-place restore without a terminal to confirm it: pass --confirm {backup_name}"
        )
    typed = ask(f"Type the backup name ({backup_name}) to restore it in place: ").strip()
    if typed != backup_name:
        raise PluginError(f"aborted: {typed!r} is not {backup_name}; nothing was created")


# -- rendering ---------------------------------------------------------------------------------


def age(moment: datetime | None, now: datetime) -> str:
    """How long ago, as kubectl's AGE column shows it (``5m3s``, ``3d4h``); empty for None."""
    if moment is None:
        return ""
    return humanize_duration(max((now - moment).total_seconds(), 0))


def until(moment: datetime | None, now: datetime) -> str:
    """``in 33m`` or ``33m ago`` (a due time already passed)."""
    if moment is None:
        return ""
    seconds = (moment - now).total_seconds()
    if seconds >= 0:
        return f"in {humanize_duration(seconds)}"
    return f"{humanize_duration(-seconds)} overdue"


def size_of(status: dict[str, Any]) -> str:
    """The set's size for a person."""
    if status.get("size"):
        return str(status["size"])
    size = status.get("sizeBytes")
    return humanize_bytes(int(size)) if isinstance(size, int) else ""


def table(headers: Sequence[str], rows: Iterable[Sequence[Any]], indent: str = "") -> str:
    """Columns as kubectl prints them: upper-case headers, three spaces apart, no trailing blanks."""
    cells = [[str(h).upper() for h in headers]] + [
        ["" if v is None else str(v) for v in row] for row in rows
    ]
    widths = [max(len(r[i]) for r in cells) for i in range(len(headers))]
    lines = []
    for row in cells:
        text = "   ".join(v.ljust(w) for v, w in zip(row, widths, strict=True))
        lines.append((indent + text).rstrip())
    return "\n".join(lines)


def backup_rows(backups: Iterable[dict[str, Any]], now: datetime) -> list[list[str]]:
    """``backups``: newest set first."""

    def key(b: dict[str, Any]) -> tuple[datetime, str]:
        return (set_moment(b) or datetime.min.replace(tzinfo=UTC), str(b["metadata"]["name"]))

    rows = []
    for b in sorted(backups, key=key, reverse=True):
        spec, status = b.get("spec") or {}, b.get("status") or {}
        moment = set_moment(b)
        rows.append(
            [
                str(b["metadata"]["name"]),
                policy_of(b),
                str(spec.get("trigger") or Trigger.MANUAL.value),
                str(status.get("phase") or BackupPhase.PENDING.value),
                layout.set_time(moment) if moment else "",
                size_of(status),
                str((status.get("verification") or {}).get("phase") or ""),
                age(parse_api_time((b.get("metadata") or {}).get("creationTimestamp")), now),
            ]
        )
    return rows


BACKUP_HEADERS = ("name", "policy", "trigger", "phase", "set time", "size", "verified", "age")


def condition(obj: dict[str, Any], type_: str) -> dict[str, Any]:
    """One condition of an object's status ({} when absent)."""
    for c in (obj.get("status") or {}).get("conditions") or []:
        if c.get("type") == type_:
            return dict(c)
    return {}


def policy_summary(policy: dict[str, Any], now: datetime) -> dict[str, Any]:
    """``status`` of one policy: what a person checks first, from the policy's own status."""
    spec, status = policy.get("spec") or {}, policy.get("status") or {}
    per_component = status.get("components") or {}
    components = []
    for name in policy_components(policy) or sorted(per_component):
        entry = per_component.get(name) or {}
        last = parse_api_time(entry.get("lastSuccessfulTime"))
        components.append(
            {
                "name": name,
                "lastSuccessfulTime": iso(last) or None,
                "age": age(last, now) or None,
                "recoveryPointObjective": entry.get("recoveryPointObjective"),
                "stale": bool(entry.get("stale", last is None)),
            }
        )
    recent = (status.get("recentRuns") or [{}])[0] or {}

    def state(type_: str) -> dict[str, Any]:
        c = condition(policy, type_)
        return {
            "status": c.get("status", "Unknown"),
            "reason": c.get("reason"),
            "message": c.get("message"),
        }

    return {
        "name": policy["metadata"]["name"],
        "namespace": policy["metadata"].get("namespace"),
        "schedule": spec.get("schedule"),
        "suspended": bool(spec.get("suspend")),
        "ready": state("Ready"),
        "stale": state("Stale"),
        "verified": state("Verified"),
        "lastRunSucceeded": state("LastRunSucceeded"),
        "lastSuccessfulTime": status.get("lastSuccessfulTime"),
        "lastVerifiedTime": status.get("lastVerifiedTime"),
        "nextScheduleTime": status.get("nextScheduleTime"),
        "lastRun": {k: recent.get(k) for k in ("name", "phase", "trigger", "reason")}
        if recent
        else None,
        "components": components,
    }


def render_status(summaries: Sequence[dict[str, Any]], now: datetime) -> str:
    """``status`` as blocks, one per policy, like ``kubectl cnpg status``."""
    blocks = []
    for s in summaries:

        def line(label: str, value: str) -> str:
            return f"  {label + ':':<14}{value}".rstrip()

        def cond(c: dict[str, Any]) -> str:
            text = str(c["status"])
            if c.get("reason"):
                text += f" ({c['reason']})"
            return text

        nxt = parse_api_time(s["nextScheduleTime"])
        last = parse_api_time(s["lastSuccessfulTime"])
        verified_at = parse_api_time(s["lastVerifiedTime"])
        schedule = str(s["schedule"] or "")
        if s["suspended"]:
            schedule += " (suspended)"
        elif nxt:
            schedule += f", next run {iso(nxt)} ({until(nxt, now)})"
        run = s["lastRun"] or {}
        run_text = " ".join(str(run[k]) for k in ("name", "phase") if run.get(k))
        if run.get("reason"):
            run_text += f": {run['reason']}"
        verified = cond(s["verified"])
        if verified_at:
            verified += f", last verified {iso(verified_at)} ({age(verified_at, now)} ago)"
        lines = [
            f"Policy {s['name']} (namespace {s['namespace']})",
            line("Ready", cond(s["ready"])),
            line("Schedule", schedule),
            line("Last success", f"{iso(last)} ({age(last, now)} ago)" if last else "never"),
            line("Last run", run_text or "none yet"),
            line("Stale", cond(s["stale"])),
            line("Verified", verified),
        ]
        if s["ready"]["status"] != "True" and s["ready"].get("message"):
            lines.append(line("Not ready", str(s["ready"]["message"])))
        if s["components"]:
            lines.append(
                table(
                    ("component", "last success", "age", "rpo", "stale"),
                    (
                        [
                            c["name"],
                            c["lastSuccessfulTime"] or "never",
                            c["age"] or "",
                            c["recoveryPointObjective"] or "",
                            "True" if c["stale"] else "False",
                        ]
                        for c in s["components"]
                    ),
                    indent="  ",
                )
            )
        blocks.append("\n".join(lines))
    return "\n\n".join(blocks)


_DESCRIBED_STATUS = {
    "phase",
    "step",
    "resolvedBackup",
    "plan",
    "steps",
    "scaledWorkloads",
    "preRestoreBackup",
    "startedAt",
    "completedAt",
    "recoveryTimeSeconds",
    "evidence",
    "conditions",
    "observedGeneration",
    "components",
    "outcome",
    "reason",
    "message",
    "warnings",
    "errors",
    "swapSuffix",
    "finalizedAt",
    "workloadsRecorded",
}


def _component_rank(name: str) -> int:
    return COMPONENT_ORDER.index(name) if name in COMPONENT_ORDER else len(COMPONENT_ORDER)


def _indented_yaml(data: Any, indent: str = "  ") -> str:
    text = yaml.safe_dump(data, sort_keys=False, default_flow_style=False).rstrip()
    return "\n".join(indent + line for line in text.splitlines())


def _field(label: str, value: Any) -> str:
    return f"{label + ':':<20}{'' if value is None else value}".rstrip()


def _restore_source(spec: dict[str, Any], resolved: dict[str, Any]) -> str:
    source = spec.get("source") or {}
    if resolved.get("name") or spec.get("backupRef"):
        return str(resolved.get("name") or spec["backupRef"].get("name"))
    if source.get("policyRef"):
        return f"{source['policyRef'].get('name')} at {source.get('pointInTime', 'latest')}"
    return str((source.get("s3") or {}).get("path") or "")


def _default_components(mode: str, resolved: dict[str, Any]) -> str:
    kind = (
        RestoreMode.IN_PLACE if mode.startswith(RestoreMode.IN_PLACE.value) else RestoreMode.DRILL
    )
    touched = touched_components(kind, resolved.get("components") or [])
    return f"{', '.join(touched)} (the default)" if touched else "the default for the set"


def _point_in_time(pit: dict[str, Any] | None) -> str | None:
    """postgres recovered from the WAL archive: the target, the base backup, the window."""
    if not pit:
        return None
    target = pit.get("target") or f"{pit.get('requested', 'latest')} (everything shipped)"
    parts = [f"postgres to {target} from {pit.get('archive', 'the archive')}"]
    if pit.get("baseBackup"):
        parts.append(f"base backup {pit['baseBackup']}, {pit.get('walFiles', '?')} WAL file(s)")
    if pit.get("recoverableFrom") or pit.get("recoverableUntil"):
        parts.append(
            f"window {pit.get('recoverableFrom', '?')} .. {pit.get('recoverableUntil', '?')}"
        )
    return "; ".join(parts)


def _restore_header(obj: dict[str, Any], now: datetime) -> list[str]:
    meta, spec, status = obj["metadata"], obj.get("spec") or {}, obj.get("status") or {}
    resolved = status.get("resolvedBackup") or {}
    mode = str(spec.get("mode") or RestoreMode.DRILL.value)
    if spec.get("dryRun"):
        mode += " (dry run)"
    started = parse_api_time(status.get("startedAt"))
    completed = parse_api_time(status.get("completedAt"))
    finalized = parse_api_time(status.get("finalizedAt"))
    pairs: list[tuple[str, Any]] = [
        ("Name", meta.get("name")),
        ("Namespace", meta.get("namespace")),
        ("Backup", _restore_source(spec, resolved)),
        ("Set time", resolved.get("setTime")),
        ("Location", resolved.get("location")),
        ("Point in time", _point_in_time(resolved.get("pointInTime"))),
        ("Mode", mode),
        (
            "Components",
            ", ".join(spec.get("components") or []) or _default_components(mode, resolved),
        ),
        ("Databases", ", ".join(spec.get("databases") or []) or "all in the set"),
        ("Phase", status.get("phase") or "Pending"),
        ("Step", status.get("step")),
        ("Started", f"{iso(started)} ({age(started, now)} ago)" if started else None),
        ("Completed", iso(completed) if completed else None),
    ]
    pairs += [
        (
            "Outcome",
            status.get("outcome") if status.get("outcome") != status.get("phase") else None,
        ),
        ("Reason", status.get("reason")),
        ("Message", status.get("message")),
        (
            "Warnings, errors",
            f"{status.get('warnings') or 0}, {status.get('errors') or 0}"
            if status.get("warnings") or status.get("errors")
            else None,
        ),
        (
            "Recovery time",
            f"{float(status['recoveryTimeSeconds']):.1f}s"
            if status.get("recoveryTimeSeconds") is not None
            else None,
        ),
        ("Pre-restore backup", status.get("preRestoreBackup")),
        (
            "Kept databases",
            (
                f"dropped {iso(finalized)}"
                if finalized
                else f"<db>__pre_restore_{status['swapSuffix']}"
            )
            if status.get("swapSuffix")
            else None,
        ),
        (
            "Scaled workloads",
            ", ".join(
                f"{w.get('kind')}/{w.get('name')} ({w.get('replicas')} replicas)"
                for w in status.get("scaledWorkloads") or []
            ),
        ),
    ]
    return [_field(label, value) for label, value in pairs if value not in (None, "")]


def _section(title: str, rendered: str | None, empty: str) -> list[str]:
    return [f"{title}:", rendered or f"  ({empty})"]


def render_restore(obj: dict[str, Any], now: datetime) -> str:
    """``restore describe``: the restore as a person follows it (velero restore describe)."""
    status = obj.get("status") or {}
    plan = status.get("plan") or []
    steps = status.get("steps") or []
    results = status.get("components") or {}
    conditions = status.get("conditions") or []
    out = [*_restore_header(obj, now), ""]
    out += _section(
        "Plan",
        table(
            ("#", "component", "target", "action", "detail"),
            (
                [i, p.get("component"), p.get("target"), p.get("action"), p.get("detail")]
                for i, p in enumerate(plan, 1)
            ),
            indent="  ",
        )
        if plan
        else None,
        "filled in by the drill's Job: it restores into scratch targets only"
        if (obj.get("spec") or {}).get("mode") == "Drill"
        else "not planned yet",
    )
    out += _section(
        "Steps",
        table(
            ("step", "phase", "started", "completed", "job", "message"),
            (
                [
                    s.get("name"),
                    s.get("phase"),
                    iso(parse_api_time(s.get("startedAt"))),
                    iso(parse_api_time(s.get("completedAt"))),
                    s.get("job"),
                    s.get("message"),
                ]
                for s in steps
            ),
            indent="  ",
        )
        if steps
        else None,
        "none yet",
    )
    if results:
        out += _section(
            "Results",
            table(
                ("component", "result"),
                ([c, results[c]] for c in sorted(results, key=_component_rank)),
                indent="  ",
            ),
            "",
        )
    out += _section(
        "Evidence",
        _indented_yaml(status["evidence"]) if status.get("evidence") else None,
        "none yet",
    )
    out += _section(
        "Conditions",
        table(
            ("type", "status", "reason", "message"),
            (
                [c.get("type"), c.get("status"), c.get("reason"), c.get("message")]
                for c in conditions
            ),
            indent="  ",
        )
        if conditions
        else None,
        "none yet",
    )
    other = {
        k: v for k, v in status.items() if k not in _DESCRIBED_STATUS and v not in (None, [], {})
    }
    if other:
        out += _section("Other status", _indented_yaml(other), "")
    return "\n".join(out)


def render(data: Any, output: str) -> str:
    """yaml or json of plain data."""
    if output == "json":
        return json.dumps(data, indent=2, default=str)
    return yaml.safe_dump(data, sort_keys=False, default_flow_style=False).rstrip()


def as_list(items: list[dict[str, Any]]) -> dict[str, Any]:
    """Objects as ``kubectl get -o yaml`` prints several."""
    return {"apiVersion": "v1", "kind": "List", "items": items}


# -- the commands ------------------------------------------------------------------------------


@dataclass
class Context:
    """What every command gets: the API, the namespace, where to write."""

    kube: KubeApi
    namespace: str
    output: str
    out: TextIO
    err: TextIO
    stdin: TextIO
    now: Callable[[], datetime] = lambda: datetime.now(UTC)

    def print(self, text: str) -> None:
        self.out.write(text.rstrip("\n") + "\n")

    def note(self, text: str) -> None:
        self.err.write(text.rstrip("\n") + "\n")

    def get(self, kind: str, name: str) -> dict[str, Any] | None:
        return guard(
            f"reading {kind} {self.namespace}/{name}",
            lambda: self.kube.get_custom(kind, self.namespace, name),
        )

    def need(self, kind: str, name: str, hint: str = "") -> dict[str, Any]:
        obj = self.get(kind, name)
        if obj is None:
            raise PluginError(f"{kind} {name} not found in namespace {self.namespace}{hint}")
        return obj

    def list(self, kind: str) -> list[dict[str, Any]]:
        return guard(
            f"listing {kind} in {self.namespace}",
            lambda: self.kube.list_custom(kind, self.namespace),
        )

    def show(self, obj: dict[str, Any], text: str) -> None:
        """A created or changed object: kubectl's one line, or the object itself with -o."""
        self.print(text if self.output == "table" else render(obj, self.output))


def _policy(ctx: Context, name: str) -> dict[str, Any]:
    return ctx.need("LamassuBackupPolicy", name, " (kubectl get lbp lists the policies)")


def cmd_backup_now(ctx: Context, args: argparse.Namespace) -> int:
    policy = _policy(ctx, args.policy)
    ready = condition(policy, "Ready")
    if ready.get("status") == "False":  # the operator says it cannot run (absent: not seen yet)
        ctx.note(
            f"warning: policy {args.policy} is not Ready: {ready.get('message') or ready.get('reason')}"
        )
    now = ctx.now()
    components = parse_components(args.components)
    if not components and not args.pinned:
        value = iso(now).replace("Z", "") + f".{now.microsecond:06d}Z"
        patched = ctx.kube.patch_custom(
            "LamassuBackupPolicy",
            ctx.namespace,
            args.policy,
            {"metadata": {"annotations": {RUN_NOW_ANNOTATION: value}}},
        )
        ctx.show(
            patched,
            f"lamassubackuppolicy.backup.lamassu.io/{args.policy} annotated "
            f"{RUN_NOW_ANNOTATION}={value}: the operator starts a Manual backup "
            f"(kubectl lamassu backups --policy {args.policy})",
        )
        return 0
    from .builders.jobs import backup_resource

    name = args.name or layout.bounded_name(
        layout.backup_name(args.policy, layout.set_time(now)), "manual", limit=253
    )
    body = backup_resource(
        namespace=ctx.namespace,
        policy_name=args.policy,
        name=name,
        trigger=Trigger.MANUAL,
        components=components,
    )
    if args.pinned:
        body["spec"]["pinned"] = True
    body["metadata"]["annotations"] = {CREATED_BY_ANNOTATION: "kubectl-lamassu"}
    created = ctx.kube.create_new_custom("LamassuBackup", ctx.namespace, body)
    ctx.show(created, f"lamassubackup.backup.lamassu.io/{name} created")
    return 0


def cmd_backups(ctx: Context, args: argparse.Namespace) -> int:
    items = ctx.list("LamassuBackup")
    if args.policy:
        items = [b for b in items if policy_of(b) == args.policy]
    if ctx.output != "table":
        ctx.print(render(as_list(items), ctx.output))
        return 0
    if not items:
        which = f" of policy {args.policy}" if args.policy else ""
        ctx.note(f"No backups{which} found in namespace {ctx.namespace}.")
        return 0
    ctx.print(table(BACKUP_HEADERS, backup_rows(items, ctx.now())))
    return 0


def _choose(
    ctx: Context, policy_name: str, at: datetime | None, mode: RestoreMode, wanted: list[str]
) -> dict[str, Any]:
    policy = ctx.get("LamassuBackupPolicy", policy_name)
    backups = ctx.list("LamassuBackup")
    if policy is None and not any(policy_of(b) == policy_name for b in backups):
        raise PluginError(
            f"LamassuBackupPolicy {policy_name} not found in namespace {ctx.namespace}, "
            "and no backup refers to it"
        )
    need = wanted or (touched_components(mode, policy_components(policy)) if policy else [])
    chosen = choose_backup(backups, policy=policy_name, at=at, need=need)
    if chosen is None:
        when = f" taken at or before {iso(at)}" if at else ""
        what = f" with {', '.join(need)}" if need else ""
        raise PluginError(
            f"no completed backup of policy {policy_name}{what}{when} in namespace {ctx.namespace}"
        )
    return chosen


def _secret_defaults(
    args: argparse.Namespace, policy: dict[str, Any] | None
) -> tuple[SecretKeyRef | None, SecretKeyRef | None, SecretKeyRef | None]:
    def pick(flag: str, attr: str, key: str) -> SecretKeyRef | None:
        value = getattr(args, attr, None)
        return parse_secret_ref(value, flag) if value else policy_secret(policy, key)

    return (
        pick("--decryption-key-secret", "decryption_key_secret", "decryptionKeySecret"),
        pick("--passphrase-secret", "passphrase_secret", "decryptionKeyPassphraseSecret"),
        pick("--signer-key-secret", "signer_key_secret", "signerKeySecret"),
    )


def _create_restore(
    ctx: Context, req: RestoreRequest, name: str | None, confirm: str | None = None
) -> int:
    """Check, show the plan of an in-place restore and have it confirmed, then create."""
    now = ctx.now()
    restore = name or restore_name(req.backup_name, req.mode, req.dry_run, now)
    body = restore_body(req, name=restore, namespace=ctx.namespace)  # refuses a bad request
    if req.mode == RestoreMode.IN_PLACE:
        ctx.note(plan_summary(req, namespace=ctx.namespace, now=now))
        if not req.dry_run:
            confirm_in_place(
                req.backup_name, confirm, interactive=ctx.stdin.isatty(), ask=_ask(ctx)
            )
    else:
        restore_targets(
            req.backup, req.mode, req.components, req.databases
        )  # refuses unknown subsets
    if confirm is not None and confirm != req.backup_name:
        raise PluginError(f"--confirm {confirm!r} does not match the backup {req.backup_name}")
    created = ctx.kube.create_new_custom("LamassuRestore", ctx.namespace, body)
    what = (
        "dry run"
        if req.dry_run
        else ("drill" if req.mode == RestoreMode.DRILL else "in-place restore")
    )
    ctx.show(
        created,
        f"lamassurestore.backup.lamassu.io/{restore} created ({what} of {req.backup_name}; "
        f"kubectl lamassu restore describe {restore})",
    )
    return 0


def _ask(ctx: Context) -> Callable[[str], str]:
    def ask(prompt: str) -> str:
        ctx.err.write(prompt)
        ctx.err.flush()
        line = ctx.stdin.readline()
        if not line:
            raise PluginError("aborted: no answer; nothing was created")
        return line

    return ask


def cmd_restore(ctx: Context, args: argparse.Namespace) -> int:
    if args.backup == "describe":
        return cmd_restore_describe(ctx, args)
    if args.name_arg is not None:
        raise PluginError(f"unexpected argument {args.name_arg!r} (restore takes one backup name)")
    chosen_by = [bool(args.backup), bool(args.latest), args.at is not None]
    if sum(chosen_by) != 1:
        raise PluginError(
            "name exactly one set: a BACKUP, or --latest --policy P, or --at TIME --policy P"
        )
    components = parse_components(args.components)
    databases = split_list(args.databases)
    mode = RestoreMode(args.mode)
    if args.backup:
        backup = ctx.need("LamassuBackup", args.backup, " (kubectl lamassu backups lists them)")
        if args.policy and policy_of(backup) != args.policy:
            raise PluginError(
                f"backup {args.backup} belongs to policy {policy_of(backup)}, not {args.policy}"
            )
        why = restorable_reason(
            backup, components or touched_components(mode, set_components(backup))
        )
        if why:
            raise PluginError(f"backup {args.backup} cannot be restored: {why}")
        requested = None
    else:
        if not args.policy:
            raise PluginError(f"{'--latest' if args.latest else '--at'} needs --policy POLICY")
        at = parse_time_arg(args.at) if args.at is not None else None
        backup = _choose(ctx, args.policy, at, mode, components)
        requested = "latest" if at is None else f"at {iso(at)}"
        ctx.note(
            f"chose {backup['metadata']['name']} (newest completed set{' at or before ' + iso(at) if at else ''})"
        )
    policy = ctx.get("LamassuBackupPolicy", policy_of(backup)) if policy_of(backup) else None
    key, passphrase, signer = _secret_defaults(args, policy)
    point_in_time = None
    if (
        requested is not None
        and archives_wal(policy)
        and (not components or "postgres" in components)
    ):
        point_in_time = "latest" if args.at is None else iso(parse_time_arg(args.at))
        ctx.note(
            f"policy {policy_of(backup)} archives WAL: postgres is recovered to "
            f"{point_in_time} from its archive; the other components come from that set"
        )
    req = RestoreRequest(
        point_in_time=point_in_time,
        backup=backup,
        mode=mode,
        components=components,
        databases=databases,
        dry_run=args.dry_run,
        decryption_key=key,
        passphrase=passphrase,
        signer_key=signer,
        selector=parse_selector(args.workload_selector) if args.workload_selector else None,
        pre_restore_backup=not args.no_pre_restore_backup,
        health_checks=list(args.health_check or []),
        requested=requested,
    )
    return _create_restore(ctx, req, args.name, args.confirm)


def cmd_restore_describe(ctx: Context, args: argparse.Namespace) -> int:
    if not args.name_arg:
        raise PluginError("restore describe needs the name of a LamassuRestore (kubectl get lrs)")
    obj = ctx.need("LamassuRestore", args.name_arg, " (kubectl get lrs lists them)")
    ctx.print(render_restore(obj, ctx.now()) if ctx.output == "table" else render(obj, ctx.output))
    return 0


def cmd_drill(ctx: Context, args: argparse.Namespace) -> int:
    policy = _policy(ctx, args.policy)
    components = parse_components(args.components)
    backup = _choose(ctx, args.policy, None, RestoreMode.DRILL, components)
    key, passphrase, signer = _secret_defaults(args, policy)
    req = RestoreRequest(
        backup=backup,
        mode=RestoreMode.DRILL,
        components=components,
        databases=split_list(args.databases),
        decryption_key=key,
        passphrase=passphrase,
        signer_key=signer,
        requested="latest",
    )
    return _create_restore(ctx, req, args.name)


def cmd_status(ctx: Context, args: argparse.Namespace) -> int:
    if args.policy:
        policies = [_policy(ctx, args.policy)]
    else:
        policies = sorted(ctx.list("LamassuBackupPolicy"), key=lambda p: p["metadata"]["name"])
    now = ctx.now()
    summaries = [policy_summary(p, now) for p in policies]
    if ctx.output != "table":
        ctx.print(render(summaries, ctx.output))
        return 0
    if not summaries:
        ctx.note(f"No policies found in namespace {ctx.namespace}.")
        return 0
    ctx.print(render_status(summaries, now))
    return 0


# -- the parser --------------------------------------------------------------------------------


def _common(parser: argparse.ArgumentParser, *, top: bool) -> None:
    """kubectl's standard flags, accepted before or after the command."""
    default = None if top else argparse.SUPPRESS
    parser.add_argument(
        "-n", "--namespace", default=default, help="namespace (default: the context's)"
    )
    parser.add_argument(
        "--kubeconfig", default=default, help="kubeconfig file (default: $KUBECONFIG)"
    )
    parser.add_argument("--context", default=default, help="kubeconfig context")
    parser.add_argument(
        "-o",
        "--output",
        choices=OUTPUTS,
        default="table" if top else argparse.SUPPRESS,
        help="output format (default: table)",
    )


def _key_flags(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "--decryption-key-secret",
        metavar="SECRET:KEY",
        help="private key that decrypts the set (default: the policy's verification.decryptionKeySecret)",
    )
    parser.add_argument(
        "--passphrase-secret", metavar="SECRET:KEY", help="its passphrase (default: the policy's)"
    )
    parser.add_argument(
        "--signer-key-secret",
        metavar="SECRET:KEY",
        help="public key that must have signed the manifest (default: the policy's)",
    )


def build_parser() -> argparse.ArgumentParser:
    """The argument parser (separate so tests can inspect it)."""
    parser = argparse.ArgumentParser(
        prog=PROG,
        description="Back up, list, restore and drill Lamassu IoT backups. Only creates and reads "
        "resources; the lamassu-backup operator does the work.",
    )
    parser.add_argument("--version", action="version", version=f"%(prog)s {__version__}")
    _common(parser, top=True)
    sub = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")

    backup = sub.add_parser("backup", help="back up now")
    backup_sub = backup.add_subparsers(dest="backup_command", required=True, metavar="COMMAND")
    now = backup_sub.add_parser(
        "now",
        help="back up a policy now",
        description="Sets the policy's backup.lamassu.io/run-now annotation (the operator starts "
        "one Manual run per new value). With --components or --pinned, creates a LamassuBackup.",
    )
    _common(now, top=False)
    now.add_argument("policy", help="the LamassuBackupPolicy")
    now.add_argument(
        "--components",
        action="append",
        metavar="LIST",
        help=f"only these ({', '.join(COMPONENT_ORDER)})",
    )
    now.add_argument("--pinned", action="store_true", help="retention never deletes this set")
    now.add_argument("--name", help="name of the LamassuBackup (with --components or --pinned)")
    now.set_defaults(func=cmd_backup_now)

    backups = sub.add_parser("backups", help="list backups with phase, size and verification")
    _common(backups, top=False)
    backups.add_argument("--policy", help="only this policy's")
    backups.set_defaults(func=cmd_backups)

    restore = sub.add_parser(
        "restore",
        help="restore a set (Drill by default), or describe a restore",
        usage=f"{PROG} restore (BACKUP | --latest --policy P | --at TIME --policy P) [options]\n"
        f"       {PROG} restore describe NAME",
        description="Creates a LamassuRestore. An in-place restore prints what it will overwrite "
        "and asks you to type the backup's name (or takes --confirm NAME); without a terminal and "
        "without --confirm it refuses.",
    )
    _common(restore, top=False)
    restore.add_argument("backup", nargs="?", help="the LamassuBackup (or: describe)")
    restore.add_argument("name_arg", nargs="?", metavar="NAME", help=argparse.SUPPRESS)
    restore.add_argument(
        "--latest", action="store_true", help="the newest completed set of --policy"
    )
    restore.add_argument(
        "--at", metavar="TIME", help="the newest completed set of --policy taken at or before TIME"
    )
    restore.add_argument("--policy", help="the policy whose sets --latest and --at choose among")
    restore.add_argument(
        "--mode",
        choices=[m.value for m in RestoreMode],
        default=RestoreMode.DRILL.value,
        help="Drill (default: scratch targets, nothing live changes) or InPlace",
    )
    restore.add_argument("--dry-run", action="store_true", help="plan only; change nothing")
    restore.add_argument(
        "--components", action="append", metavar="LIST", help="only these components"
    )
    restore.add_argument(
        "--databases", action="append", metavar="LIST", help="only these databases"
    )
    restore.add_argument(
        "--confirm",
        metavar="BACKUP",
        help="the backup's name, to restore in place without a prompt",
    )
    restore.add_argument(
        "-l",
        "--workload-selector",
        metavar="K=V,...",
        help="InPlace: Deployments and StatefulSets to scale to zero first and back after",
    )
    restore.add_argument(
        "--no-pre-restore-backup",
        action="store_true",
        help="InPlace: skip the safety set taken first",
    )
    restore.add_argument(
        "--health-check",
        action="append",
        metavar="URL",
        help="must answer 2xx after the restore (repeatable)",
    )
    restore.add_argument(
        "--name", help="name of the LamassuRestore (default: <backup>-<restore|drill|plan>-<time>)"
    )
    _key_flags(restore)
    restore.set_defaults(func=cmd_restore)

    drill = sub.add_parser(
        "drill", help="test-restore a policy's newest completed set into scratch targets"
    )
    _common(drill, top=False)
    drill.add_argument("policy", help="the LamassuBackupPolicy")
    drill.add_argument(
        "--components", action="append", metavar="LIST", help="only these components"
    )
    drill.add_argument("--databases", action="append", metavar="LIST", help="only these databases")
    drill.add_argument("--name", help="name of the LamassuRestore")
    _key_flags(drill)
    drill.set_defaults(func=cmd_drill)

    status = sub.add_parser(
        "status", help="per policy: last success per component, stale, verified, next run"
    )
    _common(status, top=False)
    status.add_argument("policy", nargs="?", help="only this policy")
    status.set_defaults(func=cmd_status)
    return parser


def run(
    argv: Sequence[str] | None = None,
    *,
    out: TextIO | None = None,
    err: TextIO | None = None,
    stdin: TextIO | None = None,
) -> int:
    """Parse, connect, run one command; every failure is one line on stderr and exit code 1."""
    out, err, stdin = out or sys.stdout, err or sys.stderr, stdin or sys.stdin
    args = build_parser().parse_args(argv)
    try:
        api, default_namespace = connect(args.kubeconfig, args.context)
        ctx = Context(
            kube=KubeApi(api),
            namespace=args.namespace or default_namespace,
            output=args.output,
            out=out,
            err=err,
            stdin=stdin,
        )
        code: int = args.func(ctx, args)
    except LamassuBackupError as exc:
        message = exc.message
        if exc.reason == "KubernetesError" and "HTTP " not in message:
            message += " (is the API server reachable?)"
        err.write(f"error: {message}\n")
        return 1
    except KeyboardInterrupt:
        err.write("\naborted: nothing more was created\n")
        return 130
    return code


def main() -> None:
    """Entry point of the ``kubectl-lamassu`` console script."""
    raise SystemExit(run())


if __name__ == "__main__":
    main()
