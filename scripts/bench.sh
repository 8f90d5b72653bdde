#!/usr/bin/env bash
# The side-by-side benchmark: ringleader, etcd and Redis under one load generator, on this
# machine, written to BENCHMARKS.md.
#
# It installs protoc (it builds the etcd gRPC client) and, for the sections that measure them,
# etcd and Redis from Debian's packages if they are missing, then runs its sections, each on
# loopback ports of its own:
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
#   viewleader the view leader as a Raft group: leader failover, KILLS times kill -9 of the
#             leader of 3 members (data dirs on the disk) with 5 in-memory servers, timed until a
#             member leads at a higher term, until a fresh client's setr and lock_get succeed
#             through the member list, and a writing client's longest gap; the killed member
#             restarted on its data dir and caught up before the next kill (ringleader-bench
#             failover); then setr and getr on two clusters of 5 --in-memory servers up at once,
#             one with a view leader of 1 member and one of 3, cell by cell in turn, and
#             the view refresh (query_servers) on each alone (ringleader-bench vl-throughput);
# stops everything it started and renders BENCHMARKS.md from the results of every section
# (a section not run this time keeps its results of the last run, from RESULTS_DIR). If
# RESULTS_DIR lacks the results of some section and OUT exists, rendering would drop that
# section's figures from OUT: then only OUT's view-leader section is rewritten (when it has
# results) and its other sections are left as they are; FULL_REPORT=1 renders OUT from
# RESULTS_DIR alone anyway.
#
# Settings (environment):
#   SECTIONS=matrix,durable,recovery,engines,rebalance,memory,viewleader   the sections to
#                     run; SECTIONS=durable runs the durable comparison alone (about 2 minutes),
#                     SECTIONS=viewleader the view leader's (about 5 minutes)
#   RUNS=3            runs of each matrix (the report takes medians)
#   DURATION_S=3      seconds per cell
#   CONCURRENCY=1,16,64 DURABLE_CONCURRENCY=1,16,64 ENGINE_CONCURRENCY=1,16,64
#   MEMORY_KEYS=1000000 REBALANCE_KEYS="100000 1000000"
#   RECOVERY_KEYS=1000000 RECOVERY_RESTARTS=3 RECOVERY_LOAD=setr (or transfer)
#   KILLS=10 VL_CONCURRENCY=1,16,64   failovers, and the clients of the 1-against-3 cells
#   VL_ELECTION_TIMEOUT_MS=   the members' --election-timeout-ms in the failovers (empty: the
#                     binary's default)
#   DISK_ROOT=$CARGO_TARGET_DIR or target/   where the on-disk data dirs go: a real disk, not tmpfs
#   QUICK=1           one short run of a few cells, to check the set-up (a few minutes); writes
#                     target/BENCHMARKS-quick.md, never BENCHMARKS.md
#   OUT=BENCHMARKS.md RESULTS_DIR=target/bench-results
set -euo pipefail

cd "$(dirname "$0")/.."
ROOT=$(pwd)
TARGET_DIR=${CARGO_TARGET_DIR:-$ROOT/target}
SECTIONS=${SECTIONS:-matrix,durable,recovery,engines,rebalance,memory,viewleader}
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
KILLS=${KILLS:-10}
VL_CONCURRENCY=${VL_CONCURRENCY:-1,16,64}
VL_ELECTION_TIMEOUT_MS=${VL_ELECTION_TIMEOUT_MS:-}
DISK_ROOT=${DISK_ROOT:-$TARGET_DIR}
OUT=${OUT:-BENCHMARKS.md}
RESULTS_DIR=${RESULTS_DIR:-$TARGET_DIR/bench-results}
MIXES=write,read,ycsb-a,ycsb-b,ycsb-c
DISTRIBUTIONS=uniform,zipfian
WARMUP_OPS=500 KEYS=1000 VALUE_BYTES=100 CONNECTIONS=8
if [[ "${QUICK:-0}" == 1 ]]; then
    RUNS=1 DURATION_S=1 CONCURRENCY=1,16 MEMORY_KEYS=100000 REBALANCE_KEYS=10000 REBALANCE_RUNS=1
    DURABLE_CONCURRENCY=1,16 ENGINE_CONCURRENCY=1,16 RECOVERY_KEYS=20000 RECOVERY_RESTARTS=1
    KILLS=2 VL_CONCURRENCY=1,16
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
if has_section matrix || has_section durable; then
    command -v etcd >/dev/null || packages+=(etcd-server)
    command -v etcdctl >/dev/null || packages+=(etcd-client)
