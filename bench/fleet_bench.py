#!/usr/bin/python3
"""fleet_bench.py — a simulated fleet: N fieldbridge gateways (one process
each, a tiny config with one simulated device) against one Mosquitto, all on
127.0.0.1 (issue 20, "Scale").  Measured, each phase bounded in time:

  start      spawning the fleet (in batches) until every gateway's retained
             status says online; memory per gateway (RSS and PSS), threads
  steady     status messages and CPU over a window (gateways, broker)
  retained   what the broker keeps for the fleet: the retained statuses' bytes
  reload     {"cmd":"reload"} to every gateway at once: answer latency
             (p50/p95/max) and the time until all answered
  config     a new configuration version (inline, with a tag more) to every
             gateway at once: time until all answered "applied", and until all
             statuses report it kept after its health check
  stop       SIGTERM to all: offline statuses received

Run: bench/fleet.sh [N]  (N=100 by default; the documented run used 1000).
Every process is started here and stopped by its PID.
"""
import argparse
import json
import os
import resource
import shutil
import signal
import socket
import statistics
import subprocess
import sys
import tempfile
import threading
import time

import paho.mqtt.client as mqtt

SITE = "fleet"


def free_port():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def raise_nofile(n):
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    want = min(max(soft, n), hard)
    resource.setrlimit(resource.RLIMIT_NOFILE, (want, hard))


def proc_cpu(pid):
    """User + system CPU seconds of a process (0 when it is gone)."""
    try:
        with open(f"/proc/{pid}/stat", encoding="ascii") as f:
            parts = f.read().rsplit(")", 1)[1].split()
        return (int(parts[11]) + int(parts[12])) / os.sysconf("SC_CLK_TCK")
    except OSError:
        return 0.0


def proc_mem(pid):
    """(RSS, PSS) bytes; PSS shares the pages of the binary and libraries fairly."""
    rss = pss = 0
    try:
        with open(f"/proc/{pid}/status", encoding="ascii") as f:
            for line in f:
                if line.startswith("VmRSS:"):
                    rss = int(line.split()[1]) * 1024
        with open(f"/proc/{pid}/smaps_rollup", encoding="ascii") as f:
            for line in f:
                if line.startswith("Pss:"):
                    pss = int(line.split()[1]) * 1024
    except OSError:
        pass
    return rss, pss


def threads(pid):
    try:
        return len(os.listdir(f"/proc/{pid}/task"))
    except OSError:
        return 0


def pct(v, p):
    v = sorted(v)
    return v[min(len(v) - 1, int(round(p / 100.0 * (len(v) - 1))))] if v else None


