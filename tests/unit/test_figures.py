"""The end-of-run figures: lines and counters per section, in a stable order."""

from __future__ import annotations

from collections import defaultdict

import pytest

from lamassu_platform import figures


def test_sections_lines_and_counters(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(figures, "_LINES", defaultdict(list))
    monkeypatch.setattr(figures, "_COUNTS", defaultdict(lambda: defaultdict(int)))
    assert figures.text() == ""
    figures.record("fuzz", "500 cases; crashes 0")
    figures.count("leak scanner", "tests scanned")
    figures.count("leak scanner", "tests scanned")
    figures.count("leak scanner", "hits", 0)
    assert figures.text() == (
        "fuzz:\n  500 cases; crashes 0\nleak scanner:\n  hits 0; tests scanned 2\n"
    )
