"""The PKI check no generic tool makes: do the restored database and the restored keys match?

Lamassu names every key by the SHA-256 of its public key; that id is ``kms.kms_keys.key_id`` and,
for a CA Lamassu created, the CA certificate's ``subject_key_id``. Each crypto engine keeps the
private key under that id: Vault KV at ``<mount>/<key id>`` (field ``key``: base64 of the PEM),
the filesystem engine as a PEM file named by the key id in its storage directory, PKCS#11 as a
token object labelled with the key id (SoftHSM: a token directory), AWS KMS as a key with the
alias ``alias/<key id>``. A database restored without its keys, or keys without the rows that
reference them, is a broken PKI even when every pod reports healthy: the CAs cannot sign. This
module compares the two sides and names every CA, key id and engine that does not resolve.

Where a store can give the private key (filesystem, Vault KV), a CA's key must also be the CA's:
its public key is derived and compared with the CA certificate's (:mod:`.key_material`), so a
key file or KV value from another key pair fails by name too. A store that can tell only that
it is there, not which keys it holds (a PKCS#11 token it cannot list), counts its keys as
present only, and the evidence says so. A key a store holds but cannot use (an AWS KMS key
pending deletion or disabled) fails with the reason.

Lamassu v3.8.0 CA types (``certificates.type``): ``MANAGED`` and ``IMPORTED_WITH_KEY`` have a key
in the kms; ``IMPORTED_WITHOUT_KEY`` (``EXTERNAL`` before migration 20260520120000) has none, so it
is never expected in a store. A CA finds its key as the ca service does: a kms key whose id is the
CA's subject key id, else one whose aliases hold it, else one whose metadata binding
(``lamassu.io/kms/binded-resources``) names the CA's serial number (an imported CA whose SKI is
not the SHA-256 key id is linked only that way).

The pieces are separate on purpose (reading a store, resolving a CA's key, comparing): each
engine's store reader is in its component's restore module (the KV export and mounts in
``components.vault.restore``, a filesystem engine's directory and a SoftHSM token directory in
``components.volumes.restore`` and ``components.volumes.softhsm``, the AWS KMS metadata in
``components.aws_kms.restore``, the ca and kms tables in ``components.postgres.restore``); this
module only compares.
"""

from __future__ import annotations

import json
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

from . import key_material

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
KINDS = ("vault-kv", "filesystem", "pkcs11", "aws-kms")
"""The kinds of key store (named in failures)."""
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
    certificate: str = field(default="", repr=False, compare=False)
    """The certificate as ``ca.certificates.certificate`` holds it (base64 of the PEM); empty:
    not read, so its key is not matched against it."""

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


KeyReader = Callable[[str], "bytes | None"]
"""A store's private key by key id, as PEM (None: it has none under that id). Its value is used
to match the key with its CA certificate and dropped: it never reaches a report or a log."""


@dataclass(frozen=True)
class KeyStore:
    """The key ids one engine's store holds, read from wherever it was restored."""

    engine_id: str
    """The kms engine id (``vault-1``, ``filesystem-1``) or :data:`ANY_ENGINE`."""
    kind: str
    """One of :data:`KINDS` (named in failures)."""
    key_ids: frozenset[str]
    source: str
    """Where it was read (a scratch mount, a restored volume, the export in the set)."""
    listed: bool = True
    """False: the store is there but cannot say which keys it holds (a PKCS#11 token whose
    objects cannot be read without its PIN): its keys count as present only, not as failed."""
    unusable: Mapping[str, str] = field(default_factory=dict, compare=False)
    """Key ids the store holds but cannot use, and why (an AWS KMS key pending deletion)."""
    read_key: KeyReader | None = field(default=None, compare=False, repr=False)
    """The private key PEM by key id, where the store holds it readably (filesystem, Vault KV):
    a CA's key is then matched with the CA certificate."""
    note: str = ""
    """What could and could not be checked in it, for the evidence (short)."""

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
    read_key: KeyReader | None = field(default=None, compare=False, repr=False)
    """The private key PEM by key id (the KV value decoded), for matching with the CA."""


KeyInventory = Callable[[], tuple[Sequence[Sequence[Any]], Sequence[Sequence[Any]]]]
"""Reads the database side: (kms rows, CA rows) as :func:`check_inventory` takes them."""


