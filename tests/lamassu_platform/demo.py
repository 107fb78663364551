"""``make demo``: the operator on the local platform, a policy, an on-demand backup, the result.

Expects ``make platform-up`` to have run. Installs the operator as a user would, with
``helm install`` of the chart; the control plane's Deployment and ReplicaSet controllers create
its Pod, which the pod runner runs from the operator image. Applies the sample policy for the sample Lamassu install, asks for a
backup now, waits for it, and shows ``kubectl get lamassu`` and the objects in the S3 server; if
the backup does not complete, says why. Ports are free ones, so two clones' demos do not clash.
With ``LAMASSU_POD_RUNTIME=host`` the operator runs as a host process instead
(``.platform/operator.log``).
"""

from __future__ import annotations

import argparse
import contextlib
import os
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import boto3
import yaml
from kubernetes import client, config
from kubernetes.client.exceptions import ApiException

from ._util import free_port
from .operator_proc import OPERATOR_NAMESPACE, RELEASE, install_chart, operator_pods

OPERATOR_PID = "operator.pid"
GROUP, VERSION = "backup.lamassu.io", "v1alpha1"


def _env(state: Path) -> dict[str, str]:
    out: dict[str, str] = {}
    for line in (state / "env").read_text().splitlines():
        if line.startswith("export ") and not line.startswith("export PATH="):
            key, _, value = line[len("export ") :].partition("=")
            out[key] = value.strip("'")
    return out


def operator_log(state: Path, api: client.ApiClient | None = None) -> Path:
    """Where the operator's output is: the pod runner's log of its Pod's container (the newest
    Pod of the chart's Deployment), or the host process's."""
    if _pod_runtime(state) == "runc":
        logs = state / "run" / "pods" / "logs"
        pod = ""
        if api is not None:
            with contextlib.suppress(ApiException):
                found = operator_pods(client.CoreV1Api(api))
                pod = found[-1].metadata.name if found else ""
        if pod:
            return logs / f"{OPERATOR_NAMESPACE}_{pod}_operator.log"
        newest = sorted(
            logs.glob(f"{OPERATOR_NAMESPACE}_{RELEASE}-*_operator.log"),
            key=lambda p: p.stat().st_mtime,
        )
        return newest[-1] if newest else logs / f"{OPERATOR_NAMESPACE}_{RELEASE}_operator.log"
    return state / "operator.log"


def _pod_runtime(state: Path) -> str:
    path = state / "pod-runtime"
    return path.read_text().strip() if path.exists() else "host"


def start_operator_pod(state: Path, api: client.ApiClient) -> str:
    """``helm install`` of the chart (its ReplicaSet creates the operator's Pod); returns the
    metrics URL. A second ``make demo`` on a running platform keeps a healthy operator Pod."""
    core = client.CoreV1Api(api)
    try:
        pods = operator_pods(core)
    except ApiException as exc:
        if exc.status != 404:
            raise
        pods = []
    live = [p for p in pods if not p.metadata.deletion_timestamp]
    if live and live[-1].status.phase in ("Pending", "Running"):
        port = next(
            p.container_port for p in live[-1].spec.containers[0].ports if p.name == "metrics"
        )
        return f"http://127.0.0.1:{port}/metrics"
    # No Pod, or a failed one: an upgrade with fresh ports rolls the Deployment (Recreate, so
    # never two operator Pods).
    port = free_port()
    values = {
        "image": {"pullPolicy": "Never"},
        "metrics": {"port": port},
        "healthPort": free_port(),
    }
    install_chart(state / "kubeconfig", values, state)
    return f"http://127.0.0.1:{port}/metrics"


def start_operator(state: Path) -> int:
    """The operator as a background process; its pid is kept for platform-down."""
    pidfile = state / OPERATOR_PID
    if pidfile.exists():
        try:
            os.kill(int(pidfile.read_text()), 0)
            return int(pidfile.read_text())
        except (ProcessLookupError, ValueError):
            pidfile.unlink()
    env = {
        **os.environ,
        "KUBECONFIG": str(state / "kubeconfig"),
        "LAMASSU_METRICS_PORT": os.environ.get("LAMASSU_METRICS_PORT") or str(free_port()),
    }
    env.pop("KUBERNETES_SERVICE_HOST", None)
    log = (state / "operator.log").open("ab")
    proc = subprocess.Popen(
        [sys.executable, "-m", "lamassu_backup", "operator", "--health-port", "0"],
        env=env,
        stdout=log,
        stderr=subprocess.STDOUT,
        start_new_session=True,
    )
    pidfile.write_text(str(proc.pid))
    return proc.pid


