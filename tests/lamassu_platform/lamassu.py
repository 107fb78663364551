"""The real Lamassu IoT v3.8.0 services (``kms``, ``ca``, and on request ``device-manager``,
``va``, ``dms-manager``, ``alerts``) against the platform's PostgreSQL.

Why: the subject of every backup and restore test is the real Lamassu, not a copy of its schema.
The binaries are built from the pinned source by ``scripts/build-lamassu.sh`` (cached outside the
checkout). The services never migrate their databases: as the chart's hook Jobs do, we create the
six databases and run ``goose-lamassu <dsn> up`` for each before the first start (as the
chart's ``migration-db-<db>`` Jobs from the image when the services run as workloads).

The kms has two crypto engines, as an install can: ``filesystem-1`` (the chart's default, one PEM
file per key id in a directory that stands for the PVC) and ``vault-1`` (Vault KV v2 on the
platform's OpenBao, AppRole login, as Lamassu's own tests set it up). The configuration is the
chart's: ConfigMaps ``kms-config`` and ``ca-config``, key ``config``; :meth:`Lamassu.configmaps`
gives them as objects to install.

All six start without a message bus (each assembler in ``backend/pkg/assemblers/`` builds its
publisher and subscriber only ``if conf.<...>EventBus.Enabled``), so ``services=SERVICES`` runs
the whole backend. What is lost without the bus: the va creates a CA's ``va_role`` only on the
``ca.#`` events it subscribes to, and the device manager updates devices only on
``certificate.#`` events; their HTTP APIs and databases work. The dms-manager needs a
``downstream_cert_file`` (the chart's ``downstream-cert`` Secret). The tests start only
``CORE_SERVICES`` unless they ask: each further service costs about 0.1 s as a process and a
Pod start as a workload.

Two ways to run the services:

- as the chart's workloads (``pods=`` a :class:`~.lamassu_pods.LamassuPods`): kms a StatefulSet
  with its filesystem engine on the PVC ``golang-engine-storage-kms-0``, ca a Deployment, both from
  the ``lamassu`` image, their configs mounted from the ConfigMaps, run by the pod runner on runc
  (the control plane's controllers create and replace their Pods): what ``make demo`` and the
  e2e tests that scale Lamassu use;
- as host processes (no ``pods``): each reads its file through ``LAMASSU_CONFIG_FILE``, which is
  what the chart's mount at ``/etc/lamassuiot/config.yml`` gives; a few seconds faster, for the
  tests that never scale a workload (``LAMASSU_SERVICES=host`` asks for it everywhere).

Secrets: the database password and the AppRole secret_id are in the config files (mode 0600), as
in the chart's ConfigMaps; they never go into argv, logs or exception texts (``goose-lamassu``
gets the password through ``PGPASSWORD``).
"""

from __future__ import annotations

import base64
import contextlib
import hashlib
import os
import secrets
import subprocess
import time
from collections.abc import Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from types import TracebackType
from typing import Any, Self

import requests
import yaml
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import NameOID

from . import sample
from ._util import REPO_ROOT, free_port, stop_process, wait_for
from .lamassu_pods import (
    CRL_MOUNT,
    DOWNSTREAM_CERT,
    FS_MOUNT,
    VAULT_CA_CONFIGMAP,
    VAULT_CA_DIR,
    LamassuPods,
)
from .openbao import OpenBao
from .postgres import PostgresServer

VERSION = "v3.8.0"
SERVICES = ("kms", "ca", "device-manager", "va", "dms-manager", "alerts")
"""Every backend service of v3.8.0, in start order: each calls only those before it (ca the
kms; va the ca and kms; dms-manager the ca and device-manager)."""
CORE_SERVICES = ("kms", "ca")
"""What keys and signing need; the default, so a test pays only for what it uses."""
DATABASES = ("ca", "devicemanager", "dmsmanager", "alerts", "va", "kms")
"""Fixed in the services and in goose-lamassu (the migration folder is chosen by this name)."""
DB_USER = "lamassu"
FS_ENGINE = "filesystem-1"
VAULT_ENGINE = "vault-1"
DEFAULT_VAULT_MOUNT = "lamassu-pki"
APPROLE_ROLE = "lamassu-kms"
APPROLE_POLICY = "lamassu-kms"
KMS_BIND_KEY = "lamassu.io/kms/binded-resources"
"""kms_keys.metadata key linking a key to the certificates that use it (an imported CA whose
subject key id is not the key id is linked only through it)."""


def lamassu_bin_dir() -> Path:
    """The cached bin directory with ``ca``, ``kms``, ``goose-lamassu`` (builds on first use)."""
    override = os.environ.get("LAMASSU_BIN_DIR")
    if override:
        return Path(override)
    proc = subprocess.run(
        ["bash", str(REPO_ROOT / "scripts" / "build-lamassu.sh")],
        stdout=subprocess.PIPE,
        text=True,
        check=True,
        timeout=3600,
    )
    return Path(proc.stdout.strip().splitlines()[-1])


