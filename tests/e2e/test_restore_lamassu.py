"""LamassuRestore on the real Lamassu v3.8.0, through the operator.

The subject is Lamassu's own workloads as its chart renders them (the kms StatefulSet with the
filesystem engine's PVC, the ca Deployment; from the ``lamassu`` image, run through runc by the
pod runner) on their own PostgreSQL server, with both crypto engines (filesystem on the kms
volume, Vault KV on the platform's OpenBao). A policy backs up the six databases, the KV
mount, the key volume and the chart's ConfigMaps; then rows and both engines' CA keys are lost,
and one ``LamassuRestore`` brings everything back: the operator stops the API service first and
the kms last, restores in place, brings them back, and validates against the real services'
``/health`` and ``/v1/cas``. The proof is Lamassu's: every certificate from before is listed
again and each CA signs a new certificate that verifies against its certificate from before the
backup. A drill of the same set records the evidence (keys matched per engine, the plan).
"""

from __future__ import annotations

import contextlib
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
from kubernetes import client as k8s

from lamassu_platform import images
from lamassu_platform.lamassu import (
    CA,
    DATABASES,
    FS_ENGINE,
    VAULT_ENGINE,
    Lamassu,
    LamassuClient,
    csr_pem,
    openssl_verify,
)
from lamassu_platform.lamassu_pods import KMS_PVC, PART_OF, LamassuPods
from lamassu_platform.postgres import PostgresServer
from lamassu_platform.stack import KV_MOUNT, Platform

from .conftest import Cluster, Operator
from .test_restore import IN_PLACE_STEPS, restore, step_names, wait_restore

pytestmark = [pytest.mark.platform, pytest.mark.e2e]

PG_SECRET = "lamassu-postgres-real"


@dataclass
class Real:
    """The real install of this module: its namespace, database server, services and data."""

    ns: str
    pg: PostgresServer
    lamassu: Lamassu
    pods: LamassuPods
    api: LamassuClient
    cas: dict[str, CA]
    leaf_profile: str
    tmp: Path


@pytest.fixture(scope="module")
def real(
    cluster: Cluster,
    platform: Platform,
    operator: Operator,
    tmp_path_factory: pytest.TempPathFactory,
) -> Iterator[Real]:
    """kms and ca of v3.8.0 as the chart's workloads in a fresh namespace, on their own
    PostgreSQL; one CA per engine and a few leaf certificates made through Lamassu's API."""
    if platform.pod_runner is None or platform.pod_runner.host_processes:
        pytest.skip("the real Lamassu workloads need the pod runner on runc (not host processes)")
    assert platform.openbao is not None
    root = tmp_path_factory.mktemp("lamassu-restore")
    ns = cluster.namespace()
    built = images.build(("lamassu",))
    platform.pod_runner.images.update(built)
    with contextlib.ExitStack() as stack:
        pg = stack.enter_context(PostgresServer(root / "pg"))
        pods = LamassuPods(
            api=cluster.api,
            namespace=ns,
            pod_runner=platform.pod_runner,
            image=images.ref_of(built, "lamassu"),
        )
        lamassu = stack.enter_context(
            Lamassu(root / "lamassu", pg, openbao=platform.openbao, vault_mount=KV_MOUNT, pods=pods)
        )
        k8s.CoreV1Api(cluster.api).create_namespaced_secret(
            ns,
            {
                "metadata": {"name": PG_SECRET},
                "type": "kubernetes.io/basic-auth",
                "stringData": {"username": pg.superuser, "password": pg.password},
            },
        )
        api = lamassu.client()
        ca_profile = api.create_profile("restore-ca", sign_as_ca=True, duration="365d")
        leaf_profile = api.create_profile("restore-leaf")
        cas = {
            engine: api.create_ca(
                f"restore-{engine}", f"Restore CA {engine}", profile_id=ca_profile, engine_id=engine
            )
            for engine in (FS_ENGINE, VAULT_ENGINE)
        }
        for engine, ca in cas.items():
            for i in range(3):
                api.sign_csr(ca.id, csr_pem(f"before-{engine}-{i}"), profile_id=leaf_profile)
        yield Real(ns, pg, lamassu, pods, api, cas, leaf_profile, root)


