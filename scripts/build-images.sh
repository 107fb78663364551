#!/usr/bin/env bash
# Build the operator and runner images without a daemon (buildah), and unpack them for runc.
#
# Why: these machines have no Docker and no reachable container registry, yet the tests and
# `make demo` run every Pod from its image. So the Debian base image is built locally from Debian's
# packages (mmdebstrap, cached by suite and build options), the images are built from the very
# Dockerfiles a user builds with `docker build` (only BASE is passed), each image is exported to an
# OCI layout, and its root filesystem is unpacked with umoci, cached by digest.
#
# Nothing is rebuilt when nothing changed: an image is keyed by the hash of its Dockerfile, the
# files it copies (pyproject.toml, constraints.txt, README.md, operator/lamassu_backup) and the
# base image; a warm run only hashes. buildah's layer cache keeps the dependency layer, so a
# Python-only change rebuilds in seconds.
#
# The `lamassu` image (images/lamassu/Dockerfile: the real Lamassu v3.8.0 ca, kms and
# goose-lamassu, for the tests' Lamassu workloads) is built only when named; its context is the bin
# directory of scripts/build-lamassu.sh (cached by the source's hash), keyed by the binaries' hash.
#
# Usage: scripts/build-images.sh [operator|runner|lamassu ...]   (default: operator runner)
# Output: the last line on stdout is JSON: {"<image ref>": {"digest", "bundle", "oci", "size"}}
#         (bundle = an OCI runtime bundle: rootfs/ + config.json, shared and read-only by use).
# Env:   LAMASSU_CACHE / XDG_CACHE_HOME (cache root), DEBIAN_MIRROR, LAMASSU_BASE_REFRESH=1
#        (rebuild the base image, e.g. to pick up Debian point releases).
set -euo pipefail

