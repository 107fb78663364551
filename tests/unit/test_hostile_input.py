"""The defects hostile and careless input found (issue 10), each pinned by a pure test.

Every one of these failed before its fix: a huge duration raised OverflowError (tracebacks, a
run loop), two runs in one second shared a set folder, a long policy name produced label
values the apiserver refuses, a run-now request could start a run on every tick.
"""

from __future__ import annotations

import re
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest
import yaml
from pydantic import TypeAdapter, ValidationError

from lamassu_backup.builders import jobs, layout
from lamassu_backup.models.backup import BackupSpec, Trigger
from lamassu_backup.models.policy import BackupPolicySpec, RunnerSettings
from lamassu_backup.models.resources import LamassuBackup
from lamassu_backup.models.types import DURATION_CEL, MAX_DURATION, Duration
from lamassu_backup.services import common
from lamassu_backup.services.policies import run_now_name

EXAMPLE = Path(__file__).resolve().parents[2] / "examples" / "policy-standard.yaml"
DURATION = TypeAdapter(Duration)
# The apiserver's rule, as Python reads the same regular expression.
CEL_DURATION = re.compile(re.search(r"matches\('(.+)'\)", DURATION_CEL).group(1))  # type: ignore[union-attr]
LABEL_VALUE = re.compile(r"^(([A-Za-z0-9][-A-Za-z0-9_.]*)?[A-Za-z0-9])?$")


def policy(**overrides: Any) -> dict[str, Any]:
    spec: dict[str, Any] = yaml.safe_load(EXAMPLE.read_text())["spec"]
    spec.update(overrides)
    return spec


# -- durations ---------------------------------------------------------------------------


@pytest.mark.parametrize("text", ["99999999999d", "3000000d", "36501d", "999999999w", "5300w"])
def test_a_huge_duration_is_a_validation_error_not_an_overflow(text: str) -> None:
    with pytest.raises(ValidationError, match="longer than 100 years"):
        DURATION.validate_python(text)


def test_the_largest_duration_still_works_in_date_arithmetic() -> None:
    assert DURATION.validate_python("36500d") == MAX_DURATION
    now = datetime(2026, 12, 1, tzinfo=UTC)
    assert (now + MAX_DURATION).year == 2126
    assert (now - MAX_DURATION).year == 1926


@pytest.mark.parametrize("text", ["30s", "15m", "1h30m", "90d", "2w", "36500d", "1w2d3h4m"])
def test_the_apiserver_rule_accepts_what_people_write(text: str) -> None:
    assert CEL_DURATION.match(text)


@pytest.mark.parametrize(
    "text", ["99999999999d", "3000000d", "1h1h1h1h1h", "10y", "-5m", "1.5h", "", "5"]
)
def test_the_apiserver_rule_refuses_what_could_overflow(text: str) -> None:
    assert not CEL_DURATION.match(text)


def test_whatever_the_apiserver_rule_accepts_fits_in_a_date() -> None:
    """The largest value the rule lets through (four parts of the largest part) cannot overflow
    date arithmetic in the operator, so no input the apiserver accepts can crash it."""
    units = {"s": 1, "m": 60, "h": 3600, "d": 86400, "w": 604800}
    largest = 0
    for unit, size in units.items():
        digits = max(n for n in range(1, 20) if CEL_DURATION.match("9" * n + unit))
        assert not CEL_DURATION.match("9" * (digits + 1) + unit)
        largest = max(largest, int("9" * digits) * size)
        assert CEL_DURATION.match(("9" * digits + unit) * 4)
        assert not CEL_DURATION.match(("9" * digits + unit) * 5)
    worst = timedelta(seconds=4 * largest)
    now = datetime(2026, 12, 1, tzinfo=UTC)
    assert (now + worst).year < 9999
    assert (now - worst).year > 1


@pytest.mark.parametrize(
    ("field", "value"),
    [("jitter", "99999999999d"), ("startingDeadline", "40000d")],
)
def test_a_policy_with_a_huge_duration_is_invalid_not_a_crash(field: str, value: str) -> None:
    with pytest.raises(ValidationError) as err:
        BackupPolicySpec.model_validate(policy(**{field: value}))
    assert err.value.errors()[0]["loc"][0] == field


@pytest.mark.parametrize(
    ("field", "value", "why"),
    [
        ("activeDeadline", "0s", "activeDeadline must be at least 1m"),
        ("activeDeadline", "59s", "activeDeadline must be at least 1m"),
        ("ttlAfterFinished", "0s", "ttlAfterFinished must be at least 1m"),
        ("ttlAfterFinished", "0m30s", "ttlAfterFinished must be at least 1m"),
    ],
)
def test_runner_durations_too_short_to_work_are_refused(field: str, value: str, why: str) -> None:
    with pytest.raises(ValidationError, match=why):
        RunnerSettings.model_validate({field: value})


@pytest.mark.parametrize("value", ["1m", "60s", "100s", "2h"])
def test_runner_durations_of_a_minute_or_more_are_fine(value: str) -> None:
    assert RunnerSettings.model_validate({"activeDeadline": value, "ttlAfterFinished": value})


def test_the_minute_floor_in_cel_agrees_with_the_model() -> None:
    under = re.compile(r"^(0+[smhdw])*(0*[0-5]?[0-9]s)?$")
    for text in ["0s", "59s", "00s", "0h59s", "0m30s"]:
        assert under.match(text), text
        assert DURATION.validate_python(text) < timedelta(minutes=1)
    for text in ["60s", "1m", "100s", "1h", "1m0s"]:
        assert not under.match(text), text
        assert DURATION.validate_python(text) >= timedelta(minutes=1)


