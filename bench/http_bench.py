#!/usr/bin/python3
"""http_bench.py — the HTTP API's performance figures (BENCHMARKS.md, "HTTP API").

  1. GET /api/v1/values with 10,000 tags (10 simulated devices × 1,000 tags,
     every value present): the rendering's own CPU time in the HTTP thread
     (bench/http_render, independent of other load on the machine), then end
     to end with curl, one request after another on a fresh connection,
     time_total per request (connect + request + the whole ~1 MB body);
     median, p95, p99, max of N requests.
  2. The event stream to 20 subscribers (bench/sse_clients, C) at 1,000
     changes/s, in two shapes: 10 devices × 10 changing tags every 100 ms
     (100 events/s of 10 values) and 10 devices × 1 tag every 10 ms (1,000
     events/s of 1 value).  Each shape runs without subscribers and with 20;
     "without slowing the polling" is read from the gateway's own counters:
     polls per second and overruns (cycles it could not start on time) over
     the window, with the gateway's CPU time.

Bounded: every gateway and client is stopped by PID; each window is
--seconds (default 20).  Run: /usr/bin/python3 bench/http_bench.py [--quick]
Writes bench/results/http-<time>.json (or results/tmp/ with --quick).
"""
import argparse
import hashlib
import json
import os
import re
import signal
import statistics
import subprocess
import sys
import tempfile
import time
import urllib.request

ROOT = os.path.abspath(os.path.join(os.path.dirname(__file__), ".."))
TOKEN = "fbt_bench-0000000000000000000000000000000000000000"


def build_dir():
    return os.environ.get("FB_BUILD", os.path.join(ROOT, "build"))


def start_gateway(tmp, devices, extra_http=None):
    tok = os.path.join(tmp, "tokens")
    with open(tok, "w", encoding="utf-8") as f:
        f.write(f"bench:viewer:sha256:{hashlib.sha256(TOKEN.encode()).hexdigest()}\n")
    os.chmod(tok, 0o600)
    http = {"listen": "127.0.0.1:0", "tokens": tok, "rate_limit": 0, "max_events": 32, "max_connections": 64}
    http.update(extra_http or {})
    lines = ["gateway: {id: bench}", "log: {level: info}", "http:"]
    lines += [f"  {k}: {json.dumps(v)}" for k, v in http.items()]
    lines.append("devices:")
    for d in devices:
        lines.append(f"  - name: {d['name']}")
        lines.append(f"    url: \"sim://{d['name']}\"")
        lines.append(f"    poll: {d['poll']}")
        lines.append("    tags:")
        for t in d["tags"]:
            lines.append(f"      - {{name: {t[0]}, addr: \"{t[1]}\"}}")
    cfg = os.path.join(tmp, "gw.yaml")
    with open(cfg, "w", encoding="utf-8") as f:
        f.write("\n".join(lines) + "\n")
    log = open(os.path.join(tmp, "gw.log"), "wb")
    p = subprocess.Popen([os.path.join(build_dir(), "fieldbridge"), "run", "-c", cfg], stdout=log, stderr=log,
                         start_new_session=True)
    deadline = time.monotonic() + 20
    port = None
    while time.monotonic() < deadline and port is None:
        time.sleep(0.05)
        m = re.search(r"http: API.* on http://[^ ]*:(\d+)/", open(log.name, encoding="utf-8", errors="replace").read())
        if m:
            port = int(m.group(1))
        if p.poll() is not None:
            sys.exit("gateway exited: " + open(log.name, encoding="utf-8").read()[-2000:])
    if port is None:
        p.kill()
        sys.exit("gateway did not start")
    return p, port


def stop(p):
    if p.poll() is None:
        p.send_signal(signal.SIGINT)
        try:
            p.wait(10)
        except subprocess.TimeoutExpired:
            p.kill()
            p.wait(5)


def get_json(port, path):
    req = urllib.request.Request(f"http://127.0.0.1:{port}{path}", headers={"Authorization": f"Bearer {TOKEN}"})
    with urllib.request.urlopen(req, timeout=10) as r:
        return json.loads(r.read())


def cpu_s(pid):
    with open(f"/proc/{pid}/stat", encoding="utf-8") as f:
        fields = f.read().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def counters(port):
    devs = get_json(port, "/api/v1/devices")["devices"]
    return (sum(d["counters"]["requests"] for d in devs), sum(d["counters"]["overruns"] for d in devs))


def pct(xs, q):
    xs = sorted(xs)
    return xs[min(len(xs) - 1, int(len(xs) * q))]


