#!/usr/bin/python3
"""vib_bench.py — the vibration analysis inside the running gateway (issue 18):
can one analysis thread keep up with 100 channels of 25.6 kHz?

Starts `fieldbridge run` on a generated config: `--channels` waveform tags
(10 per simulated device, each its own motor model with an outer-race defect
growing from the start), 25,600 samples per block, one block per second per
channel, every feature of examples/conveyor-pdm.yaml (bands, orders,
envelope at the bearing lines, ISO zone, anomaly baseline and trend), and
`vibration: {threads: 1}`: every channel on one analysis thread.  No sink:
what is measured is acquisition and analysis, not publication.

After `--warmup` seconds it reads /metrics and the CPU time of the thread
named fb-vib-0 (/proc/PID/task/TID/stat) twice, `--seconds` apart, and
reports blocks analysed and dropped in that window (a drop is a block the
analysis had not finished when the next one arrived: real time lost), the
analysis thread's CPU per block and its share of one core, the gateway's CPU
per channel-second (acquisition included: the simulator makes the samples),
and the analysis CPU per block the gateway itself counts
(fieldbridge_vibration_cpu_seconds_total).

    /usr/bin/python3 bench/vib_bench.py [--channels 100] [--seconds 30] [--warmup 5] [--fb build/fieldbridge]

Writes bench/results/vib-<UTC date>.json and prints a summary.  Binds 127.0.0.1 only.
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


def family_sum(text, name):
    return sum(float(m.group(1)) for m in re.finditer(rf"^{name}\{{[^}}]*\}} (\S+)$", text, re.M))


def config(mport, channels):
    lines = ["gateway: {id: bench, site: bench}", "log: {level: warn}", f'metrics: {{listen: "127.0.0.1:{mport}"}}',
             "vibration: {threads: 1}", "devices:"]
    ndev = (channels + 9) // 10
    for d in range(ndev):
        lines += [f"  - name: m{d}", f"    url: \"sim://m{d}?seed={d + 1}\"", "    poll: 1s", "    tags:"]
        for k in range(min(10, channels - 10 * d)):
            lines += [f"      - name: acc{k}",
                      "        addr: \"motor:rpm=1480,outer=20,onset=0s,growth=10m,accel=60\"",
                      "        vibration:",
                      "          fs: 25600",
                      "          block: 25600",
                      "          speed: 1480rpm",
                      "          bands: {low: [10, 1000], mid: [1000, 5000], high: [5000, 12000]}",
                      "          bearing: {balls: 9, ball_diameter: 7.94, pitch_diameter: 39.04}",
                      "          envelope: {band: [2000, 6000]}",
                      "          iso: {group: 2, mounting: rigid}",
                      "          anomaly: {learn_blocks: 10, trend: {window: 10m, limit: 50%}}"]
    return "\n".join(lines) + "\n"


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--channels", type=int, default=100)
    ap.add_argument("--seconds", type=float, default=30)
    ap.add_argument("--warmup", type=float, default=5)
    ap.add_argument("--fb", default=os.path.join(ROOT, "build", "fieldbridge"))
    a = ap.parse_args()
    if not (1 <= a.channels <= 1000 and 1 <= a.seconds <= 600 and 0 <= a.warmup <= 120):
        sys.exit("vib_bench: channels 1..1000, seconds 1..600, warmup 0..120")
    mport = free_port()
    work = tempfile.mkdtemp(prefix="fb-vibbench-")
    cfg = os.path.join(work, "gw.yaml")
    with open(cfg, "w") as f:
        f.write(config(mport, a.channels))
    log = open(os.path.join(work, "gw.log"), "w")
    p = subprocess.Popen([a.fb, "run", "-c", cfg], stdout=log, stderr=subprocess.STDOUT, start_new_session=True)
    try:
        deadline = time.monotonic() + 20
        while True:
            try:
                get(mport, "/metrics")
                break
            except OSError:
                if time.monotonic() > deadline or p.poll() is not None:
                    sys.exit(f"vib_bench: gateway did not start: {open(log.name).read()[-2000:]}")
                time.sleep(0.2)
        time.sleep(a.warmup)
        m0 = get(mport, "/metrics")
        c0, p0, t0 = thread_cpu(p.pid, "fb-vib-0"), proc_cpu(p.pid), time.monotonic()
        time.sleep(a.seconds)
        m1 = get(mport, "/metrics")
        c1, p1, t1 = thread_cpu(p.pid, "fb-vib-0"), proc_cpu(p.pid), time.monotonic()
        if c0 is None or c1 is None:
            sys.exit("vib_bench: no thread named fb-vib-0")
        blocks = family_sum(m1, "fieldbridge_vibration_blocks_total") - family_sum(m0, "fieldbridge_vibration_blocks_total")
        dropped = family_sum(m1, "fieldbridge_vibration_dropped_total") - family_sum(m0, "fieldbridge_vibration_dropped_total")
        counted = family_sum(m1, "fieldbridge_vibration_cpu_seconds_total") - \
            family_sum(m0, "fieldbridge_vibration_cpu_seconds_total")
        span = t1 - t0
        r = {
            "channels": a.channels, "seconds": round(span, 2), "blocks": int(blocks), "dropped": int(dropped),
            "blocks_expected": round(a.channels * span), "vib_thread_cpu_s": round(c1 - c0, 3),
            "vib_thread_core_share": round((c1 - c0) / span, 4),
            "us_per_block_thread_cpu": round((c1 - c0) * 1e6 / blocks, 1) if blocks else None,
            "us_per_block_counted": round(counted * 1e6 / blocks, 1) if blocks else None,
            "process_cpu_s": round(p1 - p0, 3),
            "process_ms_per_channel_second": round((p1 - p0) * 1e3 / (a.channels * span), 3),
            "load_avg": os.getloadavg(), "nproc": os.cpu_count(),
        }
    finally:
        p.send_signal(signal.SIGTERM)
        try:
            p.wait(15)
        except subprocess.TimeoutExpired:
            p.kill()
        log.close()
        shutil.rmtree(work, ignore_errors=True)
    print(json.dumps(r, indent=1))
    out = os.path.join(HERE, "results", time.strftime("vib-%Y%m%d-%H%M%S.json", time.gmtime()))
    with open(out, "w") as f:
        json.dump(r, f, indent=1)
    print(f"written {os.path.relpath(out, ROOT)}")
    if blocks < 0.9 * a.channels * span or dropped:
        sys.exit("vib_bench: the analysis did not keep up")


if __name__ == "__main__":
    main()
