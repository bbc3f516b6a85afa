#!/bin/sh
# A source that appends a line to "$0.spec-runs" on every `spec`, to prove when ferry runs it.
# Its spec marks api_key as airbyte_secret (and needs 4+ characters); `read` logs that key on
# stderr, so tests can see it masked. Tests copy it to a temp dir: the counter lands there.

verb=$1
shift
config=""
while [ $# -gt 0 ]; do
    case $1 in
        --config) config=$2; shift 2 ;;
        *) shift ;;
    esac
done

case $verb in
    spec)
        echo spec >> "$0.spec-runs"
        echo '{"type":"SPEC","spec":{"connectionSpecification":{"type":"object","required":["api_key"],"properties":{"api_key":{"type":"string","airbyte_secret":true,"minLength":4}}}}}' ;;
    discover)
        echo '{"type":"CATALOG","catalog":{"streams":[{"name":"items","json_schema":{"type":"object"},"supported_sync_modes":["full_refresh"]}]}}' ;;
    read)
        key=$(sed -n 's/.*"api_key": *"\([^"]*\)".*/\1/p' "$config")
        echo "reading with the key $key" >&2
        echo '{"type":"RECORD","record":{"stream":"items","data":{"id":1},"emitted_at":1}}' ;;
    *) echo "unknown verb $verb" >&2; exit 2 ;;
esac
