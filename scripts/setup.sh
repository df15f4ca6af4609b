#!/usr/bin/env bash
# Installs what the project needs on a fresh machine; safe to run again.
#   scripts/setup.sh               the virtual environment with the service and its dev tools
#   scripts/setup.sh --test-tools  also the Debian packages the tests use (headless Chromium,
#                                  openssl, and Podman with what the container tests need)
#   scripts/setup.sh --bench-tools also wrk and the plotting library of the benchmarks
set -euo pipefail
cd "$(dirname "$0")/.."

log() { printf 'setup: %s\n' "$*" >&2; }

python=${PYTHON:-python3}
if ! "$python" -c 'import sys; sys.exit(sys.version_info < (3, 11))' 2>/dev/null; then
    log "Python 3.11 or newer is needed (found: $("$python" --version 2>&1))"
    exit 1
fi

apt_updated=
apt_install() {
    if [[ $(id -u) -ne 0 ]]; then
        log "please install these Debian packages: $*"
        exit 1
    fi
    if [[ -z $apt_updated ]]; then
        DEBIAN_FRONTEND=noninteractive apt-get update -qq >&2
        apt_updated=1
    fi
    log "installing Debian packages: $*"
    DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends "$@" >&2
}

if [[ ${1:-} == --test-tools ]]; then
    missing=()
    command -v chromium >/dev/null || missing+=(chromium)
    command -v curl >/dev/null || missing+=(curl)
    command -v openssl >/dev/null || missing+=(openssl)
    if ((${#missing[@]})); then apt_install "${missing[@]}"; fi
    # podman, buildah, runc, mmdebstrap and /etc/containers/containers.conf.
    scripts/containers.sh setup
    exit 0
fi

if [[ ${1:-} == --bench-tools ]]; then
    command -v wrk >/dev/null || apt_install wrk
    .venv/bin/python -m pip install --quiet -e '.[bench]'
    exit 0
fi

if ! "$python" -m venv --help >/dev/null 2>&1; then apt_install python3-venv; fi
if [[ ! -x .venv/bin/python ]]; then
    log "creating .venv"
    "$python" -m venv .venv
fi
log "installing kv-storage and its development tools into .venv"
.venv/bin/python -m pip install --quiet --upgrade pip
.venv/bin/python -m pip install --quiet -e '.[dev]'
