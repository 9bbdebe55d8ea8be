#!/usr/bin/env bash
# influx_bench.sh — issue 16's benchmark: the InfluxDB sink and ingest mode
# against InfluxDB 1.6's own write limit, measured in the same run.
#
#   bench/influx_bench.sh [--no-build] [--only limit|sink|ingest|all]
#                         [--window S] [--warmup S] [--devices 10] [--tags 100]
#
# Scenarios (each a fresh InfluxDB with the test launcher's settings,
# tests/peers/influxdb.py, on 127.0.0.1):
#   limit   bench/influx_load: line protocol of exactly the sink's shape
#           (--devices points per poll round, --tags values per point, each
#           with its _quality field), 5000 lines per request, back to back
#           over 1 and 2 connections, with and without gzip; and of the
#           ingest shape (100 devices, 10 values a point): the most this
#           InfluxDB takes on this machine.
#   sink    `fieldbridge run` with --devices sim devices of --tags float64
#           tags each, polled every 1 ms (more than InfluxDB takes), writing
#           with the influx: sink: defaults (gzip level 1, 5000 points a
#           request, one in flight), without gzip, and with 2 in flight.
#   ingest  bench/tele_pub floods a private Mosquitto with telemetry (100
#           devices, 10 values a message, QoS 1, as fast as the broker
#           acknowledges); `fieldbridge ingest` instances write it to
#           InfluxDB: one without a buffer, one with a buffer synced per
#           batch (the default: a message is acknowledged after fdatasync),
#           one with `sync: os` (after write(2): survives kill -9, not power
#           loss), and three with one shared subscription (buffered, per
#           batch).
#
# Measured over the window (after the warm-up): values written per second
# (sink: batches InfluxDB acknowledged × tags, from fieldbridge's /metrics;
# ingest: messages from fieldbridge_source_messages_total), CPU of
# fieldbridge, influxd, Mosquitto and the load tools from /proc/<pid>/stat,
# and from InfluxDB's own /debug/vars the points it wrote and the request
# bytes it received (after gzip: bytes on the wire per value).  Results in
# bench/results/influx-<UTC date>.json and a table on stdout.
#
# Harness conventions as bench/run.sh: 127.0.0.1 only, free ports, every
# wait bounded, processes stopped by their PID.  Telegraf (the usual
# mqtt_consumer → influxdb bridge) is not in Debian 12's archive
# (`apt-cache policy telegraf` shows no candidate) and its own repository is
# out of reach, so ingest is compared with InfluxDB's write limit instead.
set -euo pipefail
ROOT=$(cd "$(dirname "$0")/.." && pwd)
BUILD=${FB_BUILD:-$ROOT/build-bench}
PY=/usr/bin/python3
BUILD_IT=1
ARGS=()
for a in "$@"; do
    if [ "$a" = --no-build ]; then BUILD_IT=0; else ARGS+=("$a"); fi
done
if [ "$BUILD_IT" = 1 ]; then
    # Release, as bench/run.sh (its two -O3 false-positive warnings stay warnings)
    [ -f "$BUILD/build.ninja" ] || cmake -S "$ROOT" -B "$BUILD" -G Ninja -DCMAKE_BUILD_TYPE=Release \
        -DCMAKE_C_FLAGS="-Wno-error=format-truncation -Wno-error=maybe-uninitialized" >/dev/null
    ninja -C "$BUILD" fieldbridge influx_load tele_pub >/dev/null
fi
for t in fieldbridge influx_load tele_pub; do
    [ -x "$BUILD/$t" ] || { echo "influx_bench.sh: $BUILD/$t missing" >&2; exit 1; }
done
command -v influxd >/dev/null || { echo "influx_bench.sh: influxd not installed (scripts/deps.sh)" >&2; exit 1; }
command -v mosquitto >/dev/null || { echo "influx_bench.sh: mosquitto not installed" >&2; exit 1; }

exec "$PY" - "$ROOT" "$BUILD" "bench/influx_bench.sh $*" "${ARGS[@]}" <<'PYEOF'
import argparse, json, os, platform, re, signal, subprocess, sys, tempfile, time, urllib.request

