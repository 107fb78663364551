"""The PKI check no generic tool makes: do the restored database and the restored keys match?

Lamassu names every key by the SHA-256 of its public key; that id is ``kms.kms_keys.key_id`` and,
for a CA Lamassu created, the CA certificate's ``subject_key_id``. Each crypto engine keeps the
private key under that id: Vault KV at ``<mount>/<key id>`` (field ``key``), the filesystem engine
as a file named by the key id in its storage directory. A database restored without its keys, or
keys without the rows that reference them, is a broken PKI even when every pod reports healthy:
the CAs cannot sign. This module compares the two sides and names every CA, key id and engine
that does not resolve.

Lamassu v3.8.0 CA types (``certificates.type``): ``MANAGED`` and ``IMPORTED_WITH_KEY`` have a key
in the kms; ``IMPORTED_WITHOUT_KEY`` (``EXTERNAL`` before migration 20260520120000) has none, so it
is never expected in a store. A CA finds its key as the ca service does: a kms key whose id is the
CA's subject key id, else one whose aliases hold it, else one whose metadata binding
(``lamassu.io/kms/binded-resources``) names the CA's serial number (an imported CA whose SKI is
not the SHA-256 key id is linked only that way).

The pieces are separate on purpose (reading a store, resolving a CA's key, comparing): each
engine's store reader is in its component's restore module (the KV export and mounts in
``components.vault.restore``, a filesystem engine's directory in ``components.volumes.restore``,
the ca and kms tables in ``components.postgres.restore``); this module only compares.
"""

from __future__ import annotations

import json
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

EVIDENCE_IDS = 8
EVIDENCE_FAILURES = 3
"""Failures named in the evidence (each ~100 characters: the termination message is small)."""

KMS_BIND_KEY = "lamassu.io/kms/binded-resources"
KEYLESS_TYPES = frozenset({"IMPORTED_WITHOUT_KEY", "EXTERNAL"})
"""CA types with no private key in the kms (``EXTERNAL`` is the name before v3.8.0's rename)."""
ANY_ENGINE = "*"
"""A store's engine id meaning: every engine that has no store of its own."""
SHARED_KIND = "vault-kv"
"""The kind of the store that serves every engine without a store of its own (Vault KV)."""
TABLES = "ca and kms databases"
"""What the database side of the check is, as a skipped check names it."""


# -- what the database says ------------------------------------------------------------------


@dataclass(frozen=True)
class KmsKey:
    """One ``kms.kms_keys`` row, as far as key consistency needs it."""

    key_id: str
    engine_id: str
    has_private_key: bool = True
    aliases: tuple[str, ...] = ()
    bound_serials: tuple[str, ...] = ()
    """Serial numbers of the certificates the metadata binding names."""

    @classmethod
    def from_row(
        cls, key_id: str, engine_id: str, has_private_key: bool, aliases: Any, metadata: Any
    ) -> KmsKey:
        """From column values; ``aliases`` and ``metadata`` as JSON text or decoded."""
        return cls(
            key_id=key_id,
            engine_id=engine_id,
            has_private_key=has_private_key,
            aliases=tuple(str(a) for a in _json(aliases, []) if a),
            bound_serials=bound_serials(_json(metadata, {})),
        )


@dataclass(frozen=True)
class CaCert:
    """One CA certificate (``ca.certificates`` with ``is_ca``, and its ``ca_certificates`` id)."""

    serial: str
    subject_key_id: str
    type: str = "MANAGED"
    engine_id: str = ""
    ca_id: str = ""

    @property
    def expects_key(self) -> bool:
        """False for a CA imported without its key: it has nothing to restore."""
        return self.type.upper() not in KEYLESS_TYPES

    @property
    def name(self) -> str:
        """How a failure names the CA: its id and serial."""
        return f"{self.ca_id} (serial {self.serial})" if self.ca_id else f"serial {self.serial}"


def _json(value: Any, default: Any) -> Any:
    if value is None or value == "":
        return default
    if isinstance(value, str):
        try:
            return json.loads(value)
        except ValueError:
            return default
    return value


