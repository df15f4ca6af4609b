#!/usr/bin/env bash
# Local Elasticsearch nodes for development and tests, from Elastic's integration-test
# distribution (the real server with fewer modules), fetched once from Maven Central.
#
# Usage: scripts/local-es.sh COMMAND [OPTIONS]
#
#   fetch                       fetch and unpack Elasticsearch into .cache/elasticsearch/
#                               unless it is there already
#   start [--name NAME] [--port PORT] [--heap SIZE] [--security USER:PASSWORD [--tls]]
#                               start node NAME (default: dev) unless it runs and is healthy;
#                               print its URL (http://127.0.0.1:PORT) as the last line
#   stop [--name NAME | --all]  stop node NAME, or every node under .cache/es-nodes/
#   status [--name NAME]        print the URL and exit 0 if the node runs and is healthy,
#                               else exit 1
#   url [--name NAME]           print the node's URL (exit 1 if it was never started)
#   ca-file [--name NAME]       print the path of the CA certificate of a --tls node
#   -h, --help                  print this help
#
# A cluster of nodes on this machine: start each with --cluster NAME --transport-port PORT
# --seeds PORT,PORT,... (every member's transport port) --masters NODE,NODE,... (their names),
# all at once (each start waits until the cluster has formed).
#
# start: one single-node cluster on 127.0.0.1. Without --port, the previous port of NAME is
# reused when free, else any free port. --heap defaults to 512m. --security turns security on
# (HTTP stays plain) with USER a file-realm superuser. --tls (with --security) serves HTTPS
# (https://127.0.0.1:PORT) with a certificate for IP:127.0.0.1 and DNS:localhost, signed by a
# CA of the node's own; both are made with openssl once and kept in tls/ (ca.crt, node.crt),
# so their fingerprints stay the same across restarts. A running node whose --security,
# --tls (or explicit --port / --heap) differs is restarted. Progress goes to standard error.
# Each node keeps its state in .cache/es-nodes/NAME/: data/ (kept across restarts: delete the
# folder to start empty), logs/, config/ (rewritten at each start), pid, url.
# Run as root, the node runs as the system user kvstorage-es (Elasticsearch refuses root),
# which the script creates, and every folder above the node's is made traversable for it
# (chmod o+x, logged). What the script needs and misses (Maven and unzip to fetch, curl, a
# JDK) it installs with apt-get when run as root; otherwise it names what to install.
# Exit status: 0 success, 1 failure, 2 usage error.
set -euo pipefail

VERSION=8.19.21
ARTIFACT=org.elasticsearch.distribution.integ-test-zip:elasticsearch:$VERSION:zip
ROOT=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
CACHE=$ROOT/.cache
DOWNLOADS=$CACHE/elasticsearch
DIST=$DOWNLOADS/elasticsearch-$VERSION
NODES=$CACHE/es-nodes
LOCKS=$CACHE/locks
RUN_AS=kvstorage-es
START_DEADLINE_S=120
STOP_DEADLINE_S=60
LOCK_WAIT_S=900

log() { printf 'local-es: %s\n' "$*" >&2; }
die() { log "$*"; exit 1; }
usage() { sed -n '2,/^set -euo/p' "${BASH_SOURCE[0]}" | sed '$d; s/^# \{0,1\}//'; }
usage_error() { log "$*"; log "usage: see $0 --help"; exit 2; }
is_root() { [[ $(id -u) -eq 0 ]]; }

# Takes the lock NAME (a file under .cache/locks/) for the rest of the script: concurrent
# calls for one node (or concurrent fetches) wait for each other instead of racing.
lock() {
    mkdir -p "$LOCKS"
    local fd
    exec {fd}>"$LOCKS/$1.lock"
    flock -w "$LOCK_WAIT_S" "$fd" || die "could not take the lock $LOCKS/$1.lock"
    lock_fds+=("$fd")
}
lock_fds=()

# Fetching ----------------------------------------------------------------------------------

apt_updated=
apt_update_once() {
    [[ -z $apt_updated ]] || return 0
    log "apt-get update"
    DEBIAN_FRONTEND=noninteractive apt-get update -qq </dev/null >&2
    apt_updated=1
}

apt_install() {
    is_root || die "missing: $* (install it, or run this script as root to let it install it)"
    command -v apt-get >/dev/null || die "missing: $* (and no apt-get to install it)"
    apt_update_once
    log "installing $*"
    DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends "$@" \
        </dev/null >&2
}

