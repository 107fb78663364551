"""The volumes component's models: PersistentVolumeClaims archived as files (filesystem crypto
engine keys, SoftHSM tokens), and where a filesystem or PKCS#11 (SoftHSM) engine's keys are
inside one."""

from __future__ import annotations

from typing import Literal

from pydantic import Field, field_validator

from ...models.base import CRModel, Rule, RunnerModel
from ...models.common import DNS_LABEL, ENGINE_ID_MAX, OBJECT_NAME

MAX_VOLUMES = 32
"""Volumes per policy: a bound the apiserver needs to cost the key-store uniqueness rule."""

KeyStoreType = Literal["filesystem", "pkcs11"]
"""The kms-config ``crypto_engines.engines[].type`` of an engine whose keys are on a volume."""


def _relative_inside(path: str) -> bool:
    """A sub-directory that stays inside the volume: no leading '/', no '..' segment."""
    return not path.startswith("/") and ".." not in path.split("/")


class VolumeSource(CRModel):
    """A PersistentVolumeClaim whose files are archived (file crypto engine keys, SoftHSM tokens,
    CRLs).
    """

    __rules__ = (
        Rule(
            "!has(self.keyStorePath) || self.keyStorePath == '' || has(self.keyStoreEngine)",
            "keyStorePath needs keyStoreEngine: it says where that engine's keys are in the volume",
            lambda m: not m.key_store_path or m.key_store_engine is not None,
        ),
        Rule(
            "!has(self.keyStorePath) || (!self.keyStorePath.startsWith('/') && "
            "!self.keyStorePath.matches('(^|/)[.][.](/|$)'))",
            "keyStorePath must be relative and stay inside the volume (no leading / and no .. "
            "segment)",
            lambda m: _relative_inside(m.key_store_path),
        ),
        Rule(
            "!has(self.keyStoreType) || self.keyStoreType == 'filesystem' || "
            "has(self.keyStoreEngine)",
            "keyStoreType needs keyStoreEngine: it says which engine's keys are in the volume",
            lambda m: m.key_store_type == "filesystem" or m.key_store_engine is not None,
        ),
    )

    name: str = Field(pattern=DNS_LABEL, max_length=63)
    """Artifact name, unique in the policy (e.g. kms-fs-keys)."""

    claim_name: str = Field(min_length=1, max_length=253, pattern=OBJECT_NAME)
    """The PersistentVolumeClaim to read."""

    sub_path: str = ""
    """Only archive this folder of the volume."""

    key_store_engine: str | None = Field(default=None, min_length=1, max_length=ENGINE_ID_MAX)
    """The kms crypto engine (its id in kms-config, e.g. filesystem-1 or pkcs11-1) whose keys
    are on this volume: a filesystem engine's storage_directory, or a PKCS#11 engine's SoftHSM
    token directory. A restore or drill then checks that engine's CA keys against this volume's
    restored files, and refuses one whose set lacks the volume: without it the keys would be
    looked for in Vault, or not at all."""

    key_store_type: KeyStoreType = "filesystem"
    """The engine's type in kms-config: ``filesystem`` (a PEM file per key id; each CA's key is
    also matched with its certificate) or ``pkcs11`` (a SoftHSM token directory: the key ids are
    read from the token's public key objects, which need no PIN)."""

    key_store_path: str = Field(default="", max_length=1024)
    """The engine's directory inside the archived folder (relative to subPath when that is set):
    a filesystem engine's storage_directory; for pkcs11 SoftHSM's tokendir (every token in it)
    or one token's directory. Empty: its root."""


class VolumeSettings(RunnerModel):
    """A mounted volume to archive."""

    name: str
    path: str


class FilesystemKeyStore(RunnerModel):
    """Where a filesystem (or PKCS#11 SoftHSM) crypto engine's keys are in the set: a directory
    inside one volume.

    The key consistency check reads the key ids from that directory wherever the restore put the
    volume (in place: its staged copy, or the live volume when it is not restored; drill: the
    scratch copy), instead of looking for the engine's keys in Vault.
    """

    engine: str = Field(min_length=1)
    """The kms engine id (e.g. filesystem-1)."""

    type: KeyStoreType = "filesystem"
    """``filesystem``: a PEM file per key id; ``pkcs11``: SoftHSM token directories."""

    volume: str = Field(min_length=1)
    """The volume artifact's name (policy components.volumes[].name)."""

    path: str = ""
    """The engine's storage directory inside the volume; empty: its root."""

    @field_validator("path")
    @classmethod
    def _inside(cls, path: str) -> str:
        if path.startswith("/") or ".." in path.split("/"):
            raise ValueError("path must be relative and stay inside the volume")
        return path.strip("/")
