#!/bin/bash
# Restart memory of a follower: a 3-node `raftlog dev` cluster takes 20,000
# writes, a follower is killed (SIGKILL) and restarted with the same command;
# prints the time from spawn to its /ready, and its RSS and peak RSS 10 s later.
#
#   bench/restart-rss.sh target/release/raftlog
#
# Ports 28381-28383 (HTTP) and 27371-27373 (gRPC); data in /tmp/rs.
set -u
BIN=$1; D=/tmp/rs; rm -rf $D; 
($BIN dev --base-http-port 28381 --base-grpc-port 27371 --data-dir $D > /tmp/rs.log 2>&1 &)
sleep 4
$BIN bench --addr 127.0.0.1:28381 -c 16 -n 20000 -q > /dev/null 2>&1
sleep 1
line=$(pgrep -af "$BIN serve --node-id=n2" | head -1); pid=${line%% *}; cmd=${line#* }
kill -9 $pid; sleep 0.5
t0=$(date +%s%N)
(setsid $cmd > /tmp/rs-n2.log 2>&1 &)
until curl -sf 127.0.0.1:28382/ready > /dev/null 2>&1; do sleep 0.005; done
t1=$(date +%s%N)
npid=$(pgrep -f "$BIN serve --node-id=n2" | head -1)
sleep 10; echo "$BIN restart-to-ready $(( (t1-t0)/1000000 )) ms; RSS 10 s later $(awk '/VmRSS/{print $2/1024 " MiB"}' /proc/$npid/status) peak $(awk '/VmHWM/{print $2/1024 " MiB"}' /proc/$npid/status); wal $(ls -la $D/n2/wal/wal | tail -n +4 | awk '{print $5}' | tr '\n' ' ')"
pkill -f "$BIN dev"; sleep 0.5; pkill -f "$BIN serve"; sleep 1
