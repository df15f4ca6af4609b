#!/usr/bin/env bash
# Creates the indices and index templates of kv-storage that are missing in an Elasticsearch
# cluster, upgrades those an older version left (every definition carries a version: a
# template's "version", an index's "_meta.version"; none is 0), and reports each: created,
# upgraded from version X to Y, up to date. Running it again is safe. An upgrade replaces a
# template and extends the mappings of existing indices (PUT _mapping only adds); it never
# deletes or rewrites data. kv-storage init does the same from the service's configuration.
#
# The definitions are the JSON files beside this script, the same files `kv-storage init`
# reads; the script holds no mapping of its own:
#   indices/NAME.json    body of PUT /PREFIXNAME
#   templates/NAME.json  body of PUT /_index_template/PREFIXNAME, with __PREFIX__ replaced
#                        by PREFIX (the templates' index patterns)
#
# It also makes the key that signs history scroll tokens (32 random bytes from /dev/urandom)
# in storage-signing-keys, unless one exists: every service instance reads that one key.
#
# Needs only bash, curl, sed, head and base64. Exit status: 0 done,
# 1 Elasticsearch unreachable or refusing (or its TLS certificate not trusted), 2 usage error.
set -euo pipefail

PROGRAM=${0##*/}
here=${BASH_SOURCE[0]%/*}
[[ $here != "${BASH_SOURCE[0]}" ]] || here=.
DEFINITIONS=$(cd "$here" && pwd)
PLACEHOLDER=__PREFIX__
MAX_PREFIX_BYTES=100

usage() {
    cat <<USAGE
Usage: $PROGRAM [options] <Elasticsearch URL>

Creates the kv-storage indices (storage-registry, storage-registry-lock, storage-signing-keys),
index templates (storage-data, storage-history) and the key that signs history scroll tokens
when they are missing; reports those that exist already.

Options:
  -h             print this help and exit
  -u USER:PASS   authenticate with these credentials (basic authentication)
  -i             ask for the username and password (the password is not echoed)
  -k             authenticate with an API key, read from standard input: typed at a
                 prompt (not echoed) or from a file (-k < key-file); the encoded form
                 or id:key
  -c CA-FILE     trust the CA(s) in this PEM file for an https:// URL (a default
                 Elasticsearch 8 install: config/certs/http_ca.crt)
  -p PREFIX      put PREFIX in front of every index and template name and of the
                 templates' index patterns (default: none)

Examples:
  $PROGRAM -p t1- -u elastic:changeme http://localhost:9200
  $PROGRAM -c http_ca.crt -k https://localhost:9200 < api-key

Exit status: 0 done, 1 Elasticsearch unreachable or refusing (TLS included), 2 usage error.
USAGE
}

usage_error() {
    printf '%s: %s\n' "$PROGRAM" "$1" >&2
    printf 'Try "%s -h" for help.\n' "$PROGRAM" >&2
    exit 2
}

fail() {
    printf '%s: %s\n' "$PROGRAM" "$1" >&2
    exit 1
}

# Command line ------------------------------------------------------------------------------

credentials='' credentials_given='' prefix='' interactive='' api_key_wanted='' ca_file=''
while getopts ":hu:ikc:p:" option; do
    case $option in
    h) usage; exit 0 ;;
    u) credentials=$OPTARG credentials_given=1 ;;
    i) interactive=1 ;;
    k) api_key_wanted=1 ;;
    c) ca_file=$OPTARG ;;
    p) prefix=$OPTARG ;;
    :) usage_error "option -$OPTARG needs a value" ;;
    *) usage_error "unknown option -$OPTARG" ;;
    esac
done
shift $((OPTIND - 1))
(($# == 1)) || usage_error "expected exactly one Elasticsearch URL"
url=$1
while [[ $url == */ ]]; do url=${url%/}; done
[[ $url =~ ^https?://[^/?#]+(/[^?#]*)?$ ]] || usage_error "not an http:// or https:// URL: $1"
if [[ -n $ca_file ]]; then
    [[ $url == https://* ]] || usage_error "-c applies to https:// URLs only"
    [[ -f $ca_file && -r $ca_file ]] || usage_error "-c: cannot read $ca_file"
fi

# The index name rules of Elasticsearch, as the service's configuration applies them too.
if [[ -n $prefix ]]; then
    [[ $prefix == "${prefix,,}" ]] || usage_error "the prefix must be lower case: $prefix"
    [[ $prefix != [-_+]* ]] || usage_error "the prefix cannot start with -, _ or +: $prefix"
    [[ $prefix != *[\\/*?\"\<\>\|\ ,#:]* ]] ||
        usage_error "the prefix has a character index names cannot have (\\ / * ? \" < > | space , # :): $prefix"
    [[ $prefix != *[[:cntrl:]]* ]] || usage_error "the prefix has a control character"
    prefix_bytes=$(LC_ALL=C && echo "${#prefix}")
    ((prefix_bytes <= MAX_PREFIX_BYTES)) ||
        usage_error "the prefix is longer than $MAX_PREFIX_BYTES bytes"
fi

[[ -z $credentials_given || -z $interactive ]] || usage_error "give -u or -i, not both"
[[ -z $api_key_wanted || (-z $credentials_given && -z $interactive) ]] ||
    usage_error "give -k or -u/-i, not both"
[[ -z $credentials_given || $credentials == ?*:* ]] || usage_error "-u needs USER:PASSWORD"
if [[ -n $interactive ]]; then
    read -r -p "Username: " username || usage_error "-i: no username given"
    [[ -n $username && $username != *:* ]] || usage_error "-i: a username is not empty and has no :"
    read -r -s -p "Password: " password || usage_error "-i: no password given"
    echo >&2
    credentials=$username:$password
fi
api_key=''
if [[ -n $api_key_wanted ]]; then
    IFS= read -r -s -p "API key: " api_key || [[ -n $api_key ]] || usage_error "-k: no API key given"
    [[ -t 0 ]] && echo >&2
    api_key=${api_key%$'\r'}
    [[ -n $api_key ]] || usage_error "-k: the API key is empty"
    # id:key is what the create-API-key answer lists as id and api_key; the header wants
    # base64 of it (the answer's "encoded"), which never holds a colon.
    [[ $api_key != *:* ]] || api_key=$(printf '%s' "$api_key" | base64 -w 0)
    [[ $api_key =~ ^[A-Za-z0-9+/=_-]+$ ]] || usage_error "-k: that is not an API key"
fi

# Requests ------------------------------------------------------------------------------------

# Percent-encodes $1 for a URL path.
encode() {
    local LC_ALL=C text=$1 encoded='' char i
    for ((i = 0; i < ${#text}; i++)); do
        char=${text:i:1}
        case $char in
        [a-zA-Z0-9._~-]) encoded+=$char ;;
        *) printf -v char '%%%02X' "'$char"; encoded+=$char ;;
        esac
    done
    printf '%s' "$encoded"
}

# The curl config that gives the credentials and the CA file, if any: through a pipe, so that
# the credentials never appear on a command line.
curl_config() {
    if [[ -n $credentials ]]; then
        local quoted=${credentials//\\/\\\\}
        printf 'user = "%s"\n' "${quoted//\"/\\\"}"
    fi
    [[ -z $api_key ]] || printf 'header = "Authorization: ApiKey %s"\n' "$api_key"
    if [[ -n $ca_file ]]; then
        local file=${ca_file//\\/\\\\}
        printf 'cacert = "%s"\n' "${file//\"/\\\"}"
    fi
    return 0
}

# Why curl could not talk to Elasticsearch, from its exit status: TLS problems are named as
# such (curl's own message, on standard error above, has the detail).
unreachable() {
    case $1 in
    35 | 51 | 53 | 54 | 58 | 59 | 60 | 64 | 66 | 77 | 80 | 82 | 83 | 90 | 91)
        fail "TLS problem with Elasticsearch at $url (curl exit $1): its certificate is not trusted or the handshake failed; give the CA that signed it with -c CA-FILE" ;;
    *) fail "cannot reach Elasticsearch at $url" ;;
    esac
}

# request METHOD PATH [DEFINITION]: sets $status (the HTTP status) and $answer (the body).
# A definition file is sent as the body, with the prefix put in place of __PREFIX__
# (DEFINITION - reads the body from standard input instead).
request() {
    local method=$1 path=$2 definition=${3:-} output
    local args=(-sS --max-time 30 -w '\n%{http_code}')
    if [[ $method == HEAD ]]; then args+=(--head -o /dev/null); else args+=(-X "$method"); fi
    if [[ -n $definition ]]; then
        output=$(sed "s/$PLACEHOLDER/${prefix//&/\\&}/g" "$definition" |
            curl "${args[@]}" -K <(curl_config) -H 'Content-Type: application/json' \
                --data-binary @- "$url$path") || unreachable $?
    else
        output=$(curl "${args[@]}" -K <(curl_config) "$url$path") || unreachable $?
    fi
    status=${output##*$'\n'}
    answer=${output%$'\n'*}
}

# version_of TEXT: the first "version": N in TEXT (a definition or an answer), 0 when none.
# A template's version and its mapping's _meta version are the same in every definition here.
version_of() {
    local found
    found=$(grep -o '"version" *: *[0-9]*' <<<"$1" | head -n 1 | grep -o '[0-9]*$' || true)
    echo "${found:-0}"
}

# mappings_of FILE INDENT: the "mappings" object of a definition, as the files here format it
# (INDENT spaces before "mappings": 2 in an index, 4 in a template).
mappings_of() {
    local pad
    printf -v pad '%*s' "$2" ''
    sed -n "/^$pad\"mappings\": {/,/^$pad}/p" "$1" | sed "1s/^ *\"mappings\": //"
}

check_status() {  # check_status WHAT: fails on an answer that is neither 200 nor 404
    case $status in
    200 | 404) ;;
    401) fail "Elasticsearch refused the credentials (401) looking for $1: give -u, -i or -k" ;;
    403) fail "the user may not read $1 (403)" ;;
    *) fail "unexpected answer $status looking for $1 at $url: $answer" ;;
    esac
}

# report KIND NAME FOUND WANTED: the line for something that exists, after upgrading it when
# it is older (the caller's upgrade function runs then).
report() {
    local kind=$1 name=$2 found=$3 wanted=$4 upgrade=$5
    if ((found > wanted)); then
        echo "$kind $name is at version $found, newer than this kv-storage knows ($wanted); left alone"
    elif ((found == wanted)); then
        echo "$kind $name up to date"
    else
        "$upgrade"
        echo "$kind $name upgraded from version $found to $wanted"
    fi
}

# ensure_index NAME DEFINITION: creates the index, or extends its mapping when it is older.
ensure_index() {
    local name=$1 definition=$2 path wanted
    path="/$(encode "$name")"
    wanted=$(version_of "$(cat "$definition")")
    request GET "$path/_mapping"
    check_status "index $name"
    if [[ $status == 404 ]]; then
        request PUT "$path" "$definition"
        if [[ $status == 200 ]]; then
            echo "index $name created"
            return
        fi
        [[ $status == 400 && $answer =~ already_exists ]] ||
            fail "creating index $name failed ($status): $answer"
        request GET "$path/_mapping"  # created by someone else meanwhile
    fi
    upgrade_index() {
        request PUT "$path/_mapping" - < <(mappings_of "$definition" 2)
        [[ $status == 200 ]] || fail "upgrading index $name failed ($status): $answer"
    }
    report index "$name" "$(version_of "$answer")" "$wanted" upgrade_index
}

# ensure_template NAME DEFINITION: creates the template, or replaces it when it is older.
ensure_template() {
    local name=$1 definition=$2 path wanted
    path="/_index_template/$(encode "$name")"
    wanted=$(version_of "$(cat "$definition")")
    request GET "$path"
    check_status "template $name"
    if [[ $status == 404 ]]; then
        request PUT "$path?create=true" "$definition"
        if [[ $status == 200 ]]; then
            echo "template $name created"
            return
        fi
        request GET "$path"  # created by someone else meanwhile
        [[ $status == 200 ]] || fail "creating template $name failed ($status): $answer"
    fi
    upgrade_template() {
        request PUT "$path" "$definition"
        [[ $status == 200 ]] || fail "upgrading template $name failed ($status): $answer"
    }
    report template "$name" "$(version_of "$answer")" "$wanted" upgrade_template
}

# extend_indices PATTERN DEFINITION: gives the indices a template made before (the storages'
# data or history indices) the template's current mapping, when theirs is older.
extend_indices() {
    local pattern=$1 definition=$2 wanted all current older=() oldest name version line
    wanted=$(version_of "$(cat "$definition")")
    request GET "/_cat/indices/$(encode "$pattern")?h=index&expand_wildcards=open"
    [[ $status == 200 ]] || fail "listing the indices $pattern failed ($status): $answer"
    all=$answer
    request GET "/$(encode "$pattern")/_mapping?expand_wildcards=open&allow_no_indices=true&filter_path=*.mappings._meta.version"
    [[ $status == 200 ]] || fail "reading the mappings of $pattern failed ($status): $answer"
    current=$(grep -o '"[^"]*":{"mappings":{"_meta":{"version":[0-9]*' <<<"$answer" || true)
    oldest=$wanted
    local count=0
    while read -r name; do
        [[ -n $name ]] || continue
        count=$((count + 1))
        line=$(grep -F "\"$name\":{" <<<"$current" || true)
        version=${line##*:}
        version=${version:-0}
        if ((version < wanted)); then
            older+=("$name")
            ((version < oldest)) && oldest=$version
        fi
    done <<<"$all"
    if ((${#older[@]} == 0)); then
        echo "indices $pattern up to date ($count indices)"
        return
    fi
    local start batch joined
    for ((start = 0; start < ${#older[@]}; start += 50)); do
        batch=("${older[@]:start:50}")
        joined=$(IFS=,; echo "${batch[*]}")
        request PUT "/$(encode "$joined")/_mapping" - < <(mappings_of "$definition" 4)
        [[ $status == 200 ]] || fail "upgrading the indices $pattern failed ($status): $answer"
    done
    echo "indices $pattern upgraded from version $oldest to $wanted (${#older[@]} indices)"
}

shopt -s nullglob
definitions=("$DEFINITIONS"/indices/*.json "$DEFINITIONS"/templates/*.json)
((${#definitions[@]})) || fail "no definitions in $DEFINITIONS/indices or $DEFINITIONS/templates"
for definition in "$DEFINITIONS"/indices/*.json; do
    name=${definition##*/}
    ensure_index "$prefix${name%.json}" "$definition"
done
for definition in "$DEFINITIONS"/templates/*.json; do
    name=${definition##*/}
    ensure_template "$prefix${name%.json}" "$definition"
    extend_indices "$prefix${name%.json}-*" "$definition"
done

# The key that signs history scroll tokens: create-only, so a key in use is never replaced.
key_index=$(encode "${prefix}storage-signing-keys")
key=$(head -c 32 /dev/urandom | base64 | tr -d '\n')
printf -v document '{"key": "%s", "created": %s}' "$key" "$(date +%s%3N)"
request PUT "/$key_index/_create/history-scroll?refresh=true" - <<<"$document"
case $status in
201) echo "signing key history-scroll created" ;;
409) echo "signing key history-scroll up to date" ;;
*) fail "creating signing key history-scroll failed ($status): $answer" ;;
esac

# The key field of data documents (layout version 2): a cluster without data indices has
# nothing to migrate, which is marked so (as kv-storage init marks it); otherwise, until
# kv-storage init --migrate has filled it in, say so.
lock_index=$(encode "${prefix}storage-registry-lock")
request GET "/$lock_index/_doc/key-field"
if [[ $status == 200 && $answer == *'"found":true'* ]]; then
    echo "key field of stored data up to date"
else
    request GET "/_cat/indices/$(encode "${prefix}storage-data-*")?h=index&expand_wildcards=all"
    [[ $status == 200 ]] || fail "listing the data indices failed ($status): $answer"
    if [[ -n ${answer//[[:space:]]/} ]]; then
        echo "key field of stored data missing in data written before: run kv-storage init --migrate"
    else
        printf -v document '{"locked": false, "timestamp": %s}' "$(date +%s%3N)"
        request PUT "/$lock_index/_doc/key-field?refresh=true" - <<<"$document"
        [[ $status == 200 || $status == 201 ]] || fail "marking the key field failed ($status): $answer"
        echo "key field of stored data up to date"
    fi
fi
