#!/usr/bin/env bash
# A local 3-member rsetcd cluster on loopback, to try clustering by hand: every member is its
# own process with its own data dir under $CLUSTER_DIR (default ./cluster-data).
#
#   scripts/cluster.sh start          build (release) if needed and start m1, m2, m3
#   scripts/cluster.sh status         etcdctl endpoint status for the three members
#   scripts/cluster.sh kill N         kill -9 member N (1-3), e.g. the leader
#   scripts/cluster.sh restart N      start member N again on its data dir
#   scripts/cluster.sh stop           stop all members (data stays; start resumes it)
#   scripts/cluster.sh clean          stop and delete the data
#
# Clients: --endpoints 127.0.0.1:2379,127.0.0.1:22379,127.0.0.1:32379
# RSETCD_BIN overrides the binary (e.g. a reference etcd, to compare).
set -euo pipefail
ROOT="$(cd "$(dirname "$0")/.." && pwd)"
DIR="${CLUSTER_DIR:-$PWD/cluster-data}"
BIN="${RSETCD_BIN:-$ROOT/target/release/rsetcd}"
CLIENT_PORTS=(2379 22379 32379)
PEER_PORTS=(2380 22380 32380)
ENDPOINTS="127.0.0.1:2379,127.0.0.1:22379,127.0.0.1:32379"
INITIAL="m1=http://127.0.0.1:2380,m2=http://127.0.0.1:22380,m3=http://127.0.0.1:32380"

etcdctl_bin() {
    for c in "$ROOT/.cache/reference/bin/etcdctl" "$(command -v etcdctl || true)"; do
        [ -n "$c" ] && [ -x "$c" ] && { echo "$c"; return; }
    done
    echo "no etcdctl found: run scripts/build-reference.sh or install etcd-client" >&2
    exit 1
}

start_member() {
    local n="$1" i=$(($1 - 1))
    local name="m$n" client="http://127.0.0.1:${CLIENT_PORTS[$i]}" peer="http://127.0.0.1:${PEER_PORTS[$i]}"
    mkdir -p "$DIR"
    if [ -f "$DIR/$name.pid" ] && kill -0 "$(cat "$DIR/$name.pid")" 2>/dev/null; then
        echo "$name already runs (pid $(cat "$DIR/$name.pid"))"
        return
    fi
    "$BIN" --name "$name" --data-dir "$DIR/$name" \
        --listen-client-urls "$client" --advertise-client-urls "$client" \
        --listen-peer-urls "$peer" --initial-advertise-peer-urls "$peer" \
        --initial-cluster "$INITIAL" --initial-cluster-token rsetcd-local \
        --initial-cluster-state new >>"$DIR/$name.log" 2>&1 &
    echo $! >"$DIR/$name.pid"
    echo "$name: pid $!, client $client, peer $peer, log $DIR/$name.log"
}

member_pid() { cat "$DIR/m$1.pid" 2>/dev/null || true; }

case "${1:-}" in
start)
    if [ -z "${RSETCD_BIN:-}" ] && [ ! -x "$BIN" ]; then
        (cd "$ROOT" && cargo build --release)
    fi
    for n in 1 2 3; do start_member "$n"; done
    echo "try: $(etcdctl_bin) --endpoints $ENDPOINTS endpoint status -w table"
    ;;
status)
    "$(etcdctl_bin)" --endpoints "$ENDPOINTS" endpoint status -w table || true
    ;;
kill)
    pid="$(member_pid "${2:?member number 1-3}")"
    [ -n "$pid" ] && kill -9 "$pid" && echo "killed m$2 (pid $pid)"
    ;;
restart)
    start_member "${2:?member number 1-3}"
    ;;
stop | clean)
    for n in 1 2 3; do
        pid="$(member_pid "$n")"
        [ -n "$pid" ] && kill "$pid" 2>/dev/null && echo "stopped m$n"
        rm -f "$DIR/m$n.pid"
    done
    if [ "$1" = clean ]; then rm -rf "$DIR"; fi
    ;;
*)
    sed -n '2,13p' "$0" | sed 's/^# \{0,1\}//'
    exit 2
    ;;
esac
