"""The volumes component's restore: each volume archive extracted, verified while tar reads it,
into a staging directory inside the volume, then swapped in by renames (the live files kept
aside as ``.lamassu-pre-restore-<suffix>`` until finalize or rollback); in a drill, into a
scratch directory that is deleted again.

A volume can hold a filesystem crypto engine's keys (a PEM file per key id: the key check also
matches each CA's key with its certificate) or a PKCS#11 engine's SoftHSM token directory (key
ids from its public key objects, :mod:`.softhsm`): the key consistency check reads them where
this run restored the volume (staged, or the drill's scratch copy), or live when it does not.
"""

from __future__ import annotations

import shutil
from collections.abc import Callable
from pathlib import Path
from typing import TYPE_CHECKING

from ...errors import ConfigurationError, LamassuBackupError
from ...models.runner import ArtifactRecord
from ...runner.restore.hooks import BaseHooks, PlanItem, Purpose
from ...runner.restore.keys import KeyStore
from ...runner.stream.fetch import ProcessSink, exit_text
from . import softhsm

if TYPE_CHECKING:
    from ...runner.restore.hooks import HooksFactory
    from ...runner.restore.run import RestoreRun
    from ...runner.restore.set_reader import SetReader
    from .spec import FilesystemKeyStore

NAME = "volumes"
MARK = ".lamassu-"
"""Names inside a volume that belong to the restore, never to the volume's contents."""
MAX_KEY_FILE = 64 * 1024
"""A key file larger than this is no PEM private key Lamassu wrote (not read for matching)."""


def filesystem_key_ids(directory: Path) -> set[str]:
    """Key ids in a filesystem engine's storage directory: one non-empty file per key id.

    Lamassu writes ``<storage_directory>/<key id>`` (PKCS#8 PEM, no extension); hidden files and
    directories are not keys, and an empty file holds no key.
    """
    if not directory.is_dir():
        return set()
    return {
        p.name
        for p in directory.iterdir()
        if not p.name.startswith(".") and p.is_file() and p.stat().st_size > 0
    }


def filesystem_key_reader(directory: Path) -> Callable[[str], bytes | None]:
    """A filesystem engine's private key (the PEM file) by key id, for matching it with its CA;
    None for an id that is not a plain file name there."""

    def read(key_id: str) -> bytes | None:
        if not key_id or "/" in key_id or key_id.startswith("."):
            return None
        path = directory / key_id
        try:
            if not path.is_file() or path.stat().st_size > MAX_KEY_FILE:
                return None
            return path.read_bytes()
        except OSError:
            return None

    return read


def pkcs11_store(engine: str, directory: Path, where: str) -> KeyStore:
    """A PKCS#11 engine's SoftHSM token directory as a key store: the key ids of its public key
    objects, or presence only when its objects cannot be read (the evidence says which)."""
    found = softhsm.scan(directory)
    if not found.present:
        return KeyStore(engine, "pkcs11", frozenset(), f"{where}: no SoftHSM token directory")
    return KeyStore(
        engine,
        "pkcs11",
        frozenset(found.key_ids) if found.listed else frozenset(),
        where,
        listed=found.listed,
        note=found.note(),
    )


def extract(reader: SetReader, artifact: ArtifactRecord, into: Path) -> int:
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
    reader.stream(artifact, sink)
    return sum(1 for p in into.rglob("*") if p.is_file())


