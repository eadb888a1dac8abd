#!/usr/bin/env bash
# raftlog vs etcd 3.4, side by side on this machine, in one run.
#
#   bench/compare.sh [compare|scale|join|all]      (default: compare)
#
# compare: starts a 3-member etcd 3.4 cluster (../shared/bench/etcd-cluster.sh) and a
#   3-node raftlog cluster (target/release/raftlog serve, loopback, temp data dirs),
#   drives the leader of each with oha at each concurrency in $CONCURRENCY with
#   $SIZE-byte values: durable writes (raftlog POST /v1/messages?w=majority; etcd
#   POST /v3/kv/put through its JSON gateway), then linearizable reads (raftlog
#   GET /v1/messages?from=<recent>&limit=1; etcd POST /v3/kv/range, serializable
#   false). $REPS repetitions of $DURATION each; the table shows the median of the
#   repetitions for every figure, and CPU seconds per 1,000 requests summed over the
#   three server processes (utime+stime from /proc/<pid>/stat around each run).
#   Both clusters stay up for the whole run and the runs alternate between them
#   (etcd first on odd repetitions, raftlog first on even ones), so a change in the
#   machine's background load hits both alike; the idle cluster only heartbeats.
# scale: raftlog only, with `raftlog bench`: throughput vs message size at
#   concurrency 64, 3 vs 5 nodes, restart time vs log size, and with a big log
#   ($BIG_LOG_MIB MiB): RSS per node, restart time, and how fast a new member
#   catches up (snapshot transfer).
# join: raftlog only: a 3-node cluster holding $BIG_LOG_MIB MiB (64 KiB messages), then
#   a fourth node joins; the peak RSS (VmHWM, the leader's reset after the fill) of the
#   leader and of the joiner from the join until all four are ready voters, and the
#   snapshot transfer rate (the joiner's "snapshot received" line: bytes and ms).
#   scripts/snapshot-memory.sh runs it.
#
# Environment: DURATION (10s) REPS (3) CONCURRENCY ("1 16 64 256") SIZE (100)
#   OPS ("write read": what compare measures) BACKGROUND (a command run beside
#   both systems for the whole compare, e.g. "stress-ng --cpu 1": the loaded-machine
#   comparison; stopped at the end)
#   SCALE_SIZES ("100 1024 16384 262144") RESTART_COUNTS ("10000 100000")
#   BIG_LOG_MIB (512: the log written in 64 KiB messages for RSS, restart and
#   new-member catch-up; 0 skips it) BIG_SNAPSHOT_EVERY (4096: snapshot.every_entries
#   there, so that the restart and the new member start from a recent snapshot)
#   BENCH_RAFTLOG_BIN (default: cargo build --release, target/release/raftlog; not
#   RAFTLOG_*, which the nodes would read as config) RAFTLOG_* (passed to the nodes)
#   SHARED_DIR (default: <repo>/../shared) RESULTS (output file) KEEP=1 keeps the
#   temp dir. Installs etcd (apt) and oha (cargo install, ~8 min) when missing.
# Output: the tables on stdout, also written to bench/results/<mode>-<UTC time>.md.
set -euo pipefail

MODE=${1:-compare}
case $MODE in compare | scale | join | all) ;; *)
  echo "usage: $0 [compare|scale|join|all]" >&2
  exit 2
  ;;
esac

ROOT=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
SHARED=${SHARED_DIR:-$ROOT/../shared}
ETCD_SH=$SHARED/bench/etcd-cluster.sh
DURATION=${DURATION:-10s}
REPS=${REPS:-3}
CONCURRENCY=${CONCURRENCY:-"1 16 64 256"}
SIZE=${SIZE:-100}
OPS=${OPS:-"write read"}
SCALE_SIZES=${SCALE_SIZES:-"100 1024 16384 262144"}
RESTART_COUNTS=${RESTART_COUNTS:-"10000 100000"}
BIG_LOG_MIB=${BIG_LOG_MIB:-512}
BIG_SNAPSHOT_EVERY=${BIG_SNAPSHOT_EVERY:-4096}
RL_HTTP_BASE=${RL_HTTP_BASE:-23180} # node i: HTTP 23180+i, gRPC 23170+i
RL_GRPC_BASE=${RL_GRPC_BASE:-23170}
STAMP=$(date -u +%Y%m%dT%H%M%SZ)
RESULTS=${RESULTS:-$ROOT/bench/results/$MODE-$STAMP.md}
WORK=$(mktemp -d /tmp/rlcmp.XXXXXX)
export ETCD_BENCH_DIR=$WORK/etcd
CLK_TCK=$(getconf CLK_TCK)
RL_PIDS=()
ETCD_UP=0
BG_PID=

