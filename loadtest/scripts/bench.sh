#!/usr/bin/env bash
# The BENCHMARKS.md runs: each scenario RUNS times (default 3), JSON reports in
# $OUT (default /tmp/kurir-bench), one file per run. Before each run it waits (at most
# QUIET_WAIT seconds) until the CPU is quiet: ≥ 85 % idle over 3 s, i.e. no one else's
# build or test is running; the idle share seen is recorded.
#   loadtest/scripts/bench.sh [name-regex]
# Needs target/release/{kurir-gateway,kurir-dispatcher,kurir-loadtest} and, for the
# Socket.IO comparison, `npm ci --prefix loadtest/peers/socketio`.
set -u
cd "$(dirname "$0")/../.."
LT=target/release/kurir-loadtest
OUT=${OUT:-/tmp/kurir-bench}
RUNS=${RUNS:-3}
QUIET_WAIT=${QUIET_WAIT:-240}
FILTER=${1:-}
mkdir -p "$OUT"

idle_pct() {
  local a b
  read -r -a a < /proc/stat; sleep 3; read -r -a b < /proc/stat
  local busy=0 idle=0 i
  for i in 1 2 3 4 5 6 7 8; do busy=$((busy + b[i] - a[i])); done
  idle=$((b[4] - a[4] + b[5] - a[5]))
  echo $((100 * idle / (busy > 0 ? busy : 1)))
}

quiet() {
  local waited=0 idle
  idle=$(idle_pct)
  while [ "$idle" -lt 85 ] && [ "$waited" -lt "$QUIET_WAIT" ]; do
    sleep 2; waited=$((waited + 5)); idle=$(idle_pct)
  done
  echo "${idle}%idle"
}

bench() {
  local name=$1; shift
  [[ "$name" =~ $FILTER ]] || return 0
  for i in $(seq "${START:-1}" "$RUNS"); do
    local load; load=$(quiet)
    echo "== $name run $i ($load before): $LT $*" | tee -a "$OUT/commands.txt"
    timeout 600 "$LT" "$@" --json --seed "$i" > "$OUT/$name.$i.json" 2> "$OUT/$name.$i.err"
    echo "   exit $?" | tee -a "$OUT/commands.txt"
  done
}

# BIN_DIR: a private copy of the server binaries, so a rebuild mid-run cannot change them.
# Two cores are shared by every process here, so each server process gets less than one:
# the main runs give Kurir's processes one worker thread each (KURIR_WORKER_THREADS=1, as
# the Socket.IO servers have one event loop); the `-mt` runs keep the default (one per CPU).
B="--spawn-cluster${BIN_DIR:+ --bin-dir $BIN_DIR}"
K="$B --gateway-env KURIR_WORKER_THREADS=1 --dispatcher-env KURIR_WORKER_THREADS=1"
bench floor            floor    --sockets 10000 --duration 5
bench connect-1gw      connect  $K --gateways 1 --clients 15000 --workers 2 --hold 5
bench connect-cluster  connect  $K --gateways 6 --clients 102000 --workers 7 --hold 5 --connect-concurrency 128 --timeout-ms 30000
bench targeted-max     targeted $K --gateways 2 --clients 10000 --workers 1 --rate 0 --count 400000 --duration 15 --inflight 512 --channels 8
bench targeted-max-mt  targeted $B --gateways 2 --clients 10000 --workers 1 --rate 0 --count 400000 --duration 15 --inflight 512 --channels 8
bench targeted-10k     targeted $K --gateways 2 --clients 10000 --workers 1 --rate 10000 --count 150000 --duration 15 --inflight 1024 --channels 8
bench targeted-10k-mt  targeted $B --gateways 2 --clients 10000 --workers 1 --rate 10000 --count 150000 --duration 15 --inflight 1024 --channels 8
bench targeted-5k      targeted $K --gateways 2 --clients 10000 --workers 1 --rate 5000 --count 75000 --duration 15 --inflight 512 --channels 8
bench targeted-2k      targeted $K --gateways 2 --clients 10000 --workers 1 --rate 2000 --count 30000 --duration 15 --inflight 256 --channels 4
bench fanout-topic     fanout   $K --gateways 2 --clients 20000 --workers 2 --mode topic --publishes 50 --rate 5 --duration 30
bench fanout-broadcast fanout   $K --gateways 2 --clients 20000 --workers 2 --mode broadcast --publishes 50 --rate 5 --duration 30
bench fanout-topic-max     fanout $K --gateways 2 --clients 20000 --workers 2 --mode topic --publishes 200 --rate 0 --inflight 8 --duration 30
bench fanout-broadcast-max fanout $K --gateways 2 --clients 20000 --workers 2 --mode broadcast --publishes 200 --rate 0 --inflight 8 --duration 30
bench vs-sio-targeted  targeted $K --gateways 2 --clients 2000  --workers 0 --rate 2000 --count 30000 --duration 15 --compare-socketio
bench vs-sio-targeted-5k targeted $K --gateways 2 --clients 10000 --workers 1 --rate 5000 --count 75000 --duration 15 --inflight 512 --channels 8 --compare-socketio
bench vs-sio-connect   connect  $K --gateways 2 --clients 10000 --workers 1 --hold 5 --compare-socketio
RUNS=1 bench churn     churn    $K --gateways 2 --clients 5000 --workers 1 --churners 500 --hold-ms 500 --rate 1000 --duration 15
RUNS=1 bench batch     batch    $K --gateways 2 --clients 10000 --workers 1 --batch 1000 --rate 20 --count 300 --duration 15

