#!/usr/bin/python3
"""control_bench.py — control-loop timing inside the running gateway
(issue 19): wake-up jitter of the control thread at a 10 ms period with 100
PID loops, and the CPU one loop-cycle costs, with the rest of the gateway
idle and busy, with and without SCHED_FIFO.

Each scenario starts `fieldbridge run` on a generated config:
  - 100 loops, cycle 10 ms, each on its own simulated first-order process
    (10 sim devices × 10 processes, the measurements polled every 10 ms, the
    outputs written through the sim driver's write queue);
  - "busy" adds the rest of a gateway at work: 20 sim devices × 100 sine
    tags polled every 100 ms (20,000 values/s), every value published to a
    local Mosquitto, and /metrics scraped every second;
  - "fifo" runs the control thread SCHED_FIFO 50 (control.priority).
After a warm-up it reads /metrics and the control thread's CPU time
(/proc/PID/task/TID/stat of the thread named fb-control) twice, `--seconds`
apart, and reports the wake-up lateness distribution of that window (from
the histogram buckets: the fraction within 100 µs, and the bucket holding the
99th percentile), the status's p50/p99/max since start (1 µs resolution),
overruns, and the control thread's CPU per loop-cycle.

    /usr/bin/python3 bench/control_bench.py [--seconds 30] [--warmup 5]
        [--scenarios quiet,quiet-fifo,busy,busy-fifo] [--fb build/fieldbridge]

Writes bench/results/control-<UTC date>.json and prints a table.  Needs
Mosquitto for the busy scenarios (scripts/deps.sh).  Everything binds
127.0.0.1.
"""
import argparse
import json
import os
import re
import shutil
import signal
import subprocess
import sys
import tempfile
import time

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from benchlib import free_port, get, proc_cpu, thread_cpu  # noqa: E402

HERE = os.path.dirname(os.path.abspath(__file__))
ROOT = os.path.abspath(os.path.join(HERE, ".."))


def buckets(text):
    out = {}
    for m in re.finditer(r'fieldbridge_control_wakeup_jitter_seconds_bucket\{le="([^"]+)"\} (\d+)', text):
        le = float("inf") if m.group(1) == "+Inf" else float(m.group(1))
        out[le] = int(m.group(2))
    return out


def scalar(text, name):
    m = re.search(rf"^{name} (\S+)$", text, re.M)
    return float(m.group(1)) if m else None


def config(mport, busy, fifo, mqtt_port):
    lines = ["gateway: {id: bench, site: bench}", "log: {level: warn}", f'metrics: {{listen: "127.0.0.1:{mport}"}}']
    if busy:
        lines.append(f"mqtt: {{url: \"mqtt://127.0.0.1:{mqtt_port}\", qos: {{telemetry: 0, status: 0}}}}")
    lines.append("control:")
    lines.append("  period: 10ms")
    if fifo:
        lines.append("  priority: 50")
    lines.append("  loops:")
    for d in range(10):
        for k in range(10):
            lines.append(f"    - {{name: l{d}-{k}, pv: p{d}/y{k}, out: p{d}/u{k}, sp: {30 + k}, kp: 1.25, ti: 4s, "
                         f"cycle: 10ms, stale: 5, safe: 0, refresh: 0}}")
    lines.append("devices:")
    for d in range(10):
        lines.append(f"  - name: p{d}")
        lines.append(f"    url: sim://p{d}")
        lines.append("    poll: 10ms")
        lines.append("    tags:")
        for k in range(10):
            lines.append(f"      - {{name: u{k}, addr: \"memory:initial=0\", access: rw, poll: 1s}}")
            lines.append(f"      - {{name: y{k}, addr: \"fopdt:k=2,tau=4s,dead=800ms,y0=20,input=u{k}\"}}")
    if busy:
        for d in range(20):
            lines.append(f"  - name: busy{d}")
            lines.append(f"    url: sim://busy{d}")
            lines.append("    poll: 100ms")
            lines.append("    tags:")
            lines.append("      - for: {i: \"1..100\"}")
            lines.append("        name: \"s{i}\"")
            lines.append("        addr: \"sine:amp=10,period=7s\"")
    return "\n".join(lines) + "\n"


