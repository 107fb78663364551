"""GnuPG key pairs and homes for the tests, made with the real ``gpg`` binary.

Why: backups are encrypted to OpenPGP recipients and signed, as in the runbook
(``gpg --encrypt --recipient backup@...``), and a restore decrypts them with ``gpg --decrypt``.
The tests need real keys for both sides and a "wrong" key to prove that nobody else can decrypt.

Layout under ``base_dir``::

    keygen/       GNUPGHOME where all three pairs were generated (holds every secret key)
    operator/     GNUPGHOME of the person restoring by hand: the decryption secret key, the
                  signing public key (to verify signatures); both ultimately trusted
    wrong/        GNUPGHOME holding only the unrelated "wrong" secret key
    recipients.asc        armoured public encryption key (what the backup encrypts to)
    signing-public.asc    armoured public signing key (what a restore verifies with)
    decryption-key.asc    armoured SECRET encryption key (the restore side imports it)
    signing.asc           armoured SECRET signing key (the backup side signs with it)
    wrong-public.asc / wrong-secret.asc

Keys are ed25519 (sign) / cv25519 (encrypt) without passphrase: fast to make, fine for tests.
gpg starts a gpg-agent per home; :meth:`GpgKeys.cleanup` kills them (``gpgconf --kill all``).
"""

from __future__ import annotations

import os
import shutil
import subprocess
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from types import TracebackType
from typing import Self

GPG = shutil.which("gpg") or "/usr/bin/gpg"
GPGCONF = shutil.which("gpgconf") or "/usr/bin/gpgconf"

ENCRYPTION_UID = "backup@lamassu.test"
SIGNING_UID = "signing@lamassu.test"
WRONG_UID = "wrong@lamassu.test"


def run_gpg(
    home: Path | str,
    args: Sequence[str],
    *,
    input: bytes | None = None,
    check: bool = True,
    timeout: float = 120,
) -> subprocess.CompletedProcess[bytes]:
    """Run ``gpg --batch`` with ``--homedir home`` (no tty, no pinentry, no keyserver)."""
    cmd = [
        GPG,
        "--homedir",
        str(home),
        "--batch",
        "--yes",
        "--no-tty",
        "--pinentry-mode",
        "loopback",
        *args,
    ]
    env = dict(os.environ, GNUPGHOME=str(home), LC_ALL="C")
    proc = subprocess.run(
        cmd, input=input, capture_output=True, timeout=timeout, env=env, check=False
    )
    if check and proc.returncode != 0:
        raise RuntimeError(
            f"gpg {' '.join(args)} failed (exit {proc.returncode}): "
            f"{proc.stderr.decode(errors='replace').strip()}"
        )
    return proc


def kill_agents(home: Path | str) -> None:
    """Stop the gpg-agent (and dirmngr, keyboxd) that gpg started for ``home``."""
    if Path(home).is_dir():
        subprocess.run(
            [GPGCONF, "--homedir", str(home), "--kill", "all"],
            capture_output=True,
            timeout=30,
            check=False,
        )


def new_home(path: Path | str) -> Path:
    """An empty GNUPGHOME (mode 0700, or gpg warns about unsafe permissions)."""
    home = Path(path)
    home.mkdir(parents=True, exist_ok=True)
    os.chmod(home, 0o700)
    return home


def import_keys(home: Path | str, *armoured: Path | str, trust: bool = True) -> None:
    """Import armoured keys into ``home``; with ``trust``, mark them ultimately trusted so
    ``--encrypt -r`` and ``--verify`` work without ``--trust-model always``."""
    for path in armoured:
        run_gpg(home, ["--import", str(path)])
    if trust:
        out = run_gpg(home, ["--with-colons", "--fingerprint", "--list-keys"]).stdout.decode()
        fprs = _primary_fingerprints(out)
        ownertrust = "".join(f"{fpr}:6:\n" for fpr in fprs).encode()
        run_gpg(home, ["--import-ownertrust"], input=ownertrust)


def _primary_fingerprints(colons: str) -> list[str]:
    """Fingerprints of primary keys in ``--with-colons`` output (the fpr after each pub/sec)."""
    fprs: list[str] = []
    want = False
    for line in colons.splitlines():
        kind = line.split(":", 1)[0]
        if kind in ("pub", "sec"):
            want = True
        elif kind == "fpr" and want:
            fprs.append(line.split(":")[9])
            want = False
        elif kind in ("sub", "ssb"):
            want = False
    return fprs


