"""The manifest: canonical bytes, completeness, and refusal of unknown formats."""

from __future__ import annotations

import json
from datetime import UTC, datetime

import pytest

from lamassu_backup.builders.manifest import build_manifest, parse, render
from lamassu_backup.models.runner import ArtifactRecord, ComponentOutcome


def artifact(component: str, name: str, size: int = 10) -> ArtifactRecord:
    return ArtifactRecord(
        component=component,
        name=name,
        kind="pg-dump",
        key=f"{component}/{name}.gpg",
        size_bytes=size,
        plaintext_size_bytes=size * 2,
        sha256="a" * 64,
        plaintext_sha256="b" * 64,
        compression="zstd-1",
        encryption="gpg",
    )


def make(outcomes: list[ComponentOutcome], requested: list[str]) -> bytes:
    manifest = build_manifest(
        namespace="lamassu",
        policy="p",
        backup="p-1",
        set_time="20261124T100000Z",
        created_at=datetime(2026, 11, 24, 10, 5, tzinfo=UTC),
        tool_version="0.1.0",
        requested=requested,
        outcomes=outcomes,
        encryption={"client": "gpg"},
        signed_by=None,
    )
    return render(manifest)


def test_complete_when_every_requested_component_succeeded() -> None:
    body = make(
        [
            ComponentOutcome(
                component="postgres",
                ok=True,
                artifacts=[artifact("postgres", "va"), artifact("postgres", "ca")],
            ),
            ComponentOutcome(component="vault", ok=True, artifacts=[artifact("vault", "raft", 5)]),
        ],
        ["postgres", "vault"],
    )
    manifest = parse(body)
    assert manifest.complete is True
    assert [a.key for a in manifest.artifacts] == [
        "postgres/ca.gpg",
        "postgres/va.gpg",
        "vault/raft.gpg",
    ]
    assert manifest.total_size() == 25


def test_missing_or_failed_components_make_it_incomplete() -> None:
    body = make(
        [
            ComponentOutcome(component="postgres", ok=True, artifacts=[artifact("postgres", "ca")]),
            ComponentOutcome(
                component="vault",
                ok=False,
                reason="VaultError",
                message="sealed",
                artifacts=[artifact("vault", "raft")],
            ),
        ],
        ["postgres", "vault", "config"],
    )
    manifest = parse(body)
    assert manifest.complete is False
    assert manifest.components["vault"].status == "Failed"
    assert manifest.components["config"].reason == "NoResult"
    # A failed component's artifacts are never listed, even if it reported some.
    assert [a.component for a in manifest.artifacts] == ["postgres"]


def test_render_is_canonical() -> None:
    outcomes = [
        ComponentOutcome(component="postgres", ok=True, artifacts=[artifact("postgres", "ca")])
    ]
    first = make(outcomes, ["postgres"])
    assert first == make(outcomes, ["postgres"])
    data = json.loads(first)
    assert list(data) == sorted(data)


def test_parse_refuses_other_formats() -> None:
    with pytest.raises(ValueError, match="unsupported manifest format"):
        parse(json.dumps({"format": "velero/v1"}).encode())
