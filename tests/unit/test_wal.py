"""The point-in-time recovery rules, without a server: names, the chain, the window, retention.

Retention is checked the way it can hurt: after deleting what it selects, every kept base backup
must still be restorable to now (its chain unbroken), and nothing older than that chain is kept.
"""

from __future__ import annotations

import io
import json
import tarfile
from datetime import UTC, datetime, timedelta

import pytest

from lamassu_backup.builders import wal as walb
from lamassu_backup.components.postgres.wal.basebackup import TarMemberTap, parse_backup_facts
from lamassu_backup.components.postgres.wal.walinfo import parse_waldump
from lamassu_backup.errors import IntegrityError
from lamassu_backup.models.wal import BaseBackupInfo, WalRecord

MB = 1024 * 1024
SEG = 16 * MB
T0 = datetime(2026, 12, 1, 10, 0, tzinfo=UTC)


def seg(
    segno: int, *, commit: float | None = None, kind: str = "segment", tl: int = 1
) -> WalRecord:
    """A record of segment ``segno``; ``commit`` is its last commit, seconds after T0."""
    name = walb.segment_name(tl, segno, SEG)
    key, _ = walb.wal_keys(name, tl, partial=kind == "partial")
    end = (segno + 1) * SEG if kind == "segment" else segno * SEG + 100
    return WalRecord(
        name=name,
        kind=kind,  # type: ignore[arg-type]
        timeline=tl,
        key=key,
        size_bytes=10,
        sha256="0" * 64,
        plaintext_size_bytes=SEG,
        plaintext_sha256="1" * 64,
        compression="zstd-1",
        encryption="gpg",
        segment_size=SEG,
        end_lsn=walb.format_lsn(end),
        last_commit_time=None if commit is None else T0 + timedelta(seconds=commit),
        shipped_at=T0,
    )


def base(set_time: str, start_seg: int, *, stop: float, tl: int = 1) -> BaseBackupInfo:
    """A base backup starting in ``start_seg``, ending ``stop`` seconds after T0."""
    return BaseBackupInfo(
        set_time=set_time,
        key=f"basebackups/{set_time}/base.tar.zst.gpg",
        timeline=tl,
        start_lsn=walb.format_lsn(start_seg * SEG + 40),
        stop_lsn=walb.format_lsn(start_seg * SEG + 4096),
        start_wal=walb.segment_name(tl, start_seg, SEG),
        start_time=T0 + timedelta(seconds=stop - 5),
        stop_time=T0 + timedelta(seconds=stop),
        segment_size=SEG,
    )


@pytest.mark.parametrize(
    ("timeline", "segno", "size", "name"),
    [
        (1, 0, SEG, "000000010000000000000000"),
        (1, 0x1FF, SEG, "0000000100000001000000FF"),
        (2, 0x1000, MB, "000000020000000100000000"),
        (0xA, 0xFFF, MB, "0000000A0000000000000FFF"),
    ],
)
def test_segment_names_follow_xlogfilename(timeline: int, segno: int, size: int, name: str) -> None:
    assert walb.segment_name(timeline, segno, size) == name
    assert walb.parse_segment(name, size) == (timeline, segno)


def test_names_and_lsns_that_are_not_wal_are_refused() -> None:
    with pytest.raises(ValueError, match="not a WAL segment name"):
        walb.parse_segment("00000001.history", SEG)
    with pytest.raises(ValueError, match="not a segment name for"):
        walb.parse_segment("000000010000000000000100", SEG)  # 16 MiB: low part stops at FF
    with pytest.raises(ValueError, match="not an LSN"):
        walb.parse_lsn("0-3000148")
    assert walb.parse_lsn("0/3000148") == 0x3000148
    assert walb.format_lsn(walb.parse_lsn("1A/FF000028")) == "1A/FF000028"
    assert walb.segment_of(walb.parse_lsn("0/3000148"), SEG) == 3


def test_keys_keep_partials_apart_from_segments() -> None:
    name = walb.segment_name(1, 3, SEG)
    assert walb.wal_keys(name, 1) == (f"wal/00000001/{name}.zst.gpg", f"wal/00000001/{name}.json")
    assert walb.wal_keys(name, 1, partial=True, snapshot="18f") == (
        f"wal/00000001/{name}.partial.18f.zst.gpg",
        f"wal/00000001/{name}.partial.json",
    )
    assert walb.wal_keys(name, 1, partial=True)[0].startswith(walb.partial_prefix(name, 1))


def test_window_runs_from_the_oldest_base_end_to_the_last_shipped_commit() -> None:
    records = [seg(n, commit=10.0 * n) for n in range(2, 6)] + [seg(6, commit=65, kind="partial")]
    window = walb.recovery_window([base("A", 2, stop=15), base("B", 4, stop=42)], records)
    assert window.recoverable_from == T0 + timedelta(seconds=15)
    assert window.recoverable_until == T0 + timedelta(seconds=65)
    assert window.last_shipped_wal == walb.segment_name(1, 6, SEG)
    assert window.base_backups == ["A", "B"]
    assert window.gaps == []


