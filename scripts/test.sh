#!/usr/bin/env bash
# The whole Kurir test suite, as CI runs it: makes sure Redis and NATS are reachable
# (starts them if installed but stopped, installs them with apt-get when missing and
# running as root), then runs rustfmt, clippy, every Rust test (unit, contract,
# end-to-end) and the JavaScript SDK, browser and operations checks.
set -euo pipefail
cd "$(dirname "$0")/.."

REDIS_URL="${KURIR_REDIS_URL:-redis://127.0.0.1:6379}"
NATS_URL="${KURIR_NATS_URL:-nats://127.0.0.1:4222}"
export KURIR_REDIS_URL="$REDIS_URL" KURIR_NATS_URL="$NATS_URL"

log() { printf '==> %s\n' "$*" >&2; }

port_open() { (exec 3<>"/dev/tcp/$1/$2") 2>/dev/null; }

host_port() { # redis://h:p or nats://h:p -> "h p"
  local rest="${1#*://}"; rest="${rest%%/*}"; rest="${rest##*@}"
  echo "${rest%%:*} ${rest##*:}"
}

apt_install() {
  if [ "$(id -u)" != 0 ]; then
    log "$1 is missing and this is not root: install it (apt-get install $1) and rerun"; exit 1
  fi
  log "installing $*"
  DEBIAN_FRONTEND=noninteractive apt-get update -qq
  DEBIAN_FRONTEND=noninteractive apt-get install -y -qq "$@" >/dev/null
}

wait_port() {
  for _ in $(seq 1 100); do port_open "$1" "$2" && return 0; sleep 0.1; done
  log "$3 did not come up on $1:$2"; exit 1
}

ensure_redis() {
  read -r host port <<<"$(host_port "$REDIS_URL")"
  port_open "$host" "$port" && return 0
  command -v redis-server >/dev/null || apt_install redis-server
  log "starting redis-server on $host:$port"
  mkdir -p /var/lib/redis /var/log/redis 2>/dev/null || true
  redis-server --daemonize yes --bind 127.0.0.1 -::1 --port "$port" --save "" --appendonly no \
    --dir /var/lib/redis --logfile /var/log/redis/ci.log
  wait_port "$host" "$port" redis
}

ensure_nats() {
  read -r host port <<<"$(host_port "$NATS_URL")"
  port_open "$host" "$port" && return 0
  command -v nats-server >/dev/null || [ -x /usr/sbin/nats-server ] || apt_install nats-server
  local bin; bin="$(command -v nats-server || echo /usr/sbin/nats-server)"
  log "starting nats-server on $host:$port"
  mkdir -p /var/lib/nats-server 2>/dev/null || true
  start-stop-daemon --start --oknodo --background --exec "$bin" -- \
    -a 127.0.0.1 -p "$port" -js -sd /var/lib/nats-server -l /var/log/nats-server.log
  wait_port "$host" "$port" nats
}

ensure_redis
ensure_nats
# The MQTT end-to-end tests drive a real MQTT client too.
command -v mosquitto_sub >/dev/null || apt_install mosquitto-clients
# Browser tests need Debian's Chromium; the end-to-end tests need nats-server on PATH or
# in /usr/sbin (they start private ones) and redis-server (likewise).
command -v cargo-nextest >/dev/null || cargo install --locked cargo-nextest

log "rustfmt"
cargo fmt --all -- --check
log "clippy"
cargo clippy --workspace --all-targets --locked -- -D warnings
log "module cycles"
python3 scripts/module-cycles.py
log "rust tests"
cargo nextest run --workspace --locked --no-fail-fast

log "websocket conformance (Autobahn cases through kosoku, installed with pip if missing)"
python3 -m pip --version >/dev/null 2>&1 || apt_install python3 python3-pip
scripts/autobahn.sh

if [ -x scripts/test-js.sh ]; then
  log "javascript, browser and operations checks"
  scripts/test-js.sh
fi

log "backend examples (Python, Node) against a kurir node"
scripts/test-examples.sh

log "protocol buffers (buf lint, and compatibility with the released API)"
command -v npx >/dev/null || apt_install nodejs npm
scripts/buf.sh
