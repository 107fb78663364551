"""The leak scanner finds what it must and only that (its search is pure)."""

from __future__ import annotations

from lamassu_platform.leak_scanner import Needle, find, needles_of

ARMOR = (
    "-----BEGIN PGP PRIVATE KEY BLOCK-----\n"
    "Comment: test\n\n"
    "lQHYBGdLf0kBBADHmZ2Vv4d0oYc8r3s8GQd3bzOeb2Fq2cS9x8w7ZkR0o4m9o7Jq\n"
    "AQ0ENz3k1Ykq7s2sd9a8f7g6h5j4k3l2m1n0b9v8c7x6z5a4s3d2f1g0h9j8k7l6\n"
    "=abcd\n"
    "-----END PGP PRIVATE KEY BLOCK-----\n"
)


def test_a_password_is_searched_for_and_found_wherever_it_appears() -> None:
    needles = needles_of("ns/db", "password", b"s3cr3t-passw0rd")
    assert needles == [Needle("s3cr3t-passw0rd", "Secret ns/db key password")]
    hits = find(needles, {"Event a": "login failed for s3cr3t-passw0rd", "status b": "ok"})
    assert hits == ["Secret ns/db key password in Event a"]


def test_public_values_and_short_values_are_not_searched_for() -> None:
    assert needles_of("ns/db", "username", b"lamassu-backup-user") == []
    assert needles_of("ns/s3", "accessKeyId", b"AKIAEXAMPLEEXAMPLE") == []
    assert needles_of("ns/ca", "tls.crt", b"-----BEGIN CERTIFICATE-----\nMIIB" + b"A" * 60) == []
    assert needles_of("ns/gpg", "recipients.asc", ARMOR.encode()) == []
    assert needles_of("ns/x", "pin", b"1234") == []


def test_a_private_key_is_found_by_its_body_lines_not_its_armor() -> None:
    needles = needles_of("ns/gpg", "private.asc", ARMOR.encode())
    assert len(needles) == 2
    assert all("BEGIN" not in n.text and "Comment" not in n.text for n in needles)
    leaked = "the runner printed: " + ARMOR.splitlines()[4]
    assert find(needles, {"log runner.log": leaked}) == [
        "Secret ns/gpg key private.asc in log runner.log"
    ]
    assert find(needles, {"log runner.log": "-----BEGIN PGP PRIVATE KEY BLOCK-----"}) == []
