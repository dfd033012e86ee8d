#!/usr/bin/env bash
# The cluster's figures against a 3-member etcd 3.4, in ONE run with one
# PEERS_OUT (the harness in /work/shared/peers; see its README):
#
#   benches/peers/run.sh               etcd, then a 3-node and a 1-node stratosdb
#   benches/peers/run.sh --install     apt-get etcd and wrk first (bench tools)
#   SECTIONS="etcd s3" benches/peers/run.sh   only some sections: etcd s3 s1
#
# etcd: etcd3.sh start; bench (fill 100k keys, put-1KiB and get-linearizable
# at 16 and 64 connections); stop.
# s3 (3 nodes): collections kv (8 shards, 3 replicas), kv1 (1 shard, 3
# replicas) and kvr1 (8 shards, 1 replica), each filled with the 100k keys of
# 1 KiB (fill.py), then http-bench.sh at 16 and 64 connections:
#   put-1KiB            PUT /v1/collections/kv/docs/{{key}}  {"v":"{{pad:1024}}"}
#   get-linearizable    GET /v1/collections/kv/docs/{{key}}
#   get-follower        GET ...?consistency=follower
#   put-1KiB-1shard     the PUT on kv1
#   put-1KiB-1replica   the PUT on kvr1
# s1 (1 node): kv (8 shards, 1 replica), filled, put-1KiB and get-linearizable.
# wrk drives one URL: the node that leads most shards of the collection
# (any node forwards writes to the leader and serves reads after a read index).
# Then lib/summary.sh and the ratios (ratios.sh). Servers are stopped by the
# PIDs recorded at start, also on error or Ctrl-C.
set -euo pipefail
HERE=$(cd "$(dirname "$0")" && pwd)
PEERS_DIR=${PEERS_DIR:-/work/shared/peers}
export PEERS_DIR
export PEERS_OUT=${PEERS_OUT:-${TMPDIR:-/tmp}/peers-results/stratosdb-$(date +%Y%m%d-%H%M%S)}
. "$PEERS_DIR/lib/common.sh"
SDB=$HERE/stratosdb.sh
CONNS=${CONNS:-16 64}
export ETCD_CONNS=${ETCD_CONNS:-$CONNS}
SECTIONS=${SECTIONS:-etcd s3 s1}
export KEYSPACE=${KEYSPACE:-100000}
SDB_PREFIX=${SDB_PREFIX:-bench}    # no '/': the key goes into the path

for a in "$@"; do
    case "$a" in
    --install)
        apt-get update -qq
        DEBIAN_FRONTEND=noninteractive apt-get install -y -q --no-install-recommends \
            etcd-server etcd-client wrk jq curl
        ;;
    *) echo "usage: $0 [--install]" >&2; exit 2 ;;
    esac
done
need() { command -v "$1" >/dev/null || die "$1 not found; run '$0 --install' (needs apt)"; }
for c in wrk jq curl etcd etcdctl python3; do need "$c"; done

mkdir -p "$PEERS_OUT"
log "results in $PEERS_OUT"

started_etcd=0
started_sdb=0
cleanup() {
    local rc=$?
    if [ "$started_etcd" = 1 ]; then "$PEERS_DIR/etcd3.sh" stop || true; fi
    if [ "$started_sdb" = 1 ]; then "$SDB" stop || true; fi
    exit $rc
}
trap cleanup EXIT
trap 'exit 130' INT TERM

{
    echo "date: $(date -Is)"
    echo "host: $(uname -srm)"
    echo "nproc: $(nproc)"
    echo "mem: $(free -m | awk '/^Mem:/ {print $2 " MiB"}')"
    echo "uptime: $(uptime)"
    echo "disk: $(df -h /tmp | awk 'NR==2 {print $1 " " $2 " (" $5 " used)"}') $(findmnt -no FSTYPE,OPTIONS --target /tmp 2>/dev/null || true)"
    echo "etcd: $(etcd --version 2>/dev/null | head -1)"
    echo "stratosdb: $(git -C "$HERE" rev-parse --short HEAD 2>/dev/null) ${STRATOSDB_BIN:-target/release/stratosdb}"
    echo "wrk: $(wrk -v 2>&1 | head -1)"
    echo "bench_seconds: $BENCH_SECONDS, wrk threads: $BENCH_THREADS"
    echo "top CPU users at start:"
    ps -eo pid,pcpu,etime,comm --sort=-pcpu | head -6
} >"$PEERS_OUT/env.txt" 2>&1

