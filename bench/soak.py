#!/usr/bin/python3
"""soak.py — the soak test of docs/reliability.md: the real gateway at
>= 10,000 values/s for a long time, with periodic faults, proving 0 lost and
no growth of memory, file descriptors or threads.

What runs (all on 127.0.0.1, all started and stopped here):
  - Mosquitto with persistence (a restart keeps the subscriber's session);
  - a pymodbus server (tests/peers/modbus_server.py) for one Modbus device;
  - fieldbridge `run`, inside a private mount namespace (`unshare -m`) whose
    buffer directory is a small tmpfs of its own, so the disk can be filled
    without touching the host's file systems;
  - a persistent-session QoS 1 subscriber (paho) that keeps every `seq`.
Load: SIM_DEVICES sim devices x TAGS counters every POLL plus the Modbus
device (TAGS registers): about --rate values/s in messages of TAGS values.

Faults, one cycle every --cycle seconds, never overlapping:
  broker   Mosquitto stopped (SIGTERM) for --broker-down s, then restarted
  device   the Modbus server killed for --device-down s, then restarted
  disk     the buffer tmpfs filled to the last byte for --disk-full s (the
           store goes to memory: degraded), then emptied again
Every --sample s the gateway's RSS, open fds and threads are sampled
(/proc/PID), with the load average.

Loss (at the end: faults over, buffer drained, metrics read, 5 s more):
  - exact, per sim device: its counters step by one per read, so the
    subscriber must hold every value 0 .. reads-1, reads being the device's
    fieldbridge_device_requests_total at the reading (duplicates are fine:
    at-least-once);
  - every batch takes the next `seq`; the holes between the first and last
    telemetry seq must be device state changes (status messages carry no
    seq): no more holes than state changes seen;
  - the gateway's dropped/lost counters are 0.
Flatness, over the samples after --warmup s: RSS — the least-squares slope
below --rss-slope MiB/h and the largest sample of the second half at most
the largest of the first half + --rss-margin MiB; fds and threads — the
largest of the last third at most the largest of the first third (no
growth from cycle to cycle) and, after the faults, at most --fd-margin
above the value at the end of warm-up.

Exit status 0 when every check passes; a JSON summary goes to --out/soak.json
and the samples to --out/samples.csv.

  nice -n 10 bench/soak.py --duration 3600                  # the 1-hour soak
  bench/soak.py --duration 75 --rate 2000 --cycle 60 --warmup 10 --sample 2 --rss-slope 1e9
                                                            # CI size (tests/system/test_soak.py)
Needs root (unshare -m, mount), mosquitto, /usr/bin/python3 with paho-mqtt
and pymodbus, and a built fieldbridge (--bin, default build/fieldbridge).
"""
import argparse
import json
import os
import re
import signal
import subprocess
import sys
import threading
import time
import urllib.request

HERE = os.path.dirname(os.path.abspath(__file__))
ROOT = os.path.dirname(HERE)
sys.path.insert(0, os.path.join(ROOT, "tests", "peers"))
import peers  # noqa: E402  pylint: disable=wrong-import-position

import paho.mqtt.client as mqtt  # noqa: E402  pylint: disable=wrong-import-position


def log(msg):
    print(f"soak {time.strftime('%H:%M:%S')} {msg}", flush=True)


# ----------------------------------------------------------------- peers
class Broker:
    def __init__(self, workdir):
        self.workdir = workdir
        self.port = peers.free_port()
        db = os.path.join(workdir, "broker-db")
        os.makedirs(db, exist_ok=True)
        self.conf = os.path.join(workdir, "broker.conf")
        lines = [f"listener {self.port} 127.0.0.1", "allow_anonymous true", "persistence true",
                 f"persistence_location {db}/", "max_queued_messages 0", "max_inflight_messages 100",
                 "log_dest stderr", "log_type error", "log_type warning"]
        if os.geteuid() == 0:
            lines.append("user root")
        with open(self.conf, "w", encoding="ascii") as f:
            f.write("\n".join(lines) + "\n")
        self.proc = None
        self.start()

    def start(self):
        self.proc = peers.Proc(["mosquitto", "-c", self.conf], os.path.join(self.workdir, "broker.log"))
        peers.wait_port(self.port, 10, self.proc.p)

    def stop(self):
        if self.proc is not None and self.proc.poll() is None:
            self.proc.stop()