class Fleet:
    def __init__(self, args):
        self.args = args
        self.dir = tempfile.mkdtemp(prefix="fb-fleet-")
        self.port = free_port()
        self.lock = threading.Lock()
        self.status = {}      # gateway id -> last status JSON
        self.status_n = 0
        self.status_t = {}    # gateway id -> monotonic time of its first online status
        self.answers = {}     # command id -> monotonic time
        self.retained_bytes = {}
        self.procs = {}
        self.broker = None
        self.sub = None

    # ------------------------------------------------------------- peers
    def start_broker(self):
        conf = os.path.join(self.dir, "mosquitto.conf")
        with open(conf, "w", encoding="ascii") as f:
            f.write(f"listener {self.port} 127.0.0.1\nallow_anonymous true\nmax_connections -1\n"
                    "persistence false\nmax_queued_messages 100000\n")
        n = self.args.n * 2 + 256

        def limits():
            raise_nofile(n)
        self.broker = subprocess.Popen(["mosquitto", "-c", conf], stdout=subprocess.DEVNULL,
                                       stderr=open(os.path.join(self.dir, "mosquitto.log"), "w"),
                                       preexec_fn=limits)
        deadline = time.monotonic() + 10
        while time.monotonic() < deadline:
            try:
                socket.create_connection(("127.0.0.1", self.port), timeout=0.2).close()
                return
            except OSError:
                time.sleep(0.05)
        raise RuntimeError("mosquitto did not start")

    def on_message(self, _c, _u, m):
        now = time.monotonic()
        parts = m.topic.split("/")
        gid = parts[3]
        if m.topic.endswith("/status"):
            try:
                j = json.loads(m.payload)
            except ValueError:
                return
            with self.lock:
                self.status[gid] = j
                self.status_n += 1
                self.retained_bytes[gid] = len(m.payload)
                if j.get("online") and gid not in self.status_t:
                    self.status_t[gid] = now
        elif m.topic.endswith("/command/response"):
            try:
                j = json.loads(m.payload)
            except ValueError:
                return
            with self.lock:
                self.answers[j.get("id")] = (now, j)

    def start_subscriber(self):
        self.sub = mqtt.Client(client_id="fleet-bench-sub", protocol=mqtt.MQTTv5)
        self.sub.on_message = self.on_message
        ev = threading.Event()
        self.sub.on_connect = lambda c, u, f, rc, p=None: (
            c.subscribe([(f"{SITE}/_/_/+/status", 1), (f"{SITE}/_/_/+/command/response", 1)]), ev.set())
        self.sub.connect("127.0.0.1", self.port, keepalive=60, clean_start=True)
        self.sub.loop_start()
        if not ev.wait(10):
            raise RuntimeError("subscriber did not connect")
        time.sleep(0.3)

    # ------------------------------------------------------------ gateways
    def config(self, i, version=None, extra_tag=False):
        gid = f"gw-{i:05d}"
        tags = [{"name": "n", "addr": "counter"}]
        if extra_tag:
            tags.append({"name": "w", "addr": "sine:period=60s"})
        cfg = {"gateway": {"id": gid, "site": SITE},
               "status_interval": f"{self.args.status_interval}s",
               "log": {"level": "warn"},
               "mqtt": {"url": f"mqtt://127.0.0.1:{self.port}", "keepalive": "60s",
                        "reconnect": {"min": "1s", "max": "10s"}},
               "fleet": {"state_dir": os.path.join(self.dir, gid, "state"),
                         "remote_config": {"health_check": f"{self.args.health_check}s"}},
               "devices": [{"name": "sim", "url": "sim://s", "poll": f"{self.args.poll}s", "tags": tags}]}
        if version:
            cfg["version"] = version
        return gid, cfg

    def spawn(self, i):
        gid, cfg = self.config(i)
        d = os.path.join(self.dir, gid)
        os.makedirs(d, exist_ok=True)
        path = os.path.join(d, "gw.yaml")
        with open(path, "w", encoding="utf-8") as f:
            json.dump(cfg, f)  # JSON is YAML
        log = open(os.path.join(d, "gw.log"), "w")
        self.procs[gid] = subprocess.Popen([self.args.bin, "run", "-c", path], stdout=log, stderr=log,
                                           stdin=subprocess.DEVNULL)

    def wait(self, pred, timeout):
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            with self.lock:
                if pred():
                    return True
            time.sleep(0.05)
        return False

    def stop_all(self):
        for p in self.procs.values():
            if p.poll() is None:
                p.send_signal(signal.SIGTERM)
        deadline = time.monotonic() + 60
        for p in self.procs.values():
            try:
                p.wait(max(0.1, deadline - time.monotonic()))
            except subprocess.TimeoutExpired:
                p.kill()
                p.wait()

    def close(self):
        self.stop_all()
        if self.sub:
            self.sub.loop_stop()
            self.sub.disconnect()
        if self.broker and self.broker.poll() is None:
            self.broker.send_signal(signal.SIGTERM)
            try:
                self.broker.wait(10)
            except subprocess.TimeoutExpired:
                self.broker.kill()
        if not self.args.keep:
            shutil.rmtree(self.dir, ignore_errors=True)

    # -------------------------------------------------------------- phases
    def fan_out(self, make, prefix, timeout):
        """Publish one command to every gateway at once; latency of each answer."""
        ids = sorted(self.procs)
        sent = {}
        t0 = time.monotonic()
        for k, gid in enumerate(ids):
            cid = f"{prefix}-{k}"
            sent[cid] = time.monotonic()
            self.sub.publish(f"{SITE}/_/_/{gid}/command", json.dumps(make(k, gid, cid)), qos=1)
        t_sent = time.monotonic()
        ok = self.wait(lambda: all(c in self.answers for c in sent), timeout)
        with self.lock:
            lat = [self.answers[c][0] - sent[c] for c in sent if c in self.answers]
            good = sum(1 for c in sent if c in self.answers and self.answers[c][1].get("ok"))
            t_all = max((self.answers[c][0] for c in sent if c in self.answers), default=t0)
        return {"sent": len(sent), "answered": len(lat), "ok": good, "complete": ok,
                "publish_s": round(t_sent - t0, 3), "all_answered_s": round(t_all - t0, 3),
                "latency_p50_ms": round(pct(lat, 50) * 1000, 1) if lat else None,
                "latency_p95_ms": round(pct(lat, 95) * 1000, 1) if lat else None,
                "latency_max_ms": round(max(lat) * 1000, 1) if lat else None}

    def run(self):
        a = self.args
        res = {"n": a.n, "poll_s": a.poll, "status_interval_s": a.status_interval, "health_check_s": a.health_check}
        raise_nofile(a.n * 4 + 256)
        self.start_broker()
        self.start_subscriber()
        # start
        t0 = time.monotonic()
        for i in range(a.n):
            self.spawn(i)
            if (i + 1) % a.batch == 0:
                target = i + 1
                if not self.wait(lambda: len(self.status_t) >= target, 120):
                    raise RuntimeError(f"only {len(self.status_t)} of {target} gateways came online")
        if not self.wait(lambda: len(self.status_t) >= a.n, 120):
            raise RuntimeError(f"only {len(self.status_t)} of {a.n} gateways came online")
        res["start_all_online_s"] = round(time.monotonic() - t0, 2)
        time.sleep(2.0)
        mems = [proc_mem(p.pid) for p in self.procs.values()]
        res["rss_per_gateway_mb"] = round(statistics.mean(m[0] for m in mems) / 1048576, 2)
        res["pss_per_gateway_mb"] = round(statistics.mean(m[1] for m in mems) / 1048576, 2)
        res["threads_per_gateway"] = statistics.median(threads(p.pid) for p in self.procs.values())
        res["broker_rss_mb"] = round(proc_mem(self.broker.pid)[0] / 1048576, 1)
        # steady
        pids = [p.pid for p in self.procs.values()]
        c0 = sum(proc_cpu(p) for p in pids)
        b0 = proc_cpu(self.broker.pid)
        with self.lock:
            s0 = self.status_n
        time.sleep(a.window)
        c1 = sum(proc_cpu(p) for p in pids)
        b1 = proc_cpu(self.broker.pid)
        with self.lock:
            s1 = self.status_n
            res["retained_status_bytes_total"] = sum(self.retained_bytes.values())
            res["retained_status_bytes_mean"] = round(statistics.mean(self.retained_bytes.values()))
        res["steady_window_s"] = a.window
        res["status_msgs_per_s"] = round((s1 - s0) / a.window, 1)
        res["gateways_cpu_pct_of_one_core"] = round((c1 - c0) / a.window * 100, 1)
        res["broker_cpu_pct_of_one_core"] = round((b1 - b0) / a.window * 100, 1)
        # reload fan-out
        res["reload"] = self.fan_out(lambda k, gid, cid: {"id": cid, "cmd": "reload"}, "r", 120)
        # remote configuration fan-out: every gateway gets its own next version
        texts = {}

        def cfg_cmd(k, gid, cid):
            i = int(gid.split("-")[1])
            _, cfg = self.config(i, version="v2", extra_tag=True)
            texts[gid] = json.dumps(cfg)
            return {"id": cid, "cmd": "config", "version": "v2", "config": texts[gid]}
        t_cfg = time.monotonic()
        res["config"] = self.fan_out(cfg_cmd, "c", 180)

        def kept():
            n = 0
            for j in self.status.values():
                last = (j.get("config") or {}).get("last") or {}
                n += last.get("version") == "v2" and last.get("health_check") == "passed"
            return n >= a.n
        ok = self.wait(kept, 180)
        res["config"]["all_kept_s"] = round(time.monotonic() - t_cfg, 2) if ok else None
        with self.lock:
            res["config"]["kept"] = sum(1 for j in self.status.values()
                                        if ((j.get("config") or {}).get("last") or {}).get("health_check") == "passed")
        # stop
        with self.lock:
            offline_before = sum(1 for j in self.status.values() if not j.get("online"))
        t_stop = time.monotonic()
        self.stop_all()
        self.wait(lambda: sum(1 for j in self.status.values() if not j.get("online")) >= a.n, 30)
        with self.lock:
            res["stop_offline_statuses"] = sum(1 for j in self.status.values() if not j.get("online")) - offline_before
        res["stop_all_s"] = round(time.monotonic() - t_stop, 2)
        rcs = [p.returncode for p in self.procs.values()]
        res["exit_codes_nonzero"] = sum(1 for r in rcs if r != 0)
        return res


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--bin", required=True)
    ap.add_argument("--n", type=int, default=100)
    ap.add_argument("--batch", type=int, default=50)
    ap.add_argument("--poll", type=float, default=5.0)
    ap.add_argument("--status-interval", type=int, default=60)
    ap.add_argument("--health-check", type=int, default=2)
    ap.add_argument("--window", type=float, default=10.0)
    ap.add_argument("--out")
    ap.add_argument("--keep", action="store_true", help="keep the gateways' directories and logs")
    a = ap.parse_args()
    fl = Fleet(a)
    try:
        res = fl.run()
    finally:
        fl.close()
    text = json.dumps(res, indent=2)
    print(text)
    if a.out:
        with open(a.out, "w", encoding="ascii") as f:
            f.write(text + "\n")
    bad = res["exit_codes_nonzero"] or not res["reload"]["complete"] or not res["config"]["complete"]
    return 1 if bad else 0


if __name__ == "__main__":
    sys.exit(main())
