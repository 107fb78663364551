"""The project's container images, built locally and unpacked for the pod runner.

Why: the pod runner runs each container from its image through runc; the images come from
``scripts/build-images.sh`` (buildah from ``images/*/Dockerfile``, cached by content hash), which
prints where each one is unpacked. This module runs the script and reads each image's config
(entrypoint, cmd, env, workdir, user) from its OCI layout, as a container runtime would.
"""

from __future__ import annotations

import json
import subprocess
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from ._util import REPO_ROOT

BUILD_SCRIPT = REPO_ROOT / "scripts" / "build-images.sh"
BUILD_TIMEOUT = 20 * 60.0


class ImageBuildError(RuntimeError):
    """``scripts/build-images.sh`` failed."""


@dataclass(frozen=True)
class Image:
    """One unpacked image: its root filesystem (shared, never written) and its config."""

    ref: str
    digest: str
    rootfs: Path
    entrypoint: list[str] = field(default_factory=list)
    cmd: list[str] = field(default_factory=list)
    env: dict[str, str] = field(default_factory=dict)
    workdir: str = ""
    user: str = ""
    labels: dict[str, str] = field(default_factory=dict)
    size: int = 0


def _blob(oci: Path, digest: str) -> dict[str, Any]:
    algo, _, hexdigest = digest.partition(":")
    data: dict[str, Any] = json.loads((oci / "blobs" / algo / hexdigest).read_text())
    return data


def load(ref: str, digest: str, bundle: Path, oci: Path, size: int = 0) -> Image:
    """An :class:`Image` from the build script's record: the manifest's config blob."""
    manifest = _blob(oci, digest)
    config = _blob(oci, manifest["config"]["digest"]).get("config") or {}
    env = dict(e.split("=", 1) for e in config.get("Env") or [] if "=" in e)
    return Image(
        ref=ref,
        digest=digest,
        rootfs=bundle / "rootfs",
        entrypoint=list(config.get("Entrypoint") or []),
        cmd=list(config.get("Cmd") or []),
        env=env,
        workdir=str(config.get("WorkingDir") or ""),
        user=str(config.get("User") or ""),
        labels=dict(config.get("Labels") or {}),
        size=size,
    )


def build(names: tuple[str, ...] = ("operator", "runner")) -> dict[str, Image]:
    """Build (or take from the cache) the named images; ``{ref: Image}``."""
    proc = subprocess.run(
        ["bash", str(BUILD_SCRIPT), *names],
        cwd=REPO_ROOT,
        capture_output=True,
        text=True,
        timeout=BUILD_TIMEOUT,
        check=False,
    )
    lines = proc.stdout.strip().splitlines()
    if proc.returncode != 0 or not lines:
        raise ImageBuildError(
            f"{BUILD_SCRIPT.name} failed (exit {proc.returncode}):\n{proc.stderr[-4000:]}"
        )
    records: dict[str, dict[str, Any]] = json.loads(lines[-1])
    return {
        ref: load(ref, r["digest"], Path(r["bundle"]), Path(r["oci"]), int(r.get("size") or 0))
        for ref, r in records.items()
    }


def ref_of(images: dict[str, Image], name: str) -> str:
    """The reference of the project's image ``name`` (``operator`` or ``runner``)."""
    suffix = f"/lamassu-backup-{name}:"
    for ref in images:
        if suffix in ref:
            return ref
    raise KeyError(f"the {name} image was not built (scripts/build-images.sh {name})")
