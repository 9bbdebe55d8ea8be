#!/usr/bin/env bash
# certs.sh — the certificates of deploy/compose.yaml's stack, made on the
# machine that runs it (no private key is ever committed):
#   deploy/compose/certs/ca.pem (+ ca.key)      the stack's own CA
#   mosquitto.pem/.key   the broker (DNS mosquitto, localhost; IP 127.0.0.1)
#   edge-01.pem/.key     the gateway's client certificate (CN = MQTT user name)
#   ingest-1.pem/.key    the ingest instance's
#   ../secrets/grafana_admin_password   Grafana's admin password (random)
# Keys are 0600 and, when run as root, owned by the container user that reads
# them (fieldbridge 10001, mosquitto 1883); otherwise run the chown lines it
# prints, or `sudo deploy/compose/certs.sh`.  Existing files are kept; --force
# makes everything anew.  Needs openssl.
#   deploy/compose/certs.sh [--force] [DIR]
set -euo pipefail
force=0
[ "${1:-}" = --force ] && { force=1; shift; }
here=$(cd "$(dirname "$0")" && pwd)
dir=${1:-$here/certs}
secrets=$(dirname "$dir")/secrets
days=${FB_CERT_DAYS:-825}
mkdir -p "$dir" "$secrets"
cd "$dir"
[ "$force" = 1 ] && rm -f ./*.pem ./*.key ./*.srl "$secrets/grafana_admin_password"
umask 077

if [ ! -f ca.pem ]; then
    openssl req -x509 -newkey ec -pkeyopt ec_paramgen_curve:P-256 -nodes -keyout ca.key -out ca.pem \
        -days "$days" -subj "/CN=fieldbridge stack CA" \
        -addext "basicConstraints=critical,CA:true" -addext "keyUsage=critical,keyCertSign,cRLSign" 2>/dev/null
fi
leaf() { # name, extensions
    local n=$1 ext=$2
    [ -f "$n.pem" ] && return 0
    openssl req -newkey ec -pkeyopt ec_paramgen_curve:P-256 -nodes -keyout "$n.key" -out "$n.csr" \
        -subj "/CN=$n" 2>/dev/null
    openssl x509 -req -in "$n.csr" -CA ca.pem -CAkey ca.key -CAcreateserial -out "$n.pem" -days "$days" \
        -extfile <(printf '%s\n' "$ext") 2>/dev/null
    rm -f "$n.csr"
}
leaf mosquitto "subjectAltName=DNS:mosquitto,DNS:localhost,IP:127.0.0.1
extendedKeyUsage=serverAuth
keyUsage=critical,digitalSignature"
for c in edge-01 ingest-1; do
    leaf "$c" "extendedKeyUsage=clientAuth
keyUsage=critical,digitalSignature"
done
chmod 0644 ./*.pem
chmod 0600 ./*.key
if [ ! -f "$secrets/grafana_admin_password" ]; then
    openssl rand -base64 18 > "$secrets/grafana_admin_password"
    chmod 0644 "$secrets/grafana_admin_password" # read by Grafana's user in its container
fi
if [ "$(id -u)" -eq 0 ]; then
    chown 10001:10001 edge-01.key ingest-1.key
    chown 1883:1883 mosquitto.key
else
    echo "certs: as root, give the keys to their containers' users:"
    echo "  chown 10001:10001 $dir/edge-01.key $dir/ingest-1.key && chown 1883:1883 $dir/mosquitto.key"
fi
echo "certs: $dir (CA, mosquitto, edge-01, ingest-1), Grafana admin password in $secrets/grafana_admin_password"
