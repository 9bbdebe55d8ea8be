#!/usr/bin/env bash
# scale.sh — fieldbridge at 1k / 10k / 100k / 1M tags (issue 15's scale table).
#
#   bench/scale.sh [--driver sim|modbus] [--sizes "1000 10000 100000 1000000"]
#                  [--window S] [--no-build]
#
# Every size is 1000 tags per device, polled every second, deadband 5 on
# every tag, published as telemetry JSON at QoS 1 to a private Mosquitto
# (with a subscriber counting the values, so the broker forwards them):
#   sim     "sine:amp=10,period=60s,phase=N" tags (the simulator: no I/O;
#           every device is its own connection, as sim devices are)
#   modbus  int16 holding registers from bench/mb_server_fast, every device
#           on its own port (its own connection); the register values change
#           every second (--tick 1000)
# For each size: `fieldbridge check` (wall time, CPU = user+system, peak
# RSS), then `fieldbridge run`: time from exec to the "started" log line,
# RSS and VmHWM (peak) after a warm-up, CPU over --window seconds, values/s
# at the subscriber.  Writes bench/results/scale-<driver>-<UTC date>.json and
# prints a Markdown table.  The 1-minute load average is recorded with every
# row: the machine may be shared.  Every process is stopped by its PID.
set -euo pipefail
ROOT=$(cd "$(dirname "$0")/.." && pwd)
BUILD="${FB_BUILD:-$ROOT/build-bench}"
PY=/usr/bin/python3
DRIVER=sim
SIZES="1000 10000 100000 1000000"
WINDOW=10
BUILD_IT=1
ARGS="$*"
while [ $# -gt 0 ]; do
    case "$1" in
        --driver) DRIVER=$2; shift ;;
        --sizes) SIZES=$2; shift ;;
        --window) WINDOW=$2; shift ;;
        --no-build) BUILD_IT=0 ;;
        -h|--help) sed -n '2,/^set -euo/{/^set -euo/!p}' "$0"; exit 0 ;;
        *) echo "scale.sh: unknown argument '$1'" >&2; exit 2 ;;
    esac
    shift
done
case "$DRIVER" in sim|modbus) ;; *) echo "scale.sh: --driver sim or modbus" >&2; exit 2 ;; esac
if [ "$BUILD_IT" = 1 ]; then
    [ -f "$BUILD/build.ninja" ] || cmake -S "$ROOT" -B "$BUILD" -G Ninja -DCMAKE_BUILD_TYPE=Release >/dev/null
    ninja -C "$BUILD" fieldbridge mb_server_fast count_sub >/dev/null
fi
TMP=$(mktemp -d /tmp/fb-scale.XXXXXX)
PIDS=()
cleanup() {
    for p in "${PIDS[@]:-}"; do [ -n "$p" ] && kill "$p" 2>/dev/null || true; done
    for p in "${PIDS[@]:-}"; do [ -n "$p" ] && wait "$p" 2>/dev/null || true; done
    rm -rf "$TMP"
}
trap cleanup EXIT
free_ports() {
    $PY -c '
import socket, sys
ss = [socket.socket() for _ in range(int(sys.argv[1]))]
for s in ss: s.bind(("127.0.0.1", 0))
print("\n".join(str(s.getsockname()[1]) for s in ss))
for s in ss: s.close()' "$1"
}
stat_field() { awk -v k="$2" '$1 == k":" {print $2}' "/proc/$1/status" 2>/dev/null || echo 0; }
ticks() { awk '{print $14 + $15}' "/proc/$1/stat" 2>/dev/null || echo 0; }
CLK=$(getconf CLK_TCK)
RECORDS="$TMP/records.jsonl"
: > "$RECORDS"

