#!/usr/bin/env bash
# Builds and prepares the container images the tests run, with Podman and Buildah (there is
# no Docker engine on these machines, and no container registry can be reached: the base
# images are stand-ins built here from Debian's package mirror).
#
# Usage: scripts/containers.sh COMMAND
#
#   setup      install podman, buildah, runc, mmdebstrap and the podman configuration this
#              machine kind needs (as root); safe to run again
#   base       build the stand-in for python:3.12-slim (BASE_IMAGE) unless it exists
#   image      build the project's image (IMAGE) from the Dockerfile on the stand-in base
#   es-image   build the stand-in for Elastic's Elasticsearch image (ES_IMAGE) unless it exists
#   names      print BASE_IMAGE, IMAGE and ES_IMAGE as shell assignments
#
# The stand-ins are kept between runs (rebuilt only when missing); the project's image is
# rebuilt every time, which takes seconds because its layers are cached.
# Progress goes to standard error. Exit status: 0 success, 1 failure, 2 usage error.
set -euo pipefail

ROOT=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
CACHE=$ROOT/.cache/containers
ES_VERSION=8.19.21
# Python from Debian bookworm stands in for python:3.12-slim (Debian based, pip, no compiler).
BASE_IMAGE=localhost/kv-storage-base:bookworm
# One tag per working tree, so that two checkouts on one machine do not build over each other.
IMAGE=localhost/kv-storage:test-$(printf '%s' "$ROOT" | sha256sum | cut -c1-10)
ES_IMAGE=localhost/elasticsearch-standin:$ES_VERSION
CONTAINERS_CONF=/etc/containers/containers.conf

log() { printf 'containers: %s\n' "$*" >&2; }
die() { log "$*"; exit 1; }

exists() { podman image exists "$1"; }

