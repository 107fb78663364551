"""What keeps the operator's API traffic and memory in proportion to a policy, not a namespace.

Found by the load run (issue 16): fifty policies in one namespace, each finished run made its
policy list every record of the namespace (retention), every Job event read its run twice and
re-read the policy, and every run re-created the runner's ServiceAccount, Role and RoleBinding.
A regression here shows as requests per run and operator memory growing with the namespace.
"""

from __future__ import annotations

import os
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any, cast

import yaml
from kubernetes import client

from lamassu_backup.builders import layout
from lamassu_backup.builders.jobs import LABEL_POLICY, job_ended
from lamassu_backup.clients.kube import KubeApi
from lamassu_backup.models.policy import BackupPolicySpec
from lamassu_backup.services import resources
from lamassu_backup.services import secrets as refs
from lamassu_backup.services.common import Settings
from lamassu_backup.services.runs import RunService, _still_active

EXAMPLE = Path(__file__).parents[2] / "examples" / "policy-standard.yaml"


def job(*conditions: tuple[str, str], deleting: bool = False) -> dict[str, Any]:
    meta: dict[str, Any] = {"name": "run-config", "namespace": "lamassu"}
    if deleting:
        meta["deletionTimestamp"] = "2026-12-01T12:00:00Z"
    return {
        "metadata": meta,
        "status": {"conditions": [{"type": t, "status": s} for t, s in conditions]},
    }


# -- Job events ---------------------------------------------------------------------------------


def test_only_a_job_that_ended_or_went_away_moves_its_run() -> None:
    assert job_ended(job(("Complete", "True")))
    assert job_ended(job(("FailureTarget", "True"), ("Failed", "True")))
    assert job_ended(job(), "DELETED")
    assert job_ended(job(deleting=True))
    # Running, Pod ready, or the success criteria met before the Pods are accounted for: the
    # Job has not ended, and the run's status would not change.
    assert not job_ended(job())
    assert not job_ended(job(("SuccessCriteriaMet", "True")))
    assert not job_ended(job(("Complete", "False")))
    assert not job_ended({"metadata": {}}, "MODIFIED")


# -- a policy's records ---------------------------------------------------------------------------


class Lister:
    """Answers LamassuBackup lists by label selector, as the apiserver does, and records them."""

    def __init__(self, items: list[dict[str, Any]]) -> None:
        self.items = items
        self.selectors: list[str | None] = []

    def list_custom(
        self, kind: str, namespace: str, selector: str | None = None
    ) -> list[dict[str, Any]]:
        assert kind == "LamassuBackup"
        self.selectors.append(selector)
        if not selector:
            return self.items
        key, _, value = selector.partition("=")
        return [b for b in self.items if (b["metadata"].get("labels") or {}).get(key) == value]


def record(name: str, policy: str, *, labelled: bool = True) -> dict[str, Any]:
    labels = {LABEL_POLICY: layout.label_value(policy)} if labelled else {}
    return {
        "apiVersion": "backup.lamassu.io/v1alpha1",
        "kind": "LamassuBackup",
        "metadata": {"name": name, "namespace": "lamassu", "labels": labels},
        "spec": {"policyRef": {"name": policy}},
    }


def test_a_policys_records_are_listed_by_its_label_and_checked_by_its_name() -> None:
    long_a = "a" * 70 + "-one"
    long_b = "a" * 70 + "-two"
    kube = Lister(
        [
            record("r1", "hourly"),
            record("r2", "daily"),
            record("r3", long_a),
            record("r4", long_b),
        ]
    )
    names = [
        r["metadata"]["name"]
        for r in resources.policy_records(cast(Any, kube), "lamassu", "hourly")
    ]
    assert names == ["r1"]
    assert kube.selectors == [f"{LABEL_POLICY}=hourly"]
    # A shortened label value is filtered again by spec.policyRef.name.
    names = [
        r["metadata"]["name"] for r in resources.policy_records(cast(Any, kube), "lamassu", long_a)
    ]
    assert names == ["r3"]