fi
if has_section matrix; then
    command -v redis-server >/dev/null || packages+=(redis-server)
    command -v redis-cli >/dev/null || packages+=(redis-tools)
fi
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

# start_ringleader NAME MODE [MEMBERS]: a view leader and 5 servers, MODE `memory` (--in-memory)
# or `disk` (the default durable servers, a data dir each under $DISK); the view leader is one
# member (the default) or a Raft group of MEMBERS members, each with a data dir of its own under
# $WORK. Sets VIEWLEADER (the member list) and SERVER_FLAGS (--server ADDR=PID for each) and
# remembers their pids in RL_PIDS.
start_ringleader() {
    local name=$1 mode=$2 members=${3:-1} i addr storage peers=""
    local -a ports
    RL_PIDS=()
    SERVER_FLAGS=()
    if ((members == 1)); then
        "$BIN/viewleader" --port 0 --data-dir "$WORK/$name-viewleader.data" \
            >"$WORK/$name-viewleader.log" 2>&1 &
        RL_PIDS+=($!)
        PIDS+=($!)
        wait_for "the view leader" grep -q "listening on" "$WORK/$name-viewleader.log"
        VIEWLEADER=$(listening_addr "$WORK/$name-viewleader.log")
    else
        VIEWLEADER=""
        for ((i = 1; i <= members; i++)); do
            ports[i]=$(free_port)
            peers+="${peers:+,}$i=127.0.0.1:${ports[i]}"
            VIEWLEADER+="${VIEWLEADER:+,}127.0.0.1:${ports[i]}"
        done
        for ((i = 1; i <= members; i++)); do
            "$BIN/viewleader" --id "$i" --peers "$peers" \
                --data-dir "$WORK/$name-viewleader-$i.data" >"$WORK/$name-viewleader-$i.log" 2>&1 &
            RL_PIDS+=($!)
            PIDS+=($!)
        done
        wait_for "a leader of the view leader's $members members" one_leader
    fi
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

# one_leader: whether exactly one member of VIEWLEADER says it leads.
one_leader() {
    "$BIN/client" --viewleader "$VIEWLEADER" --json viewleader status |
        python3 -c 'import json,sys; sys.exit(0 if len(json.load(sys.stdin)["leaders"])==1 else 1)'
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
ETCD_VERSION="$(etcd --version 2>/dev/null | sed -n 's/etcd Version: //p' || true)"
# Each section writes its lines to $WORK/SECTION.jsonl, moved to $RESULTS_DIR once it is done (a
# section that fails keeps the results of its last complete run).
section_done() {
    mv "$WORK/$1.jsonl" "$RESULTS_DIR/$1.jsonl"
}
setting() {
    python3 -c 'import json,sys; print(json.dumps({"kind": "setting", "name": sys.argv[1], "value": sys.argv[2]}))' "$1" "$2"
}
# The machine's CPU as /proc/cpuinfo names it (a section rendered into an existing report
# names it too, since the report's own machine line may be another's).
cpu_model() { sed -n 's/^model name[[:space:]]*: //p' /proc/cpuinfo | head -1; }
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

if has_section viewleader; then
    out=$WORK/viewleader.jsonl
    load_start=$(load1)
    timeout_flags=()
    timeout_text="the binary's default"
    if [[ -n $VL_ELECTION_TIMEOUT_MS ]]; then
        timeout_flags=(--election-timeout-ms "$VL_ELECTION_TIMEOUT_MS")
        timeout_text="$VL_ELECTION_TIMEOUT_MS ms"
    fi
    {
        setting "View-leader failover" "ringleader $COMMIT, $(date -u +%Y-%m-%d), on $(cpu_model) ($(nproc) cores): $KILLS kills (-9) of the leader of 3 view-leader members with their data dirs on $DISK_DESCRIPTION, 5 --in-memory servers, election timeout $timeout_text"
        setting "View-leader throughput" "ringleader $COMMIT, $(date -u +%Y-%m-%d): setr and linearizable getr through the library client, clients $VL_CONCURRENCY, $RUNS runs, ${DURATION_S} s per cell after $WARMUP_OPS warm-up operations, $KEYS uniform keys, $VALUE_BYTES B values, on two clusters of 5 --in-memory servers up at once, one with a view leader of 1 member and one of 3 (data dirs on $(fstype "$WORK"))"
    } >"$out"
    say "view-leader failover: $KILLS kills of the leader of 3 members"
    step "$BIN/ringleader-bench" failover --bin-dir "$BIN" --dir "$DISK/failover" \
        --kills "$KILLS" "${timeout_flags[@]}" --out "$out" >/dev/null
    load_failover=$(load1)
    say "setr and getr with a view leader of 1 member and of 3 ($RUNS runs, ${DURATION_S}s per cell)"
    start_ringleader vl1 memory 1
    VL_ONE=$VIEWLEADER
    VL_ONE_PIDS=("${RL_PIDS[@]}")
    start_ringleader vl3 memory 3
    VL_THREE=$VIEWLEADER
    VL_THREE_PIDS=("${RL_PIDS[@]}")
    step "$BIN/ringleader-bench" vl-throughput --group "1=$VL_ONE" --group "3=$VL_THREE" \
        --runs "$RUNS" --duration-s "$DURATION_S" --concurrency "$VL_CONCURRENCY" \
        --warmup-ops "$WARMUP_OPS" --keys "$KEYS" --value-bytes "$VALUE_BYTES" \
        --out "$out" >/dev/null
    stop_pids "${VL_ONE_PIDS[@]}" "${VL_THREE_PIDS[@]}"
    rm -rf "${DISK:?}"/*
    setting "Load average during viewleader" "$load_start at the start, $load_failover after the failovers, $(load1) at the end (1 minute, $(nproc) cores)" >>"$out"
    section_done viewleader
fi

# The sections the library's report renders; the view leader's the bench crate adds.
CLASSIC_SECTIONS=(matrix durable recovery engines rebalance memory)
RESULTS=()
MISSING=()
for section in "${CLASSIC_SECTIONS[@]}" viewleader; do
    if [[ -f $RESULTS_DIR/$section.jsonl ]]; then
        RESULTS+=(--results "$RESULTS_DIR/$section.jsonl")
    elif [[ $section != viewleader ]]; then
        MISSING+=("$section")
    fi
done
((${#RESULTS[@]})) || { say "no results in $RESULTS_DIR to report"; exit 1; }
if ((${#MISSING[@]})) && [[ -f $OUT && ${FULL_REPORT:-0} != 1 ]]; then
    # Rendering from RESULTS_DIR alone would drop those sections' figures from OUT.
    if [[ -f $RESULTS_DIR/viewleader.jsonl ]]; then
        "$BIN/ringleader-bench" report --splice --results "$RESULTS_DIR/viewleader.jsonl" \
            --date "$(date -u +%Y-%m-%d)" --out "$OUT"
        say "$RESULTS_DIR has no results of ${MISSING[*]}: rewrote only the view-leader section of $OUT, its other sections are as they were"
    else
        say "$RESULTS_DIR has no results of ${MISSING[*]}: left $OUT as it is"
    fi
    for section in "${CLASSIC_SECTIONS[@]}"; do
        if has_section "$section" && [[ -f $RESULTS_DIR/$section.jsonl ]]; then
            say "the results of $section are in $RESULTS_DIR/$section.jsonl but not in $OUT: FULL_REPORT=1 renders $OUT from $RESULTS_DIR alone"
        fi
    done
    exit 0
fi
APPENDIX=()
[[ -f docs/profiling.md ]] && APPENDIX=(--appendix docs/profiling.md)
"$BIN/ringleader-bench" report "${RESULTS[@]}" "${APPENDIX[@]}" \
    --date "$(date -u +%Y-%m-%d)" --out "$OUT"
say "wrote $OUT (raw results in $RESULTS_DIR)"
