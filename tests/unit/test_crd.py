"""The CRD generator writes structural schemas the apiserver accepts, with the models' rules."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest
import yaml

from lamassu_backup.builders import crd
from lamassu_backup.models.resources import KINDS

ROOT = Path(__file__).resolve().parents[2]
CRD_DIRS = [ROOT / "crds", ROOT / "helm" / "lamassu-backup-operator" / "crds"]


def walk(node: Any, path: str = "") -> list[tuple[str, dict[str, Any]]]:
    """Every schema node with its path."""
    out: list[tuple[str, dict[str, Any]]] = []
    if isinstance(node, dict):
        out.append((path, node))
        for key, child in node.get("properties", {}).items():
            out.extend(walk(child, f"{path}.{key}"))
        if isinstance(node.get("items"), dict):
            out.extend(walk(node["items"], f"{path}[]"))
        if isinstance(node.get("additionalProperties"), dict):
            out.extend(walk(node["additionalProperties"], f"{path}{{}}"))
    return out


@pytest.fixture(scope="module", params=KINDS, ids=lambda k: k.kind)
def generated(request: pytest.FixtureRequest) -> dict[str, Any]:
    return crd.build_crd(request.param)


def schema_of(doc: dict[str, Any]) -> dict[str, Any]:
    schema: dict[str, Any] = doc["spec"]["versions"][0]["schema"]["openAPIV3Schema"]
    return schema


def test_committed_crds_match_the_models() -> None:
    rendered = crd.render_all()
    for directory in CRD_DIRS:
        committed = {p.name: p.read_text() for p in directory.glob("backup.lamassu.io_*.yaml")}
        assert committed == rendered, f"{directory} is stale: run `make crds`"


def test_structural(generated: dict[str, Any]) -> None:
    for path, node in walk(schema_of(generated)):
        assert "$ref" not in node, path
        assert "title" not in node, path
        assert "const" not in node, path
        if "anyOf" in node:
            assert node.get("x-kubernetes-int-or-string") is True, path
        if "properties" in node:
            assert "additionalProperties" not in node, path
            assert node.get("type") == "object", path
        assert node.get("additionalProperties") is not True, path
        if path:
            assert "type" in node or node.get("x-kubernetes-int-or-string"), path


def test_every_spec_field_is_described(generated: dict[str, Any]) -> None:
    spec = schema_of(generated)["properties"]["spec"]
    missing = [p for p, node in walk(spec, "spec") if p.count(".") and "description" not in node]
    missing = [p for p in missing if not p.endswith("[]") and not p.endswith("{}")]
    assert missing == []


def test_metadata(generated: dict[str, Any]) -> None:
    spec = generated["spec"]
    assert spec["group"] == "backup.lamassu.io"
    assert spec["scope"] == "Namespaced"
    assert spec["names"]["categories"] == ["lamassu"]
    assert spec["names"]["shortNames"]
    version = spec["versions"][0]
    assert version["name"] == "v1alpha1"
    assert version["subresources"] == {"status": {}}
    names = [c["name"] for c in version["additionalPrinterColumns"]]
    assert names[-1] == "Age"


def test_printer_columns_match_api_sketch() -> None:
    columns = {k.kind: [c.name.upper() for c in k.columns if c.priority == 0] for k in KINDS}
    assert columns["LamassuBackupPolicy"] == [
        "SCHEDULE",
        "LAST SUCCESS",
        "NEXT",
        "STALE",
        "READY",
        "AGE",
    ]
    assert columns["LamassuBackup"] == [
        "POLICY",
        "PHASE",
        "SIZE",
        "STARTED",
        "DURATION",
        "VERIFIED",
        "AGE",
    ]
    assert columns["LamassuRestore"] == ["BACKUP", "MODE", "PHASE", "STEP", "RTO", "AGE"]


def test_defaults_are_in_the_schema() -> None:
    policy = schema_of(crd.build_crd(KINDS[0]))["properties"]["spec"]["properties"]
    assert policy["schedule"]["default"] == "0 * * * *"
    assert policy["startingDeadline"]["default"] == "30m"
    assert policy["retention"]["default"] == {}
    assert policy["retention"]["properties"]["keepLast"]["default"] == 24
    pg = policy["components"]["properties"]["postgres"]["properties"]
    assert pg["databases"]["default"] == [
        "ca",
        "devicemanager",
        "dmsmanager",
        "alerts",
        "va",
        "kms",
    ]
    assert pg["recoveryPointObjective"]["default"] == "2h"
    assert pg["sslMode"]["enum"][0] == "disable"
    assert "default" not in pg["host"]


def test_cel_rules_are_emitted() -> None:
    rules = {
        rule["message"]
        for kind in KINDS
        for _, node in walk(schema_of(crd.build_crd(kind)))
        for rule in node.get("x-kubernetes-validations", [])
    }
    assert any("at least one component" in m for m in rules)
    assert any("needs spec.confirm" in m for m in rules)
    assert any("exactly one source" in m for m in rules)


def test_credentials_are_only_secret_references() -> None:
    """No spec field may hold a credential: only *Secret references (name + key)."""
    suspicious = ("password", "token", "secretaccesskey", "secretid", "passphrase", "privatekey")
    for kind in KINDS:
        spec = schema_of(crd.build_crd(kind))["properties"]["spec"]
        for path, node in walk(spec, "spec"):
            leaf = path.rsplit(".", 1)[-1].lower()
            if node.get("type") == "string" and any(s in leaf for s in suspicious):
                assert leaf.endswith("key"), f"{kind.kind} {path} looks like a plain credential"


def test_render_is_stable_yaml() -> None:
    first = crd.render_all()
    assert first == crd.render_all()
    for text in first.values():
        assert text.startswith("# Generated by `make crds`")
        assert yaml.safe_load(text)["kind"] == "CustomResourceDefinition"
