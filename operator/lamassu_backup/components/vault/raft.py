"""Offline verification of a Vault/OpenBao raft snapshot while it streams past.

A snapshot is a gzip'd tar of ``meta.json``, ``state.bin``, ``SHA256SUMS`` (sha256sum format over
the first two) and ``SHA256SUMS.sealed``. The verifier reads a copy of the stream in a thread and
checks every listed checksum, so a truncated or corrupt snapshot is refused before the upload is
committed (Vault #9650: zero-byte snapshots reported as success).
"""

from __future__ import annotations

import hashlib
import json
import os
import tarfile
import threading
import zlib
from typing import Any

from ...errors import IntegrityError

REQUIRED = ("meta.json", "state.bin", "SHA256SUMS")


class SnapshotVerifier:
    """Feed it chunks with :meth:`tap`; :meth:`result` raises unless the snapshot is whole."""

    def __init__(self) -> None:
        self._read_fd, self._write_fd = os.pipe()
        self._digests: dict[str, str] = {}
        self._sizes: dict[str, int] = {}
        self._sums = b""
        self._meta: dict[str, Any] = {}
        self._error: str | None = None
        # tarfile's stream mode does not check the gzip trailer, so a snapshot cut inside its
        # last block would pass; zlib checks CRC and length when the stream really ends.
        self._gzip = zlib.decompressobj(wbits=31)
        self._thread = threading.Thread(target=self._parse, daemon=True)
        self._thread.start()

    def _parse(self) -> None:
        stream = os.fdopen(self._read_fd, "rb")
        try:
            with tarfile.open(fileobj=stream, mode="r|gz") as tar:
                for member in tar:
                    if member.isfile():
                        self._read_member(tar, member)
        except (tarfile.TarError, OSError, EOFError, ValueError) as exc:
            self._error = f"not a complete raft snapshot ({type(exc).__name__}: {exc})"
        finally:
            # Drain whatever is left so the writer never blocks or breaks the pipe.
            try:
                while stream.read(1 << 20):
                    pass
            finally:
                stream.close()

    def _read_member(self, tar: tarfile.TarFile, member: tarfile.TarInfo) -> None:
        handle = tar.extractfile(member)
        assert handle is not None
        digest = hashlib.sha256()
        size = 0
        keep = member.name in ("SHA256SUMS", "meta.json")
        kept = bytearray()
        while block := handle.read(1 << 20):
            digest.update(block)
            size += len(block)
            if keep:
                kept += block
        self._digests[member.name] = digest.hexdigest()
        self._sizes[member.name] = size
        if member.name == "SHA256SUMS":
            self._sums = bytes(kept)
        elif member.name == "meta.json":
            self._meta = json.loads(kept)

    def tap(self, chunk: bytes) -> None:
        """One more chunk of the snapshot."""
        self._check_gzip(chunk)
        view = memoryview(chunk)
        while view:
            view = view[os.write(self._write_fd, view) :]

    def _check_gzip(self, chunk: bytes) -> None:
        pending = chunk
        try:
            while pending and not self._gzip.eof:
                self._gzip.decompress(pending, 1 << 20)  # output is discarded; only validity counts
                pending = self._gzip.unconsumed_tail
        except zlib.error as exc:
            self._error = self._error or f"not a valid gzip stream ({exc})"

    def result(self) -> dict[str, Any]:
        """Finish and return facts about the snapshot; raises IntegrityError if it is not whole."""
        os.close(self._write_fd)
        self._thread.join()
        if not self._error and not self._gzip.eof:
            self._error = "the gzip stream is truncated (no end marker)"
        if self._error:
            raise IntegrityError(f"Vault raft snapshot refused: {self._error}")
        missing = [name for name in REQUIRED if name not in self._digests]
        if missing:
            raise IntegrityError(f"Vault raft snapshot refused: missing {', '.join(missing)}")
        listed: dict[str, str] = {}
        for line in self._sums.decode(errors="replace").splitlines():
            digest, _, name = line.partition("  ")
            if name:
                listed[name.strip()] = digest.strip()
        if set(listed) != {"meta.json", "state.bin"}:
            raise IntegrityError(f"Vault raft snapshot refused: SHA256SUMS lists {sorted(listed)}")
        for name, digest in listed.items():
            if self._digests.get(name) != digest:
                raise IntegrityError(f"Vault raft snapshot refused: checksum mismatch for {name}")
        expected = self._meta.get("Size")
        if isinstance(expected, int) and expected != self._sizes["state.bin"]:
            raise IntegrityError(
                f"Vault raft snapshot refused: state.bin has {self._sizes['state.bin']} bytes, "
                f"meta.json says {expected}"
            )
        if self._sizes["state.bin"] == 0:
            raise IntegrityError("Vault raft snapshot refused: state.bin is empty")
        return {
            "index": self._meta.get("Index"),
            "term": self._meta.get("Term"),
            "stateBytes": self._sizes["state.bin"],
            "stateSha256": self._digests["state.bin"],
            "sealedSums": "SHA256SUMS.sealed" in self._digests,
        }
