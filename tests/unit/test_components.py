"""The component registry: every component is registered once, completely, and the shared
machinery reaches each one through it (a missing or half-registered component fails here)."""

from __future__ import annotations

import importlib
import importlib.util
from datetime import timedelta
from typing import Any

import pytest

from lamassu_backup.components import registry
from lamassu_backup.components.base import Component, RestoreRequest, SecretMounts, Step
from lamassu_backup.errors import ConfigurationError
from lamassu_backup.models.common import ComponentName
from lamassu_backup.models.policy import BackupPolicySpec, Components
from lamassu_backup.runner.backup.steps import step_of
from lamassu_backup.runner.restore.hooks import VerifyOnly, hooks_of
from lamassu_backup.services import secrets
from lamassu_backup.services.policies import rpo_of

EVERY_COMPONENT: dict[str, Any] = {
    "postgres": {
        "host": "db",
        "credentialsSecret": {"name": "pg"},
        "caSecret": {"name": "pg-ca", "key": "ca.crt"},
        "recoveryPointObjective": "3h",
    },
    "vault": {
        "address": "https://vault:8200",
        "auth": {
            "appRole": {
                "roleIdSecret": {"name": "ar", "key": "id"},
                "secretIdSecret": {"name": "ar", "key": "secret"},
            }
        },
        "keyStoreEngines": ["vault-1"],
        "recoveryPointObjective": "26h",
    },
    "config": {"recoveryPointObjective": "9d"},
    "volumes": [{"name": "kms-fs", "claimName": "kms-data", "keyStoreEngine": "filesystem-1"}],
    "volumesRecoveryPointObjective": "27h",
    "awsKms": {
        "region": "eu-west-1",
        "credentialsSecret": {"name": "aws", "accessKeyIdKey": "id", "secretAccessKeyKey": "k"},
        "recoveryPointObjective": "10d",
    },
}
POLICY: dict[str, Any] = {
    "components": EVERY_COMPONENT,
    "destination": {"s3": {"bucket": "lamassu-backups"}},
    "encryption": {"gpg": {"recipientsSecret": {"name": "gpg", "key": "r.asc"}}},
}


def _policy() -> BackupPolicySpec:
    return BackupPolicySpec.model_validate(POLICY)


def test_every_api_component_is_registered_once() -> None:
    assert sorted(registry.names()) == sorted(c.value for c in ComponentName)
    assert len(set(registry.names())) == len(registry.COMPONENTS)


@pytest.mark.parametrize("component", registry.COMPONENTS, ids=registry.names())
def test_a_registered_component_is_complete(component: Component) -> None:
    field = Components.model_fields[component.attr]
    assert (field.alias or component.attr) == component.name
    assert component.package == f"lamassu_backup.components.{component.attr}"
    step = importlib.import_module(f"{component.package}.backup").STEP
    assert callable(step)
    assert step_of(component.name) is step
    assert callable(hooks_of(component.name))
    importlib.import_module(f"{component.package}.spec")


