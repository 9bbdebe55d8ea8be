#!/usr/bin/env bash
# plc_bench.sh — issue 5's benchmark: 10,000 S7 tags and 10,000 ADS symbols
# polled by `fieldbridge run` at 1 s and published to a private Mosquitto.
#
#   bench/plc_bench.sh [--no-build] [--only s7|ads|all] [--window S] [--warmup S]
#                      [--pdu 960,240] [--tags 10000] [--devices 10] [--reps 3]
#
# The tags are split over --devices devices (default 10 × 1000) with the same
# URL, so they share one connection and the gateway publishes one batch of
# 1000 values per device and cycle.  (A single 10,000-value batch is larger
# than the 1 MiB record limit of the sink's in-memory queue since 2137241 and
# is dropped; --devices 1 shows it in sink_dropped.)
#
# Peers: snap7's S7Server (tests/peers/s7/s7_server.js, node-snap7 1.0.9;
# install with `cd tests/peers/s7 && npm_config_nodedir=/usr npm ci`) with
# 10 DBs × 1000 mixed-type tags, and our tests/peers/ads_server.py with a
# 10,000-symbol table of mixed types (--many 10000 --mixed --tick 1, so the
# values change every second).  Scenarios: s7_poll, ads_poll, ads_notify
# (10,000 device notifications).  (`fieldbridge read` takes at most 64
# addresses, so the cycle time comes from the gateway's rtt metrics.)
#
# Measured over the window (after the first cycle and a warm-up), from
# /proc/<pid>/stat and the gateway's /metrics: requests per cycle
# (fieldbridge_device_requests_total per sink batch; for ADS also counted at
# the server), cycle time (rtt sum per cycle: S7 times each request, ADS
# times the whole pipelined exchange), CPU of the gateway, the server and the
# broker, gateway RSS, the machine's busy share and load average.
#
# Harness conventions as bench/run.sh: 127.0.0.1 only, free ports, every wait
# bounded, processes stopped by their PID, JSON in
# bench/results/plc-<UTC date>.json.  The orchestration is Python (below),
# because it talks to both servers' stdin control channels.
set -euo pipefail
ROOT=$(cd "$(dirname "$0")/.." && pwd)
BUILD=${FB_BUILD:-$ROOT/build-plc}
PY=/usr/bin/python3
BUILD_IT=1
ARGS=()
for a in "$@"; do
    if [ "$a" = --no-build ]; then BUILD_IT=0; else ARGS+=("$a"); fi
done
if [ "$BUILD_IT" = 1 ]; then
    # Release, as bench/run.sh
    [ -f "$BUILD/build.ninja" ] || cmake -S "$ROOT" -B "$BUILD" -G Ninja -DCMAKE_BUILD_TYPE=Release >/dev/null
    ninja -C "$BUILD" fieldbridge >/dev/null
fi
[ -x "$BUILD/fieldbridge" ] || { echo "plc_bench.sh: $BUILD/fieldbridge missing" >&2; exit 1; }
command -v mosquitto >/dev/null || { echo "plc_bench.sh: mosquitto not installed" >&2; exit 1; }

exec "$PY" - "$ROOT" "$BUILD" "bench/plc_bench.sh $*" "${ARGS[@]}" <<'PYEOF'
import argparse, json, os, platform, re, shutil, signal, socket, subprocess, sys, tempfile, time, urllib.request

ROOT, BUILD, CMDLINE = sys.argv[1], sys.argv[2], sys.argv[3]
ap = argparse.ArgumentParser(prog="plc_bench.sh")
ap.add_argument("--only", choices=["s7", "ads", "all"], default="all")
ap.add_argument("--window", type=float, default=20.0)
ap.add_argument("--warmup", type=float, default=5.0)
ap.add_argument("--pdu", default="960,240",
                help="PDU sizes fieldbridge asks for, one S7 run each (snap7 grants up to 960; S7-300/1200 use 240)")
ap.add_argument("--tags", type=int, default=10000)
ap.add_argument("--devices", type=int, default=10,
                help="split the tags over N devices on one shared connection (S7: one DB each); "
                     "each device's cycle is one batch of tags/N values")
