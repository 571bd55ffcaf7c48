#!/usr/bin/env bash
# End-to-end test of deploy/local-cluster.sh: up, status, WebSocket through nginx,
# drain of one gateway behind the load balancer, restart-gateway, rolling-restart,
# down, and that down only stops what the script started.
#
#   tests/ops/test_local_cluster.sh                 # stand-in binaries (tests/ops/fake_kurir.py)
#   KURIR_BIN_DIR=target/release tests/ops/test_local_cluster.sh   # the real binaries
#
# With real binaries it also runs tests/ops/check_rules.py against the live
# gateway and dispatcher /metrics. Uses its own state dir and ports (LB 18480,
# gateways 18181.., metrics 19201.., dispatcher 50151/19200) so it never touches
# a cluster you started by hand. Ends with `N passed, N failed`.
set -euo pipefail

REPO="$(cd "$(dirname "${BASH_SOURCE[0]}")/../.." && pwd)"
CLUSTER="$REPO/deploy/local-cluster.sh"
WORK="$(mktemp -d "${TMPDIR:-/tmp}/kurir-lc-test.XXXXXX")"
export KURIR_LOCAL_STATE="$WORK/state"
export KURIR_LB_PORT=18480 KURIR_GATEWAY_PORT_BASE=18181 KURIR_GATEWAY_METRICS_PORT_BASE=19201
export KURIR_DISPATCHER_GRPC_PORT=50151 KURIR_DISPATCHER_METRICS_PORT=19200
export KURIR_DRAIN_SECONDS=2 KURIR_READY_TIMEOUT=60
unset KURIR_NAMESPACE KURIR_JWT_SECRET KURIR_API_KEYS

REAL=0
if [[ -n "${KURIR_BIN_DIR:-}" ]]; then
    KURIR_BIN_DIR="$(cd "$KURIR_BIN_DIR" && pwd)"
    REAL=1
else
    KURIR_BIN_DIR="$WORK/bin"
    mkdir -p "$KURIR_BIN_DIR"
    for role in gateway dispatcher; do
        printf '#!/bin/sh\nexec python3 %q %s "$@"\n' "$REPO/tests/ops/fake_kurir.py" "$role" >"$KURIR_BIN_DIR/kurir-$role"
        chmod +x "$KURIR_BIN_DIR/kurir-$role"
    done
fi
export KURIR_BIN_DIR

PASSED=0
FAILED=0
ok() { PASSED=$((PASSED + 1)); echo "ok    $1"; }
fail() { FAILED=$((FAILED + 1)); echo "FAIL  $1"; [[ -z "${2:-}" ]] || echo "      ${2//$'\n'/$'\n'      }"; }
check() { # name command...
    local name="$1" out; shift
    if out="$("$@" 2>&1)"; then ok "$name"; else fail "$name" "$out"; fi
}

DECOY=""
cleanup() {
    "$CLUSTER" down >/dev/null 2>&1 || true
    [[ -z "$DECOY" ]] || kill "$DECOY" 2>/dev/null || true
    rm -rf "$WORK"
}
trap cleanup EXIT

echo "# binaries: $KURIR_BIN_DIR ($([[ $REAL == 1 ]] && echo real || echo stand-ins))"

# 1. up
if out="$("$CLUSTER" up --gateways 3 2>&1)"; then ok "up --gateways 3"; else
    fail "up --gateways 3" "$out"
    echo "$PASSED passed, $FAILED failed"
    exit 1
fi
check "up prints the dev JWT secret and API key" grep -q 'dev API key' <<<"$out"
check "state dir ignores itself in git" test "$(cat "$KURIR_LOCAL_STATE/.gitignore")" = "*"
eval "$("$CLUSTER" env)"
check "env exports the namespace and secrets" test -n "$KURIR_NAMESPACE" -a -n "$KURIR_JWT_SECRET" -a -n "$KURIR_API_KEY"

# 2. status
status_ok() {
    local s
    s="$("$CLUSTER" status)" || { echo "$s"; return 1; }
    [[ "$(grep -cE '^gateway-[0-9]+ +[0-9]+ +up +200' <<<"$s")" == 3 ]] || { echo "$s"; return 1; }
    if ! grep -qE '^dispatcher +[0-9]+ +up +200' <<<"$s" || ! grep -qE '^nginx +[0-9]+ +up +200' <<<"$s"; then
        echo "$s"; return 1
    fi
}
check "status: dispatcher, 3 gateways and nginx up and ready" status_ok

