"""The restore data path: S3 object -> SHA-256 -> gpg --decrypt -> [zstd|lz4 -d] -> SHA-256 -> sink.

The mirror of :mod:`.pipeline`: nothing is downloaded to disk first, memory stays bounded, and the
stages overlap on separate cores. Both checksums are known only when the stream ends, so a sink
must never be a live target: the runner restores into scratch databases, spool files or memory,
and only a stream that ended with both checksums matching the manifest is used.

When any later stage fails (gpg, the decompressor, or the consumer: garbage from an altered
object can kill pg_restore before gpg reaches its integrity check), the rest of the object is
still read and hashed, not decrypted, so the error says whether the stored object itself was
altered (restore another set) or is intact (a wrong key, a missing role...): the fix differs.
"""

from __future__ import annotations

import contextlib
import errno
import hashlib
import os
import subprocess
import threading
import time
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from pathlib import Path
from typing import IO, Protocol

from ...clients.gpg import Keyring, gpg_error
from ...clients.s3 import S3Store
from ...errors import IntegrityError, LamassuBackupError
from ...models.runner import ArtifactRecord
from .pipeline import CHUNK, StderrTail, widen_pipe


def decompressor_argv(compression: str) -> list[str] | None:
    """The stage undoing an artifact's ``compression`` label, or None when nothing undoes it.

    ``pg_dump-gzip-N`` is pg_dump's own compression (pg_restore reads it); ``gzip`` marks a
    tar.gz whose checksum is of the tar.gz itself; ``none`` is stored plain.
    """
    if compression.startswith("zstd"):
        return ["zstd", "-d", "-q", "-c"]
    if compression.startswith("lz4"):
        return ["lz4", "-d", "-q", "-c"]
    if compression in ("none", "gzip") or compression.startswith("pg_dump-gzip"):
        return None
    raise IntegrityError(
        f"unknown compression {compression!r} in the manifest: this runner cannot restore it "
        "(use the runner version that wrote the set)"
    )


class Sink(Protocol):
    """Where verified-in-flight plain bytes go."""

    label: str

    def start(self) -> None:
        """Get ready (start a process, open a file)."""
        ...

    def write(self, data: bytes) -> None:
        """Take a chunk; raises BrokenPipeError when the consumer is gone."""
        ...

    def finish(self) -> None:
        """End of data: flush, wait, raise if the consumer failed."""
        ...

    def kill(self) -> None:
        """Abort (the stream failed)."""
        ...


class NullSink:
    """Verification only: the bytes are hashed and dropped."""

    label = "verification"

    def start(self) -> None:
        return None

    def write(self, data: bytes) -> None:
        return None

    def finish(self) -> None:
        return None

    def kill(self) -> None:
        return None


class BufferSink:
    """Small artifacts (KV exports, the config archive) into memory, with a hard limit."""

    def __init__(self, label: str, limit: int = 256 * 1024 * 1024) -> None:
        self.label = label
        self.limit = limit
        self.data = bytearray()

    def start(self) -> None:
        self.data.clear()

    def write(self, data: bytes) -> None:
        if len(self.data) + len(data) > self.limit:
            raise IntegrityError(f"{self.label} is larger than {self.limit} bytes")
        self.data += data

    def finish(self) -> None:
        return None

    def kill(self) -> None:
        self.data.clear()


class FileSink:
    """A spool file in the runner's scratch area (pg_restore -j needs a seekable file)."""

    def __init__(self, path: Path, label: str) -> None:
        self.path = path
        self.label = label
        self._fd = -1
        self.written = 0
        self._failed: OSError | None = None

    def start(self) -> None:
        self._fd = os.open(self.path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)

    def write(self, data: bytes) -> None:
        view = memoryview(data)
        try:
            while view:
                done = os.write(self._fd, view)
                self.written += done
                view = view[done:]
        except OSError as exc:
            self._failed = exc
            raise

    def _close(self) -> None:
        if self._fd >= 0:
            os.close(self._fd)
            self._fd = -1

    def finish(self) -> None:
        """Close; a full disk is named with its fix (the bare errno names neither)."""
        self._close()
        if self._failed is not None and self._failed.errno in (errno.ENOSPC, errno.EDQUOT):
            raise LamassuBackupError(
                f"{self.label}: the runner's scratch volume ({self.path.parent}) is full after "
                f"{self.written} bytes; a restore with spec.options.postgres.jobs above 1 spools "
                "each whole dump there first: set jobs to 1 (the dump streams into pg_restore, "
                "no spool) or raise the policy's spec.runner.scratch.sizeLimit above the biggest dump",
                reason="ScratchFull",
            )

    def kill(self) -> None:
        self._close()
        self.path.unlink(missing_ok=True)


