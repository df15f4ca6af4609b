#!/usr/bin/env bash
# Entry point of the stand-in Elasticsearch image (scripts/containers.sh es-image), doing what
# the compose files rely on from Elastic's image: environment variables named like settings
# (discovery.type=single-node, xpack.security.enabled=false) become -E options, and
# ELASTIC_PASSWORD becomes the bootstrap password of the built-in elastic user; it listens on
# all of the container's interfaces.
# Any other command (bash, elasticsearch-certutil, ...) is run as it is.
set -euo pipefail

if [[ $# -gt 0 && $1 != eswrapper && $1 != elasticsearch && $1 != -* ]]; then
    exec "$@"
fi
[[ ${1:-} == eswrapper || ${1:-} == elasticsearch ]] && shift

# Like Elastic's image: listen on every interface of the container unless told otherwise.
settings=()
[[ -n $(env | grep '^network\.host=' || true) ]] || settings+=("-Enetwork.host=0.0.0.0")
while IFS= read -r -d '' entry; do
    key=${entry%%=*}
    # Setting names: lower case, with at least one dot (environment variable names of the
    # ordinary kind never have one).
    if [[ $key =~ ^[a-z0-9_]+\.[a-z0-9_.]+$ ]]; then
        settings+=("-E$key=${entry#*=}")
    fi
done < <(env -0)

if [[ -n ${ELASTIC_PASSWORD:-} ]]; then
    [[ -f config/elasticsearch.keystore ]] || elasticsearch-keystore create >/dev/null
    printf '%s' "$ELASTIC_PASSWORD" |
        elasticsearch-keystore add --force --stdin bootstrap.password >/dev/null
fi

exec elasticsearch "${settings[@]}" "$@"
