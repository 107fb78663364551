"""A fuzzed API: property-based wrong input against the real apiserver with the operator running.

Hypothesis draws policies, backups and restores that are wrong in the ways a person or a GitOps
tool makes them wrong (wrong types, missing and extra fields, bad cron, time zones and
durations, huge and negative numbers, unicode, long names, missing Secrets and keys, subsets
naming unknown components, a confirm that does not match). The resource models are the oracle:
what they refuse, the apiserver must refuse naming the field, or the operator must report in a
condition naming the field; what they accept must work. Never a traceback, a crash, or a Job.

Seeded and reproducible (``derandomize``); ``FUZZ_CASES`` sets the count (500 in CI; the long
mode, ``make fuzz-long``, runs more).
"""

from __future__ import annotations

import copy
import itertools
import json
import os
import time
from dataclasses import dataclass, field
from typing import Any

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from kubernetes.client.exceptions import ApiException
from pydantic import BaseModel, ValidationError

from lamassu_backup.models.backup import BackupSpec
from lamassu_backup.models.policy import BackupPolicySpec
from lamassu_backup.models.restore import RestoreSpec
from lamassu_platform import figures

from .conftest import GROUP, VERSION, Cluster, Operator

pytestmark = [pytest.mark.platform, pytest.mark.e2e]

CASES = int(os.environ.get("FUZZ_CASES", "500"))
PLURALS = {
    "LamassuBackupPolicy": "lamassubackuppolicies",
    "LamassuBackup": "lamassubackups",
    "LamassuRestore": "lamassurestores",
}

# Leaves of a policy a mutation may hit, with the kind of value each holds.
POLICY_LEAVES: dict[str, str] = {
    "schedule": "cron",
    "timeZone": "tz",
    "jitter": "duration",
    "startingDeadline": "duration",
    "concurrencyPolicy": "enum",
    "components.postgres.host": "str",
    "components.postgres.port": "int",
    "components.postgres.sslMode": "enum",
    "components.postgres.databases": "names",
    "components.postgres.parallel": "int",
    "components.postgres.recoveryPointObjective": "duration",
    "components.postgres.credentialsSecret.name": "ref",
    "components.vault.address": "str",
    "components.vault.kvMounts": "names",
    "components.vault.raftSnapshot": "bool",
    "components.vault.auth.tokenSecret.key": "refkey",
    "destination.s3.bucket": "str",
    "destination.s3.prefix": "str",
    "destination.s3.credentialsSecret.name": "ref",
    "destination.s3.serverSideEncryption.type": "enum",
    "encryption.gpg.recipientsSecret.name": "ref",
    "encryption.gpg.recipientsSecret.key": "refkey",
    "retention.keepLast": "int",
    "retention.keepDaily": "int",
    "retention.maxAge": "duration",
    "verification.schedule": "cron",
    "verification.maxAge": "duration",
    "verification.decryptionKeySecret.name": "ref",
    "runner.activeDeadline": "duration",
    "runner.ttlAfterFinished": "duration",
    "runner.backoffLimit": "int",
    "runner.runAsUser": "int",
    "recentRunsLimit": "int",
}
REQUIRED = [
    "components",
    "destination",
    "encryption",
    "components.postgres.host",
    "destination.s3.bucket",
    "encryption.gpg.recipientsSecret",
]
BACKUP_LEAVES = {
    "components": "components",
    "trigger": "enum",
    "scheduledTime": "time",
    "pinned": "bool",
    "policyRef.name": "ref",
}
RESTORE_LEAVES = {
    "components": "components",
    "databases": "names",
    "mode": "enum",
    "confirm": "str",
    "dryRun": "bool",
    "target.namespace": "str",
    "backupRef.name": "ref",
    "decryptionKeySecret.key": "refkey",
}

