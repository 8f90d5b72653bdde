#!/usr/bin/env bash
# The side-by-side benchmark: ringleader, etcd and Redis under one load generator, on this
# machine, written to BENCHMARKS.md.
#
# It installs etcd, Redis and protoc from Debian's packages if they are missing (protoc builds
# the etcd gRPC client), starts a 3-member etcd cluster (WAL and data on tmpfs), a Redis node (no
# persistence) and a ringleader cluster (view leader + 5 servers), all on loopback ports of its
# own, runs the matrix (ringleader-bench matrix), the rebalancing benchmark and the memory
# measurement, stops everything it started and renders BENCHMARKS.md.
#
# Settings (environment):
#   RUNS=3            runs of the whole matrix (the report takes medians)
#   DURATION_S=3      seconds per cell
#   CONCURRENCY=1,16,64
#   MEMORY_KEYS=1000000 REBALANCE_KEYS="100000 1000000"
#   QUICK=1           one short run of a few cells, to check the set-up (about a minute)
#   OUT=BENCHMARKS.md
set -euo pipefail

cd "$(dirname "$0")/.."
ROOT=$(pwd)
RUNS=${RUNS:-3}
DURATION_S=${DURATION_S:-3}
CONCURRENCY=${CONCURRENCY:-1,16,64}
MEMORY_KEYS=${MEMORY_KEYS:-1000000}
REBALANCE_KEYS=${REBALANCE_KEYS:-100000 1000000}
REBALANCE_RUNS=${REBALANCE_RUNS:-3}
OUT=${OUT:-BENCHMARKS.md}
MIXES=write,read,ycsb-a,ycsb-b,ycsb-c
DISTRIBUTIONS=uniform,zipfian
WARMUP_OPS=500 KEYS=1000 VALUE_BYTES=100 CONNECTIONS=8
if [[ "${QUICK:-0}" == 1 ]]; then
    RUNS=1 DURATION_S=1 CONCURRENCY=1,16 MEMORY_KEYS=100000 REBALANCE_KEYS=10000 REBALANCE_RUNS=1
    MIXES=write,read,ycsb-a DISTRIBUTIONS=uniform
fi
# How long a started service may take to answer before the script gives up.
READY_TIMEOUT_S=30

say() { echo "bench.sh: $*" >&2; }

