"""Base backups: ``pg_basebackup -D - -Ft -X none`` streamed through the encrypting pipeline.

No local spool: the tar goes from pg_basebackup's stdout through SHA-256, zstd and gpg into an S3
multipart upload. The WAL the backup needs comes from the shipped archive (``-X none``), which
is also what makes it a point-in-time recovery base rather than a snapshot. While the tar
streams, a tap reads two of its members: ``backup_label`` (start LSN, timeline, start time) and
``backup_manifest`` (the WAL range, whose End-LSN is where the backup becomes consistent), so the
recorded facts are the server's own, not parsed log lines.

The set is recorded as for a dump: the artifact, its ``sha256sum -c`` sidecar, then
``manifest.json`` last (the commit point), under ``basebackups/<UTC time>/``.
"""

from __future__ import annotations

import contextlib
import json
import re
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any

from .... import __version__
from ....builders import layout
from ....builders import wal as walb
from ....builders.manifest import Manifest, build_manifest, render
from ....clients import postgres as pg
from ....clients.gpg import Keyring
from ....clients.s3 import S3Store
from ....errors import IntegrityError, LamassuBackupError
from ....models.runner import ArtifactRecord, ComponentOutcome
from ....models.wal import BaseBackupInfo
from ....runner.stream.pipeline import ProcessSource, encrypt_to_store
from ..compression import compression_label, compressor_argv
from ..spec import CompressionAlgorithm

COMPONENT = walb.BASE_COMPONENT
_BLOCK = 512
_WANTED = {"backup_label": 1 << 20, "backup_manifest": 256 << 20}


class TarMemberTap:
    """Collects chosen small members of a tar stream as it passes (ustar headers, no seeking)."""

    def __init__(self, wanted: dict[str, int] | None = None) -> None:
        self.wanted = dict(wanted or _WANTED)
        self.members: dict[str, bytearray] = {}
        self._buf = bytearray()
        self._remaining = 0
        self._padding = 0
        self._current: bytearray | None = None
        self._done = False

    def __call__(self, chunk: bytes) -> None:
        if self._done:
            return
        self._buf += chunk
        while not self._done:
            if self._remaining:
                take = min(self._remaining, len(self._buf))
                if not take:
                    return
                if self._current is not None:
                    self._current += self._buf[:take]
                del self._buf[:take]
                self._remaining -= take
                continue
            if self._padding:
                take = min(self._padding, len(self._buf))
                if not take:
                    return
                del self._buf[:take]
                self._padding -= take
                continue
            if len(self._buf) < _BLOCK:
                return
            header = bytes(self._buf[:_BLOCK])
            del self._buf[:_BLOCK]
            if header == b"\0" * _BLOCK:
                self._done = not self.wanted
                continue
            name = header[:100].split(b"\0", 1)[0].decode(errors="replace")
            prefix = header[345:500].split(b"\0", 1)[0].decode(errors="replace")
            full = f"{prefix}/{name}" if prefix else name
            size_field = header[124:136].split(b"\0", 1)[0].strip() or b"0"
            size = int(size_field, 8)
            self._remaining = size
            self._padding = (-size) % _BLOCK
            limit = self.wanted.pop(full, None)
            self._current = None
            if limit is not None and size <= limit:
                self._current = self.members.setdefault(full, bytearray())


def _label_fields(text: str) -> dict[str, str]:
    fields: dict[str, str] = {}
    for line in text.splitlines():
        key, sep, value = line.partition(": ")
        if sep:
            fields[key.strip()] = value.strip()
    return fields


def parse_backup_facts(label: str, manifest: bytes) -> dict[str, Any]:
    """Start/stop LSN, timeline, start WAL and start time from backup_label and backup_manifest."""
    fields = _label_fields(label)
    match = re.match(
        r"([0-9A-F]+/[0-9A-F]+) \(file ([0-9A-F]{24})\)", fields.get("START WAL LOCATION", "")
    )
    if not match:
        raise IntegrityError("the base backup's backup_label has no START WAL LOCATION")
    try:
        ranges = json.loads(manifest)["WAL-Ranges"]
    except (ValueError, KeyError, TypeError):
        raise IntegrityError(
            "the base backup carries no readable backup_manifest (PostgreSQL 13 or newer writes "
            "one; do not pass --no-manifest)"
        ) from None
    last = ranges[-1]
    start_time = datetime.strptime(
        fields.get("START TIME", "").replace(" UTC", ""), "%Y-%m-%d %H:%M:%S"
    ).replace(tzinfo=UTC)
    return {
        "startLsn": match.group(1),
        "startWal": match.group(2),
        "stopLsn": str(last["End-LSN"]),
        "timeline": int(fields.get("START TIMELINE", str(last["Timeline"]))),
        "startTime": start_time,
    }


@dataclass(frozen=True)
class Signer:
    """The key that signs base-backup manifests, as for dump sets (manifest.json.asc)."""

    keyring: Keyring
    fingerprint: str
    passphrase: str | None = field(default=None, repr=False)


def _describe(code: int, stderr: str) -> str:
    lines = [ln.strip() for ln in stderr.splitlines() if ln.strip()]
    useful = [ln for ln in lines if "error" in ln.lower() or "fatal" in ln.lower()] or lines
    return f"pg_basebackup failed (exit {code}): {'; '.join(useful[-2:])[:400]}"