def shared_stores(
    ids: Iterable[str],
    source: str,
    engines: Sequence[str],
    claimed: Iterable[str],
    read_key: KeyReader | None = None,
) -> list[KeyStore]:
    """The shared store for ``engines`` (declared: ``key_store_engines``), or when none are
    declared for every engine no store of its own claims (older configs declare nothing)."""
    taken = set(claimed)
    held = frozenset(ids)
    return [
        KeyStore(e, SHARED_KIND, held, source, read_key=read_key)
        for e in (engines or [ANY_ENGINE])
        if e not in taken
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
    unusable_keys: list[str] = field(default_factory=list)
    """kms keys their store holds but cannot use (an AWS KMS key pending deletion, disabled)."""
    mismatched_cas: list[str] = field(default_factory=list)
    """CAs (serial/key id) whose stored private key is not the CA certificate's key pair, or
    cannot be read as a private key."""
    failures: list[KeyFailure] = field(default_factory=list)
    """Every unresolved reference, naming the CA, the key id and the engine."""
    keyless_cas: int = 0
    """CAs imported without a key (not expected in any store)."""
    unchecked_keys: int = 0
    """kms keys of engines no store was given for (e.g. a PKCS#11 HSM checked elsewhere)."""
    present_only: int = 0
    """kms keys of stores that are there but cannot list their keys (a PKCS#11 token that
    cannot be read without its PIN): not proven key by key."""
    matched_cas: int = 0
    """CAs whose stored private key was proven to match the CA certificate's public key."""
    notes: list[str] = field(default_factory=list)
    """What each store could and could not check (its :attr:`KeyStore.note`)."""

    @property
    def ok(self) -> bool:
        """True when every reference resolves."""
        return not (
            self.missing_kms_keys
            or self.cas_without_key
            or self.unusable_keys
            or self.mismatched_cas
        )

    def evidence(self) -> dict[str, Any]:
        """Compact form for the termination message (the first ids of each list, and counts)."""
        out: dict[str, Any] = {
            "ok": self.ok,
            "source": self.source,
            "storeKeys": self.store_keys,
            "kmsKeys": self.kms_keys,
            "cas": self.cas,
        }
        if self.matched_cas:
            out["casKeyMatched"] = self.matched_cas
        if self.keyless_cas:
            out["keylessCas"] = self.keyless_cas
        if self.unchecked_keys:
            out["uncheckedKeys"] = self.unchecked_keys
        if self.present_only:
            out["presentOnlyKeys"] = self.present_only
        if self.notes:
            out["stores"] = [n[:120] for n in self.notes[:EVIDENCE_FAILURES]]
        if self.missing_kms_keys:
            out["missingKmsKeys"] = len(self.missing_kms_keys)
            out["missingKmsKeyIds"] = [k[:16] for k in self.missing_kms_keys[:EVIDENCE_IDS]]
        if self.cas_without_key:
            out["casWithoutKey"] = len(self.cas_without_key)
            out["casWithoutKeyIds"] = [c[:40] for c in self.cas_without_key[:EVIDENCE_IDS]]
        if self.unusable_keys:
            out["unusableKeys"] = len(self.unusable_keys)
        if self.mismatched_cas:
            out["casKeyMismatch"] = len(self.mismatched_cas)
            out["casKeyMismatchIds"] = [c[:40] for c in self.mismatched_cas[:EVIDENCE_IDS]]
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
        if self.unusable_keys:
            parts.append(f"{len(self.unusable_keys)} kms key(s) are in a state that cannot sign")
        if self.mismatched_cas:
            parts.append(
                f"{len(self.mismatched_cas)} CA(s) have a stored key that is not their "
                "certificate's key pair"
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


PublicKeyOf = Callable[[bytes], "bytes | None"]
"""A private key PEM's public key (DER SubjectPublicKeyInfo), None when it is not one."""


def _check_kms_keys(
    report: KeyReport,
    keys: Iterable[KmsKey],
    stores: Mapping[str, KeyStore],
    ca_names: Mapping[str, str],
) -> dict[str, int]:
    """Every kms key with a private key is in its engine's store, usable; returns failure index
    by id."""
    failed: dict[str, int] = {}
    for key in keys:
        if not key.has_private_key:
            continue
        store = _store_for(stores, key.engine_id)
        if store is None:
            report.unchecked_keys += 1
            continue
        if not store.listed:
            report.present_only += 1
            continue
        report.kms_keys += 1
        if key.key_id not in store.key_ids:
            report.missing_kms_keys.append(key.key_id)
            problem = "private key not in the store"
        elif key.key_id in store.unusable:
            report.unusable_keys.append(key.key_id)
            problem = store.unusable[key.key_id]
        else:
            continue
        owner = next((ca_names[s] for s in key.bound_serials if s in ca_names), "")
        failed[key.key_id] = len(report.failures)
        report.failures.append(KeyFailure(owner, key.key_id, store.describe(), problem))
    return failed


def _mismatch(
    ca: CaCert, key: KmsKey, store: KeyStore, public_key_of: PublicKeyOf | None
) -> str | None:
    """Why the CA's stored private key is not its certificate's key pair (None: it is, or it
    cannot be told here: no certificate, no readable store, no way to derive public keys)."""
    if public_key_of is None or store.read_key is None or not ca.certificate:
        return None
    cert_spki = key_material.certificate_spki(ca.certificate)
    if cert_spki is None:
        return None
    stored = store.read_key(key.key_id)
    if stored is None:
        return None
    pem = key_material.private_key_pem(stored)
    spki = public_key_of(pem) if pem is not None else None
    del stored, pem
    if spki is None:
        return "stored private key cannot be read as a private key"
    if spki != cert_spki:
        return "private key does not match the CA certificate's public key"
    return ""


def _check_ca(
    report: KeyReport,
    ca: CaCert,
    index: KeyIndex,
    stores: Mapping[str, KeyStore],
    failed: Mapping[str, int],
    *,
    public_key_of: PublicKeyOf | None,
) -> None:
    """A CA that has a key resolves to a kms key, that key is in its engine's store and usable,
    and where the store gives the private key, it is the CA certificate's key pair."""
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
    if store is None or not store.listed:
        return  # its engine's store is checked elsewhere (or only for presence)
    report.cas += 1
    where = store.describe()
    if key.key_id not in store.key_ids:
        report.cas_without_key.append(f"{ca.serial}/{ca.subject_key_id or key.key_id}")
        problem = "CA key not in the store"
    elif key.key_id in store.unusable:
        problem = store.unusable[key.key_id]
    else:
        mismatch = _mismatch(ca, key, store, public_key_of)
        if mismatch == "":
            report.matched_cas += 1
        if not mismatch:
            return
        report.mismatched_cas.append(f"{ca.serial}/{key.key_id}")
        report.failures.append(KeyFailure(ca.name, key.key_id, where, mismatch))
        return
    at = failed.get(key.key_id)
    if at is not None:  # the kms key's failure already names it: say whose key it is
        report.failures[at] = KeyFailure(ca.name, key.key_id, where, problem)
    else:
        report.failures.append(KeyFailure(ca.name, key.key_id, where, problem))


def check_stores(
    keys: Iterable[KmsKey],
    cas: Iterable[CaCert],
    stores: Sequence[KeyStore],
    public_key_of: PublicKeyOf | None = None,
) -> KeyReport:
    """Compare the database's key references with each engine's store.

    Every kms key with a private key must be in its engine's store, usable; every CA that has a
    key (not ``IMPORTED_WITHOUT_KEY``) must resolve to a kms key, that key must be in its
    engine's store and, where the store gives the private key and ``public_key_of`` derives its
    public key (:func:`.key_material.private_key_spki`), match the CA certificate's public key.
    Keys of engines without a store are counted as unchecked, those of stores that cannot list
    them as present only; neither fails.
    """
    by_engine = {s.engine_id: s for s in stores}
    all_keys = list(keys)
    ca_list = list(cas)
    report = KeyReport(
        source=", ".join(s.describe() for s in stores) or "no key store",
        store_keys=sum(len(s.key_ids) for s in stores),
        kms_keys=0,
        cas=0,
        notes=[f"{s.engine_id}: {s.note}" for s in stores if s.note],
    )
    failed = _check_kms_keys(report, all_keys, by_engine, {c.serial: c.name for c in ca_list})
    index = KeyIndex.of(all_keys)
    for ca in ca_list:
        if ca.expects_key:
            _check_ca(report, ca, index, by_engine, failed, public_key_of=public_key_of)
        else:
            report.keyless_cas += 1
    report.missing_kms_keys.sort()
    report.cas_without_key.sort()
    report.unusable_keys.sort()
    report.mismatched_cas.sort()
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
    public_key_of: PublicKeyOf | None = None,
) -> KeyReport:
    """:func:`check_stores` from the rows of ``clients.postgres.key_inventory``.

    ``kms_rows``: (key id, engine id, has_private_key, aliases JSON, metadata JSON);
    ``ca_rows``: (serial, subject key id, type, engine id, CA id[, certificate]).
    """
    keys = [KmsKey.from_row(r[0], r[1], bool(r[2]), r[3], r[4]) for r in kms_rows]
    cas = [
        CaCert(r[0], r[1], r[2] or "MANAGED", r[3], r[4], r[5] if len(r) > 5 else "")
        for r in ca_rows
    ]
    return check_stores(keys, cas, stores, public_key_of)
