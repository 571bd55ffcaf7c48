#!/usr/bin/env bash
# Kurir's cluster topology as plain processes on this machine, no Docker needed:
# local Redis + NATS, one dispatcher, N gateways, and nginx as the WebSocket load
# balancer in front of the gateways.
#
#   deploy/local-cluster.sh up [--gateways N] [--no-build]
#   deploy/local-cluster.sh status
#   deploy/local-cluster.sh env          # shell exports for scripts: eval "$(... env)"
#   deploy/local-cluster.sh restart-gateway I   # drain gateway I (SIGTERM), start it again
#   deploy/local-cluster.sh rolling-restart     # restart-gateway 1, 2, ... N, one at a time
#   deploy/local-cluster.sh down
#
# restart-gateway sends SIGTERM, waits for the gateway to exit (bounded by
# KURIR_DRAIN_SECONDS + 15 s, then SIGKILL), starts it again with the same node id,
# ports and settings as `up`, and returns once its /readyz is 200. Its clients get
# close 1012 and reconnect through nginx to the other gateways meanwhile.
# rolling-restart does that for every gateway in turn, waits KURIR_ROLL_PAUSE_SECONDS
# after each one is ready (like minReadySeconds), and refuses to drain a gateway
# while no other one is ready.
#
# Addresses (all 127.0.0.1):
#   load balancer  :${KURIR_LB_PORT:-8080}      ws://127.0.0.1:8080/ws?token=<JWT>
#   gateways       :18081, :18082, ...          metrics :19101, :19102, ...
#   dispatcher     :50051 (gRPC)                metrics :19100
#
# Environment (all optional):
#   KURIR_BIN_DIR          directory with kurir-gateway and kurir-dispatcher; default
#                          target/release, built with cargo first (unless --no-build)
#   KURIR_LOCAL_STATE      state directory (PIDs, logs, nginx config); default .local-cluster/
#   KURIR_NAMESPACE        Redis/NATS namespace; default a fresh random one per `up`
#   KURIR_JWT_SECRET, KURIR_API_KEYS   default: generated per `up`, printed
#   KURIR_LB_PORT (8080), KURIR_GATEWAY_PORT_BASE (18081), KURIR_GATEWAY_METRICS_PORT_BASE (19101),
#   KURIR_DISPATCHER_GRPC_PORT (50051), KURIR_DISPATCHER_METRICS_PORT (19100)
#   KURIR_REDIS_URL (redis://127.0.0.1:6379), KURIR_NATS_URL (nats://127.0.0.1:4222)
#   KURIR_DRAIN_SECONDS (3 here, so `down` is quick), KURIR_READY_TIMEOUT (60 s),
#   KURIR_ROLL_PAUSE_SECONDS (1)
#   KURIR_LOG_FORMAT (text), RUST_LOG (info)
#   (restart-gateway and rolling-restart reuse what `up` was given: URLs, drain,
#   secrets, binaries, log settings)
#
# `down` stops only the processes this script started (PIDs in the state dir,
# checked against /proc before any signal). Redis and NATS are shared machine
# services: `up` starts them if they are stopped, `down` leaves them running.
set -euo pipefail

REPO="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
STATE="${KURIR_LOCAL_STATE:-$REPO/.local-cluster}"
LB_PORT="${KURIR_LB_PORT:-8080}"
GW_PORT_BASE="${KURIR_GATEWAY_PORT_BASE:-18081}"
GW_METRICS_BASE="${KURIR_GATEWAY_METRICS_PORT_BASE:-19101}"
DISPATCHER_GRPC_PORT="${KURIR_DISPATCHER_GRPC_PORT:-50051}"
DISPATCHER_METRICS_PORT="${KURIR_DISPATCHER_METRICS_PORT:-19100}"
REDIS_URL="${KURIR_REDIS_URL:-redis://127.0.0.1:6379}"
NATS_URL="${KURIR_NATS_URL:-nats://127.0.0.1:4222}"
DRAIN_SECONDS="${KURIR_DRAIN_SECONDS:-3}"
READY_TIMEOUT="${KURIR_READY_TIMEOUT:-60}"
ROLL_PAUSE="${KURIR_ROLL_PAUSE_SECONDS:-1}"

