#!/usr/bin/env bash
# Build the Versity S3 Gateway (a Go S3 server over a POSIX directory) into the build cache.
#
# Why: the benchmarks measure an upload pipeline, and moto_server (the tests' S3 server) ingests
# about 130 MiB/s on these machines while using a whole core, so it, not the pipeline, sets the
# pace. versitygw is a production S3 gateway, served by the Go module proxy without replace
# directives (MinIO's module is refused there). Only the benchmarks use it.
#
# Usage: scripts/build-versitygw.sh   -> the binary's path is the last line on stdout
set -euo pipefail

VERSION="${VERSITYGW_VERSION:-v1.8.0}"
cache_root="${LAMASSU_CACHE:-${XDG_CACHE_HOME:-$HOME/.cache}/lamassu-backup}"
bin_dir="$cache_root/versitygw/$VERSION"
bin="$bin_dir/versitygw"
if [[ ! -x "$bin" ]]; then
    command -v go >/dev/null || { echo "build-versitygw: 'go' is not on PATH" >&2; exit 1; }
    mkdir -p "$bin_dir"
    tmp="$(mktemp -d "$bin_dir/.build.XXXXXX")"
    trap 'rm -rf "$tmp"' EXIT
    echo "build-versitygw: building versitygw $VERSION (about a minute cold)" >&2
    start=$SECONDS
    GOTOOLCHAIN=local CGO_ENABLED=0 GOFLAGS= GOBIN="$tmp" \
        go install -trimpath -ldflags "-s -w" "github.com/versity/versitygw/cmd/versitygw@$VERSION" >&2
    mv -f "$tmp/versitygw" "$bin"
    echo "build-versitygw: built in $((SECONDS - start))s" >&2
fi
echo "$bin"
