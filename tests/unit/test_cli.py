"""The command line: only real subcommands, and `crds` output equals the generator's."""

from __future__ import annotations

from pathlib import Path

import pytest
import yaml

from lamassu_backup import cli
from lamassu_backup.builders import crd


def test_crds_prints_all(capsys: pytest.CaptureFixture[str]) -> None:
    assert cli.main(["crds"]) == 0
    docs = [d for d in yaml.safe_load_all(capsys.readouterr().out) if d]
    assert [d["spec"]["names"]["kind"] for d in docs] == [
        "LamassuBackupPolicy",
        "LamassuBackup",
        "LamassuRestore",
    ]


def test_crds_writes_files_and_removes_stale_ones(tmp_path: Path) -> None:
    stale = tmp_path / "backup.lamassu.io_oldkinds.yaml"
    stale.write_text("old")
    keep = tmp_path / "unrelated.yaml"
    keep.write_text("mine")
    assert cli.main(["crds", "--out", str(tmp_path)]) == 0
    written = {p.name: p.read_text() for p in tmp_path.glob("backup.lamassu.io_*.yaml")}
    assert written == crd.render_all()
    assert keep.read_text() == "mine"


def test_unknown_command_exits_2() -> None:
    with pytest.raises(SystemExit) as info:
        cli.main(["frobnicate"])
    assert info.value.code == 2
