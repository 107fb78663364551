"""The resource models: defaults, camelCase, cross-field rules, and the example manifests."""

from __future__ import annotations

import re
from datetime import timedelta
from pathlib import Path
from typing import Any

import pytest
import yaml
from pydantic import ValidationError

from lamassu_backup.components.postgres.spec import LAMASSU_DATABASES, CompressionAlgorithm
from lamassu_backup.models import (
    BackupPolicySpec,
    LamassuBackupPolicy,
    LamassuRestore,
    RestoreMode,
    RestoreSpec,
    parse_resource,
)
from lamassu_backup.models.common import LabelSelector

EXAMPLES = Path(__file__).resolve().parents[2] / "examples"
VALID = sorted(EXAMPLES.glob("*.yaml"))
INVALID = sorted((EXAMPLES / "invalid").glob("*.yaml"))

MINIMAL_POLICY: dict[str, Any] = {
    "components": {"postgres": {"host": "db", "credentialsSecret": {"name": "pg"}}},
    "destination": {"s3": {"bucket": "lamassu-backups"}},
    "encryption": {"gpg": {"recipientsSecret": {"name": "gpg", "key": "recipients.asc"}}},
}


def expectation(path: Path, which: str) -> str:
    match = re.search(rf"^# expect-{which}: (.+)$", path.read_text(), re.M)
    assert match, f"{path.name} lacks an '# expect-{which}:' line"
    return match.group(1).strip()


def test_there_are_examples() -> None:
    kinds = {yaml.safe_load(p.read_text())["kind"] for p in VALID}
    assert kinds == {"LamassuBackupPolicy", "LamassuBackup", "LamassuRestore"}
    assert len(INVALID) >= 10


@pytest.mark.parametrize("path", VALID, ids=lambda p: p.name)
def test_valid_examples_parse(path: Path) -> None:
    obj = yaml.safe_load(path.read_text())
    resource = parse_resource(obj)
    assert resource.metadata["name"] == obj["metadata"]["name"]
    # What the model writes back is what it read (modulo defaults): nothing is silently lost.
    again = parse_resource(resource.to_api())
    assert again == resource


@pytest.mark.parametrize("path", INVALID, ids=lambda p: p.name)
def test_invalid_examples_fail_with_their_message(path: Path) -> None:
    expected = expectation(path, "model")
    with pytest.raises(ValidationError) as info:
        parse_resource(yaml.safe_load(path.read_text()))
    assert expected in str(info.value)


def test_policy_defaults() -> None:
    spec = BackupPolicySpec.model_validate(MINIMAL_POLICY)
    assert spec.schedule == "0 * * * *"
    assert spec.time_zone == "Etc/UTC"
    assert spec.starting_deadline == timedelta(minutes=30)
    assert spec.concurrency_policy == "Forbid"
    pg = spec.components.postgres
    assert pg is not None
    assert pg.databases == LAMASSU_DATABASES
    assert pg.port == 5432
    assert pg.compression.algorithm == CompressionAlgorithm.ZSTD
    assert pg.credentials_secret.username_key == "username"
    assert spec.destination.s3.server_side_encryption.type == "aws:kms"
    assert spec.retention.keep_last == 24
    assert spec.retention.keep_verified == 1
    assert spec.verification.schedule is None
    assert spec.runner.backoff_limit == 1
    assert spec.runner.active_deadline == timedelta(hours=2)


def test_defaults_are_not_shared_between_instances() -> None:
    a = BackupPolicySpec.model_validate(MINIMAL_POLICY)
    b = BackupPolicySpec.model_validate(MINIMAL_POLICY)
    assert a.components.postgres is not None
    assert b.components.postgres is not None
    a.components.postgres.databases.append("auth")
    assert "auth" not in b.components.postgres.databases


def test_camel_case_on_the_wire_and_snake_case_in_python() -> None:
    spec = BackupPolicySpec.model_validate(MINIMAL_POLICY)
    wire = spec.to_api()
    assert "startingDeadline" in wire
    assert wire["startingDeadline"] == "30m"
    assert "starting_deadline" not in wire
    by_name = BackupPolicySpec(**{**MINIMAL_POLICY, "starting_deadline": "1h"})
    assert by_name.starting_deadline == timedelta(hours=1)


def test_unknown_fields_are_refused() -> None:
    with pytest.raises(ValidationError, match="Extra inputs are not permitted"):
        BackupPolicySpec.model_validate({**MINIMAL_POLICY, "schedul": "@daily"})


