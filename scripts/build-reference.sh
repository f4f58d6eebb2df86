#!/usr/bin/env bash
# Builds the reference etcd tools that rsetcd is compared against:
#
#   .cache/reference/bin/etcd       etcd server     (go.etcd.io/etcd/server/v3  etcdmain.Main)
#   .cache/reference/bin/etcdctl    etcdctl v3      (go.etcd.io/etcd/etcdctl/v3 ctlv3.MustStart)
#   .cache/reference/bin/benchmark  etcd benchmark  (go.etcd.io/etcd/v3 tools/benchmark/cmd.RootCmd)
#
# etcd's own go.mod files carry replace directives, so `go install module@version`
# refuses them. Instead we generate a tiny module of our own (in .cache/reference/src)
# that requires the published modules and whose three main packages call the exported
# entry points, then build it. Needs only a Go toolchain (>= 1.24) and the Go module proxy.
#
# Idempotent: does nothing when the three binaries exist and were built for the
# requested versions (stamp file .cache/reference/bin/.stamp). FORCE=1 rebuilds.
#
# Environment:
#   ETCD_REF_VERSION   etcd version to build (default v3.6.16)
#   ETCD_BENCH_VERSION version of go.etcd.io/etcd/v3 (the root module holding
#                      tools/benchmark). Default: ETCD_REF_VERSION if the proxy serves
#                      it, else the newest served v3.<minor>.x below it (the module
#                      proxy does not serve every root-module tag; the benchmark is a plain
#                      client, and its etcd libraries still resolve to ETCD_REF_VERSION).
#   GO                 go binary (default: `go` on PATH, else /usr/local/go/bin/go)
#   FORCE=1            rebuild even if up to date
set -euo pipefail

REPO_ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
ETCD_REF_VERSION="${ETCD_REF_VERSION:-v3.6.16}"
CACHE_DIR="$REPO_ROOT/.cache/reference"
BIN_DIR="$CACHE_DIR/bin"
SRC_DIR="$CACHE_DIR/src"
STAMP="$BIN_DIR/.stamp"

if [[ -n "${GO:-}" ]]; then
    :
elif command -v go >/dev/null 2>&1; then
    GO="$(command -v go)"
elif [[ -x /usr/local/go/bin/go ]]; then
    GO=/usr/local/go/bin/go
else
    echo "build-reference: no Go toolchain found (set GO=/path/to/go)" >&2
    exit 1
fi

# Use the local toolchain as is (never download another one), build static binaries
# (no C compiler needed), and keep any outer GOFLAGS from interfering with the build.
export GOTOOLCHAIN=local CGO_ENABLED=0 GOFLAGS=-buildvcs=false GO111MODULE=on

log() { echo "build-reference: $*" >&2; }

print_versions() {
    echo "== $BIN_DIR/etcd --version"
    "$BIN_DIR/etcd" --version
    echo "== $BIN_DIR/etcdctl version"
    "$BIN_DIR/etcdctl" version
    echo "== $BIN_DIR/benchmark (no version command; module versions it was built from)"
    "$GO" version -m "$BIN_DIR/benchmark" | awk '$1 == "path" || ($1 == "dep" && $2 ~ /^go\.etcd\.io\/etcd\//) {print "  " $2, $3}'
}

# The stamp records what was built ("recipe=N etcd=vX bench=vY"); it is written only
# after a successful build. Bump recipe when this script changes what it builds.
RECIPE=2
stamp_ok() {
    [[ -x "$BIN_DIR/etcd" && -x "$BIN_DIR/etcdctl" && -x "$BIN_DIR/benchmark" && -f "$STAMP" ]] || return 1
    local recipe etcd bench
    read -r recipe etcd bench <"$STAMP" || return 1
    [[ "$recipe" == "recipe=$RECIPE" && "$etcd" == "etcd=$ETCD_REF_VERSION" ]] || return 1
    [[ -z "${ETCD_BENCH_VERSION:-}" || "$bench" == "bench=$ETCD_BENCH_VERSION" ]] || return 1
    "$BIN_DIR/etcd" --version 2>/dev/null | grep -qx "etcd Version: ${ETCD_REF_VERSION#v}"
}
if [[ "${FORCE:-0}" != 1 ]] && stamp_ok; then
    log "up to date ($(cat "$STAMP")), skipping build"
    print_versions
    exit 0
fi

start=$(date +%s)
log "using $("$GO" version)"

