#!/usr/bin/env bash
# stratosdb cluster on loopback, for the peer benchmarks (after the harness's
# etcd3.sh; see /work/shared/peers/README.md, "Adding an HTTP target").
#
#   stratosdb.sh start     fresh cluster: wipes $STRATOSDB_BASE, starts NODES
#                          (3, or 1) `stratosdb node` processes, waits until
#                          GET /v1/health is 200 on every one
#   stratosdb.sh stop      stops the nodes by the PIDs that start recorded
#                          (SIGTERM, SIGKILL after STOP_SECONDS)
#   stratosdb.sh status    pid, liveness and health of each node
#   stratosdb.sh urls      the nodes' API URLs, one a line
#   stratosdb.sh leader C  the API URL of the node leading most shards of
#                          collection C (prints "URL LEADS/SHARDS")
#
# Node i (1..3): p2p 127.0.0.1:3310i, HTTP 127.0.0.1:3320i, data
# $STRATOSDB_BASE/ni, stdout in ni.out, stderr (logs) in ni.log. Each node
# names the others' p2p addresses in --peers; NODES=1 starts node 1 alone
# (no --peers: a cluster of one). NODE_ARGS: more flags for every node
# (e.g. "--anchor-interval 1s"). The nodes run with --dev (unsigned requests
# are served, billed to the dev account); DEV_FLAG= starts them without it.
# Everything binds to 127.0.0.1 only.
set -euo pipefail
HERE=$(cd "$(dirname "$0")" && pwd)
ROOT=$(cd "$HERE/../.." && pwd)
PEERS_DIR=${PEERS_DIR:-/work/shared/peers}
. "$PEERS_DIR/lib/common.sh"

STRATOSDB_BASE=${STRATOSDB_BASE:-/tmp/peers-stratosdb}
STRATOSDB_BIN=${STRATOSDB_BIN:-$ROOT/target/release/stratosdb}
NODES=${NODES:-3}
STOP_SECONDS=${STOP_SECONDS:-30}
PIDFILE=$STRATOSDB_BASE/pids
P2P_BASE=${P2P_BASE:-33100}
HTTP_BASE=${HTTP_BASE:-33200}

node_ids() { seq 1 "$(cat "$STRATOSDB_BASE/nodes" 2>/dev/null || echo "$NODES")"; }
http_url() { echo "http://127.0.0.1:$((HTTP_BASE + $1))"; }

running_pids() {
    [ -f "$PIDFILE" ] || return 0
    local name pid
    while read -r name pid; do
        if kill -0 "$pid" 2>/dev/null; then echo "$pid"; fi
    done <"$PIDFILE"
}

healthy() { [ "$(curl -s -o /dev/null -w '%{http_code}' --max-time 2 "$(http_url "$1")/v1/health")" = 200 ]; }