fetch() {
    [[ -x $DIST/bin/elasticsearch ]] && return
    lock fetch
    [[ -x $DIST/bin/elasticsearch ]] && return  # fetched by another call meanwhile
    local missing=()
    command -v mvn >/dev/null || missing+=(maven)
    command -v unzip >/dev/null || missing+=(unzip)
    ((${#missing[@]} == 0)) || apt_install "${missing[@]}"
    mkdir -p "$DOWNLOADS"
    local zip=$DOWNLOADS/elasticsearch-$VERSION.zip started=$SECONDS
    log "fetching $ARTIFACT from Maven Central"
    rm -f "$zip"
    mvn -B -q dependency:copy "-Dartifact=$ARTIFACT" "-DoutputDirectory=$DOWNLOADS" \
        </dev/null >&2 || die "mvn could not fetch $ARTIFACT"
    [[ -s $zip ]] || die "mvn did not write $zip"
    log "unpacking into $DIST"
    local unpacking=$DOWNLOADS/unpacking
    rm -rf "$unpacking"
    if ! unzip -q "$zip" -d "$unpacking" </dev/null; then
        rm -rf "$unpacking" "$zip"
        die "could not unpack $zip"
    fi
    rm -rf "$DIST"
    mv "$unpacking/elasticsearch-$VERSION" "$DIST"  # appears complete, or not at all
    rm -rf "$unpacking" "$zip"
    log "Elasticsearch $VERSION is in $DIST ($((SECONDS - started)) s)"
}

java_home() {
    local candidate
    for candidate in "${ES_JAVA_HOME:-}" /usr/lib/jvm/java-17-openjdk-amd64 \
        /usr/lib/jvm/temurin-25-jdk-amd64; do
        if [[ -n $candidate && -x $candidate/bin/java ]]; then
            echo "$candidate"
            return
        fi
    done
    if ! command -v java >/dev/null; then
        install_jdk
    fi
    dirname "$(dirname "$(readlink -f "$(command -v java)")")"
}

# The integration-test distribution brings no JDK of its own: as root, install Debian's
# (Elasticsearch 8 runs on 17 or newer), else say what is missing.
install_jdk() {
    local hint="no JDK found: install one (17 or newer, for instance openjdk-17-jre-headless) or set ES_JAVA_HOME"
    is_root && command -v apt-get >/dev/null || die "$hint"
    apt_update_once
    local package
    for package in openjdk-17-jre-headless openjdk-21-jre-headless; do
        if apt-cache show "$package" >/dev/null 2>&1; then
            apt_install "$package"
            command -v java >/dev/null || die "$hint"
            return
        fi
    done
    die "$hint"
}

# Ports ---------------------------------------------------------------------------------------

free_port() {
    python3 -c 'import socket; s = socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])'
}

port_free() {
    python3 - "$1" <<'PY' 2>/dev/null
import socket, sys
s = socket.socket()
# Like Elasticsearch itself: connections of a node just stopped (TIME_WAIT) do not count.
s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
s.bind(("127.0.0.1", int(sys.argv[1])))
PY
}

# One node ----------------------------------------------------------------------------------

name=dev port='' heap='' security='' tls='' all='' fixed_transport_port='' cluster='' seeds=''
masters=''

node_dir() { echo "$NODES/$name"; }

# Whether PID is the Elasticsearch process of this node, not some process that got the pid of
# a node that died (the server's working directory is the node's logs/ folder).
is_node_process() {
    local pid=$1
    kill -0 "$pid" 2>/dev/null || [[ -d /proc/$pid ]] || return 1
    [[ -d /proc/$pid ]] || return 0  # no /proc: trust the pid file
    tr '\0' ' ' <"/proc/$pid/cmdline" 2>/dev/null | grep -q 'org\.elasticsearch\.bootstrap' ||
        return 1
    local cwd
    cwd=$(readlink "/proc/$pid/cwd" 2>/dev/null) || return 0  # not ours to inspect: trust it
    [[ $cwd == "$(node_dir)/logs" ]]
}

# Prints the pid of the node's process; fails when the node does not run. A missing or stale
# pid file is no obstacle: the process is also looked for by its working directory.
node_pid() {
    local pidfile pid
    pidfile=$(node_dir)/pid
    if [[ -s $pidfile ]]; then
        pid=$(<"$pidfile")
        if [[ $pid =~ ^[0-9]+$ ]] && is_node_process "$pid"; then
            echo "$pid"
            return
        fi
    fi
    local proc logs
    logs=$(node_dir)/logs
    for proc in /proc/[0-9]*; do
        pid=${proc#/proc/}
        [[ $(readlink "$proc/cwd" 2>/dev/null) == "$logs" ]] || continue
        if is_node_process "$pid"; then
            echo "$pid"
            return
        fi
    done
    return 1
}

# curl to the node, with the node's credentials if it has some (given through a curl config
# on a pipe, so that they never appear on a command line).
curl_node() {
    local path=$1 credentials_file
    credentials_file=$(node_dir)/credentials
    local url tls_options=()
    url=$(<"$(node_dir)/url")
    [[ $url == https://* ]] && tls_options=(--cacert "$(node_dir)/tls/ca.crt")
    if [[ -s $credentials_file ]]; then
        local credentials
        credentials=$(<"$credentials_file")
        credentials=${credentials//\\/\\\\}
        curl -fsS --max-time 15 "${tls_options[@]}" \
            -K <(printf 'user = "%s"\n' "${credentials//\"/\\\"}") "$url$path"
    else
        curl -fsS --max-time 15 "${tls_options[@]}" "$url$path"
    fi
}

healthy() {
    [[ -s $(node_dir)/url ]] || return 1
    node_pid >/dev/null || return 1
    curl_node "/_cluster/health?wait_for_status=yellow&timeout=${1:-5s}" >/dev/null 2>&1
}

as_node_user() {
    if is_root; then
        runuser -u "$RUN_AS" -- env "$@"
    else
        env "$@"
    fi
}

# Gives the node's user what it needs: reading the distribution, owning the node's folder, and
# passing through every folder above them.
prepare_node_user() {
    is_root || return 0
    if ! id "$RUN_AS" >/dev/null 2>&1; then
        log "creating the system user $RUN_AS (Elasticsearch does not run as root)"
        useradd --system --no-create-home --shell /usr/sbin/nologin "$RUN_AS"
    fi
    chmod -R a+rX "$DIST"
    chown -R "$RUN_AS:" "$(node_dir)"
    local up
    up=$(node_dir)
    while [[ $up != / ]]; do
        up=$(dirname "$up")
        if ! runuser -u "$RUN_AS" -- test -x "$up"; then
            log "letting $RUN_AS traverse $up (chmod o+x)"
            chmod o+x "$up"
        fi
    done
}

log_tail() {
    local dir
    dir=$(node_dir)
    [[ -s $dir/logs/console.out ]] && tail -n 20 "$dir/logs/console.out" >&2
    if [[ -s $dir/logs/kv-storage-$name.log ]]; then
        log "last lines of $dir/logs/kv-storage-$name.log:"
        tail -n 40 "$dir/logs/kv-storage-$name.log" >&2
    fi
    return 0
}

# Whether the running node was started with the options asked for now.
same_options() {
    local dir
    dir=$(node_dir)
    [[ $security == "$(cat "$dir/credentials" 2>/dev/null)" ]] || return 1
    [[ $(<"$dir/url") == "$scheme://"* ]] || return 1
    [[ -z $port ]] || [[ $(<"$dir/url") == "$scheme://127.0.0.1:$port" ]] || return 1
    [[ -z $heap ]] || [[ $heap == "$(cat "$dir/heap" 2>/dev/null)" ]] || return 1
}

# A CA and a node certificate signed by it, for 127.0.0.1 and localhost, unless DIR has them.
make_certificates() {
    local dir=$1
    [[ -s $dir/ca.crt && -s $dir/node.crt && -s $dir/node.key ]] && return
    command -v openssl >/dev/null || apt_install openssl
    log "making a CA and a node certificate in $dir"
    rm -rf "$dir"
    mkdir -p "$dir"
    (
        cd "$dir"
        openssl req -x509 -newkey rsa:2048 -nodes -days 3650 -sha256 \
            -subj "/CN=kv-storage local-es CA $name" -keyout ca.key -out ca.crt 2>/dev/null
        openssl req -newkey rsa:2048 -nodes -sha256 -subj "/CN=localhost" \
            -keyout node.key -out node.csr 2>/dev/null
        printf '%s\n' "subjectAltName=IP:127.0.0.1,DNS:localhost" "basicConstraints=CA:FALSE" \
            "keyUsage=digitalSignature,keyEncipherment" "extendedKeyUsage=serverAuth" \
            "subjectKeyIdentifier=hash" "authorityKeyIdentifier=keyid" >node.ext
        openssl x509 -req -in node.csr -CA ca.crt -CAkey ca.key -CAcreateserial -days 3650 \
            -sha256 -extfile node.ext -out node.crt 2>/dev/null
        rm -f node.csr node.ext ca.srl
    ) || die "openssl could not make the certificates in $dir"
    chmod 600 "$dir/ca.key" "$dir/node.key"
}

start() {
    lock "node-$name"
    local dir
    dir=$(node_dir)
    if healthy; then
        if same_options; then
            log "node $name already runs"
            cat "$dir/url"
            return
        fi
        log "node $name runs with other options: restarting it"
    fi
    stop_node quietly
    fetch
    command -v curl >/dev/null || apt_install curl  # asks the node whether it is healthy
    local java
    java=$(java_home)
    heap=${heap:-512m}

    local http_port=$port previous_port=
    [[ -s $dir/url ]] && previous_port=$(sed -n 's|^https\{0,1\}://127\.0\.0\.1:\([0-9]*\)$|\1|p' "$dir/url")
    if [[ -n $http_port ]]; then
        port_free "$http_port" || die "port $http_port is in use"
    elif [[ -n $previous_port ]] && port_free "$previous_port"; then
        http_port=$previous_port
    else
        http_port=$(free_port)
    fi
    local transport_port=$fixed_transport_port
    if [[ -z $transport_port ]]; then
        transport_port=$(free_port)
        while [[ $transport_port == "$http_port" ]]; do transport_port=$(free_port); done
    fi
    # One node alone, or a member of a cluster of nodes on this machine (--cluster, --seeds
    # with their transport ports, --masters with their names).
    local discovery="discovery.type: single-node" cluster_name=kv-storage-$name
    if [[ -n $cluster ]]; then
        cluster_name=kv-storage-$cluster
        discovery="discovery.seed_hosts: [$(sed 's/\([0-9][0-9]*\)/"127.0.0.1:\1"/g' <<<"$seeds")]
cluster.initial_master_nodes: [$masters]"
    fi

    mkdir -p "$dir/data" "$dir/logs"
    rm -rf "$dir/config" "$dir/pid" "$dir/url" "$dir/credentials" "$dir/heap"
    cp -r "$DIST/config" "$dir/config"
    cat >>"$dir/config/elasticsearch.yml" <<YAML

# ---------------------------------- written by scripts/local-es.sh ----------------------------------
node.name: $name
cluster.name: $cluster_name
$discovery
network.host: 127.0.0.1
http.port: $http_port
transport.port: $transport_port
path.data: $dir/data
path.logs: $dir/logs
cluster.routing.allocation.disk.threshold_enabled: false
action.destructive_requires_name: false
xpack.security.enabled: $([[ -n $security ]] && echo true || echo false)
xpack.security.transport.ssl.enabled: false
YAML
    if [[ -n $tls ]]; then
        make_certificates "$dir/tls"
        cp "$dir/tls/ca.crt" "$dir/tls/node.crt" "$dir/tls/node.key" "$dir/config/"
        cat >>"$dir/config/elasticsearch.yml" <<YAML
xpack.security.http.ssl.enabled: true
xpack.security.http.ssl.key: node.key
xpack.security.http.ssl.certificate: node.crt
xpack.security.http.ssl.certificate_authorities: ca.crt
YAML
    else
        echo "xpack.security.http.ssl.enabled: false" >>"$dir/config/elasticsearch.yml"
    fi
    prepare_node_user

    if [[ -n $security ]]; then
        log "creating the superuser ${security%%:*} in the node's file realm"
        as_node_user ES_PATH_CONF="$dir/config" ES_JAVA_HOME="$java" \
            "$DIST/bin/elasticsearch-users" useradd "${security%%:*}" -p "${security#*:}" \
            -r superuser </dev/null >&2 || die "could not create the user ${security%%:*}"
        (umask 077 && printf '%s' "$security" >"$dir/credentials")
    fi
    echo "$heap" >"$dir/heap"
    echo "$scheme://127.0.0.1:$http_port" >"$dir/url"

    log "starting node $name on 127.0.0.1:$http_port (heap $heap, Java $java)"
    local deadline=$((SECONDS + START_DEADLINE_S))
    local launch=(env ES_PATH_CONF="$dir/config" ES_JAVA_HOME="$java"
        ES_JAVA_OPTS="-Xms$heap -Xmx$heap" "$DIST/bin/elasticsearch" -d -p "$dir/pid")
    is_root && launch=(runuser -u "$RUN_AS" -- "${launch[@]}")
    # `-d` returns once the node has started. The lock descriptors are closed for it: a node
    # that kept one open would hold the lock as long as it runs.
    if ! (
        for fd in "${lock_fds[@]}"; do exec {fd}>&-; done
        exec timeout --kill-after=10 "$START_DEADLINE_S" "${launch[@]}"
    ) >"$dir/logs/console.out" 2>&1 </dev/null; then
        log_tail
        stop_node quietly
        die "node $name did not start"
    fi
    until healthy 2s; do
        if ((SECONDS > deadline)) || ! node_pid >/dev/null; then
            log_tail
            stop_node quietly
            die "node $name did not become healthy within $START_DEADLINE_S s"
        fi
        sleep 1
    done
    log "node $name is up at $(<"$dir/url") ($((SECONDS - deadline + START_DEADLINE_S)) s)"
    cat "$dir/url"
}

stop_node() {
    local pid
    if ! pid=$(node_pid); then
        rm -f "$(node_dir)/pid"
        [[ ${1:-} == quietly ]] || log "node $name does not run"
        return 0
    fi
    log "stopping node $name (pid $pid)"
    kill -TERM "$pid" 2>/dev/null || true
    local deadline=$((SECONDS + STOP_DEADLINE_S)) killed=
    while kill -0 "$pid" 2>/dev/null; do
        if ((SECONDS > deadline)) && [[ -z $killed ]]; then
            log "node $name did not stop within $STOP_DEADLINE_S s: killing it"
            kill -KILL "$pid" 2>/dev/null || true
            killed=1
        fi
        sleep 0.5
    done
    rm -f "$(node_dir)/pid"
}

stop() {
    if [[ -z $all ]]; then
        lock "node-$name"
        stop_node
        return
    fi
    local dir
    for dir in "$NODES"/*/; do
        [[ -d $dir ]] || continue
        name=$(basename "$dir")
        [[ $name =~ ^[a-z0-9][a-z0-9-]*$ ]] || continue
        (lock "node-$name" && stop_node quietly)
    done
}

status() {
    if healthy; then
        cat "$(node_dir)/url"
    else
        log "node $name does not run or is not healthy"
        return 1
    fi
}

url() {
    [[ -s $(node_dir)/url ]] || die "node $name was never started"
    cat "$(node_dir)/url"
}

ca_file() {
    [[ -s $(node_dir)/tls/ca.crt ]] || die "node $name was never started with --tls"
    echo "$(node_dir)/tls/ca.crt"
}

# Command line --------------------------------------------------------------------------------

(($#)) || usage_error "no command given"
command=$1
shift
while (($#)); do
    case $1 in
    --name | --port | --heap | --security | --transport-port | --cluster | --seeds | --masters)
        (($# >= 2)) || usage_error "$1 needs a value"
        case $1 in
        --name) name=$2 ;;
        --port) port=$2 ;;
        --heap) heap=$2 ;;
        --security) security=$2 ;;
        --transport-port) fixed_transport_port=$2 ;;
        --cluster) cluster=$2 ;;
        --seeds) seeds=$2 ;;
        --masters) masters=$2 ;;
        esac
        shift 2
        ;;
    --all) all=1; shift ;;
    --tls) tls=1; shift ;;
    -h | --help) usage; exit 0 ;;
    *) usage_error "unknown option $1" ;;
    esac
done
[[ $name =~ ^[a-z0-9][a-z0-9-]*$ ]] || usage_error "a node name is lower-case letters, digits and -"
[[ -z $port || ($port =~ ^[0-9]+$ && $port -ge 1 && $port -le 65535) ]] ||
    usage_error "--port needs a port number"
[[ -z $heap || $heap =~ ^[0-9]+[kmgKMG]$ ]] || usage_error "--heap needs a size such as 512m or 1g"
[[ -z $security || $security =~ ^[^:]+:.{6,}$ ]] ||
    usage_error "--security needs USER:PASSWORD, the password at least 6 characters long"
[[ -z $tls || -n $security ]] || usage_error "--tls needs --security (HTTPS needs security on)"
scheme=http
[[ -z $tls ]] || scheme=https

case $command in
fetch) fetch ;;
start) start ;;
stop) stop ;;
status) status ;;
url) url ;;
ca-file) ca_file ;;
-h | --help | help) usage ;;
*) usage_error "unknown command $command" ;;
esac
