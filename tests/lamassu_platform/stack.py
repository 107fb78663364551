"""The whole local platform in one object: what ``make platform-up`` runs and e2e tests use.

Control plane, pod runner, PostgreSQL with sample Lamassu data, an S3/KMS server, OpenBao with the
CA keys, GnuPG keys, the CRDs, and a sample Lamassu install in namespace ``lamassu``. Started in
dependency order, stopped in reverse, every process accounted for.
"""

from __future__ import annotations

import contextlib
import os
import shlex
import sys
import time
from pathlib import Path
from types import TracebackType
from typing import Any, Self

import yaml
from kubernetes import client, config
from kubernetes.client.exceptions import ApiException

from lamassu_backup.builders import crd

from . import datagen, images, sample
from .controlplane import ControlPlane
from .gpg import GpgKeys, make_keys
from .lamassu import SERVICES, Lamassu
from .lamassu_pods import LamassuPods
from .openbao import OpenBao
from .podrunner import PodRunner
from .postgres import PostgresServer
from .s3 import S3Server

BUCKET = "lamassu-backups"
KV_MOUNT = "lamassu-kms"
NAMESPACE = "lamassu"


def api_client(kubeconfig: Path) -> client.ApiClient:
    """An admin API client for the platform's control plane."""
    cfg = client.Configuration()
    config.load_kube_config(config_file=str(kubeconfig), client_configuration=cfg)
    return client.ApiClient(cfg)


def apply_crds(api: client.ApiClient, timeout: float = 30) -> None:
    """Create or update the CRDs and wait until they are Established."""
    ext = client.ApiextensionsV1Api(api)
    for doc in crd.all_crds():
        name = doc["metadata"]["name"]
        try:
            ext.create_custom_resource_definition(doc)
        except ApiException as exc:
            if exc.status != 409:
                raise
            doc["metadata"]["resourceVersion"] = ext.read_custom_resource_definition(
                name
            ).metadata.resource_version
            ext.replace_custom_resource_definition(name, doc)
    deadline = time.monotonic() + timeout
    for doc in crd.all_crds():
        while True:
            conditions = (
                ext.read_custom_resource_definition(doc["metadata"]["name"]).status.conditions or []
            )
            if any(c.type == "Established" and c.status == "True" for c in conditions):
                break
            if time.monotonic() > deadline:
                raise TimeoutError(
                    f"CRD {doc['metadata']['name']} not Established after {timeout}s"
                )
            time.sleep(0.2)


