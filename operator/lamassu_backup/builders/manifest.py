"""The manifest of a backup set: the list of every artifact with both checksums.

It is written last; a set without it is incomplete by definition. Keys inside are relative to
the set's prefix, so a set copied to another bucket or prefix stays valid.
"""

from __future__ import annotations

import json
from datetime import datetime
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field
from pydantic.alias_generators import to_camel

from ..models.runner import ArtifactRecord, ComponentOutcome
from . import layout

FORMAT = "lamassu-backup/v1"


class _M(BaseModel):
    model_config = ConfigDict(alias_generator=to_camel, populate_by_name=True, extra="ignore")


class ComponentEntry(_M):
    """A component's outcome as the manifest records it."""

    status: Literal["Completed", "Failed"]
    reason: str | None = None
    message: str | None = None
    details: dict[str, Any] = Field(default_factory=dict)
    warnings: list[str] = Field(default_factory=list)


class Manifest(_M):
    """manifest.json."""

    format: str = FORMAT
    namespace: str
    policy: str
    backup: str
    set_time: str
    created_at: datetime
    tool_version: str
    complete: bool
    """True when every component requested succeeded."""

    components: dict[str, ComponentEntry]
    artifacts: list[ArtifactRecord]
    encryption: dict[str, Any] = Field(default_factory=dict)
    signed_by: str | None = None
    """Fingerprint of the key whose detached signature is manifest.json.asc."""

    def total_size(self) -> int:
        """Stored bytes of every artifact."""
        return sum(a.size_bytes for a in self.artifacts)

    def artifact(self, key: str) -> ArtifactRecord | None:
        """The artifact stored under ``key`` (relative)."""
        return next((a for a in self.artifacts if a.key == key), None)


def build_manifest(
    *,
    namespace: str,
    policy: str,
    backup: str,
    set_time: str,
    created_at: datetime,
    tool_version: str,
    requested: list[str],
    outcomes: list[ComponentOutcome],
    encryption: dict[str, Any],
    signed_by: str | None,
) -> Manifest:
    """Assemble the manifest from the components' outcomes; missing components count as failed."""
    by_name = {o.component: o for o in outcomes}
    components: dict[str, ComponentEntry] = {}
    artifacts: list[ArtifactRecord] = []
    for name in requested:
        outcome = by_name.get(name)
        if outcome is None:
            components[name] = ComponentEntry(
                status="Failed", reason="NoResult", message="the component left no record"
            )
            continue
        components[name] = ComponentEntry(
            status="Completed" if outcome.ok else "Failed",
            reason=outcome.reason,
            message=outcome.message,
            details=outcome.details,
            warnings=outcome.warnings,
        )
        if outcome.ok:
            artifacts.extend(outcome.artifacts)
    return Manifest(
        namespace=namespace,
        policy=policy,
        backup=backup,
        set_time=set_time,
        created_at=created_at,
        tool_version=tool_version,
        complete=all(c.status == "Completed" for c in components.values()) and bool(components),
        components=components,
        artifacts=sorted(artifacts, key=lambda a: a.key),
        encryption=encryption,
        signed_by=signed_by,
    )


def status_artifacts(manifest: Manifest, prefix: str) -> list[dict[str, Any]]:
    """The manifest's artifacts as a LamassuBackup's status lists them: full keys, no sidecars
    (the manifest's keys are relative to the set, so a copied set stays valid)."""
    artifacts = []
    for artifact in manifest.artifacts:
        item = artifact.model_dump(mode="json", by_alias=True, exclude_none=True)
        item["key"] = prefix + artifact.key
        item.pop("sidecarKey", None)
        artifacts.append(item)
    return artifacts


def status_record(
    manifest: Manifest, manifest_key: str, sha256: str
) -> tuple[dict[str, Any], list[dict[str, Any]]]:
    """What a LamassuBackup's status records of a committed set: ``status.manifest`` (with the
    signature's key when the manifest is signed) and ``status.artifacts``."""
    prefix = manifest_key.removesuffix(layout.MANIFEST)
    ref: dict[str, Any] = {"key": manifest_key, "sha256": sha256}
    if manifest.signed_by:
        ref["signatureKey"] = prefix + layout.SIGNATURE
    return ref, status_artifacts(manifest, prefix)


def render(manifest: Manifest) -> bytes:
    """Canonical bytes: stable key order, so the SHA-256 and the signature are reproducible."""
    data = manifest.model_dump(mode="json", by_alias=True, exclude_none=True)
    return (json.dumps(data, indent=2, sort_keys=True) + "\n").encode()


def parse(data: bytes) -> Manifest:
    """Read manifest.json; refuses other formats."""
    raw = json.loads(data)
    if raw.get("format") != FORMAT:
        raise ValueError(f"unsupported manifest format {raw.get('format')!r}; expected {FORMAT}")
    return Manifest.model_validate(raw)
