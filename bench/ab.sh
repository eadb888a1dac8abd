#!/usr/bin/env bash
# A/B of two raftlog builds or configs, side by side on this machine, in one run.
#
#   A_BIN=/tmp/raftlog-before B_BIN=target/release/raftlog bench/ab.sh
#   A_BIN=target/release/raftlog B_ENV="RAFTLOG_RUNTIME__WORKER_THREADS=1" bench/ab.sh
#   A_BIN=target/release/raftlog B_NATS=1 BATCH=1000 CONCURRENCY="1 8" bench/ab.sh
#
# Starts two 3-node clusters on loopback (A: HTTP 24181-24183, gRPC 24171-24173;
# B: HTTP 24281-24283, gRPC 24271-24273; temp data dirs), both up for the whole run,
# and drives the leader of each with `raftlog bench` (durable writes, w=majority,
# $SIZE-byte messages) at each concurrency in $CONCURRENCY, $REPS runs of $DURATION
# per side, alternating which side goes first (A first on odd repetitions) so that
# a change in the machine's background load hits both alike; the idle cluster only
# heartbeats. Around each run it reads utime+stime of the side's three node
# processes from /proc/<pid>/stat: CPU per write is that over the acknowledged
# writes, the figure least disturbed by other jobs on a shared machine.
#
# Environment: A_BIN (required) B_BIN (default A_BIN) A_ENV / B_ENV (space-separated
#   VAR=value given to that side's nodes, e.g. RAFTLOG_RUNTIME__WORKER_THREADS=1)
#   LOADGEN (the `raftlog bench` binary; default A_BIN, the same for both sides)
#   CONCURRENCY ("1 64 256") REPS (3) DURATION (5s) SIZE (100) BATCH (0: single
#   writes; N: `POST /v1/messages/batch` of N messages each) RESULTS (output
#   file; default bench/results/ab-<UTC time>.md) KEEP=1 keeps the temp dir.
#   B_NATS=1: side B is NATS JetStream instead (Debian nats-server 2.9, 3 nodes via
#   ../shared/bench/nats/cluster.sh, an R3 file stream), driven by bench/nats-batch
#   (`jsbatch`): each client publishes BATCH messages asynchronously and waits for
#   all their acks (stored on a quorum), the same unit as one raftlog batch at
#   w=majority. 2.9 has no `sync_interval`: it runs with its default (fsync every
#   2 minutes), so it is not fsyncing per ack as raftlog is. Needs BATCH >= 1;
#   installs nats-server and Go (apt) when missing. SHARED_DIR: ../shared.
# Output: a Markdown table of medians and B/A ratios, and every run, on stdout and
# in $RESULTS.
set -euo pipefail

ROOT=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
A_BIN=${A_BIN:?set A_BIN to a raftlog binary}
B_BIN=${B_BIN:-$A_BIN}
A_ENV=${A_ENV:-}
B_ENV=${B_ENV:-}
B_NATS=${B_NATS:-0}
SHARED=${SHARED_DIR:-$ROOT/../shared}
LOADGEN=${LOADGEN:-$A_BIN}
CONCURRENCY=${CONCURRENCY:-"1 64 256"}
REPS=${REPS:-3}
DURATION=${DURATION:-5s}
SIZE=${SIZE:-100}
BATCH=${BATCH:-0}
STAMP=$(date -u +%Y%m%dT%H%M%SZ)
RESULTS=${RESULTS:-$ROOT/bench/results/ab-$STAMP.md}
WORK=$(mktemp -d /tmp/rlab.XXXXXX)
CLK_TCK=$(getconf CLK_TCK)
declare -A PIDS=()

log() { echo "[$(date +%T)] $*" >&2; }
die() {
  log "error: $*"
  exit 1
}

