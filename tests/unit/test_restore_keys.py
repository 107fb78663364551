"""Key consistency: every kms key with a private key and every managed CA resolves in the store."""

from __future__ import annotations

import json

from lamassu_backup.runner.restore_keys import EVIDENCE_IDS, check, export_key_ids

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
