"""Discovery: sets in the bucket that the cluster has no record of become LamassuBackups.

After a disaster, a fresh cluster with the same policy sees every set it can restore from
(Velero's sync controller does the same). Only committed sets count (a set without a manifest is
incomplete); a manifest whose signature does not verify is recorded as Failed, never hidden.
"""

from __future__ import annotations

import hashlib
from collections.abc import Sequence
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any

from ..builders import conditions as cond
from ..builders import jobs, layout
from ..builders.manifest import Manifest, parse, status_record
from ..clients.gpg import Keyring
from ..clients.kube import KubeApi
from ..clients.s3 import S3Store
from ..errors import LamassuBackupError
from ..models.backup import BackupPhase, Trigger
from ..models.resources import LamassuBackupPolicy
from . import resources
from . import secrets as secret_refs
from .common import Event, RunSummary, completed, iso, ref


@dataclass
class DiscoveryReport:
    """One pass."""

    created: list[str] = field(default_factory=list)
    events: list[Event] = field(default_factory=list)


def _status_from(
    manifest: Manifest,
    *,
    location: str,
    manifest_key: str,
    sha256: str,
    signed: bool,
    now: datetime,
    signature: str | None,
) -> dict[str, Any]:
    failed = [n for n, c in manifest.components.items() if c.status != "Completed"]
    phase = BackupPhase.COMPLETED if manifest.complete else BackupPhase.PARTIALLY_FAILED
    if signature:
        phase = BackupPhase.FAILED
    manifest_ref, artifacts = status_record(manifest, manifest_key, sha256)
    size = manifest.total_size()
    message = signature or (
        f"discovered in the bucket: {len(artifacts)} artifacts, {cond.humanize_bytes(size)}"
        + (f"; failed components at backup time: {', '.join(failed)}" if failed else "")
        + ("; manifest signature verified" if signed else "")
    )
    conditions = completed(
        [],
        ok=phase == BackupPhase.COMPLETED,
        reason="SignatureInvalid" if signature else "Discovered",
        message=message,
        now=now,
        generation=None,
    )
    return {
        "phase": phase.value,
        "startedAt": iso(manifest.created_at),
        "completedAt": iso(manifest.created_at),
        "setTime": manifest.set_time,
        "location": location,
        "manifest": manifest_ref,
        "sizeBytes": size,
        "size": cond.humanize_bytes(size),
        "artifacts": artifacts,
        "components": {
            n: {
                "phase": "Completed" if c.status == "Completed" else "Failed",
                "reason": c.reason,
                "message": c.message,
            }
            for n, c in manifest.components.items()
        },
        "conditions": [c.to_api() for c in conditions],
    }


def _check_signature(
    store: S3Store, folder: str, data: bytes, manifest: Manifest, signer_keys: str | None
) -> tuple[bool, str | None]:
    """(verified, problem): a signed manifest must verify against the trusted signer keys."""
    if not manifest.signed_by or not signer_keys:
        return False, None
    if store.head(folder + layout.SIGNATURE) is None:
        return False, f"{folder}{layout.MANIFEST} names a signer but {layout.SIGNATURE} is missing"
    with Keyring() as ring:
        trusted = [
            k.fingerprint
            for k in ring.import_public(signer_keys, source="spec.verification.signerKeySecret")
        ]
        try:
            ring.verify_detached(data, store.get_bytes(folder + layout.SIGNATURE), trusted)
        except LamassuBackupError as exc:
            return False, exc.message
    return True, None


