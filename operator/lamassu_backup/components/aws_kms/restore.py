"""The awsKms component's restore: nothing to write back (key material cannot leave KMS), but
the metadata in the set is the AWS KMS engine's key store for the key consistency check.

Lamassu's AWS KMS engine finds a key by its alias ``alias/<key id>`` (``aliasFormat`` in
``engines/crypto/aws/awskms.go``) and signs with it only while the key is ``Enabled``. The
backup records every key's metadata (its state, a deletion date) and aliases
(:func:`lamassu_backup.clients.kms.export_metadata`), so the check runs offline from the set:
the alias of each of the engine's kms keys exists, and its key is neither pending deletion nor
disabled. The artifact is verified (both checksums) before it is read.
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from typing import TYPE_CHECKING, Any

from ...errors import IntegrityError
from ...models.runner import ArtifactRecord
from ...runner.restore.hooks import BaseHooks, PlanItem, Purpose
from ...runner.restore.keys import KeyStore

if TYPE_CHECKING:
    from ...runner.restore.hooks import HooksFactory
    from ...runner.restore.run import RestoreRun

NAME = "awsKms"
ALIAS_PREFIX = "alias/"
KIND = "aws-kms"
USABLE = "Enabled"


def parse_metadata(data: bytes, key: str) -> dict[str, Any]:
    """The awsKms metadata document (refuses anything else)."""
    try:
        doc = json.loads(data)
    except ValueError as exc:
        raise IntegrityError(f"{key}: not AWS KMS metadata ({exc})") from None
    if not isinstance(doc, dict) or not isinstance(doc.get("keys"), dict):
        raise IntegrityError(f"{key}: the AWS KMS metadata has no keys")
    return doc


def _state_problem(kms_key_id: str, meta: Mapping[str, Any]) -> str | None:
    """Why a key cannot sign (None: it can)."""
    state = meta.get("KeyState")
    if state in (USABLE, None):
        return None
    if state == "PendingDeletion":
        when = meta.get("DeletionDate")
        return f"AWS KMS key {kms_key_id} is pending deletion" + (f" ({when})" if when else "")
    return f"AWS KMS key {kms_key_id} is {state}"


def metadata_store(engine: str, doc: Mapping[str, Any], source: str) -> KeyStore:
    """The engine's key store as the metadata records it: Lamassu key id -> AWS key, by alias.

    A key id is held when ``alias/<key id>`` points to a recorded key (or, for a key the backup
    was not asked to describe, to any key: its state is then unknown and the note says so);
    unusable when that key is pending deletion or disabled."""
    keys: Mapping[str, Any] = doc.get("keys") or {}
    held: set[str] = set()
    unusable: dict[str, str] = {}
    for kms_key_id, entry in keys.items():
        if not isinstance(entry, Mapping):
            continue
        meta = entry.get("metadata") or {}
        problem = _state_problem(str(kms_key_id), meta if isinstance(meta, Mapping) else {})
        for alias in entry.get("aliases") or []:
            if isinstance(alias, str) and alias.startswith(ALIAS_PREFIX):
                key_id = alias[len(ALIAS_PREFIX) :]
                held.add(key_id)
                if problem:
                    unusable[key_id] = problem
    described = {str(k) for k in keys}
    unknown = 0
    for alias in doc.get("aliases") or []:
        if not isinstance(alias, Mapping):
            continue
        name, target = alias.get("AliasName"), alias.get("TargetKeyId")
        if isinstance(name, str) and name.startswith(ALIAS_PREFIX) and target:
            key_id = name[len(ALIAS_PREFIX) :]
            if key_id not in held and str(target) not in described:
                held.add(key_id)
                unknown += 1
    note = f"{len(keys)} AWS KMS key(s), {len(held)} alias(es)"
    if unusable:
        note += f", {len(unusable)} unusable"
    if unknown:
        note += f", {unknown} alias(es) to keys not recorded (state unknown)"
    return KeyStore(engine, KIND, frozenset(held), source, unusable=unusable, note=note)


class AwsKmsHooks(BaseHooks):
    """AWS KMS in a restore: its metadata verified and read; the engine's key store."""

    name = NAME
    order = 50

    def __init__(self, run: RestoreRun) -> None:
        super().__init__(run)
        self.doc: dict[str, Any] | None = None
        self.source = ""

    def select(self, artifacts: list[ArtifactRecord]) -> None:
        self.artifacts = [a for a in artifacts if a.kind == "kms-metadata"]

    def plan(self, item: PlanItem, drill: bool) -> None:
        for artifact in self.artifacts:
            item(
                f"AWS KMS metadata {artifact.name}",
                "verify; check the AWS KMS engine's keys against it (nothing is written)",
            )

    def verify(self, purpose: Purpose) -> None:
        engine = self.run.cfg.aws_kms_key_store_engine
        for artifact in self.artifacts:
            with self.run.phase("verify", NAME):
                if engine is None:
                    self.run.set.verify_only(artifact)
                else:
                    self.doc = parse_metadata(self.run.set.fetch(artifact), artifact.key)
                    self.source = "the set's AWS KMS metadata"
            if purpose != "plan":
                self.run.result.components[NAME] = "Verified"

    def key_stores(self) -> list[KeyStore]:
        """The AWS KMS engine's keys, from the set's metadata. Without it, a drill cannot prove
        them: its keys fail by CA, key id and engine. In place they are left unchecked (the
        live keys are in AWS, untouched by the restore), with a warning."""
        engine = self.run.cfg.aws_kms_key_store_engine
        if engine is None:
            return []
        if self.doc is None:
            self.run.warn(
                f"the keys of engine {engine} are in AWS KMS, and this restore does not read "
                "the set's awsKms metadata: restore the awsKms component of the same set"
            )
            if self.run.cfg.mode != "Drill":
                return []
            return [KeyStore(engine, KIND, frozenset(), "awsKms metadata: not in the restored set")]
        return [metadata_store(engine, self.doc, self.source)]


HOOKS: HooksFactory = AwsKmsHooks
