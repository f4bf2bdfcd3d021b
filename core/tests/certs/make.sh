#!/usr/bin/env bash
# Regenerates the test PKI (ECDSA P-256, valid for 100 years): a CA, a server certificate for
# localhost / 127.0.0.1 / ::1, a client certificate, and a second, untrusted CA with a server
# certificate and a client certificate of its own. The files are committed; run this only to
# replace them.
set -euo pipefail
cd "$(dirname "$0")"
days=36500
key() { openssl ecparam -name prime256v1 -genkey -noout | openssl pkcs8 -topk8 -nocrypt -out "$1"; }
ca() { # name subject
    key "$1.key"
    openssl req -new -x509 -key "$1.key" -out "$1.pem" -days $days -subj "/CN=$2" \
        -addext basicConstraints=critical,CA:TRUE -addext keyUsage=critical,keyCertSign,cRLSign
}
leaf() { # name ca subject extensions
    key "$1.key"
    openssl req -new -key "$1.key" -subj "/CN=$3" -out "$1.csr"
    printf '%s\n' "$4" > "$1.ext"
    openssl x509 -req -in "$1.csr" -CA "$2.pem" -CAkey "$2.key" -CAcreateserial -days $days \
        -extfile "$1.ext" -out "$1.pem"
    rm -f "$1.csr" "$1.ext"
}
ca ca "coap-engine test CA"
ca other-ca "coap-engine untrusted CA"
leaf server ca localhost "subjectAltName=DNS:localhost,IP:127.0.0.1,IP:::1
extendedKeyUsage=serverAuth
basicConstraints=CA:FALSE"
leaf client ca "coap-engine test client" "extendedKeyUsage=clientAuth
basicConstraints=CA:FALSE"
leaf other-server other-ca localhost "subjectAltName=DNS:localhost,IP:127.0.0.1,IP:::1
extendedKeyUsage=serverAuth
basicConstraints=CA:FALSE"
leaf other-client other-ca "coap-engine untrusted client" "extendedKeyUsage=clientAuth
basicConstraints=CA:FALSE"
rm -f ./*.srl