log() { printf '[local-cluster] %s\n' "$*" >&2; }
die() { printf '[local-cluster] error: %s\n' "$*" >&2; exit 1; }

usage() {
    sed -n '2,/^set -euo/p' "${BASH_SOURCE[0]}" | sed '$d; s/^# \{0,1\}//'
}

# ------------------------------------------------------------------ small helpers

port_open() { # host port -> 0 if something accepts TCP there
    (exec 3<>"/dev/tcp/$1/$2") 2>/dev/null
}

http_code() { # url -> HTTP status, or 000
    curl -s -o /dev/null -m 2 -w '%{http_code}' "$1" 2>/dev/null || true
}

random_hex() { # bytes
    od -An -N"$1" -tx1 /dev/urandom | tr -d ' \n'
}

url_port() { # scheme://host:port -> port
    local rest="${1#*://}"; rest="${rest%%/*}"; echo "${rest##*:}"
}

url_host() {
    local rest="${1#*://}"; rest="${rest%%/*}"; rest="${rest##*@}"; echo "${rest%:*}"
}

pid_file() { echo "$STATE/pids/$1.pid"; }

alive() { # pid -> 0 if running (a zombie awaiting its reaper counts as gone)
    kill -0 "$1" 2>/dev/null || return 1
    [[ "$(awk '/^State:/ { print $2 }' "/proc/$1/status" 2>/dev/null)" != Z ]]
}

# A PID from our state dir is ours only if the process still carries our tag in its
# environment (gateways, dispatcher) or is the nginx master from our pid file.
owned_pid() { # name -> pid on stdout, status 0 if alive and ours
    local name="$1" f pid
    f="$(pid_file "$name")"
    [[ -f "$f" ]] || return 1
    pid="$(cat "$f")"
    [[ "$pid" =~ ^[0-9]+$ ]] || return 1
    alive "$pid" || return 1
    if [[ "$name" == nginx ]]; then
        [[ "$(readlink "/proc/$pid/exe" 2>/dev/null)" == *nginx* ]] || return 1
    else
        tr '\0' '\n' <"/proc/$pid/environ" 2>/dev/null | grep -qx "KURIR_LOCAL_CLUSTER_TAG=$(cluster_tag "$name")" || return 1
    fi
    echo "$pid"
}

cluster_tag() { echo "$STATE:$1"; }

