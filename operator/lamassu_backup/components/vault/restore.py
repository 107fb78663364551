"""The vault component's restore (Vault/OpenBao): KV exports into their mounts, or a whole raft
snapshot.

KV: each exported secret is written to its path unless the live value differs, which is a
conflict left alone (reported) unless ``overwriteExisting``: a restore must not silently replace
a key someone rotated since the backup. A missing mount is created (Lamassu would otherwise
create it empty, silently, and come up "healthy" without its keys).

Raft snapshot: verified offline while it is spooled (a truncated or corrupt snapshot is refused
before anything is sent), then ``sys/storage/raft/snapshot-force``. Its 204 only says the upload
was accepted; OpenBao applies it asynchronously seconds later. So a canary secret is written
before the restore, and the restore counts as applied when the canary is gone (the state went
back to before it) and every KV export in the set reads back equal from the live mounts.

Undo: before a mount's writes, what each path to be written held is recorded: in memory its
data (an undo within the run writes it back), and in the run's undo journal only its version
numbers (the ``rollback`` step, another Job, reads the previous version back from Vault's own
history: no key leaves Vault). A path that did not exist is deleted again (metadata and all), one
whose latest version was deleted gets the restore's version deleted, a mount the restore created
is unmounted. A path written again by someone since is left alone and reported. The token needs
``delete`` on ``<mount>/metadata/*`` (and ``<mount>/data/*``) for that. The values are never
logged or reported.

Drills write the exports into scratch mounts (``<mount>-drill-<id>``) and read them back; they
are unmounted afterwards whatever happens. The token needs, besides the backup policy::

    path "sys/mounts/+"            { capabilities = ["create", "read", "update", "delete"] }
    path "<mount>-drill-+/*"       { capabilities = ["create", "read", "update", "list"] }
"""

from __future__ import annotations

import contextlib
import json
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

from ...errors import ConfigurationError, IntegrityError, LamassuBackupError, VaultError
from ...models.runner import ArtifactRecord
from ...runner.restore.hooks import BaseHooks, PlanItem, Purpose
from ...runner.restore.keys import KeyIds
from ...runner.stream.fetch import FileSink, NullSink
from .raft import SnapshotVerifier

if TYPE_CHECKING:  # hvac loads only when a Vault is really used (start-up time, memory)
    from ...clients.vault import VaultClient
    from ...runner.restore.hooks import HooksFactory
    from ...runner.restore.run import RestoreRun

NAME = "vault"

EXPORT_FORMAT = "lamassu-backup/kv-export/v1"
APPLY_TIMEOUT = 120.0
WRITE_RETRY = 30.0


def export_key_values(export: Mapping[str, Any]) -> dict[str, str]:
    """Key id -> stored value in a KV export document: secrets with a ``key`` field, by the last
    path segment (Lamassu's Vault engine keeps each private key at ``<mount>/<key id>``, field
    ``key`` = base64 of the PKCS#8 PEM)."""
    secrets: Mapping[str, Any] = export.get("secrets") or {}
    out: dict[str, str] = {}
    for path, entry in secrets.items():
        value = (entry.get("data") or {}).get("key") if isinstance(entry, Mapping) else None
        if value:
            out[path.rstrip("/").rsplit("/", 1)[-1]] = value if isinstance(value, str) else ""
    return out


def export_key_ids(export: Mapping[str, Any]) -> set[str]:
    """Key ids in a KV export document (see :func:`export_key_values`)."""
    return set(export_key_values(export))


def union_values(exports: dict[str, dict[str, Any]]) -> dict[str, str]:
    """Key id -> stored value in every export."""
    out: dict[str, str] = {}
    for doc in exports.values():
        out.update(export_key_values(doc))
    return out


def _live_values(live: Mapping[str, Mapping[str, Any]]) -> dict[str, str]:
    return export_key_values({"secrets": {p: {"data": d} for p, d in live.items()}})


def key_ids_of(values: Mapping[str, str], source: str) -> KeyIds:
    """The store as the key check meets it: the key ids, and their private keys (the stored
    value, base64 of the PEM) for matching each CA's key with its certificate."""
    held = dict(values)

    def read_key(key_id: str) -> bytes | None:
        value = held.get(key_id)
        return value.encode() if value else None

    return KeyIds(frozenset(held), source, read_key=read_key)


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