def vault_policy_hcl(mount: str) -> str:
    """What the kms needs: its KV v2 mount, and ``sys/mounts`` (it creates the mount if absent)."""
    return f"""
path "{mount}/*" {{
  capabilities = ["create", "read", "update", "delete", "list"]
}}
path "sys/mounts" {{
  capabilities = ["read", "list"]
}}
path "sys/mounts/*" {{
  capabilities = ["create", "read", "update", "delete", "list", "sudo"]
}}
"""


def setup_approle(openbao: OpenBao, mount: str) -> tuple[str, str]:
    """Enable AppRole, write the kms policy and role; return (role_id, secret_id).

    The role's token lives long: the kms logs in once at start and never renews it.
    """
    client = openbao.client()
    if "approle/" not in client.sys.list_auth_methods().get("data", {}):
        client.sys.enable_auth_method("approle")
    client.sys.create_or_update_policy(name=APPROLE_POLICY, policy=vault_policy_hcl(mount))
    client.auth.approle.create_or_update_approle(
        APPROLE_ROLE,
        token_policies=[APPROLE_POLICY],
        token_ttl="720h",
        token_max_ttl="720h",
    )
    role_id = str(client.auth.approle.read_role_id(APPROLE_ROLE)["data"]["role_id"])
    secret_id = str(client.auth.approle.generate_secret_id(APPROLE_ROLE)["data"]["secret_id"])
    return role_id, secret_id


@dataclass(frozen=True)
class VaultEngineSettings:
    """Where ``vault-1`` keeps its keys and how the kms logs in (AppRole)."""

    hostname: str
    port: int
    ca_file: Path
    mount: str
    role_id: str
    secret_id: str = field(repr=False)


def _server(port: int) -> dict[str, Any]:
    return {
        "log_level": "info",
        "health_check": False,
        "listen_address": "127.0.0.1",
        "port": port,
        "protocol": "http",
    }


_BUS_OFF: dict[str, Any] = {"enabled": False}


def http_client(port: int) -> dict[str, Any]:
    """A ``*_client`` section (``cconfig.HTTPClient``): another service over loopback, no auth."""
    return {
        "auth_mode": "noauth",
        "protocol": "http",
        "hostname": "127.0.0.1",
        "port": port,
        "base_path": "",
        "insecure_skip_verify": False,
    }


def _storage(pg: PostgresServer, password: str) -> dict[str, Any]:
    """Flat, as v3.8.0 reads it; no database name (each service knows its own)."""
    return {
        "provider": "postgres",
        "hostname": pg.host,
        "port": pg.port,
        "username": DB_USER,
        "password": password,
    }


def kms_config(
    *,
    port: int,
    pg: PostgresServer,
    db_password: str,
    fs_dir: Path,
    vault: VaultEngineSettings | None,
    default_engine: str = FS_ENGINE,
) -> dict[str, Any]:
    """The kms service's config (ConfigMap ``kms-config``): both engines, event bus off."""
    engines: list[dict[str, Any]] = [
        {
            "id": FS_ENGINE,
            "type": "filesystem",
            "storage_directory": str(fs_dir),
            "metadata": {},
        }
    ]
    if vault is not None:
        engines.append(
            {
                "id": VAULT_ENGINE,
                "type": "hashicorp_vault",
                "protocol": "https",
                "hostname": vault.hostname,
                "port": vault.port,
                "base_path": "",
                "ca_cert_file": str(vault.ca_file),
                "insecure_skip_verify": False,
                "role_id": vault.role_id,
                "secret_id": vault.secret_id,
                "auto_unseal_enabled": False,
                "mount_path": vault.mount,
                "metadata": {},
            }
        )
    return {
        "logs": {"level": "info"},
        "server": _server(port),
        "publisher_event_bus": {"enabled": False},
        "storage": _storage(pg, db_password),
        "crypto_engines": {
            "default_id": default_engine,
            "migrate_keys_format": False,
            "engines": engines,
        },
    }


def ca_config(*, port: int, kms_port: int, pg: PostgresServer, db_password: str) -> dict[str, Any]:
    """The ca service's config (ConfigMap ``ca-config``): kms over HTTP without auth."""
    return {
        "logs": {"level": "info"},
        "server": _server(port),
        "publisher_event_bus": {"enabled": False},
        "storage": _storage(pg, db_password),
        "kms_client": http_client(kms_port),
        "certificate_monitoring_job": {"enabled": False, "frequency": "* * * * *"},
        "va_server_domains": ["va.lamassu.test"],
        "allow_cascade_delete": False,
    }


