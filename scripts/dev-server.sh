#!/usr/bin/env bash
# Start, stop or restart a `kurir` development node in the background, for the
# SDK and browser tests (which restart it mid-session). Ports and credentials come from
# the environment; the PID and log live in $KURIR_DEV_STATE.
#   KURIR_DEV_STATE=/tmp/x KURIR_BIN_DIR=target/debug scripts/dev-server.sh start|stop|restart
set -euo pipefail
: "${KURIR_DEV_STATE:?set KURIR_DEV_STATE to a state directory}"
BIN="${KURIR_BIN_DIR:-target/debug}/kurir"
LISTEN="${KURIR_LISTEN:-127.0.0.1:8080}"
mkdir -p "$KURIR_DEV_STATE"
pidfile="$KURIR_DEV_STATE/standalone.pid"

port_open() { (exec 3<>"/dev/tcp/${1%:*}/${1##*:}") 2>/dev/null; }

stop() {
  [ -f "$pidfile" ] || return 0
  local pid; pid="$(cat "$pidfile")"
  if kill -0 "$pid" 2>/dev/null; then
    kill -TERM "$pid"
    for _ in $(seq 1 150); do kill -0 "$pid" 2>/dev/null || break; sleep 0.1; done
    kill -0 "$pid" 2>/dev/null && kill -KILL "$pid"
  fi
  rm -f "$pidfile"
}

start() {
  "$BIN" >>"$KURIR_DEV_STATE/standalone.out" 2>>"$KURIR_DEV_STATE/standalone.log" &
  echo $! >"$pidfile"
  for _ in $(seq 1 200); do
    port_open "$LISTEN" && return 0
    kill -0 "$(cat "$pidfile")" 2>/dev/null || { tail -5 "$KURIR_DEV_STATE/standalone.log" >&2; exit 1; }
    sleep 0.05
  done
  echo "kurir did not listen on $LISTEN" >&2; exit 1
}

case "${1:-}" in
  start) start ;;
  stop) stop ;;
  restart) stop; start ;;
  *) echo "usage: $0 start|stop|restart" >&2; exit 2 ;;
esac