log() { echo "[$(date +%T)] $*" >&2; }
die() {
  log "error: $*"
  exit 1
}

# ----- cleanup -------------------------------------------------------------------------

stop_raftlog() {
  local p
  for p in "${RL_PIDS[@]}"; do kill "$p" 2>/dev/null || true; done
  for p in "${RL_PIDS[@]}"; do
    for _ in $(seq 1 50); do kill -0 "$p" 2>/dev/null || break; sleep 0.1; done
    kill -9 "$p" 2>/dev/null || true
    wait "$p" 2>/dev/null || true
  done
  RL_PIDS=()
}

cleanup() {
  local rc=$?
  trap - EXIT INT TERM
  stop_raftlog
  if [[ -n $BG_PID ]]; then kill -- -"$BG_PID" 2>/dev/null || kill "$BG_PID" 2>/dev/null || true; fi
  if [[ $ETCD_UP == 1 ]]; then "$ETCD_SH" stop >/dev/null 2>&1 || true; fi
  if [[ ${KEEP:-0} == 1 || $rc != 0 ]]; then
    log "logs and data kept in $WORK"
  else
    rm -rf "$WORK"
  fi
  exit $rc
}
trap cleanup EXIT
trap 'exit 130' INT TERM

# ----- prerequisites -------------------------------------------------------------------

need_tools() {
  command -v python3 >/dev/null || die "python3 is needed"
  command -v curl >/dev/null || die "curl is needed"
  if [[ $MODE != scale && $MODE != join ]]; then
    if ! command -v etcd >/dev/null || ! command -v etcdctl >/dev/null; then
      log "installing etcd-server and etcd-client with apt"
      apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq etcd-server etcd-client >/dev/null
    fi
    [[ -x $ETCD_SH ]] || [[ -f $ETCD_SH ]] || die "$ETCD_SH not found (set SHARED_DIR)"
    export PATH=$PATH:$HOME/.cargo/bin
    if ! command -v oha >/dev/null; then
      log "installing oha with cargo install --locked (takes about 8 minutes)"
      cargo install oha --locked
    fi
  fi
  if [[ -n ${BENCH_RAFTLOG_BIN:-} ]]; then
    BIN=$BENCH_RAFTLOG_BIN
  else
    log "cargo build --release"
    (cd "$ROOT" && cargo build --release --quiet)
    BIN=$ROOT/target/release/raftlog
  fi
  [[ -x $BIN ]] || die "$BIN is not executable"
  # The nodes run from a copy named rlnode, so that another job on this machine
  # that kills its own "raftlog" processes by name does not take ours down.
  mkdir -p "$WORK/bin"
  cp "$BIN" "$WORK/bin/rlnode"
  NODE_BIN=$WORK/bin/rlnode
}

# ----- raftlog cluster -----------------------------------------------------------------

rl_http() { echo "127.0.0.1:$((RL_HTTP_BASE + $1))"; }
rl_grpc() { echo "127.0.0.1:$((RL_GRPC_BASE + $1))"; }

# start_rl_node I N DIR: node I of N; node 1 bootstraps, the others join through it
# (a node whose data dir already holds state restarts from it either way).
start_rl_node() {
  local i=$1 dir=$2 role=--bootstrap
  [[ $i == 1 ]] || role=--join=$(rl_grpc 1)
  mkdir -p "$dir/n$i"
  RUST_LOG=${RUST_LOG:-warn} "$NODE_BIN" serve --node-id "n$i" --data-dir "$dir/n$i" \
    --http-addr "$(rl_http "$i")" --grpc-addr "$(rl_grpc "$i")" "$role" \
    </dev/null >>"$dir/n$i.log" 2>&1 &
  RL_PIDS[i]=$!
}

