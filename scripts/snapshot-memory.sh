#!/usr/bin/env bash
# Peak memory of the leader and of a joining node during a snapshot transfer, and
# the transfer rate (issue 15 step 4): a 3-node release cluster holding
# $BIG_LOG_MIB MiB, then a fourth node joins. See `bench/compare.sh join`.
#
#   BIG_LOG_MIB=2048 scripts/snapshot-memory.sh
#
# Environment: BIG_LOG_MIB (512), BIG_SNAPSHOT_EVERY (4096), BENCH_RAFTLOG_BIN
# (default: cargo build --release). Needs about 4.5 × BIG_LOG_MIB of free disk in /tmp.
set -euo pipefail
exec "$(dirname "${BASH_SOURCE[0]}")/../bench/compare.sh" join