def bound_serials(metadata: Any) -> tuple[str, ...]:
    """Certificate serials a kms key's metadata binds it to (``resource_type: certificate``)."""
    if not isinstance(metadata, Mapping):
        return ()
    links = metadata.get(KMS_BIND_KEY) or []
    if not isinstance(links, list):
        return ()
    return tuple(
        str(link.get("resource_id"))
        for link in links
        if isinstance(link, Mapping)
        and link.get("resource_type") == "certificate"
        and link.get("resource_id")
    )


@dataclass
class KeyIndex:
    """kms keys by id, alias and bound serial: how the ca service finds a CA's key."""

    by_id: dict[str, KmsKey] = field(default_factory=dict)
    by_alias: dict[str, KmsKey] = field(default_factory=dict)
    by_serial: dict[str, KmsKey] = field(default_factory=dict)

    @classmethod
    def of(cls, keys: Iterable[KmsKey]) -> KeyIndex:
        index = cls()
        for key in keys:
            index.by_id[key.key_id] = key
            for alias in key.aliases:
                index.by_alias.setdefault(alias, key)
            for serial in key.bound_serials:
                index.by_serial.setdefault(serial, key)
        return index

    def key_of(self, ca: CaCert) -> KmsKey | None:
        """The CA's key: by subject key id, then alias, then the metadata binding."""
        ski = ca.subject_key_id
        if ski and ski in self.by_id:
            return self.by_id[ski]
        if ski and ski in self.by_alias:
            return self.by_alias[ski]
        return self.by_serial.get(ca.serial)


# -- what the key stores hold ----------------------------------------------------------------


@dataclass(frozen=True)
class KeyStore:
    """The key ids one engine's store holds, read from wherever it was restored."""

    engine_id: str
    """The kms engine id (``vault-1``, ``filesystem-1``) or :data:`ANY_ENGINE`."""
    kind: str
    """``vault-kv`` or ``filesystem`` (named in failures)."""
    key_ids: frozenset[str]
    source: str
    """Where it was read (a scratch mount, a restored volume, the export in the set)."""

    def describe(self) -> str:
        """The engine as a failure names it."""
        engine = "any engine" if self.engine_id == ANY_ENGINE else f"engine {self.engine_id}"
        return f"{engine} ({self.kind}, {self.source})"


@dataclass(frozen=True)
class KeyIds:
    """The key ids of the shared store (Vault KV) as one restore step meets them, and where they
    were read; ``deferred`` when they are known only once the component holding them is applied
    (a raft snapshot without a KV export in the set)."""

    ids: frozenset[str]
    source: str
    deferred: bool = False


KeyInventory = Callable[[], tuple[Sequence[Sequence[Any]], Sequence[Sequence[Any]]]]
"""Reads the database side: (kms rows, CA rows) as :func:`check_inventory` takes them."""


def shared_stores(
    ids: Iterable[str], source: str, engines: Sequence[str], claimed: Iterable[str]
) -> list[KeyStore]:
    """The shared store for ``engines`` (declared: ``key_store_engines``), or when none are
    declared for every engine no store of its own claims (older configs declare nothing)."""
    taken = set(claimed)
    held = frozenset(ids)
    return [
        KeyStore(e, SHARED_KIND, held, source) for e in (engines or [ANY_ENGINE]) if e not in taken
    ]


# -- the comparison --------------------------------------------------------------------------


