"""GnuPG: key handling and signatures through python-gnupg; streaming encryption through gpg pipes.

python-gnupg keeps whole outputs in memory, which is fine for keys and manifests but not for a
database dump, so the data path runs ``gpg`` directly with pipes. Each keyring is a private
GNUPGHOME (a few KiB of key material, on the Job's in-memory scratch volume), removed afterwards.
GPG's own compression is always off: the data is already compressed (or deliberately not).
"""

from __future__ import annotations

import os
import shutil
import subprocess
import tempfile
from dataclasses import dataclass
from pathlib import Path
from types import TracebackType
from typing import IO, Self

import gnupg

from ..errors import ConfigurationError, EncryptionError, SignatureError

GPG_BINARY = os.environ.get("LAMASSU_GPG", "gpg")
_MAX_PARENT = 60
_BASE_ARGS = ["--batch", "--no-tty", "--quiet", "--no-greeting", "--no-permission-warning"]


@dataclass(frozen=True)
class KeyInfo:
    """A key in the keyring."""

    fingerprint: str
    uids: tuple[str, ...]
    can_encrypt: bool
    can_sign: bool
    expires: str | None


class Keyring:
    """A throw-away GnuPG home."""

    def __init__(self, parent: str | None = None) -> None:
        # gpg-agent puts its socket in the home; a socket path over ~100 bytes cannot exist.
        if parent is not None and len(parent) > _MAX_PARENT:
            parent = None
        self.home = Path(tempfile.mkdtemp(prefix="gnupg-", dir=parent))
        self.home.chmod(0o700)
        self._gpg = gnupg.GPG(gpgbinary=GPG_BINARY, gnupghome=str(self.home))
        self._gpg.encoding = "utf-8"

    def __enter__(self) -> Self:
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.close()

    def close(self) -> None:
        """Stop the agent and delete the home (secret keys included)."""
        subprocess.run(
            ["gpgconf", "--homedir", str(self.home), "--kill", "all"],
            check=False,
            capture_output=True,
        )
        shutil.rmtree(self.home, ignore_errors=True)

    def _keys(self, secret: bool) -> list[KeyInfo]:
        out = []
        for key in self._gpg.list_keys(secret=secret):
            caps = str(key.get("cap", ""))
            out.append(
                KeyInfo(
                    fingerprint=str(key["fingerprint"]),
                    uids=tuple(key.get("uids", [])),
                    can_encrypt="E" in caps,
                    can_sign="S" in caps,
                    expires=str(key.get("expires")) or None,
                )
            )
        return out

    def import_recipients(self, armored: str, *, source: str) -> list[KeyInfo]:
        """Import public keys that artifacts will be encrypted to.

        Refuses secret key material (a backup Job never needs a private key to encrypt) and keys
        without a usable encryption subkey, naming ``source`` (the Secret) in the error.
        """
        if "PRIVATE KEY BLOCK" in armored:
            raise ConfigurationError(
                f"{source} holds a PRIVATE key; give the backup only public keys "
                "(gpg --export --armor)"
            )
        result = self._gpg.import_keys(armored)
        if not result.fingerprints:
            raise ConfigurationError(
                f"{source} holds no OpenPGP public key (expected gpg --export --armor output)"
            )
        keys = [k for k in self._keys(secret=False) if k.fingerprint in set(result.fingerprints)]
        unusable = [k.fingerprint for k in keys if not k.can_encrypt]
        if unusable:
            raise ConfigurationError(
                f"{source}: key(s) {', '.join(unusable)} cannot encrypt "
                "(no valid encryption subkey: "
                "expired, revoked or signing-only)"
            )
        return keys

    def import_secret(
        self, armored: str, *, source: str, passphrase: str | None = None
    ) -> list[KeyInfo]:
        """Import a private key (decryption for restores, signing for manifests)."""
        result = self._gpg.import_keys(armored, passphrase=passphrase)
        if not result.fingerprints or not result.sec_imported:
            raise ConfigurationError(
                f"{source} holds no OpenPGP private key "
                "(expected gpg --export-secret-keys --armor output)"
            )
        return [k for k in self._keys(secret=True) if k.fingerprint in set(result.fingerprints)]

    def import_public(self, armored: str, *, source: str) -> list[KeyInfo]:
        """Import public keys trusted to have signed manifests."""
        result = self._gpg.import_keys(armored)
        if not result.fingerprints:
            raise ConfigurationError(f"{source} holds no OpenPGP public key")
        return [k for k in self._keys(secret=False) if k.fingerprint in set(result.fingerprints)]

    def _argv(self, *args: str) -> list[str]:
        return [GPG_BINARY, "--homedir", str(self.home), *_BASE_ARGS, *args]

    def encrypt_process(
        self, recipients: list[str], stdin: int | IO[bytes] | None
    ) -> subprocess.Popen[bytes]:
        """A gpg process encrypting stdin to every recipient, binary output on stdout."""
        if not recipients:
            raise ConfigurationError("no encryption recipients")
        argv = self._argv(
            "--trust-model", "always", "--compress-algo", "none", "--encrypt", "--output", "-"
        )
        for fpr in recipients:
            argv += ["--recipient", fpr]
        return subprocess.Popen(
            argv,
            stdin=stdin if stdin is not None else subprocess.PIPE,
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
        )

    def decrypt_process(
        self, stdin: int | IO[bytes] | None, passphrase: str | None = None
    ) -> subprocess.Popen[bytes]:
        """A gpg process decrypting stdin; a passphrase goes through a pipe, never argv."""
        options: list[str] = []
        pass_fds: tuple[int, ...] = ()
        read_fd = -1
        if passphrase is not None:
            read_fd, write_fd = os.pipe()
            os.write(write_fd, passphrase.encode() + b"\n")
            os.close(write_fd)
            options = ["--pinentry-mode", "loopback", "--passphrase-fd", str(read_fd)]
            pass_fds = (read_fd,)
        argv = self._argv(*options, "--decrypt", "--output", "-")
        proc = subprocess.Popen(
            argv,
            stdin=stdin if stdin is not None else subprocess.PIPE,
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            pass_fds=pass_fds,
        )
        if read_fd >= 0:
            os.close(read_fd)
        return proc

    def sign_detached(self, data: bytes, fingerprint: str, passphrase: str | None = None) -> bytes:
        """An ASCII-armoured detached signature of ``data``."""
        result = self._gpg.sign(
            data, keyid=fingerprint, detach=True, passphrase=passphrase, clearsign=False
        )
        signature = bytes(result.data)
        if not signature or b"BEGIN PGP SIGNATURE" not in signature:
            status = getattr(result, "status", None) or "no signature produced"
            raise EncryptionError(f"signing the manifest with key {fingerprint} failed: {status}")
        return signature

    def verify_detached(self, data: bytes, signature: bytes, trusted: list[str]) -> str:
        """Check a detached signature; returns the signer's fingerprint or raises SignatureError."""
        sig_path = self.home / "manifest.sig"
        sig_path.write_bytes(signature)
        try:
            verified = self._gpg.verify_data(str(sig_path), data)
        finally:
            sig_path.unlink(missing_ok=True)
        fingerprint = str(getattr(verified, "fingerprint", "") or "")
        primary = str(getattr(verified, "pubkey_fingerprint", "") or fingerprint)
        if not verified.valid:
            status = getattr(verified, "status", None) or "invalid"
            raise SignatureError(f"manifest signature does not verify: {status}")
        if trusted and fingerprint not in trusted and primary not in trusted:
            raise SignatureError(
                f"manifest is signed by {primary}, which is not one of the trusted signer keys"
            )
        return primary


def gpg_error(proc: subprocess.Popen[bytes], stderr: bytes, what: str) -> EncryptionError:
    """An EncryptionError from a failed gpg process, with the useful part of its stderr."""
    text = stderr.decode(errors="replace").strip()
    lines = [ln for ln in text.splitlines() if ln.strip()][-4:]
    hint = ""
    if "No secret key" in text or "no secret key" in text:
        hint = " (the decryption key does not match any recipient of this artifact)"
    elif "Bad passphrase" in text or "bad passphrase" in text:
        hint = " (wrong passphrase for the decryption key)"
    detail = "; ".join(lines) if lines else f"exit code {proc.returncode}"
    return EncryptionError(f"gpg {what} failed: {detail}{hint}")