names() { # every process name this cluster has a pid file for
    local f
    shopt -s nullglob
    for f in "$STATE"/pids/*.pid; do basename "$f" .pid; done
    shopt -u nullglob
}

wait_ready() { # name url pid
    local name="$1" url="$2" pid="$3" i
    for ((i = 0; i < READY_TIMEOUT * 5; i++)); do
        [[ "$(http_code "$url")" == 200 ]] && return 0
        if ! alive "$pid"; then
            log "$name exited during start-up; last lines of $STATE/logs/$name.log:"
            tail -n 20 "$STATE/logs/$name.log" >&2 || true
            return 1
        fi
        sleep 0.2
    done
    log "$name not ready at $url after ${READY_TIMEOUT}s; last lines of $STATE/logs/$name.log:"
    tail -n 20 "$STATE/logs/$name.log" >&2 || true
    return 1
}

# ------------------------------------------------------------- backing services

ensure_redis() {
    local host port
    host="$(url_host "$REDIS_URL")"; port="$(url_port "$REDIS_URL")"
    port_open "$host" "$port" && return 0
    [[ "$host" == 127.0.0.1 && "$port" == 6379 ]] || die "Redis at $REDIS_URL is not reachable"
    command -v redis-server >/dev/null || die "Redis is down and redis-server is not installed"
    log "starting local Redis on 127.0.0.1:6379"
    mkdir -p /var/lib/redis /var/log/redis
    redis-server --daemonize yes --bind 127.0.0.1 -::1 --port 6379 --save "" --appendonly no \
        --dir /var/lib/redis --logfile /var/log/redis/ci.log
    for _ in $(seq 1 50); do port_open 127.0.0.1 6379 && return 0; sleep 0.1; done
    die "Redis did not come up (see /var/log/redis/ci.log)"
}

ensure_nats() {
    local host port
    host="$(url_host "$NATS_URL")"; port="$(url_port "$NATS_URL")"
    port_open "$host" "$port" && return 0
    [[ "$host" == 127.0.0.1 && "$port" == 4222 ]] || die "NATS at $NATS_URL is not reachable"
    [[ -x /usr/sbin/nats-server ]] || die "NATS is down and /usr/sbin/nats-server is not installed"
    log "starting local NATS (JetStream) on 127.0.0.1:4222"
    mkdir -p /var/lib/nats-server
    start-stop-daemon --start --oknodo --background --exec /usr/sbin/nats-server -- \
        -a 127.0.0.1 -p 4222 -js -sd /var/lib/nats-server -l /var/log/nats-server.log
    for _ in $(seq 1 50); do port_open 127.0.0.1 4222 && return 0; sleep 0.1; done
    die "NATS did not come up (see /var/log/nats-server.log)"
}

nginx_bin() {
    local n
    n="$(command -v nginx || true)"
    [[ -z "$n" && -x /usr/sbin/nginx ]] && n=/usr/sbin/nginx
    if [[ -z "$n" ]]; then
        [[ "$(id -u)" == 0 ]] || die "nginx is not installed; run: sudo apt-get install -y nginx"
        log "installing nginx (apt-get install -y nginx)"
        DEBIAN_FRONTEND=noninteractive apt-get install -y -q nginx >&2 \
            || { apt-get update -qq >&2 && DEBIAN_FRONTEND=noninteractive apt-get install -y -q nginx >&2; } \
            || die "could not install nginx"
        n=/usr/sbin/nginx
    fi
    echo "$n"
}

# ------------------------------------------------------------------------ nginx

write_nginx_conf() { # gateways
    local n="$1" i user_line=""
    mkdir -p "$STATE/nginx/tmp"
    if [[ "$(id -u)" == 0 ]]; then
        # Workers drop root; they only proxy (no temp files, see below).
        if getent group nogroup >/dev/null; then user_line="user nobody nogroup;"; else user_line="user nobody;"; fi
    fi
    {
        cat <<EOF
# Generated by deploy/local-cluster.sh; same shape as deploy/nginx/kurir.conf.
$user_line
worker_processes 1;
daemon on;
pid $STATE/nginx/nginx.pid;
error_log $STATE/logs/nginx-error.log warn;

events {
    worker_connections 8192;
}

http {
    log_format kurir '\$remote_addr [\$time_local] "\$request_method \$uri \$server_protocol" '
                     '\$status \$body_bytes_sent rt=\$request_time upstream=\$upstream_addr '
                     'us=\$upstream_status uct=\$upstream_connect_time';
    access_log $STATE/logs/nginx-access.log kurir;
    client_body_temp_path $STATE/nginx/tmp/client;
    proxy_temp_path $STATE/nginx/tmp/proxy;
    fastcgi_temp_path $STATE/nginx/tmp/fastcgi;
    uwsgi_temp_path $STATE/nginx/tmp/uwsgi;
    scgi_temp_path $STATE/nginx/tmp/scgi;
    proxy_max_temp_file_size 0;

    map \$http_upgrade \$connection_upgrade {
        default upgrade;
        ''      close;
    }

    # max_fails=0: no passive health marking, see deploy/nginx/kurir.conf (with
    # WebSockets a gateway marked failed once stays mostly out of rotation after
    # it is back). A refused or 503 upgrade is retried on the next gateway instead.
    upstream kurir_gateways {
        least_conn;
EOF
        for ((i = 1; i <= n; i++)); do
            printf '        server 127.0.0.1:%d max_fails=0;\n' "$((GW_PORT_BASE + i - 1))"
        done
        cat <<EOF
    }

    server {
        # Reconnect waves (a gateway draining) arrive at once: a deep accept queue.
        listen 127.0.0.1:$LB_PORT backlog=4096;

        location = /ws {
            proxy_pass http://kurir_gateways;
            proxy_http_version 1.1;
            proxy_set_header Upgrade \$http_upgrade;
            proxy_set_header Connection \$connection_upgrade;
            proxy_set_header Host \$host;
            proxy_set_header X-Forwarded-For \$proxy_add_x_forwarded_for;
            proxy_set_header Origin \$http_origin;
            proxy_read_timeout 3600s;
            proxy_send_timeout 3600s;
            proxy_connect_timeout 2s;
            # A draining gateway answers upgrades 503, then refuses connections:
            # retry the upgrade (a GET, nothing done yet) on the next gateway.
            proxy_next_upstream error timeout http_502 http_503;
            proxy_next_upstream_tries 3;
            proxy_next_upstream_timeout 10s;
            proxy_buffering off;
            # nginx's error log quotes the request line, ?token= included, for
            # every refused attempt; upstream failures show in the access log
            # (us= upstream statuses, uct= connect times) instead.
            error_log $STATE/logs/nginx-error.log crit;
        }

        location / {
            proxy_pass http://kurir_gateways;
            proxy_http_version 1.1;
            proxy_set_header Connection "";
            proxy_set_header Host \$host;
            proxy_set_header X-Forwarded-For \$proxy_add_x_forwarded_for;
            proxy_connect_timeout 2s;
            proxy_read_timeout 30s;
        }
    }
}
EOF
    } >"$STATE/nginx/nginx.conf"
}

start_nginx() {
    local nginx pid
    nginx="$(nginx_bin)"
    "$nginx" -t -q -c "$STATE/nginx/nginx.conf" -e "$STATE/logs/nginx-error.log" 9>&- \
        || die "generated nginx config is invalid: $STATE/nginx/nginx.conf"
    "$nginx" -c "$STATE/nginx/nginx.conf" -e "$STATE/logs/nginx-error.log" 9>&- \
        || die "nginx failed to start; see $STATE/logs/nginx-error.log"
    for _ in $(seq 1 50); do [[ -s "$STATE/nginx/nginx.pid" ]] && break; sleep 0.1; done
    pid="$(cat "$STATE/nginx/nginx.pid" 2>/dev/null || true)"
    [[ -n "$pid" ]] || die "nginx wrote no pid file"
    echo "$pid" >"$(pid_file nginx)"
}

# ------------------------------------------------------------------ kurir processes

spawn() { # name binary env... : start a process in the background, record its pid
    local name="$1" bin="$2"; shift 2
    env "$@" KURIR_LOCAL_CLUSTER_TAG="$(cluster_tag "$name")" \
        nohup "$bin" </dev/null >>"$STATE/logs/$name.log" 2>&1 9>&- &
    echo $! >"$(pid_file "$name")"
}

resolve_bins() { # build
    local build="$1"
    if [[ -n "${KURIR_BIN_DIR:-}" ]]; then
        BIN_DIR="$KURIR_BIN_DIR"
    else
        BIN_DIR="$REPO/target/release"
        if [[ "$build" == 1 ]]; then
            log "cargo build --release -p kurir-gateway -p kurir-dispatcher"
            (cd "$REPO" && cargo build --release -p kurir-gateway -p kurir-dispatcher >&2) || die "build failed"
        fi
    fi
    for b in kurir-gateway kurir-dispatcher; do
        [[ -x "$BIN_DIR/$b" ]] || die "$BIN_DIR/$b not found (set KURIR_BIN_DIR, or drop --no-build)"
    done
}

sample_token() { # secret user -> HS256 JWT valid for 24h (for trying the cluster by hand)
    command -v python3 >/dev/null || return 0
    python3 - "$1" "$2" <<'EOF'
import base64, hashlib, hmac, json, sys, time
def b64(b): return base64.urlsafe_b64encode(b).rstrip(b"=").decode()
h = b64(json.dumps({"alg": "HS256", "typ": "JWT"}, separators=(",", ":")).encode())
p = b64(json.dumps({"sub": sys.argv[2], "exp": int(time.time()) + 86400, "topics": ["news.*"]}, separators=(",", ":")).encode())
s = b64(hmac.new(sys.argv[1].encode(), f"{h}.{p}".encode(), hashlib.sha256).digest())
print(f"{h}.{p}.{s}")
EOF
}

load_env() { # cluster.env -> KURIR_LOCAL_* and COMMON_ENV (what every kurir process gets)
    [[ -f "$STATE/cluster.env" ]] || return 1
    # shellcheck disable=SC1091
    source "$STATE/cluster.env"
    COMMON_ENV=(KURIR_NAMESPACE="$KURIR_LOCAL_NAMESPACE"
                KURIR_NATS_URL="${KURIR_LOCAL_NATS_URL:-$NATS_URL}"
                KURIR_REDIS_URL="${KURIR_LOCAL_REDIS_URL:-$REDIS_URL}"
                KURIR_LOG_FORMAT="${KURIR_LOCAL_LOG_FORMAT:-text}"
                RUST_LOG="${KURIR_LOCAL_RUST_LOG:-info}")
}

# Gateway i (1-based) as `up` configured it: same node id, ports, drain and secret,
# so a restart is the same node coming back.
spawn_gateway() { # i
    local i="$1"
    spawn "gateway-$i" "$KURIR_LOCAL_BIN_DIR/kurir-gateway" "${COMMON_ENV[@]}" \
        KURIR_NODE_ID="local-gw-$i" \
        KURIR_LISTEN="127.0.0.1:$((KURIR_LOCAL_GATEWAY_PORT_BASE + i - 1))" \
        KURIR_METRICS_LISTEN="127.0.0.1:$((KURIR_LOCAL_GATEWAY_METRICS_PORT_BASE + i - 1))" \
        KURIR_DRAIN_SECONDS="${KURIR_LOCAL_DRAIN_SECONDS:-$DRAIN_SECONDS}" \
        KURIR_JWT_SECRET="$KURIR_LOCAL_JWT_SECRET"
}

wait_gateway_ready() { # i
    local i="$1"
    wait_ready "gateway-$i" "http://127.0.0.1:$((KURIR_LOCAL_GATEWAY_PORT_BASE + i - 1))/readyz" \
        "$(cat "$(pid_file "gateway-$i")")"
}

# --------------------------------------------------------------------- commands

cmd_up() {
    local gateways=2 build=1
    while [[ $# -gt 0 ]]; do
        case "$1" in
            --gateways) [[ $# -ge 2 ]] || die "--gateways needs a number"; gateways="$2"; shift 2 ;;
            --gateways=*) gateways="${1#*=}"; shift ;;
            --no-build) build=0; shift ;;
            -h|--help) usage; exit 0 ;;
            *) die "unknown option for up: $1" ;;
        esac
    done
    [[ "$gateways" =~ ^[1-9][0-9]*$ && "$gateways" -le 64 ]] || die "--gateways must be 1..64"

    mkdir -p "$STATE/pids" "$STATE/logs" "$STATE/nginx"
    # Keep the state dir out of git even before .gitignore knows about it.
    [[ -f "$STATE/.gitignore" ]] || echo '*' >"$STATE/.gitignore"
    exec 9>"$STATE/.lock"
    flock -n 9 || die "another local-cluster.sh command holds $STATE/.lock"

    local name
    for name in $(names); do
        if owned_pid "$name" >/dev/null; then
            die "already running ($name); run: $0 down"
        fi
        rm -f "$(pid_file "$name")"
    done

    resolve_bins "$build"
    ensure_redis
    ensure_nats

    local ports=("$LB_PORT" "$DISPATCHER_GRPC_PORT" "$DISPATCHER_METRICS_PORT") i p
    for ((i = 0; i < gateways; i++)); do ports+=("$((GW_PORT_BASE + i))" "$((GW_METRICS_BASE + i))"); done
    for p in "${ports[@]}"; do
        ! port_open 127.0.0.1 "$p" || die "port 127.0.0.1:$p is already in use"
    done

    local namespace="${KURIR_NAMESPACE:-local-$(random_hex 4)}"
    local jwt_secret="${KURIR_JWT_SECRET:-dev-$(random_hex 24)}"
    local api_keys="${KURIR_API_KEYS:-dev-$(random_hex 16)}"
    umask 077
    cat >"$STATE/cluster.env" <<EOF
KURIR_LOCAL_NAMESPACE='$namespace'
KURIR_LOCAL_JWT_SECRET='$jwt_secret'
KURIR_LOCAL_API_KEYS='$api_keys'
KURIR_LOCAL_GATEWAYS='$gateways'
KURIR_LOCAL_BIN_DIR='$BIN_DIR'
KURIR_LOCAL_LB_PORT='$LB_PORT'
KURIR_LOCAL_GATEWAY_PORT_BASE='$GW_PORT_BASE'
KURIR_LOCAL_GATEWAY_METRICS_PORT_BASE='$GW_METRICS_BASE'
KURIR_LOCAL_DISPATCHER_GRPC_PORT='$DISPATCHER_GRPC_PORT'
KURIR_LOCAL_DISPATCHER_METRICS_PORT='$DISPATCHER_METRICS_PORT'
KURIR_LOCAL_NATS_URL='$NATS_URL'
KURIR_LOCAL_REDIS_URL='$REDIS_URL'
KURIR_LOCAL_DRAIN_SECONDS='$DRAIN_SECONDS'
KURIR_LOCAL_LOG_FORMAT='${KURIR_LOG_FORMAT:-text}'
KURIR_LOCAL_RUST_LOG='${RUST_LOG:-info}'
EOF
    umask 022

    # From here on, a failure stops whatever was started.
    UP_OK=0
    trap 'if [[ $UP_OK == 0 ]]; then log "up failed; stopping what was started"; stop_all; fi' EXIT

    load_env
    log "namespace $namespace; binaries from $BIN_DIR"
    spawn dispatcher "$BIN_DIR/kurir-dispatcher" "${COMMON_ENV[@]}" \
        KURIR_GRPC_LISTEN="127.0.0.1:$DISPATCHER_GRPC_PORT" \
        KURIR_METRICS_LISTEN="127.0.0.1:$DISPATCHER_METRICS_PORT" \
        KURIR_API_KEYS="$api_keys"
    for ((i = 1; i <= gateways; i++)); do spawn_gateway "$i"; done

    wait_ready dispatcher "http://127.0.0.1:$DISPATCHER_METRICS_PORT/readyz" "$(cat "$(pid_file dispatcher)")"
    for ((i = 1; i <= gateways; i++)); do wait_gateway_ready "$i"; done

    write_nginx_conf "$gateways"
    start_nginx
    wait_ready nginx "http://127.0.0.1:$LB_PORT/readyz" "$(cat "$(pid_file nginx)")"
    UP_OK=1
    trap - EXIT

    log "up: $gateways gateway(s) behind nginx on 127.0.0.1:$LB_PORT"
    print_summary
}

print_summary() {
    load_env || return 0
    cat <<EOF

  WebSocket (via nginx):  ws://127.0.0.1:$KURIR_LOCAL_LB_PORT/ws?token=<JWT>
  demo page:              http://127.0.0.1:$KURIR_LOCAL_LB_PORT/
  dispatcher gRPC:        127.0.0.1:$KURIR_LOCAL_DISPATCHER_GRPC_PORT   (authorization: Bearer <API key>)
  namespace:              $KURIR_LOCAL_NAMESPACE
  dev JWT secret (HS256): $KURIR_LOCAL_JWT_SECRET
  dev API key:            $KURIR_LOCAL_API_KEYS
  sample token (alice):   $(sample_token "$KURIR_LOCAL_JWT_SECRET" alice)
  logs:                   $STATE/logs/

EOF
}

stop_all() {
    local name pid pids=() deadline
    for name in $(names); do
        if pid="$(owned_pid "$name")"; then
            if [[ "$name" == nginx ]]; then
                kill -QUIT "$pid" 2>/dev/null || true   # graceful: finish open requests
            else
                kill -TERM "$pid" 2>/dev/null || true   # gateways drain over KURIR_DRAIN_SECONDS
            fi
            pids+=("$name:$pid")
        else
            [[ -f "$(pid_file "$name")" ]] && log "$name: not running (or not ours); forgetting its pid"
        fi
    done
    deadline=$((SECONDS + DRAIN_SECONDS + 15))
    local entry left
    while :; do
        left=0
        for entry in "${pids[@]+"${pids[@]}"}"; do
            if alive "${entry#*:}"; then left=1; fi
        done
        [[ $left == 0 || $SECONDS -ge $deadline ]] && break
        sleep 0.2
    done
    for entry in "${pids[@]+"${pids[@]}"}"; do
        if alive "${entry#*:}"; then
            log "${entry%%:*} (pid ${entry#*:}) did not stop in time; SIGKILL"
            kill -KILL "${entry#*:}" 2>/dev/null || true
        fi
    done
    for entry in "${pids[@]+"${pids[@]}"}"; do log "stopped ${entry%%:*} (pid ${entry#*:})"; done
    rm -f "$STATE"/pids/*.pid "$STATE/nginx/nginx.pid"
}

cmd_down() {
    [[ -d "$STATE/pids" ]] || { log "nothing to stop (no $STATE/pids)"; return 0; }
    exec 9>"$STATE/.lock"
    flock -w "$((DRAIN_SECONDS + 30))" 9 || die "another local-cluster.sh command holds $STATE/.lock"
    stop_all
    rm -f "$STATE/cluster.env"
    log "down (logs kept in $STATE/logs; Redis and NATS left running)"
}

cmd_status() {
    if [[ ! -d "$STATE/pids" ]] || ! load_env; then
        echo "not running (no state in $STATE)"
        return 1
    fi
    local rc=0 i pid
    printf '%-12s %-8s %-8s %-7s %-12s %s\n' PROCESS PID STATE READYZ CONNECTIONS ADDRESS
    row() { # name readyz-url metrics-url address
        local name="$1" rurl="$2" murl="$3" address="$4" state=down code="-" c="-"
        if pid="$(owned_pid "$name")"; then state=up; else pid="-"; rc=1; fi
        if [[ "$state" == up ]]; then
            code="$(http_code "$rurl")"
            [[ "$code" == 200 ]] || rc=1
            if [[ -n "$murl" ]]; then
                c="$(curl -s -m 2 "$murl" 2>/dev/null | awk '$1 == "kurir_gateway_connections" { printf "%d", $2 }')"
                c="${c:--}"
            fi
        fi
        printf '%-12s %-8s %-8s %-7s %-12s %s\n' "$name" "$pid" "$state" "$code" "$c" "$address"
    }
    row dispatcher "http://127.0.0.1:$KURIR_LOCAL_DISPATCHER_METRICS_PORT/readyz" "" \
        "grpc 127.0.0.1:$KURIR_LOCAL_DISPATCHER_GRPC_PORT, metrics :$KURIR_LOCAL_DISPATCHER_METRICS_PORT"
    for ((i = 1; i <= KURIR_LOCAL_GATEWAYS; i++)); do
        row "gateway-$i" "http://127.0.0.1:$((KURIR_LOCAL_GATEWAY_PORT_BASE + i - 1))/readyz" \
            "http://127.0.0.1:$((KURIR_LOCAL_GATEWAY_METRICS_PORT_BASE + i - 1))/metrics" \
            "ws 127.0.0.1:$((KURIR_LOCAL_GATEWAY_PORT_BASE + i - 1)), metrics :$((KURIR_LOCAL_GATEWAY_METRICS_PORT_BASE + i - 1))"
    done
    row nginx "http://127.0.0.1:$KURIR_LOCAL_LB_PORT/readyz" "" "lb 127.0.0.1:$KURIR_LOCAL_LB_PORT -> gateways (least_conn)"
    print_summary
    return $rc
}

cmd_env() {
    load_env || die "not running (no $STATE/cluster.env)"
    local i gw_metrics=""
    for ((i = 0; i < KURIR_LOCAL_GATEWAYS; i++)); do
        gw_metrics+="${gw_metrics:+ }http://127.0.0.1:$((KURIR_LOCAL_GATEWAY_METRICS_PORT_BASE + i))/metrics"
    done
    cat <<EOF
export KURIR_NAMESPACE='$KURIR_LOCAL_NAMESPACE'
export KURIR_JWT_SECRET='$KURIR_LOCAL_JWT_SECRET'
export KURIR_API_KEY='${KURIR_LOCAL_API_KEYS%%,*}'
export KURIR_LB_URL='ws://127.0.0.1:$KURIR_LOCAL_LB_PORT/ws'
export KURIR_DISPATCHER_ADDR='127.0.0.1:$KURIR_LOCAL_DISPATCHER_GRPC_PORT'
export KURIR_DISPATCHER_METRICS_URL='http://127.0.0.1:$KURIR_LOCAL_DISPATCHER_METRICS_PORT/metrics'
export KURIR_GATEWAY_METRICS_URLS='$gw_metrics'
EOF
}

others_ready() { # i -> how many gateways other than i answer /readyz with 200
    local j n=0
    for ((j = 1; j <= KURIR_LOCAL_GATEWAYS; j++)); do
        ((j == $1)) && continue
        if [[ "$(http_code "http://127.0.0.1:$((KURIR_LOCAL_GATEWAY_PORT_BASE + j - 1))/readyz")" == 200 ]]; then
            n=$((n + 1))
        fi
    done
    echo "$n"
}

# Drain gateway i and start it again as the same node; returns once it is ready.
restart_one() { # i
    local i="$1" name pid drain limit t0
    name="gateway-$i"
    drain="${KURIR_LOCAL_DRAIN_SECONDS:-$DRAIN_SECONDS}"
    # The gateway exits after the drain plus at most its 5 s session grace period.
    limit=$((drain + 15))
    if [[ "$(others_ready "$i")" == 0 ]]; then
        log "warning: no other gateway is ready; clients of $name wait until it is back"
    fi
    t0=$SECONDS
    if pid="$(owned_pid "$name")"; then
        log "$name: SIGTERM (pid $pid), draining over ${drain}s"
        kill -TERM "$pid" 2>/dev/null || true
        while alive "$pid" && ((SECONDS - t0 <= limit)); do sleep 0.1; done
        if alive "$pid"; then
            log "$name (pid $pid) did not exit within ${limit}s; SIGKILL"
            kill -KILL "$pid" 2>/dev/null || true
            for _ in $(seq 1 50); do alive "$pid" || break; sleep 0.1; done
        fi
        log "$name: exited after $((SECONDS - t0))s"
    else
        log "$name: not running; starting it"
    fi
    spawn_gateway "$i"
    wait_gateway_ready "$i" || die "$name did not come back (log: $STATE/logs/$name.log)"
    log "$name: ready again (pid $(cat "$(pid_file "$name")")), $((SECONDS - t0))s after SIGTERM"
}

lock_for_restart() {
    if [[ ! -d "$STATE/pids" ]] || ! load_env; then die "not running (no $STATE/cluster.env)"; fi
    exec 9>"$STATE/.lock"
    flock -w "$((${KURIR_LOCAL_DRAIN_SECONDS:-$DRAIN_SECONDS} + 30))" 9 \
        || die "another local-cluster.sh command holds $STATE/.lock"
}

cmd_restart_gateway() {
    [[ $# -eq 1 && "$1" =~ ^[1-9][0-9]*$ ]] || die "usage: $0 restart-gateway <1..N>"
    lock_for_restart
    (($1 <= KURIR_LOCAL_GATEWAYS)) || die "no gateway-$1 (this cluster has $KURIR_LOCAL_GATEWAYS)"
    restart_one "$1"
}

cmd_rolling_restart() {
    [[ $# -eq 0 ]] || die "rolling-restart takes no arguments"
    lock_for_restart
    local i
    for ((i = 1; i <= KURIR_LOCAL_GATEWAYS; i++)); do
        if ((KURIR_LOCAL_GATEWAYS > 1)) && [[ "$(others_ready "$i")" == 0 ]]; then
            die "not draining gateway-$i: no other gateway is ready"
        fi
        restart_one "$i"
        if ((i < KURIR_LOCAL_GATEWAYS)); then sleep "$ROLL_PAUSE"; fi
    done
    log "rolling restart of $KURIR_LOCAL_GATEWAYS gateway(s) done"
}

main() {
    local cmd="${1:-}"
    [[ $# -gt 0 ]] && shift
    case "$cmd" in
        up) cmd_up "$@" ;;
        down) cmd_down ;;
        status) cmd_status ;;
        env) cmd_env ;;
        restart-gateway) cmd_restart_gateway "$@" ;;
        rolling-restart) cmd_rolling_restart "$@" ;;
        -h|--help|help) usage ;;
        *) usage >&2; exit 2 ;;
    esac
}

main "$@"