class Sub:
    """Persistent session, QoS 1, the site's telemetry and status topics.
    Keeps every telemetry seq, each sim device's counter values, and counts
    device state changes (their batches take a seq but carry none)."""

    def __init__(self, port, topic):
        self.seqs = set()
        self.counters = {}  # sim device -> set of counter values (one per read)
        self.state = {}
        self.transitions = 0
        self.msgs = 0
        self.values = 0
        self.bad = 0
        self.lock = threading.Lock()
        self.subscribed = threading.Event()
        self.topic = topic
        self.c = mqtt.Client(client_id=f"soak-sub-{os.getpid()}", clean_session=False,
                             protocol=mqtt.MQTTv311)
        self.c.reconnect_delay_set(min_delay=0.1, max_delay=0.5)
        self.c.on_connect = self._on_connect
        self.c.on_subscribe = lambda *a: self.subscribed.set()
        self.c.on_message = self._on_message
        self.c.connect("127.0.0.1", port, keepalive=30)
        self.c.loop_start()
        if not self.subscribed.wait(10):
            raise TimeoutError("subscriber could not subscribe")

    def _on_connect(self, client, userdata, flags, rc):
        if rc == 0 and not flags.get("session present"):
            client.subscribe(self.topic, qos=1)

    def _on_message(self, client, userdata, msg):
        try:
            m = json.loads(msg.payload)
            if msg.topic.endswith("/status"):
                if "device" in m and "state" in m:
                    with self.lock:
                        if self.state.get(m["device"]) != m["state"]:
                            self.transitions += 1
                            self.state[m["device"]] = m["state"]
                return
            seq, n, dev = m["seq"], len(m["values"]), m["device"]
            ctr = m["values"]["t0"]["v"] if dev.startswith("s") else None
        except (ValueError, KeyError, TypeError):
            with self.lock:
                self.bad += 1
            return
        with self.lock:
            self.msgs += 1
            if ctr is not None:
                self.counters.setdefault(dev, set()).add(ctr)
            if seq not in self.seqs:
                self.seqs.add(seq)
                self.values += n

    def snapshot(self):
        with self.lock:
            return (set(self.seqs), self.msgs, self.values, self.bad, {k: set(v) for k, v in self.counters.items()},
                    self.transitions)

    def close(self):
        self.c.disconnect()
        self.c.loop_stop()