ROOT, BUILD, CMDLINE = sys.argv[1], sys.argv[2], sys.argv[3]
ap = argparse.ArgumentParser(prog="influx_bench.sh")
ap.add_argument("--only", choices=["limit", "sink", "ingest", "all"], default="all")
ap.add_argument("--window", type=float, default=10.0)
ap.add_argument("--warmup", type=float, default=3.0)
ap.add_argument("--devices", type=int, default=10)
ap.add_argument("--tags", type=int, default=100)
a = ap.parse_args(sys.argv[4:])
sys.path.insert(0, os.path.join(ROOT, "tests", "peers"))
import influxdb  # noqa: E402
import peers     # noqa: E402

TCK = os.sysconf("SC_CLK_TCK")
FB = os.path.join(BUILD, "fieldbridge")
tmp = tempfile.mkdtemp(prefix="fb-influx-bench-")
records = []


def cpu_s(pid):
    try:
        with open(f"/proc/{pid}/stat") as f:
            st = f.read().rsplit(")", 1)[1].split()
        return (int(st[11]) + int(st[12])) / TCK
    except OSError:
        return 0.0


def rss_mb(pid):
    try:
        with open(f"/proc/{pid}/status") as f:
            for line in f:
                if line.startswith("VmRSS:"):
                    return int(line.split()[1]) / 1024
    except OSError:
        pass
    return 0.0


def loadavg():
    with open("/proc/loadavg") as f:
        return float(f.read().split()[0])


def http_json(url):
    return json.load(urllib.request.urlopen(url, timeout=5))


def influx_stats(s):
    d = http_json(s.url + "/debug/vars")
    h = next(v for k, v in d.items() if k.startswith("httpd"))["values"]
    return h["pointsWrittenOK"], h["writeReqBytes"]


def metrics(port):
    text = urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=5).read().decode()
    out = {}
    for line in text.splitlines():
        m = re.match(r'^(fieldbridge_\w+)(\{[^}]*\})? ([0-9.e+-]+)$', line)
        if m:
            out[m.group(1) + (m.group(2) or "")] = float(m.group(3))
    return out


def new_influx(name):
    s = influxdb.InfluxDB(tmp, name=name, log_writes=False)
    s.create_db("bench")
    return s


def yaml_dump(obj, ind=0):
    pad = " " * ind
    out = []
    for k, v in obj.items():
        if isinstance(v, dict):
            out.append(f"{pad}{k}:")
            out.append(yaml_dump(v, ind + 2))
        elif isinstance(v, list):
            out.append(f"{pad}{k}:")
            for it in v:
                inner = yaml_dump(it, ind + 4).split("\n")
                inner[0] = pad + "  - " + inner[0].lstrip()
                out.append("\n".join(inner))
        else:
            out.append(f"{pad}{k}: {json.dumps(v)}")
    return "\n".join(out)


def start_fb(cmd, cfg, name):
    path = os.path.join(tmp, f"{name}.yaml")
    with open(path, "w") as f:
        f.write(yaml_dump(cfg) + "\n")
    return peers.Proc([FB, cmd, "-c", path], os.path.join(tmp, f"{name}.log"))


def wait_metric(port, key, pred, timeout):
    def ok():
        try:
            return pred(metrics(port).get(key, 0))
        except OSError:
            return False
    return peers.wait_until(ok, timeout, 0.2)


# ------------------------------------------------------------------- limit
def run_limit():
    # the sink's shape (--devices x --tags), then the ingest shape (a point per
    # message of 10 values, 100 devices): InfluxDB's cost is per point and per field
    for conns, gz, ndev, ntags in ((1, True, a.devices, a.tags), (1, False, a.devices, a.tags),
                                   (2, True, a.devices, a.tags), (1, True, 100, 10), (2, True, 100, 10)):
        s = new_influx(f"limit{conns}{int(gz)}{ntags}")
        try:
            c0, l0 = cpu_s(s.proc.pid), loadavg()
            args = [os.path.join(BUILD, "influx_load"), "--url", f"{s.url}/write?db=bench&precision=ns",
                    "--devices", str(ndev), "--tags", str(ntags), "--seconds", str(a.window),
                    "--conns", str(conns)] + (["--gzip"] if gz else [])
            r = subprocess.run(args, capture_output=True, text=True, timeout=a.window + 60)
            res = json.loads(r.stdout)
            dt = res["seconds"]
            rec = {"scenario": "limit", "tool": f"influx_load {ntags} values/point, {conns} conn{'s' if conns > 1 else ''}"
                   + (", gzip 1" if gz else ", no gzip"), "values_per_s": res["values_per_s"],
                   "points_per_s": res["points_per_s"], "bytes_per_value": res["bytes_per_value"],
                   "influxd_cpu_pct": 100 * (cpu_s(s.proc.pid) - c0) / dt, "tool_cpu_pct": 100 * res["cpu_s"] / dt,
                   "errors": res["errors"], "load_start": l0, "load_end": loadavg(), "raw": res}
            records.append(rec)
            show(rec)
        finally:
            s.stop()