# ----- install what is missing ---------------------------------------------------------------
packages=()
command -v etcd >/dev/null || packages+=(etcd-server)
command -v etcdctl >/dev/null || packages+=(etcd-client)
command -v redis-server >/dev/null || packages+=(redis-server)
command -v redis-cli >/dev/null || packages+=(redis-tools)
command -v protoc >/dev/null || packages+=(protobuf-compiler)
command -v python3 >/dev/null || packages+=(python3)
if ((${#packages[@]})); then
    say "installing ${packages[*]} from Debian's packages"
    SUDO=""
    [[ $(id -u) == 0 ]] || SUDO=sudo
    $SUDO apt-get update -qq
    DEBIAN_FRONTEND=noninteractive $SUDO apt-get install -y -qq "${packages[@]}" >/dev/null
fi

say "building ringleader and ringleader-bench (release)"
cargo build --release -q -p ringleader -p ringleader-bench
BIN=$ROOT/target/release

# ----- processes we start, and their cleanup -------------------------------------------------
WORK=$(mktemp -d /tmp/ringleader-bench.XXXXXX)
SHM=$(mktemp -d /dev/shm/ringleader-bench-etcd.XXXXXX)
PIDS=()
cleanup() {
    for pid in "${PIDS[@]}"; do kill "$pid" 2>/dev/null || true; done
    wait 2>/dev/null || true
    rm -rf "$SHM" "$WORK"
}
trap cleanup EXIT
# A signal ends the script at once (and so runs the cleanup): the long steps run in the
# background with `wait`, which a trapped signal interrupts, unlike a foreground command.
trap 'exit 130' INT
trap 'exit 143' TERM

# step COMMAND...: runs COMMAND so that a signal to the script stops waiting for it.
step() {
    "$@" &
    local pid=$!
    PIDS+=("$pid")
    wait "$pid"
}

free_port() {
    python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1]); s.close()'
}

# wait_for DESCRIPTION COMMAND...: polls COMMAND until it succeeds, for READY_TIMEOUT_S.
wait_for() {
    local what=$1
    shift
    local deadline=$((SECONDS + READY_TIMEOUT_S))
    until "$@" >/dev/null 2>&1; do
        if ((SECONDS >= deadline)); then
            say "$what did not come up within ${READY_TIMEOUT_S}s"
            exit 1
        fi
        sleep 0.2
    done
}

# listening_addr LOGFILE: the address a ringleader process printed ("listening on ADDR").
listening_addr() {
    sed -n 's/.*listening on \([0-9.:]*\).*/\1/p' "$1" | head -1
}

start_etcd() {
    local cluster="" i
    local -a client_ports peer_ports
    for i in 1 2 3; do
        client_ports[i]=$(free_port)
        peer_ports[i]=$(free_port)
        cluster+="${cluster:+,}m$i=http://127.0.0.1:${peer_ports[i]}"
    done
    ETCD_ENDPOINTS=""
    for i in 1 2 3; do
        ETCD_UNSUPPORTED_ARCH=${ETCD_UNSUPPORTED_ARCH:-} etcd --name "m$i" --data-dir "$SHM/m$i" \
            --listen-client-urls "http://127.0.0.1:${client_ports[i]}" \
            --advertise-client-urls "http://127.0.0.1:${client_ports[i]}" \
            --listen-peer-urls "http://127.0.0.1:${peer_ports[i]}" \
            --initial-advertise-peer-urls "http://127.0.0.1:${peer_ports[i]}" \
            --initial-cluster "$cluster" --initial-cluster-state new \
            --initial-cluster-token ringleader-bench --log-level error \
            >"$WORK/etcd-$i.log" 2>&1 &
        PIDS+=($!)
        ETCD_ENDPOINTS+="${ETCD_ENDPOINTS:+,}http://127.0.0.1:${client_ports[i]}"
    done
    wait_for "etcd" env ETCDCTL_API=3 etcdctl --endpoints "$ETCD_ENDPOINTS" endpoint health
    say "etcd: 3 members at $ETCD_ENDPOINTS (data and WAL in $SHM, tmpfs)"
}

start_redis() {
    local port
    port=$(free_port)
    redis-server --bind 127.0.0.1 --port "$port" --save '' --appendonly no --daemonize no \
        --dir "$WORK" >"$WORK/redis.log" 2>&1 &
    PIDS+=($!)
    REDIS_ADDR=127.0.0.1:$port
    wait_for "redis" redis-cli -p "$port" ping
    say "redis: $REDIS_ADDR (no persistence)"
}

# start_ringleader NAME: a view leader and 5 servers; sets VIEWLEADER and SERVER_FLAGS
# (--server ADDR=PID for each) and remembers their pids in RL_PIDS.
start_ringleader() {
    local name=$1 i addr
    RL_PIDS=()
    SERVER_FLAGS=()
    "$BIN/viewleader" --port 0 >"$WORK/$name-viewleader.log" 2>&1 &
    RL_PIDS+=($!)
    PIDS+=($!)
    wait_for "the view leader" grep -q "listening on" "$WORK/$name-viewleader.log"
    VIEWLEADER=$(listening_addr "$WORK/$name-viewleader.log")
    for i in 1 2 3 4 5; do
        "$BIN/server" --port 0 --viewleader "$VIEWLEADER" >"$WORK/$name-server-$i.log" 2>&1 &
        RL_PIDS+=($!)
        PIDS+=($!)
        wait_for "server $i" grep -q "listening on" "$WORK/$name-server-$i.log"
        addr=$(listening_addr "$WORK/$name-server-$i.log")
        SERVER_FLAGS+=(--server "$addr=$!")
    done
    wait_for "a settled view of 5 servers" servers_settled 5
    say "ringleader ($name): view leader $VIEWLEADER, 5 servers"
}

servers_settled() {
    "$BIN/client" --viewleader "$VIEWLEADER" --json query_servers |
        python3 -c 'import json,sys; v=json.load(sys.stdin); sys.exit(0 if len(v["servers"])==int(sys.argv[1]) and not v.get("rebalancing") else 1)' "$1"
}

stop_ringleader() {
    local pid keep=() stopped
    for pid in "${RL_PIDS[@]}"; do kill "$pid" 2>/dev/null || true; done
    for pid in "${RL_PIDS[@]}"; do wait "$pid" 2>/dev/null || true; done
    # Forget them, so that the cleanup never signals a pid the system has given to another.
    for pid in "${PIDS[@]}"; do
        stopped=0
        for rl in "${RL_PIDS[@]}"; do [[ $pid == "$rl" ]] && stopped=1; done
        ((stopped)) || keep+=("$pid")
    done
    PIDS=("${keep[@]}")
}

RESULTS=$WORK/results.jsonl
: >"$RESULTS"
{
    echo "{\"kind\":\"version\",\"name\":\"ringleader\",\"version\":\"$(git rev-parse --short HEAD 2>/dev/null || echo unknown) ($(rustc --version))\"}"
    echo "{\"kind\":\"version\",\"name\":\"etcd\",\"version\":\"$(etcd --version | sed -n 's/etcd Version: //p') (3 members on loopback, data and WAL on tmpfs, default snapshot and heartbeat settings)\"}"
    echo "{\"kind\":\"version\",\"name\":\"Redis\",\"version\":\"$(redis-server --version | sed -n 's/.*v=\([^ ]*\).*/\1/p') (one node, no persistence)\"}"
    echo "{\"kind\":\"setting\",\"name\":\"Matrix\",\"value\":\"$RUNS runs of $MIXES (YCSB on $DISTRIBUTIONS keys), ${DURATION_S} s per cell after $WARMUP_OPS warm-up operations, clients $CONCURRENCY, $KEYS keys, $VALUE_BYTES B values; etcd over $CONNECTIONS gRPC clients (each balanced over the 3 members) and Redis over $CONNECTIONS multiplexed connections; ringleader through its library client (one pipelined connection per server)\"}"
    echo "{\"kind\":\"setting\",\"name\":\"ringleader cluster\",\"value\":\"view leader + 5 servers as separate processes, release build, default flags\"}"
} >>"$RESULTS"

start_etcd
start_redis
start_ringleader matrix

say "running the matrix ($RUNS runs, ${DURATION_S}s per cell)"
step "$BIN/ringleader-bench" matrix --viewleader "$VIEWLEADER" --etcd "$ETCD_ENDPOINTS" \
    --redis "$REDIS_ADDR" --runs "$RUNS" --duration-s "$DURATION_S" \
    --concurrency "$CONCURRENCY" --mixes "$MIXES" --distributions "$DISTRIBUTIONS" \
    --warmup-ops "$WARMUP_OPS" --keys "$KEYS" --value-bytes "$VALUE_BYTES" \
    --connections "$CONNECTIONS" --out "$RESULTS" >/dev/null
stop_ringleader

for keys in $REBALANCE_KEYS; do
    for ((run = 1; run <= REBALANCE_RUNS; run++)); do
        say "rebalancing benchmark: $keys keys, run $run"
        step "$BIN/client" --json bench --workload rebalance --servers 5 --keys "$keys" >>"$RESULTS"
    done
done

say "memory: $MEMORY_KEYS keys of 100 B on a fresh cluster"
start_ringleader memory
step "$BIN/ringleader-bench" memory --viewleader "$VIEWLEADER" --keys "$MEMORY_KEYS" \
    --value-bytes 100 "${SERVER_FLAGS[@]}" >>"$RESULTS"
stop_ringleader

cp "$RESULTS" "$ROOT/target/bench-results.jsonl"
APPENDIX=()
[[ -f docs/profiling.md ]] && APPENDIX=(--appendix docs/profiling.md)
"$BIN/ringleader-bench" report --results "$RESULTS" "${APPENDIX[@]}" \
    --date "$(date -u +%Y-%m-%d)" --out "$OUT"
say "wrote $OUT (raw results in target/bench-results.jsonl)"
