"""The streaming data path: source -> SHA-256 -> [compressor] -> gpg -> SHA-256 -> S3 multipart.

Nothing touches local disk and memory is bounded (pipe buffers, one S3 part being filled and a
few in flight), whatever the size of the data. The compressor and gpg are separate processes
connected pipe to pipe, so on two cores the dump, compression, encryption and upload overlap.
Any failure anywhere kills the stages and aborts the upload: no partial object becomes visible.
"""

from __future__ import annotations

import contextlib
import fcntl
import hashlib
import os
import subprocess
import threading
import time
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass
from typing import IO, Protocol

from ...clients.gpg import Keyring, gpg_error
from ...clients.s3 import MultipartUpload
from ...errors import IntegrityError, LamassuBackupError

CHUNK = 1 << 20
_PIPE_SIZE = 1 << 20
_STDERR_LIMIT = 16 * 1024


def widen_pipe(fd: int) -> None:
    """Raise a pipe's capacity to 1 MiB: fewer wake-ups per GiB moved between the stages."""
    with contextlib.suppress(OSError, AttributeError):
        fcntl.fcntl(fd, fcntl.F_SETPIPE_SZ, _PIPE_SIZE)


class StderrTail:
    """Collects the tail of a process's stderr in a thread, so it can never block the process."""

    def __init__(self, stream: IO[bytes] | None) -> None:
        self._data = bytearray()
        self._thread: threading.Thread | None = None
        if stream is not None:
            self._thread = threading.Thread(target=self._drain, args=(stream,), daemon=True)
            self._thread.start()

    def _drain(self, stream: IO[bytes]) -> None:
        for line in iter(lambda: stream.read(4096), b""):
            self._data += line
            if len(self._data) > _STDERR_LIMIT:
                del self._data[: len(self._data) - _STDERR_LIMIT]

    def text(self) -> bytes:
        """What was collected (waits briefly for the stream to close)."""
        if self._thread is not None:
            self._thread.join(timeout=5)
        return bytes(self._data)


class RunInterruptedError(LamassuBackupError):
    """SIGTERM (the Job deleted or past its deadline): the run stops, cleans up and reports."""

    reason = "Interrupted"


class Cancel:
    """Stops every running pipeline at once, from any thread or from a signal handler.

    Why: a SIGTERM handler runs in the main thread only, while postgres dumps stream in worker
    threads. Killing every registered stage (pg_dump, the compressor, gpg) makes each pipeline
    fail at once, abort its upload and return, so nothing goes on streaming after the Job was
    stopped; a pipeline that registers after the cancel is stopped as it registers.
    """

    def __init__(self) -> None:
        # Re-entrant: the signal handler may run while the main thread holds it.
        self._lock = threading.RLock()
        self._stops: dict[int, Callable[[], None]] = {}
        self._next = 0
        self._cancelled = False

    def cancelled(self) -> bool:
        """Whether :meth:`cancel` was called."""
        return self._cancelled

    def check(self) -> None:
        """Raise :class:`RunInterruptedError` once cancelled (called before each new stream)."""
        if self._cancelled:
            raise RunInterruptedError(
                "interrupted by SIGTERM (the Job was deleted or passed its deadline)"
            )

    def register(self, stop: Callable[[], None]) -> int:
        """Call ``stop`` on cancel (at once if already cancelled); a token for unregister."""
        with self._lock:
            token = self._next
            self._next += 1
            if not self._cancelled:
                self._stops[token] = stop
                return token
        stop()
        return token

    def unregister(self, token: int) -> None:
        """The stage ended on its own."""
        with self._lock:
            self._stops.pop(token, None)

    def cancel(self) -> None:
        """Stop every registered stage (idempotent)."""
        with self._lock:
            self._cancelled = True
            stops = list(self._stops.values())
            self._stops.clear()
        for stop in stops:
            with contextlib.suppress(Exception):
                stop()


class Source(Protocol):
    """Where the plain bytes come from."""

    label: str

    def chunks(self) -> Iterator[bytes]:
        """Yield the data."""
        ...

    def finish(self) -> None:
        """Raise if the source failed (after chunks() is exhausted)."""
        ...

    def kill(self) -> None:
        """Stop the source early (on a failure elsewhere)."""
        ...