@dataclass
class GpgKeys:
    """The generated keys: fingerprints, exported files and ready-made homes."""

    base_dir: Path
    keygen_home: Path
    operator_home: Path
    wrong_home: Path
    encryption_fingerprint: str
    signing_fingerprint: str
    wrong_fingerprint: str
    recipients_asc: Path
    signing_public_asc: Path
    decryption_key_asc: Path
    signing_key_asc: Path
    wrong_public_asc: Path
    wrong_secret_asc: Path
    extra_homes: list[Path] = field(default_factory=list)

    @property
    def homes(self) -> list[Path]:
        return [
            self.keygen_home,
            self.operator_home,
            self.wrong_home,
            *self.extra_homes,
        ]

    def fresh_home(self, name: str, *armoured: Path, trust: bool = True) -> Path:
        """A new home under ``base_dir`` with the given key files imported; cleaned up with the
        others (so tests can e.g. decrypt in a home that holds only ``decryption_key_asc``)."""
        home = new_home(self.base_dir / "homes" / name)
        self.extra_homes.append(home)
        import_keys(home, *armoured, trust=trust)
        return home

    def cleanup(self) -> None:
        """Kill every gpg-agent started for these homes."""
        for home in self.homes:
            kill_agents(home)

    def __enter__(self) -> Self:
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.cleanup()


def _generate(home: Path, uid: str, name: str, *, encrypt: bool) -> str:
    params = [
        "%no-protection",
        "Key-Type: eddsa",
        "Key-Curve: ed25519",
        "Key-Usage: sign",
        f"Name-Real: {name}",
        f"Name-Email: {uid}",
        "Expire-Date: 0",
    ]
    if encrypt:
        params[4:4] = [
            "Subkey-Type: ecdh",
            "Subkey-Curve: cv25519",
            "Subkey-Usage: encrypt",
        ]
    params.append("%commit")
    run_gpg(
        home,
        ["--status-fd", "1", "--gen-key"],
        input=("\n".join(params) + "\n").encode(),
    )
    out = run_gpg(home, ["--with-colons", "--fingerprint", "--list-secret-keys", f"<{uid}>"])
    fprs = _primary_fingerprints(out.stdout.decode())
    if len(fprs) != 1:
        raise RuntimeError(f"expected one secret key for {uid}, found {len(fprs)}")
    return fprs[0]


def _export(home: Path, fingerprint: str, target: Path, *, secret: bool) -> Path:
    args = ["--armor", "--export-secret-keys" if secret else "--export", fingerprint]
    data = run_gpg(home, args).stdout
    if not data:
        raise RuntimeError(f"gpg exported nothing for {fingerprint}")
    fd = os.open(target, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600 if secret else 0o644)
    with os.fdopen(fd, "wb") as fh:
        fh.write(data)
    return target


def make_keys(base_dir: Path | str) -> GpgKeys:
    """Generate the encryption, signing and wrong key pairs, export them, build the homes."""
    base = Path(base_dir)
    base.mkdir(parents=True, exist_ok=True)
    keygen = new_home(base / "keygen")
    try:
        enc = _generate(keygen, ENCRYPTION_UID, "Lamassu Backup", encrypt=True)
        sig = _generate(keygen, SIGNING_UID, "Lamassu Backup Signing", encrypt=False)
        wrong = _generate(keygen, WRONG_UID, "Somebody Else", encrypt=True)
        keys = GpgKeys(
            base_dir=base,
            keygen_home=keygen,
            operator_home=new_home(base / "operator"),
            wrong_home=new_home(base / "wrong"),
            encryption_fingerprint=enc,
            signing_fingerprint=sig,
            wrong_fingerprint=wrong,
            recipients_asc=_export(keygen, enc, base / "recipients.asc", secret=False),
            signing_public_asc=_export(keygen, sig, base / "signing-public.asc", secret=False),
            decryption_key_asc=_export(keygen, enc, base / "decryption-key.asc", secret=True),
            signing_key_asc=_export(keygen, sig, base / "signing.asc", secret=True),
            wrong_public_asc=_export(keygen, wrong, base / "wrong-public.asc", secret=False),
            wrong_secret_asc=_export(keygen, wrong, base / "wrong-secret.asc", secret=True),
        )
        import_keys(keys.operator_home, keys.decryption_key_asc, keys.signing_public_asc)
        import_keys(keys.wrong_home, keys.wrong_secret_asc)
    except BaseException:
        for home in ("keygen", "operator", "wrong"):
            kill_agents(base / home)
        raise
    return keys