def _common(port: int, pg: PostgresServer, db_password: str, *buses: str) -> dict[str, Any]:
    """What every service's config starts with; each ``<bus>_event_bus`` named is off."""
    return {
        "logs": {"level": "info"},
        "server": _server(port),
        "storage": _storage(pg, db_password),
        **{f"{bus}_event_bus": _BUS_OFF for bus in buses},
    }


def va_config(
    ports: Mapping[str, int], pg: PostgresServer, db_password: str, *, crl_dir: Path
) -> dict[str, Any]:
    """``va-config`` (``config.VAconfig``): CRLs on the local file store, all three buses off.
    ``ports``: each service's port by name (here and in the builders below)."""
    return {
        **_common(ports["va"], pg, db_password, "publisher", "subscriber", "subscriber_dlq"),
        "filesystem_storage": {
            "id": "local-crl",
            "type": "local",
            "storage_directory": str(crl_dir),
        },
        "crl_monitoring_job": {"enabled": False, "frequency": "* * * * *"},
        "ca_client": http_client(ports["ca"]),
        "kms_client": http_client(ports["kms"]),
        "va_domains": ["va.lamassu.test"],
    }


def device_manager_config(
    ports: Mapping[str, int], pg: PostgresServer, db_password: str
) -> dict[str, Any]:
    """``device-manager-config`` (``config.DeviceManagerConfig``): the ca over HTTP, buses off."""
    return {
        **_common(
            ports["device-manager"], pg, db_password, "publisher", "subscriber", "subscriber_dlq"
        ),
        "ca_client": http_client(ports["ca"]),
    }


def dms_manager_config(
    ports: Mapping[str, int], pg: PostgresServer, db_password: str, *, downstream_cert: Path
) -> dict[str, Any]:
    """``dms-manager-config`` (``config.DMSconfig``): it exits at start without a readable
    ``downstream_cert_file`` (``AssembleDMSManagerService``: "could not read downstream
    certificate")."""
    return {
        **_common(ports["dms-manager"], pg, db_password, "publisher"),
        "ca_client": http_client(ports["ca"]),
        "device_manager_client": http_client(ports["device-manager"]),
        "downstream_cert_file": str(downstream_cert),
    }


def alerts_config(ports: Mapping[str, int], pg: PostgresServer, db_password: str) -> dict[str, Any]:
    """``alerts-config`` (``config.AlertsConfig``): no bus, an SMTP server it never reaches
    (mail goes out only for subscriptions fed by events)."""
    return {
        **_common(ports["alerts"], pg, db_password, "subscriber", "subscriber_dlq"),
        "smtp_server": {
            "from": "lamassu@lamassu.test",
            "host": "127.0.0.1",
            "port": 25,
            "username": "",
            "password": "",
            "ssl": False,
            "insecure": False,
        },
    }


def downstream_ca_pem(common_name: str = "Lamassu Root Downstream CA") -> bytes:
    """A self-signed root, what the chart's ``downstream-cert`` Secret holds as ``ca.crt``
    (made as the sample install makes its own)."""
    return sample._tls_pair(common_name)[0]


def migrate(pg: PostgresServer, bin_dir: Path, password: str, databases: tuple[str, ...]) -> None:
    """``goose-lamassu <dsn> up`` per database, as the chart's ``migration-db-<db>`` hook Jobs."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("PG")}
    env["PGPASSWORD"] = password
    for db in databases:
        dsn = f"host={pg.host} port={pg.port} user={DB_USER} dbname={db} sslmode=disable"
        proc = subprocess.run(
            [str(bin_dir / "goose-lamassu"), dsn, "up"],
            env=env,
            capture_output=True,
            text=True,
            timeout=120,
            check=False,
        )
        if proc.returncode != 0:
            tail = "\n".join(proc.stderr.strip().splitlines()[-10:]).replace(password, "***")
            raise RuntimeError(
                f"goose-lamassu up on {db!r} failed (exit {proc.returncode}):\n{tail}"
            )


def goose_version(pg: PostgresServer, db: str) -> int:
    """The applied goose version of a database (what a restore must bring back with the data)."""
    out = pg.psql("SELECT max(version_id) FROM goose_db_version WHERE is_applied;", db).strip()
    return int(out or 0)


def csr_pem(common_name: str) -> str:
    """A fresh key's CSR (what a device sends when it enrols)."""
    key = ec.generate_private_key(ec.SECP256R1())
    csr = (
        x509.CertificateSigningRequestBuilder()
        .subject_name(x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, common_name)]))
        .sign(key, hashes.SHA256())
    )
    return csr.public_bytes(serialization.Encoding.PEM).decode()


