"""The backup runner: every component of a Lamassu deployment into one encrypted, checksummed set.

Each component's step (``components/<name>/backup.py``, found by :func:`.steps.step_of`) streams its artifacts through :func:`encrypt_to_store`, checks what the store
holds, writes the ``sha256sum -c`` sidecar, and records its outcome in a part file. The commit
step turns the part files into ``manifest.json``, signs it, and writes it last: until then the
set is incomplete by definition, whatever objects exist.

SIGTERM (the Job deleted, or past its ``activeDeadlineSeconds``) stops the component at once: its
pipelines' processes are killed (also those of the postgres workers), its uploads aborted, what it
stored removed, its part file records it as Failed with reason ``Interrupted``, nothing is
committed, and the runner exits non-zero with its termination message, well inside the Pod's
grace period.
"""

from __future__ import annotations

import hashlib
import signal
import threading
import time
from collections.abc import Callable, Iterable
from datetime import UTC, datetime
from types import FrameType
from typing import Any

from ... import __version__
from ...builders import layout
from ...builders.manifest import Manifest, build_manifest, render
from ...builders.manifest import parse as parse_manifest
from ...clients.gpg import Keyring
from ...clients.s3 import S3Store
from ...errors import IntegrityError, LamassuBackupError
from ...models.runner import ArtifactRecord, ComponentOutcome, RunnerConfig, RunnerResult
from ..context import RunnerContext
from ..stream.pipeline import Cancel, Source, encrypt_to_store
from .steps import step_of