repo="$(cd "$(dirname "$0")/.." && pwd)"
cache_root="${LAMASSU_CACHE:-${XDG_CACHE_HOME:-$HOME/.cache}/lamassu-backup}"
cache="$cache_root/images"
mirror="${DEBIAN_MIRROR:-http://deb.debian.org/debian}"
suite=trixie
base_ref="docker.io/library/debian:${suite}-slim"
version="$(sed -n 's/^__version__ = "\(.*\)"/\1/p' "$repo/operator/lamassu_backup/__init__.py")"
images=("$@")
[[ ${#images[@]} -gt 0 ]] || images=(operator runner)

for tool in buildah mmdebstrap umoci; do
    command -v "$tool" >/dev/null || {
        echo "build-images: '$tool' is not installed (run: make system-deps)" >&2
        exit 1
    }
done
[[ "$(id -u)" -eq 0 ]] || { echo "build-images: needs root (buildah chroot isolation, mmdebstrap)" >&2; exit 1; }

mkdir -p "$cache"/{base,oci,bundles,keys,tmp}
# One build at a time per cache: two clones (or a test run and `make demo`) may call this at once.
exec 9>"$cache/lock"
flock 9

bah=(buildah --storage-driver vfs --root "$cache/storage" --runroot "$cache/run")
log() { echo "build-images: $*" >&2; }

# ------------------------------------------------------------------------------ base image
# The same shape as debian:trixie-slim: minbase, no documentation or locales, apt lists removed.
mm_opts=(
    --variant=minbase --format=tar
    --aptopt='Acquire::Languages "none"'
    --dpkgopt='path-exclude=/usr/share/man/*' --dpkgopt='path-exclude=/usr/share/doc/*'
    --dpkgopt='path-include=/usr/share/doc/*/copyright' --dpkgopt='path-exclude=/usr/share/locale/*'
    --dpkgopt='path-exclude=/usr/share/info/*'
    --customize-hook='rm -rf "$1"/var/lib/apt/lists/* "$1"/var/cache/apt/*.bin'
)
base_key="$(printf '%s\n' "$suite" "$mirror" "${mm_opts[@]}" | sha256sum | cut -c1-16)"
base_tar="$cache/base/debian-$suite-slim-$base_key.tar"
if [[ "${LAMASSU_BASE_REFRESH:-}" == 1 ]]; then rm -f "$base_tar"; fi
if [[ ! -s "$base_tar" ]]; then
    log "building the $suite base image from $mirror (mmdebstrap)"
    t0=$SECONDS
    mmdebstrap "${mm_opts[@]}" "$suite" "$base_tar.tmp" \
        "deb $mirror $suite main" "deb $mirror $suite-updates main" \
        "deb ${mirror%/debian}/debian-security $suite-security main" >&2
    mv "$base_tar.tmp" "$base_tar"
    log "base image tarball built in $((SECONDS - t0))s"
fi
# The base image in buildah's store carries its key as a label: a new tarball re-imports it.
if [[ "$("${bah[@]}" inspect --type image --format '{{index .ImageAnnotations "io.lamassu.base-key"}}{{index .OCIv1.Config.Labels "io.lamassu.base-key"}}' "$base_ref" 2>/dev/null || true)" != *"$base_key"* ]]; then
    log "importing the base image as $base_ref"
    ctx="$(mktemp -d "$cache/tmp/base.XXXXXX")"
    ln "$base_tar" "$ctx/rootfs.tar" 2>/dev/null || cp "$base_tar" "$ctx/rootfs.tar"
    printf 'FROM scratch\nADD rootfs.tar /\nLABEL io.lamassu.base-key=%s\nCMD ["bash"]\n' "$base_key" >"$ctx/Containerfile"
    "${bah[@]}" bud --quiet --isolation chroot --pull=never -t "$base_ref" -f "$ctx/Containerfile" "$ctx" >/dev/null
    rm -rf "$ctx"
fi
base_id="$("${bah[@]}" inspect --type image --format '{{.FromImageID}}' "$base_ref")"

# ---------------------------------------------------------------------------------- images
# The build context holds exactly what the Dockerfiles copy (their .dockerignore says the same for
# `docker build`), so the hash below covers every input and nothing else.
stage_context() {
    local out="$1"
    (cd "$repo" && tar -c --sort=name --mtime=@0 --owner=0 --group=0 --numeric-owner \
        --exclude=__pycache__ --exclude='*.pyc' \
        pyproject.toml constraints.txt README.md operator/lamassu_backup) | tar -x -C "$out"
}

ctx="$(mktemp -d "$cache/tmp/context.XXXXXX")"
lamassu_ctx=""
trap 'rm -rf "$ctx" ${lamassu_ctx:+"$lamassu_ctx"}' EXIT
stage_context "$ctx"
tree_hash() { (cd "$1" && find . -type f -print0 | sort -z | xargs -0 sha256sum | sha256sum | cut -c1-16); }
src_hash="$(tree_hash "$ctx")"

# The Lamassu image's context: the cached binaries (hard links, else copies), nothing else.
stage_lamassu_context() {
    local bin
    bin="$(bash "$repo/scripts/build-lamassu.sh" | tail -n 1)"
    lamassu_ctx="$(mktemp -d "$cache/tmp/lamassu.XXXXXX")"
    for f in ca kms va device-manager dms-manager alerts goose-lamassu LICENSE; do
        ln "$bin/$f" "$lamassu_ctx/$f" 2>/dev/null || cp "$bin/$f" "$lamassu_ctx/$f"
    done
}

# pip inside the build trusts the host's CA bundle (these machines reach PyPI through a
# TLS-inspecting proxy); it is a build secret, so it is in no layer of the image.
secret=()
host_ca="${PIP_CERT:-/etc/ssl/certs/ca-certificates.crt}"
[[ -s "$host_ca" ]] && secret=(--secret "id=ca-certificates,src=$host_ca")

json="{"
sep=""
for name in "${images[@]}"; do
    dockerfile="$repo/images/$name/Dockerfile"
    [[ -f "$dockerfile" ]] || { echo "build-images: no $dockerfile" >&2; exit 1; }
    ref="ghcr.io/lamassuiot/lamassu-backup-$name:$version"
    context="$ctx" context_hash="$src_hash"
    if [[ "$name" == lamassu ]]; then
        [[ -n "$lamassu_ctx" ]] || stage_lamassu_context
        ref="ghcr.io/lamassuiot/lamassu-backup-lamassu:v3.8.0"
        context="$lamassu_ctx" context_hash="$(tree_hash "$lamassu_ctx")"
    fi
    key="$(cat "$dockerfile" <(echo "$context_hash" "$base_id" "$ref") | sha256sum | cut -c1-16)"
    keyfile="$cache/keys/$name-$key"
    # Warm only if the unpacked bundle it names is still there (a cache may be pruned by hand).
    if [[ -s "$keyfile" ]] && [[ ! -d "$(cut -d' ' -f2 "$keyfile")/rootfs" ]]; then rm -f "$keyfile"; fi
    if [[ ! -s "$keyfile" ]]; then
        log "building $ref (key $key)"
        t0=$SECONDS
        "${bah[@]}" bud --quiet --layers --isolation chroot --pull=never \
            --build-arg "BASE=$base_ref" --build-arg "VERSION=$version" \
            "${secret[@]}" \
            -f "$dockerfile" -t "$ref" "$context" >&2
        # One OCI layout per image, one tag per key: unchanged layers are written once. Layers stay
        # uncompressed: the layout is only unpacked here, and gzip would cost most of a warm build.
        oci="$cache/oci/$name"
        "${bah[@]}" push --quiet --disable-compression "$ref" "oci:$oci:$key" >&2
        digest="$(python3 -c 'import json,sys; print(next(m["digest"] for m in json.load(open(sys.argv[1]))["manifests"] if m.get("annotations", {}).get("org.opencontainers.image.ref.name") == sys.argv[2]))' "$oci/index.json" "$key")"
        bundle="$cache/bundles/${digest#sha256:}"
        if [[ ! -d "$bundle/rootfs" ]]; then
            rm -rf "$bundle.tmp"
            umoci unpack --image "$oci:$key" "$bundle.tmp" >&2
            mv "$bundle.tmp" "$bundle"
        fi
        size="$(du -sb "$bundle/rootfs" | cut -f1)"
        printf '%s %s %s %s\n' "$digest" "$bundle" "$oci" "$size" >"$keyfile"
        log "$ref built in $((SECONDS - t0))s: $digest, $((size / 1024 / 1024)) MiB unpacked"
    fi
    read -r digest bundle oci size <"$keyfile"
    json+="$sep\"$ref\": {\"digest\": \"$digest\", \"bundle\": \"$bundle\", \"oci\": \"$oci\", \"size\": $size}"
    sep=", "
done
# The cache grows by a few hundred MiB per source change: keep the newest builds of each image
# (and every bundle some running container still has as its overlay lower directory), and drop
# buildah's dangling images (old builds, old layer cache) once they are older than two hours
# (with vfs storage every layer is a full copy: a busy day of source changes filled 60 GB).
for name in "${images[@]}"; do
    ls -t "$cache/keys/$name"-* 2>/dev/null | tail -n +5 | while read -r old; do
        old_bundle="$(cut -d' ' -f2 "$old")"
        rm -f "$old"
        if ! grep -q "lowerdir=$old_bundle/rootfs" /proc/mounts \
            && ! grep -qs " $old_bundle " "$cache"/keys/*; then
            rm -rf "$old_bundle"
        fi
    done
done
cutoff=$(( $(date +%s) - 7200 ))
"${bah[@]}" images --filter dangling=true --format '{{.ID}} {{.CreatedAtRaw}}' 2>/dev/null \
    | while read -r id created _; do
        ts="$(date -d "$created" +%s 2>/dev/null || echo "$cutoff")"
        [[ "$ts" -lt "$cutoff" ]] && "${bah[@]}" rmi "$id" >/dev/null 2>&1 || true
    done

echo "$json}"
