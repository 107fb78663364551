"""Hostile and careless input against the running operator (issue 10).

Each test here failed before its fix. The last one replays a broad set of wrong inputs, each
wrong in one way, and checks the product's promise for all of them at once: refused by the
apiserver with a message naming the field, or accepted and then reported by the operator with a
condition or Event naming the field; never a traceback, never a Job for an invalid spec, never
a run left Running without a reason.
"""

from __future__ import annotations

import copy
import hashlib
import json
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import pytest
from kubernetes.client.exceptions import ApiException

from lamassu_platform.stack import BUCKET, Platform

from .conftest import GROUP, VERSION, Cluster, Operator

pytestmark = [pytest.mark.platform, pytest.mark.e2e]

TERMINAL = ("Completed", "PartiallyFailed", "Failed")


def manifest_sha(platform: Platform, location: str) -> str:
    assert platform.s3 is not None
    key = location.split("/", 3)[3] + "manifest.json"
    body = platform.s3.client().get_object(Bucket=BUCKET, Key=key)["Body"].read()
    return hashlib.sha256(body).hexdigest()


def log_since(operator: Operator, offset: int) -> str:
    return operator.log.read_bytes()[offset:].decode(errors="replace")


def postgres_only(cluster: Cluster) -> dict[str, Any]:
    return {"postgres": cluster.platform.sample_policy()["spec"]["components"]["postgres"]}


def test_two_backups_in_the_same_second_get_two_sets(
    cluster: Cluster, operator: Operator, platform: Platform
) -> None:
    ns = cluster.namespace()
    cluster.policy(ns, "lamassu", components=postgres_only(cluster))
    cluster.backup(ns, "twin-a", "lamassu")
    cluster.backup(ns, "twin-b", "lamassu")
    a = cluster.wait_phase(ns, "twin-a", TERMINAL)["status"]
    b = cluster.wait_phase(ns, "twin-b", TERMINAL)["status"]
    assert a["phase"] == b["phase"] == "Completed", (a, b)
    assert a["location"] != b["location"]
    # Both records tell the truth about what the bucket holds.
    assert manifest_sha(platform, a["location"]) == a["manifest"]["sha256"]
    assert manifest_sha(platform, b["location"]) == b["manifest"]["sha256"]

    # A backup given the first one's scheduledTime gets its own folder, too.
    first_time = a["startedAt"]
    cluster.backup(ns, "copycat", "lamassu", scheduledTime=first_time)
    c = cluster.wait_phase(ns, "copycat", TERMINAL)["status"]
    assert c["phase"] == "Completed", c
    assert c["location"] not in (a["location"], b["location"])
    assert manifest_sha(platform, a["location"]) == a["manifest"]["sha256"]

    # Exactly one Started Event per run, even with a Job event racing the create handler.
    for name in ("twin-a", "twin-b", "copycat"):
        started = [e for e in cluster.events(ns, name) if e.reason == "Started"]
        assert sum(e.count or 1 for e in started) == 1, [e.message for e in started]


def test_a_record_whose_set_vanished_says_so(
    cluster: Cluster, operator: Operator, platform: Platform
) -> None:
    ns = cluster.namespace()
    cluster.policy(ns, "lamassu", components=postgres_only(cluster))
    cluster.backup(ns, "doomed", "lamassu")
    done = cluster.wait_phase(ns, "doomed", ("Completed",))
    assert platform.s3 is not None
    key = done["status"]["location"].split("/", 3)[3] + "manifest.json"
    platform.s3.client().delete_object(Bucket=BUCKET, Key=key)
    lost = cluster.wait_phase(ns, "doomed", ("Lost",), timeout=90)
    condition = cluster.condition(lost, "Completed")
    assert condition["reason"] == "SetMissing"
    assert "no longer in the bucket" in condition["message"]


