"""A real OpenBao server on loopback, standing in for the Vault that Lamassu's KMS keeps keys in.

Raft storage (not ``-dev``, whose in-memory storage has no snapshots) so the backup runner's
``sys/storage/raft/snapshot`` save and ``snapshot-force`` restore are exercised for real, over TLS
with a CA of our own so clients must verify the server as they would in a cluster.

Secrets never reach a log: the root token is only in memory and in a 0600 file, the unseal key
only in memory and in a 0600 file in the data directory; neither is put into an exception text.
"""

from __future__ import annotations

import datetime
import ipaddress
import os
import shutil
import subprocess
import tempfile
import time
from pathlib import Path
from types import TracebackType
from typing import Any, Self

import hvac
import requests
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID
from hvac.exceptions import InvalidPath

from ._util import REPO_ROOT, free_port, stop_process, wait_for

DEFAULT_KV_MOUNT = "lamassu-kms"
BACKUP_POLICY = "lamassu-backup"


def _write_secret_file(path: Path, data: str | bytes) -> None:
    """Create ``path`` as 0600 from the start, so a secret is never readable by others."""
    raw = data.encode() if isinstance(data, str) else data
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(fd, "wb") as fh:
        fh.write(raw)
    os.chmod(path, 0o600)


def _make_tls(directory: Path) -> tuple[Path, Path, Path]:
    """Self-signed CA and a server certificate for 127.0.0.1/localhost: clients verify for real."""
    now = datetime.datetime.now(datetime.UTC)
    start, end = now - datetime.timedelta(minutes=5), now + datetime.timedelta(days=2)

    ca_key = ec.generate_private_key(ec.SECP256R1())
    ca_name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "lamassu-test OpenBao CA")])
    ca_cert = (
        x509.CertificateBuilder()
        .subject_name(ca_name)
        .issuer_name(ca_name)
        .public_key(ca_key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(start)
        .not_valid_after(end)
        .add_extension(x509.BasicConstraints(ca=True, path_length=0), critical=True)
        .add_extension(
            x509.KeyUsage(
                digital_signature=True,
                content_commitment=False,
                key_encipherment=False,
                data_encipherment=False,
                key_agreement=False,
                key_cert_sign=True,
                crl_sign=True,
                encipher_only=False,
                decipher_only=False,
            ),
            critical=True,
        )
        .add_extension(x509.SubjectKeyIdentifier.from_public_key(ca_key.public_key()), False)
        .sign(ca_key, hashes.SHA256())
    )

    key = ec.generate_private_key(ec.SECP256R1())
    cert = (
        x509.CertificateBuilder()
        .subject_name(x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "127.0.0.1")]))
        .issuer_name(ca_name)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(start)
        .not_valid_after(end)
        .add_extension(
            x509.SubjectAlternativeName(
                [
                    x509.IPAddress(ipaddress.ip_address("127.0.0.1")),
                    x509.DNSName("localhost"),
                ]
            ),
            critical=False,
        )
        .add_extension(x509.BasicConstraints(ca=False, path_length=None), critical=True)
        .add_extension(x509.ExtendedKeyUsage([ExtendedKeyUsageOID.SERVER_AUTH]), critical=False)
        .add_extension(
            x509.AuthorityKeyIdentifier.from_issuer_public_key(ca_key.public_key()),
            False,
        )
        .sign(ca_key, hashes.SHA256())
    )

    ca_path, cert_path, key_path = (
        directory / "ca.pem",
        directory / "server.pem",
        directory / "server.key",
    )
    ca_path.write_bytes(ca_cert.public_bytes(serialization.Encoding.PEM))
    cert_path.write_bytes(cert.public_bytes(serialization.Encoding.PEM))
    _write_secret_file(
        key_path,
        key.private_bytes(
            serialization.Encoding.PEM,
            serialization.PrivateFormat.PKCS8,
            serialization.NoEncryption(),
        ),
    )
    return ca_path, cert_path, key_path


def openbao_binary() -> Path:
    """The cached ``bao`` binary; scripts/build-openbao.sh fetches it once per pinned version."""
    env = dict(os.environ)
    env.setdefault("PYTHON", str(REPO_ROOT / ".venv/bin/python"))
    if not Path(env["PYTHON"]).exists():
        env["PYTHON"] = "python3"
    out = subprocess.run(
        ["bash", str(REPO_ROOT / "scripts/build-openbao.sh")],
        check=True,
        stdout=subprocess.PIPE,
        env=env,
        text=True,
    )
    return Path(out.stdout.strip().splitlines()[-1])


