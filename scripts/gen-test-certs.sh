#!/usr/bin/env bash
# Writes a throwaway CA, a server/peer certificate for 127.0.0.1 and localhost, and a client
# certificate for user root (CN=root) into DIR, for config/tls.yml and for trying TLS:
#   scripts/gen-test-certs.sh config/pki
#   rsetcd --config-file config/tls.yml
#   etcdctl --endpoints https://127.0.0.1:2379 --cacert config/pki/ca.pem \
#           --cert config/pki/root.pem --key config/pki/root-key.pem endpoint health
# Needs openssl. Not for production: the keys are unprotected and valid for 30 days.
set -euo pipefail
DIR="${1:?usage: $0 DIR}"
mkdir -p "$DIR"
cd "$DIR"
openssl req -x509 -newkey rsa:2048 -nodes -keyout ca-key.pem -out ca.pem -days 30 \
    -subj "/CN=rsetcd test CA" 2>/dev/null
sign() { # name CN extensions
    openssl req -newkey rsa:2048 -nodes -keyout "$1-key.pem" -out "$1.csr" -subj "/CN=$2" 2>/dev/null
    printf '%s\n' "$3" > "$1.ext"
    openssl x509 -req -in "$1.csr" -CA ca.pem -CAkey ca-key.pem -CAcreateserial -days 30 \
        -out "$1.pem" -extfile "$1.ext" 2>/dev/null
    rm -f "$1.csr" "$1.ext"
}
sign server server "subjectAltName=IP:127.0.0.1,DNS:localhost
extendedKeyUsage=serverAuth,clientAuth"
sign root root "extendedKeyUsage=clientAuth"
rm -f ca.srl
echo "wrote $(pwd)/{ca,server,root}.pem and keys"