# ready_all N: every node answers /ready with 200 and the leader lists N voters.
ready_all() {
  local n=$1 i
  for i in $(seq 1 "$n"); do
    [[ $(curl -s -o /dev/null -w '%{http_code}' -m 1 "http://$(rl_http "$i")/ready") == 200 ]] || return 1
  done
  local leader
  leader=$(rl_leader "$n") || return 1
  curl -s -m 1 "http://$leader/v1/status" | python3 -c '
import json, sys
s = json.load(sys.stdin)
ms = s["members"]
sys.exit(0 if len(ms) == int(sys.argv[1]) and all(m["voter"] for m in ms) else 1)' "$n"
}

wait_ready() {
  local n=$1 what=$2
  for _ in $(seq 1 600); do
    ready_all "$n" && return 0
    sleep 0.05
  done
  die "raftlog $what: not ready with $n voters after 30 s (logs in $WORK)"
}

# start_raftlog N DIR: an N-node cluster, each node started once the previous is
# ready (so joins go through a running leader).
start_raftlog() {
  local n=$1 dir=$2 i
  rm -rf "$dir"
  mkdir -p "$dir"
  for i in $(seq 1 "$n"); do
    start_rl_node "$i" "$dir"
    wait_ready_node "$i"
  done
  wait_ready "$n" "start"
}

wait_ready_node() {
  for _ in $(seq 1 600); do
    [[ $(curl -s -o /dev/null -w '%{http_code}' -m 1 "http://$(rl_http "$1")/ready") == 200 ]] && return 0
    sleep 0.05
  done
  die "raftlog node n$1 not ready after 30 s (logs in $WORK)"
}

# rl_leader N: HTTP address of the node that says it leads.
rl_leader() {
  local i
  for i in $(seq 1 "$1"); do
    if curl -s -m 1 "http://$(rl_http "$i")/v1/status" | grep -q '"role":"leader"'; then
      rl_http "$i"
      return 0
    fi
  done
  return 1
}

# ----- measuring -----------------------------------------------------------------------

# cpu_ticks PID...: utime+stime of the processes, in clock ticks.
cpu_ticks() {
  local t=0 p
  for p in "$@"; do
    [[ -r /proc/$p/stat ]] || die "server process $p has died (logs in $WORK)"
    t=$((t + $(awk '{ sub(/^.*\) /, ""); print $12 + $13 }' "/proc/$p/stat")))
  done
  echo "$t"
}

# run_oha OUT PIDS URL oha-args...: one timed run; writes oha's JSON to OUT and
# prints the server CPU seconds it cost.
run_oha() {
  local out=$1 pids=$2 url=$3
  shift 3
  local before after
  # shellcheck disable=SC2086 # a list of pids
  before=$(cpu_ticks $pids)
  oha --no-tui --output-format json -w -z "$DURATION" "$@" "$url" >"$out" 2>"$out.err" || true
  # shellcheck disable=SC2086
  after=$(cpu_ticks $pids)
  python3 -c "print(($after - $before) / $CLK_TCK)"
}

b64() { printf '%s' "$1" | base64 -w0; }

VALUE=$(head -c "$SIZE" /dev/zero | tr '\0' 'x')
ETCD_KEY=$(b64 bench/key)
ETCD_PUT_BODY="{\"key\":\"$ETCD_KEY\",\"value\":\"$(b64 "$VALUE")\"}"
ETCD_RANGE_BODY="{\"key\":\"$ETCD_KEY\"}"
RL_WRITE_BODY="{\"message\":\"$VALUE\"}"

# measure OP SYS C REP: one run, appended to $WORK/runs.tsv.
measure() {
  local op=$1 sys=$2 c=$3 rep=$4 out=$WORK/oha-$1-$2-c$3-r$4.json cpu
  case $sys/$op in
    etcd/write) cpu=$(run_oha "$out" "$ETCD_PIDS" "$ETCD_URL/v3/kv/put" -c "$c" -m POST -T application/json -d "$ETCD_PUT_BODY") ;;
    etcd/read) cpu=$(run_oha "$out" "$ETCD_PIDS" "$ETCD_URL/v3/kv/range" -c "$c" -m POST -T application/json -d "$ETCD_RANGE_BODY") ;;
    raftlog/write) cpu=$(run_oha "$out" "$RL_PIDS_STR" "http://$RL_LEADER/v1/messages?w=majority" -c "$c" -m POST -T application/json -d "$RL_WRITE_BODY") ;;
    raftlog/read) cpu=$(run_oha "$out" "$RL_PIDS_STR" "http://$RL_LEADER/v1/messages?from=$RL_READ_FROM&limit=1" -c "$c") ;;
  esac
  python3 - "$out" "$op" "$sys" "$c" "$rep" "$cpu" >>"$WORK/runs.tsv" <<'EOF'
