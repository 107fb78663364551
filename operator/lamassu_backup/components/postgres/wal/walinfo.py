"""What a WAL file holds, read by PostgreSQL's own ``pg_waldump``: the commit times and the end.

The recoverable window must be what recovery can actually reach, so it comes from the commit
records in the shipped bytes, never from upload times; pg_waldump validates every record's CRC,
so a torn snapshot of a segment in progress ends where its valid WAL ends.
"""

from __future__ import annotations

import os
import re
import subprocess
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path

from ....builders.wal import parse_lsn
from ....errors import LamassuBackupError

_COMMIT_RE = re.compile(
    r"lsn: ([0-9A-F]+/[0-9A-F]+),.*desc: (?:COMMIT|ABORT)(?:_PREPARED)? "
    r"(?:\d+: )?(\d{4}-\d\d-\d\d \d\d:\d\d:\d\d(?:\.\d+)?) UTC"
)
_RECORD_RE = re.compile(r"len \(rec/tot\):\s*\d+/\s*(\d+),.*lsn: ([0-9A-F]+/[0-9A-F]+),")
_END_RE = re.compile(r"error in WAL record at [0-9A-F]+/[0-9A-F]+: .*? at ([0-9A-F]+/[0-9A-F]+)")


@dataclass(frozen=True)
class WalFacts:
    """Commit times and the end of valid WAL in one file."""

    first_commit: datetime | None
    last_commit: datetime | None
    end_lsn: int | None


def _parse_time(text: str) -> datetime:
    return datetime.strptime(text if "." in text else text + ".0", "%Y-%m-%d %H:%M:%S.%f").replace(
        tzinfo=UTC
    )


def parse_waldump(stdout: str, stderr: str, *, segment_end: int | None) -> WalFacts:
    """Read pg_waldump's output (``-r Transaction``); ``segment_end`` for a complete segment."""
    commits = [(_parse_time(m.group(2))) for m in _COMMIT_RE.finditer(stdout)]
    end: int | None = segment_end
    if end is None:
        match = _END_RE.search(stderr)
        if match:
            end = parse_lsn(match.group(1))
        else:
            ends = [parse_lsn(m.group(2)) + int(m.group(1)) for m in _RECORD_RE.finditer(stdout)]
            end = max(ends) if ends else None
    return WalFacts(
        first_commit=min(commits) if commits else None,
        last_commit=max(commits) if commits else None,
        end_lsn=end,
    )


def wal_facts(pg_waldump: str, directory: Path, name: str, *, segment_end: int | None) -> WalFacts:
    """pg_waldump over one segment file ``directory/name`` (transaction records only)."""
    env = {k: v for k, v in os.environ.items() if k in ("PATH", "LANG", "LC_ALL", "HOME")}
    env["TZ"] = "UTC"
    proc = subprocess.run(
        [pg_waldump, "-r", "Transaction", "-p", str(directory), name, name],
        capture_output=True,
        text=True,
        env=env,
        check=False,
        timeout=300,
    )
    # A segment in progress ends in an invalid record: exit 1 with the end in stderr is normal.
    if proc.returncode != 0 and "error in WAL record" not in proc.stderr:
        raise LamassuBackupError(
            f"pg_waldump could not read WAL file {name}: {proc.stderr.strip()[-300:]}",
            reason="WalUnreadable",
        )
    return parse_waldump(proc.stdout, proc.stderr, segment_end=segment_end)
