"""Termination messages stay under 4 KiB and never carry a secret."""

from __future__ import annotations

import json

from lamassu_backup.errors import Redactor
from lamassu_backup.models.runner import RunnerResult
from lamassu_backup.runner import report


def test_small_results_are_kept_whole() -> None:
    result = RunnerResult(
        ok=True, action="backup", components={"postgres": "Completed"}, size_bytes=5
    )
    text = report.encode(result, Redactor())
    assert json.loads(text)["components"] == {"postgres": "Completed"}


def test_large_results_shrink_to_valid_json_under_the_limit() -> None:
    artifacts = [
        {"k": f"postgres/db{i}.dump.zst.gpg", "s": i, "h": "a" * 64, "p": "b" * 64}
        for i in range(100)
    ]
    result = RunnerResult(
        ok=False,
        action="backup",
        artifacts=artifacts,
        error="x" * 6000,
        components={"postgres": "Failed: X"},
    )
    text = report.encode(result, Redactor())
    assert len(text.encode()) <= report.LIMIT
    data = json.loads(text)
    assert data["components"] == {"postgres": "Failed: X"}
    assert data["ok"] is False


def test_secrets_are_redacted() -> None:
    redactor = Redactor(["s3cr3t-password"])
    result = RunnerResult(
        ok=False, action="backup", error="psql: password s3cr3t-password rejected"
    )
    text = report.encode(result, redactor)
    assert "s3cr3t-password" not in text
    assert "<redacted>" in text


def test_redactor_ignores_short_values_and_strips_private_keys() -> None:
    redactor = Redactor(["ab", "long-enough"])
    text = "ab long-enough -----BEGIN PGP PRIVATE KEY BLOCK-----\nxyz\n-----END PGP PRIVATE KEY BLOCK----- end"
    out = redactor.redact(text)
    assert out.startswith("ab <redacted> <redacted private key> end")