ap.add_argument("--reps", type=int, default=3, help="repetitions of every scenario (the summary takes medians)")
A = ap.parse_args(sys.argv[4:])
FB = os.path.join(BUILD, "fieldbridge")
TCK = os.sysconf("SC_CLK_TCK")
TMP = tempfile.mkdtemp(prefix="fb-plc-bench.")
PROCS = []  # every child we start; stopped by PID at exit


def log(*a):
    print("plc_bench:", *a, file=sys.stderr, flush=True)


def free_port():
    s = socket.socket()
    s.bind(("127.0.0.1", 0))
    p = s.getsockname()[1]
    s.close()
    return p


def wait_port(port, secs=10):
    end = time.time() + secs
    while time.time() < end:
        with socket.socket() as s:
            s.settimeout(0.2)
            if s.connect_ex(("127.0.0.1", port)) == 0:
                return
        time.sleep(0.05)
    raise RuntimeError(f"nothing listens on port {port}")


def start(argv, **kw):
    p = subprocess.Popen(argv, **kw)
    PROCS.append(p)
    return p


def stop(p, sig=signal.SIGTERM):
    if p.poll() is None:
        p.send_signal(sig)
        try:
            p.wait(timeout=10)
        except subprocess.TimeoutExpired:
            p.kill()
            p.wait(timeout=5)


def ticks(pid):
    try:
        s = open(f"/proc/{pid}/stat").read()
    except OSError:
        return 0
    f = s[s.rindex(")") + 2:].split()
    return int(f[11]) + int(f[12])


def status_kb(pid, key):
    try:
        for line in open(f"/proc/{pid}/status"):
            if line.startswith(key + ":"):
                return int(line.split()[1])
    except OSError:
        pass
    return 0


def machine_ticks():
    f = open("/proc/stat").readline().split()
    return sum(int(x) for x in (f[1], f[2], f[3], f[6], f[7]))


def loadavg():
    return [float(x) for x in open("/proc/loadavg").read().split()[:3]]


def metrics(port):
    """/metrics → {name: summed value over label sets}"""
    out = {}
    txt = urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=5).read().decode()
    for line in txt.splitlines():
        if not line or line[0] == "#":
            continue
        m = re.match(r"([a-zA-Z_:][a-zA-Z0-9_:]*)(\{[^}]*\})?\s+(\S+)", line)
        if m:
            out[m.group(1)] = out.get(m.group(1), 0.0) + float(m.group(3))
    return out


class Ctl:
    """A peer with a JSON-lines control channel on stdin/stdout."""

    def __init__(self, argv, ready_timeout=60):
        self.p = start(argv, stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=open(f"{TMP}/peer.err", "a"),
                       text=True, bufsize=1)
        end = time.time() + ready_timeout
        while time.time() < end:
            line = self.p.stdout.readline()
            if not line:
                raise RuntimeError(f"peer {argv[:2]} exited: " + open(f"{TMP}/peer.err").read()[-500:])
            if line.startswith("READY"):  # "READY <tcp port> [<udp port>]"
                self.port = int(line.split()[1])
                return
        raise RuntimeError("peer not ready")

    def op(self, **req):
        self.p.stdin.write(json.dumps(req) + "\n")
        self.p.stdin.flush()
        return json.loads(self.p.stdout.readline())


def start_broker():
    port = free_port()
    conf = f"{TMP}/mosquitto.conf"
    with open(conf, "w") as f:
        f.write(f"listener {port} 127.0.0.1\nallow_anonymous true\npersistence false\n"
                "max_inflight_messages 1000\nmax_queued_messages 1000000\n"
                "message_size_limit 0\nlog_dest stderr\nlog_type error\nlog_type warning\n")
    p = start(["mosquitto", "-c", conf], stderr=open(f"{TMP}/mosquitto.log", "a"))
    wait_port(port)
    return p, port


