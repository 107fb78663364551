"""The operator under the Helm chart: installed by ``helm install``, run as the chart's Pod.

Used by the end-to-end tests, ``make demo`` and the operator benchmark. With the platform's pod
runner on runc (``Platform(pod_runtime="runc")``), :class:`Operator` installs the chart with
``helm install`` (CRDs, RBAC, ServiceAccount, Deployment, Service) and runs the Deployment's Pod
from the operator image, with the projected ServiceAccount token that admission injects: the
chart, its RBAC, its securityContext and its values are what is tested. The test control plane
has no Deployment controller, so :class:`Operator` plays its part for the one Pod: ``start()``
creates it from the Deployment's template, ``stop()`` deletes it (``SIGKILL``: grace period 0).

With host-process Pods, the operator runs as a host process (``lamassu-backup operator``) with a
kubeconfig holding a token of the chart's ServiceAccount, so a permission missing from the chart
still fails here as it would in a cluster.
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import requests
import yaml
from kubernetes import client, config, utils
from kubernetes.client.exceptions import ApiException

from . import images
from ._util import REPO_ROOT, free_port
from .stack import Platform

REPO = REPO_ROOT

OPERATOR_NAMESPACE = "lamassu-backup"
OPERATOR_ACCOUNT = "lamassu-backup-operator"
RELEASE = "lamassu-backup-operator"
CHART = REPO / "helm" / "lamassu-backup-operator"


def helm_binary() -> str:
    """The Helm CLI (built from its Go module by scripts/build-helm.sh, cached)."""
    out = subprocess.run(
        ["bash", str(REPO / "scripts" / "build-helm.sh")],
        capture_output=True,
        text=True,
        check=True,
    )
    return out.stdout.strip().splitlines()[-1]


def _ensure_namespace(core: client.CoreV1Api, name: str, labels: dict[str, str]) -> None:
    try:
        core.create_namespace({"metadata": {"name": name, "labels": labels}})
    except ApiException as exc:
        if exc.status != 409:
            raise


def install_chart(kubeconfig: Path, values: dict[str, Any], workdir: Path) -> None:
    """``helm install`` (or ``upgrade``) of the chart into a namespace enforcing ``restricted``."""
    cfg = client.Configuration()
    config.load_kube_config(config_file=str(kubeconfig), client_configuration=cfg)
    core = client.CoreV1Api(client.ApiClient(cfg))
    _ensure_namespace(
        core, OPERATOR_NAMESPACE, {"pod-security.kubernetes.io/enforce": "restricted"}
    )
    values_file = workdir / "operator-values.yaml"
    values_file.write_text(yaml.safe_dump(values))
    helm = helm_binary()
    status = subprocess.run(
        [helm, "status", RELEASE, "-n", OPERATOR_NAMESPACE, "--kubeconfig", str(kubeconfig)],
        capture_output=True,
        check=False,
    )
    verb = "upgrade" if status.returncode == 0 else "install"
    subprocess.run(
        [
            *(helm, verb, RELEASE, str(CHART)),
            *("--namespace", OPERATOR_NAMESPACE, "--kubeconfig", str(kubeconfig)),
            *("--values", str(values_file)),
        ],
        capture_output=True,
        text=True,
        check=True,
    )


def create_operator_pod(api: client.ApiClient, name: str) -> None:
    """The Pod a ReplicaSet would create from the chart's Deployment (the test control plane runs
    no Deployment controller)."""
    deployment = client.AppsV1Api(api).read_namespaced_deployment(RELEASE, OPERATOR_NAMESPACE)
    template = api.sanitize_for_serialization(deployment.spec.template)
    metadata = dict(template.get("metadata") or {})
    metadata["name"] = name
    pod = {"apiVersion": "v1", "kind": "Pod", "metadata": metadata, "spec": template["spec"]}
    client.CoreV1Api(api).create_namespaced_pod(OPERATOR_NAMESPACE, pod)


def chart_rbac_kubeconfig(platform: Platform, out: Path) -> Path:
    """Install the chart's ServiceAccount and RBAC, and a kubeconfig holding that account's token.

    The operator in the e2e tests runs with exactly the permissions the chart grants, against an
    apiserver with RBAC on: a missing rule fails these tests, as it would fail a real install.
    """
    assert platform.control_plane is not None
    helm = (
        subprocess.run(
            ["bash", str(REPO / "scripts" / "build-helm.sh")],
            capture_output=True,
            text=True,
            check=True,
        )
        .stdout.strip()
        .splitlines()[-1]
    )
    rendered = subprocess.run(
        [
            helm,
            "template",
            "lamassu-backup-operator",
            str(REPO / "helm" / "lamassu-backup-operator"),
            "--namespace",
            OPERATOR_NAMESPACE,
            "--show-only",
            "templates/serviceaccount.yaml",
            "--show-only",
            "templates/rbac.yaml",
        ],
        capture_output=True,
        text=True,
        check=True,
    ).stdout
    api = platform.api()
    core = client.CoreV1Api(api)
    try:
        core.create_namespace({"metadata": {"name": OPERATOR_NAMESPACE}})
    except ApiException as exc:
        if exc.status != 409:
            raise
    for doc in yaml.safe_load_all(rendered):
        if doc:
            try:
                utils.create_from_dict(api, doc, namespace=OPERATOR_NAMESPACE)
            except utils.FailToCreateError as exc:
                if not all(getattr(e, "status", None) == 409 for e in exc.api_exceptions):
                    raise
    return account_kubeconfig(platform, OPERATOR_NAMESPACE, OPERATOR_ACCOUNT, out, seconds=86400)


def account_kubeconfig(
    platform: Platform, namespace: str, account: str, out: Path, *, seconds: int = 3600
) -> Path:
    """A kubeconfig holding a fresh token of a ServiceAccount: requests made with it get exactly
    that account's permissions from the real apiserver (RBAC on)."""
    assert platform.control_plane is not None
    token = (
        client.CoreV1Api(platform.api())
        .create_namespaced_service_account_token(
            account, namespace, {"spec": {"expirationSeconds": seconds}}
        )
        .status.token
    )
    kubeconfig = {
        "apiVersion": "v1",
        "kind": "Config",
        "clusters": [
            {
                "name": "local",
                "cluster": {
                    "server": platform.control_plane.server,
                    "certificate-authority": str(platform.control_plane.ca_file),
                },
            }
        ],
        "users": [{"name": account, "user": {"token": token}}],
        "contexts": [{"name": account, "context": {"cluster": "local", "user": account}}],
        "current-context": account,
    }
    out.write_text(yaml.safe_dump(kubeconfig))
    out.chmod(0o600)
    return out


