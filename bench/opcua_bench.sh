#!/usr/bin/env bash
# opcua_bench.sh — the OPC UA driver against a node-opcua server, end to end into Mosquitto.
#
#   bench/opcua_bench.sh [subscribe|poll|all] [--items N] [--changes K] [--window S] [--warmup S]
#                        [--fb PATH] [--keep]   (--keep: leave the logs in the temp dir)
#
# subscribe  node-opcua (tests/peers/opcua/server.js) with N Double variables
#            (default 10,000); every 100 ms it sets the next K of them (default
#            100, i.e. 1,000 changes/s) to the current time in ms since 1970.
#            fieldbridge monitors all N in one subscription (100 ms sampling
#            and publishing, mode=subscribe, one poll group at 100 ms) and
#            publishes to a private Mosquitto; a paho subscriber takes each
#            delivered value as "changed at" and its arrival time as
#            "delivered": latency = arrival − value (same clock, same host).
#            Reported: CPU % and RSS of fieldbridge, the node server and
#            Mosquitto over the same window, values delivered per second, and
#            latency p50 / p99 / max.
# poll       the same N variables, unchanged, polled every 1 s (mode=poll) with
#            the server's default MaxNodesPerRead and again with --max-read 500;
#            from the gateway's /metrics: Read requests per cycle
#            (fieldbridge_device_requests_total counts one per Read request)
#            and the cycle time (rtt sum / count = the whole group's Reads),
#            plus CPU of both sides.
#
# Every process binds 127.0.0.1 on a free port, is bounded in time and is
# stopped by its PID.  The load average is recorded at start and end (the
# machine may be shared).  Results: bench/results/opcua-<scenario>-<UTC>.json
# and a table on stdout.  Needs: node + tests/peers/opcua/node_modules
# (npm ci), mosquitto, python3-paho-mqtt, a built fieldbridge (default
# build/fieldbridge; --fb or $FB_BIN).
set -euo pipefail
ORIG_ARGS="$*"
ROOT=$(cd "$(dirname "$0")/.." && pwd)
SCENARIO=all
ITEMS=10000
CHANGES=100
WINDOW=30
WARMUP=10
FB="${FB_BIN:-$ROOT/build/fieldbridge}"
KEEP=0
while [ $# -gt 0 ]; do
    case "$1" in
        subscribe|poll|all) SCENARIO=$1 ;;
        --items) ITEMS=$2; shift ;;
        --changes) CHANGES=$2; shift ;;
        --window) WINDOW=$2; shift ;;
        --warmup) WARMUP=$2; shift ;;
        --fb) FB=$2; shift ;;
        --keep) KEEP=1 ;;
        -h|--help) sed -n '2,32p' "$0"; exit 0 ;;
        *) echo "opcua_bench.sh: unknown argument '$1'" >&2; exit 2 ;;
    esac
    shift
done
[ -x "$FB" ] || { echo "opcua_bench.sh: no fieldbridge binary at $FB (--fb PATH)" >&2; exit 2; }
[ -d "$ROOT/tests/peers/opcua/node_modules/node-opcua" ] || {
    echo "opcua_bench.sh: node-opcua missing: cd tests/peers/opcua && npm ci" >&2; exit 2; }
mkdir -p "$ROOT/bench/results"
WORK=$(mktemp -d /tmp/fb-opcua-bench.XXXXXX)
trap 'rc=$?; if [ $rc -eq 0 ] && [ $KEEP = 0 ]; then rm -rf "$WORK"; else echo "logs kept in $WORK" >&2; fi' EXIT

/usr/bin/python3 - "$ROOT" "$WORK" "$FB" "$SCENARIO" "$ITEMS" "$CHANGES" "$WINDOW" "$WARMUP" "$ORIG_ARGS" <<'PY'
import json, os, signal, socket, statistics, subprocess, sys, threading, time, urllib.request
import paho.mqtt.client as mqtt

ROOT, WORK, FB, SCENARIO = sys.argv[1:5]
ITEMS, CHANGES, WINDOW, WARMUP = int(sys.argv[5]), int(sys.argv[6]), float(sys.argv[7]), float(sys.argv[8])
PEER = os.path.join(ROOT, "tests", "peers", "opcua")
HZ = os.sysconf("SC_CLK_TCK")
procs = []


def free_port():
    s = socket.socket()
    s.bind(("127.0.0.1", 0))
    p = s.getsockname()[1]
    s.close()
    return p


def wait_port(port, t=60):
    end = time.time() + t
    while time.time() < end:
        try:
            socket.create_connection(("127.0.0.1", port), 0.5).close()
            return
        except OSError:
            time.sleep(0.2)
    raise SystemExit(f"port {port} did not open")


def start(argv, name, **kw):
    log = open(os.path.join(WORK, name + ".log"), "ab")
    p = subprocess.Popen(argv, stdout=log, stderr=subprocess.STDOUT, start_new_session=True, **kw)
    procs.append(p)
    return p