@dataclass(frozen=True)
class KeyFailure:
    """One reference that does not resolve: which CA, which key id, which engine, and why."""

    ca: str
    key_id: str
    engine: str
    problem: str

    def __str__(self) -> str:
        who = f"CA {self.ca}" if self.ca else "kms key"
        return f"{who}: key {self.key_id or '(none)'} in {self.engine}: {self.problem}"

    def short(self) -> str:
        """For the evidence: CA, key id and engine id, cut short."""
        engine = self.engine.split(" (", 1)[0].removeprefix("engine ")
        return f"{self.ca[:40] or 'kms key'}|{self.key_id[:16]}|{engine[:24]}"


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
    failures: list[KeyFailure] = field(default_factory=list)
    """Every unresolved reference, naming the CA, the key id and the engine."""
    keyless_cas: int = 0
    """CAs imported without a key (not expected in any store)."""
    unchecked_keys: int = 0
    """kms keys of engines no store was given for (e.g. a PKCS#11 HSM checked elsewhere)."""

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
        if self.keyless_cas:
            out["keylessCas"] = self.keyless_cas
        if self.unchecked_keys:
            out["uncheckedKeys"] = self.unchecked_keys
        if self.missing_kms_keys:
            out["missingKmsKeys"] = len(self.missing_kms_keys)
            out["missingKmsKeyIds"] = [k[:16] for k in self.missing_kms_keys[:EVIDENCE_IDS]]
        if self.cas_without_key:
            out["casWithoutKey"] = len(self.cas_without_key)
            out["casWithoutKeyIds"] = [c[:40] for c in self.cas_without_key[:EVIDENCE_IDS]]
        if self.failures:
            # "missing" is what the operator's readers of this evidence look for (the first
            # few, CA|key id|engine; the counts above are complete).
            out["missing"] = [f.short() for f in self.failures[:EVIDENCE_FAILURES]]
        return out

    def message(self) -> str:
        """The failure for a person: which CAs, key ids and engines, and what it means."""
        parts = []
        if self.missing_kms_keys:
            ids = ", ".join(self.missing_kms_keys[:EVIDENCE_IDS])
            more = len(self.missing_kms_keys) - EVIDENCE_IDS
            parts.append(
                f"{len(self.missing_kms_keys)} kms key(s) with a private key are not in "
                f"{self.source}: {ids}{f' (+{more} more)' if more > 0 else ''}"
            )
        if self.cas_without_key:
            parts.append(
                f"{len(self.cas_without_key)} CA certificate(s) have no key in {self.source}"
            )
        if self.failures:
            named = "; ".join(str(f) for f in self.failures[:EVIDENCE_IDS])
            more = len(self.failures) - EVIDENCE_IDS
            parts.append(f"{named}{f' (+{more} more)' if more > 0 else ''}")
        return (
            "key consistency check failed: "
            + "; ".join(parts)
            + ". The database and the key store come from different points in time, or a key "
            "was lost: the affected CAs could not sign. Restore the key store from the same set "
            "(component vault or volumes), or a set whose keys match"
        )


def _store_for(stores: Mapping[str, KeyStore], engine_id: str) -> KeyStore | None:
    return stores.get(engine_id) or stores.get(ANY_ENGINE)


def _check_kms_keys(
    report: KeyReport,
    keys: Iterable[KmsKey],
    stores: Mapping[str, KeyStore],
    ca_names: Mapping[str, str],
) -> dict[str, int]:
    """Every kms key with a private key is in its engine's store; returns failure index by id."""
    failed: dict[str, int] = {}
    for key in keys:
        if not key.has_private_key:
            continue
        store = _store_for(stores, key.engine_id)
        if store is None:
            report.unchecked_keys += 1
            continue
        report.kms_keys += 1
        if key.key_id not in store.key_ids:
            report.missing_kms_keys.append(key.key_id)
            owner = next((ca_names[s] for s in key.bound_serials if s in ca_names), "")
            failed[key.key_id] = len(report.failures)
            report.failures.append(
                KeyFailure(owner, key.key_id, store.describe(), "private key not in the store")
            )
    return failed


