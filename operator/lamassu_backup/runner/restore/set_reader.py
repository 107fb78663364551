"""Reading a backup set for a restore: the manifest (signature, completeness), then artifacts.

Nothing from a set is used before it is checked: the manifest's detached signature against the
configured signer keys (a signed set without a signer key is refused unless the check is
explicitly skipped; a configured signer key with an unsigned set is refused too: a stripped
signature must not pass as "unsigned"), then the components asked for must be present and
complete, then every artifact streams through both checksums (see
:mod:`..stream.fetch`). What an artifact holds is its component's business (its restore hooks
read it through :meth:`SetReader.fetch` and :meth:`SetReader.stream`).
"""

from __future__ import annotations

import contextlib
import hashlib
import json
from collections.abc import Callable
from dataclasses import dataclass

from ...builders import layout
from ...builders.manifest import Manifest, parse
from ...clients.gpg import Keyring
from ...clients.s3 import S3Store
from ...components import registry
from ...errors import ConfigurationError, IntegrityError, SignatureError
from ...models.runner import ArtifactRecord, RestoreRunConfig
from ..context import RunnerContext
from ..stream.fetch import BufferSink, NullSink, Sink, stream_artifact


@dataclass
class Selected:
    """What a run works on: the components asked for and their artifacts in the set."""

    components: list[str]
    artifacts: list[ArtifactRecord]


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

    def select(
        self, manifest: Manifest, asked: list[str] | None = None, exclude: list[str] | None = None
    ) -> Selected:
        """The artifacts of the components asked for (``asked``, default the config's; empty:
        every one the manifest holds, less ``exclude``: those restored from elsewhere);
        refuses incomplete or missing ones."""
        asked = self.cfg.components if asked is None else asked
        skip = set(exclude or [])
        requested = asked or sorted(set(manifest.components) - skip)
        failed = {
            n: e
            for n, e in manifest.components.items()
            if e.status != "Completed" and n not in skip
        }
        if not asked and (failed or not manifest.components):
            bad = "; ".join(f"{n}: {e.reason}" for n, e in failed.items())
            raise IntegrityError(
                f"the set is incomplete ({bad}): restore only its completed components by "
                "listing them in spec.components, or choose another set",
                reason="SetIncomplete",
            )
        for name in requested:
            if name not in registry.names():
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
        return Selected(components=requested, artifacts=arts)

    # -- artifacts --------------------------------------------------------------------------------

    def fetch(self, artifact: ArtifactRecord, limit: int = 256 * 1024 * 1024) -> bytes:
        """A small artifact, verified, into memory."""
        sink = BufferSink(artifact.key, limit)
        self.stream(artifact, sink)
        return bytes(sink.data)

    def verify_only(
        self, artifact: ArtifactRecord, taps: list[Callable[[bytes], None]] | None = None
    ) -> None:
        """Stream and verify an artifact without keeping it."""
        self.stream(artifact, NullSink(), taps)

    def stream(
        self,
        artifact: ArtifactRecord,
        sink: Sink,
        taps: list[Callable[[bytes], None]] | None = None,
    ) -> None:
        """Stream an artifact of the set into ``sink``, both checksums checked on the way."""
        stream_artifact(
            self.store,
            self.key(artifact.key),
            artifact,
            keyring=self.keyring,
            passphrase=self.passphrase,
            sink=sink,
            taps=taps or [],
        )
