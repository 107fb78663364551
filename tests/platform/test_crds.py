"""The generated CRDs on the real apiserver: accepted, and refusing each invalid example itself."""

from __future__ import annotations

import json
import re
import subprocess
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import yaml
from kubernetes import client
from kubernetes.client.exceptions import ApiException

from lamassu_backup.builders import crd
from lamassu_backup.models.resources import GROUP, KINDS, KINDS_BY_NAME, VERSION
from lamassu_platform.controlplane import ControlPlane
from lamassu_platform.stack import api_client as platform_api
from lamassu_platform.stack import apply_crds

pytestmark = pytest.mark.platform
EXAMPLES = Path(__file__).resolve().parents[2] / "examples"


def api(control_plane: ControlPlane) -> client.ApiClient:
    return platform_api(control_plane.kubeconfig)


@pytest.fixture(scope="module")
def installed(control_plane: ControlPlane) -> client.ApiClient:
    """The CRDs applied and Established."""
    api_client = api(control_plane)
    apply_crds(api_client)
    return api_client


@pytest.fixture
def namespace(installed: client.ApiClient) -> Iterator[str]:
    core = client.CoreV1Api(installed)
    name = f"crd-{uuid.uuid4().hex[:6]}"
    core.create_namespace({"metadata": {"name": name}})
    yield name
    core.delete_namespace(name)


def create(api_client: client.ApiClient, namespace: str, obj: dict[str, Any]) -> dict[str, Any]:
    kind = KINDS_BY_NAME[obj["kind"]]
    obj = {**obj, "metadata": {**obj["metadata"], "namespace": namespace}}
    result: dict[str, Any] = client.CustomObjectsApi(api_client).create_namespaced_custom_object(
        GROUP, VERSION, namespace, kind.plural, obj, field_validation="Strict"
    )
    return result


def expectation(path: Path) -> str:
    match = re.search(r"^# expect-apiserver: (.+)$", path.read_text(), re.M)
    assert match, path
    return match.group(1).strip()


@pytest.mark.parametrize("path", sorted(EXAMPLES.glob("*.yaml")), ids=lambda p: p.name)
def test_valid_examples_are_accepted_with_defaults(
    installed: client.ApiClient, namespace: str, path: Path
) -> None:
    obj = yaml.safe_load(path.read_text())
    stored = create(installed, namespace, obj)
    assert stored["metadata"]["name"] == obj["metadata"]["name"]
    if obj["kind"] == "LamassuBackupPolicy":
        # Defaults come from the schema, applied by the apiserver itself.
        assert stored["spec"]["retention"]["keepFailed"] == 3
        assert stored["spec"]["runner"]["ttlAfterFinished"] == "1d"


@pytest.mark.parametrize(
    "path", sorted((EXAMPLES / "invalid").glob("*.yaml")), ids=lambda p: p.name
)
def test_invalid_examples_are_refused_by_the_apiserver(
    installed: client.ApiClient, namespace: str, path: Path
) -> None:
    obj = yaml.safe_load(path.read_text())
    with pytest.raises(ApiException) as info:
        create(installed, namespace, obj)
    assert info.value.status in (400, 422), info.value.body
    message = json.loads(info.value.body)["message"]
    assert expectation(path) in message


def test_kubectl_get_lamassu_lists_all_three_kinds(
    control_plane: ControlPlane, installed: client.ApiClient, namespace: str
) -> None:
    for name in ("policy-standard.yaml", "backup-on-demand.yaml", "restore-drill.yaml"):
        create(installed, namespace, yaml.safe_load((EXAMPLES / name).read_text()))
    out = subprocess.run(
        [
            "kubectl",
            "--kubeconfig",
            str(control_plane.kubeconfig),
            "get",
            "lamassu",
            "-n",
            namespace,
        ],
        capture_output=True,
        text=True,
        check=True,
    ).stdout
    assert "lamassubackuppolicy.backup.lamassu.io/lamassu" in out
    assert "lamassubackup.backup.lamassu.io/lamassu-before-upgrade" in out
    assert "lamassurestore.backup.lamassu.io/drill-2026-11" in out
    header = subprocess.run(
        ["kubectl", "--kubeconfig", str(control_plane.kubeconfig), "get", "lbp", "-n", namespace],
        capture_output=True,
        text=True,
        check=True,
    ).stdout.splitlines()[0]
    assert re.split(r"\s{2,}", header.strip()) == [
        "NAME",
        "SCHEDULE",
        "LAST SUCCESS",
        "NEXT",
        "STALE",
        "READY",
        "AGE",
    ]


def test_explain_shows_field_descriptions(
    control_plane: ControlPlane, installed: client.ApiClient
) -> None:
    out = subprocess.run(
        [
            "kubectl",
            "--kubeconfig",
            str(control_plane.kubeconfig),
            "explain",
            "lamassubackuppolicy.spec.retention.keepVerified",
        ],
        capture_output=True,
        text=True,
        check=True,
    ).stdout
    assert "never deleted" in out


def test_every_kind_has_a_crd() -> None:
    assert {d["spec"]["names"]["kind"] for d in crd.all_crds()} == {k.kind for k in KINDS}
