"""The policy service's Secret-reference cache: a Secret event re-checks only its own policies.

A regression here costs the apiserver one GET per referenced Secret per policy in the namespace
on every Secret change (with 1,000 policies: thousands of GETs a second).
"""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import cast

import yaml

from lamassu_backup.clients.kube import KubeApi
from lamassu_backup.models.policy import BackupPolicySpec
from lamassu_backup.services import secrets as refs
from lamassu_backup.services.common import Settings
from lamassu_backup.services.policies import PolicyService
from lamassu_backup.services.runs import RunService

EXAMPLE = Path(__file__).parents[2] / "examples" / "policy-standard.yaml"
NOW = datetime(2026, 11, 24, 12, 0, tzinfo=UTC)


class SecretReads:
    """Answers Secret reads from a dict and counts them (the only call the check makes)."""

    def __init__(self, secrets: dict[str, dict[str, bytes]]) -> None:
        self.secrets = secrets
        self.reads: list[str] = []

    def secret_data(self, namespace: str, name: str) -> dict[str, bytes] | None:
        self.reads.append(name)
        return self.secrets.get(name)


def example_spec() -> BackupPolicySpec:
    return BackupPolicySpec.model_validate(yaml.safe_load(EXAMPLE.read_text())["spec"])


def all_referenced(spec: BackupPolicySpec) -> dict[str, dict[str, bytes]]:
    out: dict[str, dict[str, bytes]] = {}
    for ref in refs.references(spec) + refs.verification_references(spec):
        out.setdefault(ref.secret, {})[ref.key] = b"x"
    return out


def service(reads: SecretReads) -> PolicyService:
    kube = cast(KubeApi, reads)
    return PolicyService(kube, cast(RunService, None), Settings(secret_check_seconds=300))


def test_cached_within_the_period_and_rechecked_after() -> None:
    spec = example_spec()
    reads = SecretReads(all_referenced(spec))
    svc = service(reads)
    assert svc.checks.check("ns", "a", 1, spec, NOW) == (None, None)
    first = len(reads.reads)
    assert first > 0
    assert svc.checks.check("ns", "a", 1, spec, NOW + timedelta(seconds=299)) == (None, None)
    assert len(reads.reads) == first
    svc.checks.check("ns", "a", 1, spec, NOW + timedelta(seconds=301))
    assert len(reads.reads) == 2 * first


def test_a_secret_event_invalidates_only_the_policies_referring_to_it() -> None:
    spec = example_spec()
    referenced = all_referenced(spec)
    reads = SecretReads(referenced)
    svc = service(reads)
    for name in ("a", "b"):
        svc.checks.check("ns", name, 1, spec, NOW)
    svc.checks.check("other", "a", 1, spec, NOW)
    one_secret = sorted(referenced)[0]

    assert svc.invalidate_secret("ns", "unrelated-secret") == []
    assert svc.invalidate_secret("ns", one_secret) == ["a", "b"]
    # Invalidated once: a second event finds nothing cached for them.
    assert svc.invalidate_secret("ns", one_secret) == []
    # The other namespace's policy is still cached.
    before = len(reads.reads)
    svc.checks.check("other", "a", 1, spec, NOW + timedelta(seconds=1))
    assert len(reads.reads) == before


def test_a_missing_secret_is_reported_and_any_referenced_secret_invalidates() -> None:
    spec = example_spec()
    referenced = all_referenced(spec)
    order = [r.secret for r in refs.references(spec)]
    missing, later = order[0], order[-1]
    assert missing != later
    reads = SecretReads({k: v for k, v in referenced.items() if k != missing})
    svc = service(reads)
    error, verify_error = svc.checks.check("ns", "a", 1, spec, NOW)
    assert error is not None
    assert verify_error is None
    assert error.startswith("SecretNotFound: ")
    assert missing in error
    # The check stopped at the first missing Secret, yet a change to one it never read
    # still counts: the policy refers to it.
    assert later not in reads.reads
    assert svc.invalidate_secret("ns", later) == ["a"]
    reads.secrets[missing] = referenced[missing]
    assert svc.checks.check("ns", "a", 1, spec, NOW + timedelta(seconds=1)) == (None, None)


def test_a_secret_only_verification_needs_does_not_block_backups() -> None:
    spec = example_spec()
    referenced = all_referenced(spec)
    backup_secrets = {r.secret for r in refs.references(spec)}
    only_verification = [
        r.secret for r in refs.verification_references(spec) if r.secret not in backup_secrets
    ]
    assert only_verification, "the example must have a Secret only verification uses"
    reads = SecretReads({k: v for k, v in referenced.items() if k != only_verification[0]})
    error, verify_error = service(reads).checks.check("ns", "a", 1, spec, NOW)
    assert error is None
    assert verify_error is not None
    assert verify_error.startswith("SecretNotFound: ")
    assert "spec.verification." in verify_error
