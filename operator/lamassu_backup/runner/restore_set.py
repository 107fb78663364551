"""Reading a backup set for a restore: the manifest (signature, completeness), then artifacts.

Nothing from a set is used before it is checked: the manifest's detached signature against the
configured signer keys (a signed set without a signer key is refused unless the check is
explicitly skipped; a configured signer key with an unsigned set is refused too: a stripped
signature must not pass as "unsigned"), then the components asked for must be present and
complete, then every artifact streams through both checksums (see :mod:`.restore_stream`).
"""

from __future__ import annotations

import contextlib
import hashlib
import json
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from ..builders import layout
from ..builders.manifest import Manifest, parse
from ..clients.gpg import Keyring
from ..clients.s3 import S3Store
from ..errors import ConfigurationError, IntegrityError, LamassuBackupError, SignatureError
from ..models.runner import ArtifactRecord, RestoreRunConfig
from . import restore_config, restore_pg, restore_vault
from .context import RunnerContext
from .raft import SnapshotVerifier
from .restore_stream import BufferSink, FileSink, NullSink, ProcessSink, exit_text, stream_artifact

RESTORABLE = ("vault", "postgres", "config", "volumes", "awsKms")


@dataclass
class Selected:
    """The artifacts a run works on, by kind."""

    components: list[str]
    postgres: list[ArtifactRecord]
    kv: list[ArtifactRecord]
    raft: ArtifactRecord | None
    config: ArtifactRecord | None
    volumes: list[ArtifactRecord]
    other: list[ArtifactRecord]

    def all(self) -> list[ArtifactRecord]:
        """Every selected artifact."""
        out = [*self.kv, *self.postgres, *self.volumes, *self.other]
        return out + [a for a in (self.raft, self.config) if a is not None]

    @property
    def size(self) -> int:
        """Stored bytes of the selection."""
        return sum(a.size_bytes for a in self.all())


