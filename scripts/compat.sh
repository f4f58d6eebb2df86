#!/usr/bin/env bash
# Runs every compatibility suite and prints one table: suite, then passed / failed / skipped
# against rsetcd and against the reference etcd 3.6.16 (which proves the tests right).
#
# - Go (compat-tests/go): each package runs twice, RSETCD_BIN=rsetcd then RSETCD_BIN=etcd.
# - Go, own modules: compat-tests/kubernetes (k8s.io/apiserver storage conformance) and
#   compat-tests/kube-apiserver (a real kube-apiserver and kubectl), once per server.
# - Python clients (compat-tests/python: etcd3, etcd3gw, /metrics parsing): one run; each
#   test is parametrized per server, so its id says which server it ran against.
# - Java (compat-tests/java, jetcd): one run; each test is parametrized per server.
# - Differential suites (compat-tests/http, compat-tests/etcdctl): one run; a test that compares
#   the two servers counts for rsetcd, with etcd as the oracle ("n/a"); the http suite's
#   per-server tests count for their server.
#
# Usage: scripts/compat.sh     (after a debug build; JAVA=0 skips the Java suite)
set -uo pipefail
ROOT="$(cd "$(dirname "$0")/.." && pwd)"
cd "$ROOT"
RSETCD="$ROOT/target/debug/rsetcd"
ETCD="$ROOT/.cache/reference/bin/etcd"
OUT="$(mktemp -d)"
trap 'rm -rf "$OUT"' EXIT
[ -x "$RSETCD" ] || cargo build --bin rsetcd >&2
[ -x "$ETCD" ] || scripts/build-reference.sh >&2
GO="$(command -v go || echo /usr/local/go/bin/go)"

rows=()
row() { rows+=("$(printf '%-34s %6s %6s %6s   %6s %6s %6s' "$@")"); }

# go test -json: count test-level results (subtests included), not package lines.
go_counts() {
    python3 - "$1" <<'PY'
import json, sys
c = {"pass": 0, "fail": 0, "skip": 0}
for line in open(sys.argv[1]):
    try:
        e = json.loads(line)
    except ValueError:
        continue
    if e.get("Test") and e.get("Action") in c:
        c[e["Action"]] += 1
print(c["pass"], c["fail"], c["skip"])
PY
}

# pytest junit XML: counts per server label found in the test id ("[etcd]", "[rsetcd]"),
# or all under rsetcd when ids name no server.
pytest_counts() {
    python3 - "$1" "$2" <<'PY'
import sys, xml.etree.ElementTree as ET
want = sys.argv[2]
c = {"pass": 0, "fail": 0, "skip": 0}
for case in ET.parse(sys.argv[1]).iter("testcase"):
    name = case.get("name", "")
    # Per-server ids carry the server as a whole parameter ("[etcd]", "[etcd-x]",
    # "[x-etcd]"); differential ids name no server and count for rsetcd.
    import re
    label = "etcd" if re.search(r"[\[-]etcd[\]-]", name) else "rsetcd"
    if label != want:
        continue
    if case.find("failure") is not None or case.find("error") is not None:
        c["fail"] += 1
    elif case.find("skipped") is not None:
        c["skip"] += 1
    else:
        c["pass"] += 1
print(c["pass"], c["fail"], c["skip"])
PY
}

for pkg in $(cd compat-tests/go && "$GO" list ./... | grep -v /internal/); do
    name="go ${pkg#rsetcd/compat-tests/}"
    (cd compat-tests/go && RSETCD_BIN="$RSETCD" "$GO" test -count=1 -json "$pkg" >"$OUT/r.json" 2>&1)
    (cd compat-tests/go && RSETCD_BIN="$ETCD" "$GO" test -count=1 -json "$pkg" >"$OUT/e.json" 2>&1)
    row "$name" $(go_counts "$OUT/r.json") $(go_counts "$OUT/e.json")
done

# Kubernetes' storage conformance tests (own Go module): one top-level test per server.
(cd compat-tests/kubernetes && RSETCD_BIN="$RSETCD" "$GO" test -count=1 -json -run TestRsetcd ./... >"$OUT/k.json" 2>&1)
(cd compat-tests/kubernetes && REF_ETCD_BIN="$ETCD" "$GO" test -count=1 -json -run TestReferenceEtcd ./... >"$OUT/ke.json" 2>&1)
row "kubernetes storage (apiserver)" $(go_counts "$OUT/k.json") $(go_counts "$OUT/ke.json")

# A real kube-apiserver + kubectl (v1.37.2, own Go module) on a 3-member cluster with members
# killed and restarted: one run per server; build.sh builds the two binaries once into .cache/kube.
compat-tests/kube-apiserver/build.sh >&2
(cd compat-tests/kube-apiserver && RSETCD_BIN="$RSETCD" "$GO" test -count=1 -timeout 20m -json ./... >"$OUT/ka.json" 2>&1)
(cd compat-tests/kube-apiserver && RSETCD_BIN="$ETCD" "$GO" test -count=1 -timeout 20m -json ./... >"$OUT/kae.json" 2>&1)
row "kube-apiserver 1.37 + kubectl" $(go_counts "$OUT/ka.json") $(go_counts "$OUT/kae.json")

export RSETCD_BIN="$RSETCD"
python3 -m pytest -q -p no:cacheprovider compat-tests/http --junitxml="$OUT/http.xml" >/dev/null 2>&1
row "http (differential + per server)" $(pytest_counts "$OUT/http.xml" rsetcd) $(pytest_counts "$OUT/http.xml" etcd)
python3 -m pytest -q -p no:cacheprovider compat-tests/etcdctl --junitxml="$OUT/etcdctl.xml" >/dev/null 2>&1
row "etcdctl (differential)" $(pytest_counts "$OUT/etcdctl.xml" rsetcd) n/a n/a n/a

PY="$(compat-tests/python/setup.sh | tail -1)"
"$PY" -m pytest -q -p no:cacheprovider compat-tests/python --junitxml="$OUT/python.xml" >/dev/null 2>&1
row "python clients (etcd3, etcd3gw)" $(pytest_counts "$OUT/python.xml" rsetcd) $(pytest_counts "$OUT/python.xml" etcd)

if [ "${JAVA:-1}" = 1 ] && [ -x compat-tests/java/run.sh ]; then
    compat-tests/java/run.sh >"$OUT/java.log" 2>&1
    python3 - "$OUT" <<'PY' >"$OUT/java.counts"
import glob, sys, xml.etree.ElementTree as ET
c = {l: {"pass": 0, "fail": 0, "skip": 0} for l in ("rsetcd", "etcd")}
for f in glob.glob("compat-tests/java/target/surefire-reports/TEST-*.xml"):
    for case in ET.parse(f).iter("testcase"):
        name = case.get("name", "")
        label = "rsetcd" if "rsetcd" in name else "etcd"
        kind = "fail" if case.find("failure") is not None or case.find("error") is not None \
            else "skip" if case.find("skipped") is not None else "pass"
        c[label][kind] += 1
print(*(c["rsetcd"][k] for k in ("pass", "fail", "skip")), *(c["etcd"][k] for k in ("pass", "fail", "skip")))
PY
    row "java (jetcd)" $(cat "$OUT/java.counts")
fi

printf '%-34s %6s %6s %6s   %6s %6s %6s\n' "" rsetcd "" "" etcd "" ""
printf '%-34s %6s %6s %6s   %6s %6s %6s\n' suite passed failed skipped passed failed skipped
printf '%s\n' "${rows[@]}"
