"""Point-in-time recovery arithmetic: WAL names, keys, the chain, the window, retention.

Pure functions over the records the bucket holds, so the rules that decide what a restore may
promise and what retention may delete are table-tested without a server. One timeline per
archive prefix: after an in-place point-in-time restore, shipping continues under a new prefix,
so histories never mix (CloudNativePG's "expected empty archive" is this rule, enforced late).

Layout, relative to the policy prefix (``<prefix>/<namespace>/<policy>/``)::

    wal/<timeline>/<segment>.zst.gpg            a complete segment
    wal/<timeline>/<segment>.json               its record: checksums, end LSN, commit times
    wal/<timeline>/<segment>.partial.<n>.zst.gpg  snapshots of the segment in progress
    wal/<timeline>/<segment>.partial.json       points at the newest (all go when the
                                                complete segment lands)
    wal/<timeline>/<timeline>.history.zst.gpg   timeline history files, as pg_receivewal gets them
    basebackups/<UTC time>/base.tar.zst.gpg     a base backup (pg_basebackup -Ft -X none)
    basebackups/<UTC time>/base.tar.sha256      sha256sum -c sidecar of the plain tar
    basebackups/<UTC time>/manifest.json        written last, as for a dump set

By hand: ``gpg -d X.zst.gpg | zstd -d > X`` then compare with the record's plaintextSha256.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from datetime import datetime

from ..errors import IntegrityError
from ..models.runner import ArtifactRecord
from ..models.wal import BaseBackupInfo, RecoveryWindow, WalRecord
from .manifest import Manifest

WAL_DIR = "wal/"
BASE_DIR = "basebackups/"
_SEGMENT_RE = re.compile(r"^([0-9A-F]{8})([0-9A-F]{8})([0-9A-F]{8})$")
_HISTORY_RE = re.compile(r"^([0-9A-F]{8})\.history$")
_LSN_RE = re.compile(r"^([0-9A-Fa-f]{1,8})/([0-9A-Fa-f]{1,8})$")
_4G = 0x1_0000_0000


def parse_lsn(text: str) -> int:
    """``0/3000148`` -> 50331976."""
    match = _LSN_RE.match(text.strip())
    if not match:
        raise ValueError(f"not an LSN: {text!r}")
    return (int(match.group(1), 16) << 32) | int(match.group(2), 16)


def format_lsn(value: int) -> str:
    """Inverse of :func:`parse_lsn`."""
    return f"{value >> 32:X}/{value & 0xFFFFFFFF:X}"


def segments_per_xlogid(segment_size: int) -> int:
    """How many segments one 4 GiB "log id" holds (the middle 8 hex digits of a name)."""
    if segment_size <= 0 or _4G % segment_size:
        raise ValueError(f"not a WAL segment size: {segment_size}")
    return _4G // segment_size


def segment_name(timeline: int, segno: int, segment_size: int) -> str:
    """The file name of segment number ``segno`` (as PostgreSQL's XLogFileName)."""
    per = segments_per_xlogid(segment_size)
    return f"{timeline:08X}{segno // per:08X}{segno % per:08X}"


def parse_segment(name: str, segment_size: int) -> tuple[int, int]:
    """(timeline, segment number) of a segment file name."""
    match = _SEGMENT_RE.match(name)
    if not match:
        raise ValueError(f"not a WAL segment name: {name!r}")
    per = segments_per_xlogid(segment_size)
    low = int(match.group(3), 16)
    if low >= per:
        raise ValueError(f"{name} is not a segment name for {segment_size}-byte segments")
    return int(match.group(1), 16), int(match.group(2), 16) * per + low


def is_segment_name(name: str) -> bool:
    """Whether ``name`` looks like a WAL segment file (24 hex digits)."""
    return bool(_SEGMENT_RE.match(name))


def is_history_name(name: str) -> bool:
    """Whether ``name`` is a timeline history file."""
    return bool(_HISTORY_RE.match(name))


def segment_of(lsn: int, segment_size: int) -> int:
    """The segment number holding byte ``lsn`` of the WAL."""
    return lsn // segment_size


def wal_keys(
    name: str, timeline: int, *, partial: bool = False, snapshot: str = ""
) -> tuple[str, str]:
    """(object key, record key) of a WAL file, relative to the policy prefix.

    Each partial snapshot gets its own object key (``snapshot``), and the one record of the
    segment in progress points at the newest: a restore that read the record a moment before
    the next snapshot landed still finds the object that record describes.
    """
    stem = f"{WAL_DIR}{timeline:08X}/{name}{'.partial' if partial else ''}"
    suffix = f".{snapshot}" if partial and snapshot else ""
    return f"{stem}{suffix}.zst.gpg", f"{stem}.json"


def partial_prefix(name: str, timeline: int) -> str:
    """Prefix of every object and record of a segment's partial snapshots."""
    return f"{WAL_DIR}{timeline:08X}/{name}.partial"


def base_backup_prefix(set_time: str) -> str:
    """Prefix of one base backup, relative to the policy prefix."""
    return f"{BASE_DIR}{set_time}/"


@dataclass(frozen=True)
class Chain:
    """The WAL of one timeline as the bucket holds it."""

    timeline: int
    segment_size: int
    segments: dict[int, WalRecord]
    """Segment number -> the complete segment's record."""

    partial: WalRecord | None
    """The snapshot of the segment in progress, when it is the newest thing shipped."""

    @property
    def newest(self) -> WalRecord | None:
        """The last record of the chain (the partial when it is newer than every segment)."""
        if self.partial is not None:
            return self.partial
        return self.segments[max(self.segments)] if self.segments else None

    @property
    def newest_segno(self) -> int | None:
        """Segment number of :attr:`newest`."""
        newest = self.newest
        return None if newest is None else parse_segment(newest.name, self.segment_size)[1]

    def missing(self, first: int) -> list[int]:
        """Segment numbers between ``first`` and the newest that the bucket does not hold."""
        last = self.newest_segno
        if last is None:
            return [first]
        end = last if self.partial is None else last - 1
        return [n for n in range(first, end + 1) if n not in self.segments]

    def records_from(self, first: int) -> list[WalRecord]:
        """The records from segment ``first`` to the newest, in replay order."""
        out = [self.segments[n] for n in sorted(self.segments) if n >= first]
        if self.partial is not None:
            out.append(self.partial)
        return out


def build_chain(records: list[WalRecord]) -> Chain | None:
    """The chain of the newest timeline; a partial counts only when nothing newer is complete."""
    segs = [r for r in records if r.kind in ("segment", "partial") and r.segment_size]
    if not segs:
        return None
    timeline = max(r.timeline for r in segs)
    mine = [r for r in segs if r.timeline == timeline]
    size = mine[0].segment_size
    complete = {parse_segment(r.name, size)[1]: r for r in mine if r.kind == "segment"}
    partials = sorted((parse_segment(r.name, size)[1], r) for r in mine if r.kind == "partial")
    partial = None
    if partials:
        segno, record = partials[-1]
        if segno not in complete and (not complete or segno > max(complete)):
            partial = record
    return Chain(timeline=timeline, segment_size=size, segments=complete, partial=partial)


def _end_lsn(record: WalRecord | None) -> int:
    return parse_lsn(record.end_lsn) if record is not None and record.end_lsn else -1


def usable_base_backups(
    bases: list[BaseBackupInfo], chain: Chain | None
) -> tuple[list[BaseBackupInfo], list[str]]:
    """Base backups a restore can start from (oldest first), and why the others cannot."""
    usable: list[BaseBackupInfo] = []
    reasons: list[str] = []
    for base in sorted(bases, key=lambda b: b.stop_time):
        if chain is None:
            reasons.append(f"base backup {base.set_time}: no WAL shipped")
            continue
        if base.timeline != chain.timeline:
            reasons.append(
                f"base backup {base.set_time} is on timeline {base.timeline}, the archive on "
                f"timeline {chain.timeline}"
            )
            continue
        first = parse_segment(base.start_wal, chain.segment_size)[1]
        gaps = chain.missing(first)
        if gaps:
            names = [segment_name(chain.timeline, n, chain.segment_size) for n in gaps[:3]]
            more = f" and {len(gaps) - 3} more" if len(gaps) > 3 else ""
            reasons.append(
                f"base backup {base.set_time}: WAL segment(s) {', '.join(names)}{more} missing"
            )
            continue
        if _end_lsn(chain.newest) < parse_lsn(base.stop_lsn):
            reasons.append(
                f"base backup {base.set_time}: the WAL up to its end ({base.stop_lsn}) is not "
                "shipped yet"
            )
            continue
        usable.append(base)
    return usable, reasons


def last_commit(records: list[WalRecord]) -> datetime | None:
    """The newest commit time the records hold."""
    times = [r.last_commit_time for r in records if r.last_commit_time is not None]
    return max(times) if times else None


def recovery_window(bases: list[BaseBackupInfo], records: list[WalRecord]) -> RecoveryWindow:
    """From the end of the oldest usable base backup until the last shipped commit."""
    chain = build_chain(records)
    usable, reasons = usable_base_backups(bases, chain)
    if not usable or chain is None:
        return RecoveryWindow(
            last_shipped_wal=chain.newest.name if chain and chain.newest else None, gaps=reasons
        )
    oldest = usable[0]
    first = parse_segment(oldest.start_wal, chain.segment_size)[1]
    until = last_commit(chain.records_from(first))
    newest_stop = max(b.stop_time for b in usable)
    return RecoveryWindow(
        recoverable_from=oldest.stop_time,
        # With no commit after the newest backup, its end is still a point one can restore to.
        recoverable_until=max(until, newest_stop) if until else newest_stop,
        last_shipped_wal=chain.newest.name if chain.newest else None,
        base_backups=[b.set_time for b in usable],
        gaps=reasons,
    )


def parse_target(text: str) -> datetime | None:
    """``latest`` -> None; an RFC 3339 time (with its offset) -> an aware datetime."""
    if text.strip().lower() == "latest":
        return None
    try:
        moment = datetime.fromisoformat(text.strip().replace("Z", "+00:00"))
    except ValueError:
        raise ValueError(
            f"point in time {text!r} is neither 'latest' nor an RFC 3339 time "
            "(e.g. 2026-12-01T10:30:00Z)"
        ) from None
    if moment.tzinfo is None:
        raise ValueError(
            f"point in time {text!r} has no UTC offset: write it as RFC 3339, e.g. "
            "2026-12-01T10:30:00Z"
        )
    return moment


@dataclass(frozen=True)
class RecoveryPlan:
    """What a restore to one target fetches and how it tells PostgreSQL where to stop."""

    base: BaseBackupInfo
    records: list[WalRecord]
    """In replay order: the base backup's first segment to the one holding the stop point."""

    target_time: datetime | None
    """recovery_target_time, or None: replay everything fetched (latest, or a target after the
    last commit, which is the same state and avoids PostgreSQL's "recovery ended before the
    configured recovery target was reached")."""

    window: RecoveryWindow


class OutsideWindowError(ValueError):
    """The target is not inside the recoverable window (the message names the window)."""


def plan_recovery(
    target: datetime | None, bases: list[BaseBackupInfo], records: list[WalRecord]
) -> RecoveryPlan:
    """Pick the newest base backup ending at or before the target and the WAL up to it.

    Raises :class:`OutsideWindowError` naming the window when the target is outside it: a
    restore refuses before it downloads anything (a target CloudNativePG users learn is out of
    range only after the recovery hung or failed).
    """
    window = recovery_window(bases, records)
    chain = build_chain(records)
    if window.recoverable_from is None or window.recoverable_until is None or chain is None:
        detail = "; ".join(window.gaps) or "no base backup or no WAL in the archive"
        raise OutsideWindowError(f"nothing to recover: {window.describe()} ({detail})")
    if target is not None and not (window.recoverable_from <= target <= window.recoverable_until):
        side = (
            "before the end of the oldest base backup"
            if (target < window.recoverable_from)
            else "after the last shipped commit"
        )
        raise OutsideWindowError(
            f"point in time {target.isoformat()} is {side}: the recoverable window is "
            f"{window.describe()}; pick a time inside it (or 'latest')"
        )
    usable, _ = usable_base_backups(bases, chain)
    base = usable[-1] if target is None else [b for b in usable if b.stop_time <= target][-1]
    first = parse_segment(base.start_wal, chain.segment_size)[1]
    candidates = chain.records_from(first)
    if target is None:
        return RecoveryPlan(base=base, records=candidates, target_time=None, window=window)
    chosen: list[WalRecord] = []
    stop_found = False
    for record in candidates:
        chosen.append(record)
        if record.last_commit_time is not None and record.last_commit_time > target:
            stop_found = True
            # The stopping commit is in this object; recovery still needs the backup's end.
            if _end_lsn(record) >= parse_lsn(base.stop_lsn):
                break
    return RecoveryPlan(
        base=base, records=chosen, target_time=target if stop_found else None, window=window
    )


def select_expired_wal(
    kept_bases: list[BaseBackupInfo], records: list[WalRecord]
) -> list[WalRecord]:
    """WAL objects no kept base backup needs: what retention may delete.

    Keeps every segment from the oldest kept base backup's first segment to now, so the chain
    it needs is never broken; keeps history files, and everything when no base backup is kept
    (WAL without a base is useless, but deleting it on a misconfiguration is not reversible).
    Superseded partial snapshots (their complete segment landed) always go.
    """
    chain = build_chain(records)
    expired: list[WalRecord] = []
    if chain is not None:
        expired += [
            r
            for r in records
            if r.kind == "partial"
            and r.timeline == chain.timeline
            and r is not chain.partial
            and r.segment_size
        ]
    if chain is None:
        return expired
    oldest: dict[int, int] = {}
    for base in kept_bases:
        first = parse_segment(base.start_wal, chain.segment_size)[1]
        oldest[base.timeline] = min(first, oldest.get(base.timeline, first))
    if chain.timeline not in oldest:
        return expired
    gone = {id(r) for r in expired}
    for record in records:
        if record.kind == "history" or id(record) in gone or not record.segment_size:
            continue
        keep_from = oldest.get(record.timeline)
        segno = parse_segment(record.name, chain.segment_size)[1]
        if (keep_from is not None and segno < keep_from) or (
            keep_from is None and record.timeline < chain.timeline
        ):
            expired.append(record)
    return expired


BASE_COMPONENT = "postgresBase"
"""The manifest component of a base backup set (``basebackups/<time>/manifest.json``)."""


def base_backup_of(manifest: Manifest) -> tuple[BaseBackupInfo, ArtifactRecord, int]:
    """The facts, the tar's artifact record and the server version a base backup set holds."""
    entry = manifest.components.get(BASE_COMPONENT)
    if entry is None or entry.status != "Completed":
        raise IntegrityError(f"set {manifest.set_time} holds no completed base backup")
    info = BaseBackupInfo.model_validate(entry.details)
    artifact = next(a for a in manifest.artifacts if a.component == BASE_COMPONENT)
    return info, artifact, int(entry.details.get("serverVersionNum", 150000))
