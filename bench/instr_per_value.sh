#!/usr/bin/env bash
# instr_per_value.sh — instructions the gateway executes per published value,
# counted by valgrind's callgrind (the same for the same binary and input on a
# busy or a quiet machine, unlike seconds), for before/after comparisons of
# the hot path when the machine is too noisy for timing.
#
#   bench/instr_per_value.sh BIN [BIN...]      e.g. build-bench/fieldbridge /tmp/old-fieldbridge
#
# Each binary runs `fieldbridge run` under callgrind for SECS seconds (default
# 8; FB_IPV_SECS) with one simulated device of 100 counter tags polled every
# 10 ms (FB_IPV_POLL; every value changes: no deadband filtering), publishing
# JSON at QoS 1 to a private Mosquitto on a free loopback port.  The poll is
# slow enough for the gateway to keep up under valgrind, so the work done per
# second is fixed and the count does not depend on the machine's load.  Values published =
# telemetry messages counted by a subscriber × 100.  Output: one line per
# binary: instructions, values, instructions per value.  Bounded: every
# process is stopped by PID.
set -euo pipefail
[ $# -ge 1 ] || { sed -n '2,16p' "$0"; exit 2; }
secs=${FB_IPV_SECS:-8}
tmp=$(mktemp -d)
trap 'kill $(cat "$tmp"/*.pid 2>/dev/null) 2>/dev/null || true; rm -rf "$tmp"' EXIT
port=$(/usr/bin/python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])')
printf 'listener %s 127.0.0.1\nallow_anonymous true\npersistence false\nuser root\n' "$port" > "$tmp/m.conf"
mosquitto -c "$tmp/m.conf" >/dev/null 2>&1 & echo $! > "$tmp/mosq.pid"
sleep 0.5
{
    echo 'gateway: {id: ipv, site: s}'
    echo "mqtt: {url: 'mqtt://127.0.0.1:$port'}"
    echo 'devices:'
    echo '  - name: d'
    echo '    url: sim://ipv'
    echo "    poll: ${FB_IPV_POLL:-10ms}"
    echo '    tags:'
    echo '      - {for: {i: "0..99"}, name: "c{i}", addr: "counter"}'
} > "$tmp/g.yaml"
for bin in "$@"; do
    "$bin" check -c "$tmp/g.yaml" >/dev/null
    mosquitto_sub -h 127.0.0.1 -p "$port" -t 's/+/+/d/telemetry' > "$tmp/sub.out" & echo $! > "$tmp/sub.pid"
    sleep 0.3
    valgrind --tool=callgrind --callgrind-out-file="$tmp/cg.out" "$bin" run -c "$tmp/g.yaml" \
        >"$tmp/gw.log" 2>&1 & echo $! > "$tmp/gw.pid"
    sleep "$secs"
    kill -INT "$(cat "$tmp/gw.pid")"
    wait "$(cat "$tmp/gw.pid")" 2>/dev/null || true
    rm -f "$tmp/gw.pid"
    sleep 0.3
    kill "$(cat "$tmp/sub.pid")" 2>/dev/null || true
    wait "$(cat "$tmp/sub.pid")" 2>/dev/null || true
    rm -f "$tmp/sub.pid"
    [ -n "${FB_IPV_KEEP:-}" ] && cp "$tmp/cg.out" "$FB_IPV_KEEP.$(basename "$bin")"
    ir=$(callgrind_annotate "$tmp/cg.out" 2>/dev/null | awk '/PROGRAM TOTALS/ && !n {gsub(",", "", $1); print $1; n = 1}')
    msgs=$(wc -l < "$tmp/sub.out")
    values=$((msgs * 100))
    if [ "$values" -gt 0 ]; then
        printf '%s: %s instructions, %s values, %s instructions/value\n' "$bin" "$ir" "$values" "$((ir / values))"
    else
        echo "$bin: no values delivered (see $tmp/gw.log)"; exit 1
    fi
done
