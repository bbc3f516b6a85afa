# ferry relay sidecar: carries one connector channel between its FIFO in the shared directory and
# ferry's relay listener.
#
# Invoked as: sh -c "<this text>" ferry-relay CHANNEL DIR HOST PORT TOKEN BUFFER RETRIES
# CHANNEL is stdout or stderr (FIFO -> TCP) or stdin (TCP -> FIFO). The outer socat connects to
# HOST:PORT (keepalive on) and, with EXEC and nofork, execs (same pid, no fork) a shell whose stdin
# and stdout are that socket: it sends the handshake line "FERRY-RELAY/1 TOKEN CHANNEL", opens the
# FIFO (waiting for the wrapper's side) and execs the pump, socat -u with BUFFER-byte reads: one
# process from connect to EOF, so killing its pid stops the relay. The EXEC address is escaped for
# socat's parser (tested with socat 1.7.4): the shell it runs gets  eval "$FERRY_RELAY_PUMP".
# A watcher releases and stops the pump once the wrapper has written DIR/exit (or DIR/terminate
# exists): nobody will open the FIFO any more, and the stdin channel has nobody left to feed.
#
# Rules for this text: POSIX sh only, and never a dollar sign followed by an opening parenthesis
# or another dollar sign (see wrapper.sh). Lines starting with # are stripped before use.

ferry_channel=$1
ferry_dir=$2
ferry_host=$3
ferry_port=$4
ferry_token=$5
ferry_buf=${6:-262144}
ferry_retry=${7:-30}
ferry_fifo=$ferry_dir/$ferry_channel
ferry_pump=
ferry_watcher=

ferry_log() {
  printf 'ferry-relay %s: %s\n' "$ferry_channel" "$*" >&2
}

# The watcher gets KILL: a TERM sent before its trap reset would be lost (see wrapper.sh).
trap 'kill "$ferry_pump" 2>/dev/null; kill -KILL "$ferry_watcher" 2>/dev/null; exit 143' TERM INT HUP

case $ferry_channel in
  stdin) FERRY_RELAY_PUMP='exec socat -u -b"$FERRY_RELAY_BUF" STDIN FD:3 3>"$FERRY_RELAY_FIFO"' ;;
  stdout | stderr) FERRY_RELAY_PUMP='exec socat -u -b"$FERRY_RELAY_BUF" FD:3 STDOUT 3<"$FERRY_RELAY_FIFO"' ;;
  *)
    ferry_log "unknown channel (expected stdin, stdout or stderr)"
    exit 2
    ;;
esac

mkdir -p "$ferry_dir" 2>/dev/null
while [ ! -p "$ferry_fifo" ]; do
  (umask 0 && mkfifo -m 666 "$ferry_fifo") 2>/dev/null && break
  [ -p "$ferry_fifo" ] && break
  ferry_log "cannot create the FIFO $ferry_fifo"
  exit 2
done

FERRY_RELAY_HELLO="FERRY-RELAY/1 $ferry_token $ferry_channel"
FERRY_RELAY_FIFO=$ferry_fifo
FERRY_RELAY_BUF=$ferry_buf
FERRY_RELAY_PUMP='printf "%s\n" "$FERRY_RELAY_HELLO" || exit 1; '$FERRY_RELAY_PUMP
export FERRY_RELAY_HELLO FERRY_RELAY_FIFO FERRY_RELAY_BUF FERRY_RELAY_PUMP

socat "TCP:$ferry_host:$ferry_port,keepalive,keepidle=10,keepintvl=5,keepcnt=3,nodelay,connect-timeout=10,retry=$ferry_retry,interval=1" 'EXEC:sh -c \"eval \\\"$FERRY_RELAY_PUMP\\\"\",nofork' &
ferry_pump=$!

(
  trap - TERM INT HUP
  while :; do
    sleep 1 2>/dev/null
    if [ -e "$ferry_dir/exit" ] || [ -e "$ferry_dir/terminate" ]; then
      : 2>/dev/null <>"$ferry_fifo"
      if [ "$ferry_channel" = stdin ] || { [ -e "$ferry_dir/exit" ] && [ -e "$ferry_dir/terminate" ]; }; then
        kill "$ferry_pump" 2>/dev/null
      fi
    fi
  done
) </dev/null >/dev/null 2>&1 &
ferry_watcher=$!

while :; do
  wait "$ferry_pump"
  ferry_rc=$?
  kill -0 "$ferry_pump" 2>/dev/null || break
done
kill -KILL "$ferry_watcher" 2>/dev/null
if [ "$ferry_rc" != 0 ]; then
  # A pump failing on a closed FIFO (EPIPE) ends just before the wrapper writes its exit code.
  ferry_tries=
  while [ ! -e "$ferry_dir/exit" ] && [ "${#ferry_tries}" -lt 20 ]; do
    sleep 0.1 2>/dev/null
    ferry_tries=${ferry_tries}x
  done
  if [ -e "$ferry_dir/exit" ]; then
    ferry_rc=0
  else
    ferry_log "the relay ended with status $ferry_rc before the connector exited"
  fi
fi
exit "$ferry_rc"
