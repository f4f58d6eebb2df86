#!/usr/bin/env bash
# Runs the jetcd client suite (see README.md) against rsetcd and the reference etcd.
# CI entry point: batch mode, no download progress, and a Maven repository under the
# repository's .cache/m2 (git-ignored; cache that directory between runs).
#
# Needs: JDK 17+ and Maven 3.8+ (Debian: openjdk-17-jdk-headless, maven), the rsetcd binary
# (target/debug/rsetcd, or $RSETCD_BIN) and the reference etcd (.cache/reference/bin/etcd, or
# $REF_ETCD_BIN, built by scripts/build-reference.sh). Extra arguments go to Maven, e.g.
#   compat-tests/java/run.sh -Dtest=LeaseTest
#   compat-tests/java/run.sh -Dcompat.servers=etcd
set -euo pipefail

HERE="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
ROOT="$(cd "$HERE/../.." && pwd)"

if ! command -v mvn >/dev/null 2>&1; then
    echo "run.sh: mvn not found (Debian: apt-get install -y maven openjdk-17-jdk-headless)" >&2
    exit 2
fi

cd "$HERE"
exec mvn -B -ntp -Dstyle.color=never -Dmaven.repo.local="$ROOT/.cache/m2" test "$@"
