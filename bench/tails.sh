#!/usr/bin/env bash
# Tail latency of large messages, one fresh cluster at a time, builds alternating.
#
#   BINS="base=/tmp/raftlog-before new=target/release/raftlog" bench/tails.sh
#
# For each repetition, each size in $SIZES and each labelled binary in $BINS (in
# that order, so that a change in the machine's load hits every build alike): a
# fresh `raftlog dev` cluster (3 nodes, HTTP 18081-18083, gRPC 17071-17073, temp
# data dir, default config plus the caller's RAFTLOG_* variables), `raftlog bench`
# on its leader ($CONC clients, w=majority, $DURATION), then the cluster stopped.
# One cluster at a time: two side by side would share the disk, and a snapshot's
# flush on one would show up in the other's tail. Besides throughput and latency
# it reports how long the nodes' local snapshots took (their `snapshot taken ...
# ms=` log lines: count, median, max), since a snapshot is what large-message
# tails were made of (README, "Round two: tails of large messages").
#
# Environment: BINS (required: space-separated label=path) SIZES ("65536 262144")
#   CONC (16) REPS (3) DURATION (15s) RESULTS (default
#   bench/results/tails-<UTC time>.md).
# Output: one line per run, on stdout and in $RESULTS.
set -euo pipefail

ROOT=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
BINS=${BINS:?set BINS to label=path pairs}
SIZES=${SIZES:-65536 262144}
CONC=${CONC:-16}
REPS=${REPS:-3}
DURATION=${DURATION:-15s}
RESULTS=${RESULTS:-$ROOT/bench/results/tails-$(date -u +%Y%m%dT%H%M%SZ).md}
HTTP=(18081 18082 18083)

leader_addr() {
    for p in "${HTTP[@]}"; do
        if curl -sf "localhost:$p/v1/status" | grep -q '"role":"leader"'; then
            echo "127.0.0.1:$p"
            return
        fi
    done
}

# run_one BIN SIZE -> one result line
run_one() {
    local bin=$1 size=$2 dir pid addr="" json
    dir=$(mktemp -d)
    "$bin" dev --data-dir "$dir" --base-http-port 18081 --base-grpc-port 17071 >"$dir/dev.log" 2>&1 &
    pid=$!
    for _ in $(seq 1 150); do
        addr=$(leader_addr)
        [ -n "$addr" ] && curl -sf "${addr}/ready" >/dev/null && break
        sleep 0.2
    done
    [ -n "$addr" ] || { echo "no leader within 30 s ($dir/dev.log)" >&2; kill "$pid"; exit 1; }
    json=$("$bin" bench --addr "$addr" -c "$CONC" -s "$size" -d "$DURATION" --json -q)
    kill -INT "$pid"
    wait "$pid" || true
    local snaps
    snaps=$(grep -rh "snapshot taken" "$dir" --include='*.log' | grep -o 'ms=[0-9]*' | cut -d= -f2 | sort -n | tr '\n' ' ')
    rm -rf "$dir"
    python3 - "$json" "$snaps" <<'EOF'
import json, sys
j = json.loads(sys.argv[1]); w = j["writes"]["latency_ms"]
s = [int(x) for x in sys.argv[2].split()]
snap = f"{len(s)} snapshots, median {s[len(s)//2]} ms, max {s[-1]} ms" if s else "no snapshot"
print(f"{j['messages_per_sec']:.0f} msg/s, p50 {w['p50']:.1f} ms, p99 {w['p99']:.1f} ms, "
      f"max {w['max']:.0f} ms, errors {j['errors']} | {snap}")
EOF
}

{
    echo "# bench/tails.sh $(date -u +%FT%TZ), CONC=$CONC DURATION=$DURATION, load $(cut -d' ' -f1-3 /proc/loadavg)"
    echo
    for rep in $(seq 1 "$REPS"); do
        for size in $SIZES; do
            for pair in $BINS; do
                echo "- rep $rep, ${size} B, ${pair%%=*}: $(run_one "${pair#*=}" "$size")"
            done
        done
    done
} | tee "$RESULTS"
