"""Job manifests are pure functions of the resources: names, security, Secrets as files."""

from __future__ import annotations

import json
from datetime import UTC, datetime
from typing import Any

import pytest

from lamassu_backup.builders import jobs
from lamassu_backup.builders import restore_plan as rp
from lamassu_backup.builders.restore_jobs import RestoreSource, restore_job
from lamassu_backup.models.backup import Trigger
from lamassu_backup.models.policy import BackupPolicySpec
from lamassu_backup.models.resources import LamassuRestore, parse_resource
from lamassu_backup.models.restore import RestoreSpec
from lamassu_backup.models.runner import CONFIG_ENV, SECRETS_ROOT, RestoreRunConfig, RunnerConfig

POLICY: dict[str, Any] = {
    "components": {
        "postgres": {
            "host": "db",
            "credentialsSecret": {"name": "pg", "usernameKey": "user", "passwordKey": "pass"},
        },
        "vault": {
            "address": "https://vault:8200",
            "caSecret": {"name": "vault-ca", "key": "ca.crt"},
            "auth": {"tokenSecret": {"name": "vault-token", "key": "token"}},
        },
        "config": {"selector": {"matchLabels": {"app.kubernetes.io/part-of": "lamassu"}}},
        "volumes": [
            {"name": "kms-fs", "claimName": "golang-engine-storage-kms-0", "subPath": "keys"}
        ],
    },
    "destination": {
        "s3": {
            "bucket": "lamassu-backups",
            "prefix": "prod",
            "credentialsSecret": {
                "name": "s3",
                "accessKeyIdKey": "id",
                "secretAccessKeyKey": "secret",
            },
            "serverSideEncryption": {"type": "aws:kms", "kmsKeyId": "arn:k"},
        }
    },
    "encryption": {
        "gpg": {
            "recipientsSecret": {"name": "gpg-pub", "key": "r.asc"},
            "signingKeySecret": {"name": "gpg-sign", "key": "s.asc"},
        }
    },
    "verification": {
        "schedule": "0 3 * * 0",
        "decryptionKeySecret": {"name": "gpg-priv", "key": "p.asc"},
    },
    "runner": {"activeDeadline": "1h", "backoffLimit": 2, "nodeSelector": {"pool": "backup"}},
}
OWNER = jobs.Owner(
    "backup.lamassu.io/v1alpha1", "LamassuBackup", "lamassu-20261124t100000z", "uid-1"
)


def build(component: str, node: str | None = None) -> dict[str, Any]:
    return jobs.backup_job(
        BackupPolicySpec.model_validate(POLICY),
        namespace="lamassu",
        policy_name="lamassu",
        backup_name="lamassu-20261124t100000z",
        set_time="20261124T100000Z",
        component=component,
        owner=OWNER,
        node=node,
    )


def config_of(job: dict[str, Any], env: str = CONFIG_ENV) -> dict[str, Any]:
    container = job["spec"]["template"]["spec"]["containers"][0]
    value = next(e["value"] for e in container["env"] if e["name"] == env)
    data: dict[str, Any] = json.loads(value)
    return data


def mounted_files(job: dict[str, Any]) -> dict[str, tuple[str, str]]:
    """path in the container -> (secret, key)."""
    out = {}
    for volume in job["spec"]["template"]["spec"]["volumes"]:
        secret = volume.get("secret")
        if secret:
            for item in secret["items"]:
                out[f"{SECRETS_ROOT}/{secret['secretName']}/{item['path']}"] = (
                    secret["secretName"],
                    item["key"],
                )
    return out


@pytest.mark.parametrize("component", ["postgres", "vault", "config", "volumes"])
def test_names_labels_and_owner(component: str) -> None:
    job = build(component)
    assert job["metadata"]["name"] == f"lamassu-20261124t100000z-{component}"
    assert job == build(component), "the builder must be deterministic"
    labels = job["metadata"]["labels"]
    assert labels["backup.lamassu.io/backup"] == "lamassu-20261124t100000z"
    assert labels["backup.lamassu.io/component"] == component
    assert job["metadata"]["ownerReferences"][0]["uid"] == "uid-1"
    assert job["metadata"]["ownerReferences"][0]["controller"] is True
    assert job["spec"]["backoffLimit"] == 2
    assert job["spec"]["activeDeadlineSeconds"] == 3600
    assert job["spec"]["template"]["spec"]["restartPolicy"] == "Never"
    assert job["spec"]["template"]["spec"]["nodeSelector"] == {"pool": "backup"}


