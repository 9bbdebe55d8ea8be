#!/usr/bin/env bash
# deps.sh — install (apt) everything fieldbridge needs to build, test and run
# its demo on a fresh Debian 12.  Only missing packages are installed, and
# `apt-get update` runs at most once, so a second run costs a second and
# needs no root.  Runs as root, or through sudo when available.
set -euo pipefail

PKGS=(
    # build
    build-essential cmake ninja-build pkg-config
    libmodbus-dev libmosquitto-dev libyaml-dev libjansson-dev libmicrohttpd-dev libcmocka-dev libssl-dev
    protobuf-c-compiler libprotobuf-c-dev
    libcurl4-openssl-dev zlib1g-dev  # InfluxDB sink (HTTP, gzip)
    # fuzz harnesses (libFuzzer runtime) and memcheck
    clang libclang-rt-14-dev valgrind
    # test peers and tools
    mosquitto mosquitto-clients openssl socat mbpoll
    python3 python3-pytest python3-paho-mqtt python3-pymodbus python3-serial python3-serial-asyncio
    influxdb influxdb-client python3-yaml python3-jsonschema  # InfluxDB 1.6 for the influx sink, ingest and dashboard tests
)

# Node.js runs the npm test peers (node-snap7 compiles snap7 against Node's
# headers).  A machine that already has Node (e.g. from NodeSource) keeps it;
# a fresh Debian 12 gets Debian's nodejs, npm and the headers in libnode-dev.
if ! command -v node >/dev/null 2>&1 || ! command -v npm >/dev/null 2>&1; then
    PKGS+=(nodejs npm libnode-dev)
fi

missing=()
for p in "${PKGS[@]}"; do
    if ! dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q 'install ok installed'; then
        missing+=("$p")
    fi
done

if [ ${#missing[@]} -eq 0 ]; then
    echo "deps: all ${#PKGS[@]} packages present"
    exit 0
fi

echo "deps: installing missing packages: ${missing[*]}"
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
"${SUDO[@]}" apt-get update -q
"${SUDO[@]}" apt-get install -y -q --no-install-recommends "${missing[@]}"
# The Debian mosquitto package may start a system broker on 1883 (and the
# influxdb package a server on 8086/8088); the tests and the demo run their
# own on free ports, so leave them as the admin configured them.
echo "deps: done"
