#!/usr/bin/env bash
# Make Docker and Podman usable on a fresh Debian 12 machine (root, no systemd, no registry).
#
#   sudo scripts/engines.sh          # idempotent; ~1 s when everything is already in place
#
# What it does, each step only when needed:
#   1. apt-get install docker.io podman catatonit busybox-static socat docker-registry postgresql
#      apache2-utils dash openssl (catatonit: podman's pause image for `kube play`; busybox-static,
#      socat: test images; docker-registry + apache2-utils: a loopback registry with htpasswd;
#      openssl: test certificates; postgresql: the PostgreSQL store tests run their own cluster).
#   2. start dockerd in the background (log: $FERRY_DOCKERD_LOG, default /var/log/ferry-dockerd.log)
#      when `docker info` fails, and wait until it answers.
#   3. write /etc/containers/containers.conf: [containers] default_ulimits = [] (this VM refuses
#      the default rlimits: "error setting rlimit type 7"), [engine] cgroup_manager = "cgroupfs"
#      and events_logger = "file" (no systemd/journald here). Other content is kept.
#   4. check that both engines answer (and, after a change, that podman can run a container).
#
#   scripts/engines.sh --edit-conf FILE   only step 3, on FILE (used by the tests)
set -euo pipefail

PACKAGES=(docker.io podman catatonit busybox-static socat docker-registry apache2-utils dash openssl postgresql)
CONTAINERS_CONF=${FERRY_CONTAINERS_CONF:-/etc/containers/containers.conf}
DOCKERD_LOG=${FERRY_DOCKERD_LOG:-/var/log/ferry-dockerd.log}
DOCKERD_TIMEOUT=${FERRY_DOCKERD_TIMEOUT:-60}
SMOKE_IMAGE=ferry-test/engines-smoke:dev

log() { printf 'engines.sh: %s\n' "$*" >&2; }
die() {
    printf 'engines.sh: ERROR: %s\n' "$*" >&2
    exit 1
}

# set_toml_key FILE SECTION KEY VALUE: set `KEY = VALUE` inside [SECTION], replacing an existing
# (possibly multi-line array) value, adding the section when it is missing; the rest is kept.
set_toml_key() {
    local file=$1 section=$2 key=$3 value=$4 tmp
    tmp=$(mktemp "${file}.XXXXXX")
    awk -v section="[$section]" -v key="$key" -v value="$value" '
        function flush_pending() {
            if (in_section && !done) { print key " = " value; done = 1 }
        }
        {
            line = $0
            stripped = line; gsub(/^[ \t]+|[ \t]+$/, "", stripped)
            if (skipping) {                       # inside the old multi-line array value
                if (stripped ~ /\]$/ || stripped ~ /\][ \t]*#/) skipping = 0
                next
            }
            if (stripped ~ /^\[[^\]]+\]/) {       # a section header
                flush_pending()
                in_section = (stripped == section)
                if (in_section) seen = 1
                print line; next
            }
            if (in_section && stripped ~ ("^" key "[ \t]*=")) {
                if (!done) { print key " = " value; done = 1 }
                rest = stripped; sub(/^[^=]*=[ \t]*/, "", rest)
                if (rest ~ /^\[/ && rest !~ /\]/) skipping = 1
                next
            }
            print line
        }
        END {
            flush_pending()
            if (!seen) { if (NR > 0) print ""; print section; print key " = " value }
        }
    ' "$file" >"$tmp"
    if cmp -s "$tmp" "$file"; then
        rm -f "$tmp"
        return 1
    fi
    chmod 644 "$tmp"
    mv -f "$tmp" "$file"
}

edit_conf() {
    local file=$1 changed=1
    [[ -f $file ]] || : >"$file"
    set_toml_key "$file" containers default_ulimits '[]' && changed=0
    set_toml_key "$file" engine cgroup_manager '"cgroupfs"' && changed=0
    set_toml_key "$file" engine events_logger '"file"' && changed=0
    return $changed # 0 when the file changed
}