class ProcessSink:
    """A consumer process reading stdin (pg_restore, tar)."""

    def __init__(
        self,
        argv: list[str],
        *,
        env: dict[str, str] | None,
        label: str,
        describe_error: Callable[[int, str], LamassuBackupError],
        cwd: str | None = None,
    ) -> None:
        self.label = label
        self._argv = argv
        self._env = env
        self._cwd = cwd
        self._describe = describe_error
        self.proc: subprocess.Popen[bytes] | None = None
        self._stderr: StderrTail | None = None
        self._fd = -1

    def start(self, stdout: int = subprocess.DEVNULL) -> None:
        self.proc = subprocess.Popen(
            self._argv,
            stdin=subprocess.PIPE,
            stdout=stdout,
            stderr=subprocess.PIPE,
            env=self._env,
            cwd=self._cwd,
        )
        assert self.proc.stdin is not None
        self._stderr = StderrTail(self.proc.stderr)
        self._fd = self.proc.stdin.fileno()
        widen_pipe(self._fd)

    def stdout(self) -> IO[bytes]:
        """The process's output, when it was started with ``stdout=PIPE``."""
        assert self.proc is not None
        assert self.proc.stdout is not None
        out: IO[bytes] = self.proc.stdout
        return out

    def write(self, data: bytes) -> None:
        view = memoryview(data)
        while view:
            view = view[os.write(self._fd, view) :]

    def finish(self) -> None:
        assert self.proc is not None
        if self.proc.stdin is not None:
            with contextlib.suppress(OSError):
                self.proc.stdin.close()
        code = self.proc.wait()
        if code != 0:
            stderr = self._stderr.text().decode(errors="replace") if self._stderr else ""
            raise self._describe(code, stderr)

    def kill(self) -> None:
        if self.proc is not None and self.proc.poll() is None:
            self.proc.kill()
            self.proc.wait()
        if self.proc is not None and self.proc.stdin is not None:
            with contextlib.suppress(OSError):
                self.proc.stdin.close()


class HeadTap:
    """Keeps the first bytes of the plain stream (a custom-format dump's table of contents)."""

    def __init__(self, limit: int = 4 * 1024 * 1024) -> None:
        self.limit = limit
        self.data = bytearray()

    def __call__(self, chunk: bytes) -> None:
        room = self.limit - len(self.data)
        if room > 0:
            self.data += chunk[:room]


@dataclass(frozen=True)
class FetchStats:
    """What went through the restore data path."""

    stored_bytes: int
    stored_sha256: str
    plain_bytes: int
    plain_sha256: str
    seconds: float


def exit_text(code: int) -> str:
    """'exit 3' or 'killed by signal 9'."""
    return f"killed by signal {-code}" if code < 0 else f"exit {code}"


class _Feeder:
    """Thread body: S3 object -> stored hash -> gpg stdin; keeps hashing if gpg goes away."""

    def __init__(self, chunks: Iterable[bytes], fd: int) -> None:
        self._chunks = chunks
        self._fd = fd
        self.hash = hashlib.sha256()
        self.bytes = 0
        self.error: BaseException | None = None
        self.complete = False
        self.drain = True
        """Keep reading (hashing only) after the downstream stopped, to diagnose the object."""
        self.stop = False

    def run(self) -> None:
        downstream = True
        try:
            for chunk in self._chunks:
                if self.stop:
                    return
                self.hash.update(chunk)
                self.bytes += len(chunk)
                if downstream:
                    try:
                        view = memoryview(chunk)
                        while view:
                            view = view[os.write(self._fd, view) :]
                    except OSError:  # EPIPE: gpg is gone; its exit code says why
                        downstream = False
                        self.close()
                if not downstream and not self.drain:
                    return
            self.complete = True
        except BaseException as exc:  # noqa: BLE001 - handed to the main thread
            self.error = exc
        finally:
            self.close()

    def close(self) -> None:
        """Close gpg's stdin (EOF for gpg)."""
        if self._fd >= 0:
            with contextlib.suppress(OSError):
                os.close(self._fd)
            self._fd = -1