for n in $SIZES; do
    ndev=$(( (n + 999) / 1000 ))
    np=1
    [ "$DRIVER" = modbus ] && np=$((ndev + 1))
    mapfile -t P < <(free_ports "$np")
    MQ=${P[0]}
    printf 'listener %s 127.0.0.1\nallow_anonymous true\npersistence false\nmax_inflight_messages 1000\nmax_queued_messages 1000000\nlog_dest none\n' \
        "$MQ" > "$TMP/m.conf"
    mosquitto -c "$TMP/m.conf" 2>/dev/null & BROKER=$!; PIDS+=("$BROKER")
    SERVER=""
    if [ "$DRIVER" = modbus ]; then
        args=(); for p in "${P[@]:1}"; do args+=(--port "$p"); done
        "$BUILD/mb_server_fast" "${args[@]}" --max-clients 8000 --tick 1000 >/dev/null 2>&1 & SERVER=$!; PIDS+=("$SERVER")
    fi
    sleep 0.5
    {
        echo "gateway: {id: scale}"
        echo "log: {level: info}"
        echo "mqtt: {url: \"mqtt://127.0.0.1:$MQ\"}"
        echo "devices:"
        if [ "$DRIVER" = sim ]; then
            echo "  - for: {d: \"1..$ndev\"}"
            echo "    name: \"s{d}\""
            echo "    url: \"sim://s{d}\""
            echo "    poll: 1s"
            echo "    tags:"
            echo "      - for: {i: \"0..999\"}"
            echo "        name: \"t{i}\""
            echo "        addr: \"sine:amp=10,period=60s,phase={i}\""
            echo "        deadband: 5"
        else
            for d in $(seq "$ndev"); do
                echo "  - name: m$d"
                echo "    url: \"modbus-tcp://127.0.0.1:${P[$d]}?unit=1\""
                echo "    poll: 1s"
                echo "    tags:"
                echo "      - for: {i: \"0..999\"}"
                echo "        name: \"r{i}\""
                echo "        addr: \"hr:{i}:int16\""
                echo "        deadband: 5"
            done
        fi
    } > "$TMP/c.yaml"
    echo "scale: $n tags ($DRIVER)" >&2
    # check: wall, CPU, peak RSS
    /usr/bin/time -f "%e %U %S %M" -o "$TMP/check.time" "$BUILD/fieldbridge" check -c "$TMP/c.yaml" >/dev/null 2>&1
    read -r cw cu cs cm < "$TMP/check.time"
    "$BUILD/count_sub" --port "$MQ" --topic '+/+/+/+/telemetry' --duration 900 > "$TMP/sub.json" 2>/dev/null & SUB=$!; PIDS+=("$SUB")
    sleep 0.3
    t0=$(date +%s%N)
    "$BUILD/fieldbridge" run -c "$TMP/c.yaml" 2> "$TMP/fb.log" & FB=$!; PIDS+=("$FB")
    for _ in $(seq 6000); do grep -q "started:" "$TMP/fb.log" 2>/dev/null && break; sleep 0.01; done
    t1=$(date +%s%N)
    start_ticks=$(ticks "$FB")
    sleep 5
    a=$(ticks "$FB"); kill -USR1 "$SUB"; w0=$(date +%s%N)
    sleep "$WINDOW"
    b=$(ticks "$FB"); kill -USR1 "$SUB"; w1=$(date +%s%N)
    rss=$(stat_field "$FB" VmRSS); hwm=$(stat_field "$FB" VmHWM); thr=$(stat_field "$FB" Threads)
    kill -INT "$FB"; wait "$FB" 2>/dev/null || true
    sleep 0.3
    kill "$SUB" 2>/dev/null; wait "$SUB" 2>/dev/null || true
    kill "$BROKER" 2>/dev/null; wait "$BROKER" 2>/dev/null || true
    [ -n "$SERVER" ] && { kill "$SERVER" 2>/dev/null; wait "$SERVER" 2>/dev/null || true; }
    $PY - "$RECORDS" "$TMP/sub.json" <<EOF
import json, sys
try:
    m = json.loads(open(sys.argv[2]).read().splitlines()[-1])["marks"]
    vps = (m[1]["values"] - m[0]["values"]) / ((m[1]["t"] - m[0]["t"]) or 1)
except Exception:
    vps = None
win = ($w1 - $w0) / 1e9
rec = {"driver": "$DRIVER", "tags": $n, "devices": $ndev, "threads": int("$thr" or 0),
       "check_wall_s": float("$cw"), "check_cpu_s": round(float("$cu") + float("$cs"), 2),
       "check_peak_rss_kb": int("$cm"), "startup_wall_s": round(($t1 - $t0) / 1e9, 3),
       "startup_cpu_s": round($start_ticks / $CLK, 2), "rss_kb": int("$rss"), "hwm_kb": int("$hwm"),
       "peak_over_steady": round(int("$hwm") / max(1, int("$rss")), 3),
       "cpu_pct": round(100 * ($b - $a) / $CLK / win, 2), "values_per_s": vps,
       "loadavg_1m": float(open("/proc/loadavg").read().split()[0])}
open(sys.argv[1], "a").write(json.dumps(rec) + "\n")
EOF
done

STAMP=$(date -u +%Y%m%d-%H%M%S)
mkdir -p "$ROOT/bench/results"
OUT="$ROOT/bench/results/scale-$DRIVER-$STAMP.json"
$PY - "$RECORDS" "$OUT" "$ROOT" "bench/scale.sh $ARGS" <<'EOF'
import json, subprocess, sys, time
recs = [json.loads(l) for l in open(sys.argv[1]) if l.strip()]
commit = subprocess.run(["git", "-C", sys.argv[3], "rev-parse", "--short", "HEAD"], capture_output=True,
                        text=True).stdout.strip()
lines = ["| tags | devices (threads) | check: wall s / CPU s / peak RSS MB | start-up: wall s / CPU s "
         "| RSS steady MB | RSS peak MB | peak ÷ steady | CPU % of a core | values/s published | load avg |",
         "|---:|---:|---|---|---:|---:|---:|---:|---:|---:|"]
for r in recs:
    lines.append("| %s | %s (%s) | %.2f / %.2f / %.1f | %.2f / %.2f | %.1f | %.1f | %.2f | %.1f | %s | %.1f |" % (
        f"{r['tags']:,}", r["devices"], r["threads"], r["check_wall_s"], r["check_cpu_s"],
        r["check_peak_rss_kb"] / 1024, r["startup_wall_s"], r["startup_cpu_s"], r["rss_kb"] / 1024,
        r["hwm_kb"] / 1024, r["peak_over_steady"], r["cpu_pct"],
        f"{r['values_per_s']:,.0f}" if r["values_per_s"] is not None else "–", r["loadavg_1m"]))
doc = {"scenario": "scale", "date_utc": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()), "command": sys.argv[4],
       "git_commit": commit, "records": recs, "table_markdown": "\n".join(lines)}
json.dump(doc, open(sys.argv[2], "w"), indent=1)
print("\n".join(lines))
print(f"\nresults: {sys.argv[2]}")
EOF
