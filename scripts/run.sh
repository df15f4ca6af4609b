#!/usr/bin/env bash
# Runs the service on the configured port (server.port; else PORT; else 8080).
#
# When no Elasticsearch address is configured (elasticsearch.uri in $KV_STORAGE_CONFIG or
# KV_STORAGE_ELASTICSEARCH_URI), it uses the local development node, starting it first and
# stopping it again when the service ends if it was not running, and makes this a first run
# that works: the administration API is enabled with a token made for this run (unless
# admin.token is configured), a demo storage exists (ACCOUNT, history on; the same one on every
# run, its id kept under .cache/first-run/), and a block with the service's address, the
# Swagger UI, the token, the demo storage's id and secret and two ready-to-paste curl lines is
# printed before the service's own log lines. A configured Elasticsearch is never touched so.
#
# LOCAL_ES_NODE names the local node (default: dev). Stop the service with Ctrl-C (SIGINT).
set -euo pipefail
cd "$(dirname "$0")/.."

node=${LOCAL_ES_NODE:-dev}
kv=.venv/bin/kv-storage
started_local=
stop_local() { [[ -z $started_local ]] || scripts/local-es.sh stop --name "$node"; }
trap stop_local EXIT

local_node=
if ! $kv config --get elasticsearch.uri >/dev/null 2>&1; then
    local_node=1
    if ! scripts/local-es.sh status --name "$node" >/dev/null 2>&1; then
        started_local=1
    fi
    KV_STORAGE_ELASTICSEARCH_URI=$(scripts/local-es.sh start --name "$node" | tail -n 1)
    export KV_STORAGE_ELASTICSEARCH_URI
    echo "run: using the local Elasticsearch at $KV_STORAGE_ELASTICSEARCH_URI" >&2
fi

$kv init

if [[ -n $local_node ]]; then
    first_run=(.venv/bin/python -m kv_storage.first_run --state-dir .cache/first-run --node "$node")
    if [[ -z $($kv config --get admin.token 2>/dev/null) ]]; then
        # 43 characters of a cryptographically secure random source, new on every run.
        KV_STORAGE_ADMIN_TOKEN=$(.venv/bin/python -c 'import secrets; print(secrets.token_urlsafe(32))')
        export KV_STORAGE_ADMIN_TOKEN
        first_run+=(--show-admin-token)
    fi
    "${first_run[@]}"
fi

$kv serve