def gen_config(path, name, url, tags, poll, mq_port, m_port):
    """A.devices devices with the same URL (one shared connection), tags split in order."""
    nd = A.devices
    per = (len(tags) + nd - 1) // nd
    with open(path, "w") as f:
        f.write("# generated by bench/plc_bench.sh\n")
        f.write("gateway: {id: bench}\nlog: {level: warn}\nstatus_interval: 60s\n")
        f.write(f'metrics: {{listen: "127.0.0.1:{m_port}"}}\n')
        f.write(f'mqtt: {{url: "mqtt://127.0.0.1:{mq_port}", max_inflight: 1000, queue: 1024}}\n')
        f.write("devices:\n")
        for d in range(nd):
            f.write(f"  - name: {name}{d + 1}\n    url: \"{url}\"\n    poll: {poll}\n    tags:\n")
            for tn, addr in tags[d * per:(d + 1) * per]:
                f.write(f'      - {{name: {tn}, addr: "{addr}"}}\n')
    r = subprocess.run([FB, "check", "-c", path], capture_output=True, text=True, timeout=120)
    if r.returncode:
        raise RuntimeError(f"fieldbridge check failed: {r.stderr[-800:]}")


def measure_gateway(name, cfg, m_port, server, broker, ctl=None, extra=None):
    """Run the gateway; wait for its first cycle; sample over the window."""
    rec = {"name": name, "config": cfg}
    t_launch = time.time()
    gw = start([FB, "run", "-c", cfg], stdout=open(f"{TMP}/{name}.out", "w"), stderr=open(f"{TMP}/{name}.err", "w"))
    wait_port(m_port, 60)
    first = None
    end = time.time() + 120  # bounded: the first cycle (handles, 10,000 notifications …)
    while time.time() < end and gw.poll() is None:
        m = metrics(m_port)
        if m.get("fieldbridge_sink_queued_total", 0) >= A.devices:
            first = time.time()
            break
        time.sleep(0.02)
    if first is None:
        stop(gw, signal.SIGINT)
        raise RuntimeError(f"{name}: no first batch: " + open(f"{TMP}/{name}.err").read()[-800:])
    rec["startup_to_first_batch_s"] = round(first - t_launch, 3)
    rec["rss_after_first_cycle_kb"] = status_kb(gw.pid, "VmRSS")
    time.sleep(A.warmup)
    if ctl and extra == "ads":
        ctl.op(op="reset_stats")
    m0, t0, l0 = metrics(m_port), time.time(), loadavg()
    g0, s0, b0, k0 = ticks(gw.pid), ticks(server.pid), ticks(broker.pid), machine_ticks()
    time.sleep(A.window)
    m1, t1, l1 = metrics(m_port), time.time(), loadavg()
    g1, s1, b1, k1 = ticks(gw.pid), ticks(server.pid), ticks(broker.pid), machine_ticks()
    if ctl and extra == "ads":
        rec["server_stats"] = ctl.op(op="stats")
    rec["rss_kb"] = status_kb(gw.pid, "VmRSS")
    rec["hwm_kb"] = status_kb(gw.pid, "VmHWM")
    rec["server_rss_kb"] = status_kb(server.pid, "VmRSS")
    alive = gw.poll() is None
    stop(gw, signal.SIGINT)
    win = t1 - t0
    d = {k: m1.get(k, 0) - m0.get(k, 0) for k in set(m1) | set(m0)}
    cycles = d.get("fieldbridge_sink_queued_total", 0) / A.devices  # one batch per device per cycle
    rec.update({
        "window_s": round(win, 3), "alive": alive, "exit_code": gw.returncode,
        "loadavg_start": l0, "loadavg_end": l1,
        "gateway_cpu_pct": round(100 * (g1 - g0) / TCK / win, 2),
        "server_cpu_pct": round(100 * (s1 - s0) / TCK / win, 2),
        "broker_cpu_pct": round(100 * (b1 - b0) / TCK / win, 2),
        "machine_busy_pct": round(100 * (k1 - k0) / TCK / win, 1),
        "cycles": cycles,
        "requests": d.get("fieldbridge_device_requests_total", 0),
        "requests_per_cycle": round(d.get("fieldbridge_device_requests_total", 0) / cycles, 2) if cycles else None,
        "rtt_count": d.get("fieldbridge_device_rtt_seconds_count", 0),
        "rtt_per_cycle_ms": round(1000 * d.get("fieldbridge_device_rtt_seconds_sum", 0) / cycles, 2) if cycles else None,
        "errors": d.get("fieldbridge_device_errors_total", 0),
        "timeouts": d.get("fieldbridge_device_timeouts_total", 0),
        "overruns": d.get("fieldbridge_device_poll_overruns_total", 0),
        "sink_sent": d.get("fieldbridge_sink_sent_total", 0),
        "sink_dropped": d.get("fieldbridge_sink_dropped_total", 0),
        "sink_queued": d.get("fieldbridge_sink_queued_total", 0),
        "devices": A.devices,
        "reconnects": d.get("fieldbridge_device_reconnects_total", 0),
        "gateway_cpu_ms_per_cycle": round(1000 * (g1 - g0) / TCK / cycles, 2) if cycles else None,
        "server_cpu_ms_per_cycle": round(1000 * (s1 - s0) / TCK / cycles, 2) if cycles else None,
        "err_tail": open(f"{TMP}/{name}.err").read()[-600:],
    })
    log(f"{name}: {json.dumps({k: rec[k] for k in ('requests_per_cycle', 'rtt_per_cycle_ms', 'gateway_cpu_pct', 'server_cpu_pct', 'rss_kb', 'cycles', 'errors', 'sink_sent', 'sink_dropped')})}")
    if rec["sink_dropped"]:
        log(f"{name}: WARNING: the MQTT sink dropped {rec['sink_dropped']:.0f} batches — not every value was published")
    return rec


