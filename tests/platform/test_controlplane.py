"""The test platform's Kubernetes: a real apiserver with RBAC, the real Job controller, and the pod
runner in the kubelet's place. If these are wrong, every operator test built on them lies."""

from __future__ import annotations

import json
import os
import textwrap
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from kubernetes import client, config
from kubernetes.client.exceptions import ApiException

from lamassu_platform._util import wait_for
from lamassu_platform.controlplane import ControlPlane
from lamassu_platform.podrunner import PodRunner

pytestmark = pytest.mark.platform

JOB_TIMEOUT = 90.0


# ------------------------------------------------------------------------------------ fixtures
@pytest.fixture(scope="module")
def api(control_plane: ControlPlane) -> Iterator[client.ApiClient]:
    """An admin client (system:masters)."""
    api_client = config.new_client_from_config(config_file=str(control_plane.kubeconfig))
    yield api_client
    api_client.close()


@pytest.fixture
def namespace(api: client.ApiClient, pod_runner: PodRunner) -> Iterator[str]:
    """A fresh namespace, ready for Pods (its ``default`` ServiceAccount exists)."""
    core = client.CoreV1Api(api)
    name = f"t-{uuid.uuid4().hex[:8]}"
    core.create_namespace({"metadata": {"name": name}})
    wait_for(
        lambda: bool(core.list_namespaced_service_account(name).items),
        timeout=30,
        what=f"the default ServiceAccount in {name}",
    )
    yield name
    core.delete_namespace(name, propagation_policy="Background")


# ------------------------------------------------------------------------------------- helpers
def python_container(code: str, **extra: Any) -> dict[str, Any]:
    """A container that runs ``python -c code`` (the image is ignored by the pod runner)."""
    return {
        "name": "main",
        "image": "python:3.11-slim",
        "command": ["python", "-c", textwrap.dedent(code)],
        **extra,
    }


def job_manifest(name: str, container: dict[str, Any], *, backoff_limit: int = 0) -> dict[str, Any]:
    return {
        "apiVersion": "batch/v1",
        "kind": "Job",
        "metadata": {"name": name},
        "spec": {
            "backoffLimit": backoff_limit,
            "template": {"spec": {"restartPolicy": "Never", "containers": [container]}},
        },
    }


def pod_manifest(name: str, container: dict[str, Any], **spec: Any) -> dict[str, Any]:
    return {
        "apiVersion": "v1",
        "kind": "Pod",
        "metadata": {"name": name},
        "spec": {"restartPolicy": "Never", "containers": [container], **spec},
    }


def job_condition(api: client.ApiClient, namespace: str, name: str) -> str | None:
    """``Complete`` or ``Failed`` once the Job controller has decided, else None."""
    job = client.BatchV1Api(api).read_namespaced_job(name, namespace)
    for cond in job.status.conditions or []:
        if cond.type in ("Complete", "Failed") and cond.status == "True":
            return str(cond.type)
    return None


def wait_job(api: client.ApiClient, namespace: str, name: str) -> str:
    result: list[str] = []

    def done() -> bool:
        cond = job_condition(api, namespace, name)
        if cond:
            result.append(cond)
        return cond is not None

    wait_for(done, timeout=JOB_TIMEOUT, interval=0.2, what=f"job {namespace}/{name} to finish")
    return result[0]


def wait_pod_phase(api: client.ApiClient, namespace: str, name: str, *phases: str) -> Any:
    core = client.CoreV1Api(api)
    found: list[Any] = []

    def reached() -> bool:
        pod = core.read_namespaced_pod(name, namespace)
        if pod.status.phase in phases:
            found.append(pod)
            return True
        return False

    wait_for(reached, timeout=JOB_TIMEOUT, interval=0.1, what=f"pod {name} to be {phases}")
    return found[0]


def job_pods(api: client.ApiClient, namespace: str, job: str) -> list[Any]:
    pods = client.CoreV1Api(api).list_namespaced_pod(namespace, label_selector=f"job-name={job}")
    return list(pods.items)


# --------------------------------------------------------------------------------------- tests
def test_version_reports_the_pinned_release(api: client.ApiClient) -> None:
    info = client.VersionApi(api).get_code()
    assert info.git_version == "v1.35.4"
    assert (info.major, info.minor) == ("1", "35")