class VolumesHooks(BaseHooks):
    """Volumes in a restore: staged inside each volume before anything live changes, swapped in
    last; in a drill, extracted into a scratch directory."""

    name = NAME
    order = 40

    def __init__(self, run: RestoreRun) -> None:
        super().__init__(run)
        self.staged: list[tuple[str, Path]] = []
        """(volume name, staging directory inside the volume)."""
        self.scratch = run.ctx.scratch / "volumes"
        """Where a drill extracts the volumes."""

    def select(self, artifacts: list[ArtifactRecord]) -> None:
        self.artifacts = [a for a in artifacts if a.kind == "volume-archive"]

    def _live(self, name: str) -> Path | None:
        return next((Path(v.path) for v in self.run.cfg.volumes if v.name == name), None)

    # -- before anything live changes ------------------------------------------------------------

    def plan(self, item: PlanItem, drill: bool) -> None:
        for artifact in self.artifacts:
            if drill:
                item(f"volume {artifact.name}", "extract into a scratch directory, delete")
                continue
            path = next((v.path for v in self.run.cfg.volumes if v.name == artifact.name), None)
            item(
                f"volume {artifact.name}",
                f"replace the contents of {path or '(no target path)'}, keeping the old aside",
            )

    def verify(self, purpose: Purpose) -> None:
        if purpose == "plan":
            super().verify(purpose)
        elif purpose == "restore":
            for artifact in self.artifacts:
                with self.run.phase("verify", NAME):
                    staging = self._stage(artifact)
                    self.staged.append((artifact.name, staging))
                    self.run.restored_volumes[artifact.name] = (
                        staging,
                        f"volume {artifact.name} as restored",
                    )

    def _stage(self, artifact: ArtifactRecord) -> Path:
        root = self._live(artifact.name)
        if root is None:
            raise ConfigurationError(
                f"volume {artifact.name}: no target path given (volumes: name {artifact.name})"
            )
        if not root.is_dir():
            raise ConfigurationError(f"volume {artifact.name}: {root} is not a mounted directory")
        staging = root / f"{MARK}restoring-{self.run.id}"
        shutil.rmtree(staging, ignore_errors=True)
        staging.mkdir(mode=0o700)
        try:
            extract(self.run.set, artifact, staging)
        except BaseException:
            shutil.rmtree(staging, ignore_errors=True)
            raise
        return staging

    def drill(self) -> None:
        with self.run.phase(NAME, NAME):
            files = {}
            for artifact in self.artifacts:
                into = self.scratch / artifact.name
                into.mkdir(parents=True, mode=0o700)
                files[artifact.name] = extract(self.run.set, artifact, into)
                self.run.restored_volumes[artifact.name] = (
                    into,
                    f"scratch copy of volume {artifact.name}",
                )
            self.run.evidence[NAME] = files
            self.run.result.components[NAME] = "Verified"

    # -- key consistency -------------------------------------------------------------------------

    def key_stores(self) -> list[KeyStore]:
        """Each filesystem or PKCS#11 engine's key ids, read where its volume was restored."""
        return [self._filesystem_store(fs) for fs in self.run.cfg.filesystem_key_stores]

    def _filesystem_store(self, fs: FilesystemKeyStore) -> KeyStore:
        """In place, a volume this run does not restore is read live: the restored databases
        will meet those keys. A volume that is nowhere gives an empty store, so every key of the
        engine fails by CA, key id and engine, and the failure names the missing volume.
        """
        run = self.run
        found = run.restored_volumes.get(fs.volume)
        if found is None and run.cfg.mode == "InPlace":
            live = self._live(fs.volume)
            if live is not None and live.is_dir():
                found = (live, f"live volume {fs.volume}")
        if found is None:
            run.warn(
                f"the keys of engine {fs.engine} are on volume {fs.volume}, which this restore "
                "does not restore: restore the volumes component of the same set"
            )
            return KeyStore(
                fs.engine, fs.type, frozenset(), f"volume {fs.volume}: not in the restored set"
            )
        root, where = found
        directory = root / fs.path if fs.path else root
        where = f"{where}, {fs.path}" if fs.path else where
        if fs.type == "pkcs11":
            return pkcs11_store(fs.engine, directory, where)
        ids = frozenset(filesystem_key_ids(directory))
        return KeyStore(
            fs.engine, "filesystem", ids, where, read_key=filesystem_key_reader(directory)
        )

    def needs_key_check(self) -> bool:
        """Whether this run restored a volume that holds a filesystem engine's keys."""
        restored = self.run.restored_volumes
        return any(fs.volume in restored for fs in self.run.cfg.filesystem_key_stores)

    # -- in place ----------------------------------------------------------------------------------

    def apply(self, suffix: str) -> None:
        if not self.staged:
            return
        with self.run.phase(NAME, NAME):
            self._swap(suffix)

    def _swap(self, suffix: str) -> None:
        """Move the live files aside and the staged ones in (renames within the volume)."""
        for name, staging in self.staged:
            root = staging.parent
            aside = root / f"{MARK}pre-restore-{suffix}"
            aside.mkdir(mode=0o700)
            self.run.changed.append(f"volume:{name}")
            for entry in root.iterdir():
                if not entry.name.startswith(MARK):
                    entry.rename(aside / entry.name)
            for entry in staging.iterdir():
                entry.rename(root / entry.name)
            staging.rmdir()
        self.staged = []
        self.run.evidence[NAME] = {"swapped": len(self.run.cfg.volumes)}
        self.run.result.components[NAME] = "Completed"

    def discard(self) -> None:
        for _, staging in self.staged:
            shutil.rmtree(staging, ignore_errors=True)

    # -- drill -------------------------------------------------------------------------------------

    def teardown(self) -> list[str]:
        shutil.rmtree(self.scratch, ignore_errors=True)
        return [str(self.scratch)] if self.scratch.exists() else []

    # -- finalize / rollback -----------------------------------------------------------------------

    def finalize(self, suffix: str) -> list[str]:
        dropped: list[str] = []
        for volume in self.run.cfg.volumes:
            aside = Path(volume.path) / f"{MARK}pre-restore-{suffix}"
            if aside.exists() and not self.run.cfg.keep_previous:
                shutil.rmtree(aside)
                dropped.append(f"volume:{volume.name}")
        return dropped

    def rollback(self, suffix: str) -> list[str]:
        rolled: list[str] = []
        for volume in self.run.cfg.volumes:
            root = Path(volume.path)
            aside = root / f"{MARK}pre-restore-{suffix}"
            if not aside.is_dir():
                continue
            trash = root / f"{MARK}rolled-back-{suffix}"
            trash.mkdir(mode=0o700, exist_ok=True)
            for entry in root.iterdir():
                if not entry.name.startswith(MARK):
                    entry.rename(trash / entry.name)
            for entry in aside.iterdir():
                entry.rename(root / entry.name)
            aside.rmdir()
            shutil.rmtree(trash, ignore_errors=True)
            rolled.append(f"volume:{volume.name}")
        return rolled


HOOKS: HooksFactory = VolumesHooks
