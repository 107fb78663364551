#!/usr/bin/env bash
# Build the real Lamassu IoT services the tests run (ca, kms, va, device-manager, dms-manager,
# alerts, and goose-lamassu) from the pinned v3.8.0 source into a cache outside the checkout,
# keyed by the version and the source archive's sha256, so warm runs do no work. All six services
# start without a message bus (tests/lamassu_platform/lamassu.py says what that loses).
#
# Why the replace lines: the source is a Go workspace whose modules require each other at v3.8.0,
# and the Go module proxy refuses every github.com/lamassuiot/lamassuiot/... module (403). One
# `replace <module> v3.8.0 => ./<dir>` per workspace module keeps Go from ever asking for them;
# the third-party modules still come from the proxy.
#
# Source: ../shared/lamassu/lamassuiot-v3.8.0.tar.gz beside the checkout (sha256-checked), else a
# shallow clone of the tag from the public repository (keyed by the tag's commit instead).
#
# Usage: scripts/build-lamassu.sh  -> the bin directory is the last line on stdout
# Env:   LAMASSU_CACHE / XDG_CACHE_HOME (cache root), LAMASSU_SOURCE (another archive)
set -euo pipefail

repo_root="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
export PATH="/usr/local/go/bin:${PATH}"
# Build with the installed toolchain only (the workspace asks for go1.26.2; any 1.26 builds it).
# cgo stays on: the kms links the PKCS#11 engine (miekg/pkcs11), which needs a C compiler.
export GOTOOLCHAIN=local

version="v3.8.0"
tag="backend/${version}"
repo_url="https://github.com/lamassuiot/lamassuiot.git"
archive="${LAMASSU_SOURCE:-${repo_root}/../shared/lamassu/lamassuiot-${version}.tar.gz}"
archive_sha="227f39002ce78b728d130cd4b90a5f2429cb286b4ba409d933c5a178bb0ba4e3"
cache="${LAMASSU_CACHE:-${XDG_CACHE_HOME:-$HOME/.cache}/lamassu-backup}"
required=(ca kms va device-manager dms-manager alerts goose-lamassu)

if [[ -f "${archive}" ]]; then
    got="$(sha256sum "${archive}" | cut -d' ' -f1)"
    if [[ -z "${LAMASSU_SOURCE:-}" && "${got}" != "${archive_sha}" ]]; then
        echo "build-lamassu: ${archive} has sha256 ${got}, expected ${archive_sha}" >&2
        exit 1
    fi
    key="${got:0:12}"
else
    archive=""
    # The tag's commit is the key when building from a clone: ask without cloning.
    commit="$(git ls-remote "${repo_url}" "refs/tags/${tag}^{}" "refs/tags/${tag}" 2>/dev/null | awk 'NR==1 {print $1}' || true)"
    if [[ -z "${commit}" ]]; then
        # No archive beside this checkout and no network (a clone under /tmp on a machine that
        # has built Lamassu before): a complete build of the same version in the cache will do.
        cached="$(ls -dt "${cache}/lamassu-${version}-"*/ 2>/dev/null | while read -r d; do
            [[ -f "${d}.complete" ]] && { echo "${d%/}"; break; }; done || true)"
        if [[ -n "${cached}" ]]; then
            echo "build-lamassu: no source reachable; using the cached build ${cached}" >&2
            echo "${cached}"
            exit 0
        fi
        echo "build-lamassu: cannot resolve ${tag} at ${repo_url}, and no ${archive:-archive} or cached build" >&2
        exit 1
    fi
    key="${commit:0:12}"
fi
bin_dir="${cache}/lamassu-${version}-${key}"

have_all() {
    local b
    for b in "${required[@]}"; do [[ -x "${bin_dir}/${b}" ]] || return 1; done
    [[ -f "${bin_dir}/.complete" ]]
}

if ! have_all; then
    mkdir -p "${bin_dir}"
    # One build at a time per key: parallel test sessions wait for the first one.
    exec 9>"${bin_dir}/.lock"
    flock 9
    if ! have_all; then
        start=$SECONDS
        work="$(mktemp -d "${bin_dir}/.build.XXXXXX")"
        trap 'rm -rf "${work}"' EXIT
        src="${work}/src"
        mkdir -p "${src}"
        if [[ -n "${archive}" ]]; then
            echo "build-lamassu: building Lamassu ${version} from ${archive} (cold: 5-15 min on 2 cores)" >&2
            tar -xzf "${archive}" -C "${src}"
        else
            echo "build-lamassu: cloning ${tag} from ${repo_url}" >&2
            git clone --quiet --depth 1 --branch "${tag}" "${repo_url}" "${src}" >&2
        fi
        # One replace per module the workspace uses: module path from that directory's go.mod.
        dirs="$(awk '/^use \(/ {u=1; next} u && /^\)/ {u=0} u && NF {print $1} /^use [^(]/ {print $2}' "${src}/go.work")"
        [[ -n "${dirs}" ]] || { echo "build-lamassu: no use directives in go.work" >&2; exit 1; }
        {
            echo
            for dir in ${dirs}; do
                module="$(awk '$1 == "module" {print $2; exit}' "${src}/${dir#./}/go.mod")"
                echo "replace ${module} ${version} => ${dir}"
            done
        } >>"${src}/go.work"
        out="${work}/bin"
        mkdir -p "${out}"
        # One go build for all: the services share most packages, so each more costs little.
        (cd "${src}" && go build -trimpath -ldflags "-s -w" -o "${out}/" \
            ./backend/cmd/ca ./backend/cmd/kms ./backend/cmd/va ./backend/cmd/device-manager \
            ./backend/cmd/dms-manager ./backend/cmd/alerts \
            ./engines/storage/postgres/cmd/goose-lamassu) >&2
        cp "${src}/LICENSE" "${out}/LICENSE"
        mv -f "${out}"/* "${bin_dir}/"
        touch "${bin_dir}/.complete"
        echo "build-lamassu: built in $((SECONDS - start))s: $(cd "${bin_dir}" && ls | tr '\n' ' ')" >&2
        # Each new source makes a new ~200 MB entry: keep the two newest.
        ls -dt "${cache}/lamassu-"*/ 2>/dev/null | tail -n +3 | xargs -r rm -rf --
    fi
fi
echo "${bin_dir}"