def test_a_run_now_request_runs_once_even_when_a_later_step_fails(
    cluster: Cluster, operator: Operator
) -> None:
    """Before: an OverflowError after the run started lost the 'handled' mark, and a backup
    started every few seconds. Now the bound refuses the duration and a request runs once."""
    ns = cluster.namespace()
    body = cluster.platform.sample_policy("loop")
    body["metadata"]["namespace"] = ns
    body["metadata"]["annotations"] = {"backup.lamassu.io/run-now": "once"}
    body["spec"]["components"] = postgres_only(cluster)
    body["spec"]["components"]["postgres"]["recoveryPointObjective"] = "3000000d"
    with pytest.raises(ApiException) as refused:
        cluster.custom.create_namespaced_custom_object(
            GROUP, VERSION, ns, "lamassubackuppolicies", body
        )
    assert refused.value.status == 422
    assert "recoveryPointObjective" in str(refused.value.body)

    # Within the apiserver's bound but over the model's: accepted, reported, never run.
    body["spec"]["components"]["postgres"]["recoveryPointObjective"] = "40000d"
    cluster.custom.create_namespaced_custom_object(
        GROUP, VERSION, ns, "lamassubackuppolicies", body
    )
    ready = cluster.wait(
        "InvalidSpec",
        lambda: (
            (c := cluster.condition(cluster.get("lamassubackuppolicies", ns, "loop"), "Ready")).get(
                "reason"
            )
            == "InvalidSpec"
            and c
        ),
        timeout=30,
    )
    assert "recoveryPointObjective" in ready["message"]
    time.sleep(8)
    assert cluster.backups(ns, "loop") == []

    # A valid policy with the annotation: one run, however many ticks pass.
    body["metadata"]["name"] = "once"
    body["spec"]["components"]["postgres"]["recoveryPointObjective"] = "2h"
    cluster.custom.create_namespaced_custom_object(
        GROUP, VERSION, ns, "lamassubackuppolicies", body
    )
    first = cluster.wait("a run", lambda: cluster.backups(ns, "once"), timeout=30)
    cluster.wait_phase(ns, first[0]["metadata"]["name"], TERMINAL)
    time.sleep(12)  # several policy ticks (LAMASSU_POLICY_MAX_SLEEP_SECONDS=5)
    assert len(cluster.backups(ns, "once")) == 1


def test_a_long_policy_name_backs_up(cluster: Cluster, operator: Operator) -> None:
    ns = cluster.namespace()
    name = "lamassu-" + "production-" * 9 + "eu"  # 100 characters
    cluster.policy(ns, name, components=postgres_only(cluster))
    cluster.backup(ns, "long-name", name)
    done = cluster.wait_phase(ns, "long-name", TERMINAL)
    assert done["status"]["phase"] == "Completed", done["status"]


def test_a_job_that_cannot_make_its_pod_fails_the_run_with_the_reason(
    cluster: Cluster, operator: Operator
) -> None:
    ns = cluster.namespace()
    runner = {"serviceAccountName": "no-such-account"}
    cluster.policy(ns, "lamassu", components=postgres_only(cluster), runner=runner)
    started = time.monotonic()
    cluster.backup(ns, "stuck", "lamassu")
    failed = cluster.wait_phase(ns, "stuck", ("Failed",), timeout=90)
    assert time.monotonic() - started < 90
    postgres = failed["status"]["components"]["postgres"]
    assert postgres["reason"] == "FailedCreate"
    assert "no-such-account" in postgres["message"]


def test_junk_in_the_operator_s_own_annotations_does_not_stop_handling(
    cluster: Cluster, operator: Operator
) -> None:
    ns = cluster.namespace()
    cluster.policy(ns, "lamassu", components=postgres_only(cluster))
    body = {
        "apiVersion": f"{GROUP}/{VERSION}",
        "kind": "LamassuBackup",
        "metadata": {
            "name": "copied",
            "namespace": ns,
            "annotations": {
                f"{GROUP}/last-handled-configuration": "{not json",
                f"{GROUP}/backup_created": "5",
            },
        },
        "spec": {"policyRef": {"name": "lamassu"}},
    }
    cluster.custom.create_namespaced_custom_object(GROUP, VERSION, ns, "lamassubackups", body)
    done = cluster.wait_phase(ns, "copied", TERMINAL)
    assert done["status"]["phase"] == "Completed", done["status"]


# -- the broad replay --------------------------------------------------------------------


@dataclass
class Case:
    """One wrong input, and the field a person must be pointed at."""

    name: str
    plural: str
    field: str
    build: Callable[[dict[str, Any]], dict[str, Any]]


def _policy_case(name: str, field: str, mutate: Callable[[dict[str, Any]], None]) -> Case:
    def build(base: dict[str, Any]) -> dict[str, Any]:
        body: dict[str, Any] = copy.deepcopy(base["policy"])
        body["metadata"]["name"] = name
        mutate(body["spec"])
        return body

    return Case(name, "lamassubackuppolicies", field, build)


