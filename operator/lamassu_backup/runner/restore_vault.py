"""Vault/OpenBao restore: KV exports into their mounts, or a whole raft snapshot.

KV: each exported secret is written to its path unless the live value differs, which is a
conflict left alone (reported) unless ``overwriteExisting``: a restore must not silently replace
a key someone rotated since the backup. A missing mount is created (Lamassu would otherwise
create it empty, silently, and come up "healthy" without its keys).

Raft snapshot: verified offline while it is spooled (a truncated or corrupt snapshot is refused
before anything is sent), then ``sys/storage/raft/snapshot-force``. Its 204 only says the upload
was accepted; OpenBao applies it asynchronously seconds later. So a canary secret is written
before the restore, and the restore counts as applied when the canary is gone (the state went
back to before it) and every KV export in the set reads back equal from the live mounts.

Drills write the exports into scratch mounts (``<mount>-drill-<id>``) and read them back; they
are unmounted afterwards whatever happens. The token needs, besides the backup policy::

    path "sys/mounts/+"            { capabilities = ["create", "read", "update", "delete"] }
    path "<mount>-drill-+/*"       { capabilities = ["create", "read", "update", "list"] }
"""

from __future__ import annotations

import contextlib
import json
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

from ..errors import IntegrityError, LamassuBackupError, VaultError

if TYPE_CHECKING:  # hvac loads only when a Vault is really used (start-up time, memory)
    from ..clients.vault import VaultClient

EXPORT_FORMAT = "lamassu-backup/kv-export/v1"
APPLY_TIMEOUT = 120.0
WRITE_RETRY = 30.0


def parse_export(data: bytes, key: str) -> dict[str, Any]:
    """A KV export document (refuses anything else)."""
    try:
        doc = json.loads(data)
    except ValueError as exc:
        raise IntegrityError(f"{key}: not a KV export ({exc})") from None
    if not isinstance(doc, dict) or doc.get("format") != EXPORT_FORMAT:
        raise IntegrityError(f"{key}: not a KV export in format {EXPORT_FORMAT}")
    if not isinstance(doc.get("secrets"), dict) or not doc.get("mount"):
        raise IntegrityError(f"{key}: the KV export has no mount or secrets")
    return doc


@dataclass
class KvOutcome:
    """What a KV restore (or its plan) did to one mount."""

    mount: str
    mount_created: bool = False
    created: list[str] = field(default_factory=list)
    unchanged: list[str] = field(default_factory=list)
    conflicting: list[str] = field(default_factory=list)
    overwritten: list[str] = field(default_factory=list)

    def evidence(self, limit: int = 6) -> dict[str, Any]:
        """Counts, and the first paths of the lists a person must look at."""
        out: dict[str, Any] = {
            "created": len(self.created),
            "unchanged": len(self.unchanged),
            "conflicting": len(self.conflicting),
            "overwritten": len(self.overwritten),
        }
        if self.mount_created:
            out["mountCreated"] = True
        for name in ("conflicting", "overwritten"):
            paths: list[str] = getattr(self, name)
            if paths:
                out[f"{name}Paths"] = [p[:24] for p in paths[:limit]]
        return out


def wait_usable(client: VaultClient, mount: str, timeout: float = WRITE_RETRY) -> None:
    """A new KV v2 mount upgrades itself in the background and fails requests meanwhile: wait
    until a read of an absent path answers "absent"."""
    deadline = time.monotonic() + timeout
    while True:
        try:
            client.kv_get(mount, "lamassu-restore-probe")
        except VaultError:
            if time.monotonic() > deadline:
                raise
            time.sleep(0.2)
            continue
        return


def _write_retrying(client: VaultClient, mount: str, path: str, data: dict[str, Any]) -> None:
    """Write, retrying for a while: a fresh KV v2 mount refuses writes until it has upgraded."""
    deadline = time.monotonic() + WRITE_RETRY
    while True:
        try:
            client.kv_write(mount, path, data)
        except VaultError:
            if time.monotonic() > deadline:
                raise
            time.sleep(0.5)
            continue
        return


def mount_present(client: VaultClient, mount: str) -> bool:
    """Whether a mount exists; True when the token may not list mounts (a least-privilege
    restore token: the reads and writes below then tell)."""
    try:
        return client.mount_exists(mount)
    except VaultError as exc:
        if "permission denied" in exc.message:
            return True
        raise


def kv_restore(
    client: VaultClient,
    mount: str,
    secrets: dict[str, Any],
    *,
    overwrite: bool,
    apply: bool,
) -> KvOutcome:
    """Write each exported secret (``apply`` False only computes what would happen)."""
    outcome = KvOutcome(mount=mount)
    if not mount_present(client, mount):
        outcome.mount_created = True
        if apply:
            client.enable_kv2(mount)
            wait_usable(client, mount)
    first = True
    for path in sorted(secrets):
        want = dict((secrets[path] or {}).get("data") or {})
        current = None if outcome.mount_created else client.kv_get(mount, path)
        if current is None:
            outcome.created.append(path)
        elif current == want:
            outcome.unchanged.append(path)
            continue
        elif overwrite:
            outcome.overwritten.append(path)
        else:
            outcome.conflicting.append(path)
            continue
        if apply:
            if first:
                _write_retrying(client, mount, path, want)
                first = False
            else:
                client.kv_write(mount, path, want)
    return outcome