import json, sys
out, op, sysname, c, rep, cpu = sys.argv[1:]
try:
    j = json.load(open(out))
except Exception:
    j = {}
codes = j.get("statusCodeDistribution", {})
ok = sum(n for s, n in codes.items() if s.startswith("2"))
bad = sum(codes.values()) - ok + sum(j.get("errorDistribution", {}).values())
lat = j.get("latencyPercentiles", {})
rps = j.get("summary", {}).get("requestsPerSec") or 0
# oha's req/s counts every answer; scale it to the successful ones.
total = sum(codes.values())
rps_ok = rps * ok / total if total else 0
cpu_k = float(cpu) / ok * 1000 if ok else float("nan")
print("\t".join(map(str, [op, sysname, c, rep, round(rps_ok, 1),
    round((lat.get("p50") or 0) * 1000, 3), round((lat.get("p99") or 0) * 1000, 3),
    ok, bad, round(float(cpu), 3), round(cpu_k, 4)])))
EOF
  tail -n1 "$WORK/runs.tsv" | awk -F'\t' '{ printf "  %-5s %-7s c=%-3s rep %s: %9.1f req/s  p50 %7.2f ms  p99 %7.2f ms  ok %d  errors %d  cpu %.2f s (%.3f s/1k)\n", $1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11 }' >&2
}

compare_table() {
  python3 - "$WORK/runs.tsv" <<'EOF'
import sys, statistics, collections
rows = collections.defaultdict(list)
for line in open(sys.argv[1]):
    op, s, c, rep, rps, p50, p99, ok, bad, cpu, cpuk = line.rstrip("\n").split("\t")
    rows[(op, s, int(c))].append((float(rps), float(p50), float(p99), int(bad), float(cpuk)))
def med(op, s, c, k):
    v = [r[k] for r in rows.get((op, s, c), [])]
    return statistics.median(v) if v else float("nan")
def errs(op, s, c):
    return sum(r[3] for r in rows.get((op, s, c), []))
for op, title in (("write", "Durable writes (raftlog w=majority, etcd put)"),
                  ("read", "Linearizable reads (raftlog GET /v1/messages, etcd range)")):
    cs = sorted({c for (o, _, c) in rows if o == op})
    if not cs:
        continue
    print(f"### {title}\n")
    print("| clients | etcd req/s | raftlog req/s | ratio | etcd p50 ms | raftlog p50 ms | etcd p99 ms | raftlog p99 ms | etcd CPU s/1k | raftlog CPU s/1k | CPU ratio | errors e/r |")
    print("|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|")
    for c in cs:
        e, r = (lambda k: med(op, "etcd", c, k)), (lambda k: med(op, "raftlog", c, k))
        print(f"| {c} | {e(0):,.0f} | {r(0):,.0f} | {r(0)/e(0):.2f}x | {e(1):.2f} | {r(1):.2f} | "
              f"{e(2):.2f} | {r(2):.2f} | {e(4):.3f} | {r(4):.3f} | {r(4)/e(4):.2f} | "
              f"{errs(op, 'etcd', c)}/{errs(op, 'raftlog', c)} |")
    print()
print("Each figure is the median of the repetitions; ratio = raftlog/etcd req/s; CPU = "
      "utime+stime of the three server processes per 1,000 successful requests; "
      "errors = non-2xx answers and failed requests summed over the repetitions.")
EOF
}

