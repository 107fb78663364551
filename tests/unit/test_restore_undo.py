"""The restore's undo: which Jobs get the account that may write config, the undo journal's
name, and the pure parts of the KV and config undo."""

from __future__ import annotations

from typing import Any

import pytest

from lamassu_backup.builders.jobs import Owner
from lamassu_backup.builders.restore_jobs import (
    RESTORE_ACCOUNT,
    RUNNER_ACCOUNT,
    RestoreSource,
    account_namespaces,
    restore_job,
)
from lamassu_backup.components.config.restore import previous_body
from lamassu_backup.components.vault.restore import KvUndo
from lamassu_backup.models.policy import BackupPolicySpec
from lamassu_backup.models.restore import RestoreSpec
from lamassu_backup.models.runner import RestoreRunConfig

KEY = {"name": "backup-gpg-private", "key": "private.asc"}
POLICY = BackupPolicySpec.model_validate(
    {
        "components": {
            "postgres": {"host": "db", "credentialsSecret": {"name": "pg"}},
            "vault": {
                "address": "https://vault:8200",
                "auth": {"tokenSecret": {"name": "vt", "key": "token"}},
            },
        },
        "destination": {"s3": {"bucket": "bkt", "credentialsSecret": {"name": "s3"}}},
        "encryption": {"gpg": {"recipientsSecret": {"name": "gpg", "key": "recipients.asc"}}},
    }
)


def spec(**fields: Any) -> RestoreSpec:
    body: dict[str, Any] = {"backupRef": {"name": "b1"}, "decryptionKeySecret": KEY, **fields}
    return RestoreSpec.model_validate(body)


def in_place(**fields: Any) -> RestoreSpec:
    return spec(mode="InPlace", confirm="b1", **fields)


SOURCE = RestoreSource("s3://bkt/local/ns/lamassu/20261124T100000Z/", "b1", POLICY)


def job(restore_spec: RestoreSpec, step: Any) -> tuple[str, RestoreRunConfig]:
    manifest = restore_job(
        restore_spec,
        SOURCE,
        namespace="ns",
        restore="r1",
        step=step,
        components=["postgres", "vault", "config"],
        swap_suffix="20261124100000",
        owner=Owner("backup.lamassu.io/v1alpha1", "LamassuRestore", "r1", "uid"),
    )
    pod = manifest["spec"]["template"]["spec"]
    env = {e["name"]: e["value"] for e in pod["containers"][0]["env"]}
    return pod["serviceAccountName"], RestoreRunConfig.model_validate_json(
        env["LAMASSU_RESTORE_CONFIG"]
    )


@pytest.mark.parametrize("step", ["restore", "rollback", "finalize"])
def test_in_place_steps_that_change_live_state_write_with_the_restore_account(step: str) -> None:
    account, cfg = job(in_place(), step)
    assert account == RESTORE_ACCOUNT
    assert cfg.journal == "r1-undo"


def test_plans_and_drills_keep_the_read_only_account_and_no_journal() -> None:
    for restore_spec, step in ((in_place(), "plan"), (spec(mode="Drill"), "restore")):
        account, cfg = job(restore_spec, step)
        assert account == RUNNER_ACCOUNT
        assert cfg.journal is None


def test_the_restore_account_writes_only_where_the_restore_does() -> None:
    assert account_namespaces(in_place(), "ns") == ["ns"]
    other = in_place(target={"namespace": "lamassu"})
    assert account_namespaces(other, "ns") == ["lamassu", "ns"]


def test_the_kv_journal_holds_versions_and_never_data() -> None:
    undo = KvUndo("kv", versions={"a": (2, 2), "b": (0, None), "c": (3, None)})
    undo.previous["a"] = {"key": "c2VjcmV0"}
    doc = undo.journal()
    assert "c2VjcmV0" not in str(doc)
    back = KvUndo.from_journal("kv", doc)
    assert back.versions == undo.versions
    assert back.previous == {}


def test_putting_an_object_back_keeps_what_it_held_and_drops_server_fields() -> None:
    live = {
        "kind": "Secret",
        "apiVersion": "v1",
        "metadata": {
            "name": "tls",
            "namespace": "ns",
            "labels": {"a": "b"},
            "resourceVersion": "7",
            "uid": "u",
            "managedFields": [{}],
        },
        "type": "kubernetes.io/tls",
        "data": {"tls.crt": "eA=="},
    }
    assert previous_body(live) == {
        "apiVersion": "v1",
        "kind": "Secret",
        "metadata": {"name": "tls", "namespace": "ns", "labels": {"a": "b"}},
        "type": "kubernetes.io/tls",
        "data": {"tls.crt": "eA=="},
    }
