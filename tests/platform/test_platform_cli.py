"""`make platform-up` / `make platform-down` as a person uses them: files written, kubectl works,
nothing left running afterwards."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

from lamassu_platform.stack import platform_pids

pytestmark = pytest.mark.platform
REPO = Path(__file__).resolve().parents[2]


def run(*args: str, state: Path) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "lamassu_platform", *args, "--state", str(state)],
        capture_output=True,
        text=True,
        timeout=900,
        check=False,
        env={
            **os.environ,
            "LAMASSU_PLATFORM_DATA_MIB": "5",
            "PYTHONPATH": os.pathsep.join([str(REPO / "tests"), str(REPO / "operator")]),
        },
    )


def test_up_then_down(tmp_path: Path) -> None:
    state = tmp_path / "platform"
    up = run("up", state=state)
    try:
        assert up.returncode == 0, up.stdout + up.stderr + (state / "platform.log").read_text()
        for name in ("kubeconfig", "env", "policy.yaml"):
            assert (state / name).is_file(), name
        env_text = (state / "env").read_text()
        for var in (
            "KUBECONFIG",
            "LAMASSU_S3_ENDPOINT",
            "LAMASSU_PG_DSN",
            "VAULT_ADDR",
            "LAMASSU_VAULT_TOKEN_FILE",
            "GNUPGHOME",
        ):
            assert f"export {var}=" in env_text
        ns = subprocess.run(
            [
                "kubectl",
                "--kubeconfig",
                str(state / "kubeconfig"),
                "get",
                "ns",
                "lamassu",
                "-o",
                "name",
            ],
            capture_output=True,
            text=True,
            check=False,
        )
        assert ns.returncode == 0, ns.stderr
        assert ns.stdout.strip() == "namespace/lamassu"
        crds = subprocess.run(
            ["kubectl", "--kubeconfig", str(state / "kubeconfig"), "get", "lamassu", "-A"],
            capture_output=True,
            text=True,
            check=False,
        )
        assert crds.returncode == 0, crds.stderr
        # The real Lamassu runs as its chart's workloads, their Pods from the lamassu image,
        # all six (no message bus needed), after the chart's migration Jobs (deleted once done).
        expected = [
            "StatefulSet/kms=1",
            "Deployment/ca=1",
            "Deployment/device-manager=1",
            "StatefulSet/va=1",
            "Deployment/dms-manager=1",
            "Deployment/alerts=1",
        ]
        workloads = subprocess.run(
            [
                *("kubectl", "--kubeconfig", str(state / "kubeconfig"), "-n", "lamassu", "get"),
                *(w.split("=")[0].lower() for w in expected),
                "-o",
                "jsonpath={range .items[*]}{.kind}/{.metadata.name}={.status.readyReplicas} {end}",
            ],
            capture_output=True,
            text=True,
            check=False,
        )
        assert workloads.returncode == 0, workloads.stderr
        assert workloads.stdout.split() == expected
        jobs = subprocess.run(
            [
                *("kubectl", "--kubeconfig", str(state / "kubeconfig"), "-n", "lamassu", "get"),
                *("jobs", "-l", "app=migration", "-o", "name"),
            ],
            capture_output=True,
            text=True,
            check=False,
        )
        assert jobs.returncode == 0, jobs.stderr
        assert jobs.stdout.strip() == ""
        for var in ("LAMASSU_CA_URL", "LAMASSU_VA_URL", "LAMASSU_DMS_MANAGER_URL"):
            assert f"export {var}=" in env_text
        session = int((state / "platform.pid").read_text())
        assert platform_pids(state, session), "no platform process seen while it runs"
    finally:
        down = run("down", state=state)
    assert down.returncode == 0, down.stdout + down.stderr
    assert "no process left" in down.stdout
    assert platform_pids(state, session) == []
