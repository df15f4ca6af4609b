#!/usr/bin/env bash
# Local Elasticsearch nodes for development and tests, from Elastic's integration-test
# distribution (the real server, fetched once from Maven Central into .cache/).
#
#   scripts/local-es.sh start [--name NAME] [--port PORT] [--heap SIZE] [--security USER:PASSWORD]
#   scripts/local-es.sh stop [--name NAME | --all]
#   scripts/local-es.sh status [--name NAME]
#   scripts/local-es.sh url [--name NAME]
#   scripts/local-es.sh fetch
#
# `start` prints the node's URL as the last line of standard output; progress goes to standard
# error. Starting a node that is already running and healthy only prints its URL. Each node
# keeps its data, logs, configuration and pid file in .cache/es-nodes/NAME/.
set -euo pipefail

VERSION=8.19.21
ROOT=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
CACHE=$ROOT/.cache
DIST=$CACHE/elasticsearch/elasticsearch-$VERSION
NODES=$CACHE/es-nodes
RUN_AS=kvstorage-es
START_DEADLINE_S=180

log() { printf 'local-es: %s\n' "$*" >&2; }
die() { log "$*"; exit 1; }

usage() {
    sed -n '2,14p' "${BASH_SOURCE[0]}" | sed 's/^# \{0,1\}//'
}

apt_install() {
    [[ $(id -u) -eq 0 ]] || die "please install: $*"
    log "installing $*"
    DEBIAN_FRONTEND=noninteractive apt-get update -qq >&2
    DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends "$@" >&2
}

java_home() {
    local candidate
    for candidate in "${ES_JAVA_HOME:-}" /usr/lib/jvm/java-17-openjdk-amd64 \
        /usr/lib/jvm/temurin-25-jdk-amd64 /usr/lib/jvm/java-21-openjdk-amd64; do
        if [[ -n $candidate && -x $candidate/bin/java ]]; then
            echo "$candidate"
            return
        fi
    done
    if command -v java >/dev/null; then
        dirname "$(dirname "$(readlink -f "$(command -v java)")")"
        return
    fi
    die "no JDK found: install one (for instance openjdk-17-jre-headless) or set ES_JAVA_HOME"
}