def _backup_case(name: str, field: str, spec: dict[str, Any]) -> Case:
    def build(base: dict[str, Any]) -> dict[str, Any]:
        return {
            "apiVersion": f"{GROUP}/{VERSION}",
            "kind": "LamassuBackup",
            "metadata": {"name": name},
            "spec": {"policyRef": {"name": "good"}, **spec},
        }

    return Case(name, "lamassubackups", field, build)


def _restore_case(name: str, field: str, spec: dict[str, Any]) -> Case:
    def build(base: dict[str, Any]) -> dict[str, Any]:
        return {
            "apiVersion": f"{GROUP}/{VERSION}",
            "kind": "LamassuRestore",
            "metadata": {"name": name},
            "spec": {
                "backupRef": {"name": "whatever"},
                "mode": "Drill",
                "decryptionKeySecret": {"name": "backup-gpg-private", "key": "private.asc"},
                **spec,
            },
        }

    return Case(name, "lamassurestores", field, build)


def _set(path: str, value: Any) -> Callable[[dict[str, Any]], None]:
    def mutate(spec: dict[str, Any]) -> None:
        node = spec
        parts = path.split(".")
        for part in parts[:-1]:
            node = node.setdefault(part, {})
        node[parts[-1]] = value

    return mutate


DURATION_FIELDS = [
    "jitter",
    "startingDeadline",
    "components.postgres.recoveryPointObjective",
    "retention.maxAge",
    "verification.maxAge",
    "runner.activeDeadline",
    "runner.ttlAfterFinished",
]
BAD_DURATIONS = ["99999999999d", "40000d", "-5m", "1.5h", "soon", "0s"]


def cases() -> list[Case]:
    out: list[Case] = []
    for i, path in enumerate(DURATION_FIELDS):
        leaf = path.rsplit(".", 1)[-1]
        for j, value in enumerate(BAD_DURATIONS):
            if value == "0s" and leaf not in ("activeDeadline", "ttlAfterFinished"):
                continue
            out.append(_policy_case(f"dur-{i}-{j}", leaf, _set(path, value)))
    out += [
        _policy_case("cron-61", "schedule", _set("schedule", "61 * * * *")),
        _policy_case("cron-6", "schedule", _set("schedule", "* * * * * *")),
        _policy_case("cron-feb30", "schedule", _set("schedule", "0 0 30 2 *")),
        _policy_case("cron-random", "schedule", _set("schedule", "H * * * *")),
        _policy_case("tz-mars", "timeZone", _set("timeZone", "Mars/Olympus")),
        _policy_case("keep-neg", "keepLast", _set("retention.keepLast", -1)),
        _policy_case("keep-str", "keepDaily", _set("retention.keepDaily", "thirty")),
        _policy_case("suspend-str", "suspend", _set("suspend", "yes")),
        _policy_case("db-inject", "databases", _set("components.postgres.databases", ["x; DROP"])),
        _policy_case("db-empty", "databases", _set("components.postgres.databases", [""])),
        _policy_case("port-big", "port", _set("components.postgres.port", 70000)),
        _policy_case("parallel-0", "parallel", _set("components.postgres.parallel", 0)),
        _policy_case("no-components", "components", _set("components", {})),
        _policy_case(
            "pg-secret-missing",
            "spec.components.postgres.credentialsSecret",
            _set("components.postgres.credentialsSecret", {"name": "nope"}),
        ),
        _policy_case(
            "s3-key-missing",
            "spec.destination.s3.credentialsSecret",
            _set("destination.s3.credentialsSecret.accessKeyIdKey", "nope"),
        ),
        _policy_case(
            "gpg-key-missing",
            "spec.encryption.gpg.recipientsSecret",
            _set("encryption.gpg.recipientsSecret", {"name": "backup-gpg-public", "key": "nope"}),
        ),
        _policy_case(
            "verify-key-missing",
            "spec.verification.decryptionKeySecret",
            _set("verification.decryptionKeySecret", {"name": "nope", "key": "private.asc"}),
        ),
        _policy_case("bucket-short", "bucket", _set("destination.s3.bucket", "ab")),
        _policy_case("sse-bad", "type", _set("destination.s3.serverSideEncryption.type", "rot13")),
        _policy_case("recent-0", "recentRunsLimit", _set("recentRunsLimit", 0)),
        _policy_case("uid-0", "runAsUser", _set("runner.runAsUser", 0)),
        _backup_case("bk-no-policy", "spec.policyRef.name", {"policyRef": {"name": "absent"}}),
        _backup_case("bk-bad-comp", "components", {"components": ["everything"]}),
        _backup_case("bk-unconfigured", "spec.components", {"components": ["awsKms"]}),
        _backup_case("bk-year-1", "scheduledTime", {"scheduledTime": "0001-01-01T00:00:00Z"}),
        _backup_case("bk-not-a-time", "scheduledTime", {"scheduledTime": "yesterday"}),
        _backup_case("bk-discovered", "trigger", {"trigger": "Discovered"}),
        _backup_case("bk-trigger", "trigger", {"trigger": "Whenever"}),
        _backup_case("bk-pinned-str", "pinned", {"pinned": "please"}),
        _restore_case(
            "rs-pit",
            "pointInTime",
            {
                "backupRef": None,
                "source": {"policyRef": {"name": "good"}, "pointInTime": "2026-13-45T99:99:99Z"},
            },
        ),
        _restore_case("rs-db-empty", "databases", {"databases": [""]}),
        _restore_case("rs-db-inject", "databases", {"databases": ["; DROP DATABASE ca"]}),
        _restore_case("rs-ns", "namespace", {"target": {"namespace": "Bad NS!"}}),
        _restore_case("rs-mode", "mode", {"mode": "Sideways"}),
        _restore_case("rs-comp", "components", {"components": ["everything"]}),
        _restore_case(
            "rs-confirm",
            "confirm",
            {"mode": "InPlace", "confirm": "not-the-backup", "backupRef": {"name": "whatever"}},
        ),
    ]
    return out


