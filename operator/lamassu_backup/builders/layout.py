"""Object store layout and resource naming: one place decides every key and name.

``<prefix>/<namespace>/<policy>/<UTC time>/`` holds one set; inside it, the artifact keys below.
The layout is also what a person restores from by hand, so it stays close to the runbook.
"""

from __future__ import annotations

import hashlib
import re
from dataclasses import dataclass
from datetime import UTC, datetime

SET_TIME_FORMAT = "%Y%m%dT%H%M%SZ"
MANIFEST = "manifest.json"
SIGNATURE = "manifest.json.asc"
PARTS_DIR = "parts/"
_SET_TIME_RE = re.compile(r"^(\d{8}T\d{6}Z)(-[0-9a-z]{1,16})?$")
"""A set folder: its UTC time, then (since sets became unique per run) a short run id."""
_MAX_NAME = 63
_RUN_ID_LENGTH = 8
_LABEL_VALUE_RE = re.compile(r"^(([A-Za-z0-9][-A-Za-z0-9_.]*)?[A-Za-z0-9])?$")


def set_time(moment: datetime) -> str:
    """The folder name of a set taken at ``moment``."""
    if moment.tzinfo is None:
        raise ValueError("set times are aware datetimes")
    return moment.astimezone(UTC).strftime(SET_TIME_FORMAT)


def set_folder(moment: datetime, run_uid: str) -> str:
    """The folder of one run's set: its time and a short id of the run that owns it.

    Two runs in the same second (two on-demand backups, or one given another set's
    ``scheduledTime``) must never share a folder: the second would replace the first's manifest
    while the first's record still claimed it. The id comes from the run's UID, so a restarted
    operator derives the same folder.
    """
    run_id = re.sub(r"[^0-9a-z]", "", run_uid.lower())[:_RUN_ID_LENGTH]
    if not run_id:
        raise ValueError("a set folder needs the run's UID")
    return f"{set_time(moment)}-{run_id}"


def parse_set_time(text: str) -> datetime:
    """The time of a set folder (with or without its run id); inverse of :func:`set_folder`."""
    match = _SET_TIME_RE.match(text)
    if not match:
        raise ValueError(f"not a set folder name: {text!r}")
    return datetime.strptime(match.group(1), SET_TIME_FORMAT).replace(tzinfo=UTC)


def is_set_folder(text: str) -> bool:
    """Whether a key segment names a set folder."""
    return _SET_TIME_RE.match(text) is not None


def policy_prefix(prefix: str, namespace: str, policy: str) -> str:
    """Key prefix of every set of one policy, ending in '/'."""
    parts = [p for p in (prefix.strip("/"), namespace, policy) if p]
    return "/".join(parts) + "/"


def set_prefix(prefix: str, namespace: str, policy: str, time_str: str) -> str:
    """Key prefix of one set, ending in '/'."""
    return f"{policy_prefix(prefix, namespace, policy)}{time_str}/"


@dataclass(frozen=True)
class Location:
    """``s3://<bucket>/<prefix>``: where a set (or any folder) is; parsed once, not sliced."""

    bucket: str
    prefix: str

    @classmethod
    def parse(cls, url: str) -> Location:
        """Read an ``s3://`` URL; refuses anything else."""
        if not url.startswith("s3://"):
            raise ValueError(f"not an s3:// location: {url!r}")
        bucket, _, prefix = url.removeprefix("s3://").partition("/")
        if not bucket:
            raise ValueError(f"an s3:// location needs a bucket: {url!r}")
        return cls(bucket, prefix)

    @property
    def url(self) -> str:
        """The ``s3://`` URL (status and Events show it)."""
        return f"s3://{self.bucket}/{self.prefix}"


@dataclass(frozen=True)
class SetPath:
    """A set's identity as found in its key prefix."""

    namespace: str
    policy: str
    time: str


def parse_set_prefix(prefix: str, key: str) -> SetPath | None:
    """Read namespace, policy and time from a key under ``prefix``, or None if it is no set."""
    base = prefix.strip("/")
    rest = key[len(base) + 1 :] if base else key
    if base and not key.startswith(base + "/"):
        return None
    parts = rest.split("/")
    if len(parts) < 4 or not is_set_folder(parts[2]):
        return None
    return SetPath(namespace=parts[0], policy=parts[1], time=parts[2])


def compression_suffix(algorithm: str) -> str:
    """File suffix of an external compression stage (pg_dump's own gzip has none)."""
    return {"zstd": ".zst", "lz4": ".lz4"}.get(algorithm, "")


def safe_segment(name: str) -> str:
    """A key segment from a name that may contain '/' (KV mounts can be nested)."""
    return re.sub(r"[^A-Za-z0-9._-]", "_", name.strip("/"))


@dataclass(frozen=True)
class ArtifactKeys:
    """Where one artifact and its checksum sidecar go, relative to the set prefix."""

    key: str
    sidecar: str
    plain_name: str
    """The file the sidecar names: the artifact after decryption (and decompression)."""


def artifact_keys(folder: str, plain: str, stored_suffix: str = "") -> ArtifactKeys:
    """<folder>/<plain><stored_suffix>.gpg with sidecar <folder>/<plain>.sha256 (each component
    names its folder and files; the shape is the same for all)."""
    return ArtifactKeys(f"{folder}/{plain}{stored_suffix}.gpg", f"{folder}/{plain}.sha256", plain)


def part_key(component: str) -> str:
    """A component Job's record of what it stored; the commit step turns parts into the manifest."""
    return f"{PARTS_DIR}{component}.json"


def sidecar_text(sha256_hex: str, plain_name: str) -> str:
    """A ``sha256sum -c`` compatible line."""
    return f"{sha256_hex}  {plain_name}\n"


def bounded_name(*parts: str, limit: int = _MAX_NAME) -> str:
    """Join parts with '-' into a DNS label of at most ``limit`` characters.

    Too-long names keep their end (the distinguishing part) and get a stable hash, so the same
    inputs always give the same name: the operator relies on that to never create a Job twice.
    """
    name = "-".join(p for p in parts if p).lower()
    name = re.sub(r"[^a-z0-9-]", "-", name).strip("-")
    if len(name) <= limit:
        return name
    digest = hashlib.sha256(name.encode()).hexdigest()[:8]
    tail = "-".join(parts[1:]).lower() if len(parts) > 1 else ""
    tail = re.sub(r"[^a-z0-9-]", "-", tail).strip("-")[: limit // 2]
    head_len = limit - len(tail) - len(digest) - 2
    head = re.sub(r"[^a-z0-9-]", "-", parts[0].lower())[: max(head_len, 1)].strip("-")
    return "-".join(p for p in (head, digest, tail) if p)[:limit].strip("-")


def label_value(name: str) -> str:
    """A label value for an object name: names may be 253 characters, label values only 63.

    Short names stay as they are (selectors keep working by name); longer ones keep their start
    and get a stable hash, so the same name always gives the same value.
    """
    if len(name) <= _MAX_NAME and _LABEL_VALUE_RE.match(name):
        return name
    digest = hashlib.sha256(name.encode()).hexdigest()[:10]
    head = re.sub(r"[^A-Za-z0-9._-]", "-", name)[: _MAX_NAME - len(digest) - 1]
    head = head.strip("-_.")
    return f"{head}-{digest}" if head else digest


def backup_name(policy: str, time_str: str) -> str:
    """Name of the LamassuBackup for a policy's set (e.g. lamassu-20261124t100000z)."""
    return bounded_name(policy, time_str.lower(), limit=253)
