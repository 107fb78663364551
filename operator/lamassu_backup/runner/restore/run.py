"""The restore runner: verify a set before destroying anything, restore beside the live data,
validate, then swap; or, in a drill, restore into scratch targets, validate, and tear down.

This is the skeleton: what a step does with each component is the component's restore hooks
(:mod:`.hooks`), called in restore order (each component's ``order``: Vault, the databases,
config, volumes). Steps (``RestoreRunConfig.step``):

- ``plan`` (also ``restore`` with ``dryRun``): check the manifest (signature, completeness),
  stream and verify every selected artifact (both checksums, decryption, decompression), and
  report what a restore would change, in order (``evidence.plan``). Nothing is written.
- ``restore``, mode ``InPlace``: the same verification; what is small staged beside the live
  data, the databases restored beside it (``<db>__restoring``) and verified (row counts and goose
  version equal the manifest's); the key consistency of the restored databases checked against
  the key stores they will meet (Vault KV; each filesystem or SoftHSM engine's volume as staged,
  or live when not restored; the AWS KMS metadata in the set), each CA's key matched with its
  certificate where the store holds it readably. Only then does anything live change, component after component in restore
  order (the databases in one atomic rename transaction, the previous ones kept as
  ``<db>__pre_restore_<suffix>``). A failure after a component that can be put back (the
  databases: swapped back) puts it back.
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
import signal
import sys
import threading
import time
from collections.abc import Callable, Iterable, Iterator
from datetime import UTC, datetime
from pathlib import Path
from types import FrameType

from ...errors import ConfigurationError, LamassuBackupError
from ...models.runner import RestoreRunConfig, RunnerResult
from ..context import RunnerContext
from . import hooks, key_material, keys
from .hooks import PlanItem, RestoreHooks
from .journal import Journal
from .set_reader import SetReader

EXIT_OK = 0
EXIT_FAILED = 1
EXIT_CHANGED = 3


class RestoreInterruptedError(LamassuBackupError):
    """SIGTERM (the Job was deleted or timed out): clean up, report, exit."""

    reason = "Interrupted"


def drill_id(cfg: RestoreRunConfig) -> str:
    """A short, stable id for the scratch targets of one restore (a retried Job reuses it, so it
    finds and drops what an interrupted attempt left)."""
    return hashlib.sha256(f"{cfg.namespace}/{cfg.restore}".encode()).hexdigest()[:8]


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
        self.components: list[str] = []
        """The components asked for (set by :meth:`load`)."""
        self.restored_volumes: dict[str, tuple[Path, str]] = {}
        """Volume name -> (where this run restored it, how the key check names that place)."""
        self.journal = Journal(cfg)
        """What the live changes replaced, recorded before them (the rollback step reads it)."""
        self.parts: list[RestoreHooks] = hooks.ordered(self)
        """Every component's hooks, in restore order."""

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

    @property
    def active(self) -> list[RestoreHooks]:
        """The components this run restores something of, in restore order."""
        return [p for p in self.parts if p.artifacts]

    def load(self) -> None:
        """What each component restores: first from its own source (a point in time, checked
        against its window before the set is read), then from the set's manifest, checked."""
        asked = self.cfg.components
        with self.phase("source"):
            own = [p.name for p in self.parts if p.load_source(not asked or p.name in asked)]
        rest = [c for c in asked if c not in own]
        self.components = list(own)
        if own and asked and not rest:
            # Nothing is read from a set: the component's own source is all there is.
            self.result.size_bytes = sum(a.size_bytes for p in self.parts for a in p.artifacts)
            return
        with self.phase("manifest"):
            manifest = self.set.manifest()
            sel = self.set.select(manifest, rest, exclude=own)
            self.components += sel.components
            for part in self.parts:
                if part.name in sel.components:
                    part.select([a for a in sel.artifacts if a.component == part.name])
        self.result.manifest_key = self.set.key("manifest.json")
        self.result.manifest_sha256 = self.set.manifest_sha256
        self.result.size_bytes = sum(a.size_bytes for p in self.parts for a in p.artifacts)
        self.evidence["set"] = self.set.url
        self.evidence["signedBy"] = self.set.signer[-16:] if self.set.signer else None

    # -- key consistency ------------------------------------------------------------------------

    def key_stores(
        self, store: Iterable[str] | None, source: str, read_key: keys.KeyReader | None = None
    ) -> list[keys.KeyStore]:
        """Each engine's store: those the components hold for their own engines (a filesystem
        or PKCS#11 engine's volume, the AWS KMS metadata); the shared store (``store``, when
        there is one: Vault KV, its private keys by ``read_key``) for ``key_store_engines``, or
        when none are declared for every engine the others do not claim (older configs declare
        nothing)."""
        stores = [s for part in self.parts for s in part.key_stores()]
        if store is not None:
            stores += keys.shared_stores(
                store, source, self.cfg.key_store_engines, {s.engine_id for s in stores}, read_key
            )
        return stores

    def key_ids(self) -> keys.KeyIds | None:
        """The shared store's key ids as this step meets them (None: there is none)."""
        return next((k for p in self.parts if (k := p.key_ids()) is not None), None)

    def check_keys_due(self) -> bool:
        """The key check, before anything live changes, when something of this run must be
        checked. Returns True when it can only be checked after a component is applied (the
        shared store is known only then)."""
        offered = self.key_ids()
        if offered is not None and offered.deferred:
            return True
        if offered is not None:
            self.check_keys(offered.ids, offered.source, offered.read_key)
        elif any(p.needs_key_check() for p in self.parts):
            self.check_keys(None, "")
        return False

    def check_keys(
        self, store: Iterable[str] | None, source: str, read_key: keys.KeyReader | None = None
    ) -> None:
        """The key consistency check; records evidence, raises when a reference is missing or a
        CA's stored key is not its certificate's.

        ``store`` holds the key ids of the shared store (None: no such store to check),
        ``source`` says where they were read and ``read_key`` gives its private keys; the
        components give the others and the tables.
        """
        if not self.cfg.key_consistency:
            self.evidence["keyConsistency"] = {"skipped": "disabled"}
            return
        inventory = next((i for p in self.parts if (i := p.key_inventory()) is not None), None)
        stores = self.key_stores(store, source, read_key)
        if not stores or inventory is None:
            missing = "key store" if not stores else keys.TABLES
            self.warn(f"key consistency not checked: no {missing} to check")
            self.evidence["keyConsistency"] = {"skipped": f"no {missing}"}
            return
        with self.phase("keyConsistency", "keyConsistency"):
            kms_rows, ca_rows = inventory()
            public_key_of: keys.PublicKeyOf | None = key_material.private_key_spki
            if any(s.read_key is not None for s in stores) and not key_material.openssl_available():
                public_key_of = None
                self.warn("openssl is not available: the CA keys were not matched with the CAs")
            report = keys.check_inventory(kms_rows, ca_rows, stores, public_key_of)
            report.source = "; ".join(dict.fromkeys(s.source for s in stores))
            self.evidence["keyConsistency"] = report.evidence()
            if not report.ok:
                raise LamassuBackupError(report.message(), reason="KeyConsistencyFailed")

    # -- plan ------------------------------------------------------------------------------------

    def record_plan(self) -> None:
        """What each component will overwrite, in order, into ``evidence.plan`` (a drill: its
        scratch targets, so ``kubectl lamassu restore describe`` shows a drill's plan too)."""
        plan: list[dict[str, str]] = []

        def item_of(component: str) -> PlanItem:
            def item(target: str, action: str, detail: str = "") -> None:
                entry = {"component": component, "target": target, "action": action}
                if detail:
                    entry["detail"] = detail[:160]
                plan.append(entry)

            return item

        for part in self.active:
            part.plan(item_of(part.name), self.cfg.mode == "Drill")
        self.evidence["plan"] = plan

    def plan(self) -> None:
        """Verify the set and report what a restore would change, in order; change nothing."""
        self.load()
        with self.phase("verify"):
            for part in self.active:
                part.verify("plan")
        self.record_plan()
        for component in self.components:
            self.result.components[component] = "Planned"
        self.result.ok = True

    # -- in place --------------------------------------------------------------------------------

    def in_place(self) -> None:
        """Verify, restore beside the live data, validate, then change the live side in order."""
        started = time.monotonic()
        self.load()
        suffix = self.cfg.swap_suffix or datetime.now(UTC).strftime("%Y%m%d%H%M%S")
        self.journal.suffix = suffix
        for part in self.active:  # fail fast, before the long restores
            part.require()
        try:
            with self.phase("verify"):
                for part in self.active:
                    part.verify("restore")
            for part in self.active:
                part.prepare(suffix)
            deferred = self.check_keys_due()
            # Nothing live has changed so far. From here on, in restore order.
            self._apply(suffix, deferred)
        except BaseException:
            for part in self.parts:
                part.discard()
            raise
        finally:
            for part in self.parts:
                part.close()
        self.evidence["recoveryTimeSeconds"] = round(time.monotonic() - started, 2)
        self.result.ok = True

    def _apply(self, suffix: str, deferred: bool) -> None:
        """Each component's live change; a failure puts back those applied that can be."""
        applied: list[RestoreHooks] = []
        try:
            for part in self.active:
                applied.append(part)  # a part failing half way undoes what it recorded
                part.apply(suffix)
                if deferred:
                    offered = self.key_ids()
                    if offered is not None and not offered.deferred:
                        self.check_keys(offered.ids, offered.source, offered.read_key)
                        deferred = False
        except LamassuBackupError as exc:
            self._undo(applied, suffix, exc)
            raise

    def _undo(self, applied: list[RestoreHooks], suffix: str, exc: LamassuBackupError) -> None:
        """Put back what can be, newest first; raises the failure saying so (returns when
        nothing was put back: the caller raises the failure as it was)."""
        notes: list[str] = []
        rolled: list[str] = []
        failed: list[str] = []
        for part in reversed(applied):  # each one, even after another failed to undo
            try:
                note = part.undo(suffix)
            except LamassuBackupError as again:
                failed.append(again.message)
                continue
            if note is not None:
                notes.append(note)
                rolled.append(part.name)
                self.result.components[part.name] = "RolledBack"
        if failed:
            self.evidence["rolledBack"] = rolled
            raise LamassuBackupError(
                f"{exc.message}; {'; '.join(failed)}" + (f" ({'; '.join(notes)})" if notes else ""),
                reason=exc.reason,
            ) from None
        if not notes:
            return
        if not self.changed:
            self._drop_journal()
        self.evidence["rolledBack"] = rolled
        raise LamassuBackupError(f"{exc.message} ({'; '.join(notes)})", reason=exc.reason) from None

    # -- drill -----------------------------------------------------------------------------------

    def drill(self) -> None:
        """Restore into scratch targets, validate, record evidence, tear everything down."""
        started = time.monotonic()
        self.load()
        try:
            with self.phase("verify"):
                for part in self.active:
                    part.verify("drill")
            self.record_plan()
            for part in self.active:
                part.drill()
            for part in self.active:
                part.prepare(None)
            self.check_keys_due()
            self.result.ok = True
        finally:
            self.evidence["recoveryTimeSeconds"] = round(time.monotonic() - started, 2)
            with self.phase("teardown"):
                self.evidence["teardown"] = self._teardown()

    def _teardown(self) -> dict[str, list[str]]:
        """Drop every scratch target, then check that none is left."""
        left = [name for part in self.parts for name in part.teardown()]
        if left:
            self.warn(f"drill scratch targets left behind (remove them by hand): {', '.join(left)}")
        return {"left": left}

    # -- finalize / rollback ----------------------------------------------------------------------

    def finalize(self) -> None:
        """Drop what a restore kept aside (unless keepPrevious)."""
        suffix = self._suffix()
        self.evidence["dropped"] = [name for part in self.parts for name in part.finalize(suffix)]
        self._drop_journal()
        self.result.ok = True

    def rollback(self) -> None:
        """Put back what a restore kept aside."""
        suffix = self._suffix()
        # Newest first, as an in-run undo: config, then the databases, then Vault.
        self.evidence["rolledBack"] = [
            name for part in reversed(self.parts) for name in part.rollback(suffix)
        ]
        if not self.changed:
            self._drop_journal()
        self.result.ok = True

    def _drop_journal(self) -> None:
        """The journal is done with (everything put back, or finalized)."""
        try:
            self.journal.drop()
        except LamassuBackupError as exc:
            self.warn(f"the undo journal was not deleted (delete it by hand): {exc.message}")

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
