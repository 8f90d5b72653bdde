#!/usr/bin/env bash
# The side-by-side benchmark: ringleader, etcd and Redis under one load generator, on this
# machine, written to BENCHMARKS.md.
#
# It installs etcd, Redis and protoc from Debian's packages if they are missing (protoc builds
# the etcd gRPC client), then runs its sections, each on loopback ports of its own:
#   matrix    a 3-member etcd (WAL and data on tmpfs), a Redis node (no persistence) and a
#             ringleader cluster (view leader + 5 servers with --in-memory): every workload
#             (ringleader-bench matrix);
#   durable   a 3-member etcd with its data dir on the disk, against 5 ringleader servers with
#             their defaults (a data dir each on the same disk, --fsync batch): writes only;
#   recovery  a durable server loaded with RECOVERY_KEYS keys, killed (-9) and restarted:
#             restart time, keys/s recovered, disk bytes per key (ringleader-bench recovery),
#             with snapshots and with the log alone;
#   engines   the log engine against redb, concurrent durable puts (ringleader-bench engines);
#   rebalance re-replication after one of 5 servers is lost (client bench);
#   memory    peak RSS per server with 1,000,000 keys (ringleader-bench memory);
# stops everything it started and renders BENCHMARKS.md from the results of every section
# (a section not run this time keeps its results of the last run, from RESULTS_DIR).
#
# Settings (environment):
#   SECTIONS=matrix,durable,recovery,engines,rebalance,memory   the sections to run;
#                     SECTIONS=durable runs the durable comparison alone (about 2 minutes)
#   RUNS=3            runs of each matrix (the report takes medians)
#   DURATION_S=3      seconds per cell
#   CONCURRENCY=1,16,64 DURABLE_CONCURRENCY=1,16,64 ENGINE_CONCURRENCY=1,16,64
#   MEMORY_KEYS=1000000 REBALANCE_KEYS="100000 1000000"
#   RECOVERY_KEYS=1000000 RECOVERY_RESTARTS=3 RECOVERY_LOAD=setr (or transfer)
#   DISK_ROOT=$CARGO_TARGET_DIR or target/   where the on-disk data dirs go: a real disk, not tmpfs
#   QUICK=1           one short run of a few cells, to check the set-up (a few minutes); writes
#                     target/BENCHMARKS-quick.md, never BENCHMARKS.md
#   OUT=BENCHMARKS.md RESULTS_DIR=target/bench-results
set -euo pipefail

cd "$(dirname "$0")/.."
ROOT=$(pwd)
TARGET_DIR=${CARGO_TARGET_DIR:-$ROOT/target}
SECTIONS=${SECTIONS:-matrix,durable,recovery,engines,rebalance,memory}
RUNS=${RUNS:-3}
DURATION_S=${DURATION_S:-3}
CONCURRENCY=${CONCURRENCY:-1,16,64}
DURABLE_CONCURRENCY=${DURABLE_CONCURRENCY:-1,16,64}
ENGINE_CONCURRENCY=${ENGINE_CONCURRENCY:-1,16,64}
MEMORY_KEYS=${MEMORY_KEYS:-1000000}
REBALANCE_KEYS=${REBALANCE_KEYS:-100000 1000000}
REBALANCE_RUNS=${REBALANCE_RUNS:-3}
RECOVERY_KEYS=${RECOVERY_KEYS:-1000000}
RECOVERY_RESTARTS=${RECOVERY_RESTARTS:-3}
RECOVERY_LOAD=${RECOVERY_LOAD:-setr}
DISK_ROOT=${DISK_ROOT:-$TARGET_DIR}
OUT=${OUT:-BENCHMARKS.md}
RESULTS_DIR=${RESULTS_DIR:-$TARGET_DIR/bench-results}
MIXES=write,read,ycsb-a,ycsb-b,ycsb-c
DISTRIBUTIONS=uniform,zipfian
WARMUP_OPS=500 KEYS=1000 VALUE_BYTES=100 CONNECTIONS=8
if [[ "${QUICK:-0}" == 1 ]]; then
    RUNS=1 DURATION_S=1 CONCURRENCY=1,16 MEMORY_KEYS=100000 REBALANCE_KEYS=10000 REBALANCE_RUNS=1
    DURABLE_CONCURRENCY=1,16 ENGINE_CONCURRENCY=1,16 RECOVERY_KEYS=20000 RECOVERY_RESTARTS=1
    MIXES=write,read,ycsb-a DISTRIBUTIONS=uniform
    OUT=$TARGET_DIR/BENCHMARKS-quick.md RESULTS_DIR=$TARGET_DIR/bench-results-quick
