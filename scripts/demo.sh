#!/usr/bin/env bash
# demo.sh — the README's demo: installs what is missing (scripts/deps.sh demo:
# build tools, Mosquitto, pymodbus — not the test toolchain), builds, then
# starts a private Mosquitto broker (127.0.0.1:1883), the Modbus TCP simulator
# (tests/peers/modbus_server.py --demo on 127.0.0.1:5020) and
# `build/fieldbridge run -c examples/demo.yaml`, prints how to watch the data
# and send a command, and stops everything on Ctrl-C (or SIGTERM).
#
# Ctrl-C in a terminal signals the whole foreground process group.  The broker
# and the simulator run in sessions of their own, so they do not get it: the
# gateway stops first and publishes its offline status (and its devices') to a
# broker that is still there; then this script stops the simulator and the
# broker, and prints the status messages a subscriber received meanwhile.
#
# Works without a terminal too (a system test starts it, waits for telemetry,
# sends SIGINT to its process group).  When 1883 or 5020 is taken (a system
# Mosquitto holds 1883 on many Debian hosts), the next free port is used, every
# command printed uses it, and the gateway gets a copy of the config pointing at it.
# Env: FB_DEMO_MQTT_PORT / FB_DEMO_MODBUS_PORT choose the ports;
#      FB_DEMO_SKIP_SETUP=1 skips the deps and build steps.
set -euo pipefail
cd "$(dirname "$0")/.."
ROOT=$(pwd)
PY=/usr/bin/python3

if [ "${FB_DEMO_SKIP_SETUP:-0}" != 1 ]; then
    ./scripts/deps.sh demo
    ./scripts/build.sh normal fieldbridge
fi
BIN="$ROOT/build/fieldbridge"
CONFIG="$ROOT/examples/demo.yaml"
[ -x "$BIN" ] || { echo "demo: $BIN is missing (build failed?)" >&2; exit 1; }
[ -f "$CONFIG" ] || { echo "demo: $CONFIG is missing" >&2; exit 1; }

port_busy() { (exec 3<>"/dev/tcp/127.0.0.1/$1") 2>/dev/null; }
free_port() { # preferred port → it, or the next free one above it (then any free one)
    local p
    for ((p = $1; p < $1 + 20; p++)); do port_busy "$p" || { echo "$p"; return; }; done
    "$PY" -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])'
}
wait_port() { # port, seconds, pid
    local i
    for ((i = 0; i < $2 * 20; i++)); do
        port_busy "$1" && return 0
        kill -0 "$3" 2>/dev/null || return 1
        sleep 0.05
    done
    return 1
}

MQTT_PORT="${FB_DEMO_MQTT_PORT:-1883}"
MB_PORT="${FB_DEMO_MODBUS_PORT:-5020}"
if port_busy "$MQTT_PORT"; then
    new=$(free_port "$((MQTT_PORT + 1))")
    echo "demo: port $MQTT_PORT is already in use (another MQTT broker?); using port $new for the demo broker"
    MQTT_PORT=$new
fi
if port_busy "$MB_PORT"; then
    new=$(free_port "$((MB_PORT + 1))")
    echo "demo: port $MB_PORT is already in use; using port $new for the Modbus simulator"
    MB_PORT=$new
fi