cleanup() {
  local rc=$? p
  trap - EXIT INT TERM
  for p in "${PIDS[@]}"; do kill "$p" 2>/dev/null || true; done
  for p in "${PIDS[@]}"; do
    for _ in $(seq 1 50); do kill -0 "$p" 2>/dev/null || break; sleep 0.1; done
    kill -9 "$p" 2>/dev/null || true
    wait "$p" 2>/dev/null || true
  done
  if [[ $B_NATS == 1 ]]; then NATS_BENCH_DIR=$WORK/nats "$SHARED/bench/nats/cluster.sh" stop >/dev/null 2>&1 || true; fi
  if [[ ${KEEP:-0} == 1 || $rc != 0 ]]; then log "logs kept in $WORK"; else rm -rf "$WORK"; fi
  exit $rc
}
trap cleanup EXIT
trap 'exit 130' INT TERM

# Each side runs from its own copy (named rlab-a / rlab-b, so that a job that kills
# "raftlog" processes by name does not take these down).
for s in a b; do
  [[ $s == b && $B_NATS == 1 ]] && continue
  bin=$A_BIN
  [[ $s == b ]] && bin=$B_BIN
  [[ -x $bin ]] || die "$bin is not executable"
  mkdir -p "$WORK/bin"
  cp "$bin" "$WORK/bin/rlab-$s"
done

base() { if [[ $1 == a ]]; then echo 24000; else echo 24100; fi; }
http() { echo "127.0.0.1:$(($(base "$1") + 180 + $2))"; }
grpc() { echo "127.0.0.1:$(($(base "$1") + 170 + $2))"; }

# start_node SIDE I: node I of side SIDE; node 1 bootstraps, the others join it.
start_node() {
  local s=$1 i=$2 role=--bootstrap extra=$A_ENV
  [[ $i == 1 ]] || role=--join=$(grpc "$s" 1)
  [[ $s == b ]] && extra=$B_ENV
  mkdir -p "$WORK/$s/n$i"
  # shellcheck disable=SC2086 # a list of VAR=value
  env $extra RUST_LOG=${RUST_LOG:-warn} "$WORK/bin/rlab-$s" serve --node-id "n$i" \
    --data-dir "$WORK/$s/n$i" --http-addr "$(http "$s" "$i")" --grpc-addr "$(grpc "$s" "$i")" \
    "$role" </dev/null >>"$WORK/$s-n$i.log" 2>&1 &
  PIDS[$s$i]=$!
}

ready() { [[ $(curl -s -o /dev/null -w '%{http_code}' -m 1 "http://$1/ready") == 200 ]]; }

# leader SIDE: HTTP address of the node that leads, once it lists three voters.
leader() {
  local i
  for i in 1 2 3; do
    if curl -s -m 1 "http://$(http "$1" "$i")/v1/status" | python3 -c '
import json, sys
s = json.load(sys.stdin)
sys.exit(0 if s["role"] == "leader" and len(s["members"]) == 3 and all(m["voter"] for m in s["members"]) else 1)' 2>/dev/null; then
      http "$1" "$i"
      return 0
    fi
  done
  return 1
}

# NATS as side B: the tools, the cluster, one run of jsbatch.
nats_tools() {
  ((BATCH >= 1)) || die "B_NATS=1 needs BATCH >= 1 (asynchronous publishing in windows of BATCH)"
  [[ -x $SHARED/bench/nats/cluster.sh ]] || die "$SHARED/bench/nats/cluster.sh not found (set SHARED_DIR)"
  if ! command -v nats-server >/dev/null || ! command -v go >/dev/null || [[ ! -d /usr/share/gocode/src/github.com/nats-io/nats.go ]]; then
    log "installing nats-server, golang-go and Debian's nats.go with apt"
    apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq nats-server golang-go golang-github-nats-io-go-nats-dev >/dev/null
  fi
  (cd "$ROOT/bench/nats-batch" && GO111MODULE=off GOPATH=/usr/share/gocode GOCACHE=$WORK/gocache GOFLAGS='' \
    go build -o "$WORK/bin/jsbatch" main.go) || die "building bench/nats-batch failed"
}

