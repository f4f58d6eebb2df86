#!/usr/bin/env bash
# Runs etcd's own benchmark tool against rsetcd and the reference etcd 3.6, one after the
# other on this machine with the same flags, and prints throughput, p99 latency and the
# rsetcd/etcd ratio per row, plus each server's resident memory after 100,000 keys of 256 B.
# The watch row counts events delivered to 1,000 watchers (the last summary the tool prints).
# Both servers fsync their write-ahead log before replying.
# Then the put and range rows against a 3-member cluster of each (separate processes on
# loopback, clients spread over all endpoints).
# Usage: scripts/bench.sh   (QUICK=1 for a tenth of the requests; CLUSTER=0 skips the
# cluster rows, SINGLE=0 the single-member ones)
set -euo pipefail
ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
cd "$ROOT"
cargo build --release --bin rsetcd >&2
scripts/build-reference.sh >&2
BENCH="$ROOT/.cache/reference/bin/benchmark"
SCALE=$([ "${QUICK:-0}" = 1 ] && echo 10 || echo 1)
WORK="$(mktemp -d)"
trap 'kill $(jobs -p) 2>/dev/null || true; rm -rf "$WORK"' EXIT

rows=(
  "put 1 client 1 conn|--clients 1 --conns 1 put --total $((2000 / SCALE)) --key-size 8 --val-size 256"
  "put 100 clients 10 conns|--clients 100 --conns 10 put --total $((50000 / SCALE)) --key-size 8 --val-size 256"
  "range linearizable 100 clients|--clients 100 --conns 10 range bench-key --total $((50000 / SCALE)) --consistency l"
  "range serializable 100 clients|--clients 100 --conns 10 range bench-key --total $((50000 / SCALE)) --consistency s"
  "watch events, 100 streams x 10|--clients 10 --conns 10 watch --streams 100 --watch-per-stream 10 --put-total $((2000 / SCALE)) --watched-key-total 100"
  "lease-keepalive 100 clients|--clients 100 --conns 10 lease-keepalive --total $((50000 / SCALE))"
)

start() { # name binary port -> pid
  local name=$1 bin=$2 port=$3 peer=$(($3 + 1))
  "$bin" --name "$name" --data-dir "$WORK/$name" \
    --listen-client-urls "http://127.0.0.1:$port" --advertise-client-urls "http://127.0.0.1:$port" \
    --listen-peer-urls "http://127.0.0.1:$peer" --initial-advertise-peer-urls "http://127.0.0.1:$peer" \
    --initial-cluster "$name=http://127.0.0.1:$peer" >"$WORK/$name.log" 2>&1 &
  local pid=$!
  for _ in $(seq 100); do grep -q "ready to serve client requests" "$WORK/$name.log" && break; sleep 0.1; done
  echo "$pid"
}

