"""Bodies parsed once into the models: a spec the models refuse is reported, never raised.

The handlers hand these typed objects to the services; an invalid spec must still reach the
service with its identity and status, so it can say which field is wrong (issue 10's promise).
"""

from __future__ import annotations

import copy
from pathlib import Path
from typing import Any

import pytest
import yaml
from pydantic import ValidationError

from lamassu_backup.models.resources import LamassuBackup, LamassuBackupPolicy
from lamassu_backup.services import resources

EXAMPLE = Path(__file__).resolve().parents[2] / "examples" / "policy-standard.yaml"


def policy_body(**spec: Any) -> dict[str, Any]:
    body: dict[str, Any] = yaml.safe_load(EXAMPLE.read_text())
    body["metadata"].update(namespace="ns", uid="u-1", generation=3)
    body["spec"].update(spec)
    return body


def test_a_valid_body_is_the_typed_resource_with_a_status() -> None:
    policy = resources.parse_policy(policy_body())
    assert isinstance(policy, LamassuBackupPolicy)
    assert (policy.namespace, policy.uid, policy.generation) == ("ns", "u-1", 3)
    assert policy.status is not None
    assert resources.stored(policy.status) == {}


def test_an_invalid_spec_is_reported_with_its_field() -> None:
    body = policy_body(timeZone="Mars/Olympus")
    body["status"] = {"observedGeneration": 2}
    policy = resources.parse_policy(body)
    assert isinstance(policy, resources.Invalid)
    assert policy.name == body["metadata"]["name"]
    assert policy.generation == 3
    assert policy.status.observed_generation == 2
    assert policy.message.startswith("spec.timeZone: ")
    assert "Mars/Olympus" in policy.message


def test_a_backup_s_policy_is_read_even_from_an_invalid_spec() -> None:
    body = {
        "metadata": {"name": "b", "namespace": "ns"},
        "spec": {"policyRef": {"name": "p"}, "components": ["everything"]},
    }
    invalid = resources.parse_backup(body)
    assert isinstance(invalid, resources.Invalid)
    assert resources.policy_of(invalid) == "p"
    valid = resources.parse_backup({**body, "spec": {"policyRef": {"name": "p"}}})
    assert isinstance(valid, LamassuBackup)
    assert resources.policy_of(valid) == "p"


def test_a_status_the_models_refuse_still_raises() -> None:
    body = copy.deepcopy(policy_body())
    body["status"] = {"lastScheduleTime": "junk"}
    with pytest.raises(ValidationError):
        resources.parse_policy(body)
