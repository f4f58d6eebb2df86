#!/usr/bin/env bash
# Creates or updates the virtualenv of the python-etcd3 suite (.cache/pyvenv-etcd3) from
# requirements.txt. Idempotent: does nothing when the venv already matches the file.
# Usage: compat-tests/python/setup.sh        (from anywhere; needs python3 with venv)
# Prints the venv's python on its last line.
set -euo pipefail

HERE="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
ROOT="$(cd "$HERE/../.." && pwd)"
VENV="${PYVENV_ETCD3:-$ROOT/.cache/pyvenv-etcd3}"
REQ="$HERE/requirements.txt"
STAMP="$VENV/.requirements.sha256"
PYTHON="${PYTHON:-python3}"

want="$( (cat "$REQ"; "$PYTHON" -c 'import sys; print(sys.version)') | sha256sum | cut -d' ' -f1)"

if [ -x "$VENV/bin/python" ] && [ -f "$STAMP" ] && [ "$(cat "$STAMP")" = "$want" ] \
        && "$VENV/bin/python" -c 'import etcd3, etcd3gw, grpc, pytest' >/dev/null 2>&1; then
    echo "$VENV/bin/python"
    exit 0
fi

# A venv made by another Python (or half made) is rebuilt from scratch.
if [ -d "$VENV" ] && ! "$VENV/bin/python" -c 'import sys' >/dev/null 2>&1; then
    rm -rf "$VENV"
fi
if [ ! -x "$VENV/bin/python" ]; then
    mkdir -p "$(dirname "$VENV")"
    "$PYTHON" -m venv "$VENV"
fi
"$VENV/bin/python" -m pip install -q --disable-pip-version-check -r "$REQ"
"$VENV/bin/python" -c 'import etcd3, etcd3gw, grpc, pytest'
echo "$want" > "$STAMP"
echo "$VENV/bin/python"
