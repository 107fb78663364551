"""How dumps, base backups and WAL are compressed: the external stage and its manifest label
(pure; shared by the dump step and WAL shipping)."""

from __future__ import annotations

from .spec import CompressionAlgorithm


def compressor_argv(algorithm: CompressionAlgorithm, level: int) -> list[str] | None:
    """The external compression stage, or None (pg_dump's own gzip, or none at all)."""
    if algorithm == CompressionAlgorithm.ZSTD:
        return ["zstd", "-q", f"-{max(level, 1)}", "-T1", "-c"]
    if algorithm == CompressionAlgorithm.LZ4:
        return ["lz4", "-q", f"-{max(level, 1)}", "-c"]
    return None


def compression_label(algorithm: CompressionAlgorithm, level: int) -> str:
    """How an artifact is compressed, for the manifest (and a person restoring by hand)."""
    if algorithm == CompressionAlgorithm.NONE:
        return "none"
    if algorithm == CompressionAlgorithm.GZIP:
        return f"pg_dump-gzip-{level}"
    return f"{algorithm.value}-{max(level, 1)}"
