#!/usr/bin/env bash
# Builds kube-apiserver and kubectl from k8s.io/kubernetes (the version in this
# module's go.mod, v1.37.2) into <repo>/.cache/kube/bin (or $KUBE_BIN_DIR),
# and prints that directory. A build whose stamp (the modules it is built
# from, the Go version) matches is reused, so this is cheap to call before
# every test run (the test does).
#
# Usage: compat-tests/kube-apiserver/build.sh [--force]
set -euo pipefail
HERE="$(cd "$(dirname "$0")" && pwd)"
ROOT="$(cd "$HERE/../.." && pwd)"
OUT="${KUBE_BIN_DIR:-$ROOT/.cache/kube/bin}"
GO="$(command -v go || echo /usr/local/go/bin/go)"
cd "$HERE"

version="$("$GO" list -m -f '{{.Version}}' k8s.io/kubernetes)"
# The stamp names every module the two commands are built from (so test-only
# requirements added to go.mod do not force a rebuild), and the Go version.
mods="$("$GO" list -deps -f '{{with .Module}}{{.Path}}@{{.Version}}{{with .Replace}}=>{{.Version}}{{end}}{{end}}' \
    k8s.io/kubernetes/cmd/kube-apiserver k8s.io/kubernetes/cmd/kubectl | sort -u | sha256sum | cut -c1-16)"
stamp="$version $("$GO" env GOVERSION) modules:$mods"

if [ "${1:-}" != --force ] && [ -x "$OUT/kube-apiserver" ] && [ -x "$OUT/kubectl" ] &&
    [ "$(cat "$OUT/.stamp" 2>/dev/null)" = "$stamp" ]; then
    echo "$OUT"
    exit 0
fi

mkdir -p "$OUT"
rm -f "$OUT/.stamp"
# Version stamps as Kubernetes' own build sets them (hack/lib/version.sh), so
# that `kubectl version` and the server's /version report the release.
major="${version#v}"; major="${major%%.*}"
minor="${version#v*.}"; minor="${minor%%.*}"
ldflags="-s -w"
for pkg in k8s.io/component-base/version k8s.io/client-go/pkg/version; do
    ldflags+=" -X $pkg.gitVersion=$version -X $pkg.gitMajor=$major -X $pkg.gitMinor=$minor"
    ldflags+=" -X $pkg.gitTreeState=clean -X $pkg.buildDate=1970-01-01T00:00:00Z"
done
echo "build.sh: building kube-apiserver and kubectl $version into $OUT (minutes on a cold build cache)" >&2
CGO_ENABLED=0 "$GO" build -trimpath -ldflags "$ldflags" -o "$OUT/" \
    k8s.io/kubernetes/cmd/kube-apiserver k8s.io/kubernetes/cmd/kubectl
echo "$stamp" >"$OUT/.stamp"
echo "$OUT"