start_nats() {
  NATS_BENCH_DIR=$WORK/nats "$SHARED/bench/nats/cluster.sh" start >&2
  local p i=1
  while read -r p; do PIDS["b$i"]=$p; i=$((i + 1)); done <"$WORK/nats/pids"
}

# run_nats C OUT: one jsbatch run; its result line as the JSON `raftlog bench` writes.
run_nats() {
  local c=$1 out=$2 conns=$(($1 < 8 ? $1 : 8))
  "$WORK/bin/jsbatch" -urls nats://127.0.0.1:24221 -conns "$conns" -clients "$c" -batch "$BATCH" \
    -duration "$DURATION" -size "$SIZE" 2>"$out.err" | python3 -c '
import json, sys
line = sys.stdin.read().split()
kv = dict(f.split("=", 1) for f in line[1:] if "=" in f)
print(json.dumps({"batch": int(kv["batch"]), "messages_per_sec": float(kv["msgs_per_s"]),
    "errors": int(kv["errors"]), "writes": {"count": int(kv["windows"]),
    "latency_ms": {"p50": float(kv["p50_ms"]), "p99": float(kv["p99_ms"])}}}))' >"$out" || true
}

start_side() {
  local s=$1 i
  if [[ $s == b && $B_NATS == 1 ]]; then start_nats; return; fi
  for i in 1 2 3; do
    start_node "$s" "$i"
    for _ in $(seq 1 600); do ready "$(http "$s" "$i")" && break; sleep 0.05; done
    ready "$(http "$s" "$i")" || die "side $s node n$i not ready after 30 s (logs in $WORK)"
  done
  for _ in $(seq 1 600); do leader "$s" >/dev/null && return 0; sleep 0.05; done
  die "side $s: no leader with 3 voters after 30 s (logs in $WORK)"
}

cpu_ticks() {
  local t=0 p
  for p in "$@"; do
    [[ -r /proc/$p/stat ]] || die "node process $p has died (logs in $WORK)"
    t=$((t + $(awk '{ sub(/^.*\) /, ""); print $12 + $13 }' "/proc/$p/stat")))
  done
  echo "$t"
}

# measure SIDE C REP: one run, one line appended to $WORK/runs.tsv.
measure() {
  local s=$1 c=$2 rep=$3 out=$WORK/run-$1-c$2-r$3.json before after
  local pids="${PIDS[${s}1]} ${PIDS[${s}2]} ${PIDS[${s}3]}"
  # shellcheck disable=SC2086 # a list of pids
  before=$(cpu_ticks $pids)
  if [[ $s == b && $B_NATS == 1 ]]; then
    run_nats "$c" "$out"
  else
    "$LOADGEN" bench --json --quiet --addr "$(leader "$s")" -c "$c" -d "$DURATION" -s "$SIZE" \
      --w majority --batch "$BATCH" >"$out" 2>"$out.err" || true
  fi
  # shellcheck disable=SC2086
  after=$(cpu_ticks $pids)
  python3 - "$out" "$s" "$c" "$rep" "$((after - before))" "$CLK_TCK" >>"$WORK/runs.tsv" <<'EOF'
import json, sys
out, s, c, rep, ticks, tck = sys.argv[1:]
try:
    j = json.load(open(out))
except Exception:
    j = {}
w = j.get("writes", {})
# Messages: a batch counts its messages.
ok = w.get("count", 0) * max(j.get("batch", 0), 1)
lat = w.get("latency_ms", {})
cpu = int(ticks) / int(tck)
print("\t".join(map(str, [s, c, rep, round(j.get("messages_per_sec", 0), 1), lat.get("p50", 0),
    lat.get("p99", 0), ok, j.get("errors", -1), round(cpu, 2),
    round(cpu / ok * 1000, 4) if ok else "nan"])))
EOF
  tail -n1 "$WORK/runs.tsv" | awk -F'\t' '{ printf "  %s c=%-3s rep %s: %9.1f msgs/s  p50 %7.3f ms  p99 %7.3f ms  ok %d  errors %d  cpu %.2f s (%.4f s/1k)\n", $1, $2, $3, $4, $5, $6, $7, $8, $9, $10 }' >&2
}

