"""Vault/OpenBao client: login, raft snapshots (streamed), KV v2 export and import.

hvac covers login and KV; snapshots go through the same HTTP session with ``stream=True`` so a
multi-GiB snapshot never sits in memory. Errors name the address and the operation, never the
token.
"""

from __future__ import annotations

import io
from collections.abc import Generator, Iterable
from typing import Any

import hvac
import requests
from hvac import exceptions as hvac_exc

from ..errors import VaultError

_CHUNK = 1024 * 1024


_EXPLANATIONS: tuple[tuple[type[Exception], str], ...] = (
    (hvac_exc.VaultDown, "Vault is sealed or down"),
    (hvac_exc.Forbidden, "permission denied (check the token's or role's policy)"),
    (hvac_exc.InvalidPath, "no such path"),
    (requests.exceptions.SSLError, "TLS verification failed (set the Vault CA certificate)"),
    (requests.exceptions.ConnectionError, "cannot connect"),
    (requests.exceptions.Timeout, "timed out"),
)


def _explain(exc: Exception) -> str:
    for kind, text in _EXPLANATIONS:
        if isinstance(exc, kind):
            return text
    errors = getattr(exc, "errors", None)
    if isinstance(exc, hvac_exc.VaultError) and errors:
        return "; ".join(str(e) for e in errors)
    return type(exc).__name__