def take_base_backup(
    conn: pg.PgConnection,
    *,
    store: S3Store,
    prefix: str,
    keyring: Keyring,
    recipients: list[str],
    set_time: str,
    namespace: str = "",
    policy: str = "",
    compression_level: int = 1,
    encryption_label: str = "gpg",
    signer: Signer | None = None,
) -> tuple[BaseBackupInfo, Manifest]:
    """Stream one base backup into ``<prefix>basebackups/<set_time>/``; returns its facts.

    ``conn`` needs REPLICATION (pg_basebackup) and may read ``now()`` and call
    ``pg_switch_wal()`` (a superuser, or EXECUTE granted): the switch closes the segment holding
    the backup's end, so the backup is restorable as soon as that segment is shipped, not when
    the next write fills it.
    """
    version = pg.server_version_num(conn)
    tool = pg.pick_tool("pg_basebackup", version // 10000)
    base = walb.base_backup_prefix(set_time)
    keys = layout.ArtifactKeys(
        f"{base}base.tar{layout.compression_suffix('zstd')}.gpg",
        f"{base}base.tar.sha256",
        "base.tar",
    )
    tap = TarMemberTap()
    source = ProcessSource(
        [tool, "-D", "-", "-Ft", "-X", "none", "-c", "fast", "-l", f"lamassu-backup {set_time}"],
        env=conn.env(),
        label="pg_basebackup",
        describe_error=_describe,
    )
    upload = store.multipart(prefix + keys.key)
    stats = encrypt_to_store(
        source,
        keyring=keyring,
        recipients=recipients,
        upload=upload,
        compressor=compressor_argv(CompressionAlgorithm.ZSTD, compression_level),
        taps=[tap],
    )
    stop_time = datetime.fromisoformat(
        pg.query(
            conn,
            "postgres",
            "SELECT to_char(now() AT TIME ZONE 'UTC', 'YYYY-MM-DD\"T\"HH24:MI:SS.US\"+00:00\"');",
        )[0][0]
    )
    # Without the privilege the next write closes the segment; the backup is intact either way.
    with contextlib.suppress(LamassuBackupError):
        pg.query(conn, "postgres", "SELECT pg_switch_wal();")
    info = store.head(prefix + keys.key)
    if info is None or info.size != stats.stored_bytes:
        raise IntegrityError(
            f"{store.url(prefix + keys.key)}: stored {stats.stored_bytes} bytes but the store "
            f"holds {'nothing' if info is None else info.size}"
        )
    label = bytes(tap.members.get("backup_label", b"")).decode(errors="replace")
    facts = parse_backup_facts(label, bytes(tap.members.get("backup_manifest", b"")))
    segment_size = int(
        pg.query(
            conn, "postgres", "SELECT setting FROM pg_settings WHERE name = 'wal_segment_size';"
        )[0][0]
    )
    backup = BaseBackupInfo(
        set_time=set_time,
        key=keys.key,
        timeline=facts["timeline"],
        start_lsn=facts["startLsn"],
        stop_lsn=facts["stopLsn"],
        start_wal=facts["startWal"],
        start_time=facts["startTime"],
        stop_time=stop_time,
        segment_size=segment_size,
        backup_label=label,
    )
    store.put_bytes(
        prefix + keys.sidecar,
        layout.sidecar_text(stats.plain_sha256, keys.plain_name).encode(),
        "text/plain",
    )
    artifact = ArtifactRecord(
        component=COMPONENT,
        name="base",
        kind="pg-basebackup",
        key=keys.key.removeprefix(base),
        sidecar_key=keys.sidecar.removeprefix(base),
        size_bytes=stats.stored_bytes,
        plaintext_size_bytes=stats.plain_bytes,
        sha256=stats.stored_sha256,
        plaintext_sha256=stats.plain_sha256,
        compression=compression_label(CompressionAlgorithm.ZSTD, compression_level),
        encryption=encryption_label,
        details={"seconds": round(stats.seconds, 3)},
    )
    manifest = build_manifest(
        namespace=namespace,
        policy=policy,
        backup=layout.backup_name(policy or "base", set_time.lower()),
        set_time=set_time,
        created_at=datetime.now(UTC),
        tool_version=__version__,
        requested=[COMPONENT],
        outcomes=[
            ComponentOutcome(
                component=COMPONENT,
                ok=True,
                artifacts=[artifact],
                details={
                    **backup.model_dump(mode="json", by_alias=True),
                    "serverVersionNum": version,
                },
            )
        ],
        encryption={"client": "gpg", "serverSide": store.conn.sse},
        signed_by=signer.fingerprint if signer else None,
    )
    body = render(manifest)
    if signer is not None:
        signature = signer.keyring.sign_detached(body, signer.fingerprint, signer.passphrase)
        store.put_bytes(prefix + base + layout.SIGNATURE, signature, "application/pgp-signature")
    store.put_bytes(prefix + base + layout.MANIFEST, body, "application/json")
    return backup, manifest


def base_backup_from_manifest(manifest: Manifest) -> tuple[BaseBackupInfo, ArtifactRecord, int]:
    """The facts, the tar's artifact record and the server version a base backup set holds
    (pure, in :mod:`builders.wal`, so the operator reads it without the runner)."""
    return walb.base_backup_of(manifest)


__all__ = [
    "COMPONENT",
    "Signer",
    "TarMemberTap",
    "base_backup_from_manifest",
    "parse_backup_facts",
    "take_base_backup",
]