class Gateway:
    """fieldbridge run in its own mount namespace with a tmpfs buffer."""

    def __init__(self, fb_bin, workdir, cfg_text, bufdir, tmpfs_size):
        self.bufdir = bufdir
        os.makedirs(bufdir, exist_ok=True)
        self.cfg = os.path.join(workdir, "gw.yaml")
        with open(self.cfg, "w", encoding="utf-8") as f:
            f.write(cfg_text)
        # unshare execs sh, sh execs fieldbridge: one PID, inside the namespace
        script = (f"mount -t tmpfs -o size={tmpfs_size} soak-buffer {bufdir} && "
                  f"exec {fb_bin} run -c {self.cfg}")
        # A chroot (such as a bare-root test) cannot make its mounts private ("/" is no mount point
        # there): then the namespace keeps the propagation it inherits, and stop() takes the tmpfs
        # down again where it may have propagated to.
        probe = subprocess.run(["unshare", "-m", "--propagation", "private", "true"], capture_output=True,
                               text=True, timeout=30, check=False)
        self.private = probe.returncode == 0
        if not self.private:
            print(f"soak: private mounts impossible here ({probe.stderr.strip()}); the buffer tmpfs is "
                  "mounted with the inherited propagation and unmounted at the end", flush=True)
        prop = "private" if self.private else "unchanged"
        self.proc = peers.Proc(["unshare", "-m", "--propagation", prop, "sh", "-c", script],
                               os.path.join(workdir, "gw.log"))
        self.pid = self.proc.p.pid

    def nsenter(self, *argv):
        # -r: the target's root directory too (entering a mount namespace would otherwise put us at
        # its real root, not in the chroot the gateway may run in)
        return subprocess.run(["nsenter", "-t", str(self.pid), "-m", "-r", "-w", *argv], capture_output=True, text=True,
                              timeout=30, check=False)

    def fill_disk(self):
        """Fill the buffer tmpfs to the last byte (fallocate, then zeros)."""
        r = self.nsenter("sh", "-c", f"fallocate -l 1G {self.bufdir}/filler 2>/dev/null; "
                         f"dd if=/dev/zero of={self.bufdir}/filler2 bs=64k 2>/dev/null; df -k {self.bufdir}")
        return r.stdout.strip().splitlines()[-1] if r.stdout else r.stderr

    def free_disk(self):
        self.nsenter("rm", "-f", f"{self.bufdir}/filler", f"{self.bufdir}/filler2")

    def sample(self):
        try:
            with open(f"/proc/{self.pid}/status", encoding="ascii") as f:
                st = f.read()
            rss = int(re.search(r"VmRSS:\s+(\d+)", st).group(1))
            thr = int(re.search(r"Threads:\s+(\d+)", st).group(1))
            fds = len(os.listdir(f"/proc/{self.pid}/fd"))
            return rss, fds, thr
        except (OSError, AttributeError):
            return None

    def alive(self):
        return self.proc.poll() is None

    def stop(self):
        rc = self.proc.stop(signal.SIGTERM, 15)
        if not self.private and os.path.ismount(self.bufdir):
            subprocess.run(["umount", "-l", self.bufdir], capture_output=True, timeout=30, check=False)
        return rc


def http_get(port, path):
    with urllib.request.urlopen(f"http://127.0.0.1:{port}{path}", timeout=5) as r:
        return r.read().decode()


def metrics(port):
    out = {}
    for line in http_get(port, "/metrics").splitlines():
        if line.startswith("#") or not line.strip():
            continue
        name, _, v = line.rpartition(" ")
        try:
            out[name] = float(v)
        except ValueError:
            pass
    return out


def m_get(m, prefix):
    """Sum of every series whose name (with labels) starts with prefix."""
    return sum(v for k, v in m.items() if k == prefix or k.startswith(prefix + "{"))


def slope_per_hour(ts, ys):
    n = len(ts)
    if n < 3:
        return 0.0
    mt, my = sum(ts) / n, sum(ys) / n
    den = sum((t - mt) ** 2 for t in ts)
    return 0.0 if den == 0 else sum((t - mt) * (y - my) for t, y in zip(ts, ys)) / den * 3600