table() {
  python3 - "$WORK/runs.tsv" <<'EOF'
import sys, statistics, collections
rows = collections.defaultdict(list)
for line in open(sys.argv[1]):
    s, c, rep, wps, p50, p99, ok, err, cpu, cpuk = line.rstrip("\n").split("\t")
    rows[(s, int(c))].append((float(wps), float(p50), float(p99), float(cpuk), int(err)))
def med(s, c, k):
    return statistics.median(r[k] for r in rows[(s, c)])
def spread(s, c, k):
    v = [r[k] for r in rows[(s, c)]]
    return f"{min(v):.4g}-{max(v):.4g}"
print("| clients | A msgs/s | B msgs/s | B/A | A p50 ms | B p50 ms | A p99 ms | B p99 ms | A CPU s/1k (range) | B CPU s/1k (range) | CPU B/A | errors A/B |")
print("|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|")
for c in sorted({c for (_, c) in rows}):
    a, b = (lambda k: med("a", c, k)), (lambda k: med("b", c, k))
    ea = sum(r[4] for r in rows[("a", c)]); eb = sum(r[4] for r in rows[("b", c)])
    print(f"| {c} | {a(0):,.0f} | {b(0):,.0f} | {b(0)/a(0):.3f} | {a(1):.3f} | {b(1):.3f} | "
          f"{a(2):.3f} | {b(2):.3f} | {a(3):.4f} ({spread('a', c, 3)}) | {b(3):.4f} ({spread('b', c, 3)}) | "
          f"{b(3)/a(3):.3f} | {ea}/{eb} |")
print()
print("Medians of the repetitions; CPU = utime+stime of the side's three node processes "
      "per 1,000 acknowledged messages (range = lowest-highest run); latencies are of "
      "requests (a batch is one).")
EOF
}

B_DESC="$B_BIN${B_ENV:+, $B_ENV}"
if [[ $B_NATS == 1 ]]; then
  nats_tools
  B_DESC="NATS JetStream $(nats-server --version | awk '{print $2}') (Debian), 3 nodes, R3 file stream, default sync (not per ack), bench/nats-batch async windows of $BATCH"
fi
log "starting side A ($A_BIN${A_ENV:+, $A_ENV}) and side B ($B_DESC)"
start_side a
start_side b
: >"$WORK/runs.tsv"
log "warm-up: 2 s at 16 clients on each"
saved=$DURATION
DURATION=2s
measure a 16 0
measure b 16 0
DURATION=$saved
: >"$WORK/runs.tsv"
load_start=$(cut -d' ' -f1-3 /proc/loadavg)
for c in $CONCURRENCY; do
  for rep in $(seq 1 "$REPS"); do
    if ((rep % 2)); then order="a b"; else order="b a"; fi
    for s in $order; do measure "$s" "$c" "$rep"; done
  done
done
{
  echo "## bench/ab.sh"
  echo
  echo "- date: $(date -u '+%Y-%m-%d %H:%M UTC'); DURATION=$DURATION REPS=$REPS CONCURRENCY=\"$CONCURRENCY\" SIZE=$SIZE BATCH=$BATCH; load average at start $load_start, at end $(cut -d' ' -f1-3 /proc/loadavg)"
  echo "- machine: $(nproc) CPUs, $(uname -sr); 3-node clusters on loopback, default config, w=majority; load by \`$(basename "$LOADGEN") bench\` on the leader"
  echo "- A: $A_BIN${A_ENV:+ with $A_ENV}"
  echo "- B: $B_DESC"
  echo
  table
  echo
  echo "<details><summary>Every run (side, clients, repetition, messages/s, p50 ms, p99 ms, ok, errors, node CPU s, CPU s/1k)</summary>"
  echo
  echo '```'
  cat "$WORK/runs.tsv"
  echo '```'
  echo "</details>"
} | tee "$RESULTS"
log "written to $RESULTS"
