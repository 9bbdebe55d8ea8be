#!/usr/bin/env bash
# poll_models.sh — thread per connection against an event loop, at 1 / 10 /
# 100 / 1000 Modbus TCP devices (issue 15), and fieldbridge itself beside them.
#
#   bench/poll_models.sh [--devices "1 10 100 1000"] [--period-ms 1000]
#                        [--duration 20] [--no-fieldbridge] [--no-build]
#
# One bench/mb_server_fast (epoll) with one port per device.  For each N:
# bench/poll_models --model threads, then epoll (bench/poll_models.c: the
# same framing, only the waiting differs), then fieldbridge polling the same
# N devices (100 int16 registers each, published at QoS 1 to a private
# Mosquitto): CPU per poll, context switches per poll, threads, RSS.
# Prints one JSON line per run and a Markdown table at the end.
set -euo pipefail
ROOT=$(cd "$(dirname "$0")/.." && pwd)
BUILD="${FB_BUILD:-$ROOT/build-bench}"
PY=/usr/bin/python3
DEVICES="1 10 100 1000"
PERIOD=1000
DURATION=20
FB=1
BUILD_IT=1
while [ $# -gt 0 ]; do
    case "$1" in
        --devices) DEVICES=$2; shift ;;
        --period-ms) PERIOD=$2; shift ;;
        --duration) DURATION=$2; shift ;;
        --no-fieldbridge) FB=0 ;;
        --no-build) BUILD_IT=0 ;;
        -h|--help) sed -n '2,/^set -euo/{/^set -euo/!p}' "$0"; exit 0 ;;
        *) echo "poll_models.sh: unknown argument '$1'" >&2; exit 2 ;;
    esac
    shift
done
if [ "$BUILD_IT" = 1 ]; then
    [ -f "$BUILD/build.ninja" ] || cmake -S "$ROOT" -B "$BUILD" -G Ninja -DCMAKE_BUILD_TYPE=Release >/dev/null
    ninja -C "$BUILD" fieldbridge mb_server_fast poll_models count_sub >/dev/null