def _check_ca(
    report: KeyReport,
    ca: CaCert,
    index: KeyIndex,
    stores: Mapping[str, KeyStore],
    failed: Mapping[str, int],
) -> None:
    """A CA that has a key resolves to a kms key, and that key is in its engine's store."""
    key = index.key_of(ca)
    if key is None:  # a database fact, whichever engine it names: the CA cannot sign
        report.cas += 1
        home = _store_for(stores, ca.engine_id)
        where = home.describe() if home else f"engine {ca.engine_id or '(none)'}"
        report.cas_without_key.append(f"{ca.serial}/{ca.subject_key_id or 'no subject key id'}")
        report.failures.append(
            KeyFailure(ca.name, ca.subject_key_id, where, "no kms key by SKI, alias or binding")
        )
        return
    store = _store_for(stores, key.engine_id)
    if store is None:
        return  # its engine's store is checked elsewhere (e.g. a PKCS#11 HSM)
    report.cas += 1
    where = store.describe()
    if key.key_id in store.key_ids:
        return
    report.cas_without_key.append(f"{ca.serial}/{ca.subject_key_id or key.key_id}")
    at = failed.get(key.key_id)
    if at is not None:  # the kms key's failure already names it: say whose key it is
        report.failures[at] = KeyFailure(ca.name, key.key_id, where, "CA key not in the store")
    else:
        report.failures.append(KeyFailure(ca.name, key.key_id, where, "CA key not in the store"))


def check_stores(
    keys: Iterable[KmsKey], cas: Iterable[CaCert], stores: Sequence[KeyStore]
) -> KeyReport:
    """Compare the database's key references with each engine's store.

    Every kms key with a private key must be in its engine's store; every CA that has a key
    (not ``IMPORTED_WITHOUT_KEY``) must resolve to a kms key, and that key must be in its
    engine's store. Keys of engines without a store are counted as unchecked, not failed.
    """
    by_engine = {s.engine_id: s for s in stores}
    all_keys = list(keys)
    ca_list = list(cas)
    report = KeyReport(
        source=", ".join(s.describe() for s in stores) or "no key store",
        store_keys=sum(len(s.key_ids) for s in stores),
        kms_keys=0,
        cas=0,
    )
    failed = _check_kms_keys(report, all_keys, by_engine, {c.serial: c.name for c in ca_list})
    index = KeyIndex.of(all_keys)
    for ca in ca_list:
        if ca.expects_key:
            _check_ca(report, ca, index, by_engine, failed)
        else:
            report.keyless_cas += 1
    report.missing_kms_keys.sort()
    report.cas_without_key.sort()
    return report


def check(
    kms_rows: Iterable[tuple[str, str]],
    ca_rows: Iterable[tuple[str, str]],
    store: set[str],
    *,
    source: str,
    engines: Iterable[str] = (),
) -> KeyReport:
    """One store for the given engines (all when none are given), from plain rows.

    ``kms_rows`` are (key id, engine id) with has_private_key; ``ca_rows`` (serial, subject key
    id) of CAs that have a key. Only keys of ``engines`` are expected in this store when given
    (other engines, e.g. a PKCS#11 HSM, keep theirs elsewhere); a CA is then checked when its key
    is one of them.
    """
    wanted = list(engines) or [ANY_ENGINE]
    ids = frozenset(store)
    stores = [KeyStore(e, SHARED_KIND, ids, source) for e in wanted]
    report = check_stores(
        [KmsKey(k, e) for k, e in kms_rows], [CaCert(s, ski) for s, ski in ca_rows], stores
    )
    report.source = source
    report.store_keys = len(store)
    return report


def check_inventory(
    kms_rows: Iterable[Sequence[Any]],
    ca_rows: Iterable[Sequence[Any]],
    stores: Sequence[KeyStore],
) -> KeyReport:
    """:func:`check_stores` from the rows of ``clients.postgres.key_inventory``.

    ``kms_rows``: (key id, engine id, has_private_key, aliases JSON, metadata JSON);
    ``ca_rows``: (serial, subject key id, type, engine id, CA id).
    """
    keys = [KmsKey.from_row(r[0], r[1], bool(r[2]), r[3], r[4]) for r in kms_rows]
    cas = [CaCert(r[0], r[1], r[2] or "MANAGED", r[3], r[4]) for r in ca_rows]
    return check_stores(keys, cas, stores)