# -------------------------------------------------------------------- sink
def run_sink():
    variants = [("defaults (gzip 1, 1 in flight)", {}), ("no gzip", {"gzip": False}),
                ("gzip 1, 2 in flight", {"max_inflight": 2})]
    for label, extra in variants:
        s = new_influx("sink" + str(len(records)))
        mport = peers.free_port()
        devs = [{"name": f"dev{d}", "url": f"sim://b{d}", "poll": "1ms",
                 "tags": [{"name": f"t{t}", "addr": f"sine:amp=5,period={10 + t}s,offset=20"} for t in range(a.tags)]}
                for d in range(a.devices)]
        ix = {"url": s.url, "db": "bench"}
        ix.update(extra)
        cfg = {"gateway": {"id": "bench", "site": "bench"}, "log": {"level": "info"},
               "metrics": {"listen": f"127.0.0.1:{mport}"}, "influx": ix, "devices": devs}
        g = start_fb("run", cfg, f"sink{len(records)}")
        rec = None
        try:
            key = 'fieldbridge_sink_sent_total{sink="influx"}'
            if not wait_metric(mport, key, lambda v: v > 0, 20):
                raise RuntimeError("sink wrote nothing: " + g.output()[-2000:])
            time.sleep(a.warmup)
            m0, f0, i0, p0, b0, t0, l0 = (metrics(mport), cpu_s(g.pid), cpu_s(s.proc.pid), *influx_stats(s),
                                          time.monotonic(), loadavg())
            time.sleep(a.window)
            m1, f1, i1, p1, b1, t1 = (metrics(mport), cpu_s(g.pid), cpu_s(s.proc.pid), *influx_stats(s),
                                      time.monotonic())
            rss = rss_mb(g.pid)
            dt = t1 - t0
            batches = m1[key] - m0[key]
            values = batches * a.tags
            queued = m1['fieldbridge_sink_queued_total{sink="influx"}'] - m0['fieldbridge_sink_queued_total{sink="influx"}']
            dropped = m1['fieldbridge_sink_dropped_total{sink="influx"}'] - m0['fieldbridge_sink_dropped_total{sink="influx"}']
            rec = {"scenario": "sink", "tool": f"fieldbridge influx: {label}", "values_per_s": values / dt,
                   "points_per_s_influxd": (p1 - p0) / dt, "offered_values_per_s": queued * a.tags / dt,
                   "dropped_batches": dropped, "influxd_request_bytes_per_value": (b1 - b0) / values if values else 0,
                   "fb_cpu_pct": 100 * (f1 - f0) / dt, "fb_cpu_us_per_value": 1e6 * (f1 - f0) / values if values else 0,
                   "influxd_cpu_pct": 100 * (i1 - i0) / dt, "fb_rss_mb": rss,
                   "load_start": l0, "load_end": loadavg()}
        finally:
            g.stop()
            s.stop()
        # bytes on the wire: the sink's own totals over the whole run (request
        # bodies after gzip; InfluxDB counts the bytes after gunzip)
        m = rec and re.search(r"influx: (\d+) requests, (\d+) points written, (\d+) bytes of line protocol, "
                              r"(\d+) bytes sent", g.output())
        if m:
            pts = int(m.group(2))
            rec["whole_run"] = {"requests": int(m.group(1)), "points": pts, "lp_bytes": int(m.group(3)),
                                "wire_bytes": int(m.group(4))}
            rec["bytes_per_value"] = int(m.group(4)) / (pts * a.tags)
            rec["lp_bytes_per_value"] = int(m.group(3)) / (pts * a.tags)
        if rec:
            records.append(rec)
            show(rec)


