#!/usr/bin/env bash
# Runs every test of rsetcd: Rust unit and integration tests, then the real clients against a
# freshly built rsetcd and a reference etcd 3.6 (built by scripts/build-reference.sh).
# Usage: scripts/test.sh            (from anywhere; needs cargo, go, python3 with pytest)
set -euo pipefail

ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
cd "$ROOT"
GO="${GO:-$(command -v go || echo /usr/local/go/bin/go)}"
step() { printf '\n=== %s\n' "$*"; }

step "cargo fmt --check and clippy"
cargo fmt --all -- --check
cargo clippy --all-targets -- -D warnings

step "cargo test"
cargo build --bin rsetcd
cargo test

step "reference etcd, etcdctl and benchmark 3.6 (cached in .cache/)"
scripts/build-reference.sh

export RSETCD_BIN="$ROOT/target/debug/rsetcd"

step "Go: descriptors, kill -9 durability, clientv3 suites (kvdiff, watch, lease, concurrency, recipes)"
(cd compat-tests/go && "$GO" test -count=1 ./...)

step "Kubernetes: k8s.io/apiserver's etcd3 store and watch-cache conformance tests against rsetcd"
(cd compat-tests/kubernetes && "$GO" test -count=1 -run TestRsetcd ./...)

step "Kubernetes: a real kube-apiserver 1.37.2 and kubectl on a 3-member rsetcd, members killed and restarted"
compat-tests/kube-apiserver/build.sh
(cd compat-tests/kube-apiserver && "$GO" test -count=1 -timeout 20m ./...)

step "HTTP endpoints and etcdctl differential suites: rsetcd against reference etcd"
python3 -m pytest -q compat-tests/http
python3 -m pytest -q compat-tests/etcdctl

step "Java jetcd client against rsetcd and the reference etcd"
compat-tests/java/run.sh

step "Python etcd3 client (gRPC) against rsetcd and the reference etcd"
PYVENV="$(compat-tests/python/setup.sh | tail -1)"
"$PYVENV" -m pytest -q compat-tests/python
