"""Object keys and names: one place decides them, and they round-trip."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta, timezone

import pytest
from hypothesis import given
from hypothesis import strategies as st

from lamassu_backup.builders import layout
from lamassu_backup.components.postgres import plan as postgres_plan
from lamassu_backup.components.vault import plan as vault_plan


def test_set_time_round_trip() -> None:
    moment = datetime(2026, 11, 24, 10, 0, 5, tzinfo=UTC)
    text = layout.set_time(moment)
    assert text == "20261124T100005Z"
    assert layout.parse_set_time(text) == moment


def test_set_time_converts_to_utc_and_refuses_naive() -> None:
    madrid = timezone(timedelta(hours=1))
    assert layout.set_time(datetime(2026, 11, 24, 11, 0, tzinfo=madrid)) == "20261124T100000Z"
    with pytest.raises(ValueError, match="aware"):
        layout.set_time(datetime(2026, 11, 24, 11, 0))


@pytest.mark.parametrize(
    ("prefix", "expected"),
    [
        ("prod", "prod/lamassu/ca-policy/20261124T100000Z/"),
        ("", "lamassu/ca-policy/20261124T100000Z/"),
        ("/a/b/", "a/b/lamassu/ca-policy/20261124T100000Z/"),
    ],
)
def test_set_prefix(prefix: str, expected: str) -> None:
    assert layout.set_prefix(prefix, "lamassu", "ca-policy", "20261124T100000Z") == expected
    found = layout.parse_set_prefix(prefix, expected + "manifest.json")
    assert found == layout.SetPath("lamassu", "ca-policy", "20261124T100000Z")


@pytest.mark.parametrize(
    "key",
    [
        "prod/lamassu/ca/not-a-time/manifest.json",
        "other/lamassu/ca/20261124T100000Z/x",
        "prod/short",
    ],
)
def test_parse_set_prefix_rejects(key: str) -> None:
    assert layout.parse_set_prefix("prod", key) is None


@pytest.mark.parametrize(
    ("algorithm", "key"),
    [
        ("zstd", "postgres/ca.dump.zst.gpg"),
        ("lz4", "postgres/ca.dump.lz4.gpg"),
        ("gzip", "postgres/ca.dump.gpg"),
        ("none", "postgres/ca.dump.gpg"),
    ],
)
def test_postgres_keys(algorithm: str, key: str) -> None:
    keys = postgres_plan.artifact_keys("ca", algorithm)
    assert keys.key == key
    assert keys.sidecar == "postgres/ca.dump.sha256"
    assert keys.plain_name == "ca.dump"


def test_kv_keys_flatten_nested_mounts() -> None:
    assert vault_plan.kv_keys("pki/lamassu-kms").key == "vault/kv-pki_lamassu-kms.json.gpg"


def test_sidecar_is_sha256sum_format() -> None:
    assert layout.sidecar_text("ab" * 32, "ca.dump") == f"{'ab' * 32}  ca.dump\n"


@given(
    st.text(alphabet="abcdefghijklmnopqrstuvwxyz0123456789-", min_size=1, max_size=300),
    st.sampled_from(["postgres", "vault", "commit"]),
)
def test_bounded_names_are_dns_labels_and_stable(base: str, suffix: str) -> None:
    name = layout.bounded_name(base, suffix)
    assert len(name) <= 63
    assert name == layout.bounded_name(base, suffix)
    assert not name.startswith("-")
    assert not name.endswith("-")


def test_bounded_names_keep_distinct_inputs_distinct() -> None:
    long = "lamassu-" + "x" * 80
    a = layout.bounded_name(long + "-20261124t100000z", "postgres")
    b = layout.bounded_name(long + "-20261124t110000z", "postgres")
    assert a != b
    assert a.endswith("postgres")


def test_backup_name() -> None:
    assert layout.backup_name("lamassu", "20261124T100000Z") == "lamassu-20261124t100000z"


def test_a_location_is_parsed_once_and_round_trips() -> None:
    from lamassu_backup.builders.layout import Location

    loc = Location.parse("s3://bucket/prod/ns/p/20261124T100000Z-3f2a9c1b/")
    assert loc == Location("bucket", "prod/ns/p/20261124T100000Z-3f2a9c1b/")
    assert loc.url == "s3://bucket/prod/ns/p/20261124T100000Z-3f2a9c1b/"
    assert Location.parse("s3://bucket").prefix == ""
    for bad in ("bucket/prefix", "s3:///prefix", "https://bucket/x"):
        with pytest.raises(ValueError, match="s3://"):
            Location.parse(bad)
