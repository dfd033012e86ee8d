#!/usr/bin/env bash
# CPU per acknowledged write (or read, OP=get): the cluster's CPU time (user +
# system, summed over the node processes, from /proc/PID/stat) divided by the
# 2xx PUTs (GETs) wrk got. On a shared machine throughput is noise; CPU per
# request is much steadier, so this is the figure to compare two builds with (A/B).
#
#   benches/peers/cpu.sh                one cluster, every CASE measured in turn
#   STRATOSDB_BIN=a:b benches/peers/cpu.sh   A/B: each binary's cluster in turn,
#                                       ROUNDS times, alternating
#   VARIANTS="--anchor-interval off|--anchor-interval 1s" benches/peers/cpu.sh
#                                       A/B of node flags (NODE_ARGS), one
#                                       binary: each variant's cluster in turn
#
# Environment: OP (put: PUTs of 1 KiB documents to random keys; get: GETs of
# random keys, all present after the fill, GET_QUERY appended to the path, by
# default none: linearizable reads, as run.sh's get-linearizable; the request
# templates are workloads.sh's, shared with run.sh), NODES (3), CASES
# ("kv:8:3 kv1:1:3" = collection:shards:replicas), KEYSPACE (20000 keys,
# filled first so every PUT replaces and every GET finds a 1 KiB document),
# CONNS (64), MEASURE_SECONDS (10, each measurement), ROUNDS (1), P2P_BASE/HTTP_BASE
# (34500/34600 for the first cluster, +10 for each next one; apart from run.sh's), STRATOSDB_BASE (/tmp/perf-cpu), PERF_RECORD
# (set: `perf record -e cpu-clock` of every node during the run, into PEERS_OUT;
# PERF_CALL_GRAPH=dwarf for call stacks through Rust code without frame pointers,
# PERF_FREQ samples a second, 499 by default),
# TIMELINE (set: the measured wrk run also records replies per 50 ms window and
# each traffic epoch's first reply, into PEERS_OUT/LABEL.timeline.txt; read
# them with benches/peers/timeline.py), THREADS (set: CPU per request of each
# node's threads by name, into PEERS_OUT/LABEL.threads.txt).
# wrk sends to the node leading most shards of the collection, as run.sh.
# Prints one line per measurement: µs of CPU per write or read (all nodes, and
# per node), context switches per request, requests/s.
set -euo pipefail
HERE=$(cd "$(dirname "$0")" && pwd)
ROOT=$(cd "$HERE/../.." && pwd)
PEERS_DIR=${PEERS_DIR:-/work/shared/peers}
export PEERS_DIR
. "$PEERS_DIR/lib/common.sh"
SDB=$HERE/stratosdb.sh
export NODES=${NODES:-3}
CASES=${CASES:-kv:8:3 kv1:1:3}
export KEYSPACE=${KEYSPACE:-20000}
CONNS=${CONNS:-64}
SECONDS_EACH=${MEASURE_SECONDS:-10}
ROUNDS=${ROUNDS:-1}
P2P_FIRST=${P2P_BASE:-34500} HTTP_FIRST=${HTTP_BASE:-34600}
export P2P_BASE HTTP_BASE
# Each cluster gets new ports: a stopped node's API port may sit in TIME_WAIT.
starts=0
export STRATOSDB_BASE=${STRATOSDB_BASE:-/tmp/perf-cpu}
BINS=${STRATOSDB_BIN:-$ROOT/target/release/stratosdb}
export SDB_PREFIX=bench KEY_PREFIX=bench
OP=${OP:-put}
. "$HERE/workloads.sh"
case "$OP" in
put) unit=write ;;
get) unit=read ;;
*) echo "OP=$OP: put or get" >&2; exit 2 ;;
esac
OUT=${PEERS_OUT:-/tmp/perf-cpu-results}
mkdir -p "$OUT"

started=0
cleanup() {
    local rc=$?
    if [ "$started" = 1 ]; then "$SDB" stop >/dev/null 2>&1 || true; fi
    exit $rc
}
trap cleanup EXIT
trap 'exit 130' INT TERM

# pid list of the running nodes
pids() { awk '{print $2}' "$STRATOSDB_BASE/pids"; }
# "cpu_ticks voluntary nonvoluntary" of one pid
sample() {
    local t v n
    t=$(awk '{print $14 + $15}' "/proc/$1/stat")
    # Context switches of every thread of the process.
    v=$(cat /proc/"$1"/task/*/status 2>/dev/null | awk '/^voluntary_ctxt_switches/ {s += $2} END {print s + 0}')
    n=$(cat /proc/"$1"/task/*/status 2>/dev/null | awk '/^nonvoluntary_ctxt_switches/ {s += $2} END {print s + 0}')
    echo "$t $v $n"
}

sql() {
    local code
    code=$(curl -s -o /dev/null -w '%{http_code}' --max-time 60 "$1/v1/sql" \
        -H 'Content-Type: application/json' -d "$(jq -cn --arg s "$2" '{sql: $s}')")
    [ "${code:0:1}" = 2 ] || die "statement failed ($code): $2"
}