def read_mount(client: VaultClient, mount: str) -> dict[str, dict[str, Any]]:
    """Every live secret of a mount (deleted versions count as absent)."""
    out: dict[str, dict[str, Any]] = {}
    for path in client.kv_paths(mount):
        data = client.kv_get(mount, path)
        if data is not None:
            out[path] = data
    return out


def compare(secrets: dict[str, Any], live: dict[str, dict[str, Any]]) -> list[str]:
    """Paths whose live data differs from the export (or is missing)."""
    return sorted(
        path
        for path, entry in secrets.items()
        if live.get(path) != ((entry or {}).get("data") or {})
    )


def drill_mount(
    client: VaultClient, scratch: str, secrets: dict[str, Any]
) -> dict[str, dict[str, Any]]:
    """Write an export into a fresh scratch mount and read it back; returns what was read."""
    if client.mount_exists(scratch):  # left behind by an interrupted drill of the same name
        client.disable_mount(scratch)
    client.enable_kv2(scratch)
    wait_usable(client, scratch)
    kv_restore(client, scratch, secrets, overwrite=False, apply=True)
    live = read_mount(client, scratch)
    differ = compare(secrets, live)
    if differ:
        raise VaultError(
            f"scratch mount {scratch}: {len(differ)} secret(s) did not read back as written "
            f"(first: {differ[0]})"
        )
    return live


CANARY_PREFIX = "lamassu-restore-canary-"


@dataclass
class RaftApply:
    """How a snapshot restore was proven."""

    seconds: float
    canary: bool
    verified_mounts: list[str]
    warnings: list[str] = field(default_factory=list)


def _not_yet(
    client: VaultClient, canary: tuple[str, str] | None, exports: dict[str, dict[str, Any]]
) -> str | None:
    """Why the snapshot does not read back yet, or None when it does."""
    if canary is not None and client.kv_get(*canary) is not None:
        return "the canary written before the restore is still there"
    for mount, doc in exports.items():
        differ = compare(doc["secrets"], read_mount(client, mount))
        if differ:
            return f"{len(differ)} secret(s) of {mount} differ from the set (first {differ[0]})"
    return None


def raft_restore(
    client: VaultClient,
    snapshot: Path,
    *,
    canary_mount: str | None,
    canary_id: str,
    exports: dict[str, dict[str, Any]],
    relogin: Callable[[], None] | None,
    timeout: float = APPLY_TIMEOUT,
) -> RaftApply:
    """snapshot-force, then wait until the data reads back (see the module docstring)."""
    warnings: list[str] = []
    canary: tuple[str, str] | None = None
    if canary_mount:
        try:
            client.kv_write(canary_mount, CANARY_PREFIX + canary_id, {"restore": canary_id})
            canary = (canary_mount, CANARY_PREFIX + canary_id)
        except VaultError as exc:
            warnings.append(
                f"no canary written to {canary_mount} ({exc.message}): the snapshot's "
                "application is proven by the KV data only"
            )
    if canary is None and not exports:
        warnings.append("nothing to read back: the snapshot restore could not be proven")
    started = time.monotonic()
    with snapshot.open("rb") as body:
        client.restore_snapshot(body, force=True)
    relogged = False
    last = "nothing read yet"
    while time.monotonic() < started + timeout:
        time.sleep(0.5)
        try:
            sealed = client.sealed()
            reason = "Vault is sealed" if sealed else _not_yet(client, canary, exports)
        except VaultError as exc:
            if "permission denied" not in exc.message:
                last = exc.message
                continue
            if relogin is None or relogged:
                raise VaultError(
                    f"{exc.message} after the snapshot restore: the token used is not in the "
                    "snapshot (only tokens that existed when it was taken survive it). Use "
                    "AppRole or Kubernetes auth, or a token from before the backup",
                    reason="VaultTokenNotInSnapshot",
                ) from None
            relogin()  # the login's token went with the old state: log in again
            relogged = True
            continue
        if sealed and time.monotonic() - started > 15:
            raise VaultError(
                f"Vault {client.address} sealed itself after the snapshot restore: the snapshot "
                "comes from a cluster with other unseal keys. Unseal it with that cluster's "
                "keys; the data is then the snapshot's",
                reason="VaultSealedAfterRestore",
            )
        if reason is None:
            return RaftApply(
                seconds=round(time.monotonic() - started, 2),
                canary=canary is not None,
                verified_mounts=sorted(exports),
                warnings=warnings,
            )
        last = reason
    if canary is not None:
        with contextlib.suppress(LamassuBackupError):
            client.kv_delete(*canary)
    raise VaultError(
        f"Vault {client.address}: the snapshot was accepted but its data did not read back "
        f"within {timeout:.0f}s ({last})",
        reason="VaultRestoreUnproven",
    )
