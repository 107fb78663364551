"""The restore data path's small parts (the stream itself runs against real services)."""

from __future__ import annotations

from pathlib import Path

import pytest

from lamassu_backup.components.postgres.sinks import pg_restore_error
from lamassu_backup.errors import DatabaseError, IntegrityError
from lamassu_backup.runner.stream.fetch import (
    BufferSink,
    FileSink,
    HeadTap,
    decompressor_argv,
    exit_text,
)


@pytest.mark.parametrize(
    ("label", "argv"),
    [
        ("zstd-1", ["zstd", "-d", "-q", "-c"]),
        ("lz4-3", ["lz4", "-d", "-q", "-c"]),
        ("none", None),
        ("gzip", None),
        ("pg_dump-gzip-6", None),
    ],
)
def test_decompressor_per_label(label: str, argv: list[str] | None) -> None:
    assert decompressor_argv(label) == argv


def test_unknown_compression_is_refused() -> None:
    with pytest.raises(IntegrityError, match="unknown compression 'brotli-5'"):
        decompressor_argv("brotli-5")


def test_head_tap_keeps_only_the_head() -> None:
    tap = HeadTap(limit=5)
    tap(b"abc")
    tap(b"defgh")
    assert bytes(tap.data) == b"abcde"


def test_buffer_sink_has_a_hard_limit() -> None:
    sink = BufferSink("kv", limit=4)
    sink.start()
    sink.write(b"abcd")
    with pytest.raises(IntegrityError, match="larger than 4 bytes"):
        sink.write(b"e")


def test_file_sink_removes_its_file_on_abort(tmp_path: Path) -> None:
    sink = FileSink(tmp_path / "spool", "spool")
    sink.start()
    sink.write(b"data")
    sink.kill()
    assert not (tmp_path / "spool").exists()


def test_pg_restore_errors_name_the_target_and_the_fix() -> None:
    describe = pg_restore_error("ca__restoring (from postgres/ca.dump.zst.gpg)")
    err = describe(
        1, 'pg_restore: error: could not execute query: ERROR:  role "lamassu" does not exist\n'
    )
    assert isinstance(err, DatabaseError)
    assert err.message.startswith(
        "pg_restore into ca__restoring (from postgres/ca.dump.zst.gpg) failed (exit 1)"
    )
    assert "create them first" in err.message
    assert "killed by signal 9" in describe(-9, "").message
    assert exit_text(3) == "exit 3"


def test_a_newer_pg_restore_s_settings_are_dropped_for_an_older_server() -> None:
    """pg_restore 17's script header sets transaction_timeout, which PostgreSQL 16 refuses."""
    from lamassu_backup.components.postgres.sinks import drop_unknown_settings

    header = (
        b"SET statement_timeout = 0;\nSET lock_timeout = 0;\n"
        b"SET idle_in_transaction_session_timeout = 0;\nSET transaction_timeout = 0;\n"
        b"SET client_encoding = 'UTF8';\nCREATE TABLE t (transaction_timeout int);\n"
    )
    for older in (15, 16):
        out = drop_unknown_settings(header, older)
        assert b"SET transaction_timeout" not in out
        assert out.count(b"\n") == header.count(b"\n") - 1
        assert b"CREATE TABLE t (transaction_timeout int);" in out
        assert b"SET lock_timeout = 0;" in out
    assert drop_unknown_settings(header, 17) == header