class BackupRun:
    """One runner invocation: some components of one set, and possibly its commit."""

    def __init__(self, cfg: RunnerConfig, ctx: RunnerContext) -> None:
        self.cfg = cfg
        self.ctx = ctx
        self.store: S3Store = ctx.store(cfg.destination)
        self._keyring: Keyring | None = None
        self._recipients: list[str] = []
        self._stored: list[str] = []
        self.commit_warnings: list[str] = []
        """What the commit could not clean up (reported as warnings)."""
        # Keys whose upload has begun and is not yet recorded in _stored: an interrupted run
        # deletes them too (deleting a key never written is harmless).
        self._pending: set[str] = set()
        self.cancel = Cancel()
        """Set by SIGTERM: every pipeline of the run is stopped (see :func:`run`)."""
        self.in_step = False
        """Whether a component step runs (the only place a SIGTERM raises into)."""

    # -- shared machinery --------------------------------------------------------------------

    @property
    def keyring(self) -> Keyring:
        """The keyring with the recipients imported (lazily: commit needs no recipients)."""
        if self._keyring is None:
            self._keyring = self.ctx.keyring()
            armored = self.ctx.required(
                self.cfg.gpg.recipients_file,
                "encryption recipients (spec.encryption.gpg.recipientsSecret)",
            )
            keys = self._keyring.import_recipients(
                armored, source="spec.encryption.gpg.recipientsSecret"
            )
            self._recipients = [k.fingerprint for k in keys]
        return self._keyring

    def close(self) -> None:
        """Release the keyring."""
        if self._keyring is not None:
            self._keyring.close()

    def encryption_label(self) -> str:
        """e.g. gpg+aws:kms."""
        sse = self.cfg.destination.sse
        return "gpg" if sse == "none" else f"gpg+{sse}"

    def key(self, relative: str) -> str:
        """Absolute key of a path inside the set."""
        return self.cfg.set_prefix + relative

    def store_artifact(
        self,
        source: Source,
        keys: layout.ArtifactKeys,
        *,
        component: str,
        name: str,
        kind: str,
        compression: str,
        compressor: list[str] | None = None,
        taps: Iterable[Callable[[bytes], None]] = (),
        details: dict[str, Any] | None = None,
    ) -> ArtifactRecord:
        """Stream one artifact, check what the store holds, write its sidecar, return its record.

        ``details`` is read after the stream ends, so a source may fill it in while streaming
        (the snapshot verifier's facts, a volume's file count).
        """
        keyring = self.keyring
        self.cancel.check()
        key, sidecar = self.key(keys.key), self.key(keys.sidecar)
        self._pending.update((key, sidecar))
        upload = self.store.multipart(key)
        stats = encrypt_to_store(
            source,
            keyring=keyring,
            recipients=self._recipients,
            upload=upload,
            compressor=compressor,
            taps=taps,
            cancel=self.cancel,
        )
        info = self.store.head(self.key(keys.key))
        if info is None or info.size != stats.stored_bytes:
            found = "nothing" if info is None else f"{info.size} bytes"
            raise IntegrityError(
                f"{self.store.url(self.key(keys.key))}: stored {stats.stored_bytes} bytes "
                f"but the store holds {found}"
            )
        if self.cfg.destination.sse != "none" and info.sse not in (None, self.cfg.destination.sse):
            raise IntegrityError(
                f"{self.store.url(self.key(keys.key))}: asked for server-side encryption "
                f"{self.cfg.destination.sse}, the store applied {info.sse}"
            )
        self._stored += [key, sidecar]
        self.cancel.check()
        self.store.put_bytes(
            sidecar,
            layout.sidecar_text(stats.plain_sha256, keys.plain_name).encode(),
            "text/plain",
        )
        self._pending.difference_update((key, sidecar))
        return ArtifactRecord(
            component=component,
            name=name,
            kind=kind,
            key=keys.key,
            sidecar_key=keys.sidecar,
            size_bytes=stats.stored_bytes,
            plaintext_size_bytes=stats.plain_bytes,
            sha256=stats.stored_sha256,
            plaintext_sha256=stats.plain_sha256,
            compression=compression,
            encryption=self.encryption_label(),
            details={**(details or {}), "seconds": round(stats.seconds, 3)},
        )

    def run_component(self, component: str) -> ComponentOutcome:
        """Back up one component; failures become an outcome, never an exception."""
        started = time.monotonic()
        self._stored = []
        self._pending = set()
        try:
            step = step_of(component)
            self._refuse_committed_set()
            self.in_step = True
            try:
                outcome = step(self)
            finally:
                self.in_step = False
        except LamassuBackupError as exc:
            outcome = ComponentOutcome(
                component=component,
                ok=False,
                reason=exc.reason,
                message=self.ctx.redactor.redact(exc.message),
            )
        except Exception as exc:  # noqa: BLE001 - one component's bug must not hide the others' results
            outcome = ComponentOutcome(
                component=component,
                ok=False,
                reason="InternalError",
                message=self.ctx.redactor.redact(f"{type(exc).__name__}: {exc}"),
            )
        if not outcome.ok and (self._stored or (self.cancel.cancelled() and self._pending)):
            self._discard_stored(outcome)
        outcome.seconds = round(time.monotonic() - started, 3)
        return outcome

    def _discard_stored(self, outcome: ComponentOutcome) -> None:
        """Remove what a failed component stored: a component is in a set whole or not at all."""
        keys = self._stored + sorted(set(self._pending) - set(self._stored))
        try:
            self.store.delete_keys(keys)
        except LamassuBackupError as exc:
            outcome.warnings.append(
                f"could not remove the partial artifacts of {outcome.component}: {exc.message}"
            )

    def write_part(self, outcome: ComponentOutcome) -> None:
        """Record a component's outcome for the commit step."""
        data = outcome.model_dump_json(by_alias=True, exclude_none=True).encode()
        self.store.put_bytes(
            self.key(layout.part_key(outcome.component)),
            self.ctx.redactor.redact(data.decode()).encode(),
            "application/json",
        )

    # -- commit ------------------------------------------------------------------------------

    def read_parts(self, requested: list[str]) -> list[ComponentOutcome]:
        """The outcomes the component runs recorded (a missing record counts as a failure later)."""
        outcomes = []
        for component in requested:
            key = self.key(layout.part_key(component))
            if self.store.head(key) is None:
                continue
            outcomes.append(ComponentOutcome.model_validate_json(self.store.get_bytes(key)))
        return outcomes

    def _refuse_committed_set(self) -> None:
        """A set with a manifest is sealed: nothing may be written into it any more."""
        if self.store.head(self.key(layout.MANIFEST)) is not None:
            raise IntegrityError(
                f"{self.store.url(self.key(layout.MANIFEST))} already exists: the set is committed "
                "and a run never writes into a committed set",
                reason="SetAlreadyCommitted",
            )

    def _committed(self) -> tuple[Manifest, str] | None:
        """This run's own manifest when a retried commit finds it written; another run's is an error."""
        if self.store.head(self.key(layout.MANIFEST)) is None:
            return None
        body = self.store.get_bytes(self.key(layout.MANIFEST))
        try:
            manifest = parse_manifest(body)
        except ValueError as exc:
            raise IntegrityError(
                f"{self.store.url(self.key(layout.MANIFEST))} exists and is unreadable ({exc}); "
                "refusing to replace it",
                reason="SetAlreadyCommitted",
            ) from exc
        if (manifest.namespace, manifest.policy, manifest.backup) != (
            self.cfg.namespace,
            self.cfg.policy,
            self.cfg.backup,
        ):
            raise IntegrityError(
                f"{self.store.url(self.key(layout.MANIFEST))} already holds the set of backup "
                f"{manifest.namespace}/{manifest.backup}; refusing to overwrite another run's set",
                reason="SetAlreadyCommitted",
            )
        return manifest, hashlib.sha256(body).hexdigest()

    def _clear_strays(self, outcomes: list[ComponentOutcome]) -> None:
        """Remove what no completed component claims: the objects and multipart uploads a failed
        or killed component left because the store was unreachable (or the Pod died) when it
        cleaned up. Every component Job has ended when the commit runs, so nothing under the
        set's folder is still being written; a failure here only leaves garbage (a warning)."""
        keep = {self.key(layout.MANIFEST), self.key(layout.SIGNATURE)}
        for outcome in outcomes:
            if outcome.ok:
                keep.update(
                    self.key(k) for a in outcome.artifacts for k in (a.key, a.sidecar_key) if k
                )
        parts = self.key(layout.PARTS_DIR)
        try:
            self.store.abort_stale_uploads(self.cfg.set_prefix)
            strays = [
                info.key
                for info in self.store.list_keys(self.cfg.set_prefix)
                if info.key not in keep and not info.key.startswith(parts)
            ]
            if strays:
                self.store.delete_keys(strays)
        except LamassuBackupError as exc:
            self.commit_warnings.append(
                f"objects of failed components may be left under {self.cfg.set_prefix}: "
                f"{exc.message}"
            )

    def commit(self, requested: list[str]) -> tuple[Manifest, str]:
        """Check every artifact is stored, then write the signature and manifest.json, last.

        No manifest is written when no component stored anything: it would describe nothing.
        A manifest already there is never replaced: a retried commit of the same run returns it,
        any other is refused.
        """
        existing = self._committed()
        if existing is not None:
            return existing
        outcomes = self.read_parts(requested)
        for outcome in outcomes:
            if not outcome.ok:
                continue
            for artifact in outcome.artifacts:
                info = self.store.head(self.key(artifact.key))
                if info is None or info.size != artifact.size_bytes:
                    outcome.ok = False
                    outcome.reason = "ArtifactMissing"
                    outcome.message = (
                        f"{artifact.key} is missing or has the wrong size in the store"
                    )
                    break
        self._clear_strays(outcomes)
        if not any(o.ok for o in outcomes):
            reasons = (
                "; ".join(f"{o.component}: {o.message}" for o in outcomes) or "no component ran"
            )
            raise LamassuBackupError(
                f"nothing was stored, no manifest written ({reasons})", reason="NothingStored"
            )
        signing_fpr: str | None = None
        signer: Keyring | None = None
        passphrase: str | None = None
        found = self.ctx.signer(self.cfg.gpg)
        if found is not None:
            signer, signing_fpr, passphrase = found
        try:
            manifest = build_manifest(
                namespace=self.cfg.namespace,
                policy=self.cfg.policy,
                backup=self.cfg.backup,
                set_time=self.cfg.set_time,
                created_at=datetime.now(UTC),
                tool_version=__version__,
                requested=requested,
                outcomes=outcomes,
                encryption={
                    "client": "gpg",
                    "serverSide": self.cfg.destination.sse,
                    **(
                        {"kmsKeyId": self.cfg.destination.kms_key_id}
                        if self.cfg.destination.kms_key_id
                        else {}
                    ),
                },
                signed_by=signing_fpr,
            )
            body = render(manifest)
            if signer is not None and signing_fpr is not None:
                signature = signer.sign_detached(body, signing_fpr, passphrase)
                self.store.put_bytes(
                    self.key(layout.SIGNATURE), signature, "application/pgp-signature"
                )
            self.store.put_bytes(self.key(layout.MANIFEST), body, "application/json")
        finally:
            if signer is not None:
                signer.close()
        return manifest, hashlib.sha256(body).hexdigest()