declare -A rps p99 rss anon
measure() { # server endpoints-flag table row... : fills rps/p99 under "table,server,label"
  local server=$1 ep=$2 table=$3 row label args out; shift 3
  for row in "$@"; do
    label=${row%%|*}; args=${row#*|}
    out=$("$BENCH" $ep $args 2>&1)
    rps[$table,$server,$label]=$(awk '/Requests\/sec/ {v=$2} END {print v}' <<<"$out")
    p99[$table,$server,$label]=$(awk '/ 99% in/ {v=$3} END {print v}' <<<"$out")
  done
}

report() { # title table row...
  local title=$1 table=$2 row label a b; shift 2
  printf '%-32s %12s %12s %8s %12s %12s\n' "$title" "rsetcd req/s" "etcd req/s" ratio "rsetcd p99" "etcd p99"
  for row in "$@"; do
    label=${row%%|*}
    a=${rps[$table,rsetcd,$label]}; b=${rps[$table,etcd,$label]}
    printf '%-32s %12.0f %12.0f %8.2f %11.2fms %11.2fms\n' "$label" "$a" "$b" "$(echo "$a / $b" | bc -l)" \
      "$(echo "${p99[$table,rsetcd,$label]} * 1000" | bc -l)" "$(echo "${p99[$table,etcd,$label]} * 1000" | bc -l)"
  done
}

server_bin() { [ "$1" = rsetcd ] && echo "$ROOT/target/release/rsetcd" || echo "$ROOT/.cache/reference/bin/etcd"; }
seed_key() { "$ROOT/.cache/reference/bin/etcdctl" $1 put bench-key "$(head -c 256 /dev/zero | tr '\0' v)" >/dev/null; }

if [ "${SINGLE:-1}" = 1 ]; then
for server in rsetcd etcd; do
  bin=$(server_bin $server)
  port=$([ $server = rsetcd ] && echo 24379 || echo 25379)
  pid=$(start "$server" "$bin" "$port")
  ep="--endpoints 127.0.0.1:$port"
  "$BENCH" $ep put --total 1 --key-size 9 --val-size 256 --sequential-keys >/dev/null 2>&1 || true
  seed_key "$ep"
  measure "$server" "$ep" single "${rows[@]}"
  "$BENCH" $ep --clients 50 --conns 10 put --total 100000 --key-space-size 100000 --sequential-keys \
    --key-size 16 --val-size 256 >/dev/null 2>&1
  rss[$server]=$(awk '/VmRSS/ {print $2}' "/proc/$pid/status")
  anon[$server]=$(awk '/RssAnon/ {print $2}' "/proc/$pid/status")
  kill "$pid"; wait "$pid" 2>/dev/null || true
done

report "one member" single "${rows[@]}"
printf '%-32s %10d KiB %10d KiB %8.2f\n' "RSS after 100k keys x 256 B" "${rss[rsetcd]}" "${rss[etcd]}" \
  "$(echo "${rss[rsetcd]} / ${rss[etcd]}" | bc -l)"
# RSS counts the pages of a memory-mapped file the process touched (all of LMDB's map for
# rsetcd; bbolt writes with pwrite, so etcd's map stays mostly unfaulted): the anonymous part
# is the memory each process owns outright.
printf '%-32s %10d KiB %10d KiB %8.2f\n' "  of which anonymous (heap)" "${anon[rsetcd]}" "${anon[etcd]}" \
  "$(echo "${anon[rsetcd]} / ${anon[etcd]}" | bc -l)"
fi

[ "${CLUSTER:-1}" = 1 ] || exit 0

cluster_rows=(
  "put 1 client 1 conn|--clients 1 --conns 1 put --total $((1000 / SCALE)) --key-size 8 --val-size 256"
  "put 100 clients 10 conns|--clients 100 --conns 10 put --total $((50000 / SCALE)) --key-size 8 --val-size 256"
  "range linearizable 100 clients|--clients 100 --conns 10 range bench-key --total $((50000 / SCALE)) --consistency l"
  "range serializable 100 clients|--clients 100 --conns 10 range bench-key --total $((50000 / SCALE)) --consistency s"
)

start_cluster() { # prefix binary base-port -> pids; members listen on base+10*i (client), +1 (peer)
  local prefix=$1 bin=$2 base=$3 initial="" i
  for i in 1 2 3; do initial+="${initial:+,}$prefix$i=http://127.0.0.1:$((base + 10 * i + 1))"; done
  for i in 1 2 3; do
    local c=$((base + 10 * i)) p=$((base + 10 * i + 1))
    "$bin" --name "$prefix$i" --data-dir "$WORK/$prefix$i" \
      --listen-client-urls "http://127.0.0.1:$c" --advertise-client-urls "http://127.0.0.1:$c" \
      --listen-peer-urls "http://127.0.0.1:$p" --initial-advertise-peer-urls "http://127.0.0.1:$p" \
      --initial-cluster "$initial" --initial-cluster-token "$prefix" >"$WORK/$prefix$i.log" 2>&1 &
    echo $!
  done
  for i in 1 2 3; do
    for _ in $(seq 150); do grep -q "ready to serve client requests" "$WORK/$prefix$i.log" && break; sleep 0.1; done
  done
}

for server in rsetcd etcd; do
  base=$([ $server = rsetcd ] && echo 26300 || echo 27300)
  pids=$(start_cluster "c$server" "$(server_bin $server)" "$base")
  ep="--endpoints 127.0.0.1:$((base + 10)),127.0.0.1:$((base + 20)),127.0.0.1:$((base + 30))"
  seed_key "$ep"
  measure "$server" "$ep" cluster "${cluster_rows[@]}"
  kill $pids; wait $pids 2>/dev/null || true
done

echo
report "3-member cluster" cluster "${cluster_rows[@]}"
