#!/usr/bin/env bash
# The browser SDK's tests (node's test runner, including live tests against a real
# `kurir` development node), the demo page in headless Chromium (toast, fade, reconnect after a
# server restart) and the operations checks (manifests, alert rules against live
# /metrics, the local cluster behind nginx). Run by scripts/test.sh after the Rust suite,
# which builds the binaries in target/debug.
set -euo pipefail
cd "$(dirname "$0")/.."
REPO="$PWD"
export KURIR_BIN_DIR="${KURIR_BIN_DIR:-$REPO/target/debug}"

log() { printf '==> %s\n' "$*" >&2; }
apt_install() {
  [ "$(id -u)" = 0 ] || { log "$* missing and not root: install it and rerun"; exit 1; }
  DEBIAN_FRONTEND=noninteractive apt-get update -qq
  DEBIAN_FRONTEND=noninteractive apt-get install -y -qq "$@" >/dev/null
}
[ -x "$KURIR_BIN_DIR/kurir" ] || cargo build -p kurir -p kurir-dispatcher -p kurir-gateway
command -v node >/dev/null || apt_install nodejs npm
[ -x /usr/bin/chromium ] || apt_install chromium
(cd clients/js && npm ci --no-audit --no-fund --loglevel=error)
log "SDK package: declarations type-checked (tsc --noEmit), contents of the npm package"
(cd clients/js && npx tsc --noEmit -p tsconfig.json)
packed="$(cd clients/js && npm pack --dry-run --json 2>/dev/null | python3 -c 'import json,sys; print(" ".join(sorted(f["path"] for f in json.load(sys.stdin)[0]["files"])))')"
[ "$packed" = "README.md kurir-sw.js kurir.d.ts kurir.js package.json" ] || { log "unexpected npm package contents: $packed"; exit 1; }

free_port() { python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])'; }
export KURIR_DEV_STATE; KURIR_DEV_STATE="$(mktemp -d)"
PORT="$(free_port)"; GRPC="$(free_port)"; CLOSED="$(free_port)"
export KURIR_LISTEN="127.0.0.1:$PORT" KURIR_GRPC_LISTEN="127.0.0.1:$GRPC"
export KURIR_METRICS_LISTEN="127.0.0.1:$(free_port)"
# No JWT setting: `kurir` generates its secret and serves /dev/token, which the live
# tests and the demo page take their tokens from.
export KURIR_API_KEYS="js-test-key-0123456789abcdef-0123456789"
unset KURIR_JWT_SECRET KURIR_JWT_PUBLIC_KEY_FILE KURIR_JWT_JWKS_URL
# The development node needs neither: prove it by pointing both at a closed port.
export KURIR_REDIS_URL="redis://127.0.0.1:$CLOSED" KURIR_NATS_URL="nats://127.0.0.1:$CLOSED"
cleanup() { scripts/dev-server.sh stop || true; rm -rf "$KURIR_DEV_STATE"; }
trap cleanup EXIT
scripts/dev-server.sh start

export KURIR_TEST_URL="http://127.0.0.1:$PORT" KURIR_REQUIRE_LIVE=1
export KURIR_SEND_CMD="$KURIR_BIN_DIR/kurir send --endpoint http://127.0.0.1:$GRPC --api-key $KURIR_API_KEYS --user '{user}' --title '{title}' --body '{body}' --ttl 60"
export KURIR_RESTART_CMD="$REPO/scripts/dev-server.sh restart"
export KURIR_SCREENSHOT="${KURIR_SCREENSHOT:-$KURIR_DEV_STATE/demo.png}"

log "SDK tests (node --test), live against the kurir development node"
node --experimental-websocket --test clients/js/test/
log "demo page in headless Chromium"
node clients/js/test/browser.mjs

# Release the environment the development node used before the ops checks.
unset KURIR_LISTEN KURIR_GRPC_LISTEN KURIR_METRICS_LISTEN KURIR_REDIS_URL KURIR_NATS_URL KURIR_API_KEYS KURIR_JWT_SECRET
log "operations: manifests"
python3 tests/ops/validate_manifests.py
log "operations: local cluster behind nginx, alert rules against live /metrics"
bash tests/ops/test_local_cluster.sh