setup() {
    local missing=() tool
    for tool in podman buildah runc mmdebstrap; do
        command -v "$tool" >/dev/null || missing+=("$tool")
    done
    # Containers of one compose project find each other by name through this CNI plugin.
    [[ -x /usr/lib/cni/dnsname ]] || missing+=(golang-github-containernetworking-plugin-dnsname)
    if ((${#missing[@]})); then
        [[ $(id -u) -eq 0 ]] || die "missing: ${missing[*]} (install them, or run this as root)"
        log "installing ${missing[*]}"
        DEBIAN_FRONTEND=noninteractive apt-get update -qq </dev/null >&2
        DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends \
            "${missing[@]}" </dev/null >&2
    fi
    # Without default_ulimits = [] every container fails (setrlimit RLIMIT_NOFILE is refused
    # here); crun fails with "cgroups in hybrid mode not supported", runc works; there is no
    # systemd to manage cgroups or keep a journal.
    if [[ ! -s $CONTAINERS_CONF ]]; then
        [[ $(id -u) -eq 0 ]] || die "$CONTAINERS_CONF is missing (run this as root once)"
        log "writing $CONTAINERS_CONF"
        mkdir -p "$(dirname "$CONTAINERS_CONF")"
        cat >"$CONTAINERS_CONF" <<'CONF'
# Written by kv-storage's scripts/containers.sh for machines without systemd, where
# containers may not set their own file limits.
[containers]
default_ulimits = []

[engine]
runtime = "runc"
cgroup_manager = "cgroupfs"
events_logger = "file"
CONF
    elif ! grep -q '^default_ulimits = \[\]' "$CONTAINERS_CONF"; then
        log "warning: $CONTAINERS_CONF has no 'default_ulimits = []'; containers may not start"
    fi
}

# A Debian root file system with Python and pip, imported as an image, then made to look like
# python:3.12-slim where the Dockerfile relies on it (python and pip on PATH, pip allowed to
# install into the system Python).
base() {
    if exists "$BASE_IMAGE"; then
        log "$BASE_IMAGE exists"
        return
    fi
    mkdir -p "$CACHE"
    local rootfs=$CACHE/base-rootfs.tar started=$SECONDS
    log "building the root file system of $BASE_IMAGE with mmdebstrap"
    mmdebstrap --quiet --variant=apt \
        --include=python3,python3-venv,python3-pip,ca-certificates,passwd \
        bookworm "$rootfs" </dev/null >&2 || die "mmdebstrap failed"
    podman import --quiet "$rootfs" localhost/kv-storage-base:raw >/dev/null
    rm -f "$rootfs"
    buildah bud --quiet --isolation chroot --format docker -t "$BASE_IMAGE" - >/dev/null <<'FILE'
FROM localhost/kv-storage-base:raw
RUN rm -f /usr/lib/python3*/EXTERNALLY-MANAGED \
 && ln -sf /usr/bin/python3 /usr/local/bin/python \
 && ln -sf /usr/bin/pip3 /usr/local/bin/pip
CMD ["python3"]
FILE
    podman rmi --force localhost/kv-storage-base:raw >/dev/null
    log "built $BASE_IMAGE ($((SECONDS - started)) s)"
}

# pip inside the build reaches the package index the way this machine does: with its CA
# bundle and its pip configuration, mounted read-only for the build only.
build_mounts() {
    local file
    for file in /etc/ssl/certs/ca-certificates.crt /etc/pip.conf; do
        [[ -e $file ]] && printf -- '-v\n%s:%s:ro\n' "$file" "$file"
    done
    return 0
}

image() {
    base
    local started=$SECONDS mounts
    mapfile -t mounts < <(build_mounts)
    log "building $IMAGE"
    buildah bud --quiet --isolation chroot --format docker "${mounts[@]}" \
        --build-arg "BASE_IMAGE=$BASE_IMAGE" -t "$IMAGE" "$ROOT" >/dev/null ||
        die "building $IMAGE failed"
    log "built $IMAGE ($((SECONDS - started)) s)"
}

# Elastic's image cannot be pulled here. The stand-in runs the same server (the integration-test
# distribution that scripts/local-es.sh fetches) on a Debian base with a Java runtime, as a
# non-root user, and, like Elastic's image, turns environment variables named like settings
# (discovery.type=single-node) into -E options and honours ELASTIC_PASSWORD.
es_image() {
    if exists "$ES_IMAGE"; then
        log "$ES_IMAGE exists"
        return
    fi
    "$ROOT/scripts/local-es.sh" fetch
    local context=$CACHE/es-context started=$SECONDS
    rm -rf "$context"
    mkdir -p "$context"
    log "building the root file system of $ES_IMAGE with mmdebstrap"
    mmdebstrap --quiet --variant=apt \
        --include=openjdk-17-jre-headless,curl,ca-certificates,unzip,passwd \
        bookworm "$context/rootfs.tar" </dev/null >&2 || die "mmdebstrap failed"
    podman import --quiet "$context/rootfs.tar" localhost/elasticsearch-standin:raw >/dev/null
    rm -f "$context/rootfs.tar"
    cp -r "$ROOT/.cache/elasticsearch/elasticsearch-$ES_VERSION" "$context/elasticsearch"
    cp "$ROOT/scripts/es-standin-entrypoint.sh" "$context/entrypoint.sh"
    cat >"$context/Containerfile" <<'FILE'
FROM localhost/elasticsearch-standin:raw
RUN useradd --uid 1000 --home-dir /usr/share/elasticsearch --no-create-home elasticsearch
COPY --chown=1000:0 elasticsearch /usr/share/elasticsearch
COPY --chmod=755 entrypoint.sh /usr/local/bin/es-entrypoint.sh
RUN mkdir -p /usr/share/elasticsearch/data /usr/share/elasticsearch/logs \
 && chown -R 1000:0 /usr/share/elasticsearch
ENV ES_JAVA_HOME=/usr/lib/jvm/java-17-openjdk-amd64 PATH=/usr/share/elasticsearch/bin:$PATH
WORKDIR /usr/share/elasticsearch
USER 1000
EXPOSE 9200
ENTRYPOINT ["/usr/local/bin/es-entrypoint.sh"]
FILE
    buildah bud --quiet --isolation chroot --format docker -t "$ES_IMAGE" "$context" >/dev/null ||
        die "building $ES_IMAGE failed"
    podman rmi --force localhost/elasticsearch-standin:raw >/dev/null
    rm -rf "$context"
    log "built $ES_IMAGE ($((SECONDS - started)) s)"
}

names() {
    printf 'BASE_IMAGE=%s\nIMAGE=%s\nES_IMAGE=%s\n' "$BASE_IMAGE" "$IMAGE" "$ES_IMAGE"
}

(($# == 1)) || { sed -n '2,/^set -euo/p' "$0" | sed '$d; s/^# \{0,1\}//' >&2; exit 2; }
case $1 in
setup) setup ;;
base) setup && base ;;
image) setup && image ;;
es-image) setup && es_image ;;
names) names ;;
-h | --help) sed -n '2,/^set -euo/p' "$0" | sed '$d; s/^# \{0,1\}//' ;;
*) log "unknown command $1"; exit 2 ;;
esac
