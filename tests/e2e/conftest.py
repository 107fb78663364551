"""End-to-end fixtures: the whole local platform and the operator installed by its chart.

By default every Pod runs from its image through runc (the pod runner on ``runc``): the operator
is the chart's Deployment installed by ``helm install``, its Jobs run the runner image against the
real services, as non-root on a read-only root filesystem. ``LAMASSU_POD_RUNTIME=host`` is the
debugging opt-in: the operator and the Jobs' containers run as host processes from this checkout.
"""

from __future__ import annotations

import time
import uuid
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
from kubernetes import client
from kubernetes.client.exceptions import ApiException

from lamassu_platform import sample
from lamassu_platform.operator_proc import Operator
from lamassu_platform.stack import NAMESPACE, Platform

GROUP, VERSION = "backup.lamassu.io", "v1alpha1"
REPO = Path(__file__).resolve().parents[2]


@pytest.fixture(scope="session")
def platform(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Platform]:
    with Platform(tmp_path_factory.mktemp("platform"), data_mib=10) as stack:
        yield stack


@pytest.fixture(scope="session")
def operator(platform: Platform, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Operator]:
    op = Operator(platform, tmp_path_factory.mktemp("operator") / "operator.log")
    op.start()
    yield op
    op.stop()


class Cluster:
    """Small API helpers for the tests."""

    def __init__(self, platform: Platform) -> None:
        self.platform = platform
        self.api = platform.api()
        self.custom = client.CustomObjectsApi(self.api)
        self.core = client.CoreV1Api(self.api)
        self.batch = client.BatchV1Api(self.api)

    def namespace(self) -> str:
        """A fresh namespace holding a copy of the sample Lamassu install."""
        name = f"e2e-{uuid.uuid4().hex[:6]}"
        self.install(name)
        return name

    def install(self, namespace: str) -> None:
        p = self.platform
        assert p.pg is not None
        assert p.openbao is not None
        assert p.s3 is not None
        assert p.gpg is not None
        sample.install(
            self.api,
            namespace=namespace,
            pg_host=p.pg.host,
            pg_port=p.pg.port,
            pg_user=p.pg.superuser,
            pg_password=p.pg.password,
            vault_address=p.openbao.address,
            vault_ca=p.openbao.ca_cert_path.read_bytes(),
            vault_token=p.openbao.create_operator_token("lamassu-kms"),
            s3_access_key=p.s3.access_key,
            s3_secret_key=p.s3.secret_key,
            recipients_asc=p.gpg.recipients_asc,
            signing_key_asc=p.gpg.signing_key_asc,
            signing_public_asc=p.gpg.signing_public_asc,
            decryption_key_asc=p.gpg.decryption_key_asc,
        )

    def policy(self, namespace: str, name: str, **spec_overrides: Any) -> dict[str, Any]:
        body = self.platform.sample_policy(name)
        body["metadata"]["namespace"] = namespace
        for key, value in spec_overrides.items():
            body["spec"][key] = value
        created: dict[str, Any] = self.custom.create_namespaced_custom_object(
            GROUP, VERSION, namespace, "lamassubackuppolicies", body
        )
        return created

    def backup(self, namespace: str, name: str, policy: str, **spec: Any) -> dict[str, Any]:
        body = {
            "apiVersion": f"{GROUP}/{VERSION}",
            "kind": "LamassuBackup",
            "metadata": {"name": name, "namespace": namespace},
            "spec": {"policyRef": {"name": policy}, **spec},
        }
        created: dict[str, Any] = self.custom.create_namespaced_custom_object(
            GROUP, VERSION, namespace, "lamassubackups", body
        )
        return created

    def get(self, plural: str, namespace: str, name: str) -> dict[str, Any] | None:
        try:
            obj: dict[str, Any] = self.custom.get_namespaced_custom_object(
                GROUP, VERSION, namespace, plural, name
            )
        except ApiException as exc:
            if exc.status == 404:
                return None
            raise
        return obj

    def backups(self, namespace: str, policy: str | None = None) -> list[dict[str, Any]]:
        items: list[dict[str, Any]] = self.custom.list_namespaced_custom_object(
            GROUP, VERSION, namespace, "lamassubackups"
        )["items"]
        return [b for b in items if policy is None or b["spec"]["policyRef"]["name"] == policy]

    def events(self, namespace: str, name: str) -> list[Any]:
        return [
            e
            for e in self.core.list_namespaced_event(namespace).items
            if e.involved_object.name == name
        ]

    def condition(self, obj: dict[str, Any] | None, type_: str) -> dict[str, Any]:
        for c in ((obj or {}).get("status") or {}).get("conditions") or []:
            if c["type"] == type_:
                return dict(c)
        return {}

    def jobs(self, namespace: str, backup: str) -> list[Any]:
        return list(
            self.batch.list_namespaced_job(
                namespace, label_selector=f"{GROUP}/backup={backup}"
            ).items
        )

    def wait(
        self, what: str, check: Callable[[], Any], timeout: float = 120, interval: float = 1.0
    ) -> Any:
        deadline = time.monotonic() + timeout
        last: Any = None
        while time.monotonic() < deadline:
            last = check()
            if last:
                return last
            time.sleep(interval)
        raise AssertionError(f"timed out after {timeout}s waiting for {what}")

    def wait_phase(
        self, namespace: str, name: str, phases: tuple[str, ...], timeout: float = 120
    ) -> dict[str, Any]:
        def check() -> dict[str, Any] | None:
            obj = self.get("lamassubackups", namespace, name)
            if obj and (obj.get("status") or {}).get("phase") in phases:
                return obj
            return None

        result: dict[str, Any] = self.wait(f"{namespace}/{name} to reach {phases}", check, timeout)
        return result


@pytest.fixture(scope="session")
def cluster(platform: Platform) -> Cluster:
    return Cluster(platform)


__all__ = ["NAMESPACE", "Cluster", "Operator"]