# 3. load balancer
check "LB /readyz is 200" test "$(curl -s -o /dev/null -w '%{http_code}' "http://127.0.0.1:$KURIR_LB_PORT/readyz")" = 200
check "LB serves the gateway's / page" test "$(curl -s -o /dev/null -w '%{http_code}' "http://127.0.0.1:$KURIR_LB_PORT/")" = 200
check "generated nginx config passes nginx -t" \
    nginx -t -q -c "$KURIR_LOCAL_STATE/nginx/nginx.conf" -e "$KURIR_LOCAL_STATE/logs/nginx-error.log"
check "nginx retries a refused or 503 upgrade on the next gateway" \
    grep -qE '^ *proxy_next_upstream error timeout http_502 http_503;' "$KURIR_LOCAL_STATE/nginx/nginx.conf"

TOKEN="$(python3 - "$KURIR_JWT_SECRET" <<'EOF'
import base64, hashlib, hmac, json, sys, time
b = lambda x: base64.urlsafe_b64encode(x).rstrip(b"=").decode()
h = b(json.dumps({"alg": "HS256", "typ": "JWT"}).encode())
p = b(json.dumps({"sub": "ops-test", "exp": int(time.time()) + 600}).encode())
print(f"{h}.{p}." + b(hmac.new(sys.argv[1].encode(), f"{h}.{p}".encode(), hashlib.sha256).digest()))
EOF
)"

# 4. WebSockets through nginx, held open while we look at status and drain one gateway.
python3 "$REPO/tests/ops/wsprobe.py" "$KURIR_LB_URL" --token "$TOKEN" --count 6 --hold 8 --out "$WORK/held.json" &
PROBE=$!
connections_counted() {
    local s total
    for _ in $(seq 1 40); do
        s="$("$CLUSTER" status || true)"
        total="$(awk '/^gateway-/ && $5 ~ /^[0-9]+$/ { t += $5 } END { print t + 0 }' <<<"$s")"
        [[ "$total" == 6 ]] && return 0
        sleep 0.1
    done
    echo "status shows $total connections, want 6:"; echo "$s"; return 1
}
check "status counts the 6 open WebSockets (kurir_gateway_connections)" connections_counted

GW1_PID="$(cat "$KURIR_LOCAL_STATE/pids/gateway-1.pid")"
kill -TERM "$GW1_PID"
sleep 0.5
wait "$PROBE" || true
spread() {
    python3 - "$WORK/held.json" <<'EOF'
import json, sys
r = json.load(open(sys.argv[1]))
bad = [x for x in r if x["status"] != 101 or not x["node"]]
nodes = {x["node"] for x in r}
if bad or len(nodes) < 2:
    sys.exit(f"upgrades {r}: want 6 x 101 with a welcome, over >= 2 gateways (least_conn)")
EOF
}
check "6 WebSocket upgrades through nginx got a welcome, spread over >= 2 gateways" spread
drained() {
    python3 - "$WORK/held.json" <<'EOF'
import json, sys
r = json.load(open(sys.argv[1]))
gw1 = [x for x in r if x["node"] == "local-gw-1"]
if not gw1:
    sys.exit(f"no connection landed on local-gw-1: {r}")
if any(x["close_code"] != 1012 for x in gw1):
    sys.exit(f"clients of the drained gateway want close 1012: {gw1}")
others = [x for x in r if x["node"] != "local-gw-1"]
if any(x["close_code"] is not None for x in others):
    sys.exit(f"clients of other gateways were closed: {others}")
EOF
}
check "SIGTERM on gateway-1 closes only its clients, with 1012" drained

python3 "$REPO/tests/ops/wsprobe.py" "$KURIR_LB_URL" --token "$TOKEN" --count 4 --hold 0.3 --out "$WORK/after.json"
after() {
    python3 - "$WORK/after.json" <<'EOF'
import json, sys
r = json.load(open(sys.argv[1]))
if any(x["status"] != 101 or x["node"] in (None, "local-gw-1") for x in r):
    sys.exit(f"after the drain every new client must land on a live gateway: {r}")
EOF
}
check "new clients reach the remaining gateways after one is gone" after
gone_in_status() {
    local s
    if s="$("$CLUSTER" status)"; then echo "status exited 0 with a gateway down:"; echo "$s"; return 1; fi
    grep -qE '^gateway-1 +- +down' <<<"$s" || { echo "$s"; return 1; }
}
check "status reports gateway-1 down and exits non-zero" gone_in_status