fi
# has_section NAME: whether SECTIONS asks for NAME.
has_section() { [[ ",$SECTIONS," == *",$1,"* ]]; }
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
BIN=$TARGET_DIR/release

# ----- processes we start, and their cleanup -------------------------------------------------
WORK=$(mktemp -d /tmp/ringleader-bench.XXXXXX)
SHM=$(mktemp -d /dev/shm/ringleader-bench-etcd.XXXXXX)
mkdir -p "$DISK_ROOT" "$RESULTS_DIR"
DISK=$(mktemp -d "$DISK_ROOT/bench-disk.XXXXXX")
PIDS=()
cleanup() {
    for pid in "${PIDS[@]}"; do kill "$pid" 2>/dev/null || true; done
    wait 2>/dev/null || true
    rm -rf "$SHM" "$WORK" "$DISK"
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

# start_etcd DIR: 3 members with their data dirs (and WALs) under DIR; sets ETCD_ENDPOINTS and
# remembers the pids in ETCD_PIDS.
start_etcd() {
    local dir=$1 cluster="" i
    ETCD_PIDS=()
    local -a client_ports peer_ports
    for i in 1 2 3; do
        client_ports[i]=$(free_port)
        peer_ports[i]=$(free_port)
        cluster+="${cluster:+,}m$i=http://127.0.0.1:${peer_ports[i]}"
    done
    ETCD_ENDPOINTS=""
    for i in 1 2 3; do
        ETCD_UNSUPPORTED_ARCH=${ETCD_UNSUPPORTED_ARCH:-} etcd --name "m$i" --data-dir "$dir/m$i" \
            --listen-client-urls "http://127.0.0.1:${client_ports[i]}" \
            --advertise-client-urls "http://127.0.0.1:${client_ports[i]}" \
            --listen-peer-urls "http://127.0.0.1:${peer_ports[i]}" \
            --initial-advertise-peer-urls "http://127.0.0.1:${peer_ports[i]}" \
            --initial-cluster "$cluster" --initial-cluster-state new \
            --initial-cluster-token ringleader-bench --log-level error \
            >"$WORK/etcd-$i.log" 2>&1 &
        PIDS+=($!)
        ETCD_PIDS+=($!)
        ETCD_ENDPOINTS+="${ETCD_ENDPOINTS:+,}http://127.0.0.1:${client_ports[i]}"
    done
    wait_for "etcd" env ETCDCTL_API=3 etcdctl --endpoints "$ETCD_ENDPOINTS" endpoint health
    say "etcd: 3 members at $ETCD_ENDPOINTS (data and WAL in $dir, $(fstype "$dir"))"
}

# fstype DIR: the file system DIR is on (tmpfs, ext4, ...).
fstype() {
    df --output=fstype "$1" | tail -1 | tr -d ' '
}

start_redis() {
    local port
    port=$(free_port)
    redis-server --bind 127.0.0.1 --port "$port" --save '' --appendonly no --daemonize no \
        --dir "$WORK" >"$WORK/redis.log" 2>&1 &
    PIDS+=($!)
    REDIS_PIDS=($!)
    REDIS_ADDR=127.0.0.1:$port
    wait_for "redis" redis-cli -p "$port" ping
    say "redis: $REDIS_ADDR (no persistence)"
}

# start_ringleader NAME MODE: a view leader and 5 servers, MODE `memory` (--in-memory) or `disk`
# (the default durable servers, a data dir each under $DISK); sets VIEWLEADER and SERVER_FLAGS
# (--server ADDR=PID for each) and remembers their pids in RL_PIDS.
start_ringleader() {
    local name=$1 mode=$2 i addr storage
    RL_PIDS=()
    SERVER_FLAGS=()
    "$BIN/viewleader" --port 0 --data-dir "$WORK/$name-viewleader.data" \
        >"$WORK/$name-viewleader.log" 2>&1 &
    RL_PIDS+=($!)
    PIDS+=($!)
    wait_for "the view leader" grep -q "listening on" "$WORK/$name-viewleader.log"
    VIEWLEADER=$(listening_addr "$WORK/$name-viewleader.log")
    for i in 1 2 3 4 5; do
        if [[ $mode == memory ]]; then storage=(--in-memory); else storage=(--data-dir "$DISK/$name-server-$i"); fi
        "$BIN/server" --port 0 --viewleader "$VIEWLEADER" "${storage[@]}" \
            >"$WORK/$name-server-$i.log" 2>&1 &
        RL_PIDS+=($!)
        PIDS+=($!)
        wait_for "server $i" grep -q "listening on" "$WORK/$name-server-$i.log"
        addr=$(listening_addr "$WORK/$name-server-$i.log")
        SERVER_FLAGS+=(--server "$addr=$!")
    done
    wait_for "a settled view of 5 servers" servers_settled 5
    say "ringleader ($name): view leader $VIEWLEADER, 5 servers ($mode)"
}

servers_settled() {
    "$BIN/client" --viewleader "$VIEWLEADER" --json query_servers |
        python3 -c 'import json,sys; v=json.load(sys.stdin); sys.exit(0 if len(v["servers"])==int(sys.argv[1]) and not v.get("rebalancing") else 1)' "$1"
}

# stop_pids PID...: stops those processes we started, and forgets them, so that the cleanup
# never signals a pid the system has given to another.
stop_pids() {
    local pid keep=() stopped gone
    for pid in "$@"; do kill "$pid" 2>/dev/null || true; done
    for pid in "$@"; do wait "$pid" 2>/dev/null || true; done
    for pid in "${PIDS[@]}"; do
        stopped=0
        for gone in "$@"; do [[ $pid == "$gone" ]] && stopped=1; done
        ((stopped)) || keep+=("$pid")
    done
    PIDS=("${keep[@]}")
}

stop_ringleader() { stop_pids "${RL_PIDS[@]}"; }

COMMIT="$(git rev-parse --short HEAD 2>/dev/null || echo unknown)"
RUSTC="$(rustc --version)"
ETCD_VERSION="$(etcd --version | sed -n 's/etcd Version: //p')"
# Each section writes its lines to $WORK/SECTION.jsonl, moved to $RESULTS_DIR once it is done (a
# section that fails keeps the results of its last complete run).
section_done() {
    mv "$WORK/$1.jsonl" "$RESULTS_DIR/$1.jsonl"
}
setting() {
    python3 -c 'import json,sys; print(json.dumps({"kind": "setting", "name": sys.argv[1], "value": sys.argv[2]}))' "$1" "$2"
}
# The 1-minute load average: the machine may be shared, so each section records it at its start
# and its end (its own load generator and servers count too).
load1() { cut -d' ' -f1 /proc/loadavg; }
# load_setting SECTION START: the section's line about the load.
load_setting() {
    setting "Load average during $1" "$2 at the start, $(load1) at the end (1 minute, $(nproc) cores)"
}

if has_section matrix; then
    out=$WORK/matrix.jsonl
    load_start=$(load1)
    # The figures of the report this run replaces, shown beside the new ones.
    "$BIN/ringleader-bench" previous --from "$OUT" >"$out"
    {
        echo "{\"kind\":\"version\",\"name\":\"ringleader\",\"version\":\"$COMMIT ($RUSTC)\"}"
        echo "{\"kind\":\"version\",\"name\":\"etcd\",\"version\":\"$ETCD_VERSION (3 members on loopback, data and WAL on tmpfs, default snapshot and heartbeat settings)\"}"
        echo "{\"kind\":\"version\",\"name\":\"Redis\",\"version\":\"$(redis-server --version | sed -n 's/.*v=\([^ ]*\).*/\1/p') (one node, no persistence)\"}"
        setting "Matrix" "$RUNS runs of $MIXES (YCSB on $DISTRIBUTIONS keys), ${DURATION_S} s per cell after $WARMUP_OPS warm-up operations, clients $CONCURRENCY, $KEYS keys, $VALUE_BYTES B values; etcd over $CONNECTIONS gRPC clients (each balanced over the 3 members) and Redis over $CONNECTIONS multiplexed connections; ringleader through its library client (one pipelined connection per server)"
        setting "ringleader cluster" "view leader + 5 servers as separate processes, release build, --in-memory (the matrix keeps the figures of the in-memory mode; the durable default is measured in its own section)"
    } >>"$out"
    start_etcd "$SHM"
    start_redis
    start_ringleader matrix memory
    say "running the matrix ($RUNS runs, ${DURATION_S}s per cell)"
    step "$BIN/ringleader-bench" matrix --viewleader "$VIEWLEADER" --etcd "$ETCD_ENDPOINTS" \
        --redis "$REDIS_ADDR" --runs "$RUNS" --duration-s "$DURATION_S" \
        --concurrency "$CONCURRENCY" --mixes "$MIXES" --distributions "$DISTRIBUTIONS" \
        --warmup-ops "$WARMUP_OPS" --keys "$KEYS" --value-bytes "$VALUE_BYTES" \
        --connections "$CONNECTIONS" --out "$out" >/dev/null
    stop_ringleader
    stop_pids "${ETCD_PIDS[@]}" "${REDIS_PIDS[@]}"
    load_setting matrix "$load_start" >>"$out"
    section_done matrix
fi

DISK_DESCRIPTION="$(df --output=source,fstype "$DISK" | tail -1 | awk '{print $1 " (" $2 ")"}')"
if [[ $(fstype "$DISK") == tmpfs ]]; then
    say "warning: DISK_ROOT $DISK_ROOT is on tmpfs; the durable figures will not measure a disk"
fi

if has_section durable; then
    out=$WORK/durable.jsonl
    load_start=$(load1)
    {
        setting "Durable comparison" "ringleader $COMMIT: view leader + 5 servers with default flags (a data dir each, --fsync batch) against etcd $ETCD_VERSION (3 members, default settings) with its data dir and WAL on the same disk; write-only on $KEYS uniform keys, $VALUE_BYTES B values, clients $DURABLE_CONCURRENCY, $RUNS runs, ${DURATION_S} s per cell"
        setting "Disk" "$DISK_DESCRIPTION"
    } >"$out"
    start_etcd "$DISK/etcd"
    start_ringleader durable disk
    say "durable writes: ringleader on disk against etcd on disk ($RUNS runs)"
    step "$BIN/ringleader-bench" matrix --viewleader "$VIEWLEADER" --etcd "$ETCD_ENDPOINTS" \
        --systems ringleader,etcd --mixes write --distributions uniform --section durable \
        --runs "$RUNS" --duration-s "$DURATION_S" --concurrency "$DURABLE_CONCURRENCY" \
        --warmup-ops "$WARMUP_OPS" --keys "$KEYS" --value-bytes "$VALUE_BYTES" \
        --connections "$CONNECTIONS" --out "$out" >/dev/null
    stop_ringleader
    stop_pids "${ETCD_PIDS[@]}"
    rm -rf "${DISK:?}"/*
    load_setting durable "$load_start" >>"$out"
    section_done durable
fi

if has_section recovery; then
    out=$WORK/recovery.jsonl
    load_start=$(load1)
    setting "Restart benchmark" "ringleader $COMMIT: one durable server (default flags) on $DISK_DESCRIPTION, $RECOVERY_KEYS keys of 100 B loaded by $RECOVERY_LOAD, $RECOVERY_RESTARTS kill -9 and restarts, with snapshots (the default) and with the log alone (--no-snapshots)" >"$out"
    # With snapshots (the default), then with the log alone (as before the first snapshot).
    for snapshots in on off; do
        say "restart after kill -9: $RECOVERY_KEYS keys, $RECOVERY_RESTARTS restarts, snapshots $snapshots"
        flags=()
        [[ $snapshots == off ]] && flags=(--no-snapshots)
        step "$BIN/ringleader-bench" recovery --bin-dir "$BIN" --dir "$DISK/recovery" \
            --keys "$RECOVERY_KEYS" --load "$RECOVERY_LOAD" --restarts "$RECOVERY_RESTARTS" \
            "${flags[@]}" --out "$out" >/dev/null
    done
    load_setting recovery "$load_start" >>"$out"
    section_done recovery
fi

if has_section engines; then
    out=$WORK/engines.jsonl
    load_start=$(load1)
    setting "Engine benchmark" "ringleader $COMMIT's log engine against redb $(sed -n '/^name = "redb"$/{n;s/version = "\(.*\)"/\1/p}' Cargo.lock) on $DISK_DESCRIPTION; writers $ENGINE_CONCURRENCY, $RUNS runs, ${DURATION_S} s per cell, 100 B values on 100000 keys" >"$out"
    say "storage engines: the log against redb ($RUNS runs)"
    step "$BIN/ringleader-bench" engines --dir "$DISK/engines" --concurrency "$ENGINE_CONCURRENCY" \
        --runs "$RUNS" --duration-s "$DURATION_S" --out "$out" >/dev/null
    load_setting engines "$load_start" >>"$out"
    section_done engines
fi

if has_section rebalance; then
    out=$WORK/rebalance.jsonl
    load_start=$(load1)
    : >"$out"
    for keys in $REBALANCE_KEYS; do
        for ((run = 1; run <= REBALANCE_RUNS; run++)); do
            say "rebalancing benchmark: $keys keys, run $run"
            step "$BIN/client" --json bench --workload rebalance --servers 5 --keys "$keys" >>"$out"
        done
    done
    load_setting rebalance "$load_start" >>"$out"
    section_done rebalance
fi

if has_section memory; then
    out=$WORK/memory.jsonl
    load_start=$(load1)
    say "memory: $MEMORY_KEYS keys of 100 B on a fresh cluster"
    start_ringleader memory memory
    step "$BIN/ringleader-bench" memory --viewleader "$VIEWLEADER" --keys "$MEMORY_KEYS" \
        --value-bytes 100 "${SERVER_FLAGS[@]}" >"$out"
    stop_ringleader
    load_setting memory "$load_start" >>"$out"
    section_done memory
fi

RESULTS=()
for section in matrix durable recovery engines rebalance memory; do
    [[ -f $RESULTS_DIR/$section.jsonl ]] && RESULTS+=(--results "$RESULTS_DIR/$section.jsonl")
done
((${#RESULTS[@]})) || { say "no results in $RESULTS_DIR to report"; exit 1; }
APPENDIX=()
[[ -f docs/profiling.md ]] && APPENDIX=(--appendix docs/profiling.md)
"$BIN/ringleader-bench" report "${RESULTS[@]}" "${APPENDIX[@]}" \
    --date "$(date -u +%Y-%m-%d)" --out "$OUT"
say "wrote $OUT (raw results in $RESULTS_DIR)"