TEXT = st.text(min_size=0, max_size=12)
WEIRD_TEXT = st.one_of(
    TEXT,
    st.sampled_from(["", " ", "ü", "数据库", "a" * 300, "x; DROP DATABASE ca", "../etc", "\t\n"]),
)
HUGE = st.sampled_from([-1, -(2**31), 0, 2**31, 2**53, 10**12, 70000])
WRONG_TYPE: st.SearchStrategy[Any] = st.one_of(
    st.integers(-5, 5), st.booleans(), st.just([]), st.just({}), TEXT
)
BY_KIND: dict[str, st.SearchStrategy[Any]] = {
    "cron": st.one_of(
        st.sampled_from(
            [
                "61 * * * *",
                "* * * * * *",
                "0 0 30 2 *",
                "H * * * *",
                "@sometimes",
                "* * *",
                "0 0 * * 8",
                "*/0 * * * *",
            ]
        ),
        WEIRD_TEXT,
    ),
    "tz": st.one_of(st.sampled_from(["Mars/Olympus", "UTC+25", "etc/utc", "../../x"]), WEIRD_TEXT),
    "duration": st.one_of(
        st.sampled_from(
            [
                "99999999999d",
                "40000d",
                "-5m",
                "1.5h",
                "0s",
                "1y",
                "59s",
                "36501d",
                "9999w9999w9999w9999w",
                "1h1h1h1h1h",
            ]
        ),
        st.integers(-10, 10**10).map(lambda n: f"{n}d"),
        WEIRD_TEXT,
    ),
    "enum": st.one_of(st.sampled_from(["forbid", "Sometimes", "none ", "aws:kms2"]), WEIRD_TEXT),
    "str": WEIRD_TEXT,
    "int": st.one_of(HUGE, st.integers(-1000, 1000)),
    "bool": st.one_of(st.sampled_from(["yes", "true", 1, 0, None]), TEXT),
    "names": st.lists(WEIRD_TEXT, max_size=3),
    "ref": st.one_of(st.just("no-such-secret"), WEIRD_TEXT),
    "refkey": st.one_of(st.just("no-such-key"), WEIRD_TEXT),
    "components": st.lists(
        st.sampled_from(["postgres", "vault", "config", "volumes", "awsKms", "everything", ""]),
        max_size=3,
    ),
    "time": st.sampled_from(
        [
            "0001-01-01T00:00:00Z",
            "yesterday",
            "2026-13-45T99:99:99Z",
            "9999-12-31T23:59:59Z",
            "2026-11-24T10:00:00",
        ]
    ),
}


@dataclass
class Draw:
    """One wrong object: what was changed, and the object sent."""

    kind: str
    name: str
    change: str
    field: str
    """The field a person must be pointed at (its last path element)."""

    body: dict[str, Any]


@dataclass
class Tally:
    refused: int = 0
    accepted_invalid: list[Draw] = field(default_factory=list)
    accepted_valid: list[Draw] = field(default_factory=list)


def _set(node: dict[str, Any], path: str, value: Any) -> None:
    parts = path.split(".")
    for part in parts[:-1]:
        child = node.get(part)
        if not isinstance(child, dict):
            child = node[part] = {}
        node = child
    node[parts[-1]] = value


def _delete(node: dict[str, Any], path: str) -> None:
    parts = path.split(".")
    for part in parts[:-1]:
        node = node.get(part) or {}
    node.pop(parts[-1], None)


@st.composite
def mutation(draw: st.DrawFn, leaves: dict[str, str]) -> tuple[str, str, Any]:
    """(path, how, value): a leaf set to a wrong value of its kind, or of the wrong type."""
    path = draw(st.sampled_from(sorted(leaves)))
    how = draw(st.sampled_from(["kind", "kind", "type", "unknown", "missing"]))
    if how == "kind":
        return path, how, draw(BY_KIND[leaves[path]])
    if how == "type":
        return path, how, draw(WRONG_TYPE)
    if how == "unknown":
        return path.rsplit(".", 1)[0] + ".surpriseField" if "." in path else "surpriseField", how, 1
    return path, how, None


class Fuzzer:
    """Builds wrong objects from the platform's valid ones and sends them."""

    counter = itertools.count()

    def __init__(self, cluster: Cluster, ns: str) -> None:
        self.cluster = cluster
        self.ns = ns
        policy = cluster.platform.sample_policy("base")
        policy["metadata"]["namespace"] = ns
        policy["spec"]["suspend"] = True  # nothing runs, whatever the fuzz makes valid
        self.policy = policy
        self.tally = Tally()

    def base(self, kind: str, name: str) -> dict[str, Any]:
        if kind == "LamassuBackupPolicy":
            body = copy.deepcopy(self.policy)
            body["metadata"]["name"] = name
            return body
        spec: dict[str, Any]
        if kind == "LamassuBackup":
            # A policy that does not exist: a valid backup waits for it, so nothing ever runs.
            spec = {"policyRef": {"name": "fuzz-no-policy"}, "components": ["postgres"]}
        else:
            spec = {
                "backupRef": {"name": "fuzz-no-backup"},
                "mode": "Drill",
                "decryptionKeySecret": {"name": "backup-gpg-private", "key": "private.asc"},
            }
        return {
            "apiVersion": f"{GROUP}/{VERSION}",
            "kind": kind,
            "metadata": {"name": name, "namespace": self.ns},
            "spec": spec,
        }

    def make(self, kind: str, change: tuple[str, str, Any], long_name: bool) -> Draw:
        n = next(self.counter)
        name = f"fz{n}-" + ("n" * 250 if long_name else "x")
        body = self.base(kind, name[:253] if long_name else name)
        path, how, value = change
        if how == "missing":
            _delete(body["spec"], path)
        else:
            _set(body["spec"], path, value)
        leaf = path.rsplit(".", 1)[-1]
        return Draw(kind, body["metadata"]["name"], f"{how} {path}={value!r}"[:200], leaf, body)

    def model_error(self, draw: Draw) -> str | None:
        """What the models say is wrong (the operator's view), or None if the spec is valid."""
        models: dict[str, type[BaseModel]] = {
            "LamassuBackupPolicy": BackupPolicySpec,
            "LamassuBackup": BackupSpec,
            "LamassuRestore": RestoreSpec,
        }
        model = models[draw.kind]
        try:
            model.model_validate(draw.body["spec"])
        except ValidationError as exc:
            return str(exc)
        return None

    def send(self, draw: Draw) -> None:
        error: ApiException | None = None
        body = json.loads(json.dumps(draw.body, default=str))
        try:
            # The oracle judges the object as stored: the apiserver prunes nulls and applies
            # defaults, so what it keeps may be valid though what was sent was not.
            draw.body = self.cluster.custom.create_namespaced_custom_object(
                GROUP, VERSION, self.ns, PLURALS[draw.kind], body, field_validation="Strict"
            )
        except ApiException as exc:
            error = exc
        if error is not None:
            assert error.status in (400, 422), (draw.change, error.status, error.body)
            message = json.loads(error.body)["message"]
            named = draw.field in message or draw.field == "name"
            assert named, (draw.change, message)
            self.tally.refused += 1
            return
        if self.model_error(draw) is not None:
            self.tally.accepted_invalid.append(draw)
        else:
            self.tally.accepted_valid.append(draw)


