#!/usr/bin/env bash
# Build the Helm CLI from its Go module into the shared build cache, once per version.
#
# Why: the tests run `helm lint` / `helm template` against the chart, the machines have no download
# site for release tarballs, and the Go module proxy serves helm.sh/helm/v3 without replace
# directives. The binary lives outside the checkout, keyed by version, so a warm run costs nothing.
#
# Usage: scripts/build-helm.sh            -> the binary's path is the last line on stdout
# Env:   HELM_VERSION (default v3.21.4), LAMASSU_CACHE / XDG_CACHE_HOME (cache root)
set -euo pipefail

HELM_VERSION="${HELM_VERSION:-v3.21.4}"
cache_root="${LAMASSU_CACHE:-${XDG_CACHE_HOME:-$HOME/.cache}/lamassu-backup}"
bin_dir="$cache_root/helm/$HELM_VERSION"
helm_bin="$bin_dir/helm"

# A binary is warm only if it reports the version asked for (an older build made without the
# release ldflags reports just "v3.21" and is rebuilt).
if [[ ! -x "$helm_bin" ]] || [[ "$("$helm_bin" version --template '{{.Version}}' 2>/dev/null)" != "$HELM_VERSION" ]]; then
    command -v go >/dev/null || { echo "build-helm: 'go' is not on PATH" >&2; exit 1; }
    mkdir -p "$bin_dir"
    echo "build-helm: building helm $HELM_VERSION into $bin_dir (cold build takes minutes)" >&2
    start=$SECONDS
    # GOTOOLCHAIN=local: use the installed Go, never fetch another toolchain behind our back.
    # GOFLAGS is cleared so a caller's -mod=vendor or similar cannot leak into the build.
    export GOTOOLCHAIN=local CGO_ENABLED=0 GOFLAGS=
    # The release ldflags of Helm's Makefile matter beyond cosmetics: without them `helm version`
    # says "v3.21", and `helm template`/`helm lint` assume Kubernetes v1.20 (kubeVersion checks,
    # .Capabilities.KubeVersion, deprecation rules) instead of the client-go line Helm is built on.
    gomod="$(go mod download -json "helm.sh/helm/v3@$HELM_VERSION" | sed -n 's/^[[:space:]]*"GoMod": "\(.*\)",\{0,1\}$/\1/p')"
    client_go="$(sed -n 's/^[[:space:]]*k8s\.io\/client-go v0\.\([0-9]*\)\..*/\1/p' "$gomod")"
    [[ -n "$client_go" ]] || { echo "build-helm: cannot read k8s.io/client-go from $gomod" >&2; exit 1; }
    k8s_minor="$client_go"   # client-go v0.N.x belongs to Kubernetes v1.N
    ldflags="-s -w -X helm.sh/helm/v3/internal/version.version=$HELM_VERSION"
    ldflags+=" -X helm.sh/helm/v3/internal/version.gitTreeState=clean"
    for pkg in helm.sh/helm/v3/pkg/chartutil helm.sh/helm/v3/pkg/lint/rules; do
        ldflags+=" -X $pkg.k8sVersionMajor=1 -X $pkg.k8sVersionMinor=$k8s_minor"
    done
    # Build into a temporary GOBIN and move the result: an interrupted build never leaves a
    # half-written binary that a later run would take as warm.
    tmp_bin="$(mktemp -d "$bin_dir/.build.XXXXXX")"
    trap 'rm -rf "$tmp_bin"' EXIT
    GOBIN="$tmp_bin" go install -trimpath -ldflags "$ldflags" "helm.sh/helm/v3/cmd/helm@$HELM_VERSION" >&2
    mv -f "$tmp_bin/helm" "$helm_bin"
    echo "build-helm: built in $((SECONDS - start))s (Kubernetes default v1.$k8s_minor)" >&2
fi

"$helm_bin" version --short >&2
echo "$helm_bin"
