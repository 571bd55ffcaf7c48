#!/usr/bin/env bash
# The backend examples (examples/python, examples/node) against a real `kurir` node:
# each mints a client token, asks for presence, follows receipts, sends a stored
# notification and must see a device (examples/node/listen.mjs, holding a WebSocket
# with the token the example minted) receive and ack it. Run by scripts/test.sh after the
# Rust suite, which builds the binaries in target/debug.
set -euo pipefail
cd "$(dirname "$0")/.."
REPO="$PWD"
BIN_DIR="${KURIR_BIN_DIR:-$REPO/target/debug}"
VENV="${KURIR_EXAMPLES_VENV:-$REPO/target/examples-venv}"

log() { printf '==> %s\n' "$*" >&2; }
[ -x "$BIN_DIR/kurir" ] || cargo build -p kurir
command -v node >/dev/null || { log "node is missing (apt-get install nodejs npm)"; exit 1; }

log "examples: installing grpcio (Python, in $VENV) and @grpc/grpc-js (npm)"
[ -x "$VENV/bin/python" ] || python3 -m venv "$VENV"
"$VENV/bin/python" -m pip install -q --disable-pip-version-check -r examples/python/requirements.txt
mkdir -p examples/python/gen
"$VENV/bin/python" -m grpc_tools.protoc -I proto --python_out=examples/python/gen \
  --grpc_python_out=examples/python/gen proto/kurir/v1/dispatcher.proto
(cd examples/node && npm ci --no-audit --no-fund --loglevel=error)

free_port() { python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])'; }
WS_PORT="$(free_port)"; GRPC_PORT="$(free_port)"
LOGS="$(mktemp -d)"
export KURIR_API_KEY; KURIR_API_KEY="examples-$(openssl rand -hex 24)"
export KURIR_JWT_SECRET; KURIR_JWT_SECRET="$(openssl rand -hex 32)"
export KURIR_ENDPOINT="127.0.0.1:$GRPC_PORT"
KURIR_LISTEN="127.0.0.1:$WS_PORT" KURIR_GRPC_LISTEN="$KURIR_ENDPOINT" \
  KURIR_METRICS_LISTEN="127.0.0.1:$(free_port)" KURIR_API_KEYS="$KURIR_API_KEY" \
  "$BIN_DIR/kurir" >"$LOGS/kurir.log" 2>&1 &
NODE_PID=$!
cleanup() { kill "$NODE_PID" 2>/dev/null || true; wait "$NODE_PID" 2>/dev/null || true; rm -rf "$LOGS"; }
trap cleanup EXIT
for _ in $(seq 1 100); do (exec 3<>"/dev/tcp/127.0.0.1/$GRPC_PORT") 2>/dev/null && break; sleep 0.1; done

# One example: `name`, then its command. A device listens as a fresh user with the
# token the example printed; the example must then see DELIVERED and ACKED.
run_example() {
  local name="$1"; shift
  local user="$name-$RANDOM" out="$LOGS/$name.out" token
  # First run: only the token (no device yet, so nothing is waited for).
  "$@" --user "$user" --wait 0 >"$out"
  token="$(sed -n 's/.*"client_token": *"\([^"]*\)".*/\1/p' "$out" | head -1)"
  [ -n "$token" ] || { log "$name printed no client token"; cat "$out" >&2; exit 1; }
  # The device: takes the first run's notification from its inbox on connect, and the
  # second run's live; acks both.
  node --experimental-websocket examples/node/listen.mjs \
    --url "ws://127.0.0.1:$WS_PORT/ws" --token "$token" --count 2 >"$LOGS/$name.device" 2>&1 &
  local device=$!
  "$@" --user "$user" --wait 10 >>"$out" || { log "$name failed"; cat "$out" "$LOGS/$name.device" >&2; exit 1; }
  wait "$device" || { log "$name: the device did not get both notifications"; cat "$LOGS/$name.device" >&2; exit 1; }
  grep -q '"receipt": *"ACKED"' "$out" || { log "$name saw no ACKED receipt"; cat "$out" >&2; exit 1; }
  log "$name example: sent, delivered and acked ($(grep -c '"notification"' "$LOGS/$name.device") notifications on the device)"
}

run_example python "$VENV/bin/python" examples/python/notify.py
run_example node node examples/node/notify.mjs
