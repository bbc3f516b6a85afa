# ferry heartbeat sidecar: proves ferry is still there, and tells ferry the connector's exit code.
#
# Invoked as: sh -c "<this text>" ferry-heartbeat DIR HOST PORT TOKEN TICKS TICK TIMEOUT FAILURES LINGER
# Every TICK seconds it looks for DIR/exit; every TICKS ticks it probes
# http://HOST:PORT/heartbeat/TOKEN (busybox wget bounded by timeout TIMEOUT, never wget -T).
# A 410 answer (ferry no longer knows the token) or FAILURES failed probes in a row write the
# termination marker DIR/terminate (first line: the reason), which makes the wrapper stop the
# connector. Once DIR/exit exists it reports the code (GET /exit/TOKEN/CODE; 3 tries, 1 s apart,
# but a single one when the marker exists or ferry answers 410: ferry is gone, stopped the run or
# learnt how it ended, and retrying would only keep the pod alive longer) and exits 0; if the
# marker exists but no exit code appears
# within LINGER ticks, it gives up and exits 1.
#
# Rules for this text: POSIX sh only, and never a dollar sign followed by an opening parenthesis
# or another dollar sign (see wrapper.sh). Lines starting with # are stripped before use.

ferry_dir=$1
ferry_base=http://$2:$3
ferry_where=$2:$3
ferry_token=$4
ferry_ticks=$5
ferry_tick=$6
ferry_timeout=$7
ferry_max=$8
ferry_linger=$9
ferry_mark=$ferry_dir/terminate
ferry_exit=$ferry_dir/exit
ferry_err=$ferry_dir/heartbeat.err
ferry_fails=
ferry_count=
ferry_waited=

ferry_log() {
  printf 'ferry-heartbeat: %s\n' "$*" >&2
}

ferry_terminate() {
  [ -e "$ferry_mark" ] || printf '%s\n' "$1" >"$ferry_mark"
  ferry_log "$1; asked the wrapper to stop the connector"
}

ferry_report_exit() {
  ferry_code=
  read -r ferry_code <"$ferry_exit"
  case $ferry_code in
    '' | *[!0-9]*) ferry_code=255 ;;
  esac
  ferry_tries=3
  [ -e "$ferry_mark" ] && ferry_tries=1
  ferry_try=
  while :; do
    timeout "$ferry_timeout" wget -q -Y off -O /dev/null "$ferry_base/exit/$ferry_token/$ferry_code" 2>"$ferry_err" && return 0
    # 410 Gone: ferry withdrew the token, it has learnt how the run ended; no retries.
    grep -q ' 410' "$ferry_err" 2>/dev/null && return 0
    ferry_try=${ferry_try}x
    [ "${#ferry_try}" -ge "$ferry_tries" ] && break
    sleep 1
  done
  ferry_log "could not report exit code $ferry_code to ferry at $ferry_where"
  return 1
}

ferry_probe() {
  if timeout "$ferry_timeout" wget -q -Y off -O /dev/null "$ferry_base/heartbeat/$ferry_token" 2>"$ferry_err"; then
    ferry_fails=
  elif grep -q ' 410' "$ferry_err" 2>/dev/null; then
    ferry_terminate "ferry answered 410 Gone for this connector (the run was stopped or ferry restarted)"
  else
    ferry_fails=${ferry_fails}x
    if [ "${#ferry_fails}" -ge "$ferry_max" ]; then
      ferry_last=
      read -r ferry_last <"$ferry_err" 2>/dev/null
      ferry_terminate "ferry is unreachable at $ferry_where: ${#ferry_fails} heartbeats in a row failed (${ferry_last:-timed out})"
    fi
  fi
}

trap 'exit 143' TERM INT HUP

# A single pod has no init container: the shared directory (0755 when podman makes it) must let
# connectors and the pump running as other users make their FIFOs and files there.
chmod 0777 "$ferry_dir" 2>/dev/null

while :; do
  if [ -e "$ferry_exit" ]; then
    ferry_report_exit
    exit 0
  fi
  if [ -e "$ferry_mark" ]; then
    ferry_waited=${ferry_waited}x
    if [ "${#ferry_waited}" -gt "$ferry_linger" ]; then
      ferry_log "the wrapper wrote no exit code after the termination marker; giving up"
      exit 1
    fi
  elif [ -z "$ferry_count" ]; then
    ferry_probe
  fi
  ferry_count=${ferry_count}x
  [ "${#ferry_count}" -ge "$ferry_ticks" ] && ferry_count=
  sleep "$ferry_tick"
done