TMP=$(mktemp -d /tmp/fieldbridge-demo.XXXXXX)
chmod 755 "$TMP"   # the broker may drop privileges to user mosquitto
PIDS=()      # broker, status subscriber, simulator, gateway: stopped in reverse order
GW=""
STATUS_LINES=0
cleaning=0
stop_pid() { # pid, signal, seconds: signal, wait, then KILL
    kill -"$2" "$1" 2>/dev/null || return 0
    local i
    for ((i = 0; i < $3 * 20; i++)); do kill -0 "$1" 2>/dev/null || break; sleep 0.05; done
    kill -KILL "$1" 2>/dev/null || true
    wait "$1" 2>/dev/null || true
}
cleanup() {
    [ $cleaning = 1 ] && return
    cleaning=1
    trap '' INT   # a second Ctrl-C must not cut the orderly stop short
    echo
    echo "demo: stopping: the gateway first (it publishes its offline status), then the simulator and the broker"
    if [ -n "$GW" ]; then
        # Ctrl-C has signalled the gateway already (same process group); a SIGINT or
        # SIGTERM sent to this script alone has not: a second SIGINT is harmless
        stop_pid "$GW" INT 15
    fi
    sleep 0.5   # let the status subscriber receive the last messages
    local i
    for ((i = ${#PIDS[@]} - 1; i >= 0; i--)); do
        [ "${PIDS[$i]}" = "$GW" ] || stop_pid "${PIDS[$i]}" TERM 5
    done
    if [ -s "$TMP/subscriber.log" ]; then
        # the gateway's own offline status has a time stamp and its devices; the
        # broker's will (what a subscriber gets if the broker outlives a lost
        # gateway) says "reason":"connection lost" with "ts":null
        echo "demo: the offline statuses a subscriber (mosquitto_sub -t '#') received as the demo stopped:"
        tail -n +"$((STATUS_LINES + 1))" "$TMP/subscriber.log" |
            awk '$1 ~ /\/status$/ && ($0 ~ /"online":false/ || $0 ~ /"state":"offline"/) {print "  " $0}'
    fi
    echo "demo: logs kept in $TMP"
}
trap cleanup EXIT
trap 'cleanup; exit 0' INT TERM

# own_session CMD...: start CMD in the background in a session (and process group)
# of its own, so a Ctrl-C to this terminal's process group does not reach it.
# setsid does not fork here (a background child of a non-interactive shell is not a
# process-group leader), so $! is CMD's own PID.
own_session() { setsid "$@" & }

# 1. broker
cat >"$TMP/mosquitto.conf" <<EOF
listener $MQTT_PORT 127.0.0.1
allow_anonymous true
persistence false
log_dest stderr
EOF
own_session mosquitto -c "$TMP/mosquitto.conf" >"$TMP/mosquitto.log" 2>&1
PIDS+=($!)
wait_port "$MQTT_PORT" 10 "${PIDS[-1]}" || { cat "$TMP/mosquitto.log" >&2; echo "demo: mosquitto did not start" >&2; exit 1; }

# a subscriber to every status topic (retained gateway and device status), like
# the user's own `mosquitto_sub`; what it received at shutdown is printed at the end
own_session mosquitto_sub -h 127.0.0.1 -p "$MQTT_PORT" -t '#' -F '%t %p' >"$TMP/subscriber.log" 2>&1
PIDS+=($!)

# 2. Modbus simulator (values change over time; hr:10 is a writable setpoint)
own_session "$PY" tests/peers/modbus_server.py --host 127.0.0.1 --port "$MB_PORT" --demo >"$TMP/modbus.log" 2>&1
PIDS+=($!)
wait_port "$MB_PORT" 15 "${PIDS[-1]}" || { cat "$TMP/modbus.log" >&2; echo "demo: Modbus simulator did not start" >&2; exit 1; }

# 3. the gateway (a copy of the config when the ports moved)
if [ "$MQTT_PORT" != 1883 ] || [ "$MB_PORT" != 5020 ]; then
    sed -e "s/127\.0\.0\.1:1883/127.0.0.1:$MQTT_PORT/g" -e "s/localhost:1883/127.0.0.1:$MQTT_PORT/g" \
        -e "s/127\.0\.0\.1:5020/127.0.0.1:$MB_PORT/g" -e "s/localhost:5020/127.0.0.1:$MB_PORT/g" \
        "$CONFIG" >"$TMP/demo.yaml"
    CONFIG="$TMP/demo.yaml"
fi
"$BIN" run -c "$CONFIG" >"$TMP/fieldbridge.log" 2>&1 &
GW=$!
PIDS+=($GW)

# 4. wait for telemetry, so the instructions show real topics: preferably the
#    device that has the writable tag $WTAG (the Modbus plant's "setpoint")
WTAG="${FB_DEMO_WRITE_TAG:-setpoint}"
TELE=""
ANY=""
for _ in $(seq 1 20); do
    lines=$(timeout 3 mosquitto_sub -h 127.0.0.1 -p "$MQTT_PORT" -t '#' -v -C 20 -W 2 2>/dev/null || true)
    TELE=$(printf '%s\n' "$lines" | awk -v tag="\"$WTAG\"" '$1 ~ /\/telemetry$/ && index($0, tag) {print $1; exit}')
    [ -n "$TELE" ] && break
    [ -z "$ANY" ] && ANY=$(printf '%s\n' "$lines" | awk '$1 ~ /\/telemetry$/ {print $1; exit}')
    if ! kill -0 "$GW" 2>/dev/null; then
        cat "$TMP/fieldbridge.log" >&2
        echo "demo: fieldbridge exited" >&2
        exit 1
    fi
done
TELE="${TELE:-$ANY}"
if [ -z "$TELE" ]; then
    tail -n 30 "$TMP/fieldbridge.log" >&2
    echo "demo: no telemetry after 40 s (log: $TMP/fieldbridge.log)" >&2
    exit 1
fi
BASE="${TELE%/telemetry}"

cat <<EOF

================================================================================
 fieldbridge demo is running (ready ${SECONDS} s after ./scripts/demo.sh started)
   MQTT broker     127.0.0.1:$MQTT_PORT        (log: $TMP/mosquitto.log)
   Modbus TCP sim  127.0.0.1:$MB_PORT, unit 1  (log: $TMP/modbus.log)
   gateway         $BIN run -c $CONFIG
                   (log: $TMP/fieldbridge.log)

 Watch everything (telemetry, status, command responses), in another terminal:
   mosquitto_sub -h 127.0.0.1 -p $MQTT_PORT -t '#' -v

 Send a command (write $WTAG = 42; QoS 1 is required, QoS 0 commands are refused):
   mosquitto_pub -h 127.0.0.1 -p $MQTT_PORT -q 1 -t '$BASE/command' -m '{"id":"c-1","write":{"$WTAG":42}}'
 The answer arrives on:
   $BASE/command/response

 Read the simulator directly, like mbpoll:
   $BIN read 'modbus-tcp://127.0.0.1:$MB_PORT?unit=1' hr:0 --type float32 --order CDAB

 Ctrl-C stops everything.
================================================================================
EOF

# Wait for the gateway; Ctrl-C / SIGTERM land in the trap above.
STATUS_LINES=$(wc -l <"$TMP/subscriber.log")
set +e
wait "$GW"
rc=$?
set -e
[ $cleaning = 1 ] && exit 0
# bash may not run the INT trap when the gateway, signalled by the same Ctrl-C,
# exits cleanly first; the gateway exits 0 only when stopped by SIGINT/SIGTERM
if [ $rc -eq 0 ]; then
    cleanup
    exit 0
fi
echo "demo: fieldbridge exited with code $rc; last log lines:" >&2
tail -n 20 "$TMP/fieldbridge.log" >&2
exit 1