class ProcessSource:
    """A command's stdout (pg_dump)."""

    def __init__(
        self,
        argv: list[str],
        *,
        env: dict[str, str] | None,
        label: str,
        describe_error: Callable[[int, str], str],
    ) -> None:
        self.label = label
        self._argv = argv
        self._env = env
        self._describe = describe_error
        self.proc: subprocess.Popen[bytes] | None = None
        self._stderr: StderrTail | None = None
        self._killed = False

    def chunks(self) -> Iterator[bytes]:
        self.proc = subprocess.Popen(
            self._argv, stdout=subprocess.PIPE, stderr=subprocess.PIPE, env=self._env
        )
        if self._killed:  # stopped (a SIGTERM) while the feeder thread was starting it
            self.proc.kill()
        assert self.proc.stdout is not None
        self._stderr = StderrTail(self.proc.stderr)
        fd = self.proc.stdout.fileno()
        widen_pipe(fd)
        while data := os.read(fd, CHUNK):
            yield data

    def finish(self) -> None:
        assert self.proc is not None
        code = self.proc.wait()
        if code != 0:
            stderr = self._stderr.text().decode(errors="replace") if self._stderr else ""
            raise LamassuBackupError(self._describe(code, stderr), reason="SourceFailed")

    def kill(self) -> None:
        self._killed = True
        if self.proc is not None and self.proc.poll() is None:
            self.proc.kill()
            self.proc.wait()


class IterSource:
    """Any iterable of byte chunks (an HTTP stream, an in-memory document)."""

    def __init__(self, iterable: Iterable[bytes], *, label: str) -> None:
        self.label = label
        self._iterable = iterable

    def chunks(self) -> Iterator[bytes]:
        yield from self._iterable

    def finish(self) -> None:
        return None

    def kill(self) -> None:
        close = getattr(self._iterable, "close", None)
        if callable(close):
            with contextlib.suppress(Exception):
                close()


class WriterSource:
    """A producer that writes to a file object (tarfile), run in a thread behind a pipe."""

    def __init__(self, produce: Callable[[IO[bytes]], None], *, label: str) -> None:
        self.label = label
        self._produce = produce
        self._error: BaseException | None = None
        self._thread: threading.Thread | None = None
        self._read_fd = -1

    def _run(self, write_fd: int) -> None:
        try:
            with os.fdopen(write_fd, "wb", buffering=CHUNK) as out:
                self._produce(out)
        except BaseException as exc:  # noqa: BLE001 - re-raised in finish()
            self._error = exc

    def chunks(self) -> Iterator[bytes]:
        self._read_fd, write_fd = os.pipe()
        widen_pipe(self._read_fd)
        self._thread = threading.Thread(target=self._run, args=(write_fd,), daemon=True)
        self._thread.start()
        try:
            while data := os.read(self._read_fd, CHUNK):
                yield data
        finally:
            os.close(self._read_fd)

    def finish(self) -> None:
        if self._thread is not None:
            self._thread.join()
        if self._error is not None:
            if isinstance(self._error, LamassuBackupError):
                raise self._error
            raise LamassuBackupError(f"{self.label}: {self._error}", reason="SourceFailed")

    def kill(self) -> None:
        return None


@dataclass(frozen=True)
class StreamStats:
    """What went through the pipeline."""

    plain_bytes: int
    plain_sha256: str
    stored_bytes: int
    stored_sha256: str
    seconds: float


def _write_all(fd: int, data: bytes) -> None:
    view = memoryview(data)
    while view:
        written = os.write(fd, view)
        view = view[written:]


