#!/usr/bin/env bash
# ratios.sh DIR...: the issue's ratios from DIR/results.tsv (ops/s of two rows
# of the same run), one column per run, then the median and the spread
# ((max - min) / median) over the runs.
set -euo pipefail
[ $# -ge 1 ] || { echo "usage: ratios.sh RESULTS_DIR..." >&2; exit 2; }
for d in "$@"; do [ -f "$d/results.tsv" ] || { echo "no $d/results.tsv" >&2; exit 1; }; done
# what | numerator target/workload | denominator target/workload | target
cat >/tmp/ratios.$$ <<'R'
durable 1 KiB writes, stratosdb 3 nodes (PUT, kv: 8 shards x 3 replicas) / etcd put-1KiB|stratosdb/put-1KiB|etcd3/put-1KiB|>= 1.5
linearizable point reads, stratosdb GET / etcd linearizable range|stratosdb/get-linearizable|etcd3/get-linearizable|>= 1.5
follower reads / linearizable reads (stratosdb GET)|stratosdb/get-follower|stratosdb/get-linearizable|
writes, 3 replicas / 1 replica (8 shards each, same 3-node cluster)|stratosdb/put-1KiB|stratosdb/put-1KiB-1replica|
writes, 3 nodes x 3 replicas / 1-node cluster (8 shards)|stratosdb/put-1KiB|stratosdb-1node/put-1KiB|
writes, 8 shards / 1 shard (3 replicas each)|stratosdb/put-1KiB|stratosdb/put-1KiB-1shard|
linearizable reads, 3 nodes / 1-node cluster|stratosdb/get-linearizable|stratosdb-1node/get-linearizable|
R
trap 'rm -f /tmp/ratios.$$' EXIT
printf '| ratio | conc |'; for d in "$@"; do printf ' %s |' "$(basename "$d")"; done
[ $# -gt 1 ] && printf ' median | spread |'; printf ' target |\n'
printf '|---|---:|'; for d in "$@"; do printf -- '---:|'; done; [ $# -gt 1 ] && printf -- '---:|---:|'; printf -- '---|\n'
while IFS='|' read -r what num den target; do
    for c in 16 64; do
        vals=()
        for d in "$@"; do
            v=$(awk -F'\t' -v n="$num" -v m="$den" -v c="$c" '
                $3 == c && $4 != "-" { ops[$1 "/" $2] = $4; note[$1 "/" $2] = $8 }
                END { if ((n in ops) && (m in ops) && ops[m] > 0) {
                        printf "%.2f", ops[n] / ops[m]
                        if (note[n] ~ /non-2xx/ || note[m] ~ /non-2xx/) printf "!"
                      } else printf "-" }' "$d/results.tsv")
            vals+=("$v")
        done
        printf '| %s | %s |' "$what" "$c"
        for v in "${vals[@]}"; do printf ' %s |' "$v"; done
        if [ $# -gt 1 ]; then
            printf '%s\n' "${vals[@]}" | tr -d '!' | { grep -v '^-$' || true; } | sort -g | awk '
                { a[++n] = $1 } END {
                    if (n == 0) { printf " - | - |"; exit }
                    m = (n % 2) ? a[(n + 1) / 2] : (a[n / 2] + a[n / 2 + 1]) / 2
                    printf " %.2f | %.0f%% |", m, (m > 0 ? 100 * (a[n] - a[1]) / m : 0) }'
        fi
        printf ' %s |\n' "$target"
    done
done </tmp/ratios.$$
echo
echo "'!': one of the two rows had non-2xx answers (see the summary's note column)."