if [[ ${1:-} == --edit-conf ]]; then
    [[ -n ${2:-} ]] || die "usage: $0 --edit-conf FILE"
    edit_conf "$2" || true
    exit 0
fi

if [[ $(id -u) -ne 0 ]]; then
    die "run as root (installs packages, starts dockerd, writes $CONTAINERS_CONF)"
fi

changed=0

# --- 1. packages -------------------------------------------------------------------------------
missing=()
for pkg in "${PACKAGES[@]}"; do
    status=$(dpkg-query -W -f='${db:Status-Status}' "$pkg" 2>/dev/null || true)
    [[ $status == installed ]] || missing+=("$pkg")
done
if ((${#missing[@]})); then
    log "installing: ${missing[*]}"
    export DEBIAN_FRONTEND=noninteractive
    if ! apt-get install -y -q --no-install-recommends "${missing[@]}" >/tmp/ferry-apt.log 2>&1; then
        log "apt-get install failed; running apt-get update and retrying"
        apt-get update -q >>/tmp/ferry-apt.log 2>&1 || die "apt-get update failed (see /tmp/ferry-apt.log)"
        apt-get install -y -q --no-install-recommends "${missing[@]}" >>/tmp/ferry-apt.log 2>&1 ||
            die "apt-get install ${missing[*]} failed (see /tmp/ferry-apt.log)"
    fi
    changed=1
fi

# --- 2. dockerd --------------------------------------------------------------------------------
docker_ok() { timeout 20 docker info >/dev/null 2>&1; }
if ! docker_ok; then
    if pgrep -x dockerd >/dev/null; then
        log "dockerd is running but does not answer yet; waiting"
    else
        log "starting dockerd (log: $DOCKERD_LOG)"
        setsid nohup dockerd >>"$DOCKERD_LOG" 2>&1 </dev/null &
    fi
    deadline=$((SECONDS + DOCKERD_TIMEOUT))
    until docker_ok; do
        if ((SECONDS >= deadline)); then
            tail -n 20 "$DOCKERD_LOG" >&2 || true
            die "dockerd did not answer within ${DOCKERD_TIMEOUT}s (log: $DOCKERD_LOG)"
        fi
        if ! pgrep -x dockerd >/dev/null; then
            tail -n 20 "$DOCKERD_LOG" >&2 || true
            die "dockerd exited during startup (log: $DOCKERD_LOG)"
        fi
        sleep 0.5
    done
    log "dockerd is up"
    changed=1
fi

# --- 3. containers.conf ------------------------------------------------------------------------
mkdir -p "$(dirname "$CONTAINERS_CONF")"
if edit_conf "$CONTAINERS_CONF"; then
    log "wrote $CONTAINERS_CONF"
    changed=1
fi

# --- 4. verify ---------------------------------------------------------------------------------
docker_ok || die "docker does not answer (\`docker info\` failed)"
podman_err=$(timeout 60 podman info 2>&1 >/dev/null) || die "podman does not answer: $podman_err"

if ((changed)) || ! podman image exists "$SMOKE_IMAGE" 2>/dev/null; then
    # A one-file image from the host's busybox: proves podman can create and run containers.
    smoke=$(mktemp -d)
    trap 'rm -rf "$smoke"' EXIT
    mkdir -p "$smoke/bin"
    cp /bin/busybox "$smoke/bin/busybox"
    ln -s busybox "$smoke/bin/sh"
    tar -C "$smoke" -c . | podman import -q --change 'ENTRYPOINT ["/bin/sh"]' - "$SMOKE_IMAGE" >/dev/null ||
        die "podman import failed"
    out=$(timeout 60 podman run --rm "$SMOKE_IMAGE" -c 'echo ok' 2>&1) || die "podman run failed: $out"
    [[ $out == ok ]] || die "podman run printed '$out', expected 'ok'"
fi

log "docker $(docker version --format '{{.Server.Version}}' 2>/dev/null) and podman $(podman version --format '{{.Client.Version}}' 2>/dev/null) are ready"