def key_id_of(cert_pem: str) -> str:
    """Lamassu's key id for a certificate's key: SHA-256 hex of the DER SubjectPublicKeyInfo."""
    cert = x509.load_pem_x509_certificate(cert_pem.encode())
    spki = cert.public_key().public_bytes(
        serialization.Encoding.DER, serialization.PublicFormat.SubjectPublicKeyInfo
    )
    return hashlib.sha256(spki).hexdigest()


def openssl_verify(
    ca_pem: str, leaf_pem: str, tmp: Path, *, intermediates: str = ""
) -> subprocess.CompletedProcess[str]:
    """``openssl verify -CAfile ca [-untrusted chain] leaf``: the check a relying party makes."""
    (tmp / "ca.pem").write_text(ca_pem)
    (tmp / "leaf.pem").write_text(leaf_pem)
    chain = []
    if intermediates:
        (tmp / "chain.pem").write_text(intermediates)
        chain = ["-untrusted", str(tmp / "chain.pem")]
    return subprocess.run(
        ["openssl", "verify", "-CAfile", str(tmp / "ca.pem"), *chain, str(tmp / "leaf.pem")],
        capture_output=True,
        text=True,
        check=False,
    )


class LamassuError(RuntimeError):
    """A Lamassu API call answered with an error status (the body names the cause)."""

    def __init__(self, method: str, path: str, status: int, body: str) -> None:
        super().__init__(f"{method} {path}: HTTP {status}: {body[:400]}")
        self.status = status
        self.body = body


def pem_b64(pem: str | bytes) -> str:
    """How Lamassu's JSON carries certificates, CSRs and keys: base64 of the PEM text."""
    raw = pem.encode() if isinstance(pem, str) else pem
    return base64.b64encode(raw).decode("ascii")


def pem_from_b64(value: str) -> str:
    """The PEM text of a certificate as Lamassu returns it."""
    return base64.b64decode(value).decode("ascii")


@dataclass(frozen=True)
class CA:
    """The fields of a CA the tests use."""

    id: str
    serial_number: str
    subject_key_id: str
    type: str
    engine_id: str
    certificate_pem: str

    @classmethod
    def from_api(cls, body: Mapping[str, Any]) -> CA:
        cert = body["certificate"]
        return cls(
            id=str(body["id"]),
            serial_number=str(cert["serial_number"]),
            subject_key_id=str(cert.get("subject_key_id") or ""),
            type=str(cert.get("type") or ""),
            engine_id=str(cert.get("engine_id") or ""),
            certificate_pem=pem_from_b64(str(cert["certificate"])),
        )


@dataclass(frozen=True)
class Certificate:
    """The fields of a (leaf) certificate the tests use."""

    serial_number: str
    type: str
    issuer_id: str
    certificate_pem: str

    @classmethod
    def from_api(cls, body: Mapping[str, Any]) -> Certificate:
        return cls(
            serial_number=str(body["serial_number"]),
            type=str(body.get("type") or ""),
            issuer_id=str((body.get("issuer_metadata") or {}).get("id") or ""),
            certificate_pem=pem_from_b64(str(body["certificate"])),
        )


