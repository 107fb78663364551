"""The operator under the Helm chart: installed by ``helm install``, run as the chart's Pod.

Used by the end-to-end tests, ``make demo`` and the operator benchmark. With the platform's pod
runner on runc (``Platform(pod_runtime="runc")``), :class:`Operator` installs the chart with
``helm install`` (CRDs, RBAC, ServiceAccount, Deployment, Service) and runs the Deployment's Pod
from the operator image, with the projected ServiceAccount token that admission injects: the
chart, its RBAC, its securityContext and its values are what is tested. The control plane runs
the real Deployment and ReplicaSet controllers, so the Pod comes from the chart's Deployment as in
a cluster: ``kill()`` deletes it with grace period 0 and waits for the ReplicaSet's replacement;
``stop()`` takes the operator away for a while (the Deployment scaled to 0; with ``SIGKILL`` its
Pod is deleted with grace 0 as well, so it gets no time to finish) and ``start()`` scales it back
to 1 and waits until the new Pod serves metrics. Exactly one operator Pod exists at any time:
every wait also checks that.

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


def operator_pods(core: client.CoreV1Api) -> list[Any]:
    """The Pods of the chart's Deployment (by its selector), oldest first."""
    apps = client.AppsV1Api(core.api_client)
    selector = apps.read_namespaced_deployment(RELEASE, OPERATOR_NAMESPACE).spec.selector
    labels = ",".join(f"{k}={v}" for k, v in sorted((selector.match_labels or {}).items()))
    pods = core.list_namespaced_pod(OPERATOR_NAMESPACE, label_selector=labels).items
    return sorted(pods, key=lambda p: p.metadata.creation_timestamp)


def scale_operator(api: client.ApiClient, replicas: int) -> None:
    """Scale the chart's Deployment (what ``kubectl scale`` does)."""
    client.AppsV1Api(api).patch_namespaced_deployment_scale(
        RELEASE, OPERATOR_NAMESPACE, {"spec": {"replicas": replicas}}
    )


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
        self.pod_name = ""  # the current Pod's (the ReplicaSet names it)
        if self.pod_mode:
            self._install_chart()
        else:
            self.kubeconfig = chart_rbac_kubeconfig(platform, log.parent / "operator.kubeconfig")

    # ----------------------------------------------------------------------- chart's Pod
    def _install_chart(self) -> None:
        """``helm install`` of the chart, with the values a user would set for this cluster.

        The ReplicaSet creates the operator's Pod at once; :meth:`start` waits for it.
        """
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

    def _follow_log(self, pod_name: str) -> None:
        """Point ``self.log`` at this Pod's container log (one file per Pod, as a kubelet's)."""
        assert self.platform.pod_runner is not None
        target = self.platform.pod_runner.log_path(OPERATOR_NAMESPACE, pod_name, "operator")
        target.parent.mkdir(parents=True, exist_ok=True)
        target.touch()
        self.log.unlink(missing_ok=True)
        self.log.symlink_to(target)
        self.pod_name = pod_name

    def _wait_for_pod(self, *, not_named: str = "") -> None:
        """Wait until the Deployment's one Pod (not ``not_named``) serves metrics.

        Fails if two operator Pods exist at once, or if the Pod ends (CrashLoopBackOff shows
        in its status and log).
        """
        deadline = time.monotonic() + 90
        while time.monotonic() < deadline:
            live = [p for p in operator_pods(self.core) if not p.metadata.deletion_timestamp]
            assert len(live) <= 1, f"two operator Pods: {[p.metadata.name for p in live]}"
            if live and live[0].metadata.name != not_named:
                pod = live[0]
                if pod.metadata.name != self.pod_name:
                    self._follow_log(pod.metadata.name)
                if self._metrics_up():
                    return
                for st in pod.status.container_statuses or []:
                    waiting = st.state.waiting
                    # Never fixed by waiting: say so now rather than after the timeout.
                    assert waiting is None or waiting.reason not in (
                        "ErrImageNeverPull",
                        "CreateContainerConfigError",
                    ), f"the operator Pod cannot start: {waiting.reason}: {waiting.message}"
                assert pod.status.phase not in ("Succeeded", "Failed"), (
                    f"the operator Pod ended ({pod.status.phase}): "
                    + self.log.read_bytes().decode(errors="replace")[-3000:]
                    + str(pod.status.container_statuses)
                )
            time.sleep(0.3)
        raise TimeoutError(
            "the operator Pod did not serve metrics: "
            + (self.log.read_bytes().decode(errors="replace")[-3000:] if self.pod_name else "")
        )

    def _start_pod(self) -> None:
        if (
            client.AppsV1Api(self.api)
            .read_namespaced_deployment_scale(RELEASE, OPERATOR_NAMESPACE)
            .spec.replicas
            != 1
        ):
            scale_operator(self.api, 1)
        self._wait_for_pod()

    def _delete_pods(self, grace: int) -> None:
        for pod in operator_pods(self.core):
            try:
                self.core.delete_namespaced_pod(
                    pod.metadata.name, OPERATOR_NAMESPACE, grace_period_seconds=grace
                )
            except ApiException as exc:
                if exc.status != 404:
                    raise

    def _stop_pod(self, sig: int) -> None:
        """Scale to 0 (the ReplicaSet deletes the Pod, SIGTERM and the grace period); with
        SIGKILL also delete it with grace 0 once the ReplicaSet asks for none, so that no
        replacement is created in between."""
        scale_operator(self.api, 0)
        grace = 30
        if sig == signal.SIGKILL:
            grace = 0
            apps = client.AppsV1Api(self.api)
            deadline = time.monotonic() + 30
            while any(
                (rs.spec.replicas or 0) > 0
                for rs in apps.list_namespaced_replica_set(OPERATOR_NAMESPACE).items
                if any(o.name == RELEASE for o in rs.metadata.owner_references or [])
            ):
                if time.monotonic() > deadline:
                    raise TimeoutError("the operator's ReplicaSet was not scaled to 0")
                time.sleep(0.05)
            self._delete_pods(0)
        deadline = time.monotonic() + grace + 30
        while operator_pods(self.core) or self._metrics_up():
            if time.monotonic() > deadline:
                raise TimeoutError(f"the operator Pod {self.pod_name} did not stop")
            time.sleep(0.2)

    def kill(self) -> None:
        """Kill the operator as a person would: delete its Pod with grace 0; the Deployment
        brings a new one, and this waits until it serves."""
        if not self.pod_mode:
            self.stop(signal.SIGKILL)
            self.start()
            return
        old = self.pod_name
        self._delete_pods(0)
        self._wait_for_pod(not_named=old)

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
        """The operator gone until :meth:`start`. SIGTERM: a graceful stop; SIGKILL: killed at
        once (in Pod mode the Deployment scaled to 0 and the Pod deleted with grace 0)."""
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
            live = [
                p
                for p in operator_pods(self.core)
                if p.status.phase == "Running" and not p.metadata.deletion_timestamp
            ]
            return len(live) == 1
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
