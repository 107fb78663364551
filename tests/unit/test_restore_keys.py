"""Key consistency: every kms key with a private key and every managed CA resolves in the store."""

from __future__ import annotations

import json
from pathlib import Path

from lamassu_backup.components.vault.restore import export_key_ids
from lamassu_backup.components.volumes.restore import filesystem_key_ids
from lamassu_backup.runner.restore.keys import (
    EVIDENCE_IDS,
    CaCert,
    KeyStore,
    KmsKey,
    check,
    check_inventory,
    check_stores,
)

K1, K2, K3, K4 = ("1" * 64, "2" * 64, "3" * 64, "4" * 64)


def test_everything_resolves() -> None:
    report = check(
        [(K1, "vault-1"), (K2, "vault-1")],
        [("serial-a", K1), ("serial-b", K2)],
        {K1, K2, K3},
        source="scratch mount",
    )
    assert report.ok
    assert report.evidence() == {
        "ok": True,
        "source": "scratch mount",
        "storeKeys": 3,
        "kmsKeys": 2,
        "cas": 2,
    }


def test_missing_keys_are_named_by_id() -> None:
    report = check(
        [(K1, "vault-1"), (K2, "vault-1")],
        [("serial-a", K1), ("serial-b", K2), ("serial-c", "")],
        {K1},
        source="the set's KV export",
    )
    assert not report.ok
    assert report.missing_kms_keys == [K2]
    assert report.cas_without_key == [f"serial-b/{K2}", "serial-c/no subject key id"]
    message = report.message()
    assert K2 in message
    assert "1 kms key(s) with a private key are not in the set's KV export" in message
    assert "2 CA certificate(s) have no key" in message
    ev = report.evidence()
    assert ev["missingKmsKeyIds"] == [K2[:16]]
    assert ev["casWithoutKey"] == 2


def test_keys_of_other_engines_are_not_expected_in_this_store() -> None:
    """An HSM-backed CA keeps its key in the HSM: only the listed engines live in Vault."""
    report = check(
        [(K1, "vault-1"), (K4, "pkcs11-1")],
        [("serial-a", K1), ("serial-hsm", K4)],
        {K1},
        source="KV",
        engines=["vault-1"],
    )
    assert report.ok
    assert (report.kms_keys, report.cas) == (1, 1)


def test_evidence_stays_small_however_many_keys_are_missing() -> None:
    ids = [f"{i:064x}" for i in range(500)]
    report = check(
        [(k, "e") for k in ids], [(f"s{i}", k) for i, k in enumerate(ids)], set(), source="x"
    )
    ev = report.evidence()
    assert ev["missingKmsKeys"] == 500
    assert len(ev["missingKmsKeyIds"]) == EVIDENCE_IDS
    assert len(json.dumps(ev)) < 1000
    assert "(+492 more)" in report.message()


def test_export_key_ids_uses_the_last_path_segment_and_needs_a_key_field() -> None:
    export = {
        "secrets": {
            K1: {"data": {"key": "cGVt"}},
            f"nested/{K2}": {"data": {"key": "cGVt"}},
            K3: {"data": {"other": "x"}},
            K4: {"data": {"key": ""}},
        }
    }
    assert export_key_ids(export) == {K1, K2}


# -- Lamassu v3.8.0 data: CA types, the metadata binding, one store per engine ----------------

FS, VAULT = "filesystem-1", "vault-1"


def stores(fs: set[str], vault: set[str]) -> list[KeyStore]:
    """The two engines of a standard install, each with its own store."""
    return [
        KeyStore(FS, "filesystem", frozenset(fs), "volume kms-0"),
        KeyStore(VAULT, "vault-kv", frozenset(vault), "mount lamassu-pki"),
    ]


def test_imported_without_key_cas_are_not_expected_in_any_store() -> None:
    """IMPORTED_WITHOUT_KEY (and its old name EXTERNAL) has no key: never a failure."""
    report = check_stores(
        [KmsKey(K1, FS)],
        [
            CaCert("s-managed", K1, "MANAGED", FS, "ca-1"),
            CaCert("s-ext", K2, "IMPORTED_WITHOUT_KEY", "", "ca-ext"),
            CaCert("s-old", K3, "EXTERNAL", "", "ca-old"),
        ],
        stores({K1}, set()),
    )
    assert report.ok, report.message()
    assert (report.cas, report.keyless_cas) == (1, 2)
    assert report.evidence()["keylessCas"] == 2