def backup_policy_hcl(mount: str, *, allow_restore: bool = True) -> str:
    """The least the backup runner needs: raft snapshot save/restore and the KV mount's keys."""
    # A restore's undo deletes the secrets it created (delete on data and metadata).
    data_caps = '"read", "create", "update", "delete"' if allow_restore else '"read"'
    meta_caps = '"read", "list", "delete"' if allow_restore else '"read", "list"'
    return f"""
path "sys/storage/raft/snapshot" {{
  capabilities = ["read"]
}}
path "sys/storage/raft/snapshot-force" {{
  capabilities = ["update"]
}}
path "{mount}/data/*" {{
  capabilities = [{data_caps}]
}}
path "{mount}/metadata/*" {{
  capabilities = [{meta_caps}]
}}
"""


def drill_policy_hcl(mount: str) -> str:
    """What a drill (scheduled verification) needs besides the backup policy: scratch mounts."""
    return f"""
path "sys/mounts/{mount}-drill-*" {{
  capabilities = ["create", "read", "update", "delete"]
}}
path "sys/mounts/{mount}" {{
  capabilities = ["read"]
}}
path "{mount}-drill-*" {{
  capabilities = ["create", "read", "update", "delete", "list"]
}}
"""


class OpenBao:
    """One OpenBao node: raft storage, TLS on loopback, initialised and unsealed with one key."""

    def __init__(
        self,
        base_dir: Path | None = None,
        *,
        kv_mount: str = DEFAULT_KV_MOUNT,
        node_id: str = "lamassu-test-0",
        start_timeout: float = 60.0,
    ) -> None:
        self._own_dir = base_dir is None
        self.data_dir = (
            Path(base_dir) if base_dir else Path(tempfile.mkdtemp(prefix="lamassu-openbao-"))
        )
        self.kv_mount = kv_mount
        self.node_id = node_id
        self.start_timeout = start_timeout
        self.port = 0
        self.cluster_port = 0
        self.address = ""
        self.ca_cert_path = self.data_dir / "tls" / "ca.pem"
        self.token_file = self.data_dir / "root.token"
        self.unseal_key_file = self.data_dir / "unseal.key"
        self.config_path = self.data_dir / "config.hcl"
        self.log_path = self.data_dir / "openbao.log"
        self.binary: Path | None = None
        self.startup_seconds: float | None = None
        self._proc: subprocess.Popen[bytes] | None = None
        self._root_token: str | None = None
        self._unseal_key: str | None = None

    # -- lifecycle -------------------------------------------------------------------------

    def start(self) -> Self:
        """Build (cached), launch, initialise, unseal, wait for an active raft leader, mount KV."""
        self.binary = openbao_binary()
        began = time.monotonic()
        self.data_dir.mkdir(parents=True, exist_ok=True)
        (self.data_dir / "raft").mkdir(mode=0o700, exist_ok=True)
        tls_dir = self.data_dir / "tls"
        tls_dir.mkdir(mode=0o700, exist_ok=True)
        ca, cert, key = _make_tls(tls_dir)
        self.ca_cert_path = ca
        self.port, self.cluster_port = free_port(), free_port()
        while self.cluster_port == self.port:
            self.cluster_port = free_port()
        self.address = f"https://127.0.0.1:{self.port}"
        self.config_path.write_text(
            f"""
storage "raft" {{
  path    = "{self.data_dir / "raft"}"
  node_id = "{self.node_id}"
  # 1 = the fast election timing meant for good hardware; the default (5) slows start-up.
  performance_multiplier = 1
}}

listener "tcp" {{
  address         = "127.0.0.1:{self.port}"
  cluster_address = "127.0.0.1:{self.cluster_port}"
  tls_cert_file   = "{cert}"
  tls_key_file    = "{key}"
}}

api_addr      = "{self.address}"
cluster_addr  = "https://127.0.0.1:{self.cluster_port}"
disable_mlock = true
ui            = false
log_level     = "info"
"""
        )
        try:
            self._launch()
            self._initialise()
            self.unseal()
            self.startup_seconds = time.monotonic() - began
            self.enable_kv(self.kv_mount)
        except BaseException:
            # __exit__ does not run when __enter__ fails: end the server here, keep its log.
            self._stop_server()
            raise
        return self

    def _launch(self) -> None:
        """Start ``bao server`` in its own process group so stop() can end all of it."""
        assert self.binary is not None
        # No BAO_*/VAULT_* from the caller's shell may change how the server starts.
        env = {k: v for k, v in os.environ.items() if not k.startswith(("BAO_", "VAULT_"))}
        with open(self.log_path, "ab") as log:
            self._proc = subprocess.Popen(
                [str(self.binary), "server", f"-config={self.config_path}"],
                stdin=subprocess.DEVNULL,
                stdout=log,
                stderr=subprocess.STDOUT,
                env=env,
                start_new_session=True,
            )
        proc = self._proc
        # wait_for treats exceptions as "not yet", so a dead server is checked for separately.
        wait_for(
            lambda: proc.poll() is not None or self._answers(),
            timeout=self.start_timeout,
            what="OpenBao listener",
        )
        if proc.poll() is not None:
            raise RuntimeError(
                f"OpenBao exited with {proc.returncode}; log {self.log_path}:\n" + self.log_tail()
            )

    def _answers(self) -> bool:
        """True once the HTTPS listener answers /sys/health in any of its known states."""
        return self._health().status_code in (200, 429, 501, 503)

    def _health(self) -> requests.Response:
        return requests.get(
            f"{self.address}/v1/sys/health", verify=str(self.ca_cert_path), timeout=5
        )

    def _initialise(self) -> None:
        """One key share, threshold one: the test server needs no real key ceremony."""
        client = hvac.Client(url=self.address, verify=str(self.ca_cert_path))
        result = client.sys.initialize(secret_shares=1, secret_threshold=1)
        self._root_token = str(result["root_token"])
        self._unseal_key = str(result["keys_base64"][0])
        _write_secret_file(self.token_file, self._root_token)
        _write_secret_file(self.unseal_key_file, self._unseal_key)

    def stop(self) -> None:
        """Stop the server (no process outlives it); remove the data dir only if we made it."""
        self._stop_server()
        if self._own_dir:
            shutil.rmtree(self.data_dir, ignore_errors=True)

    def _stop_server(self) -> None:
        if self._proc is not None:
            stop_process(self._proc)
            self._proc = None

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
    def running(self) -> bool:
        return self._proc is not None and self._proc.poll() is None

    def log_tail(self, lines: int = 40) -> str:
        """The end of the server log, for a failure message (OpenBao never logs tokens)."""
        try:
            return "\n".join(self.log_path.read_text(errors="replace").splitlines()[-lines:])
        except OSError:
            return ""

    # -- seal state ------------------------------------------------------------------------

    def seal(self) -> None:
        """Seal the server, as an operator or a fault would; reads then fail until unseal()."""
        self.client().sys.seal()
        wait_for(self.client().sys.is_sealed, timeout=30, what="OpenBao sealed")

    def unseal(self, key: str | None = None) -> None:
        """Unseal (with the kept key unless given one), then wait for an active raft leader."""
        key = key or self._unseal_key
        if key is None:
            raise RuntimeError("OpenBao was not initialised by this fixture: no unseal key")
        client = hvac.Client(url=self.address, verify=str(self.ca_cert_path))
        client.sys.submit_unseal_key(key=key)
        wait_for(
            lambda: self._health().status_code == 200,
            timeout=self.start_timeout,
            what="OpenBao active and unsealed",
        )
        wait_for(self._raft_ready, timeout=self.start_timeout, what="OpenBao raft leader")

    def adopt_credentials(self, root_token: str, unseal_key: str) -> None:
        """Take over another cluster's root token and unseal key.

        After ``snapshot-force`` of a snapshot from another cluster, this server holds that
        cluster's keyring and tokens: it seals itself, opens only with the source's unseal key,
        and our own root token is gone.
        """
        self._root_token, self._unseal_key = root_token, unseal_key
        _write_secret_file(self.token_file, root_token)
        _write_secret_file(self.unseal_key_file, unseal_key)

    def is_sealed(self) -> bool:
        return bool(hvac.Client(url=self.address, verify=str(self.ca_cert_path)).sys.is_sealed())

    def _raft_ready(self) -> bool:
        """Our single node is a voter and the leader: writes will be committed."""
        config = self.client().read("sys/storage/raft/configuration")
        servers = (config or {}).get("data", {}).get("config", {}).get("servers", [])
        return any(s.get("leader") and s.get("voter") for s in servers)

    # -- clients and data ------------------------------------------------------------------

    @property
    def root_token(self) -> str:
        """The root token (tests pass it on by file: prefer ``token_file``)."""
        if self._root_token is None:
            raise RuntimeError("OpenBao is not initialised")
        return self._root_token

    def client(self, token: str | None = None) -> hvac.Client:
        """An hvac client that verifies the server against our CA."""
        return hvac.Client(
            url=self.address,
            token=token or self.root_token,
            verify=str(self.ca_cert_path),
        )

    def enable_kv(self, mount: str) -> None:
        """Mount KV v2 at ``mount`` (as Lamassu's Vault engine expects); no-op if present."""
        client = self.client()
        mounts = client.sys.list_mounted_secrets_engines().get("data", {})
        if f"{mount}/" in mounts:
            return
        client.sys.enable_secrets_engine("kv", path=mount, options={"version": "2"})
        # A fresh KV v2 mount upgrades itself in the background; writes fail until it is done.
        wait_for(lambda: self._kv_usable(mount), timeout=30, what=f"KV v2 mount {mount}")

    def _kv_usable(self, mount: str) -> bool:
        self.client().secrets.kv.v2.read_configuration(mount_point=mount)
        return True

    def write_keys(self, mount: str, keys: dict[str, str]) -> None:
        """Write keys in Lamassu's layout: ``<mount>/<keyID>`` with one field ``key``."""
        kv = self.client().secrets.kv.v2
        for key_id, pem_b64 in keys.items():
            kv.create_or_update_secret(path=key_id, secret={"key": pem_b64}, mount_point=mount)

    def list_key_ids(self, mount: str) -> list[str]:
        """Key ids under the mount (flat, as Lamassu writes them); empty if there are none."""
        try:
            listed = self.client().secrets.kv.v2.list_secrets(path="", mount_point=mount)
        except InvalidPath:
            return []
        return sorted(k for k in listed["data"]["keys"] if not k.endswith("/"))

    def read_keys(self, mount: str) -> dict[str, str]:
        """All live keys under the mount; soft-deleted or destroyed versions count as absent."""
        kv = self.client().secrets.kv.v2
        result: dict[str, str] = {}
        for key_id in self.list_key_ids(mount):
            try:
                secret = kv.read_secret_version(
                    path=key_id, mount_point=mount, raise_on_deleted_version=True
                )
            except InvalidPath:
                continue
            result[key_id] = str(secret["data"]["data"]["key"])
        return result

    # -- tokens for the backup runner ----------------------------------------------------------

    def write_backup_policy(
        self,
        mount: str | None = None,
        *,
        name: str = BACKUP_POLICY,
        allow_restore: bool = True,
    ) -> str:
        """Write the backup runner's policy; returns its name."""
        hcl = backup_policy_hcl(mount or self.kv_mount, allow_restore=allow_restore)
        self.client().sys.create_or_update_policy(name=name, policy=hcl)
        return name

    def create_operator_token(self, mount: str | None = None) -> str:
        """A token for backups and drills: the backup policy plus scratch-mount rights."""
        target = mount or self.kv_mount
        backup = self.write_backup_policy(target)
        self.client().sys.create_or_update_policy(
            name="lamassu-drill", policy=drill_policy_hcl(target)
        )
        return self.create_token([backup, "lamassu-drill"], ttl="24h")

    def create_token(self, policies: list[str], *, ttl: str = "1h") -> str:
        """A child token with only ``policies`` (no ``default``); the caller must not log it."""
        created: dict[str, Any] = self.client().auth.token.create(
            policies=policies, no_default_policy=True, ttl=ttl, renewable=False
        )
        return str(created["auth"]["client_token"])

    def create_backup_token(self, mount: str | None = None, *, allow_restore: bool = True) -> str:
        """Policy ``lamassu-backup`` plus a token that carries only it."""
        return self.create_token([self.write_backup_policy(mount, allow_restore=allow_restore)])