fi
TMP=$(mktemp -d /tmp/fb-pm.XXXXXX)
PIDS=()
cleanup() {
    for p in "${PIDS[@]:-}"; do [ -n "$p" ] && kill "$p" 2>/dev/null || true; done
    for p in "${PIDS[@]:-}"; do [ -n "$p" ] && wait "$p" 2>/dev/null || true; done
    rm -rf "$TMP"
}
trap cleanup EXIT
CLK=$(getconf CLK_TCK)
ticks() { awk '{print $14 + $15}' "/proc/$1/stat" 2>/dev/null || echo 0; }
vcs() { # PID → voluntary context switches of all its threads
    local s=0 v t
    for t in /proc/"$1"/task/*; do
        v=$(awk '/^voluntary_ctxt_switches/ {print $2}' "$t/status" 2>/dev/null)
        s=$((s + ${v:-0}))
    done
    echo "$s"
}
OUT="$TMP/out.jsonl"
: > "$OUT"
for n in $DEVICES; do
    $PY -c '
import socket, sys
ss = [socket.socket() for _ in range(int(sys.argv[1]) + 1)]
for s in ss: s.bind(("127.0.0.1", 0))
print("\n".join(str(s.getsockname()[1]) for s in ss))' "$n" > "$TMP/all"
    MQ=$(tail -1 "$TMP/all")
    head -n "$n" "$TMP/all" > "$TMP/ports"
    args=(); while read -r p; do args+=(--port "$p"); done < "$TMP/ports"
    "$BUILD/mb_server_fast" "${args[@]}" --max-clients 8000 >/dev/null 2>&1 & SRV=$!; PIDS+=("$SRV")
    sleep 0.5
    for m in threads epoll; do
        echo "poll_models: $n devices, $m" >&2
        "$BUILD/poll_models" --model "$m" --devices "$n" --ports-file "$TMP/ports" --period-ms "$PERIOD" \
            --duration "$DURATION" >> "$OUT"
    done
    if [ "$FB" = 1 ]; then
        echo "poll_models: $n devices, fieldbridge" >&2
        printf 'listener %s 127.0.0.1\nallow_anonymous true\npersistence false\nmax_inflight_messages 1000\nmax_queued_messages 1000000\nlog_dest none\n' \
            "$MQ" > "$TMP/m.conf"
        mosquitto -c "$TMP/m.conf" 2>/dev/null & BR=$!; PIDS+=("$BR")
        sleep 0.3
        "$BUILD/count_sub" --port "$MQ" --topic '+/+/+/+/telemetry' --duration 900 > "$TMP/sub.json" 2>/dev/null &
        SUB=$!; PIDS+=("$SUB")
        {
            echo "gateway: {id: pm}"
            echo "log: {level: warn}"
            echo "mqtt: {url: \"mqtt://127.0.0.1:$MQ\"}"
            echo "devices:"
            i=0
            while read -r p; do
                i=$((i + 1))
                echo "  - name: d$i"
                echo "    url: \"modbus-tcp://127.0.0.1:$p?unit=1\""
                echo "    poll: ${PERIOD}ms"
                echo "    tags:"
                echo "      - for: {i: \"0..99\"}"
                echo "        name: \"r{i}\""
                echo "        addr: \"hr:{i}:int16\""
            done < "$TMP/ports"
        } > "$TMP/c.yaml"
        "$BUILD/fieldbridge" run -c "$TMP/c.yaml" 2> "$TMP/fb.log" & G=$!; PIDS+=("$G")
        sleep 3
        a=$(ticks "$G"); va=$(vcs "$G"); kill -USR1 "$SUB"; t0=$(date +%s%N)
        sleep "$DURATION"
        b=$(ticks "$G"); vb=$(vcs "$G"); kill -USR1 "$SUB"; t1=$(date +%s%N)
        rss=$(awk '/^VmRSS/ {print $2}' /proc/$G/status); thr=$(awk '/^Threads/ {print $2}' /proc/$G/status)
        kill -INT "$G"; wait "$G" 2>/dev/null || true
        sleep 0.3
        kill "$SUB" "$BR" 2>/dev/null; wait "$SUB" "$BR" 2>/dev/null || true
        $PY - "$TMP/sub.json" "$OUT" <<EOF
import json, sys
m = json.loads(open(sys.argv[1]).read().splitlines()[-1])["marks"]
w = ($t1 - $t0) / 1e9
polls = (m[1]["values"] - m[0]["values"]) / 100
cpu = ($b - $a) / $CLK
open(sys.argv[2], "a").write(json.dumps({"model": "fieldbridge", "devices": $n, "period_ms": $PERIOD,
    "polls_per_s": polls / w, "expected_per_s": $n * 1000 / $PERIOD, "cpu_pct": 100 * cpu / w,
    "cpu_us_per_poll": cpu * 1e6 / polls if polls else None, "vcsw_per_poll": ($vb - $va) / polls if polls else None,
    "threads": $thr, "rss_kb": $rss, "lat_p50_us": None, "lat_p99_us": None, "overruns": None}) + "\n")
EOF
    fi
    kill "$SRV"; wait "$SRV" 2>/dev/null || true
done
cat "$OUT"
$PY - "$OUT" <<'EOF'
import json, sys
print("\n| devices | model | polls/s (expected) | CPU % of a core | CPU µs/poll | voluntary switches/poll | threads | RSS MB "
      "| answer p50 / p99 ms |")
print("|---:|---|---|---:|---:|---:|---:|---:|---|")
for l in open(sys.argv[1]):
    r = json.loads(l)
    lat = "–" if r.get("lat_p50_us") is None else "%.2f / %.2f" % (r["lat_p50_us"] / 1e3, r["lat_p99_us"] / 1e3)
    print("| %d | %s | %.0f (%.0f) | %.2f | %s | %s | %d | %.1f | %s |" % (
        r["devices"], r["model"], r["polls_per_s"], r["expected_per_s"], r["cpu_pct"],
        "%.1f" % r["cpu_us_per_poll"] if r.get("cpu_us_per_poll") else "–",
        "%.2f" % r["vcsw_per_poll"] if r.get("vcsw_per_poll") is not None else "–", r["threads"],
        r["rss_kb"] / 1024, lat))
EOF