setup_text() {
  echo "- date: $(date -u '+%Y-%m-%d %H:%M UTC'); mode: $MODE; DURATION=$DURATION REPS=$REPS CONCURRENCY=\"$CONCURRENCY\" SIZE=$SIZE"
  echo "- machine: $(nproc) CPUs ($(grep -m1 'model name' /proc/cpuinfo | cut -d: -f2 | sed 's/^ //')), $(free -g | awk '/Mem:/{print $2}') GiB RAM, $(uname -sr); data dirs on $(df -T "$WORK" | awk 'NR==2{print $2}') ($WORK)"
  echo "- load average at start: $(cut -d' ' -f1-3 /proc/loadavg)"
  echo "- raftlog: $("$BIN" --version) ($BIN) at $(cd "$ROOT" && git rev-parse --short HEAD 2>/dev/null || echo '?')$(cd "$ROOT" && git diff --quiet HEAD -- src Cargo.toml 2>/dev/null || echo ' (+uncommitted changes)'), release build, default config (heartbeat 100 ms, election timeout 1-2 s, snapshot every 10,000 entries, 64 MiB WAL segments), w=majority, every node fdatasyncs before it acks"
  if [[ $MODE != scale ]]; then
    echo "- etcd: $(etcd --version | head -1 | sed 's/etcd Version: //') (Debian etcd-server), 3 members via $(basename "$ETCD_SH"), default flags (fsync on every commit batch)"
    echo "- load generator: $(oha --version), HTTP/1.1 keep-alive, one connection per client, -w (requests in flight at the deadline finish)"
    if [[ -n ${BACKGROUND:-} ]]; then echo "- background load beside both systems for the whole run: \`$BACKGROUND\`"; fi
  fi
}

# ----- modes ---------------------------------------------------------------------------

do_compare() {
  log "starting etcd (3 members)"
  "$ETCD_SH" start >&2
  ETCD_UP=1
  ETCD_URL=$("$ETCD_SH" leader)
  ETCD_PIDS=$(tr '\n' ' ' <"$ETCD_BENCH_DIR/pids")
  log "etcd leader $ETCD_URL, pids $ETCD_PIDS"

  log "starting raftlog (3 nodes)"
  start_raftlog 3 "$WORK/raftlog"
  RL_LEADER=$(rl_leader 3) || die "no raftlog leader"
  RL_PIDS_STR="${RL_PIDS[*]}"
  log "raftlog leader $RL_LEADER, pids $RL_PIDS_STR"

  : >"$WORK/runs.tsv"
  log "warm-up: 2 s at 16 clients on each"
  local saved=$DURATION
  DURATION=2s
  measure write etcd 16 0 && measure write raftlog 16 0
  DURATION=$saved
  : >"$WORK/runs.tsv"

  local op c rep sys order
  for op in $OPS; do
    if [[ $op == read ]]; then
      RL_READ_FROM=$(curl -s -X POST -H 'content-type: application/json' -d "$RL_WRITE_BODY" \
        "http://$RL_LEADER/v1/messages?w=majority" | python3 -c 'import json,sys; print(json.load(sys.stdin)["offset"])')
      curl -s -X POST -d "$ETCD_PUT_BODY" "$ETCD_URL/v3/kv/put" >/dev/null
    fi
    for c in $CONCURRENCY; do
      for rep in $(seq 1 "$REPS"); do
        if ((rep % 2)); then order="etcd raftlog"; else order="raftlog etcd"; fi
        for sys in $order; do measure "$op" "$sys" "$c" "$rep"; done
      done
    done
  done
  compare_table >"$WORK/compare.md"
}

# bench_json OUT ARGS...: one `raftlog bench` run, JSON summary to OUT.
bench_json() {
  local out=$1
  shift
  "$NODE_BIN" bench --json --quiet "$@" >"$out"
}