# 5. a second up refuses while running
second_up() { ! "$CLUSTER" up --gateways 1 >/dev/null 2>&1; }
check "up refuses while the cluster runs" second_up

# 6. live metrics against the alert rules and dashboard (real binaries only)
if [[ $REAL == 1 ]]; then
    urls=(--metrics-url "$KURIR_DISPATCHER_METRICS_URL")
    for u in $KURIR_GATEWAY_METRICS_URLS; do
        [[ "$u" == *":$KURIR_GATEWAY_METRICS_PORT_BASE/"* ]] && continue  # gateway-1 is gone
        urls+=(--metrics-url "$u")
    done
    check "check_rules.py against live gateway and dispatcher /metrics" \
        python3 "$REPO/tests/ops/check_rules.py" --no-promtool "${urls[@]}"
fi

# 7. restart-gateway brings the drained gateway back as the same node
gw_pids() { cat "$KURIR_LOCAL_STATE"/pids/gateway-{1,2,3}.pid; }
check "restart-gateway refuses a gateway the cluster does not have" bash -c "! '$CLUSTER' restart-gateway 4"
check "restart-gateway 1" "$CLUSTER" restart-gateway 1
check "status: all 3 gateways up and ready after restart-gateway 1" status_ok
python3 "$REPO/tests/ops/wsprobe.py" "$KURIR_LB_URL" --token "$TOKEN" --count 6 --hold 0.3 --out "$WORK/back.json"
back() {
    python3 - "$WORK/back.json" <<'EOF'
import json, sys
r = json.load(open(sys.argv[1]))
if any(x["status"] != 101 for x in r) or "local-gw-1" not in {x["node"] for x in r}:
    sys.exit(f"the restarted gateway-1 (node local-gw-1) takes clients again: {r}")
EOF
}
check "the restarted gateway takes new clients through nginx (same node id)" back

# 8. rolling-restart: every gateway drained and back, one at a time
before="$(gw_pids)"
python3 "$REPO/tests/ops/wsprobe.py" "$KURIR_LB_URL" --token "$TOKEN" --count 6 --hold 40 --out "$WORK/rolled.json" &
PROBE=$!
check "6 clients held open through the rolling restart" connections_counted
check "rolling-restart" "$CLUSTER" rolling-restart
wait "$PROBE" || true
check "rolling-restart gave every gateway a new process" test "$(comm -12 <(sort <<<"$before") <(gw_pids | sort))" = ""
check "status: all 3 gateways up and ready after rolling-restart" status_ok
rolled() {
    python3 - "$WORK/rolled.json" <<'EOF'
import json, sys
r = json.load(open(sys.argv[1]))
if any(x["status"] != 101 or x["close_code"] != 1012 for x in r):
    sys.exit(f"every client held through a rolling restart is closed with 1012: {r}")
EOF
}
check "rolling-restart closed every held client with 1012" rolled

no_token_in_logs() {
    if grep -l 'token=' "$KURIR_LOCAL_STATE"/logs/nginx-*.log; then return 1; fi
    grep -qE ' us=50[23], 101 ' "$KURIR_LOCAL_STATE/logs/nginx-access.log" \
        || { echo "no upgrade retried on the next gateway in the access log"; return 1; }
}
check "nginx logs retried upgrades (us=502, 101 or 503, 101) but never a token" no_token_in_logs

# 9. down stops only what the script started
sleep 300 &
DECOY=$!
echo "$DECOY" >"$KURIR_LOCAL_STATE/pids/gateway-9.pid"
pids="$(cat "$KURIR_LOCAL_STATE"/pids/{dispatcher,gateway-2,gateway-3,nginx}.pid)"
check "down" "$CLUSTER" down
all_gone() {
    local p
    for p in $pids; do
        if kill -0 "$p" 2>/dev/null && [[ "$(awk '/^State:/ {print $2}' "/proc/$p/status")" != Z ]]; then
            echo "pid $p still running"; return 1
        fi
    done
}
check "down stopped the dispatcher, gateways and nginx" all_gone
check "down left an unrelated process alone (pid file it did not write)" kill -0 "$DECOY"
ports_free() {
    local p
    for p in "$KURIR_LB_PORT" 18181 18182 18183 19200 50151; do
        if (exec 3<>"/dev/tcp/127.0.0.1/$p") 2>/dev/null; then echo "port $p still open"; return 1; fi
    done
}
check "ports are free after down" ports_free
check "status after down exits non-zero" bash -c "! '$CLUSTER' status"

echo "$PASSED passed, $FAILED failed"
[[ $FAILED == 0 ]]
