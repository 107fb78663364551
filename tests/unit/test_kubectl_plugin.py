"""kubectl lamassu, without an apiserver: choosing a set, building a restore, rendering, parsing."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from typing import Any

import pytest

from lamassu_backup import kubectl_plugin as kp
from lamassu_backup.models.common import SecretKeyRef
from lamassu_backup.models.resources import LamassuRestore, parse_resource
from lamassu_backup.models.restore import RestoreMode

NOW = datetime(2026, 12, 1, 9, 30, tzinfo=UTC)
KEY = SecretKeyRef(name="backup-gpg-private", key="private.asc")


def backup(
    name: str,
    set_time: str,
    *,
    policy: str = "lamassu",
    phase: str = "Completed",
    components: dict[str, str] | None = None,
    spec_components: list[str] | None = None,
    artifacts: list[dict[str, Any]] | None = None,
) -> dict[str, Any]:
    comps = components if components is not None else {"postgres": phase, "vault": phase}
    return {
        "metadata": {"name": name, "creationTimestamp": "2026-11-01T00:00:00Z"},
        "spec": {"policyRef": {"name": policy}, "components": spec_components or []},
        "status": {
            "phase": phase,
            "setTime": set_time,
            "location": f"s3://bucket/p/ns/{policy}/{set_time}/",
            "components": {c: {"phase": p} for c, p in comps.items()},
            "artifacts": artifacts or [],
        },
    }


def artifact(component: str, name: str, kind: str, size: int = 2048) -> dict[str, Any]:
    return {"component": component, "name": name, "kind": kind, "sizeBytes": size}


# -- time ------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("2026-11-24T10:00:00Z", datetime(2026, 11, 24, 10, tzinfo=UTC)),
        ("2026-11-24T12:00:00+02:00", datetime(2026, 11, 24, 10, tzinfo=UTC)),
        ("2026-11-24 10:00:00z", datetime(2026, 11, 24, 10, tzinfo=UTC)),
        ("20261124T100000Z", datetime(2026, 11, 24, 10, tzinfo=UTC)),
        ("20261124T100000Z-3f2a9c1b", datetime(2026, 11, 24, 10, tzinfo=UTC)),
    ],
)
def test_times_with_a_zone_are_read_as_utc(text: str, expected: datetime) -> None:
    assert kp.parse_time_arg(text) == expected


def test_a_time_without_a_zone_is_refused_naming_the_fix() -> None:
    with pytest.raises(kp.PluginError, match=r"no time zone; add one, e\.g\. 2026-11-24T10:00Z"):
        kp.parse_time_arg("2026-11-24T10:00")


@pytest.mark.parametrize("text", ["yesterday", "2026-11-24", "2026-13-40T99:00:00Z", ""])
def test_bad_times_are_refused(text: str) -> None:
    with pytest.raises(kp.PluginError, match="bad time"):
        kp.parse_time_arg(text)


def test_a_set_is_dated_by_its_folder_then_its_tick_then_its_creation() -> None:
    with_run_id = backup("a", "20261124T100000Z-3f2a9c1b")
    assert kp.set_moment(with_run_id) == datetime(2026, 11, 24, 10, tzinfo=UTC)
    ticked = backup("b", "")
    ticked["spec"]["scheduledTime"] = "2026-11-24T11:00:00Z"
    assert kp.set_moment(ticked) == datetime(2026, 11, 24, 11, tzinfo=UTC)
    created = backup("c", "")
    assert kp.set_moment(created) == datetime(2026, 11, 1, tzinfo=UTC)


# -- choosing a set --------------------------------------------------------------------------

SETS = [
    backup("lamassu-a", "20261124T080000Z"),
    backup("lamassu-b", "20261124T100000Z"),
    backup("lamassu-c", "20261124T110000Z", phase="Failed"),
    backup(
        "lamassu-d",
        "20261124T120000Z",
        components={"config": "Completed"},
        spec_components=["config"],
    ),
    backup("other-e", "20261124T130000Z", policy="other"),
    backup(
        "lamassu-f",
        "20261124T140000Z",
        phase="PartiallyFailed",
        components={"postgres": "Completed", "vault": "Failed"},
    ),
]
FULL = ["postgres", "vault"]


def chosen(at: str | None, need: list[str]) -> str | None:
    moment = kp.parse_time_arg(at) if at else None
    result = kp.choose_backup(SETS, policy="lamassu", at=moment, need=need)
    return None if result is None else str(result["metadata"]["name"])


def test_latest_is_the_newest_set_holding_what_the_restore_touches() -> None:
    # not the Failed one, not the config-only one, not the other policy's, not the partial one
    assert chosen(None, FULL) == "lamassu-b"


def test_at_is_inclusive_and_never_after() -> None:
    assert chosen("2026-11-24T10:00:00Z", FULL) == "lamassu-b"
    assert chosen("2026-11-24T09:59:59Z", FULL) == "lamassu-a"
    assert chosen("2026-11-24T07:59:59Z", FULL) is None


def test_a_component_subset_may_use_a_partial_or_a_config_only_set() -> None:
    assert chosen(None, ["postgres"]) == "lamassu-f"
    assert chosen(None, ["config"]) == "lamassu-d"
    assert chosen("2026-11-24T13:00:00Z", ["postgres"]) == "lamassu-b"
    assert chosen(None, ["volumes"]) is None


def test_without_the_policy_only_completed_runs_of_every_component_count() -> None:
    assert chosen(None, []) == "lamassu-b"


def test_a_set_without_a_location_is_never_chosen() -> None:
    unplaced = backup("lamassu-z", "20261130T000000Z")
    del unplaced["status"]["location"]
    assert kp.restorable_reason(unplaced, FULL) == "it records no location in the bucket"
    assert kp.choose_backup([*SETS, unplaced], policy="lamassu", at=None, need=FULL) is SETS[1]


def test_restorable_reason_names_what_is_wrong() -> None:
    assert kp.restorable_reason(SETS[1], []) is None
    assert "only a Completed set" in (kp.restorable_reason(SETS[2], []) or "")
    assert "PartiallyFailed and vault" in (kp.restorable_reason(SETS[5], ["vault"]) or "")
    assert kp.restorable_reason(SETS[5], ["postgres"]) is None
    assert "holds no volumes" in (kp.restorable_reason(SETS[1], ["volumes"]) or "")


def test_default_components_are_the_controllers() -> None:
    every = ["config", "volumes", "vault", "postgres"]
    assert kp.touched_components(RestoreMode.IN_PLACE, every) == [
        "postgres",
        "vault",
        "config",
        "volumes",
    ]
    assert kp.touched_components(RestoreMode.DRILL, every) == ["postgres", "vault", "volumes"]
    assert kp.touched_components(RestoreMode.DRILL, ["config"]) == []
    assert kp.touched_components(RestoreMode.IN_PLACE, every, ["config"]) == ["config"]


# -- building a restore ----------------------------------------------------------------------


def request(mode: RestoreMode, **kw: Any) -> kp.RestoreRequest:
    return kp.RestoreRequest(backup=SETS[1], mode=mode, decryption_key=KEY, **kw)


def test_an_in_place_restore_carries_confirm_and_passes_the_resource_model() -> None:
    req = request(
        RestoreMode.IN_PLACE,
        components=["postgres"],
        databases=["ca"],
        selector=kp.parse_selector("app.kubernetes.io/part-of=lamassu"),
        health_checks=["http://ca.lamassu.svc:8085/health"],
        requested="latest",
    )
    body = kp.restore_body(req, name="r1", namespace="lamassu")
    assert body["spec"] == {
        "backupRef": {"name": "lamassu-b"},
        "components": ["postgres"],
        "databases": ["ca"],
        "mode": "InPlace",
        "workloads": {"selector": {"matchLabels": {"app.kubernetes.io/part-of": "lamassu"}}},
        "preRestoreBackup": True,
        "confirm": "lamassu-b",
        "decryptionKeySecret": {"name": "backup-gpg-private", "key": "private.asc"},
        "validation": {"healthChecks": ["http://ca.lamassu.svc:8085/health"]},
    }
    assert body["metadata"]["labels"] == {"backup.lamassu.io/policy": "lamassu"}
    assert body["metadata"]["annotations"][kp.REQUESTED_ANNOTATION] == "latest"
    assert isinstance(parse_resource(body), LamassuRestore)


def test_a_policy_that_archives_wal_gets_a_point_in_time_restore() -> None:
    """--at on a WAL-archiving policy: postgres to that second from the archive, the chosen set
    for the rest, confirmed by its name; postgres alone confirms the policy (no set is read)."""
    wal = {"spec": {"components": {"postgres": {"walArchiving": {"enabled": True}}}}}
    assert kp.archives_wal(wal)
    assert not kp.archives_wal({"spec": {"components": {"postgres": {}}}})
    assert not kp.archives_wal(None)
    at = "2026-11-24T10:30:15Z"
    body = kp.restore_body(
        request(RestoreMode.IN_PLACE, point_in_time=at), name="r", namespace="lamassu"
    )["spec"]
    assert body["source"] == {"policyRef": {"name": "lamassu"}, "pointInTime": at}
    assert "backupRef" not in body
    assert body["confirm"] == "lamassu-b"
    alone = kp.restore_body(
        request(RestoreMode.IN_PLACE, point_in_time="latest", components=["postgres"]),
        name="r",
        namespace="lamassu",
    )
    assert alone["spec"]["confirm"] == "lamassu"
    assert alone["spec"]["source"]["pointInTime"] == "latest"
    assert isinstance(parse_resource(alone), LamassuRestore)
    described = kp._point_in_time(
        {
            "requested": at,
            "target": at,
            "archive": "s3://b/local/lamassu/lamassu/",
            "baseBackup": "20261124T100000Z",
            "walFiles": 7,
            "recoverableFrom": "2026-11-24T10:00:05Z",
            "recoverableUntil": "2026-11-24T10:31:00Z",
        }
    )
    assert described == (
        f"postgres to {at} from s3://b/local/lamassu/lamassu/; base backup 20261124T100000Z, "
        "7 WAL file(s); window 2026-11-24T10:00:05Z .. 2026-11-24T10:31:00Z"
    )
    assert kp._point_in_time(None) is None


def test_a_drill_and_a_dry_run_carry_no_confirm() -> None:
    drill = kp.restore_body(request(RestoreMode.DRILL), name="d", namespace="ns")["spec"]
    assert drill == {
        "backupRef": {"name": "lamassu-b"},
        "mode": "Drill",
        "decryptionKeySecret": {"name": "backup-gpg-private", "key": "private.asc"},
    }
    plan = kp.restore_body(request(RestoreMode.IN_PLACE, dry_run=True), name="p", namespace="ns")
    assert plan["spec"]["dryRun"] is True
    assert "confirm" not in plan["spec"]
    for body in (plan, kp.restore_body(request(RestoreMode.DRILL), name="d", namespace="ns")):
        assert isinstance(parse_resource(body), LamassuRestore)


def test_no_decryption_key_is_refused() -> None:
    req = kp.RestoreRequest(backup=SETS[1], mode=RestoreMode.DRILL)
    with pytest.raises(kp.PluginError, match="--decryption-key-secret SECRET:KEY"):
        kp.restore_body(req, name="x", namespace="ns")


def test_restore_names_say_what_they_are() -> None:
    assert kp.restore_name("lamassu-b", RestoreMode.DRILL, False, NOW) == (
        "lamassu-b-drill-20261201093000"
    )
    assert kp.restore_name("lamassu-b", RestoreMode.IN_PLACE, True, NOW).startswith(
        "lamassu-b-plan-"
    )
    assert kp.restore_name("x" * 300, RestoreMode.IN_PLACE, False, NOW).__len__() <= 63


def test_policy_secrets_default_from_its_verification() -> None:
    policy = {"spec": {"verification": {"decryptionKeySecret": {"name": "k", "key": "p.asc"}}}}
    assert kp.policy_secret(policy, "decryptionKeySecret") == SecretKeyRef(name="k", key="p.asc")
    assert kp.policy_secret(policy, "signerKeySecret") is None
    assert kp.policy_secret(None, "decryptionKeySecret") is None


# -- what an in-place restore overwrites, and its confirmation -------------------------------

WITH_ARTIFACTS = backup(
    "lamassu-b",
    "20261124T100000Z",
    components={"postgres": "Completed", "vault": "Completed", "config": "Completed"},
    artifacts=[
        artifact("config", "config", "config-archive"),
        artifact("vault", "lamassu-kms", "kv-export"),
        artifact("postgres", "kms", "pg-dump", 3 * 1024 * 1024),
        artifact("postgres", "ca", "pg-dump"),
    ],
)


def test_targets_are_in_restore_order_and_subsets_filter_them() -> None:
    every = ["config", "vault", "postgres"]
    assert kp.restore_targets(WITH_ARTIFACTS, RestoreMode.IN_PLACE, every, []) == [
        ("postgres", "ca", "pg-dump", "2.0 KiB"),
        ("postgres", "kms", "pg-dump", "3.0 MiB"),
        ("vault", "lamassu-kms", "kv-export", "2.0 KiB"),
        ("config", "config", "config-archive", "2.0 KiB"),
    ]
    # by default everything in the set, as the controller does; a drill leaves config out
    default = kp.restore_targets(WITH_ARTIFACTS, RestoreMode.IN_PLACE, [], [])
    assert [t[:2] for t in default] == [
        ("postgres", "ca"),
        ("postgres", "kms"),
        ("vault", "lamassu-kms"),
        ("config", "config"),
    ]
    drill = kp.restore_targets(WITH_ARTIFACTS, RestoreMode.DRILL, [], [])
    assert ("config", "config") not in [t[:2] for t in drill]
    only = kp.restore_targets(WITH_ARTIFACTS, RestoreMode.DRILL, ["postgres"], ["kms"])
    assert [t[1] for t in only] == ["kms"]


def test_subsets_the_set_does_not_hold_are_refused() -> None:
    with pytest.raises(kp.PluginError, match=r"holds no database devices \(it holds ca, kms\)"):
        kp.restore_targets(WITH_ARTIFACTS, RestoreMode.DRILL, [], ["devices"])
    with pytest.raises(kp.PluginError, match="holds no volumes artifacts"):
        kp.restore_targets(WITH_ARTIFACTS, RestoreMode.DRILL, ["volumes"], [])
    config_only = backup(
        "c",
        "20261124T100000Z",
        components={"config": "Completed"},
        artifacts=[artifact("config", "config", "config-archive")],
    )
    with pytest.raises(
        kp.PluginError, match="holds none of the components a Drill restore touches"
    ):
        kp.restore_targets(config_only, RestoreMode.DRILL, [], [])


def test_plan_summary_lists_every_overwrite_and_the_rails() -> None:
    req = kp.RestoreRequest(
        backup=WITH_ARTIFACTS,
        mode=RestoreMode.IN_PLACE,
        decryption_key=KEY,
        components=["config", "postgres", "vault"],
        selector=kp.parse_selector("app=lamassu"),
    )
    text = kp.plan_summary(req, namespace="lamassu", now=NOW)
    assert text.splitlines()[0] == "In-place restore of lamassu-b into namespace lamassu"
    assert "taken 2026-11-24T10:00:00Z (6d23h ago), size unknown, not verified" in text
    assert "    postgres  kms  (pg-dump, 3.0 MiB)" in text
    assert text.index("postgres  ca") < text.index("vault     lamassu-kms") < text.index("config")
    assert "scaled to zero first, then back: app=lamassu" in text
    assert "a full backup is taken first" in text
    bare = kp.RestoreRequest(
        backup=WITH_ARTIFACTS, mode=RestoreMode.IN_PLACE, pre_restore_backup=False
    )
    text = kp.plan_summary(bare, namespace="lamassu", now=NOW)
    assert "config  (config-archive, 2.0 KiB)" in text
    assert "none selected" in text
    assert "none (--no-pre-restore-backup)" in text


def never(_: str) -> str:
    raise AssertionError("must not prompt")


def test_confirm_flag_must_match_and_then_no_prompt() -> None:
    kp.confirm_in_place("lamassu-b", "lamassu-b", interactive=True, ask=never)
    with pytest.raises(kp.PluginError, match="does not match the backup lamassu-b"):
        kp.confirm_in_place("lamassu-b", "lamassu-a", interactive=True, ask=never)


def test_no_terminal_and_no_confirm_refuses_without_prompting() -> None:
    with pytest.raises(kp.PluginError, match=r"without a terminal.*--confirm lamassu-b"):
        kp.confirm_in_place("lamassu-b", None, interactive=False, ask=never)


def test_the_typed_name_must_match() -> None:
    prompts: list[str] = []

    def typed(answer: str) -> Any:
        def ask(prompt: str) -> str:
            prompts.append(prompt)
            return answer

        return ask

    kp.confirm_in_place("lamassu-b", None, interactive=True, ask=typed("lamassu-b\n"))
    assert prompts == ["Type the backup name (lamassu-b) to restore it in place: "]
    with pytest.raises(kp.PluginError, match="aborted: 'lamassu' is not lamassu-b"):
        kp.confirm_in_place("lamassu-b", None, interactive=True, ask=typed("lamassu"))


# -- rendering -------------------------------------------------------------------------------


def test_table_aligns_columns_three_spaces_apart_without_trailing_blanks() -> None:
    text = kp.table(("name", "phase"), [["a-long-name", "Completed"], ["b", None]], indent="  ")
    assert text.splitlines() == [
        "  NAME          PHASE",
        "  a-long-name   Completed",
        "  b",
    ]


def test_backup_rows_newest_set_first_with_size_and_verification() -> None:
    older = backup("lamassu-a", "20261124T080000Z")
    newer = backup("lamassu-b", "20261124T100000Z", phase="Failed")
    older["status"].update(sizeBytes=10 * 1024 * 1024, verification={"phase": "Verified"})
    newer["status"]["size"] = "1.2 GiB"
    rows = kp.backup_rows([older, newer], NOW)
    assert rows == [
        ["lamassu-b", "lamassu", "Manual", "Failed", "20261124T100000Z", "1.2 GiB", "", "30d9h"],
        [
            "lamassu-a",
            "lamassu",
            "Manual",
            "Completed",
            "20261124T080000Z",
            "10.0 MiB",
            "Verified",
            "30d9h",
        ],
    ]


POLICY: dict[str, Any] = {
    "metadata": {"name": "lamassu", "namespace": "lamassu"},
    "spec": {"schedule": "0 * * * *", "components": {"postgres": {"host": "pg"}, "vault": {}}},
    "status": {
        "nextScheduleTime": "2026-12-01T10:00:00Z",
        "lastSuccessfulTime": "2026-12-01T09:00:05Z",
        "components": {
            "postgres": {
                "lastSuccessfulTime": "2026-12-01T09:00:05Z",
                "recoveryPointObjective": "2h",
                "stale": False,
            },
        },
        "recentRuns": [{"name": "lamassu-20261201t090000z", "phase": "Completed"}],
        "conditions": [
            {"type": "Ready", "status": "True", "reason": "Valid"},
            {"type": "Stale", "status": "True", "reason": "ComponentStale"},
        ],
    },
}


def test_policy_summary_and_its_rendering() -> None:
    summary = kp.policy_summary(POLICY, NOW)
    # an empty (unset) component is not one the policy backs up
    assert [c["name"] for c in summary["components"]] == ["postgres"]
    text = kp.render_status([summary], NOW)
    lines = text.splitlines()
    assert lines[0] == "Policy lamassu (namespace lamassu)"
    assert "  Schedule:     0 * * * *, next run 2026-12-01T10:00:00Z (in 30m)" in lines
    assert "  Last success: 2026-12-01T09:00:05Z (29m55s ago)" in lines
    assert "  Last run:     lamassu-20261201t090000z Completed" in lines
    assert "  Stale:        True (ComponentStale)" in lines
    assert "  Verified:     Unknown" in lines
    assert lines[-2].split() == ["COMPONENT", "LAST", "SUCCESS", "AGE", "RPO", "STALE"]
    assert lines[-1].split() == ["postgres", "2026-12-01T09:00:05Z", "29m55s", "2h", "False"]


def test_a_configured_component_without_a_success_shows_never_and_stale() -> None:
    policy = {
        **POLICY,
        "spec": {**POLICY["spec"], "components": {"postgres": {"h": 1}, "vault": {"a": 1}}},
    }
    summary = kp.policy_summary(policy, NOW)
    vault = summary["components"][1]
    assert vault == {
        "name": "vault",
        "lastSuccessfulTime": None,
        "age": None,
        "recoveryPointObjective": None,
        "stale": True,
    }
    assert "  vault       never" in kp.render_status([summary], NOW)


def test_until_says_overdue_for_a_past_due_time() -> None:
    assert kp.until(NOW + timedelta(minutes=5), NOW) == "in 5m"
    assert kp.until(NOW - timedelta(minutes=5), NOW) == "5m overdue"


def test_describe_shows_plan_steps_evidence_conditions_and_unknown_fields() -> None:
    obj = {
        "metadata": {"name": "r1", "namespace": "lamassu"},
        "spec": {"backupRef": {"name": "lamassu-b"}, "mode": "InPlace", "dryRun": True},
        "status": {
            "phase": "Planned",
            "resolvedBackup": {"name": "lamassu-b", "location": "s3://b/p/"},
            "startedAt": "2026-12-01T09:20:00Z",
            "plan": [{"component": "postgres", "target": "ca", "action": "restore, swap"}],
            "steps": [{"name": "Planning", "phase": "Succeeded", "message": "1 item"}],
            "evidence": {"rowCounts": {"ca": {"certificates": 12}}},
            "conditions": [
                {"type": "Ready", "status": "True", "reason": "Planned", "message": "ok"}
            ],
            "warnings": 2,
            "components": {"vault": "Verified", "postgres": "Completed"},
            "futureField": "kept visible",
        },
    }
    text = kp.render_restore(obj, NOW)
    assert "Backup:             lamassu-b" in text
    assert "Location:           s3://b/p/" in text
    assert "Mode:               InPlace (dry run)" in text
    assert "Started:            2026-12-01T09:20:00Z (10m ago)" in text
    assert "  1   postgres    ca       restore, swap" in text
    assert "  Planning   Succeeded" in text
    assert "  rowCounts:\n    ca:\n      certificates: 12" in text
    assert "  Ready   True     Planned   ok" in text
    assert "Warnings, errors:   2, 0" in text
    assert "Results:\n  COMPONENT   RESULT\n  postgres    Completed\n  vault       Verified" in text
    assert text.endswith("Other status:\n  futureField: kept visible")


def test_describe_of_a_fresh_restore_by_policy() -> None:
    obj = {
        "metadata": {"name": "r2", "namespace": "ns"},
        "spec": {"source": {"policyRef": {"name": "lamassu"}, "pointInTime": "latest"}},
    }
    text = kp.render_restore(obj, NOW)
    assert "Backup:             lamassu at latest" in text
    assert "Mode:               Drill" in text
    assert text.count("(none yet)") == 3
    assert "(not planned yet)" in text


# -- parsing ---------------------------------------------------------------------------------


def test_lists_split_on_commas_and_repeat() -> None:
    assert kp.split_list(["ca,kms", " va ", "ca"]) == ["ca", "kms", "va"]
    assert kp.parse_components(["postgres,vault"]) == ["postgres", "vault"]
    with pytest.raises(kp.PluginError, match="unknown component database: use postgres"):
        kp.parse_components(["database"])


def test_secret_refs_and_selectors() -> None:
    assert kp.parse_secret_ref("k:p.asc", "--x") == SecretKeyRef(name="k", key="p.asc")
    with pytest.raises(kp.PluginError, match="SECRET:KEY"):
        kp.parse_secret_ref("k", "--x")
    assert kp.parse_selector("a=b,c==d").match_labels == {"a": "b", "c": "d"}
    for bad in ("a", "a!=b", "=b"):
        with pytest.raises(kp.PluginError, match="only key=value"):
            kp.parse_selector(bad)


@pytest.mark.parametrize(
    ("argv", "command", "extra"),
    [
        (["backup", "now", "lamassu", "-n", "ns"], kp.cmd_backup_now, {"namespace": "ns"}),
        (
            ["-n", "ns", "backups", "--policy", "p", "-o", "json"],
            kp.cmd_backups,
            {"output": "json"},
        ),
        (["restore", "describe", "r1"], kp.cmd_restore, {"backup": "describe", "name_arg": "r1"}),
        (
            ["restore", "--latest", "--policy", "p", "--mode", "InPlace"],
            kp.cmd_restore,
            {"mode": "InPlace"},
        ),
        (["drill", "lamassu", "--context", "c"], kp.cmd_drill, {"context": "c"}),
        (["status", "--kubeconfig", "/k"], kp.cmd_status, {"kubeconfig": "/k", "output": "table"}),
    ],
)
def test_every_command_parses_with_the_standard_flags_anywhere(
    argv: list[str], command: Any, extra: dict[str, Any]
) -> None:
    args = kp.build_parser().parse_args(argv)
    assert args.func is command
    for key, value in extra.items():
        assert getattr(args, key) == value


def test_a_bad_output_format_is_a_usage_error() -> None:
    with pytest.raises(SystemExit) as info:
        kp.build_parser().parse_args(["status", "-o", "wide"])
    assert info.value.code == 2


def test_run_now_is_the_annotation_the_operator_acts_on() -> None:
    from lamassu_backup.services.policies import RUN_NOW_ANNOTATION

    assert kp.RUN_NOW_ANNOTATION == RUN_NOW_ANNOTATION
