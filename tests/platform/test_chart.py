"""The Helm chart: ``helm lint`` and what it renders with non-default values.

Why: a value the templates ignore (an image override, resources, a nodeSelector, extra env) is
a silent misconfiguration in a user's cluster; only rendering with non-default values shows it.
The real Helm CLI (built by scripts/build-helm.sh, cached) renders; nothing is mocked.
"""

from __future__ import annotations

import subprocess
from pathlib import Path
from typing import Any

import pytest
import yaml

from lamassu_backup import __version__
from lamassu_platform._util import REPO_ROOT

CHART = REPO_ROOT / "helm" / "lamassu-backup-operator"


@pytest.fixture(scope="module")
def helm() -> str:
    out = subprocess.run(
        ["bash", str(REPO_ROOT / "scripts" / "build-helm.sh")],
        capture_output=True,
        text=True,
        check=True,
    )
    return out.stdout.strip().splitlines()[-1]


def render(helm: str, values: dict[str, Any] | None, tmp_path: Path) -> dict[str, dict[str, Any]]:
    """``helm template`` -> {kind/name: object}."""
    args = [helm, "template", "lbo", str(CHART), "--namespace", "backup-system"]
    if values is not None:
        path = tmp_path / "values.yaml"
        path.write_text(yaml.safe_dump(values))
        args += ["--values", str(path)]
    text = subprocess.run(args, capture_output=True, text=True, check=True).stdout
    docs = [d for d in yaml.safe_load_all(text) if d]
    return {f"{d['kind']}/{d['metadata']['name']}": d for d in docs}


def test_helm_lint_strict(helm: str) -> None:
    out = subprocess.run(
        [helm, "lint", "--strict", str(CHART)], capture_output=True, text=True, check=False
    )
    assert out.returncode == 0, out.stdout + out.stderr
    assert "0 chart(s) failed" in out.stdout


def test_default_image_is_the_one_make_images_builds(helm: str, tmp_path: Path) -> None:
    objs = render(helm, None, tmp_path)
    pod = objs["Deployment/lbo-lamassu-backup-operator"]["spec"]["template"]["spec"]
    container = pod["containers"][0]
    assert container["image"] == f"ghcr.io/lamassuiot/lamassu-backup-operator:{__version__}"
    # Restricted Pod Security level: the chart's Pod runs where the Jobs' namespaces enforce it.
    assert pod["securityContext"]["runAsNonRoot"] is True
    assert pod["securityContext"]["seccompProfile"] == {"type": "RuntimeDefault"}
    assert container["securityContext"] == {
        "allowPrivilegeEscalation": False,
        "readOnlyRootFilesystem": True,
        "capabilities": {"drop": ["ALL"]},
    }
    assert "nodeSelector" not in pod


def test_non_default_values_reach_the_deployment(helm: str, tmp_path: Path) -> None:
    values = {
        "image": {"repository": "registry.example/lbo", "tag": "1.2.3", "pullPolicy": "Never"},
        "resources": {"requests": {"cpu": "250m", "memory": "300Mi"}, "limits": {"memory": "1Gi"}},
        "nodeSelector": {"node-role.example/backup": "true"},
        "tolerations": [{"key": "dedicated", "operator": "Equal", "value": "backup"}],
        "extraEnv": [
            {"name": "AWS_ENDPOINT_URL", "value": "https://s3.example"},
            {"name": "LAMASSU_SECRET_CHECK_SECONDS", "value": "60"},
        ],
        "watchNamespaces": ["lamassu", "lamassu-dr"],
        "metrics": {"port": 9555},
        "healthPort": 9556,
        "settings": {"backupResyncSeconds": 7},
        "commonLabels": {"team": "pki"},
    }
    objs = render(helm, values, tmp_path)
    deployment = objs["Deployment/lbo-lamassu-backup-operator"]
    assert deployment["metadata"]["labels"]["team"] == "pki"
    pod = deployment["spec"]["template"]["spec"]
    container = pod["containers"][0]
    assert container["image"] == "registry.example/lbo:1.2.3"
    assert container["imagePullPolicy"] == "Never"
    assert container["resources"] == values["resources"]
    assert pod["nodeSelector"] == {"node-role.example/backup": "true"}
    assert pod["tolerations"] == values["tolerations"]
    env = {e["name"]: e["value"] for e in container["env"]}
    assert env["AWS_ENDPOINT_URL"] == "https://s3.example"
    assert env["LAMASSU_SECRET_CHECK_SECONDS"] == "60"
    assert env["LAMASSU_METRICS_PORT"] == "9555"
    assert env["LAMASSU_BACKUP_RESYNC_SECONDS"] == "7"
    assert container["command"][-1] == "9556"
    assert container["args"] == ["--namespace", "lamassu", "--namespace", "lamassu-dr"]
    assert {p["name"]: p["containerPort"] for p in container["ports"]} == {
        "metrics": 9555,
        "health": 9556,
    }
    service = objs["Service/lbo-lamassu-backup-operator-metrics"]
    assert service["spec"]["ports"][0]["port"] == 9555