class LamassuClient:
    """The few calls of the ca (and kms, device-manager, dms-manager) HTTP APIs the tests
    need; raises :class:`LamassuError`. ``others``: base URLs of further services by name."""

    def __init__(
        self,
        ca_url: str,
        kms_url: str,
        *,
        others: Mapping[str, str] | None = None,
        timeout: float = 30,
    ) -> None:
        self.ca_url = ca_url.rstrip("/")
        self.kms_url = kms_url.rstrip("/")
        self.others = {k: v.rstrip("/") for k, v in (others or {}).items()}
        self.timeout = timeout
        self.session = requests.Session()

    @classmethod
    def of(cls, urls: Mapping[str, str], *, timeout: float = 30) -> LamassuClient:
        """A client for the services in ``urls`` (name -> base URL; ca and kms required)."""
        others = {k: v for k, v in urls.items() if k not in CORE_SERVICES}
        return cls(urls["ca"], urls["kms"], others=others, timeout=timeout)

    def _other(self, service: str) -> str:
        if service not in self.others:
            raise LookupError(f"this client has no URL for Lamassu {service}")
        return self.others[service]

    def _call(self, method: str, url: str, body: Mapping[str, Any] | None = None) -> Any:
        resp = self.session.request(method, url, json=body, timeout=self.timeout)
        if resp.status_code >= 300:
            raise LamassuError(method, url.split("/", 3)[-1], resp.status_code, resp.text)
        return resp.json() if resp.content else None

    def health(self) -> bool:
        """Every service's ``/health``: true says the processes run, nothing about keys or
        data."""
        return all(self.health_by_service().values())

    def health_by_service(self) -> dict[str, bool]:
        """``/health`` of each service, by name (false when it does not answer)."""
        urls = {"kms": self.kms_url, "ca": self.ca_url, **self.others}
        out = {}
        for name, url in urls.items():
            try:
                resp = self.session.get(f"{url}/health", timeout=5)
                out[name] = resp.status_code == 200 and resp.json().get("health") is True
            except (requests.RequestException, ValueError):
                out[name] = False
        return out

    def create_profile(self, name: str, *, sign_as_ca: bool = False, duration: str = "30d") -> str:
        """An issuance profile; returns its id."""
        body = {
            "name": name,
            "description": "lamassu-backup tests",
            "validity": {"type": "Duration", "duration": duration},
            "sign_as_ca": sign_as_ca,
            "honor_key_usage": False,
            "key_usage": ["DigitalSignature", "KeyEncipherment"]
            if not sign_as_ca
            else ["CertSign", "CRLSign", "DigitalSignature"],
            "honor_extended_key_usages": False,
            "extended_key_usages": [] if sign_as_ca else ["ClientAuth"],
            "honor_subject": True,
            "honor_extensions": True,
            "crypto_enforcement": {"enabled": False},
        }
        return str(self._call("POST", f"{self.ca_url}/v1/profiles", body)["id"])

    def create_ca(self, ca_id: str, common_name: str, *, profile_id: str, engine_id: str) -> CA:
        """A root CA whose key the kms generates in ``engine_id`` (type MANAGED)."""
        body = {
            "id": ca_id,
            "subject": {"common_name": common_name, "organization": "lamassu-backup tests"},
            "key_metadata": {"type": "ECDSA", "bits": 256},
            "ca_expiration": {"type": "Duration", "duration": "365d"},
            "profile_id": profile_id,
            "engine_id": engine_id,
            "metadata": {},
        }
        return CA.from_api(self._call("POST", f"{self.ca_url}/v1/cas", body))

    def import_ca(
        self,
        ca_id: str,
        certificate_pem: str,
        *,
        profile_id: str,
        key_pem: str | None = None,
        engine_id: str = "",
    ) -> CA:
        """Import a CA certificate, with its key (IMPORTED_WITH_KEY) or without."""
        body: dict[str, Any] = {
            "id": ca_id,
            "ca": pem_b64(certificate_pem),
            "ca_chain": [],
            "profile_id": profile_id,
            "engine_id": engine_id,
            "private_key": pem_b64(key_pem) if key_pem else "",
        }
        return CA.from_api(self._call("POST", f"{self.ca_url}/v1/cas/import", body))

    def sign_csr(self, ca_id: str, csr_pem: str, *, profile_id: str) -> Certificate:
        """Have the CA sign a CSR (the leaf is stored as IMPORTED_WITHOUT_KEY)."""
        body = {"csr": pem_b64(csr_pem), "profile_id": profile_id}
        return Certificate.from_api(
            self._call("POST", f"{self.ca_url}/v1/cas/{ca_id}/certificates/sign", body)
        )

    def _all(self, url: str) -> Iterator[dict[str, Any]]:
        bookmark = ""
        while True:
            query = f"?page_size=100&bookmark={bookmark}" if bookmark else "?page_size=100"
            page = self._call("GET", url + query)
            yield from page.get("list") or []
            bookmark = page.get("next") or ""
            if not bookmark:
                return

    def list_cas(self) -> list[CA]:
        """Every CA (all pages)."""
        return [CA.from_api(c) for c in self._all(f"{self.ca_url}/v1/cas")]

    def list_certificates(self) -> list[Certificate]:
        """Every certificate, CAs' included (all pages)."""
        return [Certificate.from_api(c) for c in self._all(f"{self.ca_url}/v1/certificates")]

    def stats(self) -> tuple[int, int]:
        """(CA count, certificate count) as the ca service's ``/v1/stats`` reports them."""
        body = self._call("GET", f"{self.ca_url}/v1/stats")
        return int(body["cas"]["total"]), int(body["certificates"]["total"])

    def create_device(self, device_id: str, *, dms_id: str) -> dict[str, Any]:
        """A device in the device manager (status NO_IDENTITY until a certificate is bound).
        ``dms_id``, ``icon`` and ``icon_color`` are required; the DMS is not looked up."""
        body = {
            "id": device_id,
            "alias": device_id,
            "tags": ["tests"],
            "metadata": {},
            "dms_id": dms_id,
            "icon": "CgSmartphoneChip",
            "icon_color": "#0068D1-#F1F2F8",
        }
        return dict(self._call("POST", f"{self._other('device-manager')}/v1/devices", body))

    def device_count(self) -> int:
        """Devices as the device manager's ``/v1/stats`` reports them."""
        return int(self._call("GET", f"{self._other('device-manager')}/v1/stats")["total"])

    def dms_count(self) -> int:
        """DMSs as the dms-manager's ``/v1/stats`` reports them."""
        return int(self._call("GET", f"{self._other('dms-manager')}/v1/stats")["total"])

    def kms_keys(self) -> list[dict[str, Any]]:
        """Every key the kms knows (its database view, not the engines')."""
        return list(self._all(f"{self.kms_url}/v1/keys"))

    def engines(self) -> list[dict[str, Any]]:
        """The crypto engines the kms has started."""
        return list(self._call("GET", f"{self.kms_url}/v1/engines") or [])