def bench_values(tmp, n_requests):
    devs = [{"name": f"d{i}", "poll": "1s",
             "tags": [(f"t{k}", f"sine:amp=100,period={10 + k % 50}s") for k in range(1000)]} for i in range(10)]
    p, port = start_gateway(tmp, devs)
    try:
        deadline = time.monotonic() + 20
        while time.monotonic() < deadline:
            v = get_json(port, "/api/v1/values")
            if v["count"] == 10000 and all(x["q"] == "good" for x in v["values"]):
                break
            time.sleep(0.2)
        url = f"http://127.0.0.1:{port}/api/v1/values"
        times, size = [], 0
        for _ in range(n_requests):
            r = subprocess.run(["curl", "-s", "-o", "/dev/null", "-H", f"Authorization: Bearer {TOKEN}", "-w",
                                "%{time_total} %{size_download} %{http_code}", url],
                               capture_output=True, text=True, timeout=20)
            t, sz, code = r.stdout.split()
            assert code == "200", r.stdout
            times.append(float(t) * 1000)
            size = int(sz)
        return {"tags": 10000, "requests": n_requests, "bytes": size, "ms_median": round(statistics.median(times), 2),
                "ms_p95": round(pct(times, 0.95), 2), "ms_p99": round(pct(times, 0.99), 2),
                "ms_max": round(max(times), 2), "rss_mb": round(get_json(port, "/api/v1/status")["rss_bytes"] / 2**20, 1)}
    finally:
        stop(p)


def bench_sse(tmp, shape, clients, seconds):
    if shape == "batched":  # 10 devices × 10 tags every 100 ms
        devs = [{"name": f"d{i}", "poll": "100ms",
                 "tags": [(f"t{k}", f"sine:amp=100,period={3 + k}s") for k in range(10)]} for i in range(10)]
        expect = 100
    else:  # 10 devices × 1 tag every 10 ms
        devs = [{"name": f"d{i}", "poll": "10ms", "tags": [("t", "ramp:min=0,max=1000000,period=1000s")]}
                for i in range(10)]
        expect = 1000
    p, port = start_gateway(tmp, devs)
    try:
        time.sleep(1.5)
        c0, o0, cpu0, t0 = *counters(port), cpu_s(p.pid), time.monotonic()
        res = None
        if clients:
            r = subprocess.run([os.path.join(build_dir(), "sse_clients"), str(port), TOKEN, str(clients),
                                str(seconds)], capture_output=True, text=True, timeout=seconds + 30)
            assert r.returncode == 0, r.stderr
            res = json.loads(r.stdout)
        else:
            time.sleep(seconds + 1)
        c1, o1, cpu1, t1 = *counters(port), cpu_s(p.pid), time.monotonic()
        dt = t1 - t0
        out = {"shape": shape, "clients": clients, "events_per_s_expected": expect,
               "changes_per_s": 1000, "polls_per_s": round((c1 - c0) / dt, 1), "overruns": o1 - o0,
               "gateway_cpu_pct": round(100 * (cpu1 - cpu0) / dt, 1)}
        if res:
            ev = res["events"]
            out.update({"events_per_client_per_s": round(statistics.mean(ev) / res["seconds"], 1),
                        "events_min_client": min(ev), "events_max_client": max(ev),
                        "mb_per_s_all": round(res["bytes"] / res["seconds"] / 1e6, 2),
                        "latency_ms": res["lat_ms"], "disconnects": res["disconnects"]})
        return out
    finally:
        stop(p)


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--quick", action="store_true", help="short windows (CI smoke)")
    ap.add_argument("--seconds", type=float, default=20)
    a = ap.parse_args()
    secs = 2 if a.quick else a.seconds
    nreq = 20 if a.quick else 200
    out = {"time": time.strftime("%Y-%m-%dT%H:%M:%S"), "cpus": os.cpu_count()}
    r = subprocess.run([os.path.join(build_dir(), "http_render"), "10000", str(nreq)], capture_output=True,
                       text=True, timeout=120)
    assert r.returncode == 0, r.stderr
    out["values_10k_render"] = json.loads(r.stdout)
    print(json.dumps(out["values_10k_render"]), flush=True)
    with open("/proc/loadavg", encoding="utf-8") as f:
        out["loadavg_before"] = f.read().split()[:3]
    with tempfile.TemporaryDirectory() as tmp:
        out["values_10k"] = bench_values(tmp, nreq)
        print(json.dumps(out["values_10k"]), flush=True)
        out["sse"] = []
        for shape in ("batched", "single"):
            for clients in (0, 20):
                r = bench_sse(tmp, shape, clients, secs)
                print(json.dumps(r), flush=True)
                out["sse"].append(r)
    d = os.path.join(ROOT, "bench", "results", "tmp" if a.quick else "")
    os.makedirs(d, exist_ok=True)
    path = os.path.join(d, f"http-{time.strftime('%Y%m%d-%H%M%S')}.json")
    with open(path, "w", encoding="utf-8") as f:
        json.dump(out, f, indent=1)
    print("results:", path)


if __name__ == "__main__":
    main()