def _reported(cluster: Cluster, ns: str, case: Case) -> str | None:
    """The condition or Event text naming the field, once the operator has said it."""
    obj = cluster.get(case.plural, ns, case.name) or {}
    texts = [
        f"{c.get('reason')}: {c.get('message')}"
        for c in (obj.get("status") or {}).get("conditions") or []
        if c.get("status") != "True"
    ]
    texts += [f"{e.reason}: {e.message}" for e in cluster.events(ns, case.name)]
    for text in texts:
        if case.field in text:
            return text
    return None


def test_a_broad_replay_of_wrong_input(cluster: Cluster, operator: Operator) -> None:
    ns = cluster.namespace()
    offset = operator.log.stat().st_size
    good = cluster.platform.sample_policy("good")
    good["metadata"]["namespace"] = ns
    good["spec"]["schedule"] = "0 0 1 1 *"  # never due during the test
    cluster.custom.create_namespaced_custom_object(
        GROUP, VERSION, ns, "lamassubackuppolicies", good
    )
    base = {"policy": good}
    refused: dict[str, str] = {}
    accepted: list[Case] = []
    for case in cases():
        body = case.build(base)
        body["metadata"]["namespace"] = ns
        body = json.loads(json.dumps(body, default=str))
        if body["spec"].get("backupRef", "") is None:
            del body["spec"]["backupRef"]
        error: ApiException | None = None
        try:
            cluster.custom.create_namespaced_custom_object(GROUP, VERSION, ns, case.plural, body)
        except ApiException as exc:
            error = exc
        if error is None:
            accepted.append(case)
            continue
        assert error.status == 422, (case.name, error.status, error.body)
        message = json.loads(error.body)["message"]
        assert case.field in message, (case.name, message)
        refused[case.name] = message

    unreported = {c.name for c in accepted}
    deadline = time.monotonic() + 90
    while unreported and time.monotonic() < deadline:
        for case in accepted:
            if case.name in unreported and _reported(cluster, ns, case):
                unreported.discard(case.name)
        time.sleep(2)
    assert not unreported, f"accepted but never reported with the field named: {sorted(unreported)}"

    # No invalid spec got a Job; the only runs are the hand-made wrong backups, and none of
    # them is left Running without a reason.
    jobs = cluster.batch.list_namespaced_job(ns).items
    assert jobs == [], [j.metadata.name for j in jobs]
    for backup in cluster.backups(ns):
        phase = (backup.get("status") or {}).get("phase", "Pending")
        assert phase != "Running", backup["metadata"]["name"]
    log = log_since(operator, offset)
    assert "Traceback" not in log, log[log.find("Traceback") - 2000 :][:6000]
    assert operator.running
    total = len(refused) + len(accepted)
    print(
        f"\nwrong inputs: {total}; refused by the apiserver: {len(refused)}; "
        f"accepted and reported by the operator: {len(accepted)}"
    )