def drawn_objects() -> st.SearchStrategy[tuple[str, tuple[str, str, Any], bool]]:
    return st.one_of(
        st.tuples(st.just("LamassuBackupPolicy"), mutation(POLICY_LEAVES), st.booleans()),
        st.tuples(
            st.just("LamassuBackupPolicy"),
            st.tuples(st.sampled_from(REQUIRED), st.just("missing"), st.none()),
            st.just(False),
        ),
        st.tuples(st.just("LamassuBackup"), mutation(BACKUP_LEAVES), st.just(False)),
        st.tuples(st.just("LamassuRestore"), mutation(RESTORE_LEAVES), st.just(False)),
    )


def _texts(cluster: Cluster, ns: str, kind: str, name: str) -> list[str]:
    obj = cluster.get(PLURALS[kind], ns, name) or {}
    texts = [
        f"{c.get('type')}={c.get('status')} {c.get('reason')}: {c.get('message')}"
        for c in (obj.get("status") or {}).get("conditions") or []
    ]
    return texts + [f"{e.reason}: {e.message}" for e in cluster.events(ns, name)]


def _settled(cluster: Cluster, ns: str, draw: Draw, valid: bool) -> bool:
    texts = _texts(cluster, ns, draw.kind, draw.name)
    if not valid:
        return any(draw.field in t for t in texts)
    if draw.kind == "LamassuBackupPolicy":
        # Valid: Ready, or not Ready because a referenced Secret (or key) does not exist.
        return any(t.startswith("Ready=True") for t in texts) or any(
            "SecretNotFound" in t or "SecretKeyNotFound" in t for t in texts
        )
    # Valid backups wait for a policy that does not exist, valid restores for a backup that
    # does not exist: either way the operator must say which reference is missing.
    return any("fuzz-no-policy" in t or "fuzz-no-backup" in t for t in texts) or any(
        draw.field in t for t in texts
    )


def test_fuzzed_input_is_refused_or_reported(cluster: Cluster, operator: Operator) -> None:
    ns = cluster.namespace()
    offset = operator.log.stat().st_size
    fuzzer = Fuzzer(cluster, ns)

    @settings(
        max_examples=CASES,
        derandomize=True,
        database=None,
        deadline=None,
        suppress_health_check=list(HealthCheck),
    )
    @given(drawn_objects())
    def send_one(drawn: tuple[str, tuple[str, str, Any], bool]) -> None:
        kind, change, long_name = drawn
        fuzzer.send(fuzzer.make(kind, change, long_name))

    send_one()
    tally = fuzzer.tally
    pending = [(d, False) for d in tally.accepted_invalid] + [
        (d, True) for d in tally.accepted_valid
    ]
    deadline = time.monotonic() + 180
    while pending and time.monotonic() < deadline:
        pending = [(d, v) for d, v in pending if not _settled(cluster, ns, d, v)]
        if pending:
            time.sleep(3)
    detail = [
        (d.name[:40], d.change, _texts(cluster, ns, d.kind, d.name)[:3]) for d, _ in pending[:10]
    ]
    assert not pending, f"{len(pending)} accepted objects never reported as expected: {detail}"

    jobs = cluster.batch.list_namespaced_job(ns).items
    assert jobs == [], [j.metadata.name for j in jobs]
    log = operator.log.read_bytes()[offset:].decode(errors="replace")
    assert "Traceback" not in log, log[log.find("Traceback") - 1500 :][:5000]
    assert operator.running
    total = tally.refused + len(tally.accepted_invalid) + len(tally.accepted_valid)
    figures.record(
        "fuzz",
        f"{total} cases; refused by the apiserver {tally.refused}; accepted and reported "
        f"by the operator {len(tally.accepted_invalid)}; valid and handled "
        f"{len(tally.accepted_valid)}; crashes 0",
    )
    cluster.core.delete_namespace(ns)
