"""The restore runner: verify a set before destroying anything, restore beside the live data,
validate, then swap; or, in a drill, restore into scratch targets, validate, and tear down.

Steps (``RestoreRunConfig.step``):

- ``plan`` (also ``restore`` with ``dryRun``): check the manifest (signature, completeness),
  stream and verify every selected artifact (both checksums, decryption, decompression), and
  report what a restore would change, in order (``evidence.plan``). Nothing is written.
- ``restore``, mode ``InPlace``: the same verification; every database restored into
  ``<db>__restoring`` and verified (row counts and goose version equal the manifest's); the key
  consistency of the restored databases checked against the key stores they will meet (Vault KV;
  each filesystem engine's volume as staged, or live when not restored). Only then
  does anything live change, in this order: Vault (KV writes, or the raft snapshot, read back),
  the databases (one atomic rename transaction; the previous ones kept as
  ``<db>__pre_restore_<suffix>``), config (server-side apply), volumes. A failure after the swap
  swaps the databases back.
- ``restore``, mode ``Drill``: everything into scratch targets (``<db>__drill_<id>``, KV mounts
  ``<mount>-drill-<id>``, a scratch directory), validated and recorded as evidence with the
  measured recovery time, then torn down, also on failure; the teardown is checked.
- ``finalize``: drop what a restore kept aside (``swapSuffix``), unless ``keepPrevious``.
  ``rollback``: put it back (renames: seconds, whatever the size).

Exit codes: 0 success; 1 failure with nothing live changed (or all of it rolled back); 3 failure
after live changes that could not all be rolled back (``evidence.changed`` lists them: a person
must look). The result (termination message) never holds a secret.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import shutil
import signal
import sys
import threading
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from types import FrameType
from typing import TYPE_CHECKING, Any

from ..clients import postgres as pg
from ..errors import ConfigurationError, LamassuBackupError
from ..models.runner import FilesystemKeyStore, RestoreRunConfig, RunnerResult
from . import restore_config, restore_keys, restore_pg, restore_vault
from .context import RunnerContext
from .restore_set import Selected, SetReader

if TYPE_CHECKING:
    from ..clients.kube import ConfigWriter
    from ..clients.vault import VaultClient

EXIT_OK = 0
EXIT_FAILED = 1
EXIT_CHANGED = 3
_VOLUME_MARK = ".lamassu-"


class RestoreInterruptedError(LamassuBackupError):
    """SIGTERM (the Job was deleted or timed out): clean up, report, exit."""

    reason = "Interrupted"


def drill_id(cfg: RestoreRunConfig) -> str:
    """A short, stable id for the scratch targets of one restore (a retried Job reuses it, so it
    finds and drops what an interrupted attempt left)."""
    return hashlib.sha256(f"{cfg.namespace}/{cfg.restore}".encode()).hexdigest()[:8]


def union_keys(exports: dict[str, dict[str, Any]]) -> set[str]:
    """Key ids in every export."""
    out: set[str] = set()
    for doc in exports.values():
        out |= restore_keys.export_key_ids(doc)
    return out


@dataclass
class Side:
    """Everything but the databases, verified and ready before anything live changes."""

    exports: dict[str, dict[str, Any]] = field(default_factory=dict)
    objects: list[dict[str, Any]] = field(default_factory=list)
    changes: list[restore_config.ConfigChange] | None = None
    writer: ConfigWriter | None = None
    namespace: str = ""
    snapshot: Path | None = None
    staged: list[tuple[str, Path]] = field(default_factory=list)
    """(volume name, staging directory inside the volume)."""


class RestoreRun:
    """One runner invocation of a restore step."""

    def __init__(self, cfg: RestoreRunConfig, ctx: RunnerContext, result: RunnerResult) -> None:
        self.cfg = cfg
        self.ctx = ctx
        self.result = result
        self.evidence = result.evidence
        self.timings: dict[str, float] = {}
        self.changed: list[str] = []
        """Live things changed and not rolled back (a failure then exits 3)."""
        self.current: str | None = None
        """The component being worked on."""
        self.failed: str | None = None
        """The component that was being worked on when the run failed (named in the result)."""
        self.id = drill_id(cfg)
        self.set = SetReader(cfg, ctx, ctx.store(cfg.source), self.warn)
        self._vault: tuple[VaultClient, Callable[[], None] | None] | None = None
        self.restored_volumes: dict[str, tuple[Path, str]] = {}
        """Volume name -> (where this run restored it, how the key check names that place)."""

    # -- plumbing --------------------------------------------------------------------------------

    @contextlib.contextmanager
    def phase(self, name: str, component: str | None = None) -> Iterator[None]:
        """Time a phase (evidence.timings) and remember which component it works on."""
        started = time.monotonic()
        previous, self.current = self.current, component or self.current
        try:
            yield
        except BaseException:
            self.failed = self.failed or self.current
            raise
        finally:
            self.current = previous
            self.timings[name] = round(self.timings.get(name, 0) + time.monotonic() - started, 2)

    def warn(self, text: str) -> None:
        """A warning for the result (redacted)."""
        self.result.warnings.append(self.ctx.redactor.redact(text))

    def close(self) -> None:
        """Release the keyring."""
        self.set.close()

    def vault(self) -> tuple[VaultClient, Callable[[], None] | None]:
        """The Vault client (logged in once)."""
        if self._vault is None:
            if self.cfg.vault is None:
                raise ConfigurationError(
                    "the vault component needs a Vault target (spec.target.vault or the policy's)"
                )
            self._vault = self.ctx.vault_client(self.cfg.vault, "spec.target.vault.auth")
            self._vault[0].check_ready()
        return self._vault

    def pg_conn(self) -> pg.PgConnection:
        """The target PostgreSQL server."""
        settings = self.cfg.postgres
        if settings is None:
            raise ConfigurationError(
                "the postgres component needs a target server (spec.target.postgres or the "
                "policy's)"
            )
        return self.ctx.pg_connection(settings)

    def load(self) -> Selected:
        """The manifest, checked, and the selection of artifacts."""
        with self.phase("manifest"):
            manifest = self.set.manifest()
            sel = self.set.select(manifest)
        self.result.manifest_key = self.set.key("manifest.json")
        self.result.manifest_sha256 = self.set.manifest_sha256
        self.result.size_bytes = sel.size
        self.evidence["set"] = self.set.url
        self.evidence["signedBy"] = self.set.signer[-16:] if self.set.signer else None
        return sel

    def mounts(self, exports: dict[str, dict[str, Any]]) -> list[str]:
        """The KV mounts holding the CA keys: those in the set, else the configured ones."""
        return sorted(exports) or (list(self.cfg.vault.kv_mounts) if self.cfg.vault else [])

    def kv_key_ids(self, mounts: list[str]) -> set[str]:
        """Key ids live in the mounts."""
        client, _ = self.vault()
        ids: set[str] = set()
        for mount in mounts:
            if restore_vault.mount_present(client, mount):
                live = restore_vault.read_mount(client, mount)
                ids |= restore_keys.export_key_ids(
                    {"secrets": {p: {"data": d} for p, d in live.items()}}
                )
        return ids

    def postgres_restore(self, copy_props: bool) -> restore_pg.PostgresRestore:
        """The PostgreSQL restorer for the target server."""
        return restore_pg.PostgresRestore(
            self.pg_conn(),
            store=self.set.store,
            set_prefix=self.cfg.set_prefix,
            keyring=self.set.keyring,
            passphrase=self.set.passphrase,
            scratch_dir=self.ctx.scratch,
            jobs=self.cfg.postgres_jobs,
            parallel=self.cfg.postgres_parallel,
            copy_props=copy_props,
        )

    def restore_databases(
        self, sel: Selected, pgr: restore_pg.PostgresRestore, scratch_name: Callable[[str], str]
    ) -> list[restore_pg.PgTarget]:
        """Every selected database into its scratch copy, verified."""
        targets = restore_pg.plan_targets(sel.postgres, scratch_name)
        with self.phase("postgres", "postgres"):
            pgr.prepare(targets)
        self.evidence["postgres"] = {t.database: t.evidence for t in targets}
        for target in targets:
            for text in target.warnings:
                self.warn(text)
        return targets

    # -- key consistency ------------------------------------------------------------------------

    def key_locations(self, pgr: restore_pg.PostgresRestore | None) -> dict[str, tuple[str, str]]:
        """Where the ca and kms tables are: the restored copies first, else the live databases."""
        found: dict[str, tuple[str, str]] = {}
        for target in pgr.targets if pgr is not None else []:
            for artifact in target.artifacts:
                database, schema = restore_pg.artifact_database(artifact)
                found[schema or database] = (target.scratch, schema or "public")
        if ("ca" not in found or "kms" not in found) and self.cfg.postgres is not None:
            existing = set(pg.list_databases(pg.OneShot(self.pg_conn(), "postgres")))
            for service in ("ca", "kms"):
                if service not in found and service in existing:
                    found[service] = (service, "public")
        return found

    def restores_key_volume(self) -> bool:
        """Whether this run restored a volume that holds a filesystem engine's keys."""
        return any(fs.volume in self.restored_volumes for fs in self.cfg.filesystem_key_stores)

    def filesystem_store(self, fs: FilesystemKeyStore) -> restore_keys.KeyStore:
        """A filesystem engine's key ids, read where its volume was restored.

        In place, a volume this run does not restore is read live: the restored databases will
        meet those keys. A volume that is nowhere gives an empty store, so every key of the
        engine fails by CA, key id and engine, and the failure names the missing volume.
        """
        found = self.restored_volumes.get(fs.volume)
        if found is None and self.cfg.mode == "InPlace":
            live = next((Path(v.path) for v in self.cfg.volumes if v.name == fs.volume), None)
            if live is not None and live.is_dir():
                found = (live, f"live volume {fs.volume}")
        if found is None:
            self.warn(
                f"the keys of engine {fs.engine} are on volume {fs.volume}, which this restore "
                "does not restore: restore the volumes component of the same set"
            )
            return restore_keys.KeyStore(
                fs.engine, "filesystem", frozenset(), f"volume {fs.volume}: not in the restored set"
            )
        root, where = found
        directory = root / fs.path if fs.path else root
        ids = frozenset(restore_keys.filesystem_key_ids(directory))
        return restore_keys.KeyStore(
            fs.engine, "filesystem", ids, f"{where}, {fs.path}" if fs.path else where
        )

    def key_stores(self, store: set[str] | None, source: str) -> list[restore_keys.KeyStore]:
        """Each engine's store: the filesystem engines from their volumes; Vault KV (``store``,
        when there is one) for ``key_store_engines``, or when none are declared for every
        engine the filesystem stores do not claim (older configs declare nothing)."""
        stores = [self.filesystem_store(fs) for fs in self.cfg.filesystem_key_stores]
        if store is not None:
            claimed = {s.engine_id for s in stores}
            engines = self.cfg.key_store_engines or [restore_keys.ANY_ENGINE]
            ids = frozenset(store)
            stores += [
                restore_keys.KeyStore(e, "vault-kv", ids, source)
                for e in engines
                if e not in claimed
            ]
        return stores

    def check_keys(
        self, pgr: restore_pg.PostgresRestore | None, store: set[str] | None, source: str
    ) -> None:
        """The key consistency check; records evidence, raises when a reference is missing.

        ``store`` holds the key ids of the Vault KV side (None: no KV store to check) and
        ``source`` says where they were read; the filesystem engines come from the config.
        """
        if not self.cfg.key_consistency:
            self.evidence["keyConsistency"] = {"skipped": "disabled"}
            return
        where = self.key_locations(pgr)
        stores = self.key_stores(store, source)
        if not stores or "ca" not in where or "kms" not in where:
            missing = "key store" if not stores else "ca and kms databases"
            self.warn(f"key consistency not checked: no {missing} to check")
            self.evidence["keyConsistency"] = {"skipped": f"no {missing}"}
            return
        with self.phase("keyConsistency", "keyConsistency"):
            conn = self.pg_conn()
            kms_rows, ca_rows = pg.key_inventory(
                pg.OneShot(conn, where["ca"][0]),
                where["ca"][1],
                pg.OneShot(conn, where["kms"][0]),
                where["kms"][1],
            )
            report = restore_keys.check_inventory(kms_rows, ca_rows, stores)
            report.source = "; ".join(dict.fromkeys(s.source for s in stores))
            self.evidence["keyConsistency"] = report.evidence()
            if not report.ok:
                raise LamassuBackupError(report.message(), reason="KeyConsistencyFailed")

    # -- plan ------------------------------------------------------------------------------------

    def plan(self) -> None:
        """Verify the set and report what a restore would change, in order; change nothing."""
        sel = self.load()
        with self.phase("verify"):
            exports = self.set.exports(sel)
            objects = self.set.config_objects(sel)
            snapshot = self.set.snapshot(sel.raft, None) if sel.raft is not None else None
            for artifact in [*sel.postgres, *sel.volumes, *sel.other]:
                with self.phase("verify", artifact.component):
                    self.set.verify_only(artifact)
        plan: list[dict[str, str]] = []

        def item(component: str, target: str, action: str, detail: str = "") -> None:
            entry = {"component": component, "target": target, "action": action}
            if detail:
                entry["detail"] = detail[:160]
            plan.append(entry)

        if self.cfg.mode == "Drill":
            self._plan_drill(item, sel, exports)
        else:
            self._plan_in_place(item, sel, exports, objects, snapshot)
        self.evidence["plan"] = plan
        for component in sel.components:
            self.result.components[component] = "Planned"
        self.result.ok = True

    def _plan_drill(
        self, item: Callable[..., None], sel: Selected, exports: dict[str, dict[str, Any]]
    ) -> None:
        """A drill changes nothing live: say which scratch targets it would use."""
        for mount in exports:
            item("vault", f"KV mount {mount}-drill-{self.id}", "create, write, read back, unmount")
        for target in restore_pg.plan_targets(
            sel.postgres, lambda d: f"{d}{restore_pg.DRILL}{self.id}"
        ):
            item("postgres", f"database {target.scratch}", "restore, verify, drop")
        if sel.config is not None:
            item("config", "the config archive", "plan and apiserver dry-run apply")
        for artifact in sel.volumes:
            item("volumes", f"volume {artifact.name}", "extract into a scratch directory, delete")

    def _plan_in_place(
        self,
        item: Callable[..., None],
        sel: Selected,
        exports: dict[str, dict[str, Any]],
        objects: list[dict[str, Any]],
        snapshot: dict[str, Any] | None,
    ) -> None:
        """What an in-place restore would overwrite, in the order it would."""
        if "vault" in sel.components:
            self._plan_vault(item, exports, snapshot)
        self._plan_postgres(item, sel)
        if objects:
            self._plan_config(item, objects)
        for artifact in sel.volumes:
            path = next((v.path for v in self.cfg.volumes if v.name == artifact.name), None)
            item(
                "volumes",
                f"volume {artifact.name}",
                f"replace the contents of {path or '(no target path)'}, keeping the old aside",
            )

    def _plan_vault(
        self,
        item: Callable[..., None],
        exports: dict[str, dict[str, Any]],
        snapshot: dict[str, Any] | None,
    ) -> None:
        if self.cfg.vault_method == "RaftSnapshot" and snapshot is not None:
            target = self.cfg.vault.address if self.cfg.vault else "Vault"
            item(
                "vault",
                target,
                "replace the whole Vault state with the snapshot, then read it back",
                f"snapshot index {snapshot.get('index')}, {snapshot.get('stateBytes')} bytes",
            )
            return
        for mount, doc in exports.items():
            if self.cfg.vault is None:
                item(
                    "vault", f"KV mount {mount}", "write secrets", f"{len(doc['secrets'])} secrets"
                )
                continue
            client, _ = self.vault()
            outcome = restore_vault.kv_restore(
                client, mount, doc["secrets"], overwrite=self.cfg.overwrite_existing, apply=False
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
            item("vault", f"KV mount {mount}", action, detail)

    def _plan_postgres(self, item: Callable[..., None], sel: Selected) -> None:
        if not sel.postgres:
            return
        existing: set[str] = set()
        if self.cfg.postgres is not None:
            existing = set(pg.list_databases(pg.OneShot(self.pg_conn(), "postgres")))
        suffix = self.cfg.swap_suffix or "<time>"
        for target in restore_pg.plan_targets(sel.postgres, lambda d: f"{d}{restore_pg.RESTORING}"):
            rows = sum(sum((a.details.get("rowCounts") or {}).values()) for a in target.artifacts)
            if target.database in existing:
                aside = f"{target.database}{restore_pg.PRE_RESTORE}{suffix}"
                action = f"restore into {target.scratch}, verify, swap in; keep the live as {aside}"
            else:
                action = f"restore into {target.scratch}, verify, rename to {target.database}"
            item("postgres", f"database {target.database}", action, f"{rows} rows")

    def _plan_config(self, item: Callable[..., None], objects: list[dict[str, Any]]) -> None:
        if self.cfg.config is None:
            for obj in objects:
                item("config", f"{obj['kind']} {obj['metadata']['name']}", "apply")
            return
        changes, _, namespace = self.config_changes(objects)
        for change in changes:
            item(
                "config",
                f"{change.kind} {namespace}/{change.name}",
                change.action,
                change.detail(),
            )

    def config_changes(
        self, objects: list[dict[str, Any]]
    ) -> tuple[list[restore_config.ConfigChange], ConfigWriter, str]:
        """The config plan against the live namespace."""
        if self.cfg.config is None:
            raise ConfigurationError(
                "the config component needs a target namespace (spec.target.namespace)"
            )
        import os

        from ..clients.kube import ConfigWriter, load_config

        namespace = self.cfg.config.namespace
        writer = ConfigWriter(load_config(os.environ.get("LAMASSU_KUBECONFIG")))
        live = {
            (o["kind"], o["metadata"]["name"]): writer.get(
                o["kind"], namespace, o["metadata"]["name"]
            )
            for o in objects
        }
        return restore_config.plan_changes(objects, live), writer, namespace

    # -- in place --------------------------------------------------------------------------------

    def in_place(self) -> None:
        """Verify, restore beside the live data, validate, then change the live side in order."""
        started = time.monotonic()
        sel = self.load()
        suffix = self.cfg.swap_suffix or datetime.now(UTC).strftime("%Y%m%d%H%M%S")
        vault_wanted = "vault" in sel.components and bool(sel.kv or sel.raft)
        raft = vault_wanted and self.cfg.vault_method == "RaftSnapshot"
        if raft and sel.raft is None:
            raise ConfigurationError(
                "vaultMethod RaftSnapshot, but the set has no raft snapshot: use method KV"
            )
        self._require_targets(sel, vault_wanted)
        side = Side()
        pgr: restore_pg.PostgresRestore | None = None
        try:
            self._prepare_side(sel, side, raft)
            if sel.postgres:
                pgr = self.postgres_restore(copy_props=True)
                self._prepare_databases(sel, pgr, suffix)
            deferred = self._check_keys_before(sel, side, pgr, vault_wanted, raft)
            # Nothing live has changed so far. From here on: Vault, databases, config, volumes.
            if vault_wanted:
                with self.phase("vault", "vault"):
                    self._vault_in_place(side)
                if deferred:
                    mounts = self.mounts(side.exports)
                    self.check_keys(
                        pgr,
                        self.kv_key_ids(mounts),
                        f"KV mount(s) {', '.join(mounts)} after the snapshot restore",
                    )
            if pgr is not None:
                with self.phase("swap", "postgres"):
                    kept = pgr.swap(suffix)
                self.changed.append("postgres")
                self.evidence["swapSuffix"] = suffix
                self.evidence["kept"] = kept
                self.result.components["postgres"] = "Completed"
            self._after_swap(side, pgr, suffix)
        except BaseException:
            if pgr is not None:
                left = pgr.discard()
                if left:
                    self.warn(
                        f"scratch databases left behind (drop them by hand): {', '.join(left)}"
                    )
            for _, staging in side.staged:
                shutil.rmtree(staging, ignore_errors=True)
            if side.snapshot is not None:
                side.snapshot.unlink(missing_ok=True)
            raise
        finally:
            if pgr is not None:
                pgr.close()
        self.evidence["recoveryTimeSeconds"] = round(time.monotonic() - started, 2)
        self.result.ok = True

    def _require_targets(self, sel: Selected, vault_wanted: bool) -> None:
        """Fail fast (before the long database restore) on a missing or unready target."""
        if sel.postgres:
            self.pg_conn()
        if vault_wanted:
            self.vault()  # logs in and refuses a sealed Vault now, not after the databases
        if sel.config is not None and self.cfg.config is None:
            raise ConfigurationError(
                "the config component needs a target namespace (spec.target.namespace)"
            )

    def _prepare_databases(
        self, sel: Selected, pgr: restore_pg.PostgresRestore, suffix: str
    ) -> None:
        """Every database into <db>__restoring, verified; refuses what the swap cannot do."""
        targets = restore_pg.plan_targets(sel.postgres, lambda d: f"{d}{restore_pg.RESTORING}")
        restore_pg.require_whole_databases(pgr.conn, targets)
        for target in targets:
            restore_pg.check_name(f"{target.database}{restore_pg.PRE_RESTORE}{suffix}")
        self.restore_databases(sel, pgr, lambda d: f"{d}{restore_pg.RESTORING}")

    def _prepare_side(self, sel: Selected, side: Side, raft: bool) -> None:
        """Verify and stage everything that is not a database (cheap: fails fast)."""
        with self.phase("verify"):
            with self.phase("verify", "vault"):
                side.exports = self.set.exports(sel)
                if raft and sel.raft is not None:
                    side.snapshot = self.ctx.scratch / "raft.snap"
                    facts = self.set.snapshot(sel.raft, side.snapshot)
                    self.evidence.setdefault("vault", {})["snapshot"] = {
                        k: facts[k] for k in ("index", "term", "stateBytes")
                    }
            for artifact in sel.other:  # metadata only (AWS KMS): verified, nothing to write
                with self.phase("verify", artifact.component):
                    self.set.verify_only(artifact)
                self.result.components[artifact.component] = "Verified"
            with self.phase("verify", "config"):
                side.objects = self.set.config_objects(sel)
                if side.objects:
                    side.changes, side.writer, side.namespace = self.config_changes(side.objects)
            for artifact in sel.volumes:
                with self.phase("verify", "volumes"):
                    staging = self._stage_volume(artifact)
                    side.staged.append((artifact.name, staging))
                    self.restored_volumes[artifact.name] = (
                        staging,
                        f"volume {artifact.name} as restored",
                    )

    def _check_keys_before(
        self,
        sel: Selected,
        side: Side,
        pgr: restore_pg.PostgresRestore | None,
        vault_wanted: bool,
        raft: bool,
    ) -> bool:
        """Check the restored databases against the key store they will meet, before anything
        live changes. Returns True when it can only be checked after the Vault restore (a raft
        snapshot without a KV export in the set)."""
        mounts = self.mounts(side.exports)
        store: set[str] | None = None
        source = ""
        if vault_wanted and raft:
            if not side.exports:
                return True
            store = union_keys(side.exports)
            source = "the set's KV export (the snapshot's data)"
        elif vault_wanted:
            store = union_keys(side.exports)
            if self.cfg.vault is not None:
                store |= self.kv_key_ids(mounts)
            source = f"KV mount(s) {', '.join(mounts)} as restored"
        elif self.cfg.vault is not None and mounts:
            store = self.kv_key_ids(mounts)
            source = f"live KV mount(s) {', '.join(mounts)}"
        elif side.exports:
            store = union_keys(side.exports)
            source = "the set's KV export"
        if sel.postgres or store is not None or self.restores_key_volume():
            self.check_keys(pgr, store, source)
        return False

    def _vault_in_place(self, side: Side) -> None:
        client, relogin = self.vault()
        ev = self.evidence.setdefault("vault", {})
        if side.snapshot is not None:
            self.changed.append("vault")
            mounts = self.mounts(side.exports)
            applied = restore_vault.raft_restore(
                client,
                side.snapshot,
                canary_mount=mounts[0] if mounts else None,
                canary_id=self.id,
                exports=side.exports,
                relogin=relogin,
            )
            side.snapshot.unlink(missing_ok=True)
            ev.update(
                method="RaftSnapshot",
                appliedSeconds=applied.seconds,
                canary=applied.canary,
                verifiedMounts=applied.verified_mounts,
            )
            for text in applied.warnings:
                self.warn(text)
        else:
            ev["method"] = "KV"
            for mount, doc in side.exports.items():
                outcome = restore_vault.kv_restore(
                    client, mount, doc["secrets"], overwrite=self.cfg.overwrite_existing, apply=True
                )
                if outcome.created or outcome.overwritten or outcome.mount_created:
                    self.changed.append(f"vault:{mount}")
                ev[mount] = outcome.evidence()
                if outcome.conflicting:
                    self.warn(
                        f"KV mount {mount}: {len(outcome.conflicting)} secret(s) differ from the "
                        "set and were left as they are (overwriteExisting is false): "
                        f"{', '.join(outcome.conflicting[:6])}"
                    )
        self.result.components["vault"] = "Completed"

    def _after_swap(self, side: Side, pgr: restore_pg.PostgresRestore | None, suffix: str) -> None:
        """Config and volumes; a failure here swaps the databases back."""
        try:
            if side.changes is not None and side.writer is not None:
                with self.phase("config", "config"):
                    self._apply_config(side)
            if side.staged:
                with self.phase("volumes", "volumes"):
                    self._swap_volumes(side, suffix)
        except LamassuBackupError as exc:
            if pgr is None or "postgres" not in self.changed:
                raise
            try:
                with self.phase("swapBack", "postgres"):
                    restore_pg.swap_back(pgr.conn, [t.database for t in pgr.targets], suffix)
            except LamassuBackupError as again:
                raise LamassuBackupError(
                    f"{exc.message}; swapping the databases back failed too: {again.message}",
                    reason=exc.reason,
                ) from None
            self.changed.remove("postgres")
            self.evidence["rolledBack"] = ["postgres"]
            self.result.components["postgres"] = "RolledBack"
            raise LamassuBackupError(
                f"{exc.message} (the databases had been swapped: they were swapped back)",
                reason=exc.reason,
            ) from None

    def _apply_config(self, side: Side) -> None:
        assert side.changes is not None
        assert side.writer is not None
        by_name = {(o["kind"], o["metadata"]["name"]): o for o in side.objects}
        for change in side.changes:
            if change.action == "unchanged":
                continue
            body = restore_config.apply_body(by_name[(change.kind, change.name)], side.namespace)
            side.writer.apply(body, field_manager=restore_config.FIELD_MANAGER)
            self.changed.append(f"config:{change.kind}/{change.name}")
        self.evidence["config"] = {
            action: sum(1 for c in side.changes if c.action == action)
            for action in ("create", "update", "unchanged")
        }
        self.result.components["config"] = "Completed"

    def _stage_volume(self, artifact: Any) -> Path:
        root = next((Path(v.path) for v in self.cfg.volumes if v.name == artifact.name), None)
        if root is None:
            raise ConfigurationError(
                f"volume {artifact.name}: no target path given (volumes: name {artifact.name})"
            )
        if not root.is_dir():
            raise ConfigurationError(f"volume {artifact.name}: {root} is not a mounted directory")
        staging = root / f"{_VOLUME_MARK}restoring-{self.id}"
        shutil.rmtree(staging, ignore_errors=True)
        staging.mkdir(mode=0o700)
        try:
            self.set.extract(artifact, staging)
        except BaseException:
            shutil.rmtree(staging, ignore_errors=True)
            raise
        return staging

    def _swap_volumes(self, side: Side, suffix: str) -> None:
        """Move the live files aside and the staged ones in (renames within the volume)."""
        for name, staging in side.staged:
            root = staging.parent
            aside = root / f"{_VOLUME_MARK}pre-restore-{suffix}"
            aside.mkdir(mode=0o700)
            self.changed.append(f"volume:{name}")
            for entry in root.iterdir():
                if not entry.name.startswith(_VOLUME_MARK):
                    entry.rename(aside / entry.name)
            for entry in staging.iterdir():
                entry.rename(root / entry.name)
            staging.rmdir()
        side.staged = []
        self.evidence["volumes"] = {"swapped": len(self.cfg.volumes)}
        self.result.components["volumes"] = "Completed"

    # -- drill -----------------------------------------------------------------------------------

    def drill(self) -> None:
        """Restore into scratch targets, validate, record evidence, tear everything down."""
        started = time.monotonic()
        sel = self.load()
        mounts: list[str] = []
        pgr: restore_pg.PostgresRestore | None = None
        volume_dir = self.ctx.scratch / "volumes"
        try:
            with self.phase("verify"):
                exports = self.set.exports(sel)
                objects = self.set.config_objects(sel)
                if sel.raft is not None:
                    with self.phase("verify", "vault"):
                        facts = self.set.snapshot(sel.raft, None)
                    self.evidence.setdefault("vault", {})["snapshot"] = {
                        k: facts[k] for k in ("index", "term", "stateBytes")
                    }
                for artifact in sel.other:
                    with self.phase("verify", artifact.component):
                        self.set.verify_only(artifact)
                    self.result.components[artifact.component] = "Verified"
            store, source = self._drill_vault(exports, mounts)
            if sel.kv or sel.raft:
                self.result.components["vault"] = "Verified"
            if objects:
                with self.phase("config", "config"):
                    self._drill_config(objects)
            if sel.volumes:
                with self.phase("volumes", "volumes"):
                    files = {}
                    for artifact in sel.volumes:
                        into = volume_dir / artifact.name
                        into.mkdir(parents=True, mode=0o700)
                        files[artifact.name] = self.set.extract(artifact, into)
                        self.restored_volumes[artifact.name] = (
                            into,
                            f"scratch copy of volume {artifact.name}",
                        )
                    self.evidence["volumes"] = files
                    self.result.components["volumes"] = "Verified"
            if sel.postgres:
                pgr = self.postgres_restore(copy_props=False)
                self.restore_databases(sel, pgr, lambda d: f"{d}{restore_pg.DRILL}{self.id}")
                self.result.components["postgres"] = "Verified"
            if sel.postgres or store is not None or self.restores_key_volume():
                self.check_keys(pgr, store, source)
            self.result.ok = True
        finally:
            self.evidence["recoveryTimeSeconds"] = round(time.monotonic() - started, 2)
            with self.phase("teardown"):
                self.evidence["teardown"] = self._teardown(pgr, mounts, volume_dir)

    def _drill_vault(
        self, exports: dict[str, dict[str, Any]], mounts: list[str]
    ) -> tuple[set[str] | None, str]:
        """Each export into a scratch mount, read back; the key ids that came back."""
        if not exports:
            return None, ""
        if self.cfg.vault is None:
            return union_keys(exports), "the set's KV export (no Vault to restore it into)"
        client, _ = self.vault()
        store: set[str] = set()
        with self.phase("vault", "vault"):
            for mount, doc in exports.items():
                scratch = f"{mount}-drill-{self.id}"
                mounts.append(scratch)
                live = restore_vault.drill_mount(client, scratch, doc["secrets"])
                store |= restore_keys.export_key_ids(
                    {"secrets": {p: {"data": d} for p, d in live.items()}}
                )
                self.evidence.setdefault("vault", {})[mount] = {
                    "scratchMount": scratch,
                    "secrets": len(live),
                }
        return store, f"scratch mount(s) {', '.join(mounts)}"

    def _drill_config(self, objects: list[dict[str, Any]]) -> None:
        """Plan against the live namespace and have the apiserver validate the apply (dry run)."""
        ev: dict[str, Any] = {"objects": len(objects)}
        if self.cfg.config is not None:
            changes, writer, namespace = self.config_changes(objects)
            by_name = {(o["kind"], o["metadata"]["name"]): o for o in objects}
            for change in changes:
                if change.action != "unchanged":
                    body = restore_config.apply_body(by_name[(change.kind, change.name)], namespace)
                    writer.apply(body, field_manager=restore_config.FIELD_MANAGER, dry_run=True)
            for action in ("create", "update", "unchanged"):
                ev[action] = sum(1 for c in changes if c.action == action)
            ev["dryRunApplied"] = ev["create"] + ev["update"]
        self.evidence["config"] = ev
        self.result.components["config"] = "Verified"

    def _teardown(
        self, pgr: restore_pg.PostgresRestore | None, mounts: list[str], volume_dir: Path
    ) -> dict[str, Any]:
        """Drop every scratch target, then check that none is left."""
        left: list[str] = []
        if pgr is not None:
            left += pgr.discard()
            pgr.close()
            try:
                databases = pg.list_databases(pg.OneShot(pgr.conn, "postgres"))
                marker = f"{restore_pg.DRILL}{self.id}"
                left += [n for n in databases if n.endswith(marker) and n not in left]
            except LamassuBackupError as exc:
                self.warn(f"could not check for leftover scratch databases: {exc.message}")
        if mounts:
            client, _ = self.vault()
            for mount in mounts:
                try:
                    client.disable_mount(mount)
                    if client.mount_exists(mount):
                        left.append(mount)
                except LamassuBackupError as exc:
                    left.append(mount)
                    self.warn(f"scratch mount {mount} not removed: {exc.message}")
        shutil.rmtree(volume_dir, ignore_errors=True)
        if volume_dir.exists():
            left.append(str(volume_dir))
        if left:
            self.warn(f"drill scratch targets left behind (remove them by hand): {', '.join(left)}")
        return {"left": left}

    # -- finalize / rollback ----------------------------------------------------------------------

    def finalize(self) -> None:
        """Drop what a restore kept aside (unless keepPrevious)."""
        suffix = self._suffix()
        dropped: list[str] = []
        if self.cfg.postgres is not None:
            with self.phase("finalize", "postgres"):
                conn = self.pg_conn()
                dbs = restore_pg.kept_databases(conn, suffix, self.cfg.databases)
                if self.cfg.keep_previous:
                    self.evidence["kept"] = [f"{d}{restore_pg.PRE_RESTORE}{suffix}" for d in dbs]
                else:
                    dropped += restore_pg.finalize(conn, dbs, suffix)
            self.result.components["postgres"] = "Completed"
        for volume in self.cfg.volumes:
            aside = Path(volume.path) / f"{_VOLUME_MARK}pre-restore-{suffix}"
            if aside.exists() and not self.cfg.keep_previous:
                shutil.rmtree(aside)
                dropped.append(f"volume:{volume.name}")
        self.evidence["dropped"] = dropped
        self.result.ok = True

    def rollback(self) -> None:
        """Put back what a restore kept aside."""
        suffix = self._suffix()
        rolled: list[str] = []
        if self.cfg.postgres is not None:
            with self.phase("swapBack", "postgres"):
                conn = self.pg_conn()
                kept = restore_pg.kept_databases(conn, suffix, self.cfg.databases)
                rolled += restore_pg.swap_back(conn, kept, suffix)
            self.result.components["postgres"] = "RolledBack"
        for volume in self.cfg.volumes:
            root = Path(volume.path)
            aside = root / f"{_VOLUME_MARK}pre-restore-{suffix}"
            if not aside.is_dir():
                continue
            trash = root / f"{_VOLUME_MARK}rolled-back-{suffix}"
            trash.mkdir(mode=0o700, exist_ok=True)
            for entry in root.iterdir():
                if not entry.name.startswith(_VOLUME_MARK):
                    entry.rename(trash / entry.name)
            for entry in aside.iterdir():
                entry.rename(root / entry.name)
            aside.rmdir()
            shutil.rmtree(trash, ignore_errors=True)
            rolled.append(f"volume:{volume.name}")
        self.evidence["rolledBack"] = rolled
        self.result.ok = True

    def _suffix(self) -> str:
        if not self.cfg.swap_suffix:
            raise ConfigurationError(
                f"step {self.cfg.step} needs swapSuffix: the suffix the restore reported "
                "(evidence.swapSuffix)"
            )
        return self.cfg.swap_suffix


def _on_sigterm(signum: int, frame: FrameType | None) -> None:
    raise RestoreInterruptedError(
        "interrupted by SIGTERM (the Job was stopped); scratch targets removed"
    )


def run(cfg: RestoreRunConfig, ctx: RunnerContext) -> tuple[RunnerResult, int]:
    """Run one restore step; the result for the termination message and the exit code."""
    started = time.monotonic()
    dry = cfg.step == "plan" or (cfg.dry_run and cfg.step == "restore")
    step = "plan" if dry else cfg.step
    action = "drill" if step == "restore" and cfg.mode == "Drill" else step
    result = RunnerResult(ok=False, action=action)
    result.evidence.update({"mode": cfg.mode, "step": step})
    previous = None
    if threading.current_thread() is threading.main_thread():
        previous = signal.signal(signal.SIGTERM, _on_sigterm)
    run_ = RestoreRun(cfg, ctx, result)
    steps: dict[str, Callable[[], None]] = {
        "plan": run_.plan,
        "finalize": run_.finalize,
        "rollback": run_.rollback,
        "restore": run_.drill if cfg.mode == "Drill" else run_.in_place,
    }
    try:
        steps[step]()
    except LamassuBackupError as exc:
        result.ok = False
        result.error = exc.message
        result.reason = exc.reason
    except Exception as exc:  # noqa: BLE001 - reported, never a traceback in the termination message
        result.ok = False
        result.error = f"{type(exc).__name__}: {exc}"
        result.reason = "InternalError"
    finally:
        run_.close()
        if previous is not None:
            signal.signal(signal.SIGTERM, previous)
    code = EXIT_OK if result.ok else EXIT_FAILED
    if not result.ok:
        if run_.failed and result.reason:
            result.components[run_.failed] = f"Failed: {result.reason}"
        if run_.changed:
            result.evidence["changed"] = run_.changed
            code = EXIT_CHANGED
    result.evidence["timings"] = run_.timings
    result.seconds = round(time.monotonic() - started, 3)
    if result.error:
        result.error = ctx.redactor.redact(result.error)
    _log_evidence(result, ctx)
    return result, code


def _log_evidence(result: RunnerResult, ctx: RunnerContext) -> None:
    """The whole evidence on stderr (the Job log), in case the termination message must drop it."""
    text = json.dumps({"evidence": result.evidence}, separators=(",", ":"), default=str)
    sys.stderr.write(ctx.redactor.redact(text) + "\n")