def _summarise(result: RunnerResult, outcome: ComponentOutcome) -> None:
    result.components[outcome.component] = (
        "Completed" if outcome.ok else f"Failed: {outcome.reason}"
    )
    result.warnings.extend(outcome.warnings)
    for artifact in outcome.artifacts:
        result.artifacts.append(
            {
                "k": artifact.key,
                "s": artifact.size_bytes,
                "h": artifact.sha256,
                "p": artifact.plaintext_sha256,
            }
        )
        result.size_bytes += artifact.size_bytes


def run(
    cfg: RunnerConfig,
    ctx: RunnerContext,
    *,
    components: list[str] | None,
    commit: bool,
    allow_partial: bool,
) -> tuple[RunnerResult, int]:
    """Back up ``components`` (default: the config's), optionally commit; result and exit code.

    Exit 0: everything requested is stored (and committed). With ``allow_partial``, also 0 when
    a partial set was committed (the operator reads which components failed from the result).
    """
    started = time.monotonic()
    run_ = BackupRun(cfg, ctx)
    todo = components if components is not None else cfg.components
    result = RunnerResult(ok=False, action="backup" if todo else "commit")
    code = 1
    previous = None
    if threading.current_thread() is threading.main_thread():
        previous = signal.signal(signal.SIGTERM, _sigterm_handler(run_))
    try:
        run_.store.check_bucket()
        outcomes = _run_components(run_, todo, result)
        failed = [o for o in outcomes if not o.ok]
        result.ok = not failed
        if failed:
            result.error = "; ".join(f"{o.component}: {o.message}" for o in failed)
            result.reason = failed[0].reason
        if commit:
            manifest, digest = run_.commit(cfg.components)
            result.warnings.extend(run_.commit_warnings)
            result.manifest_key = run_.key(layout.MANIFEST)
            result.manifest_sha256 = digest
            for name, entry in manifest.components.items():
                result.components[name] = (
                    "Completed" if entry.status == "Completed" else f"Failed: {entry.reason}"
                )
            result.size_bytes = manifest.total_size()
            result.ok = manifest.complete
            if not manifest.complete:
                bad = [
                    f"{n} ({e.reason}: {e.message})"
                    for n, e in manifest.components.items()
                    if e.status != "Completed"
                ]
                result.error = "incomplete set: " + "; ".join(bad)
        code = 0 if result.ok or (allow_partial and result.manifest_key) else 1
    except LamassuBackupError as exc:
        result.error = exc.message
        result.reason = exc.reason
    finally:
        if previous is not None:
            signal.signal(signal.SIGTERM, previous)
        run_.close()
    result.seconds = round(time.monotonic() - started, 3)
    if result.error:
        result.error = ctx.redactor.redact(result.error)
    return result, code


def _run_components(
    run_: BackupRun, todo: list[str], result: RunnerResult
) -> list[ComponentOutcome]:
    """Each component, its part file written; after a SIGTERM, raise (nothing is committed)."""
    outcomes = []
    for component in todo:
        if run_.cancel.cancelled():
            break
        outcome = run_.run_component(component)
        try:
            run_.write_part(outcome)
        except LamassuBackupError as exc:
            if not run_.cancel.cancelled():
                raise
            outcome.warnings.append(f"could not record the outcome of {component}: {exc.message}")
        outcomes.append(outcome)
        _summarise(result, outcome)
    run_.cancel.check()
    return outcomes


def _sigterm_handler(run_: BackupRun) -> Callable[[int, FrameType | None], None]:
    """SIGTERM: stop every pipeline at once; inside a component step, also raise there, so the
    step unwinds (aborting its uploads) and :meth:`BackupRun.run_component` records it as
    Interrupted and removes what it stored. Elsewhere (writing a part file, the commit) the run
    stops at the next component. A second SIGTERM changes nothing."""

    def handle(signum: int, frame: FrameType | None) -> None:
        if run_.cancel.cancelled():
            return
        run_.cancel.cancel()
        if run_.in_step:
            run_.cancel.check()

    return handle