def test_a_component_without_restore_hooks_is_verified_only(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    assert importlib.util.find_spec("lamassu_backup.components.postgres.restore") is not None
    # awsKms writes nothing back, but its metadata is the AWS KMS engine's key store.
    assert importlib.util.find_spec("lamassu_backup.components.aws_kms.restore") is not None
    aws = registry.get("awsKms")
    monkeypatch.setattr(aws, "package", "lamassu_backup.clients")  # a package without restore
    hooks = hooks_of("awsKms")(None)  # type: ignore[arg-type]
    assert isinstance(hooks, VerifyOnly)
    assert hooks.name == "awsKms"
    with pytest.raises(ConfigurationError, match="unknown component 'hsm'"):
        hooks_of("hsm")
    with pytest.raises(ConfigurationError, match="unknown component 'hsm'"):
        step_of("hsm")


def test_the_registry_order_is_the_order_a_policy_lists_its_components() -> None:
    assert [c.name for c in registry.configured(_policy().components)] == (
        _policy().components.names()
    )


def test_configured_respects_the_policy_and_the_subset() -> None:
    only_pg = BackupPolicySpec.model_validate(
        {**POLICY, "components": {"postgres": EVERY_COMPONENT["postgres"]}}
    )
    assert [c.name for c in registry.configured(only_pg.components)] == ["postgres"]
    assert [c.name for c in registry.configured(_policy().components, ["vault", "config"])] == [
        "vault",
        "config",
    ]


def test_unknown_component_names_the_known_ones() -> None:
    with pytest.raises(KeyError, match="known: postgres, vault"):
        registry.get("hsm")


def test_each_component_brings_its_own_objective() -> None:
    assert rpo_of(_policy()) == {
        "postgres": timedelta(hours=3),
        "vault": timedelta(hours=26),
        "volumes": timedelta(hours=27),
        "config": timedelta(days=9),
        "awsKms": timedelta(days=10),
    }


@pytest.mark.parametrize(
    ("component", "fields"),
    [
        (
            "postgres",
            {
                "spec.components.postgres.credentialsSecret.usernameKey",
                "spec.components.postgres.credentialsSecret.passwordKey",
                "spec.components.postgres.caSecret",
            },
        ),
        (
            "vault",
            {
                "spec.components.vault.auth.appRole.roleIdSecret",
                "spec.components.vault.auth.appRole.secretIdSecret",
            },
        ),
        ("config", set()),
        ("volumes", set()),
        (
            "awsKms",
            {
                "spec.components.awsKms.credentialsSecret.accessKeyIdKey",
                "spec.components.awsKms.credentialsSecret.secretAccessKeyKey",
            },
        ),
    ],
)
def test_each_component_names_its_secret_fields(component: str, fields: set[str]) -> None:
    own = {r.field for r in secrets.references(_policy(), [component])}
    shared = {r.field for r in secrets.references(_policy(), ["config"])}
    assert own - shared == fields
    assert "spec.encryption.gpg.recipientsSecret" in own


@pytest.mark.parametrize(
    ("component", "keys"),
    [
        ("postgres", {"postgres"}),
        ("vault", {"vault"}),
        ("config", {"config"}),
        ("volumes", {"volumes"}),
        ("awsKms", {"aws_kms"}),
    ],
)
def test_each_component_fills_its_own_runner_settings(component: str, keys: set[str]) -> None:
    settings = registry.get(component).runner_settings(
        SecretMounts(), _policy().components, "lamassu"
    )
    assert set(settings) == keys


def test_a_drill_restores_what_the_key_check_needs_and_nothing_live() -> None:
    policy = _policy()
    drilled = [c.name for c in registry.COMPONENTS if c.drilled(policy.components)]
    assert drilled == ["postgres", "vault", "volumes"]
    request = RestoreRequest(namespace="lamassu", policy=policy, components=drilled, drill=True)
    volumes = registry.get("volumes")
    assert volumes.restore_pod_volumes(request) == ([], [])
    settings = volumes.restore_settings(SecretMounts(), request)
    assert "volumes" not in settings
    assert [s.engine for s in settings["filesystem_key_stores"]] == ["filesystem-1"]


def test_an_in_place_restore_mounts_the_claims_writable_only_when_it_restores_them() -> None:
    volumes = registry.get("volumes")
    cases: list[tuple[list[str], Step, bool]] = [
        (["volumes"], "restore", False),
        (["volumes"], "plan", True),
        (["postgres"], "restore", True),
    ]
    for components, step, read_only in cases:
        request = RestoreRequest(
            namespace="lamassu", policy=_policy(), components=components, step=step
        )
        pod_volumes, mounts = volumes.restore_pod_volumes(request)
        assert [v["persistentVolumeClaim"]["readOnly"] for v in pod_volumes] == [read_only]
        assert [m["readOnly"] for m in mounts] == [read_only]