def test_restricted_security_context() -> None:
    pod = build("postgres")["spec"]["template"]["spec"]
    assert pod["securityContext"]["runAsNonRoot"] is True
    assert pod["securityContext"]["seccompProfile"] == {"type": "RuntimeDefault"}
    container = pod["containers"][0]["securityContext"]
    assert container == {
        "allowPrivilegeEscalation": False,
        "readOnlyRootFilesystem": True,
        "capabilities": {"drop": ["ALL"]},
        "privileged": False,
    }
    scratch = next(v for v in pod["volumes"] if v["name"] == "scratch")
    assert scratch["emptyDir"] == {"medium": "Memory", "sizeLimit": "64Mi"}


def test_scratch_volume_size_and_medium_come_from_the_policy() -> None:
    spec = {
        **POLICY,
        "runner": {**POLICY["runner"], "scratch": {"sizeLimit": "8Gi", "medium": "Disk"}},
    }
    job = jobs.backup_job(
        BackupPolicySpec.model_validate(spec),
        namespace="lamassu",
        policy_name="lamassu",
        backup_name="lamassu-20261124t100000z",
        set_time="20261124T100000Z",
        component="postgres",
        owner=OWNER,
    )
    pod = job["spec"]["template"]["spec"]
    scratch = next(v for v in pod["volumes"] if v["name"] == "scratch")
    assert scratch["emptyDir"] == {"sizeLimit": "8Gi"}


def test_every_credential_is_a_mounted_secret_file() -> None:
    job = build("postgres")
    cfg = RunnerConfig.model_validate(config_of(job))
    files = mounted_files(job)
    assert cfg.postgres is not None
    assert files[cfg.postgres.username_file] == ("pg", "user")
    assert files[cfg.postgres.password_file] == ("pg", "pass")
    assert cfg.destination.access_key_id_file is not None
    assert files[cfg.destination.access_key_id_file] == ("s3", "id")
    assert files[cfg.gpg.recipients_file] == ("gpg-pub", "r.asc")
    # Only what this component needs: no Vault token in the postgres Job.
    assert all(secret != "vault-token" for secret, _ in files.values())
    assert cfg.components == ["postgres"]
    assert cfg.set_prefix == "prod/lamassu/lamassu/20261124T100000Z/"
    assert cfg.destination.kms_key_id == "arn:k"


def test_vault_job_mounts_token_and_ca() -> None:
    job = build("vault")
    cfg = RunnerConfig.model_validate(config_of(job))
    files = mounted_files(job)
    assert cfg.vault is not None
    assert cfg.vault.token_file is not None
    assert files[cfg.vault.token_file] == ("vault-token", "token")
    assert cfg.vault.ca_file is not None
    assert files[cfg.vault.ca_file] == ("vault-ca", "ca.crt")


def test_config_job_carries_the_selector() -> None:
    cfg = RunnerConfig.model_validate(config_of(build("config")))
    assert cfg.config is not None
    assert cfg.config.selector == "app.kubernetes.io/part-of=lamassu"
    assert cfg.config.namespace == "lamassu"


def test_volumes_job_mounts_the_claim_read_only() -> None:
    job = build("volumes")
    pod = job["spec"]["template"]["spec"]
    claim = next(v for v in pod["volumes"] if "persistentVolumeClaim" in v)
    assert claim["persistentVolumeClaim"] == {
        "claimName": "golang-engine-storage-kms-0",
        "readOnly": True,
    }
    mount = next(m for m in pod["containers"][0]["volumeMounts"] if m["name"] == claim["name"])
    assert mount["readOnly"] is True
    assert mount["subPath"] == "keys"
    cfg = RunnerConfig.model_validate(config_of(job))
    assert cfg.volumes[0].path == mount["mountPath"]


def test_volumes_job_is_pinned_to_the_node_holding_its_claims() -> None:
    pod = build("volumes", node="worker-2")["spec"]["template"]["spec"]
    terms = pod["affinity"]["nodeAffinity"]["requiredDuringSchedulingIgnoredDuringExecution"]
    assert terms["nodeSelectorTerms"] == [
        {"matchFields": [{"key": "metadata.name", "operator": "In", "values": ["worker-2"]}]}
    ]
    assert "affinity" not in build("volumes")["spec"]["template"]["spec"]


