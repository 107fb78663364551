"""``make demo``: the operator on the local platform, a policy, an on-demand backup, the result.

Expects ``make platform-up`` to have run. Starts the operator in the background (its log is
``.platform/operator.log``; ``make platform-down`` stops it), applies the sample policy for the
sample Lamassu install, asks for a backup now, waits for it, and shows ``kubectl get lamassu``
and the objects in the S3 server.
"""

from __future__ import annotations

import argparse
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

OPERATOR_PID = "operator.pid"
GROUP, VERSION = "backup.lamassu.io", "v1alpha1"


def _env(state: Path) -> dict[str, str]:
    out: dict[str, str] = {}
    for line in (state / "env").read_text().splitlines():
        if line.startswith("export "):
            key, _, value = line[len("export ") :].partition("=")
            out[key] = value.strip("'")
    return out


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
        "LAMASSU_METRICS_PORT": os.environ.get("LAMASSU_METRICS_PORT", "9180"),
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
    pid = start_operator(state)
    print(
        f"operator running (pid {pid}, log {state}/operator.log, metrics http://127.0.0.1:{os.environ.get('LAMASSU_METRICS_PORT', '9180')}/metrics)"
    )
    cfg = client.Configuration()
    config.load_kube_config(config_file=str(state / "kubeconfig"), client_configuration=cfg)
    api = client.ApiClient(cfg)
    custom = client.CustomObjectsApi(api)
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
    phase = status.get("phase")
    print(
        f"\nbackup {name}: {phase}. Try: . {state}/env; kubectl describe lamassubackup {name} -n {namespace}"
    )
    print("Stop everything with: make platform-down")
    return 0 if phase == "Completed" else 1


if __name__ == "__main__":
    raise SystemExit(main())
