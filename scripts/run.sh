#!/usr/bin/env bash
# Runs the service on the configured port (8080 by default). When no Elasticsearch address is
# configured (elasticsearch.uri in $KV_STORAGE_CONFIG or KV_STORAGE_ELASTICSEARCH_URI), it
# starts the local development node first and stops it again when the service ends.
set -euo pipefail
cd "$(dirname "$0")/.."

started_local=
stop_local() { [[ -z $started_local ]] || scripts/local-es.sh stop --name dev; }
trap stop_local EXIT

if ! .venv/bin/kv-storage config --get elasticsearch.uri >/dev/null 2>&1; then
    if ! scripts/local-es.sh status --name dev >/dev/null 2>&1; then
        started_local=1
    fi
    KV_STORAGE_ELASTICSEARCH_URI=$(scripts/local-es.sh start --name dev | tail -n 1)
    export KV_STORAGE_ELASTICSEARCH_URI
    echo "run: using the local Elasticsearch at $KV_STORAGE_ELASTICSEARCH_URI" >&2
fi

.venv/bin/kv-storage init
.venv/bin/kv-storage serve