def test_node_is_registered_ready(api: client.ApiClient, pod_runner: PodRunner) -> None:
    node = client.CoreV1Api(api).read_node(pod_runner.node_name)
    ready = {c.type: c.status for c in node.status.conditions}["Ready"]
    assert ready == "True"
    assert node.status.node_info.kubelet_version == "v1.35.4"


def test_job_completes_through_the_job_controller(
    api: client.ApiClient, pod_runner: PodRunner, namespace: str
) -> None:
    container = python_container("import sys; print('hello from', sys.executable)")
    client.BatchV1Api(api).create_namespaced_job(namespace, job_manifest("ok", container))

    assert wait_job(api, namespace, "ok") == "Complete"
    (pod,) = job_pods(api, namespace, "ok")
    assert pod.status.phase == "Succeeded"
    term = pod.status.container_statuses[0].state.terminated
    assert (term.exit_code, term.reason) == (0, "Completed")
    assert term.started_at is not None
    assert term.finished_at is not None
    assert "hello from" in pod_runner.logs(namespace, pod.metadata.name)
    # The runner puts the venv first on PATH, so the project's tools resolve.
    assert str(pod_runner.venv_bin) in pod_runner.logs(namespace, pod.metadata.name)


def test_job_fails_after_its_backoff_limit(api: client.ApiClient, namespace: str) -> None:
    container = python_container("import sys; print('failing'); sys.exit(1)")
    client.BatchV1Api(api).create_namespaced_job(
        namespace, job_manifest("bad", container, backoff_limit=1)
    )

    assert wait_job(api, namespace, "bad") == "Failed"
    job = client.BatchV1Api(api).read_namespaced_job("bad", namespace)
    failed = next(c for c in job.status.conditions if c.type == "Failed")
    assert failed.reason == "BackoffLimitExceeded"
    assert job.status.failed == 2
    pods = job_pods(api, namespace, "bad")
    assert len(pods) == 2
    for pod in pods:
        assert pod.status.phase == "Failed"
        term = pod.status.container_statuses[0].state.terminated
        assert (term.exit_code, term.reason) == (1, "Error")


def test_termination_message_reaches_the_pod_status(api: client.ApiClient, namespace: str) -> None:
    core = client.CoreV1Api(api)
    written = python_container(
        """
        import json
        with open('/dev/termination-log', 'w') as fh:
            json.dump({'result': 'done', 'bytes': 42}, fh)
        """
    )
    core.create_namespaced_pod(namespace, pod_manifest("msg", written))
    fallback = python_container(
        "import sys; print('the last words'); sys.exit(3)",
        terminationMessagePolicy="FallbackToLogsOnError",
    )
    core.create_namespaced_pod(namespace, pod_manifest("fallback", fallback))

    pod = wait_pod_phase(api, namespace, "msg", "Succeeded", "Failed")
    term = pod.status.container_statuses[0].state.terminated
    assert json.loads(term.message) == {"result": "done", "bytes": 42}
    pod = wait_pod_phase(api, namespace, "fallback", "Succeeded", "Failed")
    term = pod.status.container_statuses[0].state.terminated
    assert pod.status.phase == "Failed"
    assert term.exit_code == 3
    assert term.message.strip() == "the last words"