class _Stages:
    """The processes of one pipeline run and the state shared between its two threads."""

    def __init__(
        self, keyring: Keyring, recipients: list[str], compressor: list[str] | None
    ) -> None:
        self.compressor = compressor
        self.gpg = keyring.encrypt_process(recipients, stdin=subprocess.PIPE)
        assert self.gpg.stdin is not None
        assert self.gpg.stdout is not None
        self.gpg_err = StderrTail(self.gpg.stderr)
        self.comp: subprocess.Popen[bytes] | None = None
        self.comp_err: StderrTail | None = None
        if compressor:
            self.comp = subprocess.Popen(
                compressor, stdin=subprocess.PIPE, stdout=self.gpg.stdin, stderr=subprocess.PIPE
            )
            self.comp_err = StderrTail(self.comp.stderr)
            self.gpg.stdin.close()  # the compressor holds gpg's stdin now; EOF flows when it exits
            assert self.comp.stdin is not None
            self.sink: IO[bytes] = self.comp.stdin
        else:
            self.sink = self.gpg.stdin
        widen_pipe(self.sink.fileno())
        widen_pipe(self.gpg.stdout.fileno())
        self.plain_hash = hashlib.sha256()
        self.plain_bytes = 0
        self.feed_error: BaseException | None = None

    def feed(self, source: Source, taps: list[Callable[[bytes], None]]) -> None:
        """Thread body: source -> plain hash (and taps) -> first stage."""
        try:
            for chunk in source.chunks():
                self.plain_hash.update(chunk)
                self.plain_bytes += len(chunk)
                for tap in taps:
                    tap(chunk)
                _write_all(self.sink.fileno(), chunk)
            source.finish()
        except BaseException as exc:  # noqa: BLE001 - handed to the main thread, which re-raises it
            self.feed_error = exc
            source.kill()
        finally:
            with contextlib.suppress(OSError):
                self.sink.close()

    def check(self, label: str) -> None:
        """Raise the first failure of any stage, in data-flow order."""
        comp_code = self.comp.wait() if self.comp is not None else 0
        gpg_code = self.gpg.wait()
        # A broken pipe only says a later stage died: report that stage's own error instead.
        if self.feed_error is not None and not isinstance(self.feed_error, BrokenPipeError):
            raise self.feed_error
        if comp_code != 0:
            detail = self.comp_err.text().decode(errors="replace").strip() if self.comp_err else ""
            name = self.compressor[0] if self.compressor else "compressor"
            raise LamassuBackupError(
                f"{name} failed (exit {comp_code}): {detail[-300:]}", reason="CompressionFailed"
            )
        if gpg_code != 0:
            raise gpg_error(self.gpg, self.gpg_err.text(), "encryption")
        if self.feed_error is not None:
            raise self.feed_error
        if self.plain_bytes == 0:
            raise IntegrityError(f"{label} produced no data: refusing to store an empty artifact")

    def kill(self) -> None:
        """Stop every stage."""
        for proc in (self.comp, self.gpg):
            if proc is not None and proc.poll() is None:
                proc.kill()
                proc.wait()


def encrypt_to_store(
    source: Source,
    *,
    keyring: Keyring,
    recipients: list[str],
    upload: MultipartUpload,
    compressor: list[str] | None = None,
    taps: Iterable[Callable[[bytes], None]] = (),
    cancel: Cancel | None = None,
) -> StreamStats:
    """Stream ``source`` through hashing, optional compression and gpg into ``upload``.

    ``taps`` see every plain chunk (e.g. the raft snapshot verifier). The upload is completed
    here only if every stage succeeded; otherwise it is aborted and the first error is raised.
    ``cancel`` stops the stages from elsewhere (the backup run's SIGTERM handler); the upload is
    then aborted and :class:`RunInterruptedError` raised.
    """
    started = time.monotonic()
    stored_hash = hashlib.sha256()
    stored_bytes = 0
    if cancel is not None:
        try:
            cancel.check()
        except RunInterruptedError:
            upload.abort()
            raise
    stages = _Stages(keyring, recipients, compressor)
    tokens = (
        [cancel.register(source.kill), cancel.register(stages.kill)] if cancel is not None else []
    )
    feeder = threading.Thread(
        target=stages.feed, args=(source, list(taps)), name=f"feed-{source.label}", daemon=True
    )
    feeder.start()
    try:
        assert stages.gpg.stdout is not None
        out_fd = stages.gpg.stdout.fileno()
        while data := os.read(out_fd, CHUNK):
            stored_hash.update(data)
            stored_bytes += len(data)
            upload.write(data)
        feeder.join()
        if cancel is not None:
            cancel.check()  # a killed stage's own error would only hide why it was killed
        stages.check(source.label)
        upload.complete()
    except BaseException:
        source.kill()
        stages.kill()
        feeder.join(timeout=10)
        upload.abort()
        raise
    finally:
        if cancel is not None:
            for token in tokens:
                cancel.unregister(token)
    return StreamStats(
        plain_bytes=stages.plain_bytes,
        plain_sha256=stages.plain_hash.hexdigest(),
        stored_bytes=stored_bytes,
        stored_sha256=stored_hash.hexdigest(),
        seconds=time.monotonic() - started,
    )