def lamassu_policy(cluster: Cluster, real: Real) -> None:
    """Everything a Lamassu install holds: the six databases, the Vault engine's KV mount (no
    Raft snapshot: the platform's OpenBao is shared), the kms volume as the filesystem engine's
    key store, and the chart's ConfigMaps."""
    spec = cluster.platform.sample_policy()["spec"]
    components = {
        "postgres": {
            **spec["components"]["postgres"],
            "host": real.pg.host,
            "port": real.pg.port,
            "credentialsSecret": {"name": PG_SECRET},
            "databases": list(DATABASES),
        },
        "vault": {**spec["components"]["vault"], "raftSnapshot": False, "kvMounts": [KV_MOUNT]},
        "config": {"selector": {"matchLabels": PART_OF}},
        "volumes": [{"name": KMS_PVC, "claimName": KMS_PVC, "keyStoreEngine": FS_ENGINE}],
    }
    cluster.policy(real.ns, "lamassu", components=components)


def replicas(cluster: Cluster, ns: str) -> dict[str, int]:
    apps = k8s.AppsV1Api(cluster.api)
    return {
        "ca": int(apps.read_namespaced_deployment("ca", ns).spec.replicas),
        "kms": int(apps.read_namespaced_stateful_set("kms", ns).spec.replicas),
    }


def serials(api: LamassuClient) -> set[str]:
    return {c.serial_number for c in api.list_certificates()}


def lose_rows_and_keys(cluster: Cluster, real: Real) -> None:
    """Leaf certificates deleted from ca's database; the filesystem CA's key file and the Vault
    CA's key gone from their engines."""
    real.pg.psql("DELETE FROM certificates WHERE NOT is_ca;", "ca")
    fs_ca, vault_ca = real.cas[FS_ENGINE], real.cas[VAULT_ENGINE]
    (real.lamassu.fs_dir / fs_ca.subject_key_id).unlink()
    assert cluster.platform.openbao is not None
    cluster.platform.openbao.client().secrets.kv.v2.delete_metadata_and_all_versions(
        path=vault_ca.subject_key_id, mount_point=KV_MOUNT
    )
    assert fs_ca.subject_key_id not in real.lamassu.fs_key_ids()
    assert vault_ca.subject_key_id not in real.lamassu.vault_key_ids()