FAST_SETTINGS = {
    "LAMASSU_POLICY_MAX_SLEEP_SECONDS": "5",
    "LAMASSU_DISCOVERY_INTERVAL_SECONDS": "20",
    "LAMASSU_SECRET_CHECK_SECONDS": "5",
}


class Operator:
    """The operator process (under the chart's RBAC); can be stopped, killed and started again."""

    def __init__(
        self, platform: Platform, log: Path, *, fast: bool = True, pod: bool | None = None
    ) -> None:
        self.platform = platform
        # Tests shorten the operator's periods so that they see effects in seconds; a benchmark
        # measures the shipped defaults (fast=False).
        self.settings = FAST_SETTINGS if fast else {}
        self.log = log
        self.metrics_port = free_port()
        self.health_port = free_port()
        self.proc: subprocess.Popen[bytes] | None = None
        # The chart's Pod needs the pod runner on runc (containers from images).
        self.pod_mode = platform.pod_runtime == "runc" if pod is None else pod
        self.pod_name = f"{RELEASE}-0"
        if self.pod_mode:
            self._install_chart()
        else:
            self.kubeconfig = chart_rbac_kubeconfig(platform, log.parent / "operator.kubeconfig")

    # ----------------------------------------------------------------------- chart's Pod
    def _install_chart(self) -> None:
        """``helm install`` of the chart, with the values a user would set for this cluster."""
        assert self.platform.control_plane is not None
        assert self.platform.pod_runner is not None
        ref = images.ref_of(self.platform.images, "operator")
        repository, _, tag = ref.rpartition(":")
        values = {
            "image": {"repository": repository, "tag": tag, "pullPolicy": "Never"},
            "metrics": {"port": self.metrics_port},
            "healthPort": self.health_port,
            "extraEnv": [{"name": k, "value": v} for k, v in self.settings.items()],
        }
        install_chart(self.platform.control_plane.kubeconfig, values, self.log.parent)
        self.api = self.platform.api()
        self.core = client.CoreV1Api(self.api)
        # One log across restarts (same Pod name): the pod runner appends to it.
        target = self.platform.pod_runner.log_path(OPERATOR_NAMESPACE, self.pod_name, "operator")
        target.parent.mkdir(parents=True, exist_ok=True)
        target.touch()
        self.log.unlink(missing_ok=True)
        self.log.symlink_to(target)

    def _pod_gone(self) -> bool:
        try:
            self.core.read_namespaced_pod(self.pod_name, OPERATOR_NAMESPACE)
        except ApiException as exc:
            if exc.status == 404:
                return True
            raise
        return False

    def _start_pod(self) -> None:
        deadline = time.monotonic() + 60
        while not self._pod_gone():  # a Pod still terminating keeps its name
            if time.monotonic() > deadline:
                raise TimeoutError(f"the previous {self.pod_name} is still terminating")
            time.sleep(0.2)
        create_operator_pod(self.api, self.pod_name)
        offset = self.log.stat().st_size
        deadline = time.monotonic() + 90
        while time.monotonic() < deadline:
            try:
                if requests.get(f"http://127.0.0.1:{self.metrics_port}/metrics", timeout=1).ok:
                    return
            except requests.RequestException:
                pass
            pod = self.core.read_namespaced_pod(self.pod_name, OPERATOR_NAMESPACE)
            assert pod.status.phase not in ("Succeeded", "Failed"), (
                f"the operator Pod ended ({pod.status.phase}): "
                + self.log.read_bytes()[offset:].decode(errors="replace")[-3000:]
                + str(pod.status.container_statuses)
            )
            time.sleep(0.3)
        raise TimeoutError(
            "the operator Pod did not serve metrics: "
            + self.log.read_bytes()[offset:].decode(errors="replace")[-3000:]
        )

    def _stop_pod(self, sig: int) -> None:
        grace = 0 if sig == signal.SIGKILL else 30
        try:
            self.core.delete_namespaced_pod(
                self.pod_name, OPERATOR_NAMESPACE, grace_period_seconds=grace
            )
        except ApiException as exc:
            if exc.status != 404:
                raise
        deadline = time.monotonic() + grace + 30
        while not self._pod_gone() or self._metrics_up():
            if time.monotonic() > deadline:
                raise TimeoutError(f"the operator Pod {self.pod_name} did not stop")
            time.sleep(0.2)

    def _metrics_up(self) -> bool:
        try:
            return requests.get(f"http://127.0.0.1:{self.metrics_port}/metrics", timeout=1).ok
        except requests.RequestException:
            return False

    # ------------------------------------------------------------------------- lifecycle
    def start(self) -> None:
        if self.pod_mode:
            self._start_pod()
            return
        assert self.platform.control_plane is not None
        env = {
            **os.environ,
            "KUBECONFIG": str(self.kubeconfig),
            "LAMASSU_METRICS_PORT": str(self.metrics_port),
            **self.settings,
            "PYTHONPATH": os.pathsep.join([str(REPO / "operator"), str(REPO / "tests")]),
        }
        env.pop("KUBERNETES_SERVICE_HOST", None)
        handle = self.log.open("ab")
        self.proc = subprocess.Popen(
            [sys.executable, "-m", "lamassu_backup", "operator", "--health-port", "0"],
            env=env,
            stdout=handle,
            stderr=subprocess.STDOUT,
            start_new_session=True,
        )
        deadline = time.monotonic() + 60
        while time.monotonic() < deadline:
            try:
                if requests.get(f"http://127.0.0.1:{self.metrics_port}/metrics", timeout=1).ok:
                    return
            except requests.RequestException:
                pass
            assert self.proc.poll() is None, self.log.read_text()[-3000:]
            time.sleep(0.3)
        raise TimeoutError("the operator did not start")

    def stop(self, sig: int = signal.SIGTERM) -> None:
        """SIGTERM: a graceful stop; SIGKILL: killed at once (the Pod deleted with grace 0)."""
        if self.pod_mode:
            self._stop_pod(sig)
            return
        if self.proc is not None and self.proc.poll() is None:
            os.killpg(self.proc.pid, sig)
            try:
                self.proc.wait(timeout=30)
            except subprocess.TimeoutExpired:
                os.killpg(self.proc.pid, signal.SIGKILL)
                self.proc.wait()
        self.proc = None

    @property
    def running(self) -> bool:
        if self.pod_mode:
            try:
                pod = self.core.read_namespaced_pod(self.pod_name, OPERATOR_NAMESPACE)
            except ApiException as exc:
                if exc.status == 404:
                    return False
                raise
            return bool(pod.status.phase == "Running" and not pod.metadata.deletion_timestamp)
        return self.proc is not None and self.proc.poll() is None

    def metrics(self) -> str:
        return requests.get(f"http://127.0.0.1:{self.metrics_port}/metrics", timeout=5).text

    def rss_mib(self) -> float:
        """Resident memory of the operator process (host-process mode: what the benchmark uses)."""
        assert self.proc is not None, "rss_mib needs the operator as a host process (pod=False)"
        for line in Path(f"/proc/{self.proc.pid}/status").read_text().splitlines():
            if line.startswith("VmRSS:"):
                return int(line.split()[1]) / 1024
        return 0.0

    def cpu_seconds(self) -> float:
        """CPU time (user + system) the operator process has used (host-process mode)."""
        assert self.proc is not None, "cpu_seconds needs the operator as a host process"
        fields = Path(f"/proc/{self.proc.pid}/stat").read_text().rsplit(")", 1)[1].split()
        ticks = os.sysconf("SC_CLK_TCK")
        return (int(fields[11]) + int(fields[12])) / ticks