def main() -> int:
    parser = argparse.ArgumentParser(prog="python -m lamassu_platform.demo")
    parser.add_argument("--state", type=Path, default=Path(".platform"))
    parser.add_argument("--timeout", type=float, default=300)
    args = parser.parse_args()
    state = args.state.resolve()
    if not (state / "ready").exists():
        print("the platform is not running: run `make platform-up` first")
        return 1
    env = _env(state)
    cfg = client.Configuration()
    config.load_kube_config(config_file=str(state / "kubeconfig"), client_configuration=cfg)
    api = client.ApiClient(cfg)
    custom = client.CustomObjectsApi(api)
    if _pod_runtime(state) == "runc":
        url = start_operator_pod(state, api)
        print(
            f"operator installed with helm (release {RELEASE} in {OPERATOR_NAMESPACE}); its Pod "
            f"runs from the operator image (log {operator_log(state, api)}, metrics {url})"
        )
    else:
        pid = start_operator(state)
        print(f"operator running as a host process (pid {pid}, log {operator_log(state)})")
    policy: dict[str, Any] = yaml.safe_load((state / "policy.yaml").read_text())
    namespace = policy["metadata"]["namespace"]
    try:
        custom.create_namespaced_custom_object(
            GROUP, VERSION, namespace, "lamassubackuppolicies", policy
        )
        print(
            f"created LamassuBackupPolicy {namespace}/{policy['metadata']['name']} (from {state}/policy.yaml)"
        )
    except ApiException as exc:
        if exc.status != 409:
            raise
    name = f"demo-{time.strftime('%Y%m%d%H%M%S', time.gmtime())}"
    backup = {
        "apiVersion": f"{GROUP}/{VERSION}",
        "kind": "LamassuBackup",
        "metadata": {"name": name, "namespace": namespace},
        "spec": {"policyRef": {"name": policy["metadata"]["name"]}},
    }
    custom.create_namespaced_custom_object(GROUP, VERSION, namespace, "lamassubackups", backup)
    print(f"created LamassuBackup {namespace}/{name}; waiting for it ...")
    deadline = time.monotonic() + args.timeout
    status: dict[str, Any] = {}
    while time.monotonic() < deadline:
        status = (
            custom.get_namespaced_custom_object(
                GROUP, VERSION, namespace, "lamassubackups", name
            ).get("status")
            or {}
        )
        if status.get("phase") in ("Completed", "PartiallyFailed", "Failed"):
            break
        time.sleep(1)
    subprocess.run(
        ["kubectl", "--kubeconfig", str(state / "kubeconfig"), "get", "lamassu", "-n", namespace],
        check=False,
    )
    location = str(status.get("location") or "")
    if location:
        s3 = boto3.client(
            "s3",
            endpoint_url=env["LAMASSU_S3_ENDPOINT"],
            region_name=env.get("AWS_DEFAULT_REGION", "us-east-1"),
            aws_access_key_id=env["AWS_ACCESS_KEY_ID"],
            aws_secret_access_key=env["AWS_SECRET_ACCESS_KEY"],
        )
        bucket, _, prefix = location.removeprefix("s3://").partition("/")
        print(f"\nobjects in {location}")
        for item in s3.list_objects_v2(Bucket=bucket, Prefix=prefix).get("Contents", []):
            print(f"  {item['Size']:>12}  {item['Key'][len(prefix) :]}")
    if env.get("LAMASSU_CA_URL"):
        print(lamassu_summary(lamassu_urls(env)))
    phase = status.get("phase")
    print(
        f"\nbackup {name}: {phase}. Try: . {state}/env; kubectl describe lamassubackup {name} -n {namespace}"
    )
    if phase != "Completed":
        print(why_not_completed(api, status, operator_log(state, api)))
    print("Stop everything with: make platform-down")
    return 0 if phase == "Completed" else 1


def lamassu_urls(env: dict[str, str]) -> dict[str, str]:
    """Service name -> base URL, from the platform's ``LAMASSU_<SERVICE>_URL`` variables."""
    from .lamassu import SERVICES

    names = {f"LAMASSU_{n.upper().replace('-', '_')}_URL": n for n in SERVICES}
    return {names[k]: v for k, v in env.items() if k in names}


def lamassu_summary(urls: dict[str, str]) -> str:
    """What the protected Lamassu holds, in its own API's words (not the backup's)."""
    from .lamassu import LamassuClient

    api = LamassuClient.of(urls)
    try:
        cas, certificates = api.stats()
        health = api.health_by_service()
        counts = [f"{cas} CAs", f"{certificates} certificates"]
        if "device-manager" in urls:
            counts.append(f"{api.device_count()} devices")
        if "dms-manager" in urls:
            counts.append(f"{api.dms_count()} DMSs")
    except Exception as exc:  # noqa: BLE001 - the demo says why, it does not hide the backup's result
        return (
            f"\nLamassu IoT v3.8.0 at {urls['ca']}: its API did not answer ({type(exc).__name__})"
        )
    services = ", ".join(f"{n} {'healthy' if ok else 'DOWN'}" for n, ok in health.items())
    return (
        f"\nLamassu IoT v3.8.0 (the real services: {services}) at {urls['ca']}: "
        f"{', '.join(counts)}, as its APIs (/v1/stats) report them"
    )


def why_not_completed(api: client.ApiClient, status: dict[str, Any], log: Path) -> str:
    """The reason a backup did not complete: its own conditions and components, else the
    operator's state (a Pod that cannot start says so in its status and its last log line)."""
    lines = []
    for cond in status.get("conditions") or []:
        if cond.get("status") == "True" and cond.get("message"):
            lines.append(f"  {cond['type']}: {cond.get('reason', '')} {cond['message']}")
    for comp, value in (status.get("components") or {}).items():
        if value.get("phase") != "Completed":
            lines.append(
                f"  {comp}: {value.get('phase')} {value.get('reason', '')} {value.get('message', '')}"
            )
    if not status:
        lines.append("  the operator never picked the backup up")
        try:
            pods = operator_pods(client.CoreV1Api(api))
        except ApiException as exc:
            if exc.status != 404:
                raise
            pods = []
        if not pods:
            lines.append("  operator Pod: none (the Deployment has no Pod)")
        for pod in pods[-1:]:
            for st in pod.status.container_statuses or []:
                state = st.state.waiting or st.state.terminated
                if state is not None:
                    lines.append(
                        f"  operator Pod {pod.metadata.name}: {state.reason}: "
                        f"{state.message or ''}".rstrip()
                    )
        if log.exists():
            tail = log.read_text(errors="replace").strip().splitlines()[-1:]
            lines += [f"  operator log: {t}" for t in tail]
    return "why:\n" + "\n".join(lines) if lines else "why: (no reason recorded)"


if __name__ == "__main__":
    raise SystemExit(main())