class Platform:
    """Every service of the local platform."""

    def __init__(
        self,
        root: Path,
        *,
        data_mib: int = 20,
        seed: int = 1,
        extra_env: dict[str, str] | None = None,
        lamassu: bool | None = None,
        pod_runtime: str | None = None,
    ) -> None:
        self.root = root.resolve()
        # "runc" (the default): every Pod from its image (scripts/build-images.sh), the operator
        # as the chart's Pod; "host": containers as host processes, the image ignored (a
        # debugging opt-in). LAMASSU_POD_RUNTIME chooses too.
        self.pod_runtime = pod_runtime or os.environ.get("LAMASSU_POD_RUNTIME") or "runc"
        # The real Lamassu (all six services) on the data set; opt in (or LAMASSU_PLATFORM_REAL=1).
        self.with_lamassu = (
            lamassu if lamassu is not None else os.environ.get("LAMASSU_PLATFORM_REAL") == "1"
        )
        self.lamassu: Lamassu | None = None
        # With the pod runner on runc, the real Lamassu runs as the chart's workloads (kms
        # StatefulSet, ca Deployment) in the sample namespace, so a restore scales real
        # workloads; LAMASSU_SERVICES=host keeps them host processes (a few seconds faster).
        self.lamassu_pods = (
            self.pod_runtime == "runc" and os.environ.get("LAMASSU_SERVICES", "pods") != "host"
        )
        self.data_mib = data_mib
        self.seed = seed
        self.extra_env = extra_env or {}
        self.control_plane: ControlPlane | None = None
        self.pod_runner: PodRunner | None = None
        self.images: dict[str, images.Image] = {}
        self.pg: PostgresServer | None = None
        self.s3: S3Server | None = None
        self.openbao: OpenBao | None = None
        self.gpg: GpgKeys | None = None
        self.dataset: datagen.Dataset | None = None
        self.kms_key_arn = ""
        self._stack = contextlib.ExitStack()

    def __enter__(self) -> Self:
        return self.start()

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.stop()

    def start(self) -> Self:
        """Start everything; on any failure, stop what was started and re-raise."""
        self.root.mkdir(parents=True, exist_ok=True)
        try:
            self.control_plane = self._stack.enter_context(ControlPlane(self.root / "controlplane"))
            runc = self.pod_runtime == "runc"
            names = ("operator", "runner") + (
                ("lamassu",) if self.with_lamassu and self.lamassu_pods else ()
            )
            self.images = images.build(names) if runc else {}
            self.pod_runner = self._stack.enter_context(
                PodRunner(
                    self.control_plane.kubeconfig,
                    self.root / "pods",
                    extra_env=self.extra_env,
                    images=self.images,
                    host_processes=not runc,
                )
            )
            self.pg = self._stack.enter_context(PostgresServer(self.root / "postgres"))
            self.dataset = datagen.generate(self.pg, self.data_mib, seed=self.seed)
            self.s3 = self._stack.enter_context(S3Server(self.root / "s3"))
            self.s3.create_bucket(BUCKET)
            _, self.kms_key_arn = self.s3.create_kms_key(alias="alias/lamassu-backups")
            self.openbao = self._stack.enter_context(
                OpenBao(self.root / "openbao", kv_mount=KV_MOUNT)
            )
            self.openbao.write_keys(KV_MOUNT, self.dataset.private_keys)
            if self.with_lamassu and not self.lamassu_pods:
                # Its vault-1 engine reads the data set's CA keys from the same mount.
                self.lamassu = self._stack.enter_context(
                    Lamassu(
                        self.root / "lamassu",
                        self.pg,
                        openbao=self.openbao,
                        vault_mount=KV_MOUNT,
                        services=SERVICES,
                    )
                )
            self.gpg = make_keys(self.root / "gpg")
            self._stack.callback(self.gpg.cleanup)
            api = self.api()
            apply_crds(api)
            sample.install(
                api,
                namespace=NAMESPACE,
                pg_host=self.pg.host,
                pg_port=self.pg.port,
                pg_user=self.pg.superuser,
                pg_password=self.pg.password,
                vault_address=self.openbao.address,
                vault_ca=self.openbao.ca_cert_path.read_bytes(),
                vault_token=self.openbao.create_operator_token(KV_MOUNT),
                s3_access_key=self.s3.access_key,
                s3_secret_key=self.s3.secret_key,
                recipients_asc=self.gpg.recipients_asc,
                signing_key_asc=self.gpg.signing_key_asc,
                signing_public_asc=self.gpg.signing_public_asc,
                decryption_key_asc=self.gpg.decryption_key_asc,
            )
            if self.with_lamassu and self.lamassu_pods:
                # After the sample install: its placeholder ConfigMaps are replaced by the
                # real ones before the workloads start.
                self.lamassu = self._stack.enter_context(
                    Lamassu(
                        self.root / "lamassu",
                        self.pg,
                        openbao=self.openbao,
                        vault_mount=KV_MOUNT,
                        services=SERVICES,
                        pods=LamassuPods(
                            api=api,
                            namespace=NAMESPACE,
                            pod_runner=self.pod_runner,
                            image=images.ref_of(self.images, "lamassu"),
                        ),
                    )
                )
            elif self.lamassu is not None:
                core = client.CoreV1Api(api)
                for cm in self.lamassu.configmaps(NAMESPACE):
                    name = cm["metadata"]["name"]
                    try:
                        core.replace_namespaced_config_map(name, NAMESPACE, cm)
                    except ApiException as exc:
                        if exc.status != 404:
                            raise
                        core.create_namespaced_config_map(NAMESPACE, cm)
        except BaseException:
            self.stop()
            raise
        return self

    def stop(self) -> None:
        """Stop everything started, in reverse order."""
        self._stack.close()

    def api(self) -> client.ApiClient:
        """Admin API client."""
        assert self.control_plane is not None
        return api_client(self.control_plane.kubeconfig)

    def sample_policy(self, name: str = "lamassu", **overrides: Any) -> dict[str, Any]:
        """The sample policy for the sample install, pointing at the local services."""
        assert self.pg is not None
        assert self.openbao is not None
        assert self.s3 is not None
        assert self.dataset is not None
        return sample.policy(
            namespace=NAMESPACE,
            name=name,
            pg_host=self.pg.host,
            pg_port=self.pg.port,
            databases=list(self.dataset.databases),
            vault_address=self.openbao.address,
            s3_endpoint=self.s3.endpoint,
            bucket=BUCKET,
            kms_key_arn=self.kms_key_arn,
            **overrides,
        )

    def env(self, kubeconfig: Path | None = None) -> dict[str, str]:
        """What a shell needs to reach every service (passwords and tokens stay in files)."""
        assert self.control_plane is not None
        assert self.pg is not None
        assert self.s3 is not None
        assert self.openbao is not None
        assert self.gpg is not None
        return {
            "KUBECONFIG": str(kubeconfig or self.control_plane.kubeconfig),
            "LAMASSU_S3_ENDPOINT": self.s3.endpoint,
            "LAMASSU_S3_BUCKET": BUCKET,
            "LAMASSU_KMS_KEY_ARN": self.kms_key_arn,
            "AWS_ENDPOINT_URL": self.s3.endpoint,
            "AWS_DEFAULT_REGION": self.s3.region,
            "AWS_ACCESS_KEY_ID": self.s3.access_key,
            "AWS_SECRET_ACCESS_KEY": self.s3.secret_key,
            "LAMASSU_PG_DSN": f"postgresql://{self.pg.superuser}@{self.pg.host}:{self.pg.port}/postgres",
            "PGHOST": self.pg.host,
            "PGPORT": str(self.pg.port),
            "PGUSER": self.pg.superuser,
            "PGPASSFILE": str(self.pg.pgpass_file),
            "VAULT_ADDR": self.openbao.address,
            "BAO_ADDR": self.openbao.address,
            "VAULT_CACERT": str(self.openbao.ca_cert_path),
            "LAMASSU_VAULT_TOKEN_FILE": str(self.openbao.token_file),
            "GNUPGHOME": str(self.gpg.operator_home),
            # LAMASSU_CA_URL, LAMASSU_KMS_URL, LAMASSU_DEVICE_MANAGER_URL, ...
            **{
                f"LAMASSU_{name.upper().replace('-', '_')}_URL": url
                for name, url in (self.lamassu.urls() if self.lamassu is not None else {}).items()
            },
        }

    def write_files(self, out: Path) -> None:
        """``out/kubeconfig``, ``out/env`` (shell-sourceable) and ``out/policy.yaml``."""
        assert self.control_plane is not None
        out.mkdir(parents=True, exist_ok=True)
        (out / "kubeconfig").write_bytes(self.control_plane.kubeconfig.read_bytes())
        (out / "kubeconfig").chmod(0o600)
        lines = [f"export {k}={shlex.quote(v)}" for k, v in self.env(out / "kubeconfig").items()]
        # The project's commands (kubectl lamassu, lamassu-backup) on the shell's PATH too.
        lines.append(f'export PATH={shlex.quote(str(Path(sys.executable).parent))}:"$PATH"')
        (out / "env").write_text("# Source me: . .platform/env\n" + "\n".join(lines) + "\n")
        (out / "env").chmod(0o600)
        (out / "policy.yaml").write_text(yaml.safe_dump(self.sample_policy(), sort_keys=False))


def platform_pids(root: Path, session: int | None = None) -> list[int]:
    """Processes of the platform: in the supervisor's session, or naming ``root`` on their
    command line (PostgreSQL detaches from the session). ``platform-down`` must leave none."""
    found = []
    needle = str(root.resolve())
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit() or int(entry.name) == os.getpid():
            continue
        try:
            cmdline = (entry / "cmdline").read_bytes().replace(b"\0", b" ").decode(errors="replace")
            stat = (entry / "stat").read_text()
        except OSError:
            continue
        fields = stat.rsplit(")", 1)[-1].split()
        sid = int(fields[3]) if len(fields) > 3 else -1
        state = fields[0] if fields else "?"
        if state == "Z":
            continue  # already dead, waiting to be reaped
        if needle in cmdline or (session is not None and sid == session):
            found.append(int(entry.name))
    return found
