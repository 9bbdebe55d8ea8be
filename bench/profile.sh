#!/usr/bin/env bash
# profile.sh — the profiles BENCHMARKS.md quotes, reproducible with one command.
#
#   bench/profile.sh cpu [SECONDS]   throughput config (1 device, 100 int16
#                                    tags, poll 1us, every value at QoS 1):
#                                    perf stat (context switches, CPUs used),
#                                    perf record -g → report by DSO and symbol,
#                                    per-thread CPU from /proc/<pid>/task;
#                                    the same perf stat for e2e_minimal
#   bench/profile.sh mem             10 devices x 1000 tags at 1 s: VmRSS,
#                                    smaps_rollup (file-backed vs anonymous),
#                                    the largest mappings, and valgrind massif
#                                    (heap by allocation site) for 25 s
#
# Uses the Release tools in build-bench/ (FB_BUILD=...), a private Mosquitto
# and mb_server_fast on free 127.0.0.1 ports; output under $OUT
# (default /tmp/fb-profile); every process is stopped by its PID.
set -euo pipefail
ROOT=$(cd "$(dirname "$0")/.." && pwd)
BUILD="${FB_BUILD:-$ROOT/build-bench}"
PY=/usr/bin/python3
MODE=${1:-cpu}
SECS=${2:-5}
OUT=${OUT:-/tmp/fb-profile}
mkdir -p "$OUT"
PIDS=()
cleanup() { for p in "${PIDS[@]:-}"; do [ -n "$p" ] && kill "$p" 2>/dev/null || true; done; wait 2>/dev/null || true; }
trap cleanup EXIT
free_port() { $PY -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1]); s.close()'; }

MQ=$(free_port) MB=$(free_port)
printf 'listener %s 127.0.0.1\nallow_anonymous true\npersistence false\nmax_inflight_messages 1000\nmax_queued_messages 1000000\nset_tcp_nodelay true\n' \
    "$MQ" > "$OUT/mosquitto.conf"
mosquitto -c "$OUT/mosquitto.conf" 2>/dev/null & PIDS+=($!)
"$BUILD/mb_server_fast" --port "$MB" --max-clients 200 >/dev/null 2>&1 & PIDS+=($!)
sleep 0.5
# count_sub marks (SIGUSR1) around each perf stat give the delivered rate in that window
"$BUILD/count_sub" --port "$MQ" --topic '+/+/+/+/telemetry' --duration 600 >"$OUT/sub.json" 2>/dev/null & SUB=$!; PIDS+=($SUB)

config() { # FILE DEVICES TAGS POLL
    {
        echo "gateway: {id: bench}"
        echo "log: {level: warn}"
        echo "mqtt: {url: \"mqtt://127.0.0.1:$MQ\", max_inflight: 1000, queue: 1024}"
        echo "devices:"
        echo "  - for: {d: \"1..$2\"}"
        echo "    name: \"fb{d}\""
        echo "    url: \"modbus-tcp://127.0.0.1:$MB?unit={d}\""
        echo "    poll: $4"
        echo "    tags:"
        echo "      - for: {i: \"0..$(($3 - 1))\"}"
        echo "        name: \"r{i}\""
        echo "        addr: \"hr:{i}:int16\""
    } > "$1"
}
thread_ticks() { # PID → "tid comm ticks" per thread
    for t in /proc/"$1"/task/*; do
        local s; s=$(cat "$t/stat" 2>/dev/null) || continue
        local comm=${s#*(}; comm=${comm%%)*}
        set -- ${s##*) }
        echo "${t##*/} $comm $(( ${12} + ${13} ))"
    done
}

if [ "$MODE" = cpu ]; then
    config "$OUT/tp.yaml" 1 100 1us
    "$BUILD/fieldbridge" run -c "$OUT/tp.yaml" 2>"$OUT/fb.err" & FB=$!; PIDS+=($FB)
    sleep 2
    thread_ticks "$FB" > "$OUT/threads0"
    kill -USR1 "$SUB"
    perf stat -p "$FB" -e task-clock,context-switches,cpu-migrations -- sleep "$SECS" 2>&1 | tee "$OUT/perf-stat-fieldbridge.txt"
    kill -USR1 "$SUB"
    thread_ticks "$FB" > "$OUT/threads1"
    echo "per thread, % of one core over ${SECS}s:"
    join <(sort "$OUT/threads0") <(sort "$OUT/threads1") | \
        awk -v s="$SECS" -v hz="$(getconf CLK_TCK)" '{printf "  %-8s %-16s %5.1f%%\n", $1, $2, 100*($5-$3)/hz/s}'
    perf record -F 999 -g -o "$OUT/perf.data" -p "$FB" -- sleep "$SECS" 2>/dev/null
    perf report -i "$OUT/perf.data" --no-children --sort dso --stdio -g none 2>/dev/null | grep -v "^#" | grep "%" | head -8 || true
    perf report -i "$OUT/perf.data" --no-children --sort sym --stdio -g none 2>/dev/null | grep -v "^#" | grep "%" | head -25 || true
    kill -INT "$FB"; wait "$FB" 2>/dev/null || true
    "$BUILD/e2e_minimal" --mb-port "$MB" --mqtt-port "$MQ" --regs 100 --duration $((SECS + 3)) >/dev/null 2>&1 & E2E=$!; PIDS+=($E2E)
    sleep 2
    kill -USR1 "$SUB"
    perf stat -p "$E2E" -e task-clock,context-switches,cpu-migrations -- sleep "$SECS" 2>&1 | tee "$OUT/perf-stat-e2e.txt"
    kill -USR1 "$SUB"
    wait "$E2E" 2>/dev/null || true
    kill -TERM "$SUB"; wait "$SUB" 2>/dev/null || true
    $PY -c '
import json, sys
m = json.loads(open(sys.argv[1]).read().splitlines()[-1])["marks"]
for name, a, b in (("fieldbridge", m[0], m[1]), ("e2e_minimal", m[2], m[3])):
    v = (b["values"] - a["values"]) / (b["t"] - a["t"])
    print("%s during perf stat: %.0f values/s delivered = %.0f polls/s" % (name, v, v / 100))' "$OUT/sub.json"
elif [ "$MODE" = mem ]; then
    config "$OUT/fp.yaml" 10 1000 1s
    "$BUILD/fieldbridge" run -c "$OUT/fp.yaml" 2>"$OUT/fb.err" & FB=$!; PIDS+=($FB)
    sleep 5
    grep -E 'VmRSS|RssAnon|RssFile|VmHWM' /proc/"$FB"/status
    cat /proc/"$FB"/smaps_rollup | head -12
    echo "largest mappings (kB RSS):"
    pmap -x "$FB" | sort -k3 -n -r | head -12 || true
    kill -INT "$FB"; wait "$FB" 2>/dev/null || true
    rm -f "$OUT"/massif.out.*
    timeout -s INT 25 valgrind --tool=massif --massif-out-file="$OUT/massif.out.fb" \
        "$BUILD/fieldbridge" run -c "$OUT/fp.yaml" >/dev/null 2>&1 || true
    ms_print "$OUT/massif.out.fb" | sed -n '/^ *n *time/,$p' | grep -E '^[ ]*[0-9]+ |->' | tail -40 || true
else
    echo "usage: bench/profile.sh cpu [SECONDS] | mem" >&2
    exit 2
fi
