#!/bin/sh
# A protocol-speaking test connector in plain sh (any language must work with ferry).
# It emits every message type plus lines that are not JSON. What `check` does depends on the
# config's "mode": ok, fail, leak (echoes the api_key everywhere), config_error, transient_error,
# system_error, late_crash (prints its result, then exits 1).

verb=$1
shift
config=""
while [ $# -gt 0 ]; do
    case $1 in
        --config) config=$2; shift 2 ;;
        --catalog|--state) shift 2 ;;
        *) shift ;;
    esac
done

field() {  # the string value of a top-level field of the config (good enough for tests)
    sed -n "s/.*\"$1\": *\"\([^\"]*\)\".*/\1/p" "$config"
}

log() {
    printf '{"type":"LOG","log":{"level":"%s","message":"%s"}}\n' "$1" "$2"
}

trace_error() {
    printf '{"type":"TRACE","trace":{"type":"ERROR","emitted_at":1.0,"error":{"message":"%s","failure_type":"%s"}}}\n' "$2" "$1"
}

spec() {
    echo "protocol.sh starting (not JSON)"
    log INFO "printing the spec"
    cat <<'SPEC'
{"type":"SPEC","spec":{"documentationUrl":"https://example.com/protocol-sh","connectionSpecification":{"$schema":"http://json-schema.org/draft-07/schema#","type":"object","required":["api_key","count"],"additionalProperties":false,"properties":{"api_key":{"type":"string","airbyte_secret":true,"minLength":4},"count":{"type":"integer","minimum":1},"mode":{"type":"string","enum":["ok","fail","leak","config_error","transient_error","system_error","late_crash"]},"tags":{"type":"array","items":{"type":"string","maxLength":5}},"credentials":{"type":"object","oneOf":[{"title":"password","required":["password"],"properties":{"password":{"type":"string","airbyte_secret":true}}},{"title":"token","required":["token"],"properties":{"token":{"type":"string","airbyte_secret":true}}}]}}}}}
SPEC
}

check() {
    key=$(field api_key)
    case $(field mode) in
        fail)
            printf '{"type":"CONNECTION_STATUS","connectionStatus":{"status":"FAILED","message":"the service refused the api key"}}\n' ;;
        leak)
            echo "stdout text with the key $key"
            echo "stderr text with the key $key" >&2
            log INFO "logging the key $key"
            trace_error config_error "the key $key was rejected"
            printf '{"type":"CONNECTION_STATUS","connectionStatus":{"status":"FAILED","message":"bad key %s"}}\n' "$key" ;;
        config_error|transient_error|system_error)
            echo "about to fail" >&2
            trace_error "$(field mode)" "cannot reach the service"
            exit 1 ;;
        late_crash)
            printf '{"type":"CONNECTION_STATUS","connectionStatus":{"status":"SUCCEEDED"}}\n'
            exit 1 ;;
        *)
            log INFO "checked"
            printf '{"type":"CONNECTION_STATUS","connectionStatus":{"status":"SUCCEEDED"}}\n' ;;
    esac
}

discover() {
    echo "discovering (not JSON)"
    echo "{not json either"
    log WARN "a warning from discover"
    printf '{"type":"TRACE","trace":{"type":"ESTIMATE","emitted_at":1.0,"estimate":{"name":"users","type":"STREAM","row_estimate":10}}}\n'
    printf '{"type":"TRACE","trace":{"type":"STREAM_STATUS","emitted_at":1.0,"stream_status":{"stream_descriptor":{"name":"users"},"status":"STARTED"}}}\n'
    printf '{"type":"TRACE","trace":{"type":"ANALYTICS","emitted_at":1.0,"analytics":{"type":"discover","value":"1"}}}\n'
    printf '{"type":"CONTROL","control":{"type":"CONNECTOR_CONFIG","emitted_at":1.0,"connectorConfig":{"config":{"api_key":"rotated"}}}}\n'
    printf '{"type":"RECORD","record":{"stream":"users","data":{"id":1},"emitted_at":1}}\n'
    printf '{"type":"STATE","state":{"type":"STREAM","stream":{"stream_descriptor":{"name":"users"},"stream_state":{"id":1}}}}\n'
    printf '{"type":"SPEC","spec":{"connectionSpecification":{}}}\n'
    printf '{"type":"CONNECTION_STATUS","connectionStatus":{"status":"SUCCEEDED"}}\n'
    printf '{"type":"CATALOG"}\n'
    printf '{"type":"CATALOG","catalog":{"streams":[{"name":"users","json_schema":{"type":"object"},"supported_sync_modes":["full_refresh","incremental"],"source_defined_cursor":true,"default_cursor_field":["updated_at"],"source_defined_primary_key":[["id"]]},{"name":"events","namespace":"app","json_schema":{"type":"object"},"supported_sync_modes":["full_refresh"]}]}}\n'
    printf '{"type":"TRACE","trace":{"type":"STREAM_STATUS","emitted_at":2.0,"stream_status":{"stream_descriptor":{"name":"users"},"status":"COMPLETE"}}}\n'
}

read_records() {
    log INFO "reading"
    printf '{"type":"RECORD","record":{"stream":"users","data":{"id":1,"updated_at":"2024-01-01"},"emitted_at":1}}\n'
    printf '{"type":"STATE","state":{"type":"STREAM","stream":{"stream_descriptor":{"name":"users"},"stream_state":{"updated_at":"2024-01-01"}}}}\n'
}

write_records() {
    # Echo each STATE once everything before it is "written" (here: read).
    grep '"type": *"STATE"' || true
}

case $verb in
    spec) spec ;;
    check) check ;;
    discover) discover ;;
    read) read_records ;;
    write) write_records ;;
    *) echo "unknown verb $verb" >&2; exit 2 ;;
esac
