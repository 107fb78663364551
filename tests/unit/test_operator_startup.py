"""An operator that cannot start exits non-zero with one clear line (CrashLoopBackOff shows it).

Why: kopf retries a failing startup handler every 60 s, forever and silently; a second operator on
a taken metrics port once sat there while the demo timed out. The real command is run.
"""

from __future__ import annotations

import os
import socket
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest
import yaml

from lamassu_platform._util import REPO_ROOT, free_port


def run_operator(env: dict[str, str]) -> subprocess.CompletedProcess[str]:
    full = {
        **{k: v for k, v in os.environ.items() if not k.startswith(("LAMASSU_", "KUBE"))},
        "PYTHONPATH": str(REPO_ROOT / "operator"),
        **env,
    }
    return subprocess.run(
        [sys.executable, "-m", "lamassu_backup", "operator", "--health-port", "0"],
        env=full,
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )


@pytest.fixture
def kubeconfig_nowhere(tmp_path: Path) -> Path:
    """A kubeconfig naming a loopback port nothing listens on, with a token."""
    cfg = {
        "apiVersion": "v1",
        "kind": "Config",
        "clusters": [{"name": "c", "cluster": {"server": f"https://127.0.0.1:{free_port()}"}}],
        "users": [{"name": "u", "user": {"token": "not-a-real-token-but-secret-looking"}}],
        "contexts": [{"name": "x", "context": {"cluster": "c", "user": "u"}}],
        "current-context": "x",
    }
    path = tmp_path / "kubeconfig"
    path.write_text(yaml.safe_dump(cfg))
    return path


@pytest.fixture
def taken_port() -> Iterator[int]:
    with socket.socket() as sock:
        sock.bind(("0.0.0.0", 0))  # noqa: S104 - the metrics server binds all interfaces too
        sock.listen()
        yield int(sock.getsockname()[1])


def one_line(proc: subprocess.CompletedProcess[str]) -> str:
    lines = proc.stderr.strip().splitlines()
    assert len(lines) == 1, proc.stderr
    return lines[0]


def test_metrics_port_taken(taken_port: int, kubeconfig_nowhere: Path) -> None:
    proc = run_operator(
        {"LAMASSU_METRICS_PORT": str(taken_port), "KUBECONFIG": str(kubeconfig_nowhere)}
    )
    assert proc.returncode == 1
    line = one_line(proc)
    assert line.startswith("lamassu-backup operator: cannot start: ")
    assert f"cannot serve metrics on port {taken_port}: Address already in use" in line


def test_bad_setting(kubeconfig_nowhere: Path) -> None:
    proc = run_operator(
        {"LAMASSU_POLICY_MAX_SLEEP_SECONDS": "soon", "KUBECONFIG": str(kubeconfig_nowhere)}
    )
    assert proc.returncode == 1
    assert "bad settings" in one_line(proc)
    assert "soon" in proc.stderr


def test_no_api_access(kubeconfig_nowhere: Path) -> None:
    proc = run_operator({"LAMASSU_METRICS_PORT": "0", "KUBECONFIG": str(kubeconfig_nowhere)})
    assert proc.returncode == 1
    line = one_line(proc)
    assert "no access to the Kubernetes API" in line
    assert "not-a-real-token" not in proc.stderr + proc.stdout