# ------------------------------------------------------------------ S7
S7_BLOCK = [  # (offset in a 26-byte block, address template, type) — 8 tags of mixed types
    (0, "DB{db}.DBX{o}.0", "bool"), (1, "DB{db}.DBB{o}", "byte"), (2, "DB{db}.DBW{o}:int", "int"),
    (4, "DB{db}.DBW{o}", "word"), (6, "DB{db}.DBD{o}:dint", "dint"), (10, "DB{db}.DBD{o}:real", "real"),
    (14, "DB{db}.DBD{o}:udint", "udint"), (18, "DB{db}.DBB{o}:lreal", "lreal"),
]


def s7_tags(n):
    ndb = 10
    per = n // ndb
    tags, size = [], 0
    for db in range(1, ndb + 1):
        for k in range(per):
            blk, slot = divmod(k, len(S7_BLOCK))
            off, tmpl, _ = S7_BLOCK[slot]
            o = blk * 26 + off
            tags.append((f"d{db}_{k}", tmpl.format(db=db, o=o)))
            size = max(size, o + 8)
    return ndb, size + 64, tags


def run_s7(broker, mq_port, records):
    peer = os.path.join(ROOT, "tests", "peers", "s7")
    if not os.path.isdir(os.path.join(peer, "node_modules", "node-snap7")):
        log("s7: node-snap7 not installed (cd tests/peers/s7 && npm_config_nodedir=/usr npm ci): skipped")
        return
    ndb, dbsize, tags = s7_tags(A.tags)
    port = free_port()
    argv = ["node", os.path.join(peer, "s7_server.js"), "--port", str(port)]
    for db in range(1, ndb + 1):
        argv += ["--db", f"{db}:{dbsize}"]
    ctl = Ctl(argv)
    # non-zero contents: each DB gets a byte pattern that decodes to finite REAL/LREAL values
    pat = bytes((i * 7 + 1) % 64 for i in range(dbsize))
    for db in range(1, ndb + 1):
        ctl.op(op="set", area="DB", db=db, start=0, hex=pat.hex())
    for pdu in [int(x) for x in A.pdu.split(",") if x]:
        url = f"s7://127.0.0.1:{port}?rack=0&slot=1&pdu={pdu}"
        m_port = free_port()
        cfg = f"{TMP}/s7_{pdu}.yaml"
        gen_config(cfg, "s7", url, tags, "1s", mq_port, m_port)
        rec = measure_gateway(f"s7_poll_pdu{pdu}", cfg, m_port, ctl.p, broker)
        rec["url"] = url
        rec["layout"] = f"{ndb} DBs x {len(tags) // ndb} tags, {dbsize} bytes each; repeating 26-byte block: " + \
            ", ".join(t for _, _, t in S7_BLOCK)
        records.append(rec)
    stop(ctl.p)


