# ferry-wrapper: runs an Airbyte-Protocol connector inside its container with stdin/stdout/stderr
# on FIFOs in a shared directory, which relay sidecars carry to ferry over TCP.
#
# Invoked as: sh -c "<this text>" ferry-wrapper <protocol args...>
# The protocol arguments stay positional parameters and reach the connector through "$@", so no
# argument is ever re-quoted. Settings come from the environment:
#   AIRBYTE_ENTRYPOINT          the image's entrypoint (a shell command line)
#   FERRY_ENTRYPOINT_OVERRIDE   ferry's override (wins when set), %-encoded: %24 is a dollar sign,
#                               %25 a percent sign, so the value holds no dollar sign at all
#   FERRY_IMAGE                 the image name, for the error message when no entrypoint is known
#   FERRY_IO_DIR                the shared directory (default /ferry/io)
#   FERRY_STDIN                 1 when the connector reads stdin (else stdin is /dev/null)
#   FERRY_POLL                  seconds between looks at the termination marker and, once it is
#                               there, at the connector's processes (default 1)
#   FERRY_GRACE_TICKS           polls between TERM and KILL on termination (default 10)
#   FERRY_GRACE                 the same in seconds, for the log line (default 10)
# Files in the shared directory: stdin, stdout, stderr (FIFOs), exit (the exit code, written last,
# atomically when mv exists) and terminate (the marker: its first line says why).
#
# Rules for this text: POSIX sh only (busybox ash and dash), and never a dollar sign followed by
# an opening parenthesis or by another dollar sign (Kubernetes rewrites both in commands and
# Podman does not): use backquotes for command substitution, expr or string counters for
# arithmetic. Lines starting with # are stripped before use.

ferry_dir=${FERRY_IO_DIR:-/ferry/io}
ferry_mark=$ferry_dir/terminate
ferry_exit=$ferry_dir/exit
ferry_grace=${FERRY_GRACE:-10}
ferry_poll=${FERRY_POLL:-1}
ferry_grace_ticks=${FERRY_GRACE_TICKS:-10}
ferry_child=
ferry_watcher=

ferry_log() {
  printf 'ferry-wrapper: %s\n' "$*" >&2
}

# Decode the %-encoded override into ferry_entry; returns 1 on a malformed value.
ferry_decode() {
  ferry_rest=$1
  ferry_entry=
  while :; do
    case $ferry_rest in
      *%*)
        ferry_entry=$ferry_entry${ferry_rest%%[%]*}
        ferry_rest=${ferry_rest#*[%]}
        case $ferry_rest in
          24*) ferry_entry=$ferry_entry'$' ;;
          25*) ferry_entry=$ferry_entry'%' ;;
          *) return 1 ;;
        esac
        ferry_rest=${ferry_rest#??}
        ;;
      *)
        ferry_entry=$ferry_entry$ferry_rest
        return 0
        ;;
    esac
  done
}

# Make sure $1 is a FIFO: create it (mode 666, the connector may run as another user than the
# sidecars) or wait for a sidecar to create it. Returns 1 if termination was requested meanwhile
# or the path exists but is not a FIFO.
ferry_fifo() {
  while [ ! -p "$1" ]; do
    if [ -e "$1" ]; then
      ferry_log "$1 exists but is not a FIFO"
      return 1
    fi
    (umask 0 && mkfifo -m 666 "$1") 2>/dev/null && return 0
    [ -p "$1" ] && return 0
    [ -e "$ferry_mark" ] && return 1
    sleep "$ferry_poll"
  done
  return 0
}

# Print the pids of the process tree rooted at $1 (root first), from /proc.
ferry_tree() {
  ferry_queue=$1
  ferry_found=$1
  while [ -n "$ferry_queue" ]; do
    set -- $ferry_queue
    ferry_parent=$1
    shift
    ferry_queue=$*
    for ferry_status in /proc/[0-9]*/status; do
      while read -r ferry_key ferry_value; do
        case $ferry_key in
          PPid:)
            if [ "$ferry_value" = "$ferry_parent" ]; then
              ferry_pid=${ferry_status#/proc/}
              ferry_pid=${ferry_pid%/status}
              ferry_found="$ferry_found $ferry_pid"
              ferry_queue="$ferry_queue $ferry_pid"
            fi
            break
            ;;
        esac
      done 2>/dev/null <"$ferry_status"
    done
  done
  printf '%s\n' "$ferry_found"
}

# Succeed if any of the pids given is still running (a zombie counts as gone).
ferry_alive() {
  for ferry_pid; do
    if [ -d /proc/self ]; then
      ferry_state=
      while read -r ferry_key ferry_value; do
        case $ferry_key in
          State:)
            ferry_state=$ferry_value
            break
            ;;
        esac
      done 2>/dev/null <"/proc/$ferry_pid/status"
      case $ferry_state in
        '' | Z* | X*) ;;
        *) return 0 ;;
      esac
    elif kill -0 "$ferry_pid" 2>/dev/null; then
      return 0
    fi
  done
  return 1
}

# Record why the connector must stop, unless the marker already says why; the watcher acts on it.
ferry_request_stop() {
  [ -e "$ferry_mark" ] || printf '%s\n' "$1" >"$ferry_mark" 2>/dev/null
}

ferry_write_exit() {
  if printf '%s\n' "$1" >"$ferry_exit.tmp" 2>/dev/null && mv -f "$ferry_exit.tmp" "$ferry_exit" 2>/dev/null; then
    return 0
  fi
  printf '%s\n' "$1" >"$ferry_exit" || ferry_log "cannot write the exit code to $ferry_exit"
}