def test_commit_job_needs_only_bucket_and_signing_key() -> None:
    job = jobs.commit_job(
        BackupPolicySpec.model_validate(POLICY),
        namespace="lamassu",
        policy_name="lamassu",
        backup_name="lamassu-20261124t100000z",
        set_time="20261124T100000Z",
        components=["postgres", "vault"],
        owner=OWNER,
    )
    assert job["metadata"]["name"] == "lamassu-20261124t100000z-commit"
    secrets = {secret for secret, _ in mounted_files(job).values()}
    assert secrets == {"s3", "gpg-pub", "gpg-sign"}
    cfg = RunnerConfig.model_validate(config_of(job))
    assert cfg.postgres is None
    assert cfg.components == ["postgres", "vault"]
    assert job["spec"]["template"]["spec"]["containers"][0]["command"][-2:] == [
        "commit",
        "--allow-partial",
    ]


def scheduled_drill(policy: dict[str, Any], components: list[str]) -> dict[str, Any]:
    body = jobs.drill_restore(
        BackupPolicySpec.model_validate(policy),
        namespace="lamassu",
        policy_name="lamassu",
        backup_name="lamassu-20261124t100000z",
        components=components,
        tick="20261129T030000Z",
        owner=OWNER,
    )
    assert body is not None
    return body


def drill_job(policy: dict[str, Any], body: dict[str, Any]) -> dict[str, Any]:
    """The Job the restore controller runs for a drill restore (its Restoring step)."""
    spec = RestoreSpec.model_validate(body["spec"])
    parsed = BackupPolicySpec.model_validate(policy)
    in_set = [str(c) for c in spec.components]
    return restore_job(
        spec,
        RestoreSource("s3://lamassu-backups/prod/lamassu/lamassu/x/", "b", parsed),
        namespace="lamassu",
        restore=body["metadata"]["name"],
        step="restore",
        components=rp.restore_components(spec, in_set),
        swap_suffix=None,
        owner=OWNER,
    )


def test_a_scheduled_drill_is_a_drill_restore_of_the_set_with_the_verification_keys() -> None:
    body = scheduled_drill(POLICY, ["postgres", "vault", "config"])
    meta = body["metadata"]
    assert body["kind"] == "LamassuRestore"
    assert meta["name"] == "lamassu-drill-20261129t030000z"
    assert meta["labels"][jobs.LABEL_POLICY] == "lamassu"
    assert meta["labels"][jobs.LABEL_SCHEDULED_DRILL] == "lamassu"
    assert meta["labels"][jobs.LABEL_BACKUP] == "lamassu-20261124t100000z"
    (owner,) = meta["ownerReferences"]
    assert (owner["kind"], owner["name"], owner["uid"]) == (
        "LamassuBackup",
        "lamassu-20261124t100000z",
        "uid-1",
    )
    spec = body["spec"]
    assert spec["mode"] == "Drill"
    assert spec["backupRef"] == {"name": "lamassu-20261124t100000z"}
    assert spec["components"] == ["postgres", "vault"]  # config is never drilled
    assert spec["decryptionKeySecret"] == {"name": "gpg-priv", "key": "p.asc"}
    assert spec["validation"]["keyConsistency"] is True
    # No signer key on the policy: signatures are not checked, as before.
    assert spec["insecureSkipSignatureCheck"] is True
    job = drill_job(POLICY, body)
    cfg = RestoreRunConfig.model_validate(config_of(job, jobs.RESTORE_CONFIG_ENV))
    assert cfg.mode == "Drill"
    assert cfg.components == ["postgres", "vault"]
    assert cfg.require_signature is False
    assert mounted_files(job)[cfg.decryption_key_file] == ("gpg-priv", "p.asc")


def test_a_scheduled_drill_checks_the_signature_when_the_policy_has_a_signer_key() -> None:
    policy = json.loads(json.dumps(POLICY))
    policy["verification"]["signerKeySecret"] = {"name": "gpg-sign-pub", "key": "s.asc"}
    policy["verification"]["keyConsistency"] = False
    body = scheduled_drill(policy, ["postgres"])
    assert body["spec"]["signerKeySecret"] == {"name": "gpg-sign-pub", "key": "s.asc"}
    assert not body["spec"].get("insecureSkipSignatureCheck")
    cfg = RestoreRunConfig.model_validate(
        config_of(drill_job(policy, body), jobs.RESTORE_CONFIG_ENV)
    )
    assert cfg.require_signature is True
    assert cfg.key_consistency is False
    assert cfg.components == ["postgres"]