# ------------------------------------------------------------------ ingest
class Broker:
    def __init__(self):
        self.port = peers.free_port()
        conf = os.path.join(tmp, f"mosq{self.port}.conf")
        lines = [f"listener {self.port} 127.0.0.1", "allow_anonymous true", "persistence false",
                 "max_queued_messages 300000", "max_inflight_messages 100", "set_tcp_nodelay true",
                 "log_dest stderr", "log_type error", "log_type warning"]
        if os.geteuid() == 0:
            lines.append("user root")
        with open(conf, "w") as f:
            f.write("\n".join(lines) + "\n")
        self.proc = peers.Proc(["mosquitto", "-c", conf], os.path.join(tmp, f"mosq{self.port}.log"))
        peers.wait_port(self.port, 10, self.proc.p)

    def stop(self):
        self.proc.stop()


def run_ingest():
    variants = [("1 instance, no buffer", 1, None), ("1 instance, buffer sync batch", 1, "batch"),
                ("1 instance, buffer sync os", 1, "os"), ("3 instances (shared), buffer sync batch", 3, "batch"),
                ("3 instances (shared), no buffer", 3, None)]
    for label, n, sync in variants:
        s = new_influx("ing" + str(len(records)))
        b = Broker()
        insts, ports = [], []
        pub = None
        try:
            for k in range(n):
                mport = peers.free_port()
                cfg = {"gateway": {"id": f"ig{k}", "site": "cloud"}, "log": {"level": "info"},
                       "metrics": {"listen": f"127.0.0.1:{mport}"},
                       "ingest": {"url": f"mqtt://127.0.0.1:{b.port}", "share": "bench", "telemetry": True},
                       "influx": {"url": s.url, "db": "bench"}}
                if sync:
                    cfg["buffer"] = {"path": os.path.join(tmp, f"buf-{len(records)}-{k}"), "sync": sync}
                insts.append(start_fb("ingest", cfg, f"ingest{len(records)}-{k}"))
                ports.append(mport)
            for p in ports:
                if not wait_metric(p, 'fieldbridge_source_connected{source="ingest"}', lambda v: v == 1, 15):
                    raise RuntimeError("ingest did not connect")
            total = a.warmup + a.window + 1
            pub = subprocess.Popen([os.path.join(BUILD, "tele_pub"), "--port", str(b.port), "--seconds", str(total),
                                    "--devices", "100", "--values", "10"], stdout=subprocess.PIPE, text=True)
            time.sleep(a.warmup)
            key = 'fieldbridge_source_messages_total{source="ingest"}'
            dkey = 'fieldbridge_buffer_dropped_full_total{sink="influx"}'
            mm0 = [metrics(p) for p in ports]
            m0 = [m[key] for m in mm0]
            c0 = [cpu_s(i.pid) for i in insts]
            i0, bk0, pb0, (p0, _), t0, l0 = cpu_s(s.proc.pid), cpu_s(b.proc.pid), cpu_s(pub.pid), influx_stats(s), time.monotonic(), loadavg()
            time.sleep(a.window)
            mm1 = [metrics(p) for p in ports]
            m1 = [m[key] for m in mm1]
            dropped = sum(y.get(dkey, 0) - x.get(dkey, 0) for x, y in zip(mm0, mm1))
            c1 = [cpu_s(i.pid) for i in insts]
            i1, bk1, pb1, (p1, _), t1 = cpu_s(s.proc.pid), cpu_s(b.proc.pid), cpu_s(pub.pid), influx_stats(s), time.monotonic()
            dt = t1 - t0
            msgs = sum(m1) - sum(m0)
            out, _ = pub.communicate(timeout=60)
            pres = json.loads(out)
            rec = {"scenario": "ingest", "tool": f"fieldbridge ingest: {label}", "messages_per_s": msgs / dt,
                   "values_per_s": msgs * 10 / dt, "per_instance_msgs_per_s": [(y - x) / dt for x, y in zip(m0, m1)],
                   "points_per_s_influxd": (p1 - p0) / dt, "offered_msgs_per_s": pres["messages_per_s"],
                   "queue_dropped_records": dropped,
                   "fb_cpu_pct_per_instance": [100 * (y - x) / dt for x, y in zip(c0, c1)],
                   "fb_cpu_us_per_message": 1e6 * (sum(c1) - sum(c0)) / msgs if msgs else 0,
                   "influxd_cpu_pct": 100 * (i1 - i0) / dt, "mosquitto_cpu_pct": 100 * (bk1 - bk0) / dt,
                   "publisher_cpu_pct": 100 * (pb1 - pb0) / dt, "load_start": l0, "load_end": loadavg()}
            records.append(rec)
            show(rec)
        finally:
            if pub and pub.poll() is None:
                pub.kill()
            for i in insts:
                i.stop(signal.SIGTERM, 15)
            b.stop()
            s.stop()