class VaultClient:
    """One Vault/OpenBao server."""

    def __init__(self, address: str, ca_file: str | None = None, timeout: int = 30) -> None:
        self.address = address.rstrip("/")
        self.verify: str | bool = ca_file if ca_file else True
        self.client = hvac.Client(url=self.address, verify=self.verify, timeout=timeout)

    def _fail(self, what: str, exc: Exception) -> VaultError:
        return VaultError(f"Vault {self.address}: {what} failed: {_explain(exc)}")

    def use_token(self, token: str) -> None:
        """Authenticate with a token."""
        self.client.token = token.strip()

    def login_approle(self, role_id: str, secret_id: str, mount: str = "approle") -> None:
        """Authenticate with AppRole."""
        try:
            self.client.auth.approle.login(
                role_id=role_id.strip(), secret_id=secret_id.strip(), mount_point=mount
            )
        except (hvac_exc.VaultError, requests.RequestException) as exc:
            raise self._fail(f"AppRole login at auth/{mount}", exc) from None

    def login_kubernetes(self, role: str, jwt: str, mount: str = "kubernetes") -> None:
        """Authenticate with the Pod's ServiceAccount token."""
        try:
            self.client.auth.kubernetes.login(role=role, jwt=jwt.strip(), mount_point=mount)
        except (hvac_exc.VaultError, requests.RequestException) as exc:
            raise self._fail(f"Kubernetes login at auth/{mount} as role {role}", exc) from None

    def check_ready(self) -> None:
        """Raise a clear error when the server is sealed, uninitialised or unreachable."""
        try:
            status = self.client.sys.read_seal_status()
        except (hvac_exc.VaultError, requests.RequestException) as exc:
            raise self._fail("seal status", exc) from None
        if status.get("sealed"):
            raise VaultError(
                f"Vault {self.address} is sealed: unseal it, then run the backup again"
            )
        if not status.get("initialized", True):
            raise VaultError(f"Vault {self.address} is not initialised")

    def _url(self, path: str) -> str:
        return f"{self.address}/v1/{path.lstrip('/')}"

    def _headers(self) -> dict[str, str]:
        return {"X-Vault-Token": str(self.client.token or "")}

    def snapshot_chunks(self) -> Generator[bytes, None, None]:
        """Stream ``GET sys/storage/raft/snapshot``."""
        try:
            resp = requests.get(
                self._url("sys/storage/raft/snapshot"),
                headers=self._headers(),
                verify=self.verify,
                stream=True,
                timeout=(10, 300),
            )
        except requests.RequestException as exc:
            raise self._fail("raft snapshot", exc) from None
        with resp:
            if resp.status_code != 200:
                raise VaultError(
                    f"Vault {self.address}: raft snapshot failed: HTTP {resp.status_code} "
                    f"{_error_text(resp)}"
                )
            try:
                yield from resp.iter_content(chunk_size=_CHUNK)
            except requests.RequestException as exc:
                raise self._fail("raft snapshot (reading)", exc) from None

    def restore_snapshot(self, data: Iterable[bytes] | io.RawIOBase, *, force: bool = True) -> None:
        """``POST sys/storage/raft/snapshot-force`` (or snapshot) with a streamed body.

        A 204 only means the upload was accepted; callers must read data back to prove the
        restore, and may need the source cluster's unseal keys (the barrier key comes with it).
        """
        path = "sys/storage/raft/snapshot-force" if force else "sys/storage/raft/snapshot"
        try:
            resp = requests.post(
                self._url(path),
                headers=self._headers(),
                data=data,
                verify=self.verify,
                timeout=(10, 600),
            )
        except requests.RequestException as exc:
            raise self._fail("raft snapshot restore", exc) from None
        if resp.status_code not in (200, 204):
            raise VaultError(
                f"Vault {self.address}: raft snapshot restore failed: "
                f"HTTP {resp.status_code} {_error_text(resp)}"
            )

    def kv_paths(self, mount: str, prefix: str = "") -> list[str]:
        """Every secret path under a KV v2 mount (recursive, sorted)."""
        try:
            listed = self.client.secrets.kv.v2.list_secrets(path=prefix, mount_point=mount)
        except hvac_exc.InvalidPath:
            return []
        except (hvac_exc.VaultError, requests.RequestException) as exc:
            raise self._fail(f"listing {mount}/{prefix}", exc) from None
        out: list[str] = []
        for key in listed.get("data", {}).get("keys", []):
            if key.endswith("/"):
                out.extend(self.kv_paths(mount, prefix + key))
            else:
                out.append(prefix + key)
        return sorted(out)

    def kv_read(self, mount: str, path: str) -> dict[str, Any]:
        """The latest version of one secret: data and metadata."""
        try:
            resp = self.client.secrets.kv.v2.read_secret_version(
                path=path, mount_point=mount, raise_on_deleted_version=True
            )
        except (hvac_exc.VaultError, requests.RequestException) as exc:
            raise self._fail(f"reading {mount}/{path}", exc) from None
        data: dict[str, Any] = resp["data"]
        return data

    def kv_write(self, mount: str, path: str, data: dict[str, Any]) -> None:
        """Write a new version of a secret."""
        try:
            self.client.secrets.kv.v2.create_or_update_secret(
                path=path, secret=data, mount_point=mount
            )
        except (hvac_exc.VaultError, requests.RequestException) as exc:
            raise self._fail(f"writing {mount}/{path}", exc) from None

    def kv_get(self, mount: str, path: str) -> dict[str, Any] | None:
        """The data of the latest version of a secret, or None when it is absent or deleted."""
        try:
            resp = self.client.secrets.kv.v2.read_secret_version(
                path=path, mount_point=mount, raise_on_deleted_version=True
            )
        except hvac_exc.InvalidPath:
            return None
        except (hvac_exc.VaultError, requests.RequestException) as exc:
            raise self._fail(f"reading {mount}/{path}", exc) from None
        data = (resp.get("data") or {}).get("data")
        return dict(data) if isinstance(data, dict) else None

    def kv_version(self, mount: str, path: str) -> tuple[int, bool] | None:
        """The current version of a secret and whether it is live (not deleted or destroyed);
        None when the path has no metadata at all. Never the data."""
        try:
            resp = self.client.secrets.kv.v2.read_secret_metadata(path=path, mount_point=mount)
        except hvac_exc.InvalidPath:
            return None
        except (hvac_exc.VaultError, requests.RequestException) as exc:
            raise self._fail(f"reading the metadata of {mount}/{path}", exc) from None
        meta = resp.get("data") or {}
        current = int(meta.get("current_version") or 0)
        version = (meta.get("versions") or {}).get(str(current)) or {}
        live = current > 0 and not version.get("destroyed") and not version.get("deletion_time")
        return current, bool(live)

    def kv_get_version(self, mount: str, path: str, version: int) -> dict[str, Any] | None:
        """The data of one version of a secret (None when deleted, destroyed or absent)."""
        try:
            resp = self.client.secrets.kv.v2.read_secret_version(
                path=path, mount_point=mount, version=version, raise_on_deleted_version=True
            )
        except hvac_exc.InvalidPath:
            return None
        except (hvac_exc.VaultError, requests.RequestException) as exc:
            raise self._fail(f"reading {mount}/{path} version {version}", exc) from None
        data = (resp.get("data") or {}).get("data")
        return dict(data) if isinstance(data, dict) else None

    def kv_delete_latest(self, mount: str, path: str) -> None:
        """Soft-delete the latest version of a secret (its history stays)."""
        try:
            self.client.secrets.kv.v2.delete_latest_version_of_secret(path=path, mount_point=mount)
        except (hvac_exc.VaultError, requests.RequestException) as exc:
            raise self._fail(f"deleting the latest version of {mount}/{path}", exc) from None

    def kv_delete(self, mount: str, path: str) -> None:
        """Delete every version and the metadata of a secret (restore canaries, and the undo of a
        restore that created the path)."""
        try:
            self.client.secrets.kv.v2.delete_metadata_and_all_versions(path=path, mount_point=mount)
        except hvac_exc.InvalidPath:
            return
        except (hvac_exc.VaultError, requests.RequestException) as exc:
            raise self._fail(f"deleting {mount}/{path}", exc) from None

    def sealed(self) -> bool:
        """True when the server reports itself sealed."""
        try:
            status = self.client.sys.read_seal_status()
        except (hvac_exc.VaultError, requests.RequestException) as exc:
            raise self._fail("seal status", exc) from None
        return bool(status.get("sealed"))

    def mount_exists(self, mount: str) -> bool:
        """True when a secrets engine is mounted at ``mount``.

        Reads ``sys/mounts/<mount>`` rather than listing every mount, so a token scoped to the
        Lamassu mounts (and the drills' scratch mounts) is enough.
        """
        path = mount.strip("/")
        try:
            self.client.adapter.get(f"/v1/sys/mounts/{path}")
        except (hvac_exc.InvalidRequest, hvac_exc.InvalidPath):
            return False  # "no secret engine mount at <path>"
        except (hvac_exc.VaultError, requests.RequestException) as exc:
            raise self._fail(f"reading mount {path}", exc) from None
        return True

    def enable_kv2(self, mount: str) -> None:
        """Mount a KV v2 engine (scratch mounts for drills)."""
        try:
            self.client.sys.enable_secrets_engine("kv", path=mount, options={"version": "2"})
        except (hvac_exc.VaultError, requests.RequestException) as exc:
            raise self._fail(f"mounting KV v2 at {mount}", exc) from None

    def disable_mount(self, mount: str) -> None:
        """Unmount an engine and delete its data (scratch mounts only)."""
        try:
            self.client.sys.disable_secrets_engine(path=mount)
        except (hvac_exc.VaultError, requests.RequestException) as exc:
            raise self._fail(f"unmounting {mount}", exc) from None


def _error_text(resp: requests.Response) -> str:
    try:
        errors = resp.json().get("errors")
    except ValueError:
        return resp.text[:200]
    return "; ".join(str(e) for e in errors) if errors else ""