def run(fb, name, seconds, warmup, mqtt_port):
    busy, fifo = name.startswith("busy"), name.endswith("fifo")
    mport = free_port()
    work = tempfile.mkdtemp(prefix="fb-ctlbench-")
    cfg = os.path.join(work, "gw.yaml")
    with open(cfg, "w") as f:
        f.write(config(mport, busy, fifo, mqtt_port))
    log = open(os.path.join(work, "gw.log"), "w")
    p = subprocess.Popen([fb, "run", "-c", cfg], stdout=log, stderr=subprocess.STDOUT, start_new_session=True)
    try:
        deadline = time.monotonic() + 10
        while True:
            try:
                get(mport, "/metrics")
                break
            except OSError:
                if time.monotonic() > deadline or p.poll() is not None:
                    raise RuntimeError(f"{name}: gateway did not start: {open(log.name).read()[-2000:]}")
                time.sleep(0.1)
        time.sleep(warmup)
        scrape_busy = busy
        m0 = get(mport, "/metrics")
        c0, p0, t0 = thread_cpu(p.pid, "fb-control"), proc_cpu(p.pid), time.monotonic()
        end = t0 + seconds
        while time.monotonic() < end:
            time.sleep(1.0)
            if scrape_busy:
                get(mport, "/metrics")
        m1 = get(mport, "/metrics")
        c1, p1, t1 = thread_cpu(p.pid, "fb-control"), proc_cpu(p.pid), time.monotonic()
        st = json.loads(get(mport, "/status"))["control"]
        b0, b1 = buckets(m0), buckets(m1)
        d = {le: b1[le] - b0.get(le, 0) for le in b1}
        total = d[float("inf")]
        within100 = d.get(1e-4, 0) / total if total else 0
        p99_bucket = next((le for le in sorted(d) if d[le] >= 0.99 * total), float("inf"))
        p50_bucket = next((le for le in sorted(d) if d[le] >= 0.5 * total), float("inf"))
        cycles = scalar(m1, "fieldbridge_control_cycles_total") - scalar(m0, "fieldbridge_control_cycles_total")
        overruns = scalar(m1, "fieldbridge_control_overruns_total") - scalar(m0, "fieldbridge_control_overruns_total")
        work_s = scalar(m1, "fieldbridge_control_cycle_seconds_sum") - scalar(m0, "fieldbridge_control_cycle_seconds_sum")
        not_ok = sum(1 for l in st["loops"].values() if l["state"] != "ok")
        r = {
            "scenario": name, "seconds": round(t1 - t0, 2), "cycles": int(cycles), "overruns": int(overruns),
            "within_100us": round(within100, 5), "p50_bucket_us": p50_bucket * 1e6, "p99_bucket_us": p99_bucket * 1e6,
            "status_since_start_us": st["jitter_us"], "realtime": st["realtime"],
            "ctl_thread_cpu_s": round(c1 - c0, 3), "process_cpu_s": round(p1 - p0, 3),
            "ns_per_loop_cycle_thread_cpu": round((c1 - c0) * 1e9 / (cycles * 100), 1) if cycles else None,
            "ns_per_loop_cycle_work": round(work_s * 1e9 / (cycles * 100), 1) if cycles else None,
            "loops_not_ok": not_ok, "load_avg": os.getloadavg(),
        }
        return r
    finally:
        p.send_signal(signal.SIGTERM)
        try:
            p.wait(15)
        except subprocess.TimeoutExpired:
            p.kill()
        log.close()
        shutil.rmtree(work, ignore_errors=True)


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--seconds", type=float, default=30)
    ap.add_argument("--warmup", type=float, default=5)
    ap.add_argument("--scenarios", default="quiet,quiet-fifo,busy,busy-fifo")
    ap.add_argument("--fb", default=os.environ.get("FB_BIN", os.path.join(ROOT, "build", "fieldbridge")))
    a = ap.parse_args()
    names = a.scenarios.split(",")
    broker = None
    mqtt_port = free_port()
    if any(n.startswith("busy") for n in names):
        if not shutil.which("mosquitto"):
            sys.exit("control_bench: mosquitto is needed for the busy scenarios (scripts/deps.sh)")
        bdir = tempfile.mkdtemp(prefix="fb-ctlbench-mq-")
        with open(os.path.join(bdir, "m.conf"), "w") as f:
            f.write(f"listener {mqtt_port} 127.0.0.1\nallow_anonymous true\npersistence false\n")
        broker = subprocess.Popen(["mosquitto", "-c", os.path.join(bdir, "m.conf")], stdout=subprocess.DEVNULL,
                                  stderr=subprocess.DEVNULL, start_new_session=True)
        time.sleep(0.5)
    results = []
    try:
        for n in names:
            r = run(a.fb, n, a.seconds, a.warmup, mqtt_port)
            results.append(r)
            print(json.dumps(r), flush=True)
    finally:
        if broker:
            broker.send_signal(signal.SIGTERM)
            broker.wait(5)
    commit = subprocess.run(["git", "-C", ROOT, "rev-parse", "--short", "HEAD"], capture_output=True,
                            text=True).stdout.strip()
    os.makedirs(os.path.join(HERE, "results"), exist_ok=True)
    out = os.path.join(HERE, "results", time.strftime("control-%Y%m%d-%H%M%S.json", time.gmtime()))
    with open(out, "w") as f:
        json.dump({"commit": commit, "nproc": os.cpu_count(), "results": results}, f, indent=1)
    print(f"\n| scenario | within 100 µs | p99 (bucket) | p50/p99/max since start | overruns | control thread CPU per loop-cycle | loops not ok |")
    print("|---|---|---|---|---|---|---|")
    for r in results:
        s = r["status_since_start_us"]
        print(f"| {r['scenario']} | {r['within_100us'] * 100:.2f} % | ≤ {r['p99_bucket_us']:.0f} µs | "
              f"{s['p50']:.0f} / {s['p99']:.0f} / {s['max']:.0f} µs | {r['overruns']} | "
              f"{r['ns_per_loop_cycle_thread_cpu']} ns (work {r['ns_per_loop_cycle_work']} ns) | {r['loops_not_ok']} |")
    print(f"\nwritten {out}")
    bad = [r for r in results if r["loops_not_ok"] or r["cycles"] == 0]
    sys.exit(1 if bad else 0)


if __name__ == "__main__":
    main()