sql() { # URL STATEMENT
    local out code
    out=$(curl -s --max-time 120 -w '\n%{http_code}' "$1/v1/sql" -H 'Content-Type: application/json' \
        -d "$(jq -cn --arg s "$2" '{sql: $s}')")
    code=${out##*$'\n'}
    log "sql $2 -> $code ${out%$'\n'*}"
    [ "${code:0:1}" = 2 ] || die "statement failed: $2"
}

# CPU seconds (user+system) used by our nodes so far, and the sum of their
# raft proposal counters: sampled around each workload (cpu.tsv) to see
# whether the nodes saturate the cores and how many proposals a request costs.
node_cpu() {
    local name pid tot=0 t
    while read -r name pid; do
        t=$(awk '{print $14 + $15}' "/proc/$pid/stat" 2>/dev/null || echo 0)
        tot=$((tot + t))
    done <"$STRATOSDB_BASE/pids"
    awk -v t="$tot" -v hz="$(getconf CLK_TCK)" 'BEGIN{printf "%.2f", t / hz}'
}
proposals() {
    local u tot=0 n
    for u in $("$SDB" urls); do
        n=$(curl -s --max-time 5 "$u/metrics" | awk '$1 == "stratosdb_raft_proposals_total" {print $2}')
        tot=$((tot + ${n:-0}))
    done
    echo "$tot"
}
STRATOSDB_BASE=${STRATOSDB_BASE:-/tmp/peers-stratosdb}
export STRATOSDB_BASE

# bench TARGET WORKLOAD URL (HTTP_* set by the caller): http-bench.sh, with
# the nodes' CPU and proposals around it.
bench() {
    local target=$1 workload=$2 url=$3 c c0 c1 p0 p1 t0 t1 reqs
    for c in $CONNS; do
        p0=$(proposals); c0=$(node_cpu); t0=$(date +%s.%N)
        "$PEERS_DIR/http-bench.sh" "$target" "$workload" "$url" "$c"
        c1=$(node_cpu); t1=$(date +%s.%N); p1=$(proposals)
        reqs=$(grep '^WRKSTATS ' "$PEERS_OUT/$target-$workload-c$c.wrk.txt" | sed -n 's/.*"requests":\([0-9]*\).*/\1/p')
        # target workload conns node-cpu-seconds wall-seconds (incl. the gate's wait) requests proposals url
        printf '%s\t%s\t%s\t%s\t%.1f\t%s\t%s\t%s\n' "$target" "$workload" "$c" \
            "$(awk -v a="$c0" -v b="$c1" 'BEGIN{printf "%.1f", b - a}')" "$(awk -v a="$t0" -v b="$t1" 'BEGIN{print b - a}')" \
            "${reqs:-0}" "$((p1 - p0))" "$url" >>"$PEERS_OUT/cpu.tsv"
    done
}

# put_env COLLECTION, get_env COLLECTION QUERY: the request templates.
. "$HERE/workloads.sh"

fill() { # URL COLLECTION
    KEY_PREFIX=$SDB_PREFIX "$HERE/fill.py" "$1" "$2" 2>&1 | tee -a "$PEERS_OUT/stratosdb-fill.txt" >&2
}

# leader_url COLLECTION: the node leading most of its shards; logged.
leader_url() {
    local l
    l=$("$SDB" leader "$1")
    log "collection $1: sending to ${l% *} (leads ${l#* } shards)"
    echo "$1 ${l#* } ${l% *}" >>"$PEERS_OUT/stratosdb-target.txt"
    echo "${l% *}"
}

keep_logs() { # LABEL
    mkdir -p "$PEERS_OUT/$1"
    local u
    u=$("$SDB" urls | sed -n 1p)
    curl -s --max-time 10 "$u/v1/cluster" >"$PEERS_OUT/$1/cluster.json" || true
    for u in $("$SDB" urls); do curl -s --max-time 10 "$u/metrics" >"$PEERS_OUT/$1/metrics-${u##*:}.txt" || true; done
    cp "$STRATOSDB_BASE"/n*.log "$STRATOSDB_BASE"/n*.out "$PEERS_OUT/$1/" 2>/dev/null || true
}

# The load gate before the first section; before the later ones the 1-min
# load average mostly reflects our own previous section (the harness's README,
# "Busy-machine gates"), so they take the CPU gate, which samples other
# tenants' use while our servers sit idle (and every measurement has it too).
gate=load
for s in $SECTIONS; do
    wait_for_quiet "section-$s" "$gate"
    gate=cpu
    case "$s" in
    etcd)
        started_etcd=1
        "$PEERS_DIR/etcd3.sh" start
        "$PEERS_DIR/etcd3.sh" bench
        "$PEERS_DIR/etcd3.sh" stop
        started_etcd=0
        rm -rf /tmp/peers-etcd
        ;;
    s3)
        started_sdb=1
        NODES=3 "$SDB" start
        u1=$("$SDB" urls | sed -n 1p)
        sql "$u1" "CREATE COLLECTION kv WITH (shards = 8, replicas = 3)"
        sql "$u1" "CREATE COLLECTION kv1 WITH (shards = 1, replicas = 3)"
        sql "$u1" "CREATE COLLECTION kvr1 WITH (shards = 8, replicas = 1)"
        U=$(leader_url kv)
        fill "$U" kv
        put_env kv; bench stratosdb put-1KiB "$U"
        get_env kv ""; bench stratosdb get-linearizable "$U"
        get_env kv "?consistency=follower"; bench stratosdb get-follower "$U"
        U1=$(leader_url kv1)
        fill "$U1" kv1
        put_env kv1; bench stratosdb put-1KiB-1shard "$U1"
        UR=$(leader_url kvr1)
        fill "$UR" kvr1
        put_env kvr1; bench stratosdb put-1KiB-1replica "$UR"
        keep_logs stratosdb-3nodes
        "$SDB" stop
        started_sdb=0
        ;;
    s1)
        started_sdb=1
        NODES=1 "$SDB" start
        U=$("$SDB" urls | sed -n 1p)
        sql "$U" "CREATE COLLECTION kv WITH (shards = 8, replicas = 1)"
        fill "$U" kv
        put_env kv; bench stratosdb-1node put-1KiB "$U"
        get_env kv ""; bench stratosdb-1node get-linearizable "$U"
        keep_logs stratosdb-1node
        "$SDB" stop
        started_sdb=0
        ;;
    *) die "unknown section $s (etcd s3 s1)" ;;
    esac
done

echo "end: $(date -Is)  uptime: $(uptime)" >>"$PEERS_OUT/env.txt"
"$PEERS_DIR/lib/summary.sh" "$PEERS_OUT" | tee "$PEERS_OUT/summary.md"
echo
"$HERE/ratios.sh" "$PEERS_OUT" | tee "$PEERS_OUT/ratios.md"
echo
echo "node CPU (s) and raft proposals per workload (cpu.tsv):"
awk -F'\t' -v d="$BENCH_SECONDS" '{ printf "  %-16s %-20s c%-3s node cpu %6.1fs (%.2f cores over the %ss run), %7d requests, %7d proposals (%.2f a request)\n",
    $1, $2, $3, $4, $4 / d, d, $6, $7, ($6 > 0 ? $7 / $6 : 0) }' "$PEERS_OUT/cpu.tsv" 2>/dev/null | tee "$PEERS_OUT/cpu.txt"