# Pick the root-module version that holds tools/benchmark. `go list -m` outside any
# module: run it from an empty temp dir.
if [[ -z "${ETCD_BENCH_VERSION:-}" ]]; then
    probe_dir="$(mktemp -d)"
    trap 'rm -rf "$probe_dir"' EXIT
    if (cd "$probe_dir" && "$GO" list -m "go.etcd.io/etcd/v3@$ETCD_REF_VERSION") >/dev/null 2>&1; then
        ETCD_BENCH_VERSION="$ETCD_REF_VERSION"
    else
        # The proxy's version list for this module is incomplete (it omits tags it does
        # serve), so walk the patch versions down from the target instead.
        base="${ETCD_REF_VERSION%.*}" patch="${ETCD_REF_VERSION##*.}"
        ETCD_BENCH_VERSION=""
        for ((p = patch - 1; p >= 0; p--)); do
            if (cd "$probe_dir" && "$GO" list -m "go.etcd.io/etcd/v3@$base.$p") >/dev/null 2>&1; then
                ETCD_BENCH_VERSION="$base.$p"
                break
            fi
        done
        if [[ -z "$ETCD_BENCH_VERSION" ]]; then
            log "no go.etcd.io/etcd/v3 $base.x <= $ETCD_REF_VERSION is served by the module proxy"
            exit 1
        fi
        log "go.etcd.io/etcd/v3@$ETCD_REF_VERSION is not served; benchmark from go.etcd.io/etcd/v3@$ETCD_BENCH_VERSION"
    fi
fi

# Generate the module afresh each time.
rm -rf "$SRC_DIR"
mkdir -p "$SRC_DIR/cmd/etcd" "$SRC_DIR/cmd/etcdctl" "$SRC_DIR/cmd/benchmark" "$BIN_DIR"

cat >"$SRC_DIR/go.mod" <<EOF
module rsetcd.local/reference

go 1.24

require (
	go.etcd.io/etcd/server/v3 $ETCD_REF_VERSION
	go.etcd.io/etcd/etcdctl/v3 $ETCD_REF_VERSION
	go.etcd.io/etcd/api/v3 $ETCD_REF_VERSION
	go.etcd.io/etcd/client/v3 $ETCD_REF_VERSION
	go.etcd.io/etcd/client/pkg/v3 $ETCD_REF_VERSION
	go.etcd.io/etcd/pkg/v3 $ETCD_REF_VERSION
	go.etcd.io/etcd/v3 $ETCD_BENCH_VERSION
)
EOF

cat >"$SRC_DIR/cmd/etcd/main.go" <<'EOF'
// Reference etcd server: the same entry point as etcd's own server/main.go.
package main

import (
	"os"

	"go.etcd.io/etcd/server/v3/etcdmain"
)

func main() { etcdmain.Main(os.Args) }
EOF

cat >"$SRC_DIR/cmd/etcdctl/main.go" <<'EOF'
// Reference etcdctl: the same entry point as etcd's own etcdctl/main.go.
package main

import "go.etcd.io/etcd/etcdctl/v3/ctlv3"

func main() { ctlv3.MustStart() }
EOF

cat >"$SRC_DIR/cmd/benchmark/main.go" <<'EOF'
// Reference benchmark tool: the same entry point as etcd's tools/benchmark/main.go.
package main

import (
	"fmt"
	"os"

	"go.etcd.io/etcd/v3/tools/benchmark/cmd"
)

func main() {
	if err := cmd.RootCmd.Execute(); err != nil {
		fmt.Fprintln(os.Stderr, err)
		os.Exit(-1)
	}
}
EOF

cd "$SRC_DIR"
log "resolving modules (go mod tidy)"
"$GO" mod tidy
# The server, etcdctl and client libraries must have resolved to the requested version
# (MVS picks the maximum; nothing should have pulled them higher).
for m in go.etcd.io/etcd/server/v3 go.etcd.io/etcd/etcdctl/v3 go.etcd.io/etcd/client/v3 go.etcd.io/etcd/api/v3; do
    got="$("$GO" list -m -f '{{.Version}}' "$m")"
    if [[ "$got" != "$ETCD_REF_VERSION" ]]; then
        log "$m resolved to $got, expected $ETCD_REF_VERSION"
        exit 1
    fi
done

log "building etcd, etcdctl, benchmark (CGO_ENABLED=0)"
for b in etcd etcdctl benchmark; do
    "$GO" build -trimpath -o "$BIN_DIR/$b.tmp" "./cmd/$b"
    mv -f "$BIN_DIR/$b.tmp" "$BIN_DIR/$b"
done
echo "recipe=$RECIPE etcd=$ETCD_REF_VERSION bench=$ETCD_BENCH_VERSION" >"$STAMP"

log "built in $(( $(date +%s) - start ))s"
print_versions