def test_a_record_without_its_policy_label_gets_it_once() -> None:
    bare = resources.parse_backup(record("r1", "hourly", labelled=False))
    assert resources.policy_label(bare) == {LABEL_POLICY: "hourly"}
    labelled = resources.parse_backup(record("r1", "hourly"))
    assert resources.policy_label(labelled) is None
    long_name = "p" * 80
    assert resources.policy_label(
        resources.parse_backup(record("r2", long_name, labelled=False))
    ) == {LABEL_POLICY: layout.label_value(long_name)}


# -- the runner's account -------------------------------------------------------------------------


class Creates:
    """Counts create calls; every object exists already (409), as on every run but the first."""

    def __init__(self) -> None:
        self.calls = 0

    def __getattr__(self, name: str) -> Any:
        def create(*_: Any, **__: Any) -> None:
            self.calls += 1
            raise client.ApiException(status=409, reason="AlreadyExists")

        return create


def test_the_runner_account_is_ensured_once_per_period_per_namespace() -> None:
    kube = KubeApi(client.ApiClient())
    counter = Creates()
    kube.core = cast(Any, counter)
    kube.rbac = cast(Any, counter)
    kube.ensure_runner_account("lamassu", "lamassu-backup-runner")
    assert counter.calls == 3  # ServiceAccount, Role, RoleBinding
    kube.ensure_runner_account("lamassu", "lamassu-backup-runner")
    assert counter.calls == 3
    kube.ensure_runner_account("other", "lamassu-backup-runner")
    assert counter.calls == 6
    kube._accounts = {k: v - 10_000 for k, v in kube._accounts.items()}  # the period is over
    kube.ensure_runner_account("lamassu", "lamassu-backup-runner")
    assert counter.calls == 9


# -- the S3 CA bundle -----------------------------------------------------------------------------


class SecretReads:
    def __init__(self, secrets: dict[str, dict[str, bytes]]) -> None:
        self.secrets = secrets

    def secret_data(self, namespace: str, name: str) -> dict[str, bytes] | None:
        return self.secrets.get(name)


CA_A = b"-----BEGIN CERTIFICATE-----\nAAAA\n-----END CERTIFICATE-----\n"
CA_B = b"-----BEGIN CERTIFICATE-----\nBBBB\n-----END CERTIFICATE-----\n"


def spec_with_ca() -> BackupPolicySpec:
    body = yaml.safe_load(EXAMPLE.read_text())["spec"]
    body["destination"]["s3"]["caSecret"] = {"name": "s3-ca", "key": "ca.crt"}
    return BackupPolicySpec.model_validate(body)


def test_the_s3_ca_bundle_is_one_file_per_content_and_the_client_is_reused() -> None:
    secrets = {"backup-s3": {"id": b"AKIDEXAMPLE", "secret": b"s3cr3t"}, "s3-ca": {"ca.crt": CA_A}}
    kube = cast(Any, SecretReads(secrets))
    spec = spec_with_ca()
    first = refs.operator_store(kube, "lamassu", spec)
    second = refs.operator_store(kube, "lamassu", spec)
    assert first is second  # one boto3 client, not one per call
    path = first.conn.ca_file
    assert path is not None
    assert Path(path).read_bytes() == CA_A
    secrets["s3-ca"]["ca.crt"] = CA_B  # the CA rotated: a new file, a new client
    third = refs.operator_store(kube, "lamassu", spec)
    assert third is not first
    assert third.conn.ca_file != path
    assert Path(str(third.conn.ca_file)).read_bytes() == CA_B
    assert Path(path).read_bytes() == CA_A  # the old bundle is never rewritten in place
    for p in (path, third.conn.ca_file):
        os.unlink(str(p))


# -- the resync of runs that have not ended ------------------------------------------------------


