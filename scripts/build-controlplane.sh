#!/usr/bin/env bash
# Build tests/controlplane (etcd + kube-apiserver + kube-controller-manager in one binary) into a
# cache outside the checkout, keyed by the Kubernetes version and a hash of the module's sources,
# so repeated test runs reuse it. The last line on stdout is the binary's path; everything else
# goes to stderr.
set -euo pipefail

repo_root="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
src="${repo_root}/tests/controlplane"
export PATH="/usr/local/go/bin:${PATH}"
# Build with the installed toolchain only (no toolchain download) and with no C compiler needed.
export GOTOOLCHAIN=local CGO_ENABLED=0

cache="${LAMASSU_CACHE:-${XDG_CACHE_HOME:-$HOME/.cache}/lamassu-backup}"
k8s_version="$(awk '$1 == "k8s.io/kubernetes" || ($1 == "require" && $2 == "k8s.io/kubernetes") {print $NF; exit}' "${src}/go.mod")"
if [[ -z "${k8s_version}" ]]; then
    echo "build-controlplane: cannot read the k8s.io/kubernetes version from ${src}/go.mod" >&2
    exit 1
fi
hash="$(cd "${src}" && cat go.mod go.sum $(ls *.go | LC_ALL=C sort) | sha256sum | cut -c1-12)"
out_dir="${cache}/controlplane/${k8s_version}-${hash}"
binary="${out_dir}/kube-controlplane"

if [[ ! -x "${binary}" ]]; then
    mkdir -p "${out_dir}"
    # One build at a time per key: parallel test sessions wait for the first one.
    exec 9>"${out_dir}/.lock"
    flock 9
    if [[ ! -x "${binary}" ]]; then
        echo "build-controlplane: building kube-controlplane ${k8s_version} (a cold build takes 10-20 min)" >&2
        minor="${k8s_version#v*.}"; minor="${minor%%.*}"
        major="${k8s_version#v}"; major="${major%%.*}"
        # The module's publication time: reproducible, unlike the wall clock.
        build_date="$(cd "${src}" && go list -m -f '{{.Time.UTC.Format "2006-01-02T15:04:05Z"}}' k8s.io/kubernetes)"
        # The module proxy does not say which git commit a version is; all zeros says "unknown".
        commit="0000000000000000000000000000000000000000"
        ldflags="-s -w"
        for pkg in k8s.io/component-base/version k8s.io/client-go/pkg/version; do
            ldflags+=" -X ${pkg}.gitVersion=${k8s_version}"
            ldflags+=" -X ${pkg}.gitMajor=${major}"
            ldflags+=" -X ${pkg}.gitMinor=${minor}"
            ldflags+=" -X ${pkg}.gitCommit=${commit}"
            ldflags+=" -X ${pkg}.gitTreeState=clean"
            ldflags+=" -X ${pkg}.buildDate=${build_date}"
        done
        start=$(date +%s)
        (cd "${src}" && go build -trimpath -ldflags "${ldflags}" -o "${binary}.tmp" .) >&2
        mv "${binary}.tmp" "${binary}"
        echo "build-controlplane: built in $(( $(date +%s) - start ))s" >&2
        # Each source change makes a new ~120 MB entry: keep the three newest.
        ls -dt "${cache}/controlplane/"*/ 2>/dev/null | tail -n +4 | xargs -r rm -rf --
    fi
fi
echo "${binary}"
