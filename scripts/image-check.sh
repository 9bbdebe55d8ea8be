#!/usr/bin/env bash
# image-check.sh — build the Dockerfile and run the image on this machine
# without Docker Hub and without a Docker daemon: podman (Debian's 4.3) with
# runc, FROM a local bare Debian 12 root imported as an image (shared/tools/
# fresh-debian.sh's cached root, $FB_DEBIAN_ROOT, or a debootstrap made here).
# Then the image runs deploy/compose/gateway.yaml (metrics moved to loopback,
# as the container shares this machine's network) against a Mosquitto running
# deploy/compose/mosquitto.conf with certificates from deploy/compose/certs.sh
# on a free loopback port; a client with the ingest certificate must receive the
# telemetry; the image's HEALTHCHECK must pass; `podman stop` must end it with 0.
# Not part of scripts/test.sh: it installs a container engine and takes about
# 3 minutes on 2 cores (docs/deployment.md, "Docker").  Needs root.
#   scripts/image-check.sh [--no-deps]
set -euo pipefail
cd "$(dirname "$0")/.."
[ "$(id -u)" -eq 0 ] || { echo "image-check: needs root" >&2; exit 2; }
if [ "${1:-}" != --no-deps ]; then
    missing=()
    for p in podman runc mosquitto mosquitto-clients openssl debootstrap; do
        dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q 'install ok installed' || missing+=("$p")
    done
    if [ ${#missing[@]} -gt 0 ]; then
        apt-get update -q >/dev/null
        DEBIAN_FRONTEND=noninteractive apt-get install -y -q --no-install-recommends "${missing[@]}" >/dev/null
    fi
fi
work=$(mktemp -d /tmp/fb-image-check.XXXXXX)
# the sandboxes here allow neither podman's default rlimits nor crun in cgroup v1
# hybrid mode: runc, cgroupfs, file events, explicit limits
P=(podman --cgroup-manager=cgroupfs --events-backend=file --runtime runc)
LIM=(--ulimit "nofile=1024:1024" --ulimit "nproc=1000:1000")
cleanup() {
    "${P[@]}" rm -f fb-image-check >/dev/null 2>&1 || true
    [ -f "$work/mq.pid" ] && kill "$(cat "$work/mq.pid")" 2>/dev/null || true
    rm -rf "$work"
}
trap cleanup EXIT

root=${FB_DEBIAN_ROOT:-/tmp/fresh-debian.pristine}
if [ ! -x "$root/bin/bash" ]; then
    root=/var/cache/fieldbridge-test/bookworm-minbase
    if [ ! -x "$root/bin/bash" ]; then
        echo "image-check: debootstrap bookworm (minbase) into $root"
        # the mirror apt uses here (else debootstrap's default)
        mirror=$(cat /etc/apt/sources.list /etc/apt/sources.list.d/* 2>/dev/null | grep -v '^#' |
                 grep -o 'https\?://[^ ]*' | grep -v security | head -1 || true)
        debootstrap --variant=minbase bookworm "$root.tmp" ${mirror:+"$mirror"} >"$work/debootstrap.log" 2>&1
        mv "$root.tmp" "$root"
    fi
fi
ver=$(cat "$root/etc/debian_version")
base=localhost/debian-minbase:$ver
if ! "${P[@]}" image exists "$base"; then
    echo "image-check: importing $root as $base"
    tar -C "$root" -c . | "${P[@]}" import - "$base" >/dev/null
fi
echo "image-check: podman build (--format docker keeps HEALTHCHECK) FROM $base"
t0=$(date +%s)
"${P[@]}" build --format docker --pull=never --network=host "${LIM[@]}" --build-arg "BASE=$base" \
    -t localhost/fieldbridge:check -f Dockerfile . >"$work/build.log" 2>&1 || {
    tail -30 "$work/build.log"; echo "image-check: build failed" >&2; exit 1; }
echo "image-check: built in $(( $(date +%s) - t0 )) s; $("${P[@]}" images --format '{{.Size}}' localhost/fieldbridge:check) ($base: $("${P[@]}" images --format '{{.Size}}' "$base"))"

# the broker on a free loopback port; the image's HEALTHCHECK reads the metrics on 9100
# (the container shares this machine's network), so 9100 must be free
port=$(/usr/bin/python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])')
if /usr/bin/python3 -c 'import socket,sys; s=socket.socket(); sys.exit(s.connect_ex(("127.0.0.1", 9100)) != 0)'; then
    echo "image-check: 127.0.0.1:9100 is in use (the image's HEALTHCHECK port): stop that first" >&2; exit 1
fi
deploy/compose/certs.sh "$work/certs" >/dev/null
mkdir -p "$work/mq"
sed -e "s|^listener 8883\$|listener $port 127.0.0.1|" -e "s|/mosquitto/certs|$work/certs|" \
    -e "s|/mosquitto/data/|$work/mq/|" -e "s|log_dest stdout|log_dest file $work/mq/mosquitto.log|" \
    deploy/compose/mosquitto.conf >"$work/mosquitto.conf"
echo "user root" >>"$work/mosquitto.conf"
mosquitto -c "$work/mosquitto.conf" & echo $! >"$work/mq.pid"
sleep 1
sed -e 's|0.0.0.0:9100|127.0.0.1:9100|' -e "s|mqtts://mosquitto:8883|mqtts://mosquitto:$port|" deploy/compose/gateway.yaml >"$work/gateway.yaml"
"${P[@]}" run -d --name fb-image-check --network=host --add-host mosquitto:127.0.0.1 "${LIM[@]}" \
    -e FB_GATEWAY_ID=edge-01 -v "$work/gateway.yaml:/etc/fieldbridge/gateway.yaml:ro" \
    -v "$work/certs/ca.pem:/run/certs/ca.pem:ro" -v "$work/certs/edge-01.pem:/run/certs/edge-01.pem:ro" \
    -v "$work/certs/edge-01.key:/run/certs/edge-01.key:ro" \
    localhost/fieldbridge:check run -c /etc/fieldbridge/gateway.yaml >/dev/null 2>"$work/run.err"
msg=$(timeout 15 mosquitto_sub -h 127.0.0.1 -p "$port" --cafile "$work/certs/ca.pem" \
      --cert "$work/certs/ingest-1.pem" --key "$work/certs/ingest-1.key" \
      -t plant/assembly/01/press-01/telemetry -C 1) || {
    "${P[@]}" logs fb-image-check | tail -20; echo "image-check: no telemetry over mutual TLS" >&2; exit 1; }
echo "image-check: telemetry over mutual TLS: ${msg:0:120}…"
echo "image-check: user in the container: $("${P[@]}" exec fb-image-check id)"
"${P[@]}" healthcheck run fb-image-check 2>/dev/null && echo "image-check: HEALTHCHECK healthy" || {
    echo "image-check: HEALTHCHECK failed" >&2; exit 1; }
"${P[@]}" stop -t 20 fb-image-check >/dev/null 2>&1
rc=$("${P[@]}" inspect fb-image-check --format '{{.State.ExitCode}}')
[ "$rc" = 0 ] || { "${P[@]}" logs fb-image-check | tail; echo "image-check: exit $rc on stop" >&2; exit 1; }
echo "image-check: stopped with exit 0: $("${P[@]}" logs fb-image-check 2>&1 | grep -c 'stopped') 'stopped' line"
echo "image-check: OK"
