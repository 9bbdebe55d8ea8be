#!/usr/bin/env bash
# run.sh — fieldbridge benchmarks, side by side with their limits and peers, in one run.
#
#   bench/run.sh [throughput|footprint|scaling|latency|command|all] [--quick]
#                [--reps N] [--window S] [--warmup S] [--no-build] [--no-nodered]
#                [--baseline BIN] [--tools LIST]
#
# Everything runs on 127.0.0.1 on free ports chosen here: a private Mosquitto
# (temp config), bench/mb_server_fast (libmodbus, select over all clients),
# the tool under test, and bench/count_sub counting delivered values at the
# subscriber.  For every tool the harness samples /proc/<pid>/stat of the tool,
# the broker, the Modbus server and the subscriber at the start and end of one
# measurement window (after a warm-up), and signals count_sub (SIGUSR1) at the
# same two instants, so delivered values and CPU are counted over the same
# seconds.  RSS is VmRSS at the end of the window.  Every process is bounded
# in time and stopped by its PID.
#
# Scenarios:
#   throughput  the protocol limit (mb_bare_loop), Mosquitto's own ingest
#               limit (mosq_ingest: the same message, no Modbus), the floor
#               (bench/floor.c: one tuned single-threaded publisher, 8
#               PUBLISHes per send(), and floor_batch1: one per send()), the
#               libmosquitto loop (e2e_minimal), the Python peer, Node-RED
#               (bench/nodered) and fieldbridge, each polling 100 holding
#               registers as fast as possible over one connection and
#               publishing every value as telemetry JSON at QoS 1; repeated
#               --reps times in rotation, medians reported.
#   footprint   fieldbridge RSS and CPU with 1k / 10k (/ 100k, not in --quick)
#               tags at 1 s polling (1000 tags per device, every value
#               published), Node-RED at 1k and 10k the same way; idle CPU
#               with 1000 tags at 1 s and a deadband that filters everything;
#               binary size; start-up to first publish.
#   scaling     fieldbridge as fast as possible at 1k / 10k / 100k registers
#               over 10 / 100 / 100 devices, each device on its own
#               connection (mb_server_fast listening on one port per device):
#               values/s, CPU per value, RSS per tag; and plant scale, 100
#               devices x 1000 tags at 1 s with deadband reporting (the
#               server changes every register every second, deadband 5: about
#               one value in five published) and without (every value).
#   latency     mb_server_fast --tick changes every register every 1.3× the
#               poll period; count_sub joins the arrival of each new value of
#               r0 with the server's change log: p50/p99/max at 10 ms and
#               100 ms polls.
#   command     bench/cmd_rtt: MQTT command → Modbus write → response,
#               one at a time, p50/p99; the register is read back at the end.
#
# --baseline BIN measures a second fieldbridge binary (e.g. one built from an
# earlier commit) beside this one in the same rotation, as "fieldbridge_baseline"
# (throughput) and "fieldbridge_baseline_<n>_tags" (footprint): a before/after
# comparison under the same machine load.
# --tools LIST (comma-separated) limits the throughput scenario to those tools,
# e.g. --tools floor,python_pipeline,fieldbridge for a quick before/after.
#
# Results: bench/results/<scenario>-<UTC date>.json and a table on stdout.
# bench/quick.sh runs all scenarios briefly (a CI smoke run, no timing
# assertions).  The exit status is non-zero if any tool crashed, exited with
# an error, or delivered nothing where values were expected.
# Node-RED (npm ci into bench/nodered/node_modules on first use) is skipped
# with --quick or --no-nodered.  Charts (gnuplot, bench/plot.py) are written
# to bench/results/*.png after full runs.
set -euo pipefail

ORIG_ARGS="$*"
ROOT=$(cd "$(dirname "$0")/.." && pwd)
BENCH="$ROOT/bench"
BUILD="${FB_BUILD:-$ROOT/build-bench}"
PY=/usr/bin/python3
SCENARIO=throughput
QUICK=0
REPS=""
WINDOW=""
WARMUP=""
BUILD_IT=1
NODERED=1
BASELINE=""
TOOLS_ONLY=""
while [ $# -gt 0 ]; do
    case "$1" in
        throughput|footprint|scaling|latency|command|all) SCENARIO=$1 ;;
        --quick) QUICK=1 ;;
        --reps) REPS=$2; shift ;;
        --window) WINDOW=$2; shift ;;
        --warmup) WARMUP=$2; shift ;;
        --no-build) BUILD_IT=0 ;;
        --no-nodered) NODERED=0 ;;
        --baseline) BASELINE=$(readlink -f "$2"); shift
                    [ -x "$BASELINE" ] || { echo "run.sh: --baseline $BASELINE is not an executable" >&2; exit 2; } ;;
        --tools) TOOLS_ONLY=",$2,"; shift ;;
        -h|--help) sed -n '2,/^set -euo/{/^set -euo/!p}' "$0"; exit 0 ;;
        *) echo "run.sh: unknown argument '$1'" >&2; exit 2 ;;
    esac
    shift
