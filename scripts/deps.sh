#!/usr/bin/env bash
# deps.sh — install (apt) what fieldbridge needs on a fresh Debian 12, in two sets:
#   scripts/deps.sh demo   build + run the demo: compiler, CMake/Ninja, the libraries,
#                          Mosquitto and its clients, pymodbus for the demo's simulator
#   scripts/deps.sh test   (default) the demo set plus the test toolchain: cmocka, clang
#                          and libFuzzer, valgrind, the system tests' peers and tools,
#                          Node.js for the npm peers (scripts/peers.sh)
# scripts/demo.sh installs the demo set, scripts/test.sh the test set.  Only missing
# packages are installed, `apt-get update` runs only when something is missing, so a
# second run costs a second and needs no root.  Runs as root, or through sudo.
set -euo pipefail

set_name="${1:-test}"
DEMO=(
    # build (C only: gcc, not the whole build-essential)
    gcc libc6-dev cmake ninja-build pkg-config
    libmodbus-dev libmosquitto-dev libyaml-dev libjansson-dev libmicrohttpd-dev libssl-dev libsystemd-dev
    # remote configurations by URL: the headers (libcurl is loaded only when a download is asked for)
    libcurl4-openssl-dev
    protobuf-c-compiler libprotobuf-c-dev
    # Lua 5.4 for user scripts (src/edge/script.c)
    liblua5.4-dev
    libcurl4-openssl-dev zlib1g-dev  # the InfluxDB sink (HTTP, gzip)
    # kissfft (float) for the vibration analysis (src/vib/dsp.c)
    libkissfft-dev
    # the demo's broker, its mosquitto_sub/pub, and its Modbus simulator (pymodbus imports serial)
    mosquitto mosquitto-clients
    python3 python3-pymodbus python3-serial python3-serial-asyncio
)
TEST=(
    # g++ and make too (node-gyp compiles node-snap7)
    build-essential
    # unit tests, fuzz harnesses (libFuzzer runtime), memcheck, the clang -O3 build
    libcmocka-dev clang libclang-rt-14-dev valgrind
    # system-test peers and tools
    openssl socat mbpoll python3-pytest python3-paho-mqtt
    # test_hotpath counts the Modbus driver's system calls per request
    strace
    # the reference provisioning service (tests/peers/provision_service.py) signs CSRs
    python3-cryptography
    # the HTTP API's tests: responses checked against docs/openapi.yaml, the page in a real browser
    python3-jsonschema python3-yaml chromium
    # deployment: systemd-analyze verify of the unit; the Debian package built with
    # dpkg-buildpackage, checked by lintian, installed into a debootstrap root
    systemd debhelper lintian debootstrap
    # scripts/deb.sh and the image checks copy the files git tracks
    git
    # the container image and compose stack, checked offline: `docker-compose config` and
    # its Compose Specification schema; curl runs the image's HEALTHCHECK
    docker-compose curl
    influxdb influxdb-client  # InfluxDB 1.6: influx sink, ingest, dashboards
)

case "$set_name" in
    demo) PKGS=("${DEMO[@]}") ;;
    test)
        PKGS=("${DEMO[@]}" "${TEST[@]}")
        # Node.js runs the npm test peers (node-snap7 compiles snap7 against Node's
        # headers).  A machine that already has Node (e.g. from NodeSource) keeps it;
        # a fresh Debian 12 gets Debian's nodejs (18), npm and the headers in libnode-dev.
        if ! command -v node >/dev/null 2>&1 || ! command -v npm >/dev/null 2>&1; then
            PKGS+=(nodejs npm libnode-dev)
        fi ;;
    *) echo "usage: $0 [demo|test]" >&2; exit 2 ;;
esac

missing=()
for p in "${PKGS[@]}"; do
    if ! dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q 'install ok installed'; then
        missing+=("$p")
    fi
done

if [ ${#missing[@]} -eq 0 ]; then
    echo "deps: all ${#PKGS[@]} packages of the $set_name set present"
    exit 0
fi

echo "deps: installing the ${#missing[@]} missing packages of the $set_name set: ${missing[*]}"
SUDO=()
if [ "$(id -u)" -ne 0 ]; then
    if command -v sudo >/dev/null 2>&1; then
        SUDO=(sudo)
    else
        echo "deps: need root (or sudo) to install: ${missing[*]}" >&2
        exit 1
    fi
fi
export DEBIAN_FRONTEND=noninteractive
t0=$(date +%s)
log=$(mktemp /tmp/fieldbridge-deps.XXXXXX)
echo "deps: apt-get update"
"${SUDO[@]}" apt-get update -q >"$log" 2>&1 || {
    tail -30 "$log" >&2; echo "deps: apt-get update failed" >&2; exit 1; }
echo "deps: apt-get install (with their dependencies; on a bare Debian 12 about 1 minute for the demo set, 2 for the test set)"
"${SUDO[@]}" apt-get install -y -q --no-install-recommends -o DPkg::Lock::Timeout=300 "${missing[@]}" >"$log" 2>&1 || {
    tail -30 "$log" >&2; echo "deps: apt-get install failed (log: $log)" >&2; exit 1; }
grep -E '^[0-9]+ upgraded, [0-9]+ newly installed' "$log" | sed 's/^/deps: /' || true
# The Debian mosquitto package may start a system broker on 1883 (with systemd), and
# influxdb a server on 8086/8088; the tests and the demo run their own on free ports.
rm -f "$log"
echo "deps: done in $(( $(date +%s) - t0 )) s"