cmd_start() {
    [ -x "$STRATOSDB_BIN" ] || die "no binary at $STRATOSDB_BIN (cargo build --release --bin stratosdb, or set STRATOSDB_BIN)"
    case "$NODES" in 1 | 3) ;; *) die "NODES must be 1 or 3, got $NODES" ;; esac
    if [ -n "$(running_pids)" ]; then die "nodes already running (pids: $(running_pids | tr '\n' ' ')); run '$0 stop' first"; fi
    local i j peers
    for ((i = 1; i <= NODES; i++)); do
        port_free $((P2P_BASE + i)) || die "port $((P2P_BASE + i)) busy on 127.0.0.1"
        port_free $((HTTP_BASE + i)) || die "port $((HTTP_BASE + i)) busy on 127.0.0.1"
    done
    rm -rf "$STRATOSDB_BASE"
    mkdir -p "$STRATOSDB_BASE"
    echo "$NODES" >"$STRATOSDB_BASE/nodes"
    : >"$PIDFILE"
    for ((i = 1; i <= NODES; i++)); do
        peers=""
        for ((j = 1; j <= NODES; j++)); do
            [ "$j" = "$i" ] || peers+="${peers:+,}127.0.0.1:$((P2P_BASE + j))"
        done
        "$STRATOSDB_BIN" node --data "$STRATOSDB_BASE/n$i" \
            --p2p "127.0.0.1:$((P2P_BASE + i))" --http "127.0.0.1:$((HTTP_BASE + i))" \
            ${peers:+--peers "$peers"} ${DEV_FLAG---dev} ${NODE_ARGS:-} \
            </dev/null >"$STRATOSDB_BASE/n$i.out" 2>"$STRATOSDB_BASE/n$i.log" &
        echo "n$i $!" >>"$PIDFILE"
        log "started stratosdb n$i pid $! (p2p :$((P2P_BASE + i)), http :$((HTTP_BASE + i))${peers:+, peers $peers})"
    done
    local t ok
    for ((t = 0; t < 600; t++)); do
        ok=0
        for ((i = 1; i <= NODES; i++)); do
            healthy "$i" && ok=$((ok + 1))
        done
        if [ "$ok" = "$NODES" ]; then
            log "stratosdb: $NODES node(s) healthy after $((t / 10)).$((t % 10))s: $(for ((i = 1; i <= NODES; i++)); do printf '%s ' "$(http_url "$i")"; done)"
            return 0
        fi
        if [ -z "$(running_pids)" ] || [ "$(running_pids | wc -l)" != "$NODES" ]; then
            tail -n 20 "$STRATOSDB_BASE"/n*.log >&2 || true
            die "a node exited during start (logs in $STRATOSDB_BASE/n*.log)"
        fi
        sleep 0.1
    done
    tail -n 20 "$STRATOSDB_BASE"/n*.log >&2 || true
    die "stratosdb did not become healthy in 60s (logs in $STRATOSDB_BASE/n*.log)"
}

cmd_stop() {
    [ -f "$PIDFILE" ] || { log "no $PIDFILE; nothing to stop"; return 0; }
    local name pid
    while read -r name pid; do
        if kill -0 "$pid" 2>/dev/null; then
            log "stopping stratosdb $name pid $pid"
            stop_pid "$pid" "$STOP_SECONDS"
        fi
    done <"$PIDFILE"
    rm -f "$PIDFILE"
}

cmd_status() {
    [ -f "$PIDFILE" ] || { echo "not running (no $PIDFILE)"; return 0; }
    local name pid i
    while read -r name pid; do
        i=${name#n}
        printf '%s pid %s %s %s health=%s\n' "$name" "$pid" \
            "$(kill -0 "$pid" 2>/dev/null && echo alive || echo dead)" "$(http_url "$i")" \
            "$(curl -s -o /dev/null -w '%{http_code}' --max-time 2 "$(http_url "$i")/v1/health")"
    done <"$PIDFILE"
}

cmd_urls() { local i; for i in $(node_ids); do http_url "$i"; done; }

# The node leading most shards of collection $1, from node 1's cluster map.
cmd_leader() {
    local c=${1:?usage: stratosdb.sh leader COLLECTION}
    curl -s --max-time 10 "$(http_url 1)/v1/cluster" | jq -r --arg c "$c" '
        . as $m
        | [.shards[] | select(.collection == $c)] as $s
        | ($s | map(.leader) | group_by(.) | map({id: .[0], n: length}) | max_by(.n)) as $best
        | ($m.nodes[] | select(.id == $best.id) | .http) as $h
        | "http://\($h) \($best.n)/\($s | length)"'
}

case "${1:-}" in
start) cmd_start ;;
stop) cmd_stop ;;
status) cmd_status ;;
urls) cmd_urls ;;
leader) shift; cmd_leader "$@" ;;
*) echo "usage: $0 start|stop|status|urls|leader COLLECTION" >&2; exit 2 ;;
esac