class Lamassu:
    """Databases migrated, then ``services`` running (``kms`` and ``ca`` at least, started in
    :data:`SERVICES` order); ``stop()`` ends them in reverse.

    ``root`` holds ``config/`` (one config file per service, and the dms-manager's downstream
    CA certificate), ``crypto/fs`` (the filesystem engine's keys: stands for the
    ``golang-engine-storage`` PVC), ``crl/`` (the va's file store: stands for
    ``local-crl-file-storage``; with ``pods``, the PVCs' own folders are used) and ``logs/``.
    With ``openbao`` given, the kms gets the ``vault-1`` engine on its ``vault_mount`` too.
    """

    def __init__(
        self,
        root: Path,
        pg: PostgresServer,
        *,
        openbao: OpenBao | None = None,
        vault_mount: str = DEFAULT_VAULT_MOUNT,
        bin_dir: Path | None = None,
        start_timeout: float = 30,
        pods: LamassuPods | None = None,
        services: Sequence[str] = CORE_SERVICES,
    ) -> None:
        unknown = set(services) - set(SERVICES)
        needs = {*CORE_SERVICES, *(("device-manager",) if "dms-manager" in services else ())}
        if unknown or not needs <= set(services):
            raise ValueError(
                f"services {sorted(services)}: each must be one of {SERVICES}, with"
                f" {sorted(needs)} among them (what the others call)"
            )
        self.services = tuple(s for s in SERVICES if s in services)
        self.root = root.resolve()
        self.pods = pods
        self.pg = pg
        self.openbao = openbao
        self.vault_mount = vault_mount
        self.bin_dir = bin_dir
        self.start_timeout = start_timeout
        self.config_dir = self.root / "config"
        self.fs_dir = pods.fs_dir if pods is not None else self.root / "crypto" / "fs"
        self.crl_dir = pods.crl_dir if pods is not None else self.root / "crl"
        self.log_dir = self.root / "logs"
        self.ports: dict[str, int] = {}
        self.startup_seconds: float | None = None
        self._password = ""
        self._procs: dict[str, subprocess.Popen[bytes]] = {}
        self._configs: dict[str, dict[str, Any]] = {}

    # -- lifecycle ------------------------------------------------------------------------------

    def __enter__(self) -> Self:
        return self.start()

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.stop()

    @property
    def password_file(self) -> Path:
        """The ``lamassu`` role's password (the config files carry it too, as the chart's do)."""
        return self.root / "db.password"

    def start(self) -> Self:
        """Role and databases (once), migrations, configs, then every service up and healthy."""
        began = time.monotonic()
        if self.bin_dir is None:
            self.bin_dir = lamassu_bin_dir()
        for d in (self.config_dir, self.log_dir):
            d.mkdir(parents=True, exist_ok=True, mode=0o700)
        if self.pods is None:
            self.fs_dir.mkdir(parents=True, exist_ok=True, mode=0o700)
            if "va" in self.services:
                self.crl_dir.mkdir(parents=True, exist_ok=True, mode=0o700)
        try:
            self.prepare_databases()
            self.write_configs()
            self.start_services()
        except BaseException:
            self.stop()
            raise
        self.startup_seconds = time.monotonic() - began
        return self

    def prepare_databases(self) -> None:
        """The ``lamassu`` role and the six databases, migrated (by Jobs with ``pods``);
        keeps what already exists."""
        assert self.bin_dir is not None
        if self.password_file.exists():
            self._password = self.password_file.read_text().strip()
        else:
            # Hex only: the services put the password into a DSN without quoting it.
            self._password = secrets.token_hex(16)
            fd = os.open(self.password_file, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
            with os.fdopen(fd, "w") as fh:
                fh.write(self._password)
        roles = self.pg.rows("SELECT 1 FROM pg_roles WHERE rolname = 'lamassu';")
        if not roles:
            self.pg.create_role(DB_USER, self._password)
        existing = set(self.pg.databases())
        for db in DATABASES:
            if db not in existing:
                self.pg.create_database(db, owner=DB_USER)
            else:
                # Made by someone else (datagen, a restore): the services log in as lamassu.
                self.pg.psql(
                    f'ALTER DATABASE "{db}" OWNER TO {DB_USER};\n'
                    f"GRANT ALL ON SCHEMA public TO {DB_USER};\n"
                    f"GRANT ALL ON ALL TABLES IN SCHEMA public TO {DB_USER};\n"
                    f"GRANT ALL ON ALL SEQUENCES IN SCHEMA public TO {DB_USER};",
                    db,
                )
        if self.pods is not None:
            # As the chart does it: a hook Job per database, from the image.
            self.pods.migrate(
                DATABASES,
                host=self.pg.host,
                port=self.pg.port,
                user=DB_USER,
                password=self._password,
            )
        else:
            migrate(self.pg, self.bin_dir, self._password, DATABASES)

    def write_configs(self) -> None:
        """One config file (0600) per service, as its ``<name>-config`` ConfigMap holds it;
        ports are picked once."""
        for name in self.services:
            self.ports[name] = self.ports.get(name) or free_port()
        vault = None
        if self.openbao is not None:
            role_id, secret_id = setup_approle(self.openbao, self.vault_mount)
            vault = VaultEngineSettings(
                hostname="127.0.0.1",
                port=self.openbao.port,
                ca_file=Path(VAULT_CA_DIR) / "ca.crt"
                if self.pods is not None
                else self.openbao.ca_cert_path,
                mount=self.vault_mount,
                role_id=role_id,
                secret_id=secret_id,
            )
        in_pod = self.pods is not None
        ports, pg, pw = self.ports, self.pg, self._password
        cfgs = {
            "kms": kms_config(
                port=ports["kms"],
                pg=pg,
                db_password=pw,
                fs_dir=Path(FS_MOUNT) if in_pod else self.fs_dir,
                vault=vault,
            ),
            "ca": ca_config(port=ports["ca"], kms_port=ports["kms"], pg=pg, db_password=pw),
        }
        if "device-manager" in self.services:
            cfgs["device-manager"] = device_manager_config(ports, pg, pw)
        if "va" in self.services:
            crl_dir = Path(CRL_MOUNT) if in_pod else self.crl_dir
            cfgs["va"] = va_config(ports, pg, pw, crl_dir=crl_dir)
        if "dms-manager" in self.services:
            cert = Path(DOWNSTREAM_CERT) if in_pod else self.downstream_cert_path
            if not in_pod and not cert.exists():
                cert.write_bytes(downstream_ca_pem())
            cfgs["dms-manager"] = dms_manager_config(ports, pg, pw, downstream_cert=cert)
        if "alerts" in self.services:
            cfgs["alerts"] = alerts_config(ports, pg, pw)
        self._configs = cfgs
        for name, cfg in self._configs.items():
            path = self.config_path(name)
            fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
            with os.fdopen(fd, "w") as fh:
                yaml.safe_dump(cfg, fh, sort_keys=False)

    @property
    def downstream_cert_path(self) -> Path:
        """The dms-manager's downstream CA certificate as a host process reads it."""
        return self.config_dir / "downstream-ca.crt"

    def config_path(self, service: str) -> Path:
        """The config file a service reads (``LAMASSU_CONFIG_FILE``)."""
        return self.config_dir / f"{service}-config.yml"

    def configmaps(self, namespace: str) -> list[dict[str, Any]]:
        """The chart's ConfigMaps of the services run (``<name>-config``, key ``config``)."""
        return [
            {
                "apiVersion": "v1",
                "kind": "ConfigMap",
                "metadata": {
                    "name": f"{name}-config",
                    "namespace": namespace,
                    "labels": {"app.kubernetes.io/part-of": "lamassu", "app": name},
                },
                "data": {"config": self.config_path(name).read_text()},
            }
            for name in self.services
        ]

    def start_services(self) -> None:
        """In :data:`SERVICES` order (each needs those before it), each until ``/health``
        answers."""
        if self.pods is not None:
            self._apply_configmaps()
            if "dms-manager" in self.services:
                self.pods.ensure_downstream_secret(downstream_ca_pem())
        for name in self.services:
            self.start_service(name, self.ports[name])

    def _apply_configmaps(self) -> None:
        """The chart's ConfigMaps (and the Vault engine's CA) in the workloads' namespace."""
        assert self.pods is not None
        maps = self.configmaps(self.pods.namespace)
        if self.openbao is not None:
            maps.append(
                {
                    "apiVersion": "v1",
                    "kind": "ConfigMap",
                    "metadata": {
                        "name": VAULT_CA_CONFIGMAP,
                        "namespace": self.pods.namespace,
                        "labels": {"app.kubernetes.io/part-of": "lamassu", "app": "kms"},
                    },
                    "data": {"ca.crt": self.openbao.ca_cert_path.read_text()},
                }
            )
        self.pods.apply_configmaps(maps)

    def start_service(self, name: str, port: int) -> None:
        """One service (its workload scaled to 1, or a process in its own group); waits for
        its ``/health``."""
        if self.pods is not None:
            self.pods.ensure(name, port, vault_ca=self.openbao is not None)
            self.pods.wait_healthy(name, port, self.start_timeout + 30)
            return
        assert self.bin_dir is not None
        old = self._procs.get(name)
        if old is not None and old.poll() is None:
            return
        env = {k: v for k, v in os.environ.items() if not k.startswith(("PG", "VAULT_", "BAO_"))}
        env["LAMASSU_CONFIG_FILE"] = str(self.config_path(name))
        if name == "kms" and self.openbao is not None:
            # v3.8.0 reads ``ca_cert_file`` but never hands the pool to its TLS config
            # (shared/http/pkg/helpers/httpclientbuilder.go): Go's system roots are used, and
            # SSL_CERT_FILE sets those. Verification stays on; no insecure_skip_verify.
            env["SSL_CERT_FILE"] = str(self.openbao.ca_cert_path)
        log_path = self.log_dir / f"{name}.log"
        # Started through a link under root, so its command line names root: the platform's
        # leftover-process check (stack.platform_pids) finds it if a supervisor dies.
        link = self.root / "bin" / name
        link.parent.mkdir(exist_ok=True)
        if not link.is_symlink() or link.resolve() != (self.bin_dir / name).resolve():
            link.unlink(missing_ok=True)
            link.symlink_to(self.bin_dir / name)
        with open(log_path, "ab") as log:
            proc = subprocess.Popen(
                [str(link)],
                stdin=subprocess.DEVNULL,
                stdout=log,
                stderr=subprocess.STDOUT,
                env=env,
                cwd=self.root,
                start_new_session=True,
            )
        self._procs[name] = proc
        url = f"http://127.0.0.1:{port}/health"
        wait_for(
            lambda: (
                proc.poll() is not None or requests.get(url, timeout=2).json().get("health") is True
            ),
            timeout=self.start_timeout,
            interval=0.2,
            what=f"Lamassu {name} /health",
        )
        if proc.poll() is not None:
            raise RuntimeError(
                f"Lamassu {name} exited with {proc.returncode}; log {log_path}:\n"
                + self.log_tail(name)
            )

    def stop_service(self, name: str) -> None:
        """End one service (e.g. so a restore can replace its data underneath); a workload is
        scaled to 0 and its Pod waited for."""
        if self.pods is not None:
            self.pods.stop(name)
            return
        proc = self._procs.pop(name, None)
        if proc is not None:
            stop_process(proc)

    def stop(self) -> None:
        """In reverse start order (callers before what they call); every process is waited
        for."""
        for name in reversed(self.services):
            with contextlib.suppress(Exception):
                self.stop_service(name)

    def restart(self) -> None:
        """Stop and start every service with the same config (after a restore)."""
        self.stop()
        self.start_services()

    def running(self, name: str) -> bool:
        """Whether the service's process (or its workload's Pod) is running."""
        if self.pods is not None:
            return self.pods.running(name)
        proc = self._procs.get(name)
        return proc is not None and proc.poll() is None

    def log_tail(self, name: str, lines: int = 30) -> str:
        """The end of a service's log (it never prints the config's secrets)."""
        path: Path | None = self.log_dir / f"{name}.log"
        if self.pods is not None:
            path = self.pods.log_path(name)
        if path is None or not path.exists():
            return ""
        text = path.read_text(errors="replace").splitlines()[-lines:]
        return "\n".join(text).replace(self._password, "***") if self._password else "\n".join(text)

    # -- access ---------------------------------------------------------------------------------

    @property
    def kms_port(self) -> int:
        """The kms's port (0 before :meth:`write_configs`)."""
        return self.ports.get("kms", 0)

    @property
    def ca_port(self) -> int:
        """The ca's port (0 before :meth:`write_configs`)."""
        return self.ports.get("ca", 0)

    def url(self, service: str) -> str:
        """A running service's base URL."""
        return f"http://127.0.0.1:{self.ports[service]}"

    @property
    def ca_url(self) -> str:
        """The ca service's base URL."""
        return self.url("ca")

    @property
    def kms_url(self) -> str:
        """The kms service's base URL."""
        return self.url("kms")

    def urls(self) -> dict[str, str]:
        """Base URL of every service run, by name."""
        return {name: self.url(name) for name in self.services}

    def client(self) -> LamassuClient:
        """An API client for the services run."""
        return LamassuClient.of(self.urls())

    def fs_key_ids(self) -> set[str]:
        """Key ids in the filesystem engine's directory (one file per key id)."""
        return {p.name for p in self.fs_dir.iterdir() if p.is_file()}

    def vault_key_ids(self) -> set[str]:
        """Key ids in the Vault engine's mount (empty when there is no Vault engine)."""
        if self.openbao is None:
            return set()
        return set(self.openbao.list_key_ids(self.vault_mount))
