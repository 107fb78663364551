"""RBAC refusals: the chart's operator account can do its job and nothing more, and the runner's
account can read only what its component needs. Each request below goes to the real apiserver
(RBAC on) with that account's own token, and is refused by it.
"""

from __future__ import annotations

import uuid
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
from kubernetes import client
from kubernetes.client.exceptions import ApiException

from lamassu_platform.operator_proc import account_kubeconfig, chart_rbac_kubeconfig
from lamassu_platform.stack import Platform, api_client

from .conftest import Cluster

pytestmark = [pytest.mark.platform, pytest.mark.e2e]

RUNNER_ACCOUNT = "lamassu-backup-runner"
RESTORE_ACCOUNT = "lamassu-backup-restore"


def refused(call: Callable[[], Any]) -> int:
    """The HTTP status of a request that must be refused (403 from RBAC, or the escalation check)."""
    try:
        call()
    except ApiException as exc:
        return int(exc.status)
    raise AssertionError("the request was allowed")


def test_the_operator_account_is_refused_outside_its_role(
    cluster: Cluster, platform: Platform, tmp_path: Path
) -> None:
    ns = cluster.namespace()
    api = api_client(chart_rbac_kubeconfig(platform, tmp_path / "operator.kubeconfig"))
    core, rbac, apps = (
        client.CoreV1Api(api),
        client.RbacAuthorizationV1Api(api),
        client.AppsV1Api(api),
    )
    pod = {
        "metadata": {"name": "sneaky"},
        "spec": {"containers": [{"name": "c", "image": "busybox"}]},
    }
    assert refused(lambda: core.create_namespaced_pod(ns, pod)) == 403
    assert refused(lambda: core.delete_namespaced_secret("backup-s3", ns)) == 403
    assert (
        refused(lambda: core.patch_namespaced_secret("backup-s3", ns, {"data": {"x": "eA=="}}))
        == 403
    )
    assert refused(lambda: core.create_namespaced_secret(ns, {"metadata": {"name": "x"}})) == 403
    assert refused(lambda: core.delete_namespace(ns)) == 403
    # Deployments it may create (the WAL shipper), other workloads not.
    assert (
        refused(
            lambda: apps.create_namespaced_daemon_set(
                ns,
                {
                    "metadata": {"name": "d"},
                    "spec": {
                        "selector": {"matchLabels": {"a": "b"}},
                        "template": {"metadata": {"labels": {"a": "b"}}, "spec": pod["spec"]},
                    },
                },
            )
        )
        == 403
    )
    # No way to grant itself more: binding cluster-admin, or a Role with rights it lacks.
    binding = {
        "metadata": {"name": f"escalate-{uuid.uuid4().hex[:6]}"},
        "roleRef": {
            "apiGroup": "rbac.authorization.k8s.io",
            "kind": "ClusterRole",
            "name": "cluster-admin",
        },
        "subjects": [
            {
                "kind": "ServiceAccount",
                "name": "lamassu-backup-operator",
                "namespace": "lamassu-backup",
            }
        ],
    }
    assert refused(lambda: rbac.create_cluster_role_binding(binding)) == 403
    role = {
        "metadata": {"name": "too-much"},
        "rules": [{"apiGroups": [""], "resources": ["pods"], "verbs": ["create", "delete"]}],
    }
    assert refused(lambda: rbac.create_namespaced_role(ns, role)) == 403
    # What it does need still works under the same token (the refusals are not a broken token).
    assert core.read_namespaced_secret("backup-s3", ns).metadata.name == "backup-s3"


def test_the_runner_account_reads_only_its_namespace(
    cluster: Cluster, platform: Platform, tmp_path: Path
) -> None:
    from lamassu_backup.clients.kube import KubeApi

    ns, other = cluster.namespace(), cluster.namespace()
    KubeApi(platform.api()).ensure_runner_account(ns, RUNNER_ACCOUNT)
    api = api_client(
        account_kubeconfig(platform, ns, RUNNER_ACCOUNT, tmp_path / "runner.kubeconfig")
    )
    core, batch = client.CoreV1Api(api), client.BatchV1Api(api)
    # What the config component needs: ConfigMaps and Secrets of its own namespace, read only.
    assert core.list_namespaced_config_map(ns).items
    assert core.read_namespaced_secret("backup-s3", ns)
    assert refused(lambda: core.read_namespaced_secret("backup-s3", other)) == 403
    assert refused(core.list_secret_for_all_namespaces) == 403
    assert refused(lambda: core.patch_namespaced_secret("backup-s3", ns, {"data": {}})) == 403
    assert refused(lambda: core.delete_namespaced_config_map("ca-config", ns)) == 403
    assert (
        refused(lambda: batch.create_namespaced_job(ns, {"metadata": {"name": "j"}, "spec": {}}))
        == 403
    )
    assert refused(lambda: core.list_namespaced_pod(ns)) == 403