fetch() {
    [[ -x $DIST/bin/elasticsearch ]] && return
    local missing=()
    command -v mvn >/dev/null || missing+=(maven)
    command -v unzip >/dev/null || missing+=(unzip)
    ((${#missing[@]} == 0)) || apt_install "${missing[@]}"
    mkdir -p "$CACHE/elasticsearch"
    local zip=$CACHE/elasticsearch/elasticsearch-$VERSION.zip
    if [[ ! -s $zip ]]; then
        log "fetching Elasticsearch $VERSION (integration-test distribution) from Maven Central"
        mvn -q dependency:copy \
            "-Dartifact=org.elasticsearch.distribution.integ-test-zip:elasticsearch:$VERSION:zip" \
            "-DoutputDirectory=$CACHE/elasticsearch" >&2
    fi
    local unpacking=$CACHE/elasticsearch/unpacking
    rm -rf "$unpacking"
    unzip -q "$zip" -d "$unpacking"
    mv "$unpacking/elasticsearch-$VERSION" "$DIST"
    rm -rf "$unpacking" "$zip"
}

free_port() {
    python3 -c 'import socket; s = socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])'
}

# Node state ---------------------------------------------------------------------------------
name=dev port= heap=512m security= all=

node_dir() { echo "$NODES/$name"; }
node_pid() {
    local pidfile
    pidfile=$(node_dir)/pid
    [[ -s $pidfile ]] || return 1
    local pid
    pid=$(<"$pidfile")
    kill -0 "$pid" 2>/dev/null || return 1
    echo "$pid"
}

curl_node() {
    local url=$1
    shift
    local auth=()
    [[ -s $(node_dir)/credentials ]] && auth=(-u "$(<"$(node_dir)/credentials")")
    curl -fsS --max-time 10 "${auth[@]}" "$@" "$url"
}

healthy() {
    [[ -s $(node_dir)/url ]] || return 1
    node_pid >/dev/null || return 1
    local url
    url=$(<"$(node_dir)/url")
    curl_node "$url/_cluster/health?wait_for_status=yellow&timeout=5s" >/dev/null 2>&1
}

as_node_user() {
    if [[ $(id -u) -eq 0 ]]; then
        runuser -u "$RUN_AS" -- env "$@"
    else
        env "$@"
    fi
}

start() {
    local dir
    dir=$(node_dir)
    if healthy; then
        cat "$dir/url"
        return
    fi
    stop_node quietly
    fetch
    local http_port=${port:-$(free_port)} transport_port
    transport_port=$(free_port)
    while [[ $transport_port == "$http_port" ]]; do transport_port=$(free_port); done

    local security_enabled=false
    [[ -z $security ]] || security_enabled=true
    rm -rf "$dir"
    mkdir -p "$dir/data" "$dir/logs"
    cp -r "$DIST/config" "$dir/config"
    cat >>"$dir/config/elasticsearch.yml" <<YAML

# written by scripts/local-es.sh
node.name: $name
cluster.name: kv-storage-$name
discovery.type: single-node
network.host: 127.0.0.1
http.port: $http_port
transport.port: $transport_port
path.data: $dir/data
path.logs: $dir/logs
cluster.routing.allocation.disk.threshold_enabled: false
action.destructive_requires_name: false
xpack.security.enabled: $security_enabled
xpack.security.http.ssl.enabled: false
xpack.security.transport.ssl.enabled: false
YAML
    sed -i "s/^-Xms.*/-Xms$heap/; s/^-Xmx.*/-Xmx$heap/" "$dir/config/jvm.options" 2>/dev/null || true

    local java
    java=$(java_home)
    if [[ $(id -u) -eq 0 ]]; then
        id "$RUN_AS" >/dev/null 2>&1 || useradd --system --no-create-home --shell /usr/sbin/nologin "$RUN_AS"
        # The node writes nothing into the distribution, but must be able to read it.
        chmod -R a+rX "$DIST"
        chown -R "$RUN_AS" "$dir"
        # Every folder above the node's must be traversable by the node's user.
        local up=$dir
        while [[ $up != / ]]; do up=$(dirname "$up"); chmod o+x "$up" 2>/dev/null || true; done
    fi
    if [[ -n $security ]]; then
        log "creating user ${security%%:*} in the file realm"
        as_node_user ES_PATH_CONF="$dir/config" ES_JAVA_HOME="$java" \
            "$DIST/bin/elasticsearch-users" useradd "${security%%:*}" -p "${security#*:}" -r superuser >&2
        printf '%s' "$security" >"$dir/credentials"
        chmod 600 "$dir/credentials"
    fi

    log "starting node $name on 127.0.0.1:$http_port"
    echo "http://127.0.0.1:$http_port" >"$dir/url"
    if ! as_node_user ES_PATH_CONF="$dir/config" ES_JAVA_HOME="$java" \
        ES_JAVA_OPTS="-Xms$heap -Xmx$heap" \
        "$DIST/bin/elasticsearch" -d -p "$dir/pid" >"$dir/logs/console.out" 2>&1 </dev/null; then
        cat "$dir/logs/console.out" >&2
        tail -n 40 "$dir/logs/"*.log >&2 2>/dev/null || true
        die "node $name did not start"
    fi
    local deadline=$((SECONDS + START_DEADLINE_S))
    until healthy; do
        if ((SECONDS > deadline)) || ! node_pid >/dev/null; then
            tail -n 40 "$dir/logs/kv-storage-$name.log" >&2 2>/dev/null || true
            stop_node quietly
            die "node $name did not become healthy"
        fi
        sleep 1
    done
    log "node $name is up at $(<"$dir/url")"
    cat "$dir/url"
}

stop_node() {
    local pid
    if ! pid=$(node_pid); then
        [[ ${1:-} == quietly ]] || log "node $name is not running"
        return 0
    fi
    log "stopping node $name (pid $pid)"
    kill -TERM "$pid" 2>/dev/null || true
    local deadline=$((SECONDS + 60))
    while kill -0 "$pid" 2>/dev/null; do
        if ((SECONDS > deadline)); then
            log "node $name did not stop in time; killing it"
            kill -KILL "$pid" 2>/dev/null || true
        fi
        sleep 0.5
    done
    rm -f "$(node_dir)/pid"
}

stop() {
    if [[ -n $all ]]; then
        local dir
        for dir in "$NODES"/*/; do
            [[ -d $dir ]] || continue
            name=$(basename "$dir")
            stop_node quietly
        done
    else
        stop_node
    fi
}

command=${1:-}
[[ -n $command ]] || { usage >&2; exit 2; }
shift
while (($#)); do
    case $1 in
    --name) name=${2:?--name needs a value}; shift 2 ;;
    --port) port=${2:?--port needs a value}; shift 2 ;;
    --heap) heap=${2:?--heap needs a value}; shift 2 ;;
    --security) security=${2:?--security needs USER:PASSWORD}; shift 2 ;;
    --all) all=1; shift ;;
    -h | --help) usage; exit 0 ;;
    *) log "unknown option $1"; usage >&2; exit 2 ;;
    esac
done
[[ $name =~ ^[a-z0-9][a-z0-9-]*$ ]] || die "node names are lower-case letters, digits and -"
[[ -z $security || $security == *:* ]] || die "--security needs USER:PASSWORD"

case $command in
start) start ;;
stop) stop ;;
status) healthy && cat "$(node_dir)/url" ;;
url) [[ -s $(node_dir)/url ]] && cat "$(node_dir)/url" ;;
fetch) fetch ;;
-h | --help | help) usage ;;
*) log "unknown command $command"; usage >&2; exit 2 ;;
esac