do_scale() {
  local out=$WORK/scale.md s n count
  {
    echo "### Throughput vs message size (raftlog bench, a fresh 3-node cluster for each size, 64 clients, w=majority, $DURATION)"
    echo
    echo "| message | writes/s | MB/s | p50 ms | p99 ms | errors |"
    echo "|---:|---:|---:|---:|---:|---:|"
  } >"$out"
  log "scale: message sizes on 3 nodes"
  local leader
  for s in $SCALE_SIZES; do
    stop_raftlog
    start_raftlog 3 "$WORK/size$s"
    leader=$(rl_leader 3)
    bench_json "$WORK/size-$s.json" --addr "$leader" -c 64 -d "$DURATION" -s "$s"
    python3 - "$WORK/size-$s.json" "$s" >>"$out" <<'EOF'
import json, sys
j = json.load(open(sys.argv[1])); s = int(sys.argv[2]); w = j["writes"]
size = f"{s // 1024} KiB" if s >= 1024 else f"{s} B"
print(f"| {size} | {w['per_sec']:,.0f} | {w['per_sec'] * s / 1e6:.1f} | {w['latency_ms']['p50']:.2f} | {w['latency_ms']['p99']:.2f} | {j['errors']} |")
EOF
    tail -n1 "$out" >&2
  done
  echo >>"$out"

  log "scale: 3 vs 5 nodes"
  {
    echo "### 3 vs 5 nodes (raftlog bench, ${SIZE}-byte messages, w=majority, $DURATION)"
    echo
    echo "| nodes | clients | writes/s | p50 ms | p99 ms |"
    echo "|---:|---:|---:|---:|---:|"
  } >>"$out"
  for n in 3 5; do
    stop_raftlog
    start_raftlog "$n" "$WORK/nodes$n"
    leader=$(rl_leader "$n")
    for c in 1 64; do
      bench_json "$WORK/nodes$n-c$c.json" --addr "$leader" -c "$c" -d "$DURATION" -s "$SIZE"
      python3 - "$WORK/nodes$n-c$c.json" "$n" "$c" >>"$out" <<'EOF'
import json, sys
j = json.load(open(sys.argv[1])); w = j["writes"]
print(f"| {sys.argv[2]} | {sys.argv[3]} | {w['per_sec']:,.0f} | {w['latency_ms']['p50']:.2f} | {w['latency_ms']['p99']:.2f} |")
EOF
      tail -n1 "$out" >&2
    done
  done
  echo >>"$out"

  log "scale: restart time vs log size"
  {
    echo "### Restart time vs log size (3 nodes, ${SIZE}-byte messages, default snapshot.every_entries)"
    echo
    echo "| messages written | data dir per node | follower restart to /ready | whole-cluster restart to /ready on all |"
    echo "|---:|---:|---:|---:|"
  } >>"$out"
  for count in $RESTART_COUNTS; do
    stop_raftlog
    start_raftlog 3 "$WORK/restart$count"
    leader=$(rl_leader 3)
    bench_json "$WORK/fill-$count.json" --addr "$leader" -c 64 -n "$count" -s "$SIZE"
    local follower=3 t0 t1 t2 du
    [[ $leader == "$(rl_http 3)" ]] && follower=2
    du=$(du -sh "$WORK/restart$count/n$follower" | cut -f1)
    kill "${RL_PIDS[$follower]}"
    wait "${RL_PIDS[$follower]}" 2>/dev/null || true
    t0=$(date +%s.%N)
    start_rl_node "$follower" "$WORK/restart$count"
    wait_ready_node "$follower"
    t1=$(date +%s.%N)
    stop_raftlog
    t2=$(date +%s.%N)
    for n in 1 2 3; do start_rl_node "$n" "$WORK/restart$count"; done
    wait_ready 3 "restart"
    local t3
    t3=$(date +%s.%N)
    python3 -c "print(f'| {int($count):,} | $du | {($t1-$t0)*1000:.0f} ms | {($t3-$t2)*1000:.0f} ms |')" >>"$out"
    tail -n1 "$out" >&2
  done
  {
    echo
    echo "Restart times are wall-clock from spawning the process(es) to /ready answering 200 (polled every 50 ms); the whole-cluster figure includes an election."
    echo
  } >>"$out"
  stop_raftlog
  if [[ $BIG_LOG_MIB -gt 0 ]]; then big_log "$out"; fi
  stop_raftlog
}

rss_mib() { awk '/^VmRSS/ { printf "%.0f", $2 / 1024 }' "/proc/$1/status"; }