trap 'ferry_request_stop "the wrapper received SIGTERM"' TERM
trap 'ferry_request_stop "the wrapper received SIGINT"' INT
trap 'ferry_request_stop "the wrapper received SIGHUP"' HUP

# 0777: the other side of the FIFOs (a sidecar, the pump) may run as another user.
(umask 0 && mkdir -p "$ferry_dir") 2>/dev/null

ferry_entry=
if [ -n "${FERRY_ENTRYPOINT_OVERRIDE:-}" ]; then
  if ! ferry_decode "$FERRY_ENTRYPOINT_OVERRIDE"; then
    ferry_log "FERRY_ENTRYPOINT_OVERRIDE is not %-encoded (use %24 for a dollar sign, %25 for a percent sign)"
    ferry_entry=
  fi
else
  ferry_entry=${AIRBYTE_ENTRYPOINT:-}
fi
case $ferry_entry in
  *[![:space:]]*) ;;
  *) ferry_entry= ;;
esac
ferry_missing="AIRBYTE_ENTRYPOINT is not set in image ${FERRY_IMAGE:-(unknown)}: set ENV AIRBYTE_ENTRYPOINT in the image (e.g. ENV AIRBYTE_ENTRYPOINT=\"python /airbyte/integration_code/main.py\"), or set entrypoint: auto (derive it from the image's ENTRYPOINT/CMD) or an explicit entrypoint: command in the connector's block of the connection file"

if [ -e "$ferry_mark" ]; then
  ferry_why=
  read -r ferry_why <"$ferry_mark" 2>/dev/null
  ferry_log "termination requested before the connector started (${ferry_why:-no reason given}); not starting it"
  ferry_write_exit 143
  exit 143
fi

ferry_in=/dev/null
if [ "${FERRY_STDIN:-0}" = 1 ]; then
  ferry_in=$ferry_dir/stdin
  ferry_fifo "$ferry_in" || { ferry_write_exit 143; exit 143; }
fi
ferry_fifo "$ferry_dir/stdout" || { ferry_write_exit 143; exit 143; }
ferry_fifo "$ferry_dir/stderr" || { ferry_write_exit 143; exit 143; }

# The connector: a background subshell that opens the FIFOs (each open waits for its sidecar)
# and evals the entrypoint with the protocol arguments appended as "$@".
(
  if [ -z "$ferry_entry" ]; then
    printf '%s\n' "$ferry_missing" >&2
    exit 127
  fi
  eval "$ferry_entry"' "$@"'
) <"$ferry_in" >"$ferry_dir/stdout" 2>"$ferry_dir/stderr" &
ferry_child=$!

# The termination watcher: once the marker exists, TERM the processes the connector runs (the
# subshell itself only while it has none, e.g. when still opening the FIFOs), wait up to the grace
# period for all of them to be gone (a subshell exits before its orphans finish shutting down),
# then KILL what is left. When the connector ends on its own, the main shell kills the watcher.
(
  trap - TERM INT HUP
  while [ ! -e "$ferry_mark" ]; do
    sleep "$ferry_poll" 2>/dev/null
  done
  ferry_why=
  read -r ferry_why <"$ferry_mark" 2>/dev/null
  ferry_log "termination requested (${ferry_why:-no reason given}): sending TERM to the connector"
  ferry_targets=`ferry_tree "$ferry_child"`
  set -- $ferry_targets
  [ "$#" -gt 1 ] && shift
  for ferry_pid; do
    kill -TERM "$ferry_pid" 2>/dev/null
  done
  ferry_waited=
  while ferry_alive "$ferry_child" "$@"; do
    if [ "${#ferry_waited}" -ge "$ferry_grace_ticks" ]; then
      ferry_log "the connector is still running ${ferry_grace}s after TERM: sending KILL"
      for ferry_pid in `ferry_tree "$ferry_child"` "$@"; do
        kill -KILL "$ferry_pid" 2>/dev/null
      done
      break
    fi
    sleep "$ferry_poll" 2>/dev/null
    ferry_waited=${ferry_waited}x
  done
) </dev/null >/dev/null &
ferry_watcher=$!

# A trapped signal interrupts wait; wait again while the connector still exists (even a zombie).
while :; do
  wait "$ferry_child"
  ferry_rc=$?
  kill -0 "$ferry_child" 2>/dev/null || break
done
if [ -e "$ferry_mark" ]; then
  # Stopping: let the watcher see every process of the connector gone (or KILL it).
  while :; do
    wait "$ferry_watcher"
    kill -0 "$ferry_watcher" 2>/dev/null || break
  done
else
  # KILL: a TERM that reaches the watcher before its trap reset would be lost, and it would
  # then poll forever, holding the container's stderr.
  kill -KILL "$ferry_watcher" 2>/dev/null
fi

if [ -z "$ferry_entry" ]; then
  ferry_log "$ferry_missing"
  ferry_rc=127
fi
if [ -e "$ferry_mark" ]; then
  ferry_why=
  read -r ferry_why <"$ferry_mark" 2>/dev/null
  [ "$ferry_rc" = 0 ] && ferry_rc=143
  ferry_log "stopped the connector (${ferry_why:-no reason given}); exit code $ferry_rc"
fi
ferry_write_exit "$ferry_rc"
exit "$ferry_rc"