def test_the_runner_account_never_writes_configmaps(
    cluster: Cluster, platform: Platform, tmp_path: Path
) -> None:
    """Backups, plans and drills run as the read-only runner account, even now that restores
    have an account that writes config."""
    from lamassu_backup.clients.kube import KubeApi

    ns = cluster.namespace()
    KubeApi(platform.api()).ensure_runner_account(ns, RUNNER_ACCOUNT)
    api = api_client(
        account_kubeconfig(platform, ns, RUNNER_ACCOUNT, tmp_path / "runner.kubeconfig")
    )
    core = client.CoreV1Api(api)
    cm = {"metadata": {"name": "sneaky"}, "data": {"a": "b"}}
    assert refused(lambda: core.create_namespaced_config_map(ns, cm)) == 403
    assert refused(lambda: core.patch_namespaced_config_map("ca-config", ns, cm)) == 403
    assert refused(lambda: core.replace_namespaced_config_map("ca-config", ns, cm)) == 403
    assert refused(lambda: core.create_namespaced_secret(ns, {"metadata": {"name": "x"}})) == 403


def test_the_restore_account_writes_config_only_where_it_is_bound(
    cluster: Cluster, platform: Platform, tmp_path: Path
) -> None:
    """The operator (the chart's account, which holds bind on that one ClusterRole and no write
    access to Secrets itself) binds the restore account in the restore's namespace only; the
    account writes ConfigMaps and Secrets there and nowhere else, and nothing but them."""
    from lamassu_backup.clients.kube import RESTORE_CLUSTER_ROLE, KubeApi

    ns, other = cluster.namespace(), cluster.namespace()
    operator_api = api_client(chart_rbac_kubeconfig(platform, tmp_path / "operator.kubeconfig"))
    KubeApi(operator_api).ensure_restore_account(ns, RESTORE_ACCOUNT, [ns])
    # The operator cannot bind a ClusterRole other than the restore one (no escalation).
    rbac = client.RbacAuthorizationV1Api(operator_api)
    binding = {
        "metadata": {"name": "too-much"},
        "roleRef": {"apiGroup": "rbac.authorization.k8s.io", "kind": "ClusterRole", "name": "edit"},
        "subjects": [{"kind": "ServiceAccount", "name": RESTORE_ACCOUNT, "namespace": ns}],
    }
    assert refused(lambda: rbac.create_namespaced_role_binding(ns, binding)) == 403
    assert RESTORE_CLUSTER_ROLE == "lamassu-backup-restore"

    api = api_client(
        account_kubeconfig(platform, ns, RESTORE_ACCOUNT, tmp_path / "restore.kubeconfig")
    )
    core, batch = client.CoreV1Api(api), client.BatchV1Api(api)
    core.patch_namespaced_config_map("ca-config", ns, {"data": {"restored": "yes"}})
    core.create_namespaced_secret(ns, {"metadata": {"name": "restore-journal-probe"}})
    core.delete_namespaced_secret("restore-journal-probe", ns)
    cm = {"metadata": {"name": "sneaky"}, "data": {"a": "b"}}
    assert refused(lambda: core.create_namespaced_config_map(other, cm)) == 403
    assert refused(lambda: core.read_namespaced_secret("backup-s3", other)) == 403
    assert refused(core.list_secret_for_all_namespaces) == 403
    assert refused(lambda: core.list_namespaced_pod(ns)) == 403
    assert (
        refused(lambda: batch.create_namespaced_job(ns, {"metadata": {"name": "j"}, "spec": {}}))
        == 403
    )