# big_log OUT: a log of $BIG_LOG_MIB MiB in 64 KiB messages on 3 nodes; RSS per
# node, a follower's restart, and a fourth node joining (it gets the snapshot).
big_log() {
  local out=$1 msg=65536 count dir=$WORK/big leader follower t0 t1 t2 t3 i
  count=$((BIG_LOG_MIB * 1024 * 1024 / msg))
  log "scale: big log, $count messages of 64 KiB, snapshot every $BIG_SNAPSHOT_EVERY entries"
  export RAFTLOG_SNAPSHOT__EVERY_ENTRIES=$BIG_SNAPSHOT_EVERY
  start_raftlog 3 "$dir"
  leader=$(rl_leader 3)
  bench_json "$WORK/big-fill.json" --addr "$leader" -c 16 -n "$count" -s "$msg"
  local rss=() du=()
  for i in 1 2 3; do
    rss+=("$(rss_mib "${RL_PIDS[$i]}")")
    du+=("$(du -sm "$dir/n$i" | cut -f1)")
  done
  follower=3
  [[ $leader == "$(rl_http 3)" ]] && follower=2
  kill "${RL_PIDS[$follower]}"
  wait "${RL_PIDS[$follower]}" 2>/dev/null || true
  t0=$(date +%s.%N)
  start_rl_node "$follower" "$dir"
  wait_ready_node "$follower"
  t1=$(date +%s.%N)
  local rss_after
  rss_after=$(rss_mib "${RL_PIDS[$follower]}")
  t2=$(date +%s.%N)
  start_rl_node 4 "$dir"
  wait_ready 4 "join of a fourth node"
  t3=$(date +%s.%N)
  local du4
  du4=$(du -sm "$dir/n4" | cut -f1)
  unset RAFTLOG_SNAPSHOT__EVERY_ENTRIES
  {
    echo "### A ${BIG_LOG_MIB} MiB log ($count messages of 64 KiB, 3 nodes, snapshot every $BIG_SNAPSHOT_EVERY entries)"
    echo
    echo "| fill (16 clients) | data dir per node | RSS per node after fill | follower restart to /ready | its RSS after restart | new 4th node to ready voter | its data dir | catch-up rate |"
    echo "|---:|---:|---:|---:|---:|---:|---:|---:|"
    python3 - "$WORK/big-fill.json" <<EOF
import json, sys
j = json.load(open(sys.argv[1])); w = j["writes"]
t01, t23 = $t1 - $t0, $t3 - $t2
print(f"| {w['per_sec']:,.0f} writes/s, {w['per_sec'] * $msg / 2**20:.0f} MiB/s | ${du[0]}/${du[1]}/${du[2]} MiB "
      f"| ${rss[0]}/${rss[1]}/${rss[2]} MiB | {t01 * 1000:.0f} ms | $rss_after MiB | {t23:.1f} s | $du4 MiB "
      f"| {$du4 / t23:.0f} MiB/s |")
EOF
    echo
    echo "The catch-up time runs from spawning the fourth node to /ready on all four with four voters; it includes the join, the snapshot transfer and the log tail."
    echo
  } >>"$out"
  tail -n5 "$out" >&2
}

hwm_mib() { awk '/^VmHWM/ { printf "%.0f", $2 / 1024 }' "/proc/$1/status"; }