@dataclass
class KvUndo:
    """What one mount's paths held before the restore wrote them."""

    mount: str
    mount_created: bool = False
    versions: dict[str, tuple[int, int | None]] = field(default_factory=dict)
    """path -> (current version before the write, 0: no metadata; its live version or None)."""
    previous: dict[str, dict[str, Any]] = field(default_factory=dict)
    """path -> the data it held (in memory only: never journaled, logged or reported)."""

    def journal(self) -> dict[str, Any]:
        """The journal's part: paths and version numbers, no data."""
        return {
            "mountCreated": self.mount_created,
            "paths": {p: list(v) for p, v in sorted(self.versions.items())},
        }

    @classmethod
    def from_journal(cls, mount: str, doc: Mapping[str, Any]) -> KvUndo:
        paths = doc.get("paths") or {}
        return cls(
            mount=mount,
            mount_created=bool(doc.get("mountCreated")),
            versions={
                str(p): (int(v[0]), None if v[1] is None else int(v[1])) for p, v in paths.items()
            },
        )


def record_before(client: VaultClient, outcome: KvOutcome) -> KvUndo:
    """What the paths a KV restore is about to write hold now (its plan: ``outcome``)."""
    undo = KvUndo(mount=outcome.mount, mount_created=outcome.mount_created)
    for path in sorted({*outcome.created, *outcome.overwritten}):
        if outcome.mount_created:
            undo.versions[path] = (0, None)
            continue
        meta = client.kv_version(outcome.mount, path)
        if meta is None:
            undo.versions[path] = (0, None)
            continue
        current, live = meta
        undo.versions[path] = (current, current if live else None)
        if live:
            data = client.kv_get(outcome.mount, path)
            if data is not None:
                undo.previous[path] = data
    return undo


def put_back(client: VaultClient, undo: KvUndo) -> tuple[int, list[str]]:
    """Put each path back as ``undo`` recorded it; returns (paths put back, paths written again
    by someone since the restore, left as they are)."""
    done = 0
    conflicts: list[str] = []
    for path, (before, live) in sorted(undo.versions.items()):
        now = client.kv_version(undo.mount, path)
        current = now[0] if now is not None else 0
        if current == before:
            continue  # never written (the restore stopped before it)
        if current != before + 1:
            conflicts.append(path)
            continue
        if live is not None:
            data = undo.previous.get(path)
            if data is None:
                data = client.kv_get_version(undo.mount, path, live)
            if data is None:
                raise VaultError(
                    f"KV {undo.mount}/{path}: version {live}, which it held before the "
                    "restore, is no longer in Vault's history: it cannot be put back",
                    reason="KvUndoFailed",
                )
            client.kv_write(undo.mount, path, data)
        elif before == 0:
            client.kv_delete(undo.mount, path)
        else:
            client.kv_delete_latest(undo.mount, path)
        done += 1
    return done, conflicts


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


def _safe_result(verifier: SnapshotVerifier) -> dict[str, Any] | LamassuBackupError:
    """The verifier's verdict (it must always be collected: its thread reads a pipe)."""
    try:
        return verifier.result()
    except LamassuBackupError as exc:
        return exc