def test_env_and_volumes_come_from_secrets_and_configmaps(
    api: client.ApiClient, namespace: str
) -> None:
    core = client.CoreV1Api(api)
    core.create_namespaced_secret(
        namespace,
        {"metadata": {"name": "creds"}, "stringData": {"password": "s3cr3t", "tls.key": "KEY"}},
    )
    core.create_namespaced_config_map(
        namespace, {"metadata": {"name": "settings"}, "data": {"mode": "full"}}
    )
    check = python_container(
        """
        import json, os, stat
        path = '/etc/lamassu/creds/password'
        out = {
            'password_ok': os.environ['DB_PASSWORD'] == 's3cr3t',
            'mode': os.environ['BACKUP_MODE'],
            'pod': os.environ['POD_NAME'],
            'missing': os.environ.get('MISSING', 'unset'),
            'from_env_from': os.environ.get('CFG_mode'),
            'file_ok': open(path).read() == 's3cr3t',
            'file_mode': oct(stat.S_IMODE(os.stat(path).st_mode)),
            'readonly': not os.access('/etc/lamassu/creds', os.W_OK),
            'namespace': open('/var/run/secrets/kubernetes.io/serviceaccount/namespace').read(),
            'cwd': os.getcwd(),
            'service_host': os.environ['KUBERNETES_SERVICE_HOST'],
        }
        open('/dev/termination-log', 'w').write(json.dumps(out))
        """,
        workingDir="/tmp/podrunner-test-workdir",
        env=[
            {
                "name": "DB_PASSWORD",
                "valueFrom": {"secretKeyRef": {"name": "creds", "key": "password"}},
            },
            {
                "name": "BACKUP_MODE",
                "valueFrom": {"configMapKeyRef": {"name": "settings", "key": "mode"}},
            },
            {"name": "POD_NAME", "valueFrom": {"fieldRef": {"fieldPath": "metadata.name"}}},
            {
                "name": "MISSING",
                "valueFrom": {
                    "secretKeyRef": {"name": "absent", "key": "x", "optional": True},
                },
            },
        ],
        envFrom=[{"prefix": "CFG_", "configMapRef": {"name": "settings"}}],
        volumeMounts=[{"name": "creds", "mountPath": "/etc/lamassu/creds", "readOnly": True}],
    )
    volumes = [{"name": "creds", "secret": {"secretName": "creds", "defaultMode": 0o400}}]
    core.create_namespaced_pod(namespace, pod_manifest("env", check, volumes=volumes))

    pod = wait_pod_phase(api, namespace, "env", "Succeeded", "Failed")
    term = pod.status.container_statuses[0].state.terminated
    assert pod.status.phase == "Succeeded", term.message
    assert json.loads(term.message) == {
        "password_ok": True,
        "mode": "full",
        "pod": "env",
        "missing": "unset",
        "from_env_from": "full",
        "file_ok": True,
        "file_mode": "0o400",
        "readonly": True,
        "namespace": namespace,
        "cwd": "/tmp/podrunner-test-workdir",
        "service_host": "127.0.0.1",
    }


def test_pvc_contents_persist_between_pods(
    api: client.ApiClient, pod_runner: PodRunner, namespace: str
) -> None:
    core = client.CoreV1Api(api)
    core.create_namespaced_persistent_volume_claim(
        namespace,
        {
            "metadata": {"name": "data"},
            "spec": {
                "accessModes": ["ReadWriteOnce"],
                "resources": {"requests": {"storage": "1Gi"}},
            },
        },
    )
    volumes = [{"name": "data", "persistentVolumeClaim": {"claimName": "data"}}]
    mounts = [{"name": "data", "mountPath": "/backup"}]
    writer = python_container(
        "open('/backup/dump.sql', 'w').write('payload-1')", volumeMounts=mounts
    )
    core.create_namespaced_pod(namespace, pod_manifest("writer", writer, volumes=volumes))
    assert wait_pod_phase(api, namespace, "writer", "Succeeded", "Failed").status.phase == (
        "Succeeded"
    )
    reader = python_container(
        "open('/dev/termination-log', 'w').write(open('/backup/dump.sql').read())",
        volumeMounts=mounts,
    )
    core.create_namespaced_pod(namespace, pod_manifest("reader", reader, volumes=volumes))
    pod = wait_pod_phase(api, namespace, "reader", "Succeeded", "Failed")
    assert pod.status.container_statuses[0].state.terminated.message == "payload-1"
    assert (pod_runner.pvc_path(namespace, "data") / "dump.sql").read_text() == "payload-1"
    # The mount was private to the pods: nothing appeared at /backup on the host.
    assert not os.path.exists("/backup/dump.sql")


