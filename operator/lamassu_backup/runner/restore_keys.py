"""The PKI check no generic tool makes: do the restored database and the restored keys match?

Lamassu names every key by the SHA-256 of its public key; that id is ``kms.kms_keys.key_id`` and
the CA certificate's ``subject_key_id``, and the Vault engine keeps the private key at
``<mount>/<key id>`` (field ``key``). A database restored without its keys, or keys without the
rows that reference them, is a broken PKI even when every pod reports healthy: the CAs cannot
sign. This module compares the two sides and names every id that does not resolve.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from typing import Any

EVIDENCE_IDS = 8


def export_key_ids(export: Mapping[str, Any]) -> set[str]:
    """Key ids in a KV export document: secrets with a ``key`` field, by the last path segment."""
    secrets: Mapping[str, Any] = export.get("secrets") or {}
    return {
        path.rstrip("/").rsplit("/", 1)[-1]
        for path, entry in secrets.items()
        if isinstance(entry, Mapping) and (entry.get("data") or {}).get("key")
    }


@dataclass
class KeyReport:
    """What resolved and what did not."""

    source: str
    """Where the key store was read (a scratch mount, a live mount, the export in the set)."""
    store_keys: int
    kms_keys: int
    cas: int
    missing_kms_keys: list[str] = field(default_factory=list)
    """kms_keys rows with has_private_key whose key is not in the store."""
    cas_without_key: list[str] = field(default_factory=list)
    """CA certificates (serial/subject key id) whose key is not in the store."""

    @property
    def ok(self) -> bool:
        """True when every reference resolves."""
        return not self.missing_kms_keys and not self.cas_without_key

    def evidence(self) -> dict[str, Any]:
        """Compact form for the termination message (the first ids of each list, and counts)."""
        out: dict[str, Any] = {
            "ok": self.ok,
            "source": self.source,
            "storeKeys": self.store_keys,
            "kmsKeys": self.kms_keys,
            "cas": self.cas,
        }
        if self.missing_kms_keys:
            out["missingKmsKeys"] = len(self.missing_kms_keys)
            out["missingKmsKeyIds"] = [k[:16] for k in self.missing_kms_keys[:EVIDENCE_IDS]]
        if self.cas_without_key:
            out["casWithoutKey"] = len(self.cas_without_key)
            out["casWithoutKeyIds"] = [c[:40] for c in self.cas_without_key[:EVIDENCE_IDS]]
        return out

    def message(self) -> str:
        """The failure for a person: which ids, and what it means."""
        parts = []
        if self.missing_kms_keys:
            ids = ", ".join(self.missing_kms_keys[:EVIDENCE_IDS])
            more = len(self.missing_kms_keys) - EVIDENCE_IDS
            parts.append(
                f"{len(self.missing_kms_keys)} kms key(s) with a private key are not in "
                f"{self.source}: {ids}{f' (+{more} more)' if more > 0 else ''}"
            )
        if self.cas_without_key:
            ids = ", ".join(self.cas_without_key[:EVIDENCE_IDS])
            more = len(self.cas_without_key) - EVIDENCE_IDS
            parts.append(
                f"{len(self.cas_without_key)} CA certificate(s) have no key in {self.source}: "
                f"{ids}{f' (+{more} more)' if more > 0 else ''}"
            )
        return (
            "key consistency check failed: "
            + "; ".join(parts)
            + ". The database and the key store come from different points in time, or a key "
            "was lost: the affected CAs could not sign. Restore the key store from the same set "
            "(component vault), or a set whose keys match"
        )


def check(
    kms_rows: Iterable[tuple[str, str]],
    ca_rows: Iterable[tuple[str, str]],
    store: set[str],
    *,
    source: str,
    engines: Iterable[str] = (),
) -> KeyReport:
    """Compare the database's key references with the key ids in the store.

    ``kms_rows`` are (key id, engine id) with has_private_key; ``ca_rows`` (serial, subject key
    id). Only keys of ``engines`` are expected in this store when given (other engines, e.g. a
    PKCS#11 HSM, keep theirs elsewhere); a CA is then checked when its key is one of them.
    """
    wanted = set(engines)
    rows = list(kms_rows)
    kms = [(k, e) for k, e in rows if not wanted or e in wanted]
    kms_ids = {k for k, _ in kms}
    other_engine = {k for k, e in rows if wanted and e not in wanted}
    report = KeyReport(source=source, store_keys=len(store), kms_keys=len(kms), cas=0)
    report.missing_kms_keys = sorted(k for k in kms_ids if k not in store)
    for serial, ski in ca_rows:
        if ski in other_engine:
            continue
        report.cas += 1
        if not ski or ski not in store:
            report.cas_without_key.append(f"{serial}/{ski or 'no subject key id'}")
    report.cas_without_key.sort()
    return report
