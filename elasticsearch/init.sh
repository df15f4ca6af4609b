#!/usr/bin/env bash
# Creates the indices and index templates of kv-storage that are missing in an Elasticsearch
# cluster, and reports those that already exist; running it again is safe.
#
# The definitions are the JSON files beside this script (indices/ and templates/), the same
# files `kv-storage init` reads: this script holds no mapping of its own.
set -euo pipefail

DEFINITIONS=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
PLACEHOLDER=__PREFIX__

usage() {
    cat <<USAGE
Usage: $(basename "$0") [options] <Elasticsearch URL>

Creates the kv-storage indices (storage-registry, storage-registry-lock) and index templates
(storage-data, storage-history) that are missing; reports those that exist.

Options:
  -h             print this help and exit
  -u USER:PASS   authenticate with these credentials (basic authentication)
  -i             ask for the username and password (the password is not echoed)
  -p PREFIX      put PREFIX in front of every index and template name (default: none)

Example:
  $(basename "$0") -p t1- -u elastic:changeme http://localhost:9200
USAGE
}

fail_usage() {
    printf '%s: %s\n' "$(basename "$0")" "$1" >&2
    usage >&2
    exit 2
}

credentials= prefix= interactive=
while getopts ":hu:ip:" option; do
    case $option in
    h) usage; exit 0 ;;
    u) credentials=$OPTARG ;;
    i) interactive=1 ;;
    p) prefix=$OPTARG ;;
    :) fail_usage "option -$OPTARG needs a value" ;;
    *) fail_usage "unknown option -$OPTARG" ;;
    esac
done
shift $((OPTIND - 1))
(($# == 1)) || fail_usage "expected exactly one Elasticsearch URL"
url=${1%/}
[[ $url =~ ^https?://[^/]+$ ]] || fail_usage "not an http:// or https:// URL: $1"

if [[ -n $prefix ]]; then
    [[ $prefix == "${prefix,,}" ]] || fail_usage "the prefix must be lower case: $prefix"
    [[ $prefix != [-_+]* ]] || fail_usage "the prefix cannot start with -, _ or +: $prefix"
    [[ $prefix != *[\\/*?\"\<\>\|\ ,#:]* ]] ||
        fail_usage "the prefix has a character index names cannot have: $prefix"
fi
if [[ -n $interactive ]]; then
    read -r -p "Username: " username
    read -r -s -p "Password: " password
    echo >&2
    credentials=$username:$password
fi
[[ -z $credentials || $credentials == *:* ]] || fail_usage "-u needs USER:PASSWORD"

# Credentials go to curl through a config on standard input, never on its command line.
request() {
    local method=$1 path=$2 body=${3:-}
    local args=(-sS -o "$response_file" -w '%{http_code}' --max-time 30)
    if [[ $method == HEAD ]]; then args+=(-I); else args+=(-X "$method"); fi
    [[ -z $body ]] || args+=(-H 'Content-Type: application/json' --data-binary "@$body")
    if [[ -n $credentials ]]; then
        printf 'user = "%s"\n' "${credentials//\"/\\\"}" | curl "${args[@]}" -K - "$url$path"
    else
        curl "${args[@]}" "$url$path"
    fi
}

response_file=$(mktemp)
body_file=$(mktemp)
trap 'rm -f "$response_file" "$body_file"' EXIT

# $1: kind (index | template), $2: name, $3: path of the resource, $4: definition file
ensure() {
    local kind=$1 name=$2 path=$3 definition=$4 status
    if ! status=$(request HEAD "$path"); then
        echo "cannot reach Elasticsearch at $url" >&2
        exit 1
    fi
    case $status in
    200) echo "$kind $name already exists"; return ;;
    404) ;;
    401 | 403) echo "Elasticsearch refused the credentials ($status) for $kind $name" >&2; exit 1 ;;
    *) echo "unexpected answer $status when looking for $kind $name" >&2; exit 1 ;;
    esac
    sed "s/$PLACEHOLDER/$prefix/g" "$definition" >"$body_file"
    status=$(request PUT "$path" "$body_file") || { echo "cannot reach Elasticsearch at $url" >&2; exit 1; }
    if [[ $status == 200 ]]; then
        echo "$kind $name created"
    elif [[ $status == 400 ]] && grep -q 'already_exists\|already exists' "$response_file"; then
        echo "$kind $name already exists"  # created by someone else in the meantime
    else
        echo "creating $kind $name failed ($status): $(cat "$response_file")" >&2
        exit 1
    fi
}

shopt -s nullglob
for definition in "$DEFINITIONS"/indices/*.json; do
    name=$prefix$(basename "$definition" .json)
    ensure index "$name" "/$name" "$definition"
done
for definition in "$DEFINITIONS"/templates/*.json; do
    name=$prefix$(basename "$definition" .json)
    ensure template "$name" "/_index_template/$name" "$definition"
done