class _Stages:
    """The processes and threads of one artifact's stream, and what each of them reported."""

    def __init__(
        self,
        store: S3Store,
        key: str,
        record: ArtifactRecord,
        keyring: Keyring,
        passphrase: str | None,
    ) -> None:
        self.url = store.url(key)
        self.record = record
        self.decompress = decompressor_argv(record.compression)
        self.gpg = keyring.decrypt_process(stdin=subprocess.PIPE, passphrase=passphrase)
        assert self.gpg.stdin is not None
        assert self.gpg.stdout is not None
        self.gpg_err = StderrTail(self.gpg.stderr)
        self.comp: subprocess.Popen[bytes] | None = None
        self.comp_err: StderrTail | None = None
        self.out = self.gpg.stdout
        if self.decompress:
            self.comp = subprocess.Popen(
                self.decompress,
                stdin=self.gpg.stdout,
                stdout=subprocess.PIPE,
                stderr=subprocess.PIPE,
            )
            self.gpg.stdout.close()  # the decompressor holds it now
            assert self.comp.stdout is not None
            self.comp_err = StderrTail(self.comp.stderr)
            self.out = self.comp.stdout
        in_fd = os.dup(self.gpg.stdin.fileno())
        self.gpg.stdin.close()
        widen_pipe(in_fd)
        widen_pipe(self.out.fileno())
        self.feeder = _Feeder(store.iter_object(key), in_fd)
        self.thread = threading.Thread(
            target=self.feeder.run, name=f"fetch-{record.name}", daemon=True
        )
        self.plain_hash = hashlib.sha256()
        self.plain_bytes = 0
        self.killed_upstream = False
        self.comp_code = 0
        self.gpg_code = 0

    def stop_upstream(self) -> None:
        """Kill gpg and the decompressor (the consumer is gone or we are aborting)."""
        self.killed_upstream = True
        for proc in (self.comp, self.gpg):
            if proc is not None and proc.poll() is None:
                proc.kill()

    def pump(self, sink: Sink, taps: list[Callable[[bytes], None]]) -> LamassuBackupError | None:
        """Move the plain stream into the sink; returns the sink's failure, if any."""
        sink_broken: BaseException | None = None
        self.thread.start()
        fd = self.out.fileno()
        while data := os.read(fd, CHUNK):
            self.plain_hash.update(data)
            self.plain_bytes += len(data)
            for tap in taps:
                tap(data)
            try:
                sink.write(data)
            except OSError as exc:  # BrokenPipeError included
                sink_broken = exc
                break
        if sink_broken is not None:
            # The consumer died. Its own error may not be the cause (garbage from an altered
            # object kills pg_restore before gpg sees the end): the feeder keeps reading and
            # hashing the stored bytes, so the diagnosis can tell.
            self.stop_upstream()
        self.comp_code = self.comp.wait() if self.comp is not None else 0
        self.gpg_code = self.gpg.wait()
        self.thread.join()
        try:
            sink.finish()
        except LamassuBackupError as exc:
            return exc
        if sink_broken is not None:
            return LamassuBackupError(
                f"{sink.label}: stopped taking data ({sink_broken})", reason="RestoreFailed"
            )
        return None

    def abort(self, sink: Sink) -> None:
        """Stop everything after an unexpected failure (or a signal)."""
        self.feeder.drain = False
        self.feeder.stop = True
        self.stop_upstream()
        for proc in (self.comp, self.gpg):
            if proc is not None:
                proc.wait()
        sink.kill()
        if self.thread.ident is not None:
            self.thread.join(timeout=10)
        else:
            self.feeder.close()

    def diagnose(self, sink_error: LamassuBackupError | None) -> LamassuBackupError | None:
        """The first failure in the order of diagnosis, or None when the stream is good."""
        record, feeder = self.record, self.feeder
        if feeder.error is not None:
            err = feeder.error
            if isinstance(err, LamassuBackupError):
                return LamassuBackupError(
                    f"{self.url}: reading the object failed: {err.message}", reason=err.reason
                )
            return LamassuBackupError(
                f"{self.url}: reading the object failed: {type(err).__name__}: {err}",
                reason="StorageError",
            )
        stored = feeder.hash.hexdigest()
        if feeder.complete and (feeder.bytes != record.size_bytes or stored != record.sha256):
            return IntegrityError(
                f"{self.url}: the stored object does not match the manifest "
                f"({feeder.bytes} bytes, SHA-256 {stored[:16]}…; the manifest records "
                f"{record.size_bytes} bytes, {record.sha256[:16]}…): it was altered or "
                "corrupted in the store. Nothing was restored from it; restore from another set"
            )
        if not self.killed_upstream:
            upstream = self._upstream_error()
            if upstream is not None:
                return upstream
        plain = self.plain_hash.hexdigest()
        if sink_error is None and (
            self.plain_bytes != record.plaintext_size_bytes or plain != record.plaintext_sha256
        ):
            return IntegrityError(
                f"{record.key}: the decrypted data does not match the manifest's plaintextSha256 "
                f"({self.plain_bytes} bytes, {plain[:16]}…; expected "
                f"{record.plaintext_size_bytes} bytes, {record.plaintext_sha256[:16]}…)"
            )
        return sink_error

    def _upstream_error(self) -> LamassuBackupError | None:
        gpg_text = self.gpg_err.text().decode(errors="replace")
        comp_failed = self.comp_code != 0
        broken_pipe = "broken pipe" in gpg_text.lower() or "write error" in gpg_text.lower()
        if self.gpg_code != 0 and not (comp_failed and broken_pipe):
            err = gpg_error(self.gpg, gpg_text.encode(), "decryption")
            intact = "the stored bytes match the manifest, so " if self.feeder.complete else ""
            return type(err)(
                f"{self.record.key}: {err.message}; {intact}check the decryption key "
                "(spec.decryptionKeySecret) and its passphrase"
            )
        if comp_failed:
            detail = self.comp_err.text().decode(errors="replace").strip() if self.comp_err else ""
            tool = self.decompress[0] if self.decompress else "decompressor"
            return IntegrityError(
                f"{self.record.key}: {tool} -d failed ({exit_text(self.comp_code)}): "
                f"{detail[-300:]}: the decrypted data is not a valid {tool} stream"
            )
        return None


def stream_artifact(
    store: S3Store,
    key: str,
    record: ArtifactRecord,
    *,
    keyring: Keyring,
    passphrase: str | None,
    sink: Sink,
    taps: Iterable[Callable[[bytes], None]] = (),
) -> FetchStats:
    """Stream one artifact into ``sink``, checking both checksums against ``record``.

    Raises (in this order of diagnosis): the store's read error; the stored bytes differ from
    the manifest; gpg failed; the decompressor failed; the plain bytes differ; the sink failed.
    Whatever is raised, every process is gone and the sink was told to abort.
    """
    started = time.monotonic()
    stages = _Stages(store, key, record, keyring, passphrase)
    try:
        sink.start()
        sink_error = stages.pump(sink, list(taps))
    except BaseException:
        stages.abort(sink)
        raise
    finally:
        stages.out.close()
    error = stages.diagnose(sink_error)
    if error is not None:
        sink.kill()
        raise error
    return FetchStats(
        stored_bytes=stages.feeder.bytes,
        stored_sha256=stages.feeder.hash.hexdigest(),
        plain_bytes=stages.plain_bytes,
        plain_sha256=stages.plain_hash.hexdigest(),
        seconds=time.monotonic() - started,
    )