def test_a_missing_segment_cuts_older_base_backups_out_of_the_window() -> None:
    records = [seg(n, commit=10.0 * n) for n in (2, 3, 5, 6, 7)]  # 4 is missing
    window = walb.recovery_window([base("A", 2, stop=15), base("B", 5, stop=52)], records)
    assert window.recoverable_from == T0 + timedelta(seconds=52)
    assert window.base_backups == ["B"]
    assert "000000010000000000000004" in window.gaps[0]


def test_a_superseded_partial_is_not_the_chain_end() -> None:
    records = [seg(2, commit=5), seg(3, commit=9), seg(3, commit=7, kind="partial")]
    chain = walb.build_chain(records)
    assert chain is not None
    assert chain.partial is None
    assert chain.newest is not None
    assert chain.newest.kind == "segment"


def test_no_base_backup_no_window() -> None:
    window = walb.recovery_window([], [seg(2, commit=1)])
    assert window.recoverable_from is None
    assert "no recoverable window" in window.describe()
    with pytest.raises(walb.OutsideWindowError, match="nothing to recover"):
        walb.plan_recovery(None, [], [seg(2, commit=1)])


def test_a_base_backup_whose_end_is_not_shipped_yet_is_not_usable() -> None:
    early = seg(2, commit=None, kind="partial").model_copy(update={"end_lsn": "0/2000100"})
    usable, reasons = walb.usable_base_backups([base("A", 2, stop=15)], walb.build_chain([early]))
    assert usable == []
    assert "not shipped yet" in reasons[0]


@pytest.mark.parametrize(
    ("target", "side"),
    [
        (T0 + timedelta(seconds=14), "before the end of the oldest base backup"),
        (T0 + timedelta(seconds=66), "after the last shipped commit"),
    ],
)
def test_targets_outside_the_window_are_refused_naming_it(target: datetime, side: str) -> None:
    records = [seg(n, commit=10.0 * n) for n in range(2, 7)]
    records.append(seg(7, commit=65, kind="partial"))
    with pytest.raises(walb.OutsideWindowError) as caught:
        walb.plan_recovery(target, [base("A", 2, stop=15)], records)
    text = str(caught.value)
    assert side in text
    assert "from 2026-12-01T10:00:15+00:00 until 2026-12-01T10:01:05+00:00" in text


def test_a_plan_takes_the_newest_base_before_the_target_and_wal_to_the_stopping_commit() -> None:
    records = [seg(n, commit=10.0 * n) for n in range(2, 9)]
    bases = [base("A", 2, stop=15), base("B", 4, stop=42), base("C", 7, stop=75)]
    plan = walb.plan_recovery(T0 + timedelta(seconds=55), bases, records)
    assert plan.base.set_time == "B"
    assert [walb.parse_segment(r.name, SEG)[1] for r in plan.records] == [4, 5, 6]
    assert plan.target_time == T0 + timedelta(seconds=55)


def test_latest_and_a_target_at_the_last_commit_replay_everything_without_a_target() -> None:
    records = [seg(n, commit=10.0 * n) for n in range(2, 6)]
    bases = [base("A", 2, stop=15)]
    for target in (None, T0 + timedelta(seconds=50)):
        plan = walb.plan_recovery(target, bases, records)
        assert plan.target_time is None  # same state, without "recovery ended before target"
        assert len(plan.records) == 4


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("latest", None),
        ("LATEST", None),
        ("2026-12-01T10:30:00Z", datetime(2026, 12, 1, 10, 30, tzinfo=UTC)),
        ("2026-12-01T11:30:00+01:00", datetime(2026, 12, 1, 10, 30, tzinfo=UTC)),
    ],
)
def test_targets_parse(text: str, expected: datetime | None) -> None:
    assert walb.parse_target(text) == expected


@pytest.mark.parametrize("text", ["2026-12-01 10:30:00", "yesterday", ""])
def test_ambiguous_or_unreadable_targets_are_refused(text: str) -> None:
    with pytest.raises(ValueError, match="RFC 3339"):
        walb.parse_target(text)


def _after_retention(kept: list[BaseBackupInfo], records: list[WalRecord]) -> list[WalRecord]:
    expired = {id(r) for r in walb.select_expired_wal(kept, records)}
    return [r for r in records if id(r) not in expired]