def test_deleting_a_running_pod_kills_its_process(
    api: client.ApiClient, pod_runner: PodRunner, namespace: str
) -> None:
    core = client.CoreV1Api(api)
    sleeper = python_container(
        "import os, time; print('pid', os.getpid(), flush=True); time.sleep(600)"
    )
    core.create_namespaced_pod(namespace, pod_manifest("sleeper", sleeper))
    running = wait_pod_phase(api, namespace, "sleeper", "Running")
    conditions = {c.type: c.status for c in running.status.conditions}
    assert conditions == {
        "PodReadyToStartContainers": "True",
        "Initialized": "True",
        "Ready": "True",
        "ContainersReady": "True",
        "PodScheduled": "True",
    }
    assert running.spec.node_name == pod_runner.node_name
    assert running.status.pod_ip == "127.0.0.1"
    assert running.status.container_statuses[0].state.running is not None
    pid_line: list[str] = []

    def pid_logged() -> bool:
        lines = [ln for ln in pod_runner.logs(namespace, "sleeper").splitlines() if ln]
        pid_line.extend(lines[:1])
        return bool(lines)

    wait_for(pid_logged, timeout=30, what="the sleeper to print its pid")
    pid = int(pid_line[0].split()[1])
    os.kill(pid, 0)  # alive

    core.delete_namespaced_pod("sleeper", namespace, grace_period_seconds=5)

    def gone() -> bool:
        try:
            core.read_namespaced_pod("sleeper", namespace)
        except ApiException as exc:
            return bool(exc.status == 404)
        return False

    wait_for(gone, timeout=30, what="the pod to be deleted")
    with pytest.raises(ProcessLookupError):
        os.kill(pid, 0)


def test_deployments_and_statefulsets_get_their_pods_from_the_real_controllers(
    api: client.ApiClient, namespace: str
) -> None:
    """A Deployment's Pod comes from its ReplicaSet; deleting it (grace 0) brings a new one;
    scaling to 0 removes it; a StatefulSet creates its PVC from the claim template first. What
    the operator's chart, a restore's ScalingDown and Lamassu's kms rely on."""
    apps, core = client.AppsV1Api(api), client.CoreV1Api(api)
    sleeper = python_container("import time; time.sleep(600)")
    template = {
        "metadata": {"labels": {"app": "web"}},
        "spec": {"terminationGracePeriodSeconds": 1, "containers": [sleeper]},
    }
    apps.create_namespaced_deployment(
        namespace,
        {
            "metadata": {"name": "web"},
            "spec": {
                "replicas": 1,
                "selector": {"matchLabels": {"app": "web"}},
                "template": template,
            },
        },
    )

    def running(selector: str) -> list[Any]:
        pods = core.list_namespaced_pod(namespace, label_selector=selector).items
        return [
            p for p in pods if p.status.phase == "Running" and not p.metadata.deletion_timestamp
        ]

    wait_for(lambda: len(running("app=web")) == 1, timeout=60, what="the Deployment's Pod")
    first = running("app=web")[0]
    owner = first.metadata.owner_references[0]
    assert owner.kind == "ReplicaSet"
    assert owner.name.startswith("web-")
    wait_for(
        lambda: apps.read_namespaced_deployment_status("web", namespace).status.ready_replicas == 1,
        timeout=30,
        what="readyReplicas 1",
    )
    core.delete_namespaced_pod(first.metadata.name, namespace, grace_period_seconds=0)
    wait_for(
        lambda: [p.metadata.name for p in running("app=web")] not in ([], [first.metadata.name]),
        timeout=60,
        what="the replacement Pod",
    )
    apps.patch_namespaced_deployment_scale("web", namespace, {"spec": {"replicas": 0}})
    wait_for(
        lambda: not core.list_namespaced_pod(namespace, label_selector="app=web").items,
        timeout=60,
        what="no Pod after scaling to 0",
    )
    assert not apps.read_namespaced_deployment_status("web", namespace).status.replicas

    db_template = {
        "metadata": {"labels": {"app": "db"}},
        "spec": {
            "terminationGracePeriodSeconds": 1,
            "containers": [{**sleeper, "volumeMounts": [{"name": "data", "mountPath": "/data"}]}],
        },
    }
    claim = {
        "metadata": {"name": "data"},
        "spec": {"accessModes": ["ReadWriteOnce"], "resources": {"requests": {"storage": "1Gi"}}},
    }
    apps.create_namespaced_stateful_set(
        namespace,
        {
            "metadata": {"name": "db"},
            "spec": {
                "replicas": 1,
                "serviceName": "db",
                "selector": {"matchLabels": {"app": "db"}},
                "template": db_template,
                "volumeClaimTemplates": [claim],
            },
        },
    )
    wait_for(lambda: len(running("app=db")) == 1, timeout=60, what="the StatefulSet's Pod")
    assert running("app=db")[0].metadata.name == "db-0"
    assert core.read_namespaced_persistent_volume_claim("data-db-0", namespace)


