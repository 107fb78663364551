"""Shared benchmark machinery: run a command tree, measure it, print a side-by-side table.

Each measured approach runs as one child process tree; ``os.wait4`` gives its CPU time, the peak
RSS of its largest process and the blocks it wrote to storage, so the figures are comparable
across a shell pipeline and the runner alike.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import time
from dataclasses import dataclass, field
from pathlib import Path

MIB = 1024 * 1024


@dataclass
class Measurement:
    """One approach's figures."""

    name: str
    wall: float
    cpu: float
    peak_rss_mib: float
    disk_written_mib: float
    object_mib: float = 0.0
    temp_peak_mib: float = 0.0
    ok: bool = True
    note: str = ""
    extra: dict[str, str] = field(default_factory=dict)


def measure(
    name: str, argv: list[str], *, env: dict[str, str] | None = None, cwd: str | None = None
) -> Measurement:
    """Run ``argv`` and collect wall time, CPU (user+sys of the tree), peak RSS, disk writes."""
    started = time.monotonic()
    proc = subprocess.Popen(argv, env=env, cwd=cwd, stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    _, status, usage = os.wait4(proc.pid, 0)
    wall = time.monotonic() - started
    out = proc.stdout.read().decode(errors="replace") if proc.stdout else ""
    err = proc.stderr.read().decode(errors="replace") if proc.stderr else ""
    code = os.waitstatus_to_exitcode(status)
    return Measurement(
        name=name,
        wall=wall,
        cpu=usage.ru_utime + usage.ru_stime,
        peak_rss_mib=usage.ru_maxrss / 1024,
        disk_written_mib=usage.ru_oublock * 512 / MIB,
        ok=code == 0,
        note="" if code == 0 else f"exit {code}: {(err or out).strip()[-300:]}",
    )


def dir_size(path: Path) -> int:
    """Bytes of all files under ``path``."""
    return sum(p.stat().st_size for p in path.rglob("*") if p.is_file())


def drop_dir(path: Path) -> None:
    """Remove a scratch directory."""
    shutil.rmtree(path, ignore_errors=True)


def table(rows: list[Measurement], baseline: str) -> str:
    """Figures side by side, with ratios against ``baseline`` (by wall time)."""
    base = next((r for r in rows if r.name == baseline), rows[0])
    head = f"{'approach':<44} {'wall s':>8} {'x base':>7} {'CPU s':>7} {'peak RSS MiB':>13} {'disk MiB':>9} {'object MiB':>11}"
    lines = [head, "-" * len(head)]
    for r in rows:
        ratio = r.wall / base.wall if base.wall else 0.0
        lines.append(
            f"{r.name:<44} {r.wall:>8.2f} {ratio:>7.2f} {r.cpu:>7.2f} {r.peak_rss_mib:>13.1f} "
            f"{max(r.disk_written_mib, r.temp_peak_mib):>9.1f} {r.object_mib:>11.1f}"
            + ("" if r.ok else f"   FAILED {r.note}")
        )
    return "\n".join(lines)
