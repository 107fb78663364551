"""The config plan (create / update with changed keys / unchanged) and what apply sends."""

from __future__ import annotations

import io
import tarfile

import pytest

from lamassu_backup.components.config.backup import config_archive
from lamassu_backup.components.config.restore import apply_body, plan_changes, read_archive
from lamassu_backup.errors import IntegrityError


def cm(name: str, data: dict[str, str], **meta: dict[str, str]) -> dict[str, object]:
    return {
        "apiVersion": "v1",
        "kind": "ConfigMap",
        "metadata": {"name": name, **meta},
        "data": data,
    }


def secret(name: str, data: dict[str, str], type_: str = "Opaque") -> dict[str, object]:
    return {
        "apiVersion": "v1",
        "kind": "Secret",
        "metadata": {"name": name},
        "type": type_,
        "data": data,
    }


def test_plan_create_update_unchanged() -> None:
    desired = [
        cm("ca-config", {"config": "a", "extra": "1"}),
        cm("kms-config", {"config": "k"}),
        secret("downstream-cert", {"tls.crt": "Y2VydA=="}),
    ]
    live = {
        ("ConfigMap", "ca-config"): cm("ca-config", {"config": "b", "byhand": "x"}),
        ("ConfigMap", "kms-config"): None,
        ("Secret", "downstream-cert"): secret("downstream-cert", {"tls.crt": "Y2VydA=="}),
    }
    changes = {c.name: c for c in plan_changes(desired, live)}
    assert changes["ca-config"].action == "update"
    assert changes["ca-config"].changed == ["config", "extra"]
    assert changes["ca-config"].kept == ["byhand"]
    assert changes["ca-config"].detail() == "keys config, extra; kept live-only keys byhand"
    assert changes["kms-config"].action == "create"
    assert changes["downstream-cert"].action == "unchanged"


def test_plan_sees_labels_and_secret_type_but_never_prints_values() -> None:
    desired = [
        cm("ca-config", {"config": "s3cr3t"}, labels={"app": "ca"}),
        secret("tls", {"tls.crt": "QUJD"}, "kubernetes.io/tls"),
    ]
    live = {
        ("ConfigMap", "ca-config"): cm("ca-config", {"config": "s3cr3t"}, labels={"app": "old"}),
        ("Secret", "tls"): secret("tls", {"tls.crt": "QUJD"}),
    }
    changes = plan_changes(desired, live)
    assert [c.changed for c in changes] == [["metadata.labels"], ["type"]]
    assert "s3cr3t" not in repr(changes)


def test_archive_round_trip_with_the_backup_side() -> None:
    objects = {
        ("ConfigMap", "ca-config"): {
            "kind": "ConfigMap",
            "metadata": {"name": "ca-config", "resourceVersion": "7", "uid": "u"},
            "data": {"config": "x"},
        },
        ("Secret", "tls"): {
            "kind": "Secret",
            "metadata": {"name": "tls"},
            "type": "Opaque",
            "data": {"k": "dg=="},
        },
    }
    read = read_archive(config_archive(objects, "20261124T100000Z"), "config/config.tar.gz.gpg")
    assert [(o["kind"], o["metadata"]["name"]) for o in read] == [
        ("ConfigMap", "ca-config"),
        ("Secret", "tls"),
    ]
    assert "resourceVersion" not in read[0]["metadata"]


def test_archive_refuses_other_objects() -> None:
    buffer = io.BytesIO()
    with tarfile.open(fileobj=buffer, mode="w:gz") as tar:
        data = b"kind: Pod\nmetadata: {name: x}\n"
        info = tarfile.TarInfo("configmaps/x.yaml")
        info.size = len(data)
        tar.addfile(info, io.BytesIO(data))
    with pytest.raises(IntegrityError, match="not a ConfigMap or Secret"):
        read_archive(buffer.getvalue(), "k")
    with pytest.raises(IntegrityError, match="not a readable config archive"):
        read_archive(b"not gzip", "k")


def test_apply_body_targets_the_namespace_and_drops_server_fields() -> None:
    body = apply_body(
        {
            "kind": "Secret",
            "metadata": {"name": "tls", "namespace": "old", "labels": {"a": "b"}, "uid": "x"},
            "type": "kubernetes.io/tls",
            "data": {"tls.crt": "QQ=="},
        },
        "lamassu",
    )
    assert body == {
        "apiVersion": "v1",
        "kind": "Secret",
        "metadata": {"name": "tls", "namespace": "lamassu", "labels": {"a": "b"}},
        "data": {"tls.crt": "QQ=="},
        "type": "kubernetes.io/tls",
    }