def test_component_order_is_restore_order() -> None:
    spec = BackupPolicySpec.model_validate(
        {
            **MINIMAL_POLICY,
            "components": {
                "config": {},
                "vault": {
                    "address": "https://v:8200",
                    "auth": {"tokenSecret": {"name": "t", "key": "k"}},
                },
                "postgres": {"host": "db", "credentialsSecret": {"name": "pg"}},
                "volumes": [{"name": "keys", "claimName": "kms"}],
            },
        }
    )
    # Database and keys first (they must match), files next, configuration last.
    assert spec.components.names() == ["postgres", "vault", "volumes", "config"]


@pytest.mark.parametrize(
    ("vault", "ok"),
    [
        ({"raftSnapshot": False, "kvMounts": []}, False),
        ({"raftSnapshot": False, "kvMounts": ["lamassu-kms"]}, True),
        ({"raftSnapshot": True, "kvMounts": []}, True),
    ],
)
def test_vault_needs_something_to_back_up(vault: dict[str, Any], ok: bool) -> None:
    comps = {
        "vault": {
            "address": "https://v:8200",
            "auth": {"tokenSecret": {"name": "t", "key": "k"}},
            **vault,
        }
    }
    data = {**MINIMAL_POLICY, "components": comps}
    if ok:
        BackupPolicySpec.model_validate(data)
    else:
        with pytest.raises(ValidationError, match="raftSnapshot: true or at least one"):
            BackupPolicySpec.model_validate(data)


RESTORE_BASE: dict[str, Any] = {"decryptionKeySecret": {"name": "k", "key": "private.asc"}}


@pytest.mark.parametrize(
    ("extra", "error"),
    [
        ({"backupRef": {"name": "b1"}}, None),
        ({"source": {"policyRef": {"name": "p"}}}, None),
        ({}, "exactly one source"),
        ({"backupRef": {"name": "b1"}, "mode": "InPlace"}, "needs spec.confirm"),
        ({"backupRef": {"name": "b1"}, "mode": "InPlace", "dryRun": True}, None),
        ({"backupRef": {"name": "b1"}, "mode": "InPlace", "confirm": "b1"}, None),
        ({"backupRef": {"name": "b1"}, "mode": "InPlace", "confirm": "b2"}, "must equal"),
        ({"source": {"policyRef": {"name": "p"}}, "mode": "InPlace", "confirm": "x"}, None),
        ({"source": {}}, "exactly one of policyRef or s3"),
    ],
)
def test_restore_rules(extra: dict[str, Any], error: str | None) -> None:
    data = {**RESTORE_BASE, **extra}
    if error is None:
        spec = RestoreSpec.model_validate(data)
        assert spec.mode in (RestoreMode.DRILL, RestoreMode.IN_PLACE)
    else:
        with pytest.raises(ValidationError, match=error):
            RestoreSpec.model_validate(data)


def test_restore_defaults_to_a_drill() -> None:
    spec = RestoreSpec.model_validate({**RESTORE_BASE, "backupRef": {"name": "b"}})
    assert spec.mode == RestoreMode.DRILL
    assert spec.pre_restore_backup is True
    assert spec.validation.key_consistency is True
    assert spec.options.vault.overwrite_existing is False


def test_whole_objects_check_kind_and_version() -> None:
    obj = yaml.safe_load((EXAMPLES / "restore-drill.yaml").read_text())
    assert isinstance(parse_resource(obj), LamassuRestore)
    with pytest.raises(ValueError, match="unknown kind"):
        parse_resource({**obj, "kind": "Restore"})
    with pytest.raises(ValidationError):
        LamassuBackupPolicy.model_validate({**obj, "apiVersion": "backup.lamassu.io/v1"})


@pytest.mark.parametrize(
    ("selector", "query"),
    [
        ({"matchLabels": {"app": "ca", "tier": "pki"}}, "app=ca,tier=pki"),
        (
            {"matchExpressions": [{"key": "app", "operator": "In", "values": ["ca", "kms"]}]},
            "app in (ca,kms)",
        ),
        ({"matchExpressions": [{"key": "x", "operator": "DoesNotExist"}]}, "!x"),
    ],
)
def test_label_selector_query(selector: dict[str, Any], query: str) -> None:
    parsed = LabelSelector.model_validate(selector)
    assert parsed.to_query() == query
    assert not parsed.is_empty()
