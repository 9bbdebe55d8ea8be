#!/usr/bin/env bash
# bench_store_e2e.sh — store-and-forward through the real gateway: ingest into
# the buffer with the broker down, per sync policy, then the drain into a
# local Mosquitto at QoS 1 once the broker comes up (live data keeps flowing).
#
# Why end to end: bench/bench_store measures the store alone; this measures
# what a user sees — samples/s the gateway buffers (sim devices, pipeline,
# batch encoding, store, fdatasync), the gateway's CPU for it, bytes per
# buffered sample, and how fast the backlog leaves.  Numbers come from the
# gateway's own /metrics (fieldbridge_buffer_*, device requests, process CPU).
#
# Usage: bench/bench_store_e2e.sh [FB_BIN]   env: DEVS (20) TAGS (100)
#        POLL (10ms) SECS (10) SYNCS ("batch 100ms os")
set -euo pipefail
cd "$(dirname "$0")/.."
BIN="${1:-build/fieldbridge}"
DEVS="${DEVS:-20}" TAGS="${TAGS:-100}" POLL="${POLL:-10ms}" SECS="${SECS:-10}"
SYNCS="${SYNCS:-batch 100ms os}"
W="$(mktemp -d /tmp/fb-bench-sf-XXXXXX)"
port() { /usr/bin/python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])'; }
GW_PID="" MQ_PID=""
cleanup() {
    [ -n "$GW_PID" ] && kill "$GW_PID" 2>/dev/null && wait "$GW_PID" 2>/dev/null || true
    [ -n "$MQ_PID" ] && kill "$MQ_PID" 2>/dev/null && wait "$MQ_PID" 2>/dev/null || true
    rm -rf "$W"
}
trap cleanup EXIT
metric() { # name [labels] -> value (sum over series)
    curl -s "http://127.0.0.1:$MPORT/metrics" | awk -v n="$1" '$1 ~ "^"n"([{]|$)" {s += $2} END {printf "%.6f\n", s}'
}
now() { date +%s.%N; }

echo "store-and-forward end to end: $DEVS sim devices x $TAGS uint32 counters every $POLL, ${SECS}s per policy"
printf '%-8s %14s %12s %14s %12s %16s %14s\n' sync samples/s msgs/s "CPU %" "B/msg" "B/sample" "drain msg/s"
for SYNC in $SYNCS; do
    MQPORT=$(port) MPORT=$(port)
    rm -rf "$W/buf"
    {
        echo "gateway: {id: bench, site: bench}"
        echo "log: {level: warn}"
        echo "metrics: {listen: \"127.0.0.1:$MPORT\"}"
        echo "buffer: {path: $W/buf, max_size: 4GiB, sync: $SYNC}"
        echo "mqtt: {url: \"mqtt://127.0.0.1:$MQPORT\", reconnect: {min: 100ms, max: 200ms}, max_inflight: 1000}"
        echo "devices:"
        for ((d = 0; d < DEVS; d++)); do
            echo "  - name: d$d"
            echo "    url: sim://b$d"
            echo "    poll: $POLL"
            echo "    tags:"
            for ((t = 0; t < TAGS; t++)); do echo "      - {name: t$t, addr: \"counter:step=1\", type: uint32}"; done
        done
    } >"$W/gw.yaml"
    "$BIN" run -c "$W/gw.yaml" >"$W/gw-$SYNC.log" 2>&1 &
    GW_PID=$!
    for _ in $(seq 50); do curl -s "http://127.0.0.1:$MPORT/metrics" >/dev/null 2>&1 && break; sleep 0.1; done
    sleep 1
    t0=$(now) r0=$(metric fieldbridge_device_requests_total) c0=$(metric fieldbridge_process_cpu_seconds_total)
    n0=$(metric fieldbridge_buffer_records)
    sleep "$SECS"
    t1=$(now) r1=$(metric fieldbridge_device_requests_total) c1=$(metric fieldbridge_process_cpu_seconds_total)
    n1=$(metric fieldbridge_buffer_records) b1=$(metric fieldbridge_buffer_bytes)
    # drain: a broker on the port; the backlog plus live data leave at QoS 1
    printf 'listener %s 127.0.0.1\nallow_anonymous true\n' "$MQPORT" >"$W/mq.conf"
    [ "$(id -u)" = 0 ] && echo "user root" >>"$W/mq.conf"
    backlog=$(metric fieldbridge_buffer_records) a0=$(metric fieldbridge_buffer_acked_total)
    mosquitto -c "$W/mq.conf" >"$W/mq.log" 2>&1 &
    MQ_PID=$!
    d0=$(now)
    for _ in $(seq 1200); do
        left=$(metric fieldbridge_buffer_records)
        [ "${left%.*}" -le 1000 ] && break
        sleep 0.05
    done
    d1=$(now) a1=$(metric fieldbridge_buffer_acked_total)
    kill "$GW_PID"; wait "$GW_PID" 2>/dev/null || true; GW_PID=""
    kill "$MQ_PID"; wait "$MQ_PID" 2>/dev/null || true; MQ_PID=""
    awk -v t="$(echo "$t1 - $t0" | bc)" -v r="$(echo "$r1 - $r0" | bc)" -v c="$(echo "$c1 - $c0" | bc)" \
        -v n="$(echo "$n1 - $n0" | bc)" -v b="$b1" -v nn="$n1" -v tags="$TAGS" -v sync="$SYNC" \
        -v dt="$(echo "$d1 - $d0" | bc)" -v acked="$(echo "$a1 - $a0" | bc)" -v backlog="$backlog" \
        'BEGIN { printf "%-8s %14.0f %12.0f %14.0f %12.0f %16.1f %14.0f   (backlog %d msgs, %.2f s to <= 1000 left)\n",
                 sync, r * tags / t, n / t, 100 * c / t, b / nn, b / nn / tags, acked / dt, backlog, dt }'
done