class SetReader:
    """One set in the store, read and checked for one restore."""

    def __init__(
        self,
        cfg: RestoreRunConfig,
        ctx: RunnerContext,
        store: S3Store,
        warn: Callable[[str], None],
    ) -> None:
        self.cfg = cfg
        self.ctx = ctx
        self.store = store
        self.warn = warn
        self.url = store.url(cfg.set_prefix)
        self.manifest_sha256: str | None = None
        self.signer: str | None = None
        self._keyring: Keyring | None = None
        self.passphrase: str | None = None

    def key(self, relative: str) -> str:
        """Absolute key of a path in the set."""
        return self.cfg.set_prefix + relative

    @property
    def keyring(self) -> Keyring:
        """The decryption keyring (imported once, on first use)."""
        if self._keyring is None:
            armored = self.ctx.required(
                self.cfg.decryption_key_file, "decryption key (spec.decryptionKeySecret)"
            )
            self.passphrase = self.ctx.secret(
                self.cfg.decryption_passphrase_file,
                "decryption key passphrase (spec.decryptionKeyPassphraseSecret)",
            )
            keyring = self.ctx.keyring()
            try:
                keyring.import_secret(
                    armored, source="spec.decryptionKeySecret", passphrase=self.passphrase
                )
            except BaseException:
                keyring.close()
                raise
            self._keyring = keyring
        return self._keyring

    def close(self) -> None:
        """Delete the keyring (the private key with it)."""
        if self._keyring is not None:
            self._keyring.close()
            self._keyring = None

    # -- the manifest ----------------------------------------------------------------------------

    def manifest(self) -> Manifest:
        """manifest.json with its signature checked (see the module docstring)."""
        key = self.key(layout.MANIFEST)
        if self.store.head(key) is None:
            count = sum(1 for _ in self.store.list_keys(self.cfg.set_prefix))
            if count:
                raise IntegrityError(
                    f"{self.url} has no manifest.json ({count} object(s) under it): the set is "
                    "incomplete (its backup did not finish or was interrupted) and cannot be "
                    "trusted; restore another set",
                    reason="ManifestMissing",
                )
            raise ConfigurationError(
                f"nothing is stored under {self.url}: check the set's bucket and path",
                reason="SetNotFound",
            )
        body = self.store.get_bytes(key)
        self.signer = self._check_signature(body)
        try:
            manifest = parse(body)
        except ValueError as exc:
            raise IntegrityError(
                f"{self.store.url(key)} is not a readable manifest: {exc}"
            ) from None
        if manifest.signed_by and self.signer and manifest.signed_by != self.signer:
            self.warn(
                f"the manifest names signer {manifest.signed_by}; the signature is by {self.signer}"
            )
        self.manifest_sha256 = hashlib.sha256(body).hexdigest()
        return manifest

    def _check_signature(self, body: bytes) -> str | None:
        sig_key = self.key(layout.SIGNATURE)
        signature = self.store.get_bytes(sig_key) if self.store.head(sig_key) else None
        armored = self.ctx.secret(
            self.cfg.signer_key_file, "signer public key (spec.signerKeySecret)"
        )
        if armored:
            if signature is None:
                raise SignatureError(
                    f"{self.store.url(sig_key)} does not exist but a signer key is configured: "
                    "the set was never signed or its signature was removed; refusing it"
                )
            with self.ctx.keyring() as verifier:
                keys = verifier.import_public(armored, source="spec.signerKeySecret")
                try:
                    return verifier.verify_detached(body, signature, [k.fingerprint for k in keys])
                except SignatureError as exc:
                    raise SignatureError(
                        f"{self.store.url(self.key(layout.MANIFEST))}: {exc.message}; the "
                        "manifest was altered or signed by another key: refusing the set"
                    ) from None
        signed_by = None
        with contextlib.suppress(ValueError, AttributeError):
            signed_by = json.loads(body).get("signedBy")
        if signature is not None or signed_by:
            if self.cfg.require_signature:
                raise SignatureError(
                    f"the set is signed (by {signed_by or 'an unknown key'}) but no signer key "
                    "is configured to check it: set spec.signerKeySecret to the public signing "
                    "key (or, break-glass only, insecureSkipSignatureCheck: true)"
                )
            self.warn(
                "the set is signed but its signature was NOT checked (insecureSkipSignatureCheck)"
            )
        else:
            self.warn("the set is not signed: its manifest is trusted as stored")
        return None

    def select(self, manifest: Manifest) -> Selected:
        """The artifacts of the components asked for; refuses incomplete or missing ones."""
        requested = self.cfg.components or sorted(manifest.components)
        failed = {n: e for n, e in manifest.components.items() if e.status != "Completed"}
        if not self.cfg.components and not manifest.complete:
            bad = "; ".join(f"{n}: {e.reason}" for n, e in failed.items())
            raise IntegrityError(
                f"the set is incomplete ({bad}): restore only its completed components by "
                "listing them in spec.components, or choose another set",
                reason="SetIncomplete",
            )
        for name in requested:
            if name not in RESTORABLE:
                raise ConfigurationError(f"unknown component {name!r} in spec.components")
            if name not in manifest.components:
                have = ", ".join(sorted(manifest.components))
                raise IntegrityError(
                    f"the set holds no {name} component (it has {have})",
                    reason="ComponentMissing",
                )
            if name in failed:
                raise IntegrityError(
                    f"the set's {name} component failed at backup time ({failed[name].reason}): "
                    "it cannot be restored from this set",
                    reason="ComponentIncomplete",
                )
        arts = [a for a in manifest.artifacts if a.component in requested]
        postgres = (
            restore_pg.select_artifacts(arts, self.cfg.databases) if "postgres" in requested else []
        )
        return Selected(
            components=requested,
            postgres=postgres,
            kv=[a for a in arts if a.kind == "kv-export"],
            raft=next((a for a in arts if a.kind == "raft-snapshot"), None),
            config=next((a for a in arts if a.kind == "config-archive"), None),
            volumes=[a for a in arts if a.kind == "volume-archive"],
            other=[a for a in arts if a.component == "awsKms"],
        )

    # -- artifacts --------------------------------------------------------------------------------

    def fetch(self, artifact: ArtifactRecord, limit: int = 256 * 1024 * 1024) -> bytes:
        """A small artifact, verified, into memory."""
        sink = BufferSink(artifact.key, limit)
        self._stream(artifact, sink)
        return bytes(sink.data)

    def verify_only(
        self, artifact: ArtifactRecord, taps: list[Callable[[bytes], None]] | None = None
    ) -> None:
        """Stream and verify an artifact without keeping it."""
        self._stream(artifact, NullSink(), taps)

    def _stream(
        self,
        artifact: ArtifactRecord,
        sink: BufferSink | NullSink | FileSink | ProcessSink,
        taps: list[Callable[[bytes], None]] | None = None,
    ) -> None:
        stream_artifact(
            self.store,
            self.key(artifact.key),
            artifact,
            keyring=self.keyring,
            passphrase=self.passphrase,
            sink=sink,
            taps=taps or [],
        )

    def exports(self, sel: Selected) -> dict[str, dict[str, Any]]:
        """The KV exports of the selection, verified, by mount."""
        exports: dict[str, dict[str, Any]] = {}
        for artifact in sel.kv:
            doc = restore_vault.parse_export(self.fetch(artifact), artifact.key)
            exports[str(doc["mount"])] = doc
        return exports

    def config_objects(self, sel: Selected) -> list[dict[str, Any]]:
        """The config archive's objects, verified."""
        if sel.config is None:
            return []
        data = self.fetch(sel.config, 64 * 1024 * 1024)
        return restore_config.read_archive(data, sel.config.key)

    def snapshot(self, artifact: ArtifactRecord, spool: Path | None) -> dict[str, Any]:
        """The raft snapshot verified offline while it streams (spooled to ``spool`` if given)."""
        verifier = SnapshotVerifier()
        sink = FileSink(spool, "raft snapshot spool") if spool is not None else NullSink()
        try:
            self._stream(artifact, sink, [verifier.tap])
        finally:
            facts = _safe_result(verifier)
        if isinstance(facts, LamassuBackupError):
            if spool is not None:
                spool.unlink(missing_ok=True)
            raise facts
        return facts

    def extract(self, artifact: ArtifactRecord, into: Path) -> int:
        """A volume archive, verified while tar extracts it; returns the number of files."""

        def describe(code: int, stderr: str) -> LamassuBackupError:
            return LamassuBackupError(
                f"extracting {artifact.key} into {into} failed ({exit_text(code)}): "
                f"{stderr.strip()[-300:]}",
                reason="RestoreFailed",
            )

        sink = ProcessSink(
            ["tar", "-xzf", "-", "-C", str(into)],
            env=None,
            label=f"tar into {into}",
            describe_error=describe,
        )
        self._stream(artifact, sink)
        return sum(1 for p in into.rglob("*") if p.is_file())


def _safe_result(verifier: SnapshotVerifier) -> dict[str, Any] | LamassuBackupError:
    """The verifier's verdict (it must always be collected: its thread reads a pipe)."""
    try:
        return verifier.result()
    except LamassuBackupError as exc:
        return exc