@pytest.mark.parametrize(
    ("starts", "kept", "first_left"),
    [
        ([2, 5, 9], [5, 9], 5),  # the oldest base expired: its WAL goes, up to the next base
        ([2, 5, 9], [9], 9),
        ([2, 5, 9], [2, 5, 9], 2),  # everything kept: nothing goes
        ([2, 5, 9], [2, 9], 2),  # a middle base expired: its WAL is still in the oldest's chain
        ([3], [3], 3),
    ],
)
def test_retention_keeps_every_chain_a_kept_base_needs_and_nothing_older(
    starts: list[int], kept: list[int], first_left: int
) -> None:
    records = [seg(n, commit=10.0 * n) for n in range(1, 12)]
    records.append(seg(12, commit=125, kind="partial"))
    bases = {s: base(f"T{s}", s, stop=10.0 * s + 5) for s in starts}
    kept_bases = [bases[s] for s in kept]
    left = _after_retention(kept_bases, records)
    chain = walb.build_chain(left)
    usable, reasons = walb.usable_base_backups(kept_bases, chain)
    assert usable == sorted(kept_bases, key=lambda b: b.stop_time), reasons
    assert chain is not None
    assert min(walb.parse_segment(r.name, SEG)[1] for r in left) == first_left
    assert chain.partial is not None  # the newest partial is the chain's end: never deleted
    assert walb.recovery_window(kept_bases, left).recoverable_until == T0 + timedelta(seconds=125)


def test_retention_with_no_kept_base_deletes_nothing_but_superseded_partials() -> None:
    stale = seg(4, commit=35, kind="partial")
    records = [seg(n, commit=10.0 * n) for n in range(2, 6)] + [stale]
    assert walb.select_expired_wal([], records) == [stale]


def test_retention_keeps_history_files() -> None:
    history = seg(2, commit=1).model_copy(
        update={"name": "00000002.history", "kind": "history", "segment_size": 0}
    )
    records = [seg(n, commit=10.0 * n) for n in range(2, 6)] + [history]
    expired = walb.select_expired_wal([base("B", 4, stop=45)], records)
    assert history not in expired
    assert sorted(walb.parse_segment(r.name, SEG)[1] for r in expired) == [2, 3]


WALDUMP_OUT = (
    "rmgr: Transaction len (rec/tot):     34/    34, tx:        725, lsn: 0/008020D0, "
    "prev 0/00802038, desc: COMMIT 2026-12-01 09:30:40.050790 UTC\n"
    "rmgr: Transaction len (rec/tot):     34/    34, tx:        726, lsn: 0/00802180, "
    "prev 0/00802100, desc: ABORT 2026-12-01 09:30:41 UTC\n"
)
WALDUMP_ERR = (
    "pg_waldump: error: error in WAL record at 0/8021A8: invalid record length at 0/8021D0: "
    "wanted 24, got 0\n"
)


def test_waldump_output_gives_commit_times_and_the_end_of_valid_wal() -> None:
    facts = parse_waldump(WALDUMP_OUT, WALDUMP_ERR, segment_end=None)
    assert facts.first_commit == datetime(2026, 12, 1, 9, 30, 40, 50790, tzinfo=UTC)
    assert facts.last_commit == datetime(2026, 12, 1, 9, 30, 41, tzinfo=UTC)
    assert facts.end_lsn == 0x8021D0
    assert parse_waldump("", "", segment_end=0x900000).end_lsn == 0x900000


LABEL = (
    "START WAL LOCATION: 0/700028 (file 000000010000000000000007)\n"
    "CHECKPOINT LOCATION: 0/700060\nBACKUP METHOD: streamed\nBACKUP FROM: primary\n"
    "START TIME: 2026-12-01 09:30:39 UTC\nLABEL: test\nSTART TIMELINE: 1\n"
)
MANIFEST = {"WAL-Ranges": [{"Timeline": 1, "Start-LSN": "0/700028", "End-LSN": "0/700100"}]}


def _tar(members: dict[str, bytes]) -> bytes:
    buffer = io.BytesIO()
    with tarfile.open(fileobj=buffer, mode="w", format=tarfile.USTAR_FORMAT) as tar:
        for name, data in members.items():
            info = tarfile.TarInfo(name)
            info.size = len(data)
            tar.addfile(info, io.BytesIO(data))
    return buffer.getvalue()


@pytest.mark.parametrize("chunk", [1, 511, 512, 4096, 1 << 20])
def test_the_tar_tap_reads_backup_label_and_manifest_whatever_the_chunking(chunk: int) -> None:
    data = _tar(
        {
            "backup_label": LABEL.encode(),
            "base/1/1259": b"x" * 9000,
            "global/pg_control": b"\0" * 8192,
            "backup_manifest": json.dumps(MANIFEST).encode(),
        }
    )
    tap = TarMemberTap()
    for start in range(0, len(data), chunk):
        tap(data[start : start + chunk])
    assert bytes(tap.members["backup_label"]).decode() == LABEL
    facts = parse_backup_facts(LABEL, bytes(tap.members["backup_manifest"]))
    assert facts == {
        "startLsn": "0/700028",
        "startWal": "000000010000000000000007",
        "stopLsn": "0/700100",
        "timeline": 1,
        "startTime": datetime(2026, 12, 1, 9, 30, 39, tzinfo=UTC),
    }


def test_a_base_backup_without_its_manifest_is_refused() -> None:
    with pytest.raises(IntegrityError, match="no readable backup_manifest"):
        parse_backup_facts(LABEL, b"")
