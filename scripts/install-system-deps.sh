#!/usr/bin/env bash
# Installs the Debian packages the tests and the local platform use, when they are missing.
# PostgreSQL 15 server (a private cluster per test session), GnuPG, zstd and lz4 (the runner's
# compression stages), SoftHSM and opensc (a real PKCS#11 token in the key check's tests),
# kubectl (the README's commands); and the daemonless container tools that `make images` and
# the pod runner use (no Docker here): mmdebstrap builds the base image from Debian's packages,
# buildah builds the images, umoci unpacks them, runc runs the containers.
# Idempotent; quiet when all is present.
set -euo pipefail

need=()
[ -x /usr/lib/postgresql/15/bin/postgres ] || need+=(postgresql-15)
command -v pg_dump >/dev/null || need+=(postgresql-client-15)
command -v gpg >/dev/null || need+=(gnupg)
command -v zstd >/dev/null || need+=(zstd)
command -v lz4 >/dev/null || need+=(lz4)
command -v unshare >/dev/null || need+=(util-linux)
command -v tar >/dev/null || need+=(tar)
# SoftHSM and opensc's pkcs11-tool: the key check's tests make a real PKCS#11 token with them
# (the check itself reads token directories without either).
command -v softhsm2-util >/dev/null || need+=(softhsm2)
command -v pkcs11-tool >/dev/null || need+=(opensc)
command -v buildah >/dev/null || need+=(buildah)
command -v runc >/dev/null || need+=(runc)
command -v umoci >/dev/null || need+=(umoci)
command -v mmdebstrap >/dev/null || need+=(mmdebstrap)
# buildah verifies base-image signatures through this policy file, which buildah alone lacks.
[ -e /etc/containers/policy.json ] || need+=(golang-github-containers-common)

if [ ${#need[@]} -gt 0 ]; then
  echo "installing Debian packages: ${need[*]}"
  sudo=""
  [ "$(id -u)" -eq 0 ] || sudo="sudo"
  $sudo apt-get update -qq
  DEBIAN_FRONTEND=noninteractive $sudo apt-get install -y -qq --no-install-recommends "${need[@]}"
fi
command -v kubectl >/dev/null || echo "note: kubectl is not installed; the tests do not need it, the README's commands do" >&2