def stop(p):
    if p.poll() is None:
        p.send_signal(signal.SIGTERM)
        try:
            p.wait(10)
        except subprocess.TimeoutExpired:
            p.kill()
            p.wait(5)


def cpu_ticks(pid):
    with open(f"/proc/{pid}/stat") as f:
        st = f.read().rsplit(")", 1)[1].split()
    return int(st[11]) + int(st[12])


def rss_kib(pid):
    with open(f"/proc/{pid}/status") as f:
        for line in f:
            if line.startswith("VmRSS:"):
                return int(line.split()[1])
    return 0


def loadavg():
    with open("/proc/loadavg") as f:
        return [float(x) for x in f.read().split()[:3]]


def mosquitto():
    port = free_port()
    conf = os.path.join(WORK, "mosq.conf")
    with open(conf, "w") as f:
        f.write(f"listener {port} 127.0.0.1\nallow_anonymous true\npersistence false\n")
    p = start(["timeout", "1800", "mosquitto", "-c", conf], "mosquitto")
    wait_port(port)
    return p, port


def ua_server(extra):
    port = free_port()
    # the server exits when its stdin closes: keep a pipe open for the run
    p = subprocess.Popen(["timeout", "1800", "node", os.path.join(PEER, "server.js"), "--port", str(port),
                          "--pki", os.path.join(WORK, "ua-pki"), "--many", str(ITEMS), *map(str, extra)],
                         stdin=subprocess.PIPE, stdout=open(os.path.join(WORK, "ua.log"), "ab"),
                         stderr=subprocess.STDOUT, cwd=PEER, start_new_session=True)
    procs.append(p)
    wait_port(port, 120)
    return p, port


def node_pid(p):
    # `timeout` runs node as its child: measure node itself
    out = subprocess.run(["pgrep", "-P", str(p.pid)], capture_output=True, text=True).stdout.split()
    return int(out[0]) if out else p.pid


def gateway(mqtt_port, url, poll, metrics_port=None):
    tags = "\n".join(f"      - {{name: i{i:05d}, addr: \"ns=1;s=Item{i:04d}\"}}" for i in range(ITEMS))
    cfg = (f"gateway: {{id: bench, site: bench}}\nlog: {{level: debug, format: text}}\n"
           f"mqtt: {{url: \"mqtt://127.0.0.1:{mqtt_port}\", version: 5}}\n"
           + (f"metrics: {{listen: \"127.0.0.1:{metrics_port}\"}}\n" if metrics_port else "")
           + f"devices:\n  - name: ua\n    url: \"{url}\"\n    poll: {poll}\n    timeout: 5s\n    tags:\n{tags}\n")
    path = os.path.join(WORK, "gw.yaml")
    with open(path, "w") as f:
        f.write(cfg)
    return start(["timeout", "1800", FB, "run", "-c", path], "gw")


class Sub:
    def __init__(self, port):
        self.lock = threading.Lock()
        self.lat, self.values, self.msgs, self.counting, self.first = [], 0, 0, False, None
        self.c = mqtt.Client()
        self.c.on_message = self.on_msg
        self.c.connect("127.0.0.1", port)
        self.c.subscribe("bench/_/_/ua/telemetry", 0)
        self.c.loop_start()

    def on_msg(self, c, u, m):
        now = time.time() * 1000.0
        try:
            vals = json.loads(m.payload).get("values") or {}
        except ValueError:
            return
        with self.lock:
            if self.first is None and vals:
                self.first = time.time()
            if not self.counting:
                return
            self.msgs += 1
            for v in vals.values():
                x = v.get("v") if isinstance(v, dict) else None
                if isinstance(x, (int, float)) and x > 1e12:  # a change stamped by the server
                    self.values += 1
                    self.lat.append(now - x)


def pct(a, q):
    a = sorted(a)
    return a[min(len(a) - 1, int(q * len(a)))] if a else None


def window(pids, secs):
    t0 = time.time()
    c0 = {k: cpu_ticks(p) for k, p in pids.items()}
    time.sleep(secs)
    dt = time.time() - t0
    return dt, {k: round(100.0 * (cpu_ticks(p) - c0[k]) / HZ / dt, 1) for k, p in pids.items()}, \
        {k: rss_kib(p) for k, p in pids.items()}


def metrics(port):
    txt = urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=5).read().decode()
    out = {}
    for line in txt.splitlines():
        if line.startswith("fieldbridge_device_") and "device=\"ua\"" in line:
            name = line.split("{")[0]
            out[name] = float(line.rsplit(" ", 1)[1])
    return out


def server_changes():
    """The last "CHANGES total ms" line the server printed."""
    last = (0, 0)
    with open(os.path.join(WORK, "ua.log"), errors="replace") as f:
        for line in f:
            if line.startswith("CHANGES "):
                p = line.split()
                last = (int(p[1]), int(p[2]))
    return last


