"""The volumes component's backup step: each mounted volume as a tar.gz that keeps modes and
owners (filesystem engine key files are 0600)."""

from __future__ import annotations

import functools
import tarfile
from pathlib import Path
from typing import IO, TYPE_CHECKING, Any

from ...errors import ConfigurationError
from ...models.runner import ComponentOutcome
from ...runner.stream.pipeline import WriterSource
from . import plan

if TYPE_CHECKING:
    from ...runner.backup.run import BackupRun
    from ...runner.backup.steps import BackupStep


def backup(run: BackupRun) -> ComponentOutcome:
    """Each mounted volume as a tar.gz (file crypto engine keys, SoftHSM tokens, CRLs)."""
    artifacts = []
    for volume in run.cfg.volumes:
        root = Path(volume.path)
        if not root.is_dir():
            raise ConfigurationError(
                f"volume {volume.name}: {volume.path} is not a mounted directory"
            )
        counter: dict[str, Any] = {"files": 0}
        artifacts.append(
            run.store_artifact(
                WriterSource(
                    functools.partial(tar_directory, root, counter=counter),
                    label=f"volume {volume.name}",
                ),
                plan.artifact_keys(volume.name),
                component="volumes",
                name=volume.name,
                kind="volume-archive",
                compression="gzip",
                details=counter,
            )
        )
    if not artifacts:
        raise ConfigurationError("component volumes has no volume")
    return ComponentOutcome(component="volumes", ok=True, artifacts=artifacts)


def tar_directory(root: Path, out: IO[bytes], *, counter: dict[str, Any]) -> None:
    """Stream a directory as tar.gz, keeping modes and owners (key files are 0600)."""
    with tarfile.open(fileobj=out, mode="w|gz", format=tarfile.PAX_FORMAT) as tar:
        for path in sorted(root.rglob("*")):
            tar.add(path, arcname=str(path.relative_to(root)), recursive=False)
            if path.is_file():
                counter["files"] += 1


STEP: BackupStep = backup