class VaultHooks(BaseHooks):
    """Vault in a restore: first of all (the databases need their keys), KV exports written into
    their mounts or the raft snapshot restored and read back; in a drill, each export into a
    scratch mount, read back and unmounted. KV writes are put back on undo and rollback (see the
    module docstring); a raft snapshot replaces the whole state and cannot be."""

    name = NAME
    order = 10

    def __init__(self, run: RestoreRun) -> None:
        super().__init__(run)
        self.kv: list[ArtifactRecord] = []
        self.raft: ArtifactRecord | None = None
        self.exports: dict[str, dict[str, Any]] = {}
        """The KV exports of the selection, verified, by mount."""
        self.facts: dict[str, Any] | None = None
        """The raft snapshot's facts, verified (a plan)."""
        self.snapshot: Path | None = None
        """The raft snapshot, verified and spooled (in place, method RaftSnapshot)."""
        self.scratch_mounts: list[str] = []
        self.drilled: KeyIds | None = None
        self.applied = False
        self.undos: dict[str, KvUndo] = {}
        """By mount: what the KV writes of this run replaced."""
        self._client: tuple[VaultClient, Callable[[], None] | None] | None = None

    def select(self, artifacts: list[ArtifactRecord]) -> None:
        self.kv = [a for a in artifacts if a.kind == "kv-export"]
        self.raft = next((a for a in artifacts if a.kind == "raft-snapshot"), None)
        self.artifacts = [*self.kv, *([self.raft] if self.raft is not None else [])]

    @property
    def _raft_method(self) -> bool:
        return self.run.cfg.vault_method == "RaftSnapshot"

    def client(self) -> tuple[VaultClient, Callable[[], None] | None]:
        """The Vault client (logged in once)."""
        if self._client is None:
            if self.run.cfg.vault is None:
                raise ConfigurationError(
                    "the vault component needs a Vault target (spec.target.vault or the policy's)"
                )
            self._client = self.run.ctx.vault_client(self.run.cfg.vault, "spec.target.vault.auth")
            self._client[0].check_ready()
        return self._client

    def mounts(self) -> list[str]:
        """The KV mounts holding the CA keys: those in the set, else the configured ones."""
        vault = self.run.cfg.vault
        return sorted(self.exports) or (list(vault.kv_mounts) if vault else [])

    def kv_key_values(self, mounts: list[str]) -> dict[str, str]:
        """Key id -> stored value, live in the mounts."""
        client, _ = self.client()
        values: dict[str, str] = {}
        for mount in mounts:
            if mount_present(client, mount):
                values.update(_live_values(read_mount(client, mount)))
        return values

    def _read_exports(self) -> dict[str, dict[str, Any]]:
        exports: dict[str, dict[str, Any]] = {}
        for artifact in self.kv:
            doc = parse_export(self.run.set.fetch(artifact), artifact.key)
            exports[str(doc["mount"])] = doc
        return exports

    def _verify_snapshot(self, artifact: ArtifactRecord, spool: Path | None) -> dict[str, Any]:
        """The raft snapshot verified offline while it streams (spooled to ``spool`` if given)."""
        verifier = SnapshotVerifier()
        sink = FileSink(spool, "raft snapshot spool") if spool is not None else NullSink()
        try:
            self.run.set.stream(artifact, sink, [verifier.tap])
        finally:
            facts = _safe_result(verifier)
        if isinstance(facts, LamassuBackupError):
            if spool is not None:
                spool.unlink(missing_ok=True)
            raise facts
        return facts

    def _record_snapshot(self, facts: dict[str, Any]) -> None:
        self.run.evidence.setdefault(NAME, {})["snapshot"] = {
            k: facts[k] for k in ("index", "term", "stateBytes")
        }

    # -- before anything live changes ------------------------------------------------------------

    def plan(self, item: PlanItem, drill: bool) -> None:
        cfg = self.run.cfg
        if drill:
            for mount in self.exports:
                item(f"KV mount {mount}-drill-{self.run.id}", "create, write, read back, unmount")
            return
        if self._raft_method and self.facts is not None:
            target = cfg.vault.address if cfg.vault else "Vault"
            item(
                target,
                "replace the whole Vault state with the snapshot, then read it back",
                f"snapshot index {self.facts.get('index')}, {self.facts.get('stateBytes')} bytes",
            )
            return
        for mount, doc in self.exports.items():
            if cfg.vault is None:
                item(f"KV mount {mount}", "write secrets", f"{len(doc['secrets'])} secrets")
                continue
            client, _ = self.client()
            outcome = kv_restore(
                client, mount, doc["secrets"], overwrite=cfg.overwrite_existing, apply=False
            )
            detail = (
                f"create {len(outcome.created)}, unchanged {len(outcome.unchanged)}, "
                f"overwrite {len(outcome.overwritten)}, conflicting (left as they are) "
                f"{len(outcome.conflicting)}"
            )
            if outcome.conflicting or outcome.overwritten:
                paths = outcome.overwritten or outcome.conflicting
                detail += f": {', '.join(p[:16] for p in paths[:3])}"
            action = "write secrets" + (" into a new mount" if outcome.mount_created else "")
            item(f"KV mount {mount}", action, detail)

    def require(self) -> None:
        if self._raft_method and self.raft is None:
            raise ConfigurationError(
                "vaultMethod RaftSnapshot, but the set has no raft snapshot: use method KV"
            )
        self.client()  # logs in and refuses a sealed Vault now, not after the databases

    def verify(self, purpose: Purpose) -> None:
        if purpose == "plan":
            self.exports = self._read_exports()
            if self.raft is not None:
                self.facts = self._verify_snapshot(self.raft, None)
        elif purpose == "drill":
            self.exports = self._read_exports()
            if self.raft is not None:
                with self.run.phase("verify", NAME):
                    self._record_snapshot(self._verify_snapshot(self.raft, None))
        else:
            with self.run.phase("verify", NAME):
                self.exports = self._read_exports()
                if self._raft_method and self.raft is not None:
                    self.snapshot = self.run.ctx.scratch / "raft.snap"
                    self._record_snapshot(self._verify_snapshot(self.raft, self.snapshot))

    def drill(self) -> None:
        """Each export into a scratch mount, read back; the key ids that came back."""
        self.drilled = self._drill_mounts()
        self.run.result.components[NAME] = "Verified"

    def _drill_mounts(self) -> KeyIds | None:
        if not self.exports:
            return None
        if self.run.cfg.vault is None:
            return key_ids_of(
                union_values(self.exports), "the set's KV export (no Vault to restore it into)"
            )
        client, _ = self.client()
        store: dict[str, str] = {}
        with self.run.phase("vault", NAME):
            for mount, doc in self.exports.items():
                scratch = f"{mount}-drill-{self.run.id}"
                self.scratch_mounts.append(scratch)
                live = drill_mount(client, scratch, doc["secrets"])
                store.update(_live_values(live))
                self.run.evidence.setdefault(NAME, {})[mount] = {
                    "scratchMount": scratch,
                    "secrets": len(live),
                }
        return key_ids_of(store, f"scratch mount(s) {', '.join(self.scratch_mounts)}")

    # -- key consistency -------------------------------------------------------------------------

    def key_ids(self) -> KeyIds | None:
        """The KV side: in a drill the scratch mounts (or the set's export); in place what the
        databases will meet: the set's export and the mounts as restored, the live mounts when
        Vault is not restored, or after a snapshot without an export, its state once applied.

        Restored over live mounts, a key is matched with its CA as the set holds it (a live
        value that differs is a conflict the KV restore reports and leaves alone)."""
        if self.run.cfg.mode == "Drill":
            return self.drilled
        if self.artifacts and self._raft_method:
            return self._snapshot_key_ids()
        mounts = self.mounts()
        if self.artifacts:
            store: dict[str, str] = {}
            if self.run.cfg.vault is not None:
                store.update(self.kv_key_values(mounts))
            store.update(union_values(self.exports))
            return key_ids_of(store, f"KV mount(s) {', '.join(mounts)} as restored")
        if self.run.cfg.vault is not None and mounts:
            return key_ids_of(self.kv_key_values(mounts), f"live KV mount(s) {', '.join(mounts)}")
        if self.exports:
            return key_ids_of(union_values(self.exports), "the set's KV export")
        return None

    def _snapshot_key_ids(self) -> KeyIds:
        """A raft snapshot's key ids: its KV export in the set, else (deferred) the mounts once
        the snapshot is applied."""
        if self.exports:
            return key_ids_of(
                union_values(self.exports), "the set's KV export (the snapshot's data)"
            )
        if not self.applied:
            return KeyIds(frozenset(), "", deferred=True)
        mounts = self.mounts()
        return key_ids_of(
            self.kv_key_values(mounts),
            f"KV mount(s) {', '.join(mounts)} after the snapshot restore",
        )

    # -- in place ----------------------------------------------------------------------------------

    def apply(self, suffix: str) -> None:
        with self.run.phase(NAME, NAME):
            self._apply()
        self.applied = True

    def _apply(self) -> None:
        run = self.run
        client, relogin = self.client()
        ev = run.evidence.setdefault(NAME, {})
        if self.snapshot is not None:
            run.changed.append(NAME)
            mounts = self.mounts()
            applied = raft_restore(
                client,
                self.snapshot,
                canary_mount=mounts[0] if mounts else None,
                canary_id=run.id,
                exports=self.exports,
                relogin=relogin,
            )
            self.snapshot.unlink(missing_ok=True)
            ev.update(
                method="RaftSnapshot",
                appliedSeconds=applied.seconds,
                canary=applied.canary,
                verifiedMounts=applied.verified_mounts,
            )
            for text in applied.warnings:
                run.warn(text)
        else:
            ev["method"] = "KV"
            for mount, doc in self.exports.items():
                planned = kv_restore(
                    client, mount, doc["secrets"], overwrite=run.cfg.overwrite_existing, apply=False
                )
                self.undos[mount] = record_before(client, planned)
                run.journal.record(NAME, {m: u.journal() for m, u in self.undos.items()})
                if planned.created or planned.overwritten or planned.mount_created:
                    run.changed.append(f"{NAME}:{mount}")  # before the first write
                outcome = kv_restore(
                    client,
                    mount,
                    doc["secrets"],
                    overwrite=run.cfg.overwrite_existing,
                    apply=True,
                )
                ev[mount] = outcome.evidence()
                if outcome.conflicting:
                    run.warn(
                        f"KV mount {mount}: {len(outcome.conflicting)} secret(s) differ from the "
                        "set and were left as they are (overwriteExisting is false): "
                        f"{', '.join(outcome.conflicting[:6])}"
                    )
        run.result.components[NAME] = "Completed"

    def undo(self, suffix: str) -> str | None:
        """A later component (or the key check) failed: put back what the KV writes replaced."""
        if not self.undos:
            return None
        client, _ = self.client()
        done, mounts = self._put_back(client, self.undos)
        return (
            f"the KV writes were undone ({done} secret(s) in {', '.join(mounts)} as before)"
            if mounts
            else None
        )

    def _put_back(self, client: VaultClient, undos: dict[str, KvUndo]) -> tuple[int, list[str]]:
        """Put every mount back; raises when a path could not be (it stays in run.changed)."""
        done = 0
        conflicts: list[str] = []
        mounts: list[str] = []
        with self.run.phase("vaultUndo", NAME):
            for mount, undo in undos.items():
                try:
                    count, left = put_back(client, undo)
                except LamassuBackupError as exc:
                    raise LamassuBackupError(
                        f"putting the KV writes back failed: {exc.message}", reason=exc.reason
                    ) from None
                done += count
                if left:
                    conflicts += [f"{mount}/{p}" for p in left]
                    self.run.warn(
                        f"KV mount {mount}: {len(left)} secret(s) were written again after the "
                        f"restore and were left as they are: {', '.join(p[:24] for p in left[:6])}"
                    )
                    continue
                if undo.mount_created:
                    try:
                        client.disable_mount(mount)
                    except LamassuBackupError as exc:
                        self.run.warn(
                            f"KV mount {mount} was created by the restore and is empty again, "
                            f"but could not be unmounted: {exc.message}"
                        )
                if f"{NAME}:{mount}" in self.run.changed:
                    self.run.changed.remove(f"{NAME}:{mount}")
                mounts.append(mount)
        if conflicts:
            raise LamassuBackupError(
                f"{len(conflicts)} KV secret(s) changed since the restore wrote them were not "
                f"put back (first: {conflicts[0][:40]}): a person must look",
                reason="KvUndoConflict",
            )
        self.undos = {}
        return done, mounts

    def rollback(self, suffix: str) -> list[str]:
        """The rollback step: put back what the restore's KV writes replaced (from the journal)."""
        entry = self.run.journal.get(NAME)
        if not entry or self.run.cfg.vault is None:
            return []
        undos = {m: KvUndo.from_journal(m, doc) for m, doc in dict(entry).items()}
        for mount in undos:
            self.run.changed.append(f"{NAME}:{mount}")  # until it is put back
        client, _ = self.client()
        done, mounts = self._put_back(client, undos)
        self.run.evidence.setdefault(NAME, {})["putBack"] = done
        return [f"{NAME}:{m}" for m in mounts]

    def discard(self) -> None:
        if self.snapshot is not None:
            self.snapshot.unlink(missing_ok=True)

    # -- drill -------------------------------------------------------------------------------------

    def teardown(self) -> list[str]:
        left: list[str] = []
        if self.scratch_mounts:
            client, _ = self.client()
            for mount in self.scratch_mounts:
                try:
                    client.disable_mount(mount)
                    if client.mount_exists(mount):
                        left.append(mount)
                except LamassuBackupError as exc:
                    left.append(mount)
                    self.run.warn(f"scratch mount {mount} not removed: {exc.message}")
        return left


HOOKS: HooksFactory = VaultHooks
