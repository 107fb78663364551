"""The operator as a separate process, under the Helm chart's own RBAC.

Used by the end-to-end tests and the operator benchmark: the process is started exactly as in
production (``lamassu-backup operator``), with a kubeconfig holding a token of the chart's
ServiceAccount, so a permission missing from the chart fails here as it would in a cluster.
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import requests
import yaml
from kubernetes import client, utils
from kubernetes.client.exceptions import ApiException

from ._util import REPO_ROOT, free_port
from .stack import Platform

REPO = REPO_ROOT

OPERATOR_NAMESPACE = "lamassu-backup"
OPERATOR_ACCOUNT = "lamassu-backup-operator"


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
    token = core.create_namespaced_service_account_token(
        OPERATOR_ACCOUNT, OPERATOR_NAMESPACE, {"spec": {"expirationSeconds": 86400}}
    ).status.token
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
        "users": [{"name": "operator", "user": {"token": token}}],
        "contexts": [{"name": "operator", "context": {"cluster": "local", "user": "operator"}}],
        "current-context": "operator",
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

    def __init__(self, platform: Platform, log: Path, *, fast: bool = True) -> None:
        self.platform = platform
        # Tests shorten the operator's periods so that they see effects in seconds; a benchmark
        # measures the shipped defaults (fast=False).
        self.settings = FAST_SETTINGS if fast else {}
        self.log = log
        self.metrics_port = free_port()
        self.proc: subprocess.Popen[bytes] | None = None
        self.kubeconfig = chart_rbac_kubeconfig(platform, log.parent / "operator.kubeconfig")

    def start(self) -> None:
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
        return self.proc is not None and self.proc.poll() is None

    def metrics(self) -> str:
        return requests.get(f"http://127.0.0.1:{self.metrics_port}/metrics", timeout=5).text

    def rss_mib(self) -> float:
        """Resident memory of the operator process."""
        assert self.proc is not None
        for line in Path(f"/proc/{self.proc.pid}/status").read_text().splitlines():
            if line.startswith("VmRSS:"):
                return int(line.split()[1]) / 1024
        return 0.0

    def cpu_seconds(self) -> float:
        """CPU time (user + system) the operator process has used."""
        assert self.proc is not None
        fields = Path(f"/proc/{self.proc.pid}/stat").read_text().rsplit(")", 1)[1].split()
        ticks = os.sysconf("SC_CLK_TCK")
        return (int(fields[11]) + int(fields[12])) / ticks