def test_no_scheduled_drill_without_a_decryption_key() -> None:
    policy = json.loads(json.dumps(POLICY))
    policy["verification"] = {}
    built = jobs.drill_restore(
        BackupPolicySpec.model_validate(policy),
        namespace="lamassu",
        policy_name="lamassu",
        backup_name="b",
        components=["postgres"],
        tick="20261129T030000Z",
        owner=OWNER,
    )
    assert built is None


def test_old_scheduled_drills_go_beyond_the_history_limit_but_never_unfinished_ones() -> None:
    def drill(name: str, minute: int, phase: str | None, backup: str = "old-set") -> dict[str, Any]:
        return {
            "metadata": {"name": name, "creationTimestamp": f"2026-11-29T03:{minute:02d}:00Z"},
            "spec": {"backupRef": {"name": backup}},
            "status": {"phase": phase} if phase else {},
        }

    drills = [
        drill("d1", 1, "Completed"),
        drill("d2", 2, "Restoring"),
        drill("d3", 3, "Failed"),
        drill("d4", 4, "Completed", backup="being-recorded"),
        drill("d5", 5, None),
        drill("d6", 6, "Completed"),
        drill("d7", 7, "Completed"),
    ]
    assert jobs.drills_to_delete(drills, 2, {"being-recorded"}) == ["d3", "d1"]
    assert jobs.drills_to_delete(drills, 10, set()) == []


def test_long_names_stay_valid_and_distinct() -> None:
    long_backup = "a-very-long-policy-name-that-keeps-going-and-going-20261124t100000z"
    names = {
        jobs.component_job_name(long_backup, c) for c in ("postgres", "vault", "config", "awsKms")
    }
    assert len(names) == 4
    assert all(len(n) <= 63 for n in names)
    assert jobs.commit_job_name(long_backup) != jobs.commit_job_name(
        long_backup.replace("10", "11")
    )


def test_backup_records_are_not_owned_by_the_policy() -> None:
    resource = jobs.backup_resource(
        namespace="ns",
        policy_name="p",
        name="p-1",
        trigger=Trigger.SCHEDULED,
        components=[],
        scheduled_time="2026-11-24T10:00:00Z",
    )
    assert "ownerReferences" not in resource["metadata"]
    assert resource["metadata"]["labels"]["backup.lamassu.io/policy"] == "p"
    assert resource["spec"]["trigger"] == "Scheduled"


def test_a_point_in_time_drill_recovers_postgres_five_minutes_before_the_tick() -> None:
    """walArchiving on: the verification tick also drills the WAL archive, postgres only, to a
    second the archive surely holds; owned by the policy, named by the tick (one per tick)."""
    policy = BackupPolicySpec.model_validate(POLICY)
    tick = datetime(2026, 11, 29, 3, 0, tzinfo=UTC)
    owner = jobs.Owner("backup.lamassu.io/v1alpha1", "LamassuBackupPolicy", "lamassu", "uid-p")
    body = jobs.pitr_drill_restore(
        policy,
        namespace="lamassu",
        policy_name="lamassu",
        target=tick - jobs.PITR_DRILL_LAG,
        tick="20261129T030000Z",
        owner=owner,
    )
    assert body is not None
    meta, spec = body["metadata"], body["spec"]
    assert meta["name"] == "lamassu-pitr-drill-20261129t030000z"
    assert meta["labels"][jobs.LABEL_PITR_DRILL] == "lamassu"
    assert meta["labels"][jobs.LABEL_SCHEDULED_DRILL] == "lamassu"  # pruned with the others
    assert meta["ownerReferences"][0]["kind"] == "LamassuBackupPolicy"
    assert spec["mode"] == "Drill"
    assert spec["source"] == {
        "policyRef": {"name": "lamassu"},
        "pointInTime": "2026-11-29T02:55:00Z",
    }
    assert spec["components"] == ["postgres"]
    assert "backupRef" not in spec
    assert spec["decryptionKeySecret"] == {"name": "gpg-priv", "key": "p.asc"}
    assert isinstance(parse_resource(body), LamassuRestore)
    no_key = json.loads(json.dumps(POLICY))
    no_key["verification"] = {}
    assert (
        jobs.pitr_drill_restore(
            BackupPolicySpec.model_validate(no_key),
            namespace="lamassu",
            policy_name="lamassu",
            target=tick,
            tick="t",
            owner=owner,
        )
        is None
    )