def run_subscribe():
    la0 = loadavg()
    mq, mport = mosquitto()
    srv, uport = ua_server(["--many-tick", 100, "--many-change", CHANGES])
    sub = Sub(mport)
    t_start = time.time()
    gw = gateway(mport, f"opc.tcp://127.0.0.1:{uport}?mode=subscribe&max_message=64MiB", "100ms")
    while sub.first is None and time.time() - t_start < 180 and gw.poll() is None:
        time.sleep(0.2)
    if sub.first is None:
        raise SystemExit("no telemetry within 180 s; see " + WORK)
    startup = sub.first - t_start
    time.sleep(WARMUP)
    pids = {"fieldbridge": gw.pid, "node-opcua": node_pid(srv), "mosquitto": mq.pid}
    # resolve `timeout` wrappers to the real processes
    pids["fieldbridge"] = node_pid(gw)
    pids["mosquitto"] = node_pid(mq)
    with sub.lock:
        sub.counting = True
    ch0 = server_changes()
    dt, cpu, rss = window(pids, WINDOW)
    ch1 = server_changes()
    with sub.lock:
        sub.counting = False
        lat, values, msgs = list(sub.lat), sub.values, sub.msgs
    made = (ch1[0] - ch0[0]) / ((ch1[1] - ch0[1]) / 1000.0) if ch1[1] > ch0[1] else None
    la1 = loadavg()
    for p in (gw, srv, mq):
        stop(p)
    r = {"scenario": "subscribe", "items": ITEMS, "sampling_ms": 100, "publishing_ms": 100,
         "changes_per_s_offered": CHANGES * 10,
         "changes_per_s_made_by_server": made and round(made, 1), "window_s": round(dt, 1), "warmup_s": WARMUP,
         "startup_to_first_telemetry_s": round(startup, 2), "cpu_percent": cpu, "rss_kib": rss,
         "values_delivered_per_s": round(values / dt, 1), "messages_per_s": round(msgs / dt, 1),
         "latency_ms": {"p50": pct(lat, 0.5) and round(pct(lat, 0.5), 1),
                        "p99": pct(lat, 0.99) and round(pct(lat, 0.99), 1),
                        "max": lat and round(max(lat), 1), "n": len(lat)},
         "loadavg_start": la0, "loadavg_end": la1, "cores": os.cpu_count()}
    return r


def run_poll(max_read):
    la0 = loadavg()
    mq, mport = mosquitto()
    srv, uport = ua_server(["--max-read", max_read] if max_read else [])
    mp = free_port()
    t_start = time.time()
    gw = gateway(mport, f"opc.tcp://127.0.0.1:{uport}?max_message=64MiB", "1s", mp)
    m0 = {}
    while time.time() - t_start < 180:
        try:
            m0 = metrics(mp)
            if m0.get("fieldbridge_device_rtt_seconds_count", 0) >= 1:
                break
        except OSError:
            pass
        time.sleep(0.5)
    time.sleep(WARMUP)
    pids = {"fieldbridge": node_pid(gw), "node-opcua": node_pid(srv), "mosquitto": node_pid(mq)}
    m0 = metrics(mp)
    dt, cpu, rss = window(pids, WINDOW)
    m1 = metrics(mp)
    la1 = loadavg()
    for p in (gw, srv, mq):
        stop(p)
    d = {k: m1.get(k, 0) - m0.get(k, 0) for k in m1}
    cycles = d.get("fieldbridge_device_rtt_seconds_count", 0)
    return {"scenario": "poll", "items": ITEMS, "period_s": 1, "server_max_nodes_per_read": max_read or "default",
            "window_s": round(dt, 1), "cycles": cycles,
            "read_requests_per_cycle": round(d.get("fieldbridge_device_requests_total", 0) / cycles, 2) if cycles else None,
            "cycle_ms_mean": round(1000 * d.get("fieldbridge_device_rtt_seconds_sum", 0) / cycles, 1) if cycles else None,
            "cycle_ms_last": round(1000 * m1.get("fieldbridge_device_last_rtt_seconds", 0), 1),
            "errors": d.get("fieldbridge_device_errors_total", 0),
            "overruns": d.get("fieldbridge_device_poll_overruns_total", 0),
            "cpu_percent": cpu, "rss_kib": rss, "loadavg_start": la0, "loadavg_end": la1, "cores": os.cpu_count()}


results = []
try:
    if SCENARIO in ("subscribe", "all"):
        results.append(run_subscribe())
    if SCENARIO in ("poll", "all"):
        results.append(run_poll(0))
        results.append(run_poll(500))
finally:
    for p in procs:
        stop(p)
stamp = time.strftime("%Y%m%d-%H%M%S", time.gmtime())
out = os.path.join(ROOT, "bench", "results", f"opcua-{SCENARIO}-{stamp}.json")
with open(out, "w") as f:
    json.dump({"command": "bench/opcua_bench.sh " + sys.argv[9], "fieldbridge": FB,
               "uname": os.uname().release, "results": results}, f, indent=1)
for r in results:
    print(json.dumps(r))
print("written", out)
PY