# -- backups -----------------------------------------------------------------------------


@pytest.mark.parametrize(
    "when", ["0001-01-01T00:00:00Z", "1999-12-31T23:59:59Z", "2100-01-01T00:00:00Z"]
)
def test_a_scheduled_time_outside_any_plausible_run_is_refused(when: str) -> None:
    with pytest.raises(ValidationError, match=r"spec\.scheduledTime must be a time between"):
        BackupSpec.model_validate({"policyRef": {"name": "p"}, "scheduledTime": when})


def test_a_hand_made_discovered_backup_is_refused() -> None:
    with pytest.raises(ValidationError, match="trigger Discovered is set by the operator"):
        BackupSpec.model_validate({"policyRef": {"name": "p"}, "trigger": "Discovered"})
    assert BackupSpec.model_validate(
        {"policyRef": {"name": "p"}, "trigger": "Discovered", "location": "s3://b/p/"}
    )


def body(uid: str, created: str = "2026-11-24T10:00:00Z", **spec: Any) -> dict[str, Any]:
    return {
        "metadata": {"name": "x", "namespace": "ns", "uid": uid, "creationTimestamp": created},
        "spec": {"policyRef": {"name": "p"}, **spec},
    }


def set_time_of(body: dict[str, Any]) -> str:
    """The service takes the typed run, as the handlers hand it."""
    return common.set_time_of(LamassuBackup.model_validate(body))


def test_two_runs_in_the_same_second_get_different_folders() -> None:
    first = set_time_of(body("3f2a9c1b-0000-4000-8000-000000000001"))
    second = set_time_of(body("77aa0c1d-0000-4000-8000-000000000002"))
    assert first != second
    assert first.startswith("20261124T100000Z-")
    assert layout.parse_set_time(first) == layout.parse_set_time(second)


def test_a_run_given_another_sets_scheduled_time_gets_its_own_folder() -> None:
    tick = "2026-11-24T10:00:00Z"
    scheduled = set_time_of(body("aaaa1111-0000", scheduledTime=tick))
    copycat = set_time_of(body("bbbb2222-0000", created="2026-11-24T11:00:00Z", scheduledTime=tick))
    assert scheduled != copycat
    assert layout.parse_set_time(scheduled) == layout.parse_set_time(copycat)


def test_a_run_keeps_the_folder_it_started_with() -> None:
    started = {**body("cccc3333"), "status": {"setTime": "20261124T100000Z"}}
    assert set_time_of(started) == "20261124T100000Z"


def test_set_folders_old_and_new_parse_and_junk_does_not() -> None:
    assert layout.is_set_folder("20261124T100000Z")
    assert layout.is_set_folder("20261124T100000Z-3f2a9c1b")
    for junk in ["20261124T100000", "2026-11-24", "20261124T100000Z-", "20261124T100000Z-ABC!"]:
        assert not layout.is_set_folder(junk)
    found = layout.parse_set_prefix("prod", "prod/ns/p/20261124T100000Z-3f2a9c1b/manifest.json")
    assert found == layout.SetPath("ns", "p", "20261124T100000Z-3f2a9c1b")


# -- names and labels --------------------------------------------------------------------

LONG = "a" * 40 + "." + "b" * 200  # a valid object name of 241 characters


@pytest.mark.parametrize("name", ["lamassu", "a" * 63, "a" * 64, LONG, "x.y.z", "a-" * 40 + "z"])
def test_label_values_are_always_valid_and_stable(name: str) -> None:
    value = layout.label_value(name)
    assert len(value) <= 63
    assert LABEL_VALUE.match(value)
    assert layout.label_value(name) == value
    if len(name) <= 63:
        assert value == name


def test_distinct_long_names_give_distinct_label_values() -> None:
    assert layout.label_value("a" * 70) != layout.label_value("a" * 71)


def test_every_label_of_a_long_policy_s_jobs_is_valid() -> None:
    spec = BackupPolicySpec.model_validate(policy())
    backup = layout.backup_name(LONG, "20261124t100000z")
    owner = jobs.Owner("backup.lamassu.io/v1alpha1", "LamassuBackup", backup, "uid-1")
    job = jobs.backup_job(
        spec,
        namespace="ns",
        policy_name=LONG,
        backup_name=backup,
        set_time="20261124T100000Z-3f2a9c1b",
        component="postgres",
        owner=owner,
    )
    assert len(job["metadata"]["name"]) <= 63
    for labels in (job["metadata"]["labels"], job["spec"]["template"]["metadata"]["labels"]):
        for key, value in labels.items():
            assert len(value) <= 63, (key, value)
            assert LABEL_VALUE.match(value), (key, value)
    # The Job watcher finds the run by its owner, since the label may be shortened.
    assert jobs.run_of(job) == backup
    record = jobs.backup_resource(
        namespace="ns", policy_name=LONG, name=backup, trigger=Trigger.MANUAL, components=[]
    )
    assert all(len(v) <= 63 for v in record["metadata"]["labels"].values())


# -- run now -----------------------------------------------------------------------------


def test_a_run_now_request_always_names_the_same_run() -> None:
    """The name, not a status field written later, makes a request run exactly once."""
    assert run_now_name("lamassu", "before-upgrade") == run_now_name("lamassu", "before-upgrade")
    assert run_now_name("lamassu", "1") != run_now_name("lamassu", "2")
    assert run_now_name("lamassu", "1") != run_now_name("other", "1")
    assert len(run_now_name(LONG, "1")) <= 253