def test_a_managed_ca_whose_key_is_gone_is_a_failure_naming_ca_key_and_engine() -> None:
    """The CA's key file is missing from the filesystem engine's volume."""
    report = check_stores(
        [KmsKey(K1, FS, bound_serials=("s-a",)), KmsKey(K2, VAULT)],
        [CaCert("s-a", K1, "MANAGED", FS, "ca-a"), CaCert("s-b", K2, "MANAGED", VAULT, "ca-b")],
        stores(set(), {K2}),
    )
    assert not report.ok
    assert report.missing_kms_keys == [K1]
    assert report.cas_without_key == [f"s-a/{K1}"]
    [failure] = report.failures
    assert (failure.ca, failure.key_id) == ("ca-a (serial s-a)", K1)
    assert failure.engine.startswith(f"engine {FS} (filesystem")
    message = report.message()
    assert "CA ca-a (serial s-a)" in message
    assert K1 in message
    assert f"engine {FS}" in message
    assert report.evidence()["missing"] == [f"ca-a (serial s-a)|{K1[:16]}|{FS}"]


def test_each_engine_has_its_own_store() -> None:
    """A key present in the wrong engine's store does not count."""
    report = check_stores(
        [KmsKey(K1, VAULT)], [CaCert("s-a", K1, "MANAGED", VAULT, "ca-a")], stores({K1}, set())
    )
    assert not report.ok
    assert report.failures[0].engine.startswith(f"engine {VAULT} (vault-kv")


def test_an_imported_ca_is_linked_to_its_key_by_the_kms_binding() -> None:
    """SKI (SHA-1 from an outside CA) is not the key id: the binding names the CA's serial."""
    meta = json.dumps(
        {
            "lamassu.io/kms/binded-resources": [
                {"resource_type": "certificate", "resource_id": "s-i"}
            ]
        }
    )
    rows = [(K1, FS, True, "[]", meta)]
    cas = [("s-i", "ab" * 20, "IMPORTED_WITH_KEY", FS, "ca-i")]
    assert check_inventory(rows, cas, stores({K1}, set())).ok
    report = check_inventory(rows, cas, stores(set(), set()))
    assert not report.ok
    assert "CA ca-i (serial s-i)" in report.message()
    # Without the binding the CA has no key at all, and that is named too.
    unbound = check_inventory([(K1, FS, True, "[]", "{}")], cas, stores({K1}, set()))
    assert unbound.cas_without_key == [f"s-i/{'ab' * 20}"]
    assert "no kms key by SKI, alias or binding" in unbound.message()


def test_an_alias_links_a_ca_to_its_key() -> None:
    """The ca service falls back to ``aliases @> [id]``; so does the check."""
    report = check_inventory(
        [(K1, FS, True, json.dumps([K2]), "{}")],
        [("s-a", K2, "MANAGED", FS, "ca-a")],
        stores({K1}, set()),
    )
    assert report.ok, report.message()


def test_keys_without_a_private_key_and_engines_without_a_store_are_not_failures() -> None:
    """A public-key-only kms row has nothing to restore; an HSM engine is checked elsewhere."""
    report = check_inventory(
        [(K1, FS, False, "[]", "{}"), (K4, "pkcs11-1", True, "[]", "{}")],
        [("s-hsm", K4, "MANAGED", "pkcs11-1", "ca-hsm")],
        stores(set(), set()),
    )
    assert report.ok, report.message()
    assert (report.kms_keys, report.cas, report.unchecked_keys) == (0, 0, 1)


def test_filesystem_key_ids_reads_one_file_per_key(tmp_path: Path) -> None:
    """Files named by key id count; hidden files, directories and empty files do not."""
    (tmp_path / K1).write_text("-----BEGIN PRIVATE KEY-----\n")
    (tmp_path / K2).write_text("")
    (tmp_path / ".lost+found").mkdir()
    (tmp_path / f".{K3}.tmp").write_text("x")
    (tmp_path / "sub").mkdir()
    assert filesystem_key_ids(tmp_path) == {K1}
    assert filesystem_key_ids(tmp_path / "absent") == set()