# do_join: peak memory of the leader and a joining fourth node while it gets a
# snapshot of a $BIG_LOG_MIB MiB log, and the transfer rate.
do_join() {
  local out=$WORK/join.md msg=65536 count dir=$WORK/join leader li lpid jpid t0 t1 i
  count=$((BIG_LOG_MIB * 1024 * 1024 / msg))
  log "join: filling $count messages of 64 KiB, snapshot every $BIG_SNAPSHOT_EVERY entries"
  export RAFTLOG_SNAPSHOT__EVERY_ENTRIES=$BIG_SNAPSHOT_EVERY
  start_raftlog 3 "$dir"
  leader=$(rl_leader 3)
  bench_json "$WORK/join-fill.json" --addr "$leader" -c 16 -n "$count" -s "$msg"
  li=$((${leader##*:} - RL_HTTP_BASE))
  lpid=${RL_PIDS[$li]}
  local before du1
  before=$(rss_mib "$lpid")
  du1=$(du -sm "$dir/n$li/messages" | cut -f1)
  # Peak RSS from here on (Linux: 5 resets VmHWM to the current RSS).
  echo 5 >"/proc/$lpid/clear_refs"
  log "join: leader n$li RSS $before MiB, messages $du1 MiB; starting n4"
  t0=$(date +%s.%N)
  RUST_LOG=raftlog=info start_rl_node 4 "$dir"
  jpid=${RL_PIDS[4]}
  local peak_l=0 peak_j=0 r
  for i in $(seq 1 6000); do
    r=$(rss_mib "$lpid"); ((r > peak_l)) && peak_l=$r
    r=$(rss_mib "$jpid"); ((r > peak_j)) && peak_j=$r
    ready_all 4 && break
    sleep 0.1
  done
  ready_all 4 || die "the fourth node did not become a ready voter in time"
  t1=$(date +%s.%N)
  local hwm_l hwm_j du4 line
  hwm_l=$(hwm_mib "$lpid")
  hwm_j=$(hwm_mib "$jpid")
  du4=$(du -sm "$dir/n4" | cut -f1)
  line=$(grep -a "snapshot received" "$dir/n4.log" | tail -n1)
  unset RAFTLOG_SNAPSHOT__EVERY_ENTRIES
  {
    echo "### A fourth node joins a 3-node cluster holding ${BIG_LOG_MIB} MiB ($count messages of 64 KiB, snapshot every $BIG_SNAPSHOT_EVERY entries)"
    echo
    echo "| leader RSS before | leader peak RSS (VmHWM) during the join | joiner peak RSS (VmHWM) | highest RSS sampled (leader/joiner, every 0.1 s) | snapshot | transfer | join to ready voter | joiner data dir |"
    echo "|---:|---:|---:|---:|---:|---:|---:|---:|"
    python3 - "$line" "$before" "$hwm_l" "$hwm_j" "$peak_l" "$peak_j" "$t0" "$t1" "$du4" <<'EOF'
import re, sys
line, before, hwm_l, hwm_j, peak_l, peak_j, t0, t1, du4 = sys.argv[1:]
line = re.sub(r"\x1b\[[0-9;]*m", "", line)
b = re.search(r"bytes=(\d+)", line)
ms = re.search(r"ms=(\d+)", line)
snap = f"{int(b.group(1)) / 2**20:,.0f} MiB" if b else "?"
rate = "?"
if b and ms:
    secs = int(ms.group(1)) / 1000
    rate = f"{int(b.group(1)) / 2**20 / secs:,.0f} MiB/s ({secs:.1f} s)"
took = float(t1) - float(t0)
print(f"| {before} MiB | {hwm_l} MiB | {hwm_j} MiB | {peak_l} / {peak_j} MiB | {snap} | {rate} | {took:.1f} s | {du4} MiB |")
EOF
    echo
    echo "Transfer: from the joiner's first chunk to the verified file (its 'snapshot received' line); the join time also covers the join, staging (every record checked), install and the log tail."
    echo
  } >>"$out"
  tail -n5 "$out" >&2
}

# ----- main ----------------------------------------------------------------------------

need_tools
mkdir -p "$(dirname "$RESULTS")"
{
  echo "## bench/compare.sh $MODE"
  echo
  echo "Command: \`DURATION=$DURATION REPS=$REPS bench/compare.sh $MODE\`"
  echo
  setup_text
  echo
} >"$WORK/header.md"
# The background load (BACKGROUND) runs in its own process group, so that the
# cleanup stops it with every child it started.
if [[ -n ${BACKGROUND:-} ]]; then
  if [[ ${BACKGROUND%% *} == stress-ng ]] && ! command -v stress-ng >/dev/null; then
    log "installing stress-ng with apt"
    apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq stress-ng >/dev/null
  fi
  command -v "${BACKGROUND%% *}" >/dev/null || die "BACKGROUND: ${BACKGROUND%% *} not found"
  # shellcheck disable=SC2086 # a command line
  setsid $BACKGROUND >"$WORK/background.log" 2>&1 &
  BG_PID=$!
  log "background load: $BACKGROUND (pid $BG_PID)"
fi
case $MODE in
  compare) do_compare ;;
  scale) do_scale ;;
  join) do_join ;;
  all) do_compare && stop_raftlog && do_scale ;;
esac
{
  cat "$WORK/header.md"
  [[ -f $WORK/compare.md ]] && cat "$WORK/compare.md" && echo
  [[ -f $WORK/scale.md ]] && cat "$WORK/scale.md"
  [[ -f $WORK/join.md ]] && cat "$WORK/join.md"
  if [[ -f $WORK/runs.tsv ]]; then
    echo
    echo "<details><summary>Every run (op, system, clients, repetition, req/s, p50 ms, p99 ms, ok, errors, server CPU s, CPU s/1k)</summary>"
    echo
    echo '```'
    cat "$WORK/runs.tsv"
    echo '```'
    echo "</details>"
  fi
} | tee "$RESULTS"
log "results saved to $RESULTS"