class Records:
    """LamassuBackups by name (no policy exists), and the status patches written."""

    def __init__(self, backups: dict[str, dict[str, Any]]) -> None:
        self.backups = backups
        self.patches: list[tuple[str, dict[str, Any]]] = []

    def get_custom(self, kind: str, namespace: str, name: str) -> dict[str, Any] | None:
        return self.backups.get(name) if kind == "LamassuBackup" else None

    def patch_status(self, kind: str, namespace: str, name: str, patch: dict[str, Any]) -> None:
        self.patches.append((name, patch))


def with_status(name: str, status: dict[str, Any] | None = None) -> dict[str, Any]:
    body = record(name, "hourly")
    body["metadata"]["creationTimestamp"] = "2026-12-01T12:00:00Z"
    if status:
        body["status"] = status
    return body


def test_only_runs_not_ended_are_resynced_and_only_once_quiet_for_the_period() -> None:
    clock = [1000.0]
    kube = Records(
        {
            "waiting": with_status("waiting"),  # Pending; its policy is not there yet
            "done": with_status("done", {"phase": "Completed"}),
        }
    )
    runs = RunService(cast(Any, kube), Settings(backup_resync_seconds=30), clock=lambda: clock[0])
    now = datetime(2026, 12, 1, 12, 1, tzinfo=UTC)
    for name in ("waiting", "done", "gone"):
        runs.reconcile("lamassu", name, now)
    assert runs.active("lamassu", "waiting")
    assert not runs.active("lamassu", "done")  # ended: its Jobs' events are not followed
    assert not runs.active("lamassu", "gone")  # deleted
    assert runs.due() == []  # just reconciled
    clock[0] += 31
    assert runs.due() == [("lamassu", "waiting")]
    runs.reconcile("lamassu", "waiting", now)
    assert runs.due() == []
    runs.forget("lamassu", "waiting")
    clock[0] += 31
    assert runs.due() == []


def test_a_run_is_followed_until_it_ends_and_while_its_drill_runs() -> None:
    running = resources.parse_backup(with_status("r", {"phase": "Running"}))
    assert _still_active(running, {})
    assert not _still_active(running, {"phase": "Failed"})
    drilling = resources.parse_backup(
        with_status("r", {"phase": "Completed", "verification": {"phase": "Running"}})
    )
    assert _still_active(drilling, {})
    assert not _still_active(drilling, {"verification": {"phase": "Verified"}})


# -- one Secret check for the loop and its runs ---------------------------------------------------


def test_a_run_skips_the_secret_reads_a_good_check_just_did() -> None:
    spec = yaml.safe_load(EXAMPLE.read_text())["spec"]
    policy_spec = BackupPolicySpec.model_validate(spec)
    referenced: dict[str, dict[str, bytes]] = {}
    for ref in refs.references(policy_spec) + refs.verification_references(policy_spec):
        referenced.setdefault(ref.secret, {})[ref.key] = b"x"
    checks = refs.SecretChecks(cast(Any, SecretReads(referenced)), period_seconds=300)
    now = datetime(2026, 12, 1, 12, 0, tzinfo=UTC)
    assert not checks.passed("lamassu", "hourly", 3, now)  # never checked: the run checks
    assert checks.check("lamassu", "hourly", 3, policy_spec, now) == (None, None)
    assert checks.passed("lamassu", "hourly", 3, now)
    assert not checks.passed("lamassu", "hourly", 4, now)  # another generation of the spec
    assert not checks.passed("lamassu", "hourly", 3, now + timedelta(seconds=301))
    checks.invalidate_secret("lamassu", sorted(referenced)[0])  # a Secret it reads changed
    assert not checks.passed("lamassu", "hourly", 3, now)
    missing = dict(referenced)
    missing.pop(refs.references(policy_spec)[0].secret)
    failing = refs.SecretChecks(cast(Any, SecretReads(missing)), period_seconds=300)
    error, _ = failing.check("lamassu", "hourly", 3, policy_spec, now)
    assert error is not None
    assert not failing.passed("lamassu", "hourly", 3, now)  # the run checks, and says which