def show(r):
    if r["scenario"] == "ingest":
        print(f"  {r['tool']:<52} {r['messages_per_s']:>9.0f} msg/s in {r['points_per_s_influxd']:>7.0f} points/s written  "
              f"fb CPU {'+'.join(f'{c:.0f}' for c in r['fb_cpu_pct_per_instance'])} %  "
              f"{r['fb_cpu_us_per_message']:.1f} µs/msg  influxd {r['influxd_cpu_pct']:.0f} %  "
              f"mosquitto {r['mosquitto_cpu_pct']:.0f} %  dropped {r['queue_dropped_records']:.0f}  "
              f"(offered {r['offered_msgs_per_s']:.0f}/s, load {r['load_end']:.1f})",
              flush=True)
    elif r["scenario"] == "sink":
        print(f"  {r['tool']:<52} {r['values_per_s']:>9.0f} values/s  fb CPU {r['fb_cpu_pct']:.0f} % "
              f"({r['fb_cpu_us_per_value']:.2f} µs/value)  {r.get('bytes_per_value', 0):.2f} B/value on the wire "
              f"({r.get('lp_bytes_per_value', 0):.1f} line protocol)  "
              f"influxd {r['influxd_cpu_pct']:.0f} %  RSS {r['fb_rss_mb']:.1f} MB  (load {r['load_end']:.1f})", flush=True)
    else:
        print(f"  {r['tool']:<52} {r['values_per_s']:>9.0f} values/s {r['points_per_s']:>7.0f} points/s  {r['bytes_per_value']:.2f} B/value  "
              f"influxd {r['influxd_cpu_pct']:.0f} %  tool {r['tool_cpu_pct']:.0f} %  (load {r['load_end']:.1f})",
              flush=True)


print(f"influx_bench: {a.devices} devices x {a.tags} tags, window {a.window}s, warm-up {a.warmup}s; work dir {tmp}")
try:
    if a.only in ("limit", "all"):
        print("InfluxDB write limit (influx_load):")
        run_limit()
    if a.only in ("sink", "all"):
        print("InfluxDB sink (fieldbridge run, sim devices polled every 1 ms):")
        run_sink()
    if a.only in ("ingest", "all"):
        print("Ingest (tele_pub → Mosquitto → fieldbridge ingest → InfluxDB; 10 values a message):")
        run_ingest()
finally:
    os.makedirs(os.path.join(ROOT, "bench", "results"), exist_ok=True)
    stamp = time.strftime("%Y%m%d-%H%M%S", time.gmtime())
    head = subprocess.run(["git", "-C", ROOT, "rev-parse", "--short", "HEAD"], capture_output=True, text=True).stdout.strip()
    doc = {"command": CMDLINE, "commit": head, "machine": {"cpus": os.cpu_count(), "kernel": platform.release()},
           "influxd": subprocess.run(["influxd", "version"], capture_output=True, text=True).stdout.strip(),
           "records": records}
    path = os.path.join(ROOT, "bench", "results", f"influx-{stamp}.json")
    with open(path, "w") as f:
        json.dump(doc, f, indent=1)
    print(f"results: {os.path.relpath(path, ROOT)}")
PYEOF