def discover(
    kube: KubeApi, policy: LamassuBackupPolicy, runs: Sequence[RunSummary], now: datetime
) -> DiscoveryReport:
    """Record every committed set of this policy that has no LamassuBackup."""
    namespace, name, spec = policy.namespace, policy.name, policy.spec
    report = DiscoveryReport()
    store = secret_refs.operator_store(kube, namespace, spec)
    report.events.extend(audit_records(kube, store, namespace, name, now))
    moments = [r.scheduled_time or r.created_at for r in runs]
    known_times = {layout.set_time(m) for m in moments if m is not None}
    known_locations = {r.location for r in runs if r.location}
    policy_prefix = layout.policy_prefix(spec.destination.s3.prefix, namespace, name)
    signer_keys: str | None = None
    if spec.verification.signer_key_secret is not None:
        signer_keys = secret_refs.secret_text(
            kube,
            namespace,
            spec.verification.signer_key_secret,
            "spec.verification.signerKeySecret",
        )
    for folder in store.list_prefixes(policy_prefix):
        time_str = folder.rstrip("/").rsplit("/", 1)[-1]
        location = layout.Location(spec.destination.s3.bucket, folder).url
        if location in known_locations or time_str in known_times:
            continue
        if not layout.is_set_folder(time_str):
            continue
        manifest_key = folder + layout.MANIFEST
        if store.head(manifest_key) is None:
            continue  # not committed (or still being written by a run elsewhere)
        data = store.get_bytes(manifest_key)
        try:
            manifest = parse(data)
        except ValueError as exc:
            report.events.append(
                Event(
                    ref(policy),
                    "Warning",
                    "DiscoveryFailed",
                    f"{manifest_key}: unreadable manifest ({exc})",
                )
            )
            continue
        signed, signature_problem = _check_signature(store, folder, data, manifest, signer_keys)
        backup_name = layout.backup_name(name, time_str)
        resource = jobs.backup_resource(
            namespace=namespace,
            policy_name=name,
            name=backup_name,
            trigger=Trigger.DISCOVERED,
            components=[],
            location=location,
        )
        _, created = kube.create_custom("LamassuBackup", namespace, resource)
        if not created:
            continue
        kube.patch_status(
            "LamassuBackup",
            namespace,
            backup_name,
            _status_from(
                manifest,
                location=location,
                manifest_key=manifest_key,
                sha256=hashlib.sha256(data).hexdigest(),
                signed=signed,
                now=now,
                signature=signature_problem,
            ),
        )
        report.created.append(backup_name)
    if report.created:
        report.events.append(
            Event(
                ref(policy),
                "Normal",
                "Discovered",
                f"found {len(report.created)} set(s) in the bucket with no record: {', '.join(report.created[:10])}",
            )
        )
    return report


_AUDITED = (BackupPhase.COMPLETED.value, BackupPhase.PARTIALLY_FAILED.value)


def audit_records(
    kube: KubeApi, store: S3Store, namespace: str, policy: str, now: datetime
) -> list[Event]:
    """Records that claim a committed set must still match the bucket, or say they do not.

    A manifest deleted or replaced outside the operator turns the record Lost (with the reason
    in its Completed condition), so no restore, drill or retention decision trusts it. The
    manifest is re-read only when its ETag changed since the last audit.
    """
    events: list[Event] = []
    for backup in map(resources.parse_backup, resources.policy_records(kube, namespace, policy)):
        status = backup.status
        assert status is not None
        if status.phase.value not in _AUDITED:
            continue
        manifest = status.manifest
        if manifest is None or not manifest.key or not manifest.sha256:
            continue
        key, recorded = manifest.key, manifest.sha256
        info = store.head(key)
        problem: tuple[str, str] | None = None
        if info is None:
            problem = ("SetMissing", f"{store.url(key)} is no longer in the bucket")
        elif info.etag != manifest.etag:
            digest = hashlib.sha256(store.get_bytes(key)).hexdigest()
            if digest != recorded:
                problem = (
                    "ManifestChanged",
                    f"{store.url(key)} was replaced: its SHA-256 is {digest}, this record "
                    f"holds {recorded}",
                )
            else:
                kube.patch_status(
                    "LamassuBackup",
                    namespace,
                    backup.name,
                    {"manifest": {**manifest.to_api(), "etag": info.etag}},
                )
        if problem is None:
            continue
        reason, message = problem
        message += "; nothing can be restored from this record (it is kept as evidence)"
        conditions = completed(
            status.conditions,
            ok=False,
            reason=reason,
            message=message,
            now=now,
            generation=backup.generation,
        )
        kube.patch_status(
            "LamassuBackup",
            namespace,
            backup.name,
            {
                "phase": BackupPhase.LOST.value,
                "lostAt": iso(now),
                "conditions": [c.to_api() for c in conditions],
            },
        )
        events.append(Event(ref(backup), "Warning", reason, message))
    return events