done
if [ "$QUICK" = 1 ]; then
    NODERED=0
    : "${REPS:=1}" "${WINDOW:=1.5}" "${WARMUP:=0.5}"
else
    : "${REPS:=3}" "${WINDOW:=5}" "${WARMUP:=1}"
fi

# ---- dependencies and build -------------------------------------------------
need_deps=0
for c in mosquitto cmake ninja; do command -v "$c" >/dev/null 2>&1 || need_deps=1; done
$PY -c 'import pymodbus, paho.mqtt' 2>/dev/null || need_deps=1
if [ "$need_deps" = 1 ]; then
    echo "run.sh: installing missing dependencies (scripts/deps.sh)" >&2
    "$ROOT/scripts/deps.sh"
fi
TOOLS="fieldbridge mb_server_fast mb_bare_loop e2e_minimal floor count_sub cmd_rtt mosq_ingest"
if [ "$BUILD_IT" = 1 ]; then
    # Release (-O3), as users build it (warnings are not errors there; scripts/test.sh
    # builds Release with -DFB_WERROR=ON to keep it warning-free)
    [ -f "$BUILD/build.ninja" ] || cmake -S "$ROOT" -B "$BUILD" -G Ninja -DCMAKE_BUILD_TYPE=Release >/dev/null
    # shellcheck disable=SC2086
    ninja -C "$BUILD" $TOOLS >/dev/null
fi
for t in $TOOLS; do [ -x "$BUILD/$t" ] || { echo "run.sh: $BUILD/$t missing" >&2; exit 1; }; done
# gnuplot for the charts (full runs only; Debian's gnuplot-nox, no X)
if [ "$QUICK" = 0 ] && ! command -v gnuplot >/dev/null 2>&1; then
    echo "run.sh: installing gnuplot-nox for the charts" >&2
    SUDO=(); [ "$(id -u)" = 0 ] || SUDO=(sudo)
    "${SUDO[@]}" apt-get install -y -q --no-install-recommends gnuplot-nox >/dev/null || \
        echo "run.sh: gnuplot-nox not installed: no charts" >&2
fi
# Node-RED peer: exact versions from bench/nodered/package-lock.json
NR_DIR="$BENCH/nodered"
if [ "$NODERED" = 1 ] && [ ! -f "$NR_DIR/node_modules/node-red/red.js" ]; then
    if command -v npm >/dev/null 2>&1; then
        echo "run.sh: npm ci in bench/nodered (node-red 4.1.15, node-red-contrib-modbus 5.23.3)" >&2
        (cd "$NR_DIR" && npm ci --no-audit --no-fund --loglevel=error) >&2 || NODERED=0
    else
        NODERED=0
    fi
    [ "$NODERED" = 1 ] || echo "run.sh: Node-RED unavailable (no npm?): skipped" >&2
fi

TMP=$(mktemp -d /tmp/fb-bench.XXXXXX)
RECORDS="$TMP/records.jsonl"
: > "$RECORDS"
FAILURES="$TMP/failures"
: > "$FAILURES"
PIDS=()
cleanup() {
    for p in "${PIDS[@]:-}"; do
        [ -n "$p" ] && kill "$p" 2>/dev/null || true
    done
    for p in "${PIDS[@]:-}"; do
        [ -n "$p" ] && wait "$p" 2>/dev/null || true
    done
    local nf=0
    [ -f "$FAILURES" ] && nf=$(wc -l < "$FAILURES")
    if [ "$nf" -gt 0 ]; then
        echo "run.sh: $nf failure(s):" >&2
        cat "$FAILURES" >&2
    fi
    rm -rf "$TMP"
}
trap cleanup EXIT
trap 'exit 130' INT TERM

CLK_TCK=$(getconf CLK_TCK)
want() { [ -z "$TOOLS_ONLY" ] || [[ "$TOOLS_ONLY" == *",$1,"* ]]; } # NAME: measure this tool?

