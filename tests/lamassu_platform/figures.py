"""Figures the test run reports at its end (fuzz cases, leak scans), so CI output carries them.

Why not ``print``: pytest captures a passing test's output, and the figures are the point of
those tests (issue 16: what the operator survives, as numbers the run produces).
"""

from __future__ import annotations

from collections import defaultdict

_LINES: dict[str, list[str]] = defaultdict(list)
_COUNTS: dict[str, dict[str, int]] = defaultdict(lambda: defaultdict(int))


def record(section: str, line: str) -> None:
    """One line under ``section`` in the end-of-run summary."""
    _LINES[section].append(line)


def count(section: str, name: str, n: int = 1) -> None:
    """Add ``n`` to a counter shown under ``section`` (e.g. tests scanned, secrets searched)."""
    _COUNTS[section][name] += n


def text() -> str:
    """Every section, its lines then its counters; empty when nothing was recorded."""
    out: list[str] = []
    for section in sorted(set(_LINES) | set(_COUNTS)):
        out.append(f"{section}:")
        out += [f"  {line}" for line in _LINES.get(section, [])]
        counters = _COUNTS.get(section, {})
        if counters:
            out.append("  " + "; ".join(f"{k} {v}" for k, v in sorted(counters.items())))
    return "\n".join(out) + ("\n" if out else "")