# measure LABEL URL COLLECTION: one wrk run of OP, CPU sampled around it.
measure() {
    local label=$1 url=$2 coll=$3 p before after raw reqs non2xx hz
    hz=$(getconf CLK_TCK)
    if [ "$OP" = get ]; then get_env "$coll" "${GET_QUERY:-}"; else put_env "$coll"; fi
    # Warm-up (connections, caches), not measured.
    wrk -t2 -c"$CONNS" -d2s --timeout 10s -s "$PEERS_DIR/http/json_post.lua" "$url" >/dev/null 2>&1 || true
    before=(); for p in $(pids); do before+=("$(sample "$p")"); done
    if [ -n "${THREADS:-}" ]; then "$HERE/threads.py" snapshot $(pids) >"$OUT/$label.threads.before"; fi
    raw="$OUT/$label.wrk.txt"
    local recorders=()
    if [ -n "${PERF_RECORD:-}" ]; then
        for p in $(pids); do
            perf record -q -e cpu-clock -F ${PERF_FREQ:-499} --call-graph "${PERF_CALL_GRAPH:-fp}" -p "$p" -o "$OUT/$label.$p.perf.data" -- sleep "$SECONDS_EACH" >/dev/null 2>&1 &
            recorders+=($!)
        done
    fi
    local script=$PEERS_DIR/http/json_post.lua
    if [ -n "${TIMELINE:-}" ]; then script=$HERE/timeline.lua; export TIMELINE_OUT=$OUT/$label.timeline.txt; fi
    wrk -t2 -c"$CONNS" -d"${SECONDS_EACH}s" --timeout 10s -s "$script" "$url" >"$raw" 2>&1 || true
    after=(); for p in $(pids); do after+=("$(sample "$p")"); done
    if [ -n "${THREADS:-}" ]; then "$HERE/threads.py" snapshot $(pids) >"$OUT/$label.threads.after"; fi
    for p in "${recorders[@]}"; do wait "$p" || true; done
    reqs=$(sed -n 's/.*"requests":\([0-9]*\).*/\1/p' "$raw" | tail -1)
    non2xx=$(sed -n 's/.*Non-2xx or 3xx responses: *\([0-9]*\).*/\1/p' "$raw" | tail -1)
    reqs=$(( ${reqs:-0} - ${non2xx:-0} ))
    [ "$reqs" -gt 0 ] || { log "$label: no successful ${unit}s (see $raw)"; return 0; }
    if [ -n "${THREADS:-}" ]; then
        "$HERE/threads.py" diff "$OUT/$label.threads.before" "$OUT/$label.threads.after" "$reqs" >"$OUT/$label.threads.txt"
    fi
    local i per="" tot=0 ctx=0 b a
    for i in "${!before[@]}"; do
        read -r -a b <<<"${before[$i]}"; read -r -a a <<<"${after[$i]}"
        tot=$((tot + a[0] - b[0]))
        ctx=$((ctx + a[1] - b[1] + a[2] - b[2]))
        per+=" $(awk -v t=$((a[0] - b[0])) -v hz="$hz" -v r="$reqs" 'BEGIN{printf "%.0f", t / hz * 1e6 / r}')"
    done
    awk -v u="$unit" -v l="$label" -v t="$tot" -v hz="$hz" -v r="$reqs" -v c="$ctx" -v s="$SECONDS_EACH" -v per="$per" -v e="${non2xx:-0}" \
        'BEGIN{printf "%-28s cpu/%s %5.0f us (per node:%s)  ctxsw/%s %5.1f  %ss/s %6.0f  cores %.2f  non2xx %d\n",
               l, u, t / hz * 1e6 / r, per, u, c / r, u, r / s, t / hz / s, e}' | tee -a "$OUT/cpu.txt"
}

# follower_url COLLECTION: a node that leads none of its shards (every
# write it takes is forwarded), or the one leading fewest.
follower_url() {
    curl -s --max-time 10 "$("$SDB" urls | sed -n 1p)/v1/cluster" | jq -r --arg c "$1" '
        [.shards[] | select(.collection == $c) | .leader] as $l
        | [.nodes[] | .id as $id | {http, n: ([$l[] | select(. == $id)] | length)}]
        | min_by(.n) | "http://\(.http)"'
}

IFS=: read -r -a bins <<<"$BINS"
IFS='|' read -r -a variants <<<"${VARIANTS:-${NODE_ARGS:-}}"
[ "${#variants[@]}" -gt 0 ] || variants=("")
for ((round = 1; round <= ROUNDS; round++)); do
    for bin in "${bins[@]}"; do
    for variant in "${variants[@]}"; do
        export NODE_ARGS=$variant
        tag=$(basename "$bin")${variant:+-$(echo "$variant" | tr -c 'a-zA-Z0-9\n' '_')}
        # The ports are in the OS's ephemeral range: another program's
        # connection may hold one, so a failed start is tried on new ports.
        for attempt in 1 2 3; do
            P2P_BASE=$((P2P_FIRST + 10 * (starts % 10))) HTTP_BASE=$((HTTP_FIRST + 10 * (starts % 10)))
            starts=$((starts + 1))
            started=1 # also when start fails halfway: stop what it started
            if STRATOSDB_BIN=$bin "$SDB" start >/dev/null 2>&1; then break; fi
            "$SDB" stop >/dev/null 2>&1 || true
            [ "$attempt" = 3 ] && die "cluster did not start ($bin; logs in $STRATOSDB_BASE)"
        done
        u1=$("$SDB" urls | sed -n 1p)
        for c in $CASES; do
            IFS=: read -r coll shards replicas <<<"$c"
            sql "$u1" "CREATE COLLECTION $coll WITH (shards = $shards, replicas = $replicas)"
        done
        for c in $CASES; do
            IFS=: read -r coll shards replicas <<<"$c"
            if [ "$NODES" = 1 ]; then
                u=$u1
            elif [ "${TARGET:-leader}" = follower ]; then
                u=$(follower_url "$coll")
            else
                u=$("$SDB" leader "$coll"); u=${u% *}
            fi
            "$HERE/fill.py" "$u" "$coll" >/dev/null 2>&1 || die "fill of $coll failed"
            measure "$tag-$OP-n$NODES-$coll-s$shards-r$replicas-r$round" "$u" "$coll"
        done
        "$SDB" stop >/dev/null 2>&1
        started=0
    done
    done
done