# Transports: the same loads over WebSocket, SSE and MQTT (the SITUK-style WebSocket
# against MQTT comparison is the targeted pair). The shared Redis and NATS serve every
# delivery, so they are measured too: their PIDs from the ports they listen on.
listener_pid() { ss -ltnpH "sport = :$1" | grep -o 'pid=[0-9]*' | head -1 | cut -d= -f2; }
SHARED=""
for svc in redis:6379 nats:4222; do
  pid=$(listener_pid "${svc#*:}")
  [ -n "$pid" ] && SHARED="$SHARED --pid ${svc%%:*}=$pid"
done
for t in kurir kurir-sse kurir-mqtt; do
  bench "transport-connect-$t"  connect  $K --peer "$t" --gateways 1 --clients 15000 --workers 2 --hold 5
  bench "transport-targeted-$t" targeted $K $SHARED --peer "$t" --gateways 2 --clients 10000 --workers 1 --rate 5000 --count 75000 --duration 15 --inflight 512 --channels 8
done

# The due-queue: fallback pushes coming due at 1,000, 5,000 and 10,000 per second to
# offline users' Web Push devices (a fake push service inside the load generator), after
# the queue was filled. One dispatcher (one runtime thread, then the default of one per
# CPU), its Redis and NATS measured. 10,000/s is more than this box's two cores carry:
# the long drain lets the backlog empty, so the run shows the rate the queue drains at.
D="$B --dispatcher-env KURIR_WORKER_THREADS=1"
bench due-1k     due $D $SHARED --rate 1000  --count 20000  --users 10000
bench due-5k-mt  due $B $SHARED --rate 5000  --count 50000  --users 20000 --lead 10
bench due-10k-mt due $B $SHARED --rate 10000 --count 100000 --users 20000 --lead 15 --drain 40

# Round 2's targets table, every process counted (the shared Redis and NATS by PID; the
# Socket.IO stack's own Redis is one of the processes it starts).
bench r2-targeted-10k  targeted $K $SHARED --gateways 2 --clients 10000 --workers 1 --rate 10000 --count 150000 --duration 15 --inflight 1024 --channels 8
bench r2-targeted-1k   targeted $K $SHARED --gateways 2 --clients 10000 --workers 1 --rate 1000 --count 15000 --duration 15 --inflight 256 --channels 4
bench r2-targeted-max  targeted $K $SHARED --gateways 2 --clients 10000 --workers 1 --rate 0 --count 400000 --duration 15 --inflight 512 --channels 8
bench r2-vs-sio-10k    targeted $K $SHARED --gateways 2 --clients 10000 --workers 1 --rate 10000 --count 150000 --duration 15 --inflight 1024 --channels 8 --compare-socketio
RUNS=1 bench r2-connect-500k connect $K --gateways 27 --clients 500000 --workers 27 --hold 5 --connect-concurrency 128 --timeout-ms 30000
# The seed study's comparison as a peer run: the same targeted load against a Mosquitto
# broker of the run's own (clients on `u/<user>` at QoS 0, the sender publishing there).
bench r2-vs-mqtt-10k   targeted $K $SHARED --gateways 2 --clients 10000 --workers 1 --rate 10000 --count 150000 --duration 15 --inflight 1024 --channels 8 --send-stream --compare-mqtt
bench r2-vs-mqtt-1k    targeted $K $SHARED --gateways 2 --clients 10000 --workers 1 --rate 1000 --count 15000 --duration 15 --inflight 256 --channels 4 --send-stream --compare-mqtt