# ------------------------------------------------------------------ main
def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--duration", type=float, default=3600, help="seconds of load (default 3600)")
    ap.add_argument("--rate", type=int, default=10000, help="values/s (default 10000)")
    ap.add_argument("--tags", type=int, default=50, help="tags per device (default 50)")
    ap.add_argument("--poll", type=float, default=0.1, help="poll period in s (default 0.1)")
    ap.add_argument("--cycle", type=float, default=120, help="seconds per fault cycle (default 120)")
    ap.add_argument("--broker-down", type=float, default=5)
    ap.add_argument("--device-down", type=float, default=10)
    ap.add_argument("--disk-full", type=float, default=15)
    ap.add_argument("--sample", type=float, default=10, help="sampling period in s (default 10)")
    ap.add_argument("--warmup", type=float, default=300, help="s before flatness counts (default 300)")
    ap.add_argument("--rss-slope", type=float, default=2.0, help="MiB/h allowed after warm-up (default 2)")
    ap.add_argument("--rss-margin", type=float, default=4.0, help="MiB (default 4)")
    ap.add_argument("--fd-margin", type=int, default=2, help="fds/threads above baseline at the end (default 2)")
    ap.add_argument("--buffer-size", default="8MiB", help="buffer max_size (default 8MiB)")
    ap.add_argument("--tmpfs", default="24m", help="size of the buffer's tmpfs (default 24m)")
    ap.add_argument("--bin", default=os.path.join(ROOT, "build", "fieldbridge"))
    ap.add_argument("--out", default=os.path.join(ROOT, "bench", "results", "tmp", "soak"))
    a = ap.parse_args()
    if os.geteuid() != 0:
        sys.exit("soak: needs root (unshare -m and mount for the buffer's tmpfs)")
    os.makedirs(a.out, exist_ok=True)
    workdir = os.path.abspath(a.out)
    bufdir = os.path.join(workdir, "buffer")
    polls = 1.0 / a.poll
    ndev = max(1, round(a.rate / (a.tags * polls)) - 1)  # + the Modbus device
    site = "soak"
    broker = Broker(workdir)
    mbs = peers.ModbusServer(workdir, {"units": {"1": {"hr": list(range(a.tags))}}}, name="modbus")
    metrics_port = peers.free_port()
    devs = []
    for i in range(ndev):
        devs.append(f"""  - name: s{i}
    url: "sim://soak{i}"
    poll: {int(a.poll * 1000)}ms
    tags:
{''.join(f'      - {{name: t{k}, addr: "counter:step=1", type: uint32}}{chr(10)}' for k in range(a.tags))}""")
    devs.append(f"""  - name: mb
    url: "modbus-tcp://127.0.0.1:{mbs.port}?unit=1"
    poll: {int(a.poll * 1000)}ms
    timeout: 500ms
    tags:
{''.join(f'      - {{name: r{k}, addr: "hr:{k}", type: uint16}}{chr(10)}' for k in range(a.tags))}""")
    cfg = f"""gateway: {{id: soakgw, site: {site}}}
log: {{level: info, format: text}}
status_interval: 5s
metrics: {{listen: "127.0.0.1:{metrics_port}"}}
buffer: {{path: "{bufdir}", max_size: {a.buffer_size}, sync: batch}}
mqtt:
  url: "mqtt://127.0.0.1:{broker.port}"
  keepalive: 5s
  reconnect: {{min: 100ms, max: 1s}}
devices:
{''.join(devs)}"""
    sub = Sub(broker.port, f"{site}/#")
    gw = Gateway(os.path.abspath(a.bin), workdir, cfg, bufdir, a.tmpfs)
    values_per_s = (ndev + 1) * a.tags * polls
    log(f"gateway pid {gw.pid}: {ndev} sim devices + 1 Modbus device x {a.tags} tags every {a.poll}s "
        f"= {values_per_s:.0f} values/s for {a.duration:.0f}s; faults every {a.cycle:.0f}s; out {workdir}")
    if not peers.wait_until(lambda: peers.port_open(metrics_port), 15):
        sys.exit("soak: the gateway did not start:\n" + gw.proc.output()[-3000:])

    samples = []  # (t, rss_kib, fds, threads, load1, fault)
    events = []
    fault = {"now": ""}
    stop = threading.Event()
    t0 = time.monotonic()

    def sampler():
        while not stop.is_set():
            s = gw.sample()
            if s:
                load = os.getloadavg()[0]
                samples.append((round(time.monotonic() - t0, 1), *s, load, fault["now"]))
            stop.wait(a.sample)

    th = threading.Thread(target=sampler, daemon=True)
    th.start()

    def sleep_until(t):
        while not stop.is_set() and time.monotonic() - t0 < t and time.monotonic() - t0 < a.duration:
            if not gw.alive():
                return False
            time.sleep(min(0.5, max(0.0, t - (time.monotonic() - t0))))
        return gw.alive()

    ok_run = True
    cycle = 0
    while time.monotonic() - t0 < a.duration and ok_run:
        base = cycle * a.cycle
        steps = [(0.10, "broker", a.broker_down), (0.35, "device", a.device_down), (0.60, "disk", a.disk_full)]
        for frac, kind, down in steps:
            start = base + frac * a.cycle
            if start + down + 5 > a.duration:
                continue
            if not sleep_until(start):
                ok_run = gw.alive()
                break
            fault["now"] = kind
            t_start = round(time.monotonic() - t0, 1)
            if kind == "broker":
                broker.stop()
                time.sleep(down)
                broker.start()
                info = ""
            elif kind == "device":
                mbs.stop()
                time.sleep(down)
                mbs.start()
                info = ""
            else:
                info = gw.fill_disk()
                time.sleep(down)
                gw.free_disk()
            fault["now"] = ""
            events.append({"t": t_start, "fault": kind, "s": down, "info": info})
            log(f"fault {kind} for {down:.0f}s at t={t_start:.0f}s {info}")
        if not sleep_until(base + a.cycle):
            ok_run = gw.alive()
        cycle += 1

    # drain: faults over; wait until the buffer is empty and the broker connected
    # (the load goes on: at 10,000 values/s the live batches of the last poll
    # or two are always in the buffer, so "drained" is at most two polls'
    # worth of batches, not 0)
    live_bound = 2 * (ndev + 1)
    drain_seen = {"records": None}

    def drained():
        m = metrics(metrics_port)
        drain_seen["records"] = m_get(m, "fieldbridge_buffer_records")
        return drain_seen["records"] <= live_bound and m_get(m, "fieldbridge_sink_connected") >= 1

    ok_drain = bool(peers.wait_until(drained, 120, 1.0)) if gw.alive() else False
    time.sleep(3)
    m = metrics(metrics_port) if gw.alive() else {}
    queued = int(m_get(m, "fieldbridge_sink_queued_total"))
    time.sleep(5)  # everything queued before the reading has been published
    stop.set()
    th.join(5)
    seqs, msgs, values, bad, counters_seen, transitions = sub.snapshot()
    m_end = metrics(metrics_port) if gw.alive() else {}
    alive = gw.alive()
    gw_rc = gw.stop()
    sub.close()
    mbs.stop()
    broker.stop()

    # ---- loss
    # 1. exact, per sim device: every read increments all its counters by one, so
    # the values received must be 0, 1, ... up to the reads made at the reading
    # (fieldbridge_device_requests_total) minus one, without a hole
    ctr_gaps = {}
    for i in range(ndev):
        dev = f"s{i}"
        vals = counters_seen.get(dev, set())
        reads = int(sum(v for k, v in m.items()
                        if k.startswith("fieldbridge_device_requests_total{") and f'device="{dev}"' in k))
        holes = reads - sum(1 for v in vals if v < reads)
        if reads == 0 or holes:
            ctr_gaps[dev] = {"reads": reads, "received": len(vals), "missing": holes}
    # 2. every batch takes the next seq: telemetry (seq in the message) and device
    # state changes (a status message without seq).  The holes between the first
    # and the last telemetry seq must be state changes: at most the changes seen
    # (fewer is no loss: the devices' first state changes come before the first
    # telemetry seq, outside the range)
    first, last = (min(seqs), max(seqs)) if seqs else (0, -1)
    missing = [x for x in range(first, last + 1) if x not in seqs]
    seq_ok = len(missing) <= transitions
    counters = {k: m_get(m_end, k) for k in (
        "fieldbridge_sink_dropped_total", "fieldbridge_buffer_dropped_full_total",
        "fieldbridge_buffer_dropped_age_total", "fieldbridge_buffer_lost_records_total",
        "fieldbridge_buffer_corrupt_cut_bytes_total", "fieldbridge_sink_sent_total",
        "fieldbridge_sink_queued_total", "fieldbridge_device_reconnects_total",
        "fieldbridge_process_cpu_seconds_total")}
    lost_counters = sum(counters[k] for k in ("fieldbridge_sink_dropped_total", "fieldbridge_buffer_dropped_full_total",
                                              "fieldbridge_buffer_dropped_age_total",
                                              "fieldbridge_buffer_lost_records_total"))

    # ---- flatness
    warm = [s for s in samples if s[0] >= a.warmup]
    checks = {}
    if len(warm) >= 4:
        ts, rss = [s[0] for s in warm], [s[1] / 1024 for s in warm]
        half = len(warm) // 2
        slope = slope_per_hour(ts, rss)
        checks["rss_slope_mib_per_h"] = round(slope, 2)
        checks["rss_max_first_half_mib"] = round(max(rss[:half]), 1)
        checks["rss_max_second_half_mib"] = round(max(rss[half:]), 1)
        rss_ok = slope < a.rss_slope and max(rss[half:]) <= max(rss[:half]) + a.rss_margin
        base_fd, base_thr = warm[0][2], warm[0][3]
        third = max(1, len(warm) // 3)
        first3, last3 = warm[:third], warm[-third:]
        end_fd, end_thr = warm[-1][2], warm[-1][3]
        fd_ok = (max(x[2] for x in last3) <= max(x[2] for x in first3) and
                 max(x[3] for x in last3) <= max(x[3] for x in first3) and
                 end_fd <= base_fd + a.fd_margin and end_thr <= base_thr + a.fd_margin)
        checks.update({"fds_baseline": base_fd, "fds_max_first_third": max(x[2] for x in first3),
                       "fds_max_last_third": max(x[2] for x in last3), "fds_end": end_fd,
                       "threads_baseline": base_thr, "threads_max_first_third": max(x[3] for x in first3),
                       "threads_max_last_third": max(x[3] for x in last3), "threads_end": end_thr})
    else:
        rss_ok = fd_ok = False
        checks["error"] = "too few samples after warm-up"
    loads = [s[4] for s in samples]
    summary = {
        "duration_s": round(time.monotonic() - t0, 1), "values_per_s_configured": values_per_s,
        "devices": ndev + 1, "tags_per_device": a.tags, "poll_s": a.poll,
        "faults": events, "fault_counts": {k: sum(1 for e in events if e["fault"] == k)
                                           for k in ("broker", "device", "disk")},
        "messages_received": msgs, "unique_seqs": len(seqs), "values_received": values,
        "duplicates": msgs - len(seqs), "unparsable": bad,
        "queued_by_gateway": queued, "seq_holes": len(missing), "state_changes_seen": transitions,
        "sim_counter_holes": ctr_gaps,
        "gateway_counters": counters, "drained": ok_drain, "buffer_records_at_drain": drain_seen["records"],
        "drain_bound": live_bound, "gateway_alive_at_end": alive,
        "gateway_exit": gw_rc, "flatness": checks,
        "rss_mib_min_max": [round(min(s[1] for s in samples) / 1024, 1), round(max(s[1] for s in samples) / 1024, 1)]
        if samples else None,
        "load_avg_min_mean_max": [round(min(loads), 2), round(sum(loads) / len(loads), 2), round(max(loads), 2)]
        if loads else None,
        "samples": len(samples),
    }
    ok = {
        "gateway ran through": ok_run and alive,
        "buffer drained": ok_drain,
        "0 lost: every sim counter value up to the last read arrived": not ctr_gaps,
        "0 lost: every seq hole is a device state change": seq_ok,
        "no drop or loss counted by the gateway": lost_counters == 0,
        "RSS flat after warm-up": rss_ok,
        "fds and threads back to baseline": fd_ok,
        "every payload parsed": bad == 0,
    }
    summary["checks"] = ok
    with open(os.path.join(workdir, "soak.json"), "w", encoding="utf-8") as f:
        json.dump(summary, f, indent=1)
    with open(os.path.join(workdir, "samples.csv"), "w", encoding="utf-8") as f:
        f.write("t_s,rss_kib,fds,threads,load1,fault\n")
        for s in samples:
            f.write(",".join(str(x) for x in s) + "\n")
    log(json.dumps({k: v for k, v in summary.items() if k not in ("faults",)}, indent=1))
    for k, v in ok.items():
        log(f"{'PASS' if v else 'FAIL'}: {k}")
    return 0 if all(ok.values()) else 1


if __name__ == "__main__":
    sys.exit(main())