# ------------------------------------------------------------------ ADS
def run_ads(broker, mq_port, records):
    n = A.tags
    argv = [sys.executable, os.path.join(ROOT, "tests", "peers", "ads_server.py"), "--port", "0",
            "--many", str(n), "--mixed", "--tick", "1", "--note-period", "0.1"]
    ctl = Ctl(argv)
    port = ctl.port
    names = [f"GVL.nVar{i:04d}" for i in range(n)]
    tags = [(f"v{i}", nm) for i, nm in enumerate(names)]  # untyped: types come from the symbol upload
    for mode in ("poll", "notify"):
        url = f"ads://127.0.0.1:{port}?net_id=5.80.192.200.1.1&port=851" + ("&mode=notify" if mode == "notify" else "")
        m_port = free_port()
        cfg = f"{TMP}/ads_{mode}.yaml"
        gen_config(cfg, "ads", url, tags, "1s", mq_port, m_port)
        rec = measure_gateway(f"ads_{mode}", cfg, m_port, ctl.p, broker, ctl, "ads")
        rec["url"] = url
        rec["server"] = " ".join(argv[1:])
        records.append(rec)
    stop(ctl.p)


def summarize(records):
    """Per scenario: the median of each figure over the repetitions, and its range."""
    keys = ["requests_per_cycle", "rtt_per_cycle_ms", "gateway_cpu_pct", "gateway_cpu_ms_per_cycle",
            "server_cpu_pct", "server_cpu_ms_per_cycle", "broker_cpu_pct", "rss_kb", "hwm_kb", "sink_dropped",
            "startup_to_first_batch_s", "machine_busy_pct", "errors", "timeouts"]
    out = {}
    for name in sorted({r["name"] for r in records}):
        rs = [r for r in records if r["name"] == name]
        ent = {"reps": len(rs), "loadavg_1min": [r["loadavg_start"][0] for r in rs]}
        for k in keys:
            v = sorted(r[k] for r in rs if r.get(k) is not None)
            if v:
                ent[k] = {"median": v[len(v) // 2], "min": v[0], "max": v[-1]}
        if name.startswith("ads"):
            ent["server_notes_sent_per_s"] = [round(r["server_stats"]["stats"].get("notes_sent", 0) / r["window_s"])
                                              for r in rs]
            ent["server_sum_read_frames_per_cycle"] = [
                round(r["server_stats"]["stats"].get("cmd9:0xF080", 0) / r["cycles"], 2) if r["cycles"] else None
                for r in rs]
        out[name] = ent
    return out


def main():
    records = []
    stamp = time.strftime("%Y%m%d-%H%M%S", time.gmtime())
    broker, mq_port = start_broker()
    try:
        for r in range(1, A.reps + 1):  # in rotation, so drifts in background load hit every scenario
            log(f"repetition {r}/{A.reps}")
            n0 = len(records)
            if A.only in ("s7", "all"):
                run_s7(broker, mq_port, records)
            if A.only in ("ads", "all"):
                run_ads(broker, mq_port, records)
            for rec in records[n0:]:
                rec["rep"] = r
    finally:
        for p in reversed(PROCS):
            stop(p)
        shutil.rmtree(TMP, ignore_errors=True)
    try:
        commit = subprocess.run(["git", "-C", ROOT, "rev-parse", "--short", "HEAD"], capture_output=True,
                                text=True).stdout.strip()
        dirty = bool(subprocess.run(["git", "-C", ROOT, "status", "--porcelain", "--untracked-files=no"],
                                    capture_output=True, text=True).stdout.strip())
    except OSError:
        commit, dirty = "", None
    out = {"scenario": "plc", "command": CMDLINE, "utc": stamp, "commit": commit, "work_tree_dirty": dirty,
           "machine": {"nproc": os.cpu_count(), "kernel": platform.release(),
                       "cpu": next((l.split(":", 1)[1].strip() for l in open("/proc/cpuinfo")
                                    if l.startswith("model name")), "")},
           "window_s": A.window, "warmup_s": A.warmup, "reps": A.reps, "summary": summarize(records),
           "records": records}
    os.makedirs(os.path.join(ROOT, "bench", "results"), exist_ok=True)
    path = os.path.join(ROOT, "bench", "results", f"plc-{stamp}.json")
    with open(path, "w") as f:
        json.dump(out, f, indent=1)
    print(path)


main()
PYEOF