free_port() {
    $PY -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1]); s.close()'
}
wait_port() { # PORT — bounded: 5 s
    for _ in $(seq 100); do
        if $PY -c "import socket,sys; s=socket.socket(); s.settimeout(0.2); sys.exit(s.connect_ex(('127.0.0.1',$1)))" 2>/dev/null; then
            return 0
        fi
        sleep 0.05
    done
    echo "run.sh: nothing listens on port $1" >&2
    return 1
}
wait_file() { # FILE — bounded: 5 s
    for _ in $(seq 100); do [ -e "$1" ] && return 0; sleep 0.05; done
    echo "run.sh: timeout waiting for $1" >&2
    return 1
}
ticks() { # PID → utime+stime in clock ticks ("None" if gone: its CPU is unknown, not 0)
    local s
    s=$(cat "/proc/$1/stat" 2>/dev/null) || { echo None; return; }
    s=${s##*) }
    # after "(comm) ": state is field 3 → utime is word 12, stime word 13
    set -- $s
    echo $(( ${12} + ${13} ))
}
rss_kb() { awk '/^VmRSS:/ {print $2}' "/proc/$1/status" 2>/dev/null || echo 0; }
hwm_kb() { awk '/^VmHWM:/ {print $2}' "/proc/$1/status" 2>/dev/null || echo 0; }
now_ns() { date +%s%N; }
stop_pid() { # PID [SIGNAL] — signal, wait ≤ 10 s, then KILL
    local pid=$1 sig=${2:-TERM}
    kill -"$sig" "$pid" 2>/dev/null || return 0
    for _ in $(seq 200); do kill -0 "$pid" 2>/dev/null || break; sleep 0.05; done
    kill -KILL "$pid" 2>/dev/null || true
    wait "$pid" 2>/dev/null || true
}

start_broker() {
    MQ_PORT=$(free_port)
    cat > "$TMP/mosquitto.conf" <<EOF
listener $MQ_PORT 127.0.0.1
allow_anonymous true
persistence false
# same limits for every client under test: 1000 in flight, a deep queue so
# QoS 1 is never dropped by the broker in a measurement
max_inflight_messages 1000
max_queued_messages 1000000
log_dest stderr
log_type error
log_type warning
# Nagle off on the broker's sockets (as docs/mqtt.md recommends for command
# latency); the command scenario also runs once with Mosquitto's default
${BROKER_NODELAY-set_tcp_nodelay true}
${BROKER_EXTRA:-}
EOF
    mosquitto -c "$TMP/mosquitto.conf" 2>>"$TMP/mosquitto.log" &
    BROKER_PID=$!
    PIDS+=("$BROKER_PID")
    wait_port "$MQ_PORT"
}
free_ports() { # N → N distinct free ports, one per line (all bound at once, then released)
    $PY -c '
import socket, sys
ss = []
for _ in range(int(sys.argv[1])):
    s = socket.socket(); s.bind(("127.0.0.1", 0)); ss.append(s)
print("\n".join(str(s.getsockname()[1]) for s in ss))
for s in ss: s.close()' "$1"
}
start_server() { # extra args for mb_server_fast; $NPORTS (default 1) listening ports → MB_PORTS
    local args=() p
    mapfile -t MB_PORTS < <(free_ports "${NPORTS:-1}")
    MB_PORT=${MB_PORTS[0]}
    for p in "${MB_PORTS[@]}"; do args+=(--port "$p"); done
    "$BUILD/mb_server_fast" "${args[@]}" --max-clients 400 "$@" >/dev/null 2>>"$TMP/server.log" &
    SERVER_PID=$!
    PIDS+=("$SERVER_PID")
    for p in "${MB_PORTS[@]}"; do wait_port "$p"; done
}
stop_peers() {
    stop_pid "$SERVER_PID"
    stop_pid "$BROKER_PID"
}

start_sub() { # NAME — extra count_sub options in $SUB_EXTRA
    local name=$1
    rm -f "$TMP/$name.ready"
    # shellcheck disable=SC2086
    "$BUILD/count_sub" --port "$MQ_PORT" --topic '+/+/+/+/telemetry' --duration 900 \
        --ready-file "$TMP/$name.ready" ${SUB_EXTRA:-} > "$TMP/$name.sub.json" 2>>"$TMP/sub.log" &
    SUB_PID=$!
    PIDS+=("$SUB_PID")
    wait_file "$TMP/$name.ready"
}

# gen_config FILE DEVICES TAGS_PER_DEVICE POLL TYPE [DEADBAND] [EXTRA_TAG_YAML]
gen_device_body() { # uses gen_config's locals
    echo "    poll: $poll"
    echo "    tags:"
    echo "      - for: {i: \"0..$((ntags - 1))\"}"
    echo "        name: \"r{i}\""
    echo "        addr: \"hr:{i}:$type\""
    [ -n "$deadband" ] && echo "        deadband: $deadband"
    [ -n "$extra" ] && printf '%s\n' "$extra"
    true
}
gen_config() {
    local file=$1 ndev=$2 ntags=$3 poll=$4 type=$5 deadband=${6:-} extra=${7:-}
    {
        echo "# generated by bench/run.sh"
        echo "gateway: {id: bench}"
        echo "log: {level: warn}"
        echo "status_interval: 60s"
        echo "mqtt: {url: \"mqtt://127.0.0.1:$MQ_PORT\", max_inflight: 1000, queue: 1024}"
        echo "devices:"
        # PER_DEVICE_PORT=1: device d on its own port (its own connection in
        # the gateway, like separate devices on a plant network); otherwise
        # all devices are unit ids behind one port (one shared connection).
        local d from to
        if [ "${PER_DEVICE_PORT:-0}" = 1 ]; then
            for d in $(seq "$ndev"); do
                echo "  - name: fb$d"
                echo "    url: \"modbus-tcp://127.0.0.1:${MB_PORTS[$(( (d - 1) % ${#MB_PORTS[@]} ))]}?unit=$d\""
                gen_device_body
            done
        else
            if [ "$ndev" -gt 1 ]; then
                echo "  - for: {d: \"1..$ndev\"}"
                echo "    name: \"fb{d}\""
                echo "    url: \"modbus-tcp://127.0.0.1:$MB_PORT?unit={d}\""
            else
                echo "  - name: fb"
                echo "    url: \"modbus-tcp://127.0.0.1:$MB_PORT?unit=1\""
            fi
            gen_device_body
        fi
        true
    } > "$file"
    "$BUILD/fieldbridge" check -c "$file" >/dev/null
}

# measure NAME KIND CMD... — run CMD (which must outlive warm-up + window, or
# be a gateway stopped here with SIGINT), sample CPU/RSS over the window.
# KIND: "sub" (values counted at count_sub), "self" (the tool reports values).
measure() {
    local name=$1 kind=$2; shift 2
    [ "$kind" = sub ] && start_sub "$name"
    local t_launch; t_launch=$(now_ns)
    "$@" > "$TMP/$name.out.json" 2> "$TMP/$name.err" &
    local pid=$!
    PIDS+=("$pid")
    sleep "${MEASURE_WARMUP:-$WARMUP}"
    local a0 b0 s0 c0 t0 a1 b1 s1 c1 t1 rss hwm
    local m0 m1
    m0=$(awk '/^cpu / {print $2+$3+$4+$7+$8}' /proc/stat)
    t0=$(now_ns); a0=$(ticks "$pid"); b0=$(ticks "$BROKER_PID"); s0=$(ticks "$SERVER_PID")
    [ "$kind" = sub ] && { c0=$(ticks "$SUB_PID"); kill -USR1 "$SUB_PID"; }
    sleep "$WINDOW"
    m1=$(awk '/^cpu / {print $2+$3+$4+$7+$8}' /proc/stat)
    t1=$(now_ns); a1=$(ticks "$pid"); b1=$(ticks "$BROKER_PID"); s1=$(ticks "$SERVER_PID")
    [ "$kind" = sub ] && { c1=$(ticks "$SUB_PID"); kill -USR1 "$SUB_PID"; }
    rss=$(rss_kb "$pid"); hwm=$(hwm_kb "$pid")
    local alive=1
    kill -0 "$pid" 2>/dev/null || alive=0
    if [ "${STOP_WITH_SIGINT:-0}" = 1 ]; then
        stop_pid "$pid" INT
    else
        # a self-timed tool: wait for it, bounded (it has its own --duration)
        for _ in $(seq 600); do kill -0 "$pid" 2>/dev/null || break; sleep 0.05; done
        stop_pid "$pid" TERM
    fi
    local rc=0
    wait "$pid" 2>/dev/null || rc=$?
    if [ "$kind" = sub ]; then
        sleep 0.3
        stop_pid "$SUB_PID" TERM
    fi
    $PY - "$RECORDS" <<EOF
import json, sys
def load(p):
    try:
        with open(p) as f:
            lines = [l for l in f.read().splitlines() if l.startswith("{")]
        return json.loads(lines[-1]) if lines else {}
    except Exception as e:
        return {"error": str(e)}
win = ($t1 - $t0) / 1e9
tck = float($CLK_TCK)
def pct(x0, x1):
    """CPU % of one core over the window; None when the process was gone at
    either end (unknown — never a made-up or negative figure)."""
    if x0 is None or x1 is None or x1 < x0:
        return None
    return round(100 * (x1 - x0) / tck / win, 1)
rec = {"name": "$name", "kind": "$kind", "window_s": round(win, 3),
       "cpu_pct": pct($a0, $a1),
       "broker_cpu_pct": pct($b0, $b1),
       "server_cpu_pct": pct($s0, $s1),
       "machine_busy_pct": round(100 * ($m1 - $m0) / tck / win, 1),
       "rss_kb": int("$rss" or 0), "hwm_kb": int("$hwm" or 0),
       "alive_at_end_of_window": $alive == 1, "exit_code": $rc,
       "launch_unix_ns": $t_launch,
       "tool": load("$TMP/$name.out.json"), "scenario": "${CUR_SCENARIO:-}",
       "config": "${CUR_CONFIG:-}", "rep": ${CUR_REP:-0},
       "loadavg_1m_end": float(open("/proc/loadavg").read().split()[0])}
if "$kind" == "sub":
    sub = load("$TMP/$name.sub.json")
    sub.pop("per_second", None)
    rec["sub"] = sub
    rec["sub_cpu_pct"] = pct(${c0:-None}, ${c1:-None})
    w = sub.get("window") or {}
    rec["values_per_s"] = w.get("values_per_s", 0.0)
    if sub.get("first_msg_unix_ns"):
        rec["startup_to_first_msg_ms"] = round((sub["first_msg_unix_ns"] - $t_launch) / 1e6, 1)
else:
    rec["values_per_s"] = rec["tool"].get("values_per_s", 0.0)
v = rec["values_per_s"]
rec["cpu_us_per_value"] = round(rec["cpu_pct"] / 100 * 1e6 / v, 4) if v and rec["cpu_pct"] is not None else None
if rec["cpu_pct"] is None:
    print(f"run.sh: $name was gone at the end of its {win:.1f} s window: its CPU is not known", file=sys.stderr)
with open(sys.argv[1], "a") as f:
    f.write(json.dumps(rec) + "\n")
EOF
    # a gateway stopped with SIGINT may exit 130 (Node-RED does); others must exit 0
    if [ "${STOP_WITH_SIGINT:-0}" = 1 ] && [ "$rc" = 130 ]; then rc=0; fi
    if [ "$rc" -ne 0 ] || { [ "${STOP_WITH_SIGINT:-0}" = 1 ] && [ "$alive" = 0 ]; }; then
        echo "run.sh: $name exited early or with status $rc:" >&2
        tail -5 "$TMP/$name.err" >&2
        echo "$name (${CUR_SCENARIO:-}): exited early or with status $rc" >> "$FAILURES"
    fi
    if [ "${EXPECT_VALUES:-1}" = 1 ] && ! $PY -c '
import json, sys
r = json.loads(open(sys.argv[1]).read().splitlines()[-1])
sys.exit(0 if (r.get("values_per_s") or 0) > 0 else 1)' "$RECORDS"; then
        echo "run.sh: $name delivered no values" >&2
        echo "$name (${CUR_SCENARIO:-}): delivered no values" >> "$FAILURES"
    fi
}

# nodered_cmd MODE DEVICES TAGS [QUEUE] — the command line of the Node-RED peer
# (bench/nodered: settings.js + flow.json; user dir in $TMP).  MODE fast: one
# read loop as fast as answers come, the client's command queue off (the
# fastest setting); periodic: every device's TAGS read each second in
# requests of <= 125 registers, the queue on (the node's default).
nodered_cmd() {
    local mode=$1 ndev=$2 ntags=$3 queue=${4:-false}
    local ud="$TMP/nodered-$mode-$ndev-$ntags"
    mkdir -p "$ud"
    echo '{"name":"nr-bench-userdir","version":"0.0.0"}' > "$ud/package.json"
    $PY - "$NR_DIR/flow.json" "$ud/flow.json" "$queue" <<'EOF'
import json, sys
flow = json.load(open(sys.argv[1]))
for n in flow:
    if n.get("type") == "modbus-client":
        n["bufferCommands"] = sys.argv[3] == "true"
json.dump(flow, open(sys.argv[2], "w"))
EOF
    NR_CMD=(env MB_PORT="$MB_PORT" MQ_PORT="$MQ_PORT" NR_MODE="$mode" NR_DEVICES="$ndev" NR_TAGS="$ntags"
            NR_UI_PORT="$(free_port)" NR_FLOW_FILE="$ud/flow.json"
            node "$NR_DIR/node_modules/node-red/red.js" -s "$NR_DIR/settings.js" -u "$ud")
}

# ---- scenarios --------------------------------------------------------------
scenario_throughput() {
    CUR_SCENARIO=throughput
    start_broker
    start_server
    # self-timed tools must outlive the window: the harness's own sampling between
    # warm-up and window takes a while on a loaded machine (a tool that had ended
    # was once read as 0 CPU ticks: a negative CPU figure)
    local dur; dur=$($PY -c "print($WARMUP + $WINDOW + 2)")
    gen_config "$TMP/tp.yaml" 1 100 1us int16
    for rep in $(seq "$REPS"); do
        CUR_REP=$rep
        echo "throughput: rep $rep/$REPS" >&2
        CUR_CONFIG="1 connection, read 100 registers per request, as fast as possible"
        want bare_loop && measure bare_loop self "$BUILD/mb_bare_loop" --port "$MB_PORT" --regs 100 --duration "$dur"
        CUR_CONFIG="the same 100-value telemetry JSON (2.6 kB) published at QoS 1, no Modbus, <= 1000 in flight"
        want mosq_ingest && measure mosq_ingest sub "$BUILD/mosq_ingest" --port "$MQ_PORT" --regs 100 --duration "$dur" \
            --topic site/_/_/ingest/telemetry
        CUR_CONFIG="1 connection, read 100 registers per request, as fast as possible"
        want floor && measure floor sub "$BUILD/floor" --mb-port "$MB_PORT" --mqtt-port "$MQ_PORT" \
            --regs 100 --duration "$dur" --topic site/_/_/floor/telemetry
        want floor_batch1 && measure floor_batch1 sub "$BUILD/floor" --mb-port "$MB_PORT" --mqtt-port "$MQ_PORT" \
            --regs 100 --duration "$dur" --batch 1 --topic site/_/_/floor1/telemetry
        want e2e_minimal && measure e2e_minimal sub "$BUILD/e2e_minimal" --mb-port "$MB_PORT" --mqtt-port "$MQ_PORT" \
            --regs 100 --duration "$dur" --topic site/_/_/e2e/telemetry
        want python_pipeline && measure python_pipeline sub "$PY" "$BENCH/python_pipeline.py" --mb-port "$MB_PORT" \
            --mqtt-port "$MQ_PORT" --regs 100 --duration "$dur" --topic site/_/_/python/telemetry
        CUR_CONFIG="1 device, 100 int16 tags hr:0..99, poll 1us, no deadband"
        want fieldbridge && STOP_WITH_SIGINT=1 measure fieldbridge sub "$BUILD/fieldbridge" run -c "$TMP/tp.yaml"
        if [ -n "$BASELINE" ] && want fieldbridge_baseline; then
            STOP_WITH_SIGINT=1 measure fieldbridge_baseline sub "$BASELINE" run -c "$TMP/tp.yaml"
        fi
        if [ "$NODERED" = 1 ] && want nodered; then
            # Node-RED starts in ~2 s and its flow 1.5 s later: a longer warm-up
            nodered_cmd fast 1 100 false
            CUR_CONFIG="flex-getter loop, 100 registers per read, command queue off, mqtt out QoS 1"
            STOP_WITH_SIGINT=1 MEASURE_WARMUP=6 measure nodered sub "${NR_CMD[@]}"
            # the same flow with the client node's defaults (command queue on)
            nodered_cmd fast 1 100 true
            CUR_CONFIG="flex-getter loop, 100 registers per read, command queue on (node default), mqtt out QoS 1"
            STOP_WITH_SIGINT=1 MEASURE_WARMUP=6 measure nodered_queue sub "${NR_CMD[@]}"
        fi
        CUR_CONFIG="1 connection, read 100 registers per request, as fast as possible"
        # 4 devices on 4 connections: how far the gateway goes when it may use both cores
        if [ "$QUICK" = 0 ]; then
            gen_config "$TMP/tp4.yaml" 4 100 1us int16
            CUR_CONFIG="4 devices (4 connections), 100 int16 tags each, poll 1us, no deadband"
            want fieldbridge_4dev && STOP_WITH_SIGINT=1 measure fieldbridge_4dev sub "$BUILD/fieldbridge" run -c "$TMP/tp4.yaml"
            CUR_CONFIG="4 connections, read 100 registers per request, as fast as possible"
            want bare_loop_4conn && measure bare_loop_4conn self "$BUILD/mb_bare_loop" --port "$MB_PORT" --regs 100 \
                --duration "$dur" --conns 4
        fi
    done
    stop_peers
}

scenario_footprint() {
    CUR_SCENARIO=footprint
    start_broker
    start_server
    local sizes="1000 10000"
    [ "$QUICK" = 0 ] && sizes="1000 10000 100000"
    local saved_w=$WINDOW saved_u=$WARMUP
    if [ "$QUICK" = 0 ]; then WINDOW=10; WARMUP=3; else WINDOW=2; WARMUP=1; fi
    for n in $sizes; do
        local ndev=$((n / 1000))
        gen_config "$TMP/fp$n.yaml" "$ndev" 1000 1s int16
        CUR_CONFIG="$ndev device(s) x 1000 int16 tags, poll 1s, every value published"
        CUR_REP=1
        echo "footprint: $n tags" >&2
        STOP_WITH_SIGINT=1 measure "fieldbridge_${n}_tags" sub "$BUILD/fieldbridge" run -c "$TMP/fp$n.yaml"
        if [ -n "$BASELINE" ]; then
            STOP_WITH_SIGINT=1 measure "fieldbridge_baseline_${n}_tags" sub "$BASELINE" run -c "$TMP/fp$n.yaml"
        fi
        if [ "$NODERED" = 1 ] && [ "$n" -le 10000 ]; then
            echo "footprint: Node-RED $n tags" >&2
            nodered_cmd periodic "$ndev" 1000 true
            CUR_CONFIG="Node-RED: $ndev unit id(s) x 1000 registers read every 1 s (125 per request), every value published"
            STOP_WITH_SIGINT=1 MEASURE_WARMUP=8 measure "nodered_${n}_tags" sub "${NR_CMD[@]}"
        fi
    done
    gen_config "$TMP/idle.yaml" 1 1000 1s int16 1000
    CUR_CONFIG="1 device x 1000 int16 tags, poll 1s, deadband 1000 (constant values: nothing published after the first)"
    if [ "$QUICK" = 0 ]; then WINDOW=20; WARMUP=3; else WINDOW=3; WARMUP=1; fi
    echo "footprint: idle 1000 tags" >&2
    STOP_WITH_SIGINT=1 EXPECT_VALUES=0 measure fieldbridge_idle_1000_tags sub "$BUILD/fieldbridge" run -c "$TMP/idle.yaml"
    WINDOW=$saved_w WARMUP=$saved_u
    local size stripped
    size=$(stat -c %s "$BUILD/fieldbridge")
    cp "$BUILD/fieldbridge" "$TMP/fb.stripped" && strip "$TMP/fb.stripped" 2>/dev/null || true
    stripped=$(stat -c %s "$TMP/fb.stripped")
    echo "{\"name\":\"binary\",\"scenario\":\"footprint\",\"binary_bytes\":$size,\"stripped_bytes\":$stripped}" >> "$RECORDS"
    stop_peers
}

scenario_scaling() {
    CUR_SCENARIO=scaling
    start_broker
    local saved_w=$WINDOW saved_u=$WARMUP spec ndev ntags n
    # as fast as possible, one connection per device
    local specs="10x100 100x100 100x1000"
    [ "$QUICK" = 1 ] && specs="10x100"
    NPORTS=100 start_server
    if [ "$QUICK" = 0 ]; then WINDOW=8; WARMUP=3; else WINDOW=1.5; WARMUP=1; fi
    for spec in $specs; do
        ndev=${spec%x*} ntags=${spec#*x} n=$((ndev * ntags))
        PER_DEVICE_PORT=1 gen_config "$TMP/sc$n.yaml" "$ndev" "$ntags" 1us int16
        CUR_CONFIG="$ndev devices (one connection each) x $ntags int16 tags, poll 1us, every value published"
        CUR_REP=1
        echo "scaling: $n tags as fast as possible" >&2
        STOP_WITH_SIGINT=1 measure "fieldbridge_fast_${n}_tags" sub "$BUILD/fieldbridge" run -c "$TMP/sc$n.yaml"
    done
    stop_pid "$SERVER_PID"
    # plant scale: 100 devices x 1000 tags at 1 s, every register changes by 1 every second
    # (--quick: deadband 0.5, so the short window sees every change)
    local db=5
    if [ "$QUICK" = 0 ]; then WINDOW=20; WARMUP=5; ndev=100; else WINDOW=2; WARMUP=1.5; ndev=5; db=0.5; fi
    NPORTS=$ndev start_server --tick 1000
    PER_DEVICE_PORT=1 gen_config "$TMP/plant_db.yaml" "$ndev" 1000 1s int16 "$db"
    CUR_CONFIG="$ndev devices (one connection each) x 1000 int16 tags, poll 1s, deadband $db; every register +1 each second"
    echo "scaling: plant scale, $ndev x 1000 tags, deadband" >&2
    STOP_WITH_SIGINT=1 measure "fieldbridge_plant_deadband" sub "$BUILD/fieldbridge" run -c "$TMP/plant_db.yaml"
    PER_DEVICE_PORT=1 gen_config "$TMP/plant_all.yaml" "$ndev" 1000 1s int16
    CUR_CONFIG="$ndev devices (one connection each) x 1000 int16 tags, poll 1s, every value published"
    echo "scaling: plant scale, $ndev x 1000 tags, every value" >&2
    STOP_WITH_SIGINT=1 measure "fieldbridge_plant_every_value" sub "$BUILD/fieldbridge" run -c "$TMP/plant_all.yaml"
    WINDOW=$saved_w WARMUP=$saved_u
    stop_peers
}

scenario_latency() {
    CUR_SCENARIO=latency
    start_broker
    local poll tick
    for poll in 10 100; do
        tick=$((poll * 13 / 10))
        start_server --tick "$tick" --tick-log "$TMP/ticks$poll.log"
        gen_config "$TMP/lat$poll.yaml" 1 100 "${poll}ms" uint16
        local saved_w=$WINDOW saved_u=$WARMUP
        if [ "$QUICK" = 1 ]; then WINDOW=3; WARMUP=0.5; else WINDOW=$([ "$poll" = 10 ] && echo 20 || echo 40); WARMUP=1; fi
        CUR_CONFIG="1 device, 100 uint16 tags, poll ${poll}ms; server changes all registers every ${tick}ms"
        CUR_REP=1
        echo "latency: poll ${poll}ms" >&2
        STOP_WITH_SIGINT=1 SUB_EXTRA="--latency-tag r0 --tick-log $TMP/ticks$poll.log" \
            measure "fieldbridge_latency_${poll}ms" sub "$BUILD/fieldbridge" run -c "$TMP/lat$poll.yaml"
        WINDOW=$saved_w WARMUP=$saved_u
        stop_pid "$SERVER_PID"
    done
    stop_pid "$BROKER_PID"
}
scenario_command() {
    CUR_SCENARIO=command
    local n=500 variant
    [ "$QUICK" = 1 ] && n=50
    # twice: with set_tcp_nodelay true (Nagle off on the broker's sockets, the
    # bench default) and with Mosquitto's defaults — the small PUBACK +
    # response pair is exactly the pattern Nagle and delayed ACKs hold back
    # by ~40 ms.  The gateway sets TCP_NODELAY on its own MQTT socket.
    for variant in set_tcp_nodelay default; do
        if [ "$variant" = default ]; then BROKER_NODELAY=""; else unset BROKER_NODELAY; fi
        start_broker
        start_server
        gen_config "$TMP/cmd.yaml" 1 100 100ms int16 "" \
"      - {name: sp, addr: \"hr:1000:int16\", access: rw, poll: 1s}"
        "$BUILD/fieldbridge" run -c "$TMP/cmd.yaml" > "$TMP/cmd.fb.log" 2>&1 &
        local fb=$!
        PIDS+=("$fb")
        sleep 1
        echo "command: $n round trips, broker $variant" >&2
        "$BUILD/cmd_rtt" --port "$MQ_PORT" --topic site/_/_/fb/command --tag sp --count "$n" \
            --interval-ms 5 --timeout 2 --duration 120 --mb-port "$MB_PORT" --addr 1000 \
            > "$TMP/cmd.json" 2>>"$TMP/cmd.err" || true
        kill -0 "$fb" 2>/dev/null || echo "fieldbridge (command, $variant): exited during the run" >> "$FAILURES"
        $PY -c 'import json,sys; sys.exit(0 if json.loads(open(sys.argv[1]).read().splitlines()[-1]).get("ok") else 1)' \
            "$TMP/cmd.json" 2>/dev/null || echo "cmd_rtt (command, $variant): no command answered" >> "$FAILURES"
        stop_pid "$fb" INT
        $PY - "$RECORDS" "$TMP/cmd.json" "$variant" <<'EOF'
import json, sys
try:
    tool = json.loads(open(sys.argv[2]).read().strip().splitlines()[-1])
except Exception as e:
    tool = {"error": str(e)}
rec = {"name": "fieldbridge_command_rtt_" + sys.argv[3], "scenario": "command",
       "config": "broker %s; 1 device, 100 tags at 100ms + writable sp (hr:1000), QoS 1, 5 ms apart"
                 % ("defaults" if sys.argv[3] == "default" else "set_tcp_nodelay true"),
       "tool": tool}
open(sys.argv[1], "a").write(json.dumps(rec) + "\n")
EOF
        stop_peers
        unset BROKER_NODELAY
    done
}

# ---- run ----------------------------------------------------------------------
STAMP=$(date -u +%Y%m%d-%H%M%S)
mkdir -p "$BENCH/results"
run_one() {
    local sc=$1
    : > "$RECORDS"
    "scenario_$sc"
    # a CPU figure is a share of a core over the window: never negative (a
    # harness bug once printed -23% when a tool had ended before its window)
    $PY - "$RECORDS" >>"$FAILURES" <<'EOF'
import json, sys
for line in open(sys.argv[1]):
    r = json.loads(line)
    bad = {k: v for k, v in r.items() if (k.endswith("_pct") or k == "cpu_us_per_value")
           and isinstance(v, (int, float)) and v < 0}
    if bad:
        print(f"{r.get('name')} ({r.get('scenario')}): negative CPU figures {bad}")
EOF
    local out="$BENCH/results/$sc-$STAMP.json"
    if [ "$QUICK" = 1 ]; then mkdir -p "$BENCH/results/tmp"; out="$BENCH/results/tmp/$sc-quick-$STAMP.json"; fi
    $PY "$BENCH/summarize.py" --scenario "$sc" --records "$RECORDS" --out "$out" \
        --build "$BUILD" --root "$ROOT" --quick "$QUICK" --cmdline "bench/run.sh $ORIG_ARGS" \
        --reps "$REPS" --window "$WINDOW" --warmup "$WARMUP"
}
if [ "$SCENARIO" = all ]; then
    for sc in throughput footprint scaling latency command; do run_one "$sc"; done
else
    run_one "$SCENARIO"
fi
if [ "$QUICK" = 0 ] && command -v gnuplot >/dev/null 2>&1; then
    $PY "$BENCH/plot.py" --results "$BENCH/results" || echo "run.sh: charts failed" >&2
fi
if [ -s "$FAILURES" ]; then
    exit 1
fi