def test_in_place_restore_of_the_real_lamassu(
    cluster: Cluster, operator: Operator, platform: Platform, real: Real
) -> None:
    """Rows and both engines' keys lost; one LamassuRestore; Lamassu lists and signs again."""
    lamassu_policy(cluster, real)
    cluster.backup(real.ns, "good", "lamassu")
    good = cluster.wait_phase(real.ns, "good", ("Completed", "Failed", "PartiallyFailed"), 240)
    assert good["status"]["phase"] == "Completed", good["status"]
    before = serials(real.api)
    before_cas = {c.id for c in real.api.list_cas()}
    lose_rows_and_keys(cluster, real)
    assert serials(real.api) < before

    ca_url, kms_url = real.lamassu.ca_url, real.lamassu.kms_url
    restore(
        cluster,
        real.ns,
        "recover",
        backupRef={"name": "good"},
        mode="InPlace",
        confirm="good",
        workloads={"selector": {"matchLabels": PART_OF}},
        validation={"healthChecks": [f"{kms_url}/health", f"{ca_url}/health", f"{ca_url}/v1/cas"]},
    )
    done = wait_restore(cluster, real.ns, "recover", ("Completed", "Failed", "RolledBack"), 420)
    status = done["status"]
    assert status["phase"] == "Completed", status
    # Everything in the set came back by default, the key volume and the ConfigMaps included.
    assert status["components"] == {
        "postgres": "Completed",
        "vault": "Completed",
        "config": "Completed",
        "volumes": "Completed",
    }, status["components"]
    # The chart's workloads were stopped API first, kms last, and are back at their replicas.
    assert [(w["kind"], w["name"], w["replicas"]) for w in status["scaledWorkloads"]] == [
        ("Deployment", "ca", 1),
        ("StatefulSet", "kms", 1),
    ]
    assert replicas(cluster, real.ns) == {"ca": 1, "kms": 1}
    assert step_names(done) == IN_PLACE_STEPS
    assert [c["status"] for c in status["evidence"]["healthChecks"]] == [200, 200, 200]
    consistency = status["evidence"]["keyConsistency"]
    assert consistency["ok"] is True, consistency
    assert consistency["casKeyMatched"] >= len(real.cas), consistency
    pre = cluster.get("lamassubackups", real.ns, status["preRestoreBackup"])
    assert pre is not None
    assert pre["status"]["phase"] == "Completed"

    # Lamassu's own proof: every certificate and CA listed again, both keys back in their
    # engines, and each CA signs a certificate that verifies against its certificate from
    # before the backup.
    real.pods.wait_healthy("ca", real.lamassu.ca_port, 60)
    assert serials(real.api) == before
    assert {c.id for c in real.api.list_cas()} == before_cas
    assert real.cas[FS_ENGINE].subject_key_id in real.lamassu.fs_key_ids()
    assert real.cas[VAULT_ENGINE].subject_key_id in real.lamassu.vault_key_ids()
    for engine, ca in real.cas.items():
        leaf = real.api.sign_csr(ca.id, csr_pem(f"after-{engine}"), profile_id=real.leaf_profile)
        out = real.tmp / f"verify-{engine}"
        out.mkdir()
        verified = openssl_verify(ca.certificate_pem, leaf.certificate_pem, out)
        assert verified.returncode == 0, (engine, verified.stdout, verified.stderr)
    reasons = {e.reason for e in cluster.events(real.ns, "recover")}
    assert {"ScaledDown", "ScaledUp", "Restoring", "Completed"} <= reasons, reasons


def test_a_drill_of_the_real_set_records_its_evidence_and_plan(
    cluster: Cluster, operator: Operator, real: Real
) -> None:
    """A Drill restores the real set into scratch (databases, KV mount, key volume): every
    CA's key is proven to be its certificate's key pair in its own engine; nothing live moves."""
    live_keys = real.lamassu.fs_key_ids()
    live_databases = set(real.pg.databases())
    restore(cluster, real.ns, "rehearse", backupRef={"name": "good"}, mode="Drill")
    done = wait_restore(cluster, real.ns, "rehearse", ("Completed", "Failed"), 300)
    status = done["status"]
    assert status["phase"] == "Completed", status
    evidence: dict[str, Any] = status["evidence"]
    assert evidence["keyConsistency"]["ok"] is True, evidence["keyConsistency"]
    assert evidence["keyConsistency"]["casKeyMatched"] >= len(real.cas)
    assert f"scratch copy of volume {KMS_PVC}" in evidence["keyConsistency"]["source"]
    assert sorted(evidence["postgres"]) == sorted(DATABASES)
    assert status["recoveryTimeSeconds"] > 0
    # The drill's plan (scratch targets only) is on the status, as for an in-place restore.
    planned = {(p["component"], p["target"]) for p in status["plan"]}
    assert ("volumes", f"volume {KMS_PVC}") in planned, status["plan"]
    assert {c for c, _ in planned} == {"postgres", "vault", "volumes"}
    # Nothing live moved: no workload scaled, the key files and databases as they were.
    assert status.get("scaledWorkloads", []) == []
    assert replicas(cluster, real.ns) == {"ca": 1, "kms": 1}
    assert real.lamassu.fs_key_ids() == live_keys
    assert set(real.pg.databases()) == live_databases
