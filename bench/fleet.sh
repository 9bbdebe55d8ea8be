#!/usr/bin/env bash
# fleet.sh — a simulated fleet of N gateways against one Mosquitto (issue 20,
# "Scale"): start-up, memory, status traffic, reload and remote-configuration
# fan-out, shutdown.  bench/fleet_bench.py does the work; results go to
# bench/results/fleet-N-<UTC date>.json.
#   bench/fleet.sh [N]        N gateway processes (default 100; BENCHMARKS.md shows 1000)
# Needs: mosquitto, /usr/bin/python3 with paho-mqtt (scripts/deps.sh test), a build.
set -euo pipefail
ROOT=$(cd "$(dirname "$0")/.." && pwd)
N="${1:-100}"
BIN="${FB_BIN:-$ROOT/build/fieldbridge}"
[ -x "$BIN" ] || { echo "fleet.sh: no binary at $BIN (scripts/build.sh normal)" >&2; exit 1; }
mkdir -p "$ROOT/bench/results"
OUT="$ROOT/bench/results/fleet-$N-$(date -u +%Y%m%dT%H%M%SZ).json"
# every phase is bounded inside; the whole run is bounded here
timeout 900 /usr/bin/python3 "$ROOT/bench/fleet_bench.py" --bin "$BIN" --n "$N" --out "$OUT"
echo "fleet.sh: results in $OUT"