def test_rbac_is_enforced_for_service_account_tokens(
    api: client.ApiClient, control_plane: ControlPlane, namespace: str
) -> None:
    core = client.CoreV1Api(api)
    core.create_namespaced_service_account(namespace, {"metadata": {"name": "reader"}})
    token_request = core.create_namespaced_service_account_token(
        "reader", namespace, {"spec": {"audiences": [], "expirationSeconds": 600}}
    )
    cfg = client.Configuration()
    cfg.host = control_plane.server
    cfg.ssl_ca_cert = str(control_plane.ca_file)
    cfg.api_key = {"authorization": f"Bearer {token_request.status.token}"}
    with client.ApiClient(cfg) as as_reader:
        reader_core = client.CoreV1Api(as_reader)
        with pytest.raises(ApiException) as refused:
            reader_core.list_namespaced_config_map(namespace)
        assert refused.value.status == 403

        rbac = client.RbacAuthorizationV1Api(api)
        rbac.create_namespaced_role(
            namespace,
            {
                "metadata": {"name": "read-configmaps"},
                "rules": [{"apiGroups": [""], "resources": ["configmaps"], "verbs": ["list"]}],
            },
        )
        rbac.create_namespaced_role_binding(
            namespace,
            {
                "metadata": {"name": "reader-reads"},
                "roleRef": {
                    "apiGroup": "rbac.authorization.k8s.io",
                    "kind": "Role",
                    "name": "read-configmaps",
                },
                "subjects": [{"kind": "ServiceAccount", "name": "reader", "namespace": namespace}],
            },
        )
        wait_for(
            lambda: reader_core.list_namespaced_config_map(namespace) is not None,
            timeout=10,
            what="the RoleBinding to take effect",
        )
        # Still only what the Role grants.
        with pytest.raises(ApiException) as still_refused:
            reader_core.list_namespaced_secret(namespace)
        assert still_refused.value.status == 403


def test_pod_uses_its_projected_service_account_token_in_cluster(
    api: client.ApiClient, namespace: str
) -> None:
    """The in-cluster config path: token, ca.crt and KUBERNETES_SERVICE_* as a real pod sees."""
    core = client.CoreV1Api(api)
    core.create_namespaced_service_account(namespace, {"metadata": {"name": "runner"}})
    client.RbacAuthorizationV1Api(api).create_namespaced_role_binding(
        namespace,
        {
            "metadata": {"name": "runner-view"},
            "roleRef": {
                "apiGroup": "rbac.authorization.k8s.io",
                "kind": "ClusterRole",
                "name": "view",
            },
            "subjects": [{"kind": "ServiceAccount", "name": "runner", "namespace": namespace}],
        },
    )
    probe = python_container(
        """
        import os
        from kubernetes import client, config
        from kubernetes.client.exceptions import ApiException
        config.load_incluster_config()
        core = client.CoreV1Api()
        ns = os.environ['NS']
        cm = core.read_namespaced_config_map('kube-root-ca.crt', ns)
        try:
            core.list_namespaced_secret(ns)
            secrets = 'allowed'
        except ApiException as exc:
            secrets = str(exc.status)
        open('/dev/termination-log', 'w').write(f"{len(cm.data)} {secrets}")
        """,
        env=[{"name": "NS", "valueFrom": {"fieldRef": {"fieldPath": "metadata.namespace"}}}],
        terminationMessagePolicy="FallbackToLogsOnError",
    )
    core.create_namespaced_pod(
        namespace, pod_manifest("incluster", probe, serviceAccountName="runner")
    )
    pod = wait_pod_phase(api, namespace, "incluster", "Succeeded", "Failed")
    term = pod.status.container_statuses[0].state.terminated
    assert pod.status.phase == "Succeeded", term.message
    # "view" reads ConfigMaps but not Secrets: the token is the Pod's ServiceAccount's.
    assert term.message == "1 403"


