"""pg_restore as the sink of a verified stream: through a script when the client is newer than
the server, and its failures said for a person."""

from __future__ import annotations

import contextlib
import subprocess
import threading
from collections.abc import Callable

from ...errors import DatabaseError, LamassuBackupError
from ...runner.stream.fetch import ProcessSink, exit_text
from ...runner.stream.pipeline import CHUNK, StderrTail

NEWER_SETTINGS = {"transaction_timeout": 17}
"""Settings a newer pg_restore sets in its script header, with the server major that knows them."""

_HEADER_LIMIT = 64 * 1024


def drop_unknown_settings(header: bytes, server_major: int) -> bytes:
    """The script header without the ``SET`` lines an older server would refuse.

    pg_restore 17 starts every restore with ``SET transaction_timeout = 0;``; a PostgreSQL 16 or
    older server stops the restore on it ("unrecognized configuration parameter"). Only those
    whole lines go; nothing else in the script is touched.
    """
    unknown = {name for name, since in NEWER_SETTINGS.items() if server_major < since}
    if not unknown:
        return header
    lines = header.split(b"\n")
    kept = [
        ln
        for ln in lines
        if not any(ln.strip().startswith(f"SET {name} ".encode()) for name in unknown)
    ]
    return b"\n".join(kept)


class ScriptSink:
    """pg_restore writing SQL, into psql: for a pg_restore newer than the server.

    The runner image carries one PostgreSQL client (the newest, to dump every server); restoring
    with it straight into an older server fails on settings that server does not know. Here
    pg_restore renders the script, the header loses those ``SET`` lines, and psql runs the rest
    with ``ON_ERROR_STOP`` (the same stop-at-first-error as ``pg_restore --exit-on-error``).
    """

    def __init__(
        self,
        restore_argv: list[str],
        psql_argv: list[str],
        *,
        env: dict[str, str] | None,
        server_major: int,
        label: str,
        describe_error: Callable[[int, str], LamassuBackupError],
    ) -> None:
        self.label = label
        self._restore = ProcessSink(
            restore_argv, env=env, label=label, describe_error=describe_error
        )
        self._psql_argv = psql_argv
        self._env = env
        self._server_major = server_major
        self._describe = describe_error
        self._psql: subprocess.Popen[bytes] | None = None
        self._psql_err: StderrTail | None = None
        self._pump: threading.Thread | None = None
        self._pump_error: BaseException | None = None

    def start(self) -> None:
        self._psql = subprocess.Popen(
            self._psql_argv,
            stdin=subprocess.PIPE,
            stdout=subprocess.DEVNULL,
            stderr=subprocess.PIPE,
            env=self._env,
        )
        self._psql_err = StderrTail(self._psql.stderr)
        self._restore.start(stdout=subprocess.PIPE)
        self._pump = threading.Thread(target=self._copy, name=f"{self.label} script", daemon=True)
        self._pump.start()

    def _copy(self) -> None:
        assert self._psql is not None
        assert self._psql.stdin is not None
        source = self._restore.stdout()
        sink = self._psql.stdin
        try:
            header = b""
            while len(header) < _HEADER_LIMIT:
                chunk = source.read(CHUNK)
                if not chunk:
                    break
                header += chunk
            cut = header.rfind(b"\n") + 1 if len(header) >= _HEADER_LIMIT else len(header)
            sink.write(drop_unknown_settings(header[:cut], self._server_major))
            sink.write(header[cut:])
            while chunk := source.read(CHUNK):
                sink.write(chunk)
        except BaseException as exc:  # noqa: BLE001 - reported by finish(), never lost
            self._pump_error = exc
            # Nobody reads pg_restore's output any more: stop it, or it blocks on a full pipe
            # and the stream feeding it blocks too (the restore would hang, not fail).
            self._restore.kill()
        finally:
            with contextlib.suppress(OSError):
                sink.close()

    def write(self, data: bytes) -> None:
        self._restore.write(data)

    def finish(self) -> None:
        """Both processes ended well, or the most telling error: psql's (the SQL that failed),
        then the copy's, then pg_restore's."""
        restore_error: LamassuBackupError | None = None
        try:
            self._restore.finish()
        except LamassuBackupError as exc:
            restore_error = exc
        finally:
            if self._pump is not None:
                self._pump.join()
        assert self._psql is not None
        code = self._psql.wait()
        if code != 0:
            stderr = self._psql_err.text().decode(errors="replace") if self._psql_err else ""
            raise self._describe(code, f"psql: {stderr}")
        if self._pump_error is not None:
            error = self._pump_error
            raise self._describe(
                1, f"copying the script into psql: {type(error).__name__}: {error}"
            )
        if restore_error is not None:
            raise restore_error

    def kill(self) -> None:
        self._restore.kill()
        if self._psql is not None and self._psql.poll() is None:
            self._psql.kill()
            self._psql.wait()


def pg_restore_error(target: str) -> Callable[[int, str], LamassuBackupError]:
    """A pg_restore failure for a person, with the fix for the usual causes."""

    def describe(code: int, stderr: str) -> LamassuBackupError:
        lines = [ln.strip() for ln in stderr.splitlines() if ln.strip()]
        useful = [ln for ln in lines if "error" in ln.lower() or "fatal" in ln.lower()] or lines
        text = "; ".join(useful[-2:])[:500] or "no error output"
        hint = ""
        if "role" in text and "does not exist" in text:
            hint = (
                " (the dump's objects are owned by roles missing on this server: create them "
                "first, e.g. from pg_dumpall --roles-only of the source)"
            )
        elif "permission denied" in text or "must be owner" in text or "must be member" in text:
            hint = " (the restore credentials need superuser or membership in the owner roles)"
        return DatabaseError(f"pg_restore into {target} failed ({exit_text(code)}): {text}{hint}")

    return describe
