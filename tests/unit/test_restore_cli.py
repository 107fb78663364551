"""``lamassu-backup runner restore``: configuration from a file or the environment."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from lamassu_backup import cli


def test_restore_is_a_runner_command() -> None:
    parser = cli.build_parser()
    args = parser.parse_args(["runner", "restore", "--config", "x.json", "--step", "plan"])
    assert args.func is cli._cmd_runner_restore
    assert args.step == "plan"


def test_restore_without_configuration_says_how(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("LAMASSU_RESTORE_CONFIG", raising=False)
    with pytest.raises(SystemExit, match=r"--config FILE or \$LAMASSU_RESTORE_CONFIG"):
        cli.main(["runner", "restore"])


def test_finalize_without_a_suffix_fails_cleanly(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    """Exit 1 and a JSON result naming the missing setting, before any server is contacted."""
    config = {
        "namespace": "lamassu",
        "restore": "r1",
        "step": "finalize",
        "source": {"bucket": "b", "endpoint": "http://127.0.0.1:9"},
        "setPrefix": "p/",
        "decryptionKeyFile": str(tmp_path / "missing.asc"),
    }
    path = tmp_path / "restore.json"
    path.write_text(json.dumps(config))
    monkeypatch.setenv("LAMASSU_TERMINATION_LOG", str(tmp_path / "term"))
    assert cli.main(["runner", "restore", "--config", str(path)]) == 1
    result = json.loads((tmp_path / "term").read_text())
    assert result["ok"] is False
    assert result["action"] == "finalize"
    assert result["reason"] == "InvalidConfiguration"
    assert "needs swapSuffix" in result["error"]
    assert json.loads(capsys.readouterr().out.strip().splitlines()[-1]) == result