def test_malformed_pod_fails_with_a_reason_and_the_runner_goes_on(
    api: client.ApiClient, namespace: str
) -> None:
    core = client.CoreV1Api(api)
    no_command = {"name": "main", "image": "busybox"}
    core.create_namespaced_pod(namespace, pod_manifest("nocmd", no_command))
    pod = wait_pod_phase(api, namespace, "nocmd", "Succeeded", "Failed")
    assert pod.status.phase == "Failed"
    assert pod.status.reason == "Unsupported"
    assert "no command" in pod.status.message

    unknown = python_container("pass", command=["no-such-tool-anywhere"])
    core.create_namespaced_pod(namespace, pod_manifest("unknown", unknown))
    pod = wait_pod_phase(api, namespace, "unknown", "Succeeded", "Failed")
    term = pod.status.container_statuses[0].state.terminated
    assert (term.exit_code, term.reason) == (128, "StartError")

    ok = python_container("print('still running pods')")
    core.create_namespaced_pod(namespace, pod_manifest("after", ok))
    assert wait_pod_phase(api, namespace, "after", "Succeeded", "Failed").status.phase == (
        "Succeeded"
    )


def test_init_containers_run_first_and_on_failure_restarts_in_place(
    api: client.ApiClient, pod_runner: PodRunner, namespace: str
) -> None:
    scratch = "/tmp/podrunner-test-scratch"  # a mount point: the emptyDir is private to the pod
    mounts = [{"name": "scratch", "mountPath": scratch}]
    init = {
        "name": "prepare",
        "image": "busybox",
        "command": ["sh", "-c", f"echo prepared > {scratch}/ready"],
        "volumeMounts": mounts,
    }
    # Fails on its first run, succeeds on the second: the marker survives in the emptyDir.
    flaky = {
        "name": "main",
        "image": "busybox",
        "command": ["sh", "-c"],
        "args": [
            f"cat {scratch}/ready; [ -f {scratch}/second ] && exit 0; touch {scratch}/second; exit 2"
        ],
        "volumeMounts": mounts,
    }
    job = {
        "apiVersion": "batch/v1",
        "kind": "Job",
        "metadata": {"name": "flaky"},
        "spec": {
            "backoffLimit": 3,
            "template": {
                "spec": {
                    "restartPolicy": "OnFailure",
                    "initContainers": [init],
                    "containers": [flaky],
                    "volumes": [{"name": "scratch", "emptyDir": {}}],
                }
            },
        },
    }
    client.BatchV1Api(api).create_namespaced_job(namespace, job)

    assert wait_job(api, namespace, "flaky") == "Complete"
    (pod,) = job_pods(api, namespace, "flaky")
    main = pod.status.container_statuses[0]
    assert main.restart_count == 1
    assert main.last_state.terminated.exit_code == 2
    assert main.state.terminated.exit_code == 0
    assert pod.status.init_container_statuses[0].state.terminated.reason == "Completed"
    assert pod_runner.logs(namespace, pod.metadata.name, "main") == "prepared\nprepared\n"


def test_control_plane_stops_cleanly_and_restarts_with_its_data(
    control_plane: ControlPlane, tmp_path: Path
) -> None:
    """SIGTERM closes etcd properly (exit 0), and the data directory starts again as it was."""
    second = ControlPlane(tmp_path / "cp", binary=control_plane.binary)
    with second, client.ApiClient(_admin_config(second)) as api:
        client.CoreV1Api(api).create_namespaced_config_map(
            "default", {"metadata": {"name": "kept"}, "data": {"k": "v"}}
        )
    assert second.returncode == 0
    assert not (tmp_path / "cp" / "ready").exists()
    with second, client.ApiClient(_admin_config(second)) as api:
        kept = client.CoreV1Api(api).read_namespaced_config_map("kept", "default")
        assert kept.data == {"k": "v"}
    assert second.returncode == 0


def _admin_config(cp: ControlPlane) -> client.Configuration:
    cfg = client.Configuration()
    config.load_kube_config(config_file=str(cp.kubeconfig), client_configuration=cfg)
    return cfg
