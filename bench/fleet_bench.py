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
  shadow     every gateway has a device shadow on a sim tag (memory, rw); a
             cloud-side client sends desired updates: one to every gateway at
             once (burst), then a closed loop (one outstanding update per
             gateway) for a window: accepted updates/s fleet-wide, latency
             update -> update/accepted (p50/p99), the messages each update
             causes, and the time until every gateway reports the last
             desired value (it was written to the sim tag and read back)
  ota        one ota/notify to every gateway at once for the same signed
             package (this binary, Ed25519-signed with a test key made with
             the openssl CLI) on a loopback HTTP server; each gateway runs
             from its own install_dir/current (hard links of one copy):
             download, verify, stage, exec, health check.  Time until all
             report success on ota/complete, and the HTTP server's bytes
  stop       SIGTERM to all: offline statuses received

Run: bench/fleet.sh [N]  (N=100 by default; the documented run used 1000).
Every process is started here and stopped by its PID.
"""
import argparse
import base64
import hashlib
import http.server
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


class PackageServer:
    """The OTA package on loopback HTTP (range requests for resumed
    transfers); counts requests and body bytes sent.  It runs in a child
    process (forked before any thread starts): 1,000 threads sending 5 GB in
    the measuring process starved its MQTT client, which then missed most
    ota/complete messages."""

    def __init__(self, data):
        import multiprocessing  # pylint: disable=import-outside-toplevel
        ctx = multiprocessing.get_context("fork")
        self.data = data
        self.counters = ctx.Array("q", 3)  # requests, range requests, bytes
        port = ctx.Value("i", 0)
        ready = ctx.Event()
        self.proc = ctx.Process(target=self.serve, args=(port, ready), daemon=True)
        self.proc.start()
        if not ready.wait(10):
            raise RuntimeError("the package server did not start")
        self.port = port.value

    @property
    def requests(self):
        return self.counters[0]

    @property
    def ranges(self):
        return self.counters[1]

    @property
    def bytes(self):
        return self.counters[2]

    @property
    def lock(self):
        return self.counters.get_lock()

    def serve(self, port, ready):
        outer = self

        class Handler(http.server.BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"

            def log_message(self, *args):
                pass

            def do_GET(self):
                rng = self.headers.get("Range")
                start = 0
                if rng and rng.startswith("bytes="):
                    start = min(int(rng[6:].split("-")[0] or 0), len(outer.data))
                    self.send_response(206)
                    self.send_header("Content-Range", f"bytes {start}-{len(outer.data) - 1}/{len(outer.data)}")
                else:
                    self.send_response(200)
                body = memoryview(outer.data)[start:]
                self.send_header("Content-Length", str(len(body)))
                self.end_headers()
                with outer.lock:
                    outer.counters[0] += 1
                    outer.counters[1] += rng is not None
                try:
                    self.wfile.write(body)
                    sent = len(body)
                except OSError:
                    sent = 0
                with outer.lock:
                    outer.counters[2] += sent

        class Server(http.server.ThreadingHTTPServer):
            request_queue_size = 4096  # every gateway connects at once
            daemon_threads = True

        httpd = Server(("127.0.0.1", 0), Handler)
        port.value = httpd.server_address[1]
        ready.set()
        httpd.serve_forever()

    def stop(self):
        self.proc.terminate()
        self.proc.join(10)


def openssl(*args, cwd):
    subprocess.run(["openssl", *args], cwd=cwd, check=True, capture_output=True, timeout=30)


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
        self.cloud = None
        self.sh_sent = {}     # clientToken -> monotonic send time
        self.sh_acc = {}      # clientToken -> monotonic accepted time
        self.sh_rej = {}      # clientToken -> rejected payload
        self.sh_count = {"accepted": 0, "rejected": 0, "documents": 0, "delta": 0}
        self.sh_bytes = {"accepted": 0, "rejected": 0, "documents": 0, "delta": 0}
        self.sh_reported = {}  # gateway id -> last reported sim.sp (from documents)
        self.sh_loop_end = 0.0
        self.sh_next = {}     # gateway id -> next value of the closed loop
        self.ota_done = {}    # gateway id -> (monotonic time, complete payload)
        self.ota_progress = 0
        self.pkg = None
        self.pub = None
        self.srv = None

    # ------------------------------------------------------------- peers
    def start_broker(self):
        conf = os.path.join(self.dir, "mosquitto.conf")
        with open(conf, "w", encoding="ascii") as f:
            f.write(f"listener {self.port} 127.0.0.1\nallow_anonymous true\nmax_connections -1\n"
                    "persistence false\nmax_queued_messages 100000\n")
            if self.args.tcp_nodelay:
                f.write("set_tcp_nodelay true\n")
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
        tags = [{"name": "n", "addr": "counter"},
                {"name": "sp", "addr": "memory", "access": "rw", "range": [0, 1e9]}]
        if extra_tag:
            tags.append({"name": "w", "addr": "sine:period=60s"})
        fleet = {"state_dir": os.path.join(self.dir, gid, "state"),
                 "remote_config": {"health_check": f"{self.args.health_check}s"}}
        if self.pub:
            fleet["ota"] = {"public_key": self.pub, "install_dir": os.path.join(self.dir, gid, "install"),
                            "health_check": f"{self.args.ota_health_check}s"}
        cfg = {"gateway": {"id": gid, "site": SITE},
               "status_interval": f"{self.args.status_interval}s",
               "log": {"level": "warn"},
               "mqtt": {"url": f"mqtt://127.0.0.1:{self.port}", "keepalive": "60s",
                        "reconnect": {"min": "1s", "max": "10s"}},
               "fleet": fleet,
               "shadow": {"tags": {"sim": ["sp"]}, "report_interval": f"{self.args.report_interval}s"},
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
        exe = self.args.bin
        if self.pub:
            # install_dir/versions/1.0/fieldbridge: a hard link of one copy (the
            # pages stay shared); the gateway runs from install_dir/current
            vdir = os.path.join(d, "install", "versions", "1.0")
            os.makedirs(vdir)
            os.link(self.v1, os.path.join(vdir, "fieldbridge"))
            os.symlink("versions/1.0", os.path.join(d, "install", "current"))
            exe = os.path.join(d, "install", "current", "fieldbridge")
        self.procs[gid] = subprocess.Popen([exe, "run", "-c", path], stdout=log, stderr=log,
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
        for c in (self.sub, self.cloud):
            if c:
                c.loop_stop()
                c.disconnect()
        if self.srv:
            self.srv.stop()
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

    # ------------------------------------------------------ the cloud side
    def on_cloud(self, c, _u, m):
        now = time.monotonic()
        parts = m.topic.split("/")
        gid, kind = parts[3], parts[4]
        try:
            j = json.loads(m.payload)
        except ValueError:
            return
        if kind == "ota":
            with self.lock:
                if parts[5] == "complete":
                    if j.get("job") == "bench-ota" and gid not in self.ota_done:
                        self.ota_done[gid] = (now, j)
                else:
                    self.ota_progress += 1
            return
        sub = parts[-1]
        nxt = None
        with self.lock:
            if sub in self.sh_count:
                self.sh_count[sub] += 1
                self.sh_bytes[sub] += len(m.payload)
            tok = j.get("clientToken")
            if sub == "accepted" and tok in self.sh_sent and tok not in self.sh_acc:
                self.sh_acc[tok] = now
                if tok.startswith("L-") and now < self.sh_loop_end:
                    k = self.sh_next[gid]
                    self.sh_next[gid] = k + 1
                    nxt = (f"L-{gid}-{k}", k)
                    self.sh_sent[nxt[0]] = time.monotonic()
            elif sub == "rejected" and tok in self.sh_sent:
                self.sh_rej[tok] = j
            elif sub == "documents":
                v = (((j.get("current") or {}).get("state") or {}).get("reported") or {})
                v = (v.get("devices") or {}).get("sim", {}).get("sp")
                if v is not None:
                    self.sh_reported[gid] = v
        if nxt:
            self.shadow_update(c, gid, nxt[0], nxt[1])

    @staticmethod
    def shadow_update(c, gid, tok, value):
        c.publish(f"{SITE}/_/_/{gid}/shadow/update",
                  json.dumps({"state": {"desired": {"devices": {"sim": {"sp": value}}}}, "clientToken": tok}), qos=1)

    def start_cloud(self):
        self.cloud = mqtt.Client(client_id="fleet-bench-cloud", protocol=mqtt.MQTTv5)
        self.cloud.on_message = self.on_cloud
        self.cloud_disconnects = 0

        def lost(*_):
            self.cloud_disconnects += 1
        self.cloud.on_disconnect = lost
        if self.args.tcp_nodelay:
            self.cloud.on_socket_open = lambda c, u, sock: sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        ev = threading.Event()
        self.cloud.on_connect = lambda c, u, f, rc, p=None: (
            c.subscribe([(f"{SITE}/_/_/+/shadow/update/accepted", 1), (f"{SITE}/_/_/+/shadow/update/rejected", 1),
                         (f"{SITE}/_/_/+/shadow/update/documents", 1), (f"{SITE}/_/_/+/shadow/update/delta", 1),
                         (f"{SITE}/_/_/+/ota/complete", 1), (f"{SITE}/_/_/+/ota/progress", 1)]), ev.set())
        self.cloud.max_inflight_messages_set(1000)
        self.cloud.max_queued_messages_set(0)
        self.cloud.connect("127.0.0.1", self.port, keepalive=60, clean_start=True)
        self.cloud.loop_start()
        if not ev.wait(10):
            raise RuntimeError("cloud client did not connect")
        time.sleep(0.5)

    def shadow_phase(self):
        a = self.args
        ids = sorted(self.procs)
        pids = [self.procs[g].pid for g in ids]
        res = {}
        # burst: one update to every gateway at once
        t0 = time.monotonic()
        toks = []
        for gid in ids:
            tok = f"B-{gid}"
            with self.lock:
                self.sh_sent[tok] = time.monotonic()
            toks.append(tok)
            self.shadow_update(self.cloud, gid, tok, 1)
        t_pub = time.monotonic()
        ok = self.wait(lambda: all(t in self.sh_acc or t in self.sh_rej for t in toks), 120)
        with self.lock:
            lat = [self.sh_acc[t] - self.sh_sent[t] for t in toks if t in self.sh_acc]
            t_all = max((self.sh_acc[t] for t in toks if t in self.sh_acc), default=t0)
            rej = [self.sh_rej[t] for t in toks if t in self.sh_rej]
        res["burst"] = {"sent": len(toks), "accepted": len(lat), "rejected": len(rej), "complete": ok,
                        "rejected_example": rej[0] if rej else None,
                        "publish_s": round(t_pub - t0, 3), "all_accepted_s": round(t_all - t0, 3),
                        "accepted_per_s": round(len(lat) / max(t_all - t0, 1e-9), 1),
                        "latency_p50_ms": round(pct(lat, 50) * 1000, 1) if lat else None,
                        "latency_p99_ms": round(pct(lat, 99) * 1000, 1) if lat else None,
                        "latency_max_ms": round(max(lat) * 1000, 1) if lat else None}
        time.sleep(a.report_interval + 1.0)
        # closed loop: one update outstanding per gateway for the window
        with self.lock:
            c0 = dict(self.sh_count)
            y0 = dict(self.sh_bytes)
            for gid in ids:
                self.sh_next[gid] = 3  # values 2.. go to the gateway; the first send below is 2
        g0 = sum(proc_cpu(p) for p in pids)
        b0 = proc_cpu(self.broker.pid)
        m0 = proc_cpu(os.getpid())
        t0 = time.monotonic()
        with self.lock:
            self.sh_loop_end = t0 + a.shadow_window
        for gid in ids:
            tok = f"L-{gid}-2"
            with self.lock:
                self.sh_sent[tok] = time.monotonic()
            self.shadow_update(self.cloud, gid, tok, 2)
        time.sleep(a.shadow_window)
        # the updates still in flight finish (none is sent after the window)
        self.wait(lambda: all(t in self.sh_acc or t in self.sh_rej for t in self.sh_sent), 60)
        t1 = time.monotonic()
        g1 = sum(proc_cpu(p) for p in pids)
        b1 = proc_cpu(self.broker.pid)
        m1 = proc_cpu(os.getpid())
        with self.lock:
            loop = [t for t in self.sh_sent if t.startswith("L-")]
            lat = [self.sh_acc[t] - self.sh_sent[t] for t in loop if t in self.sh_acc]
            in_win = sum(1 for t in loop if t in self.sh_acc and self.sh_acc[t] <= t0 + a.shadow_window)
            rej = sum(1 for t in loop if t in self.sh_rej)
            c1 = dict(self.sh_count)
            y1 = dict(self.sh_bytes)
            last = {gid: self.sh_next[gid] - 1 for gid in ids}
        acc = c1["accepted"] - c0["accepted"]
        res["closed_loop"] = {
            "window_s": a.shadow_window, "sent": len(loop), "accepted": len(lat), "rejected": rej,
            "accepted_per_s": round(in_win / a.shadow_window, 1),
            "accepted_per_s_per_gateway": round(in_win / a.shadow_window / len(ids), 2),
            "latency_p50_ms": round(pct(lat, 50) * 1000, 1) if lat else None,
            "latency_p99_ms": round(pct(lat, 99) * 1000, 1) if lat else None,
            "latency_max_ms": round(max(lat) * 1000, 1) if lat else None,
            "messages_per_accepted_update": {k: round((c1[k] - c0[k]) / max(acc, 1), 2)
                                             for k in ("documents", "delta")},
            "payload_bytes_mean": {k: round((y1[k] - y0[k]) / max(c1[k] - c0[k], 1))
                                   for k in ("accepted", "documents", "delta")},
            "gateways_cpu_pct_of_one_core": round((g1 - g0) / (t1 - t0) * 100, 1),
            "gateway_cpu_ms_per_update": round((g1 - g0) * 1000 / max(acc, 1), 2),
            "broker_cpu_pct_of_one_core": round((b1 - b0) / (t1 - t0) * 100, 1),
            "bench_client_cpu_pct_of_one_core": round((m1 - m0) / (t1 - t0) * 100, 1)}
        # every gateway wrote the last desired value to its sim tag and reports it back
        t_conv = time.monotonic()
        ok = self.wait(lambda: all(self.sh_reported.get(g) == last[g] for g in ids), 60)
        with self.lock:
            res["reported_last_desired"] = sum(1 for g in ids if self.sh_reported.get(g) == last[g])
        res["reported_last_desired_s"] = round(time.monotonic() - t_conv, 2) if ok else None
        return res

    def ota_phase(self):
        a = self.args
        ids = sorted(self.procs)
        pids = {g: self.procs[g].pid for g in ids}
        data = self.pkg
        note = {"job": "bench-ota", "version": "2.0", "url": f"http://127.0.0.1:{self.srv.port}/fieldbridge-2.0",
                "size": len(data), "sha256": hashlib.sha256(data).hexdigest(), "signature": self.sig}
        wave = a.ota_wave or len(ids)
        t0 = time.monotonic()
        deadline = t0 + a.ota_timeout
        ok = True
        t_pub = None
        for w in range(0, len(ids), wave):
            # a wave: notify these gateways, wait until each has reported
            part = ids[w:w + wave]
            for gid in part:
                self.cloud.publish(f"{SITE}/_/_/{gid}/ota/notify", json.dumps(note), qos=1)
            t_pub = t_pub or time.monotonic()
            ok = ok and self.wait(lambda part=part: all(g in self.ota_done for g in part),
                                  max(1.0, deadline - time.monotonic()))
        # the failed ones' roll-back restart: every gateway runs again
        time.sleep(2.0)
        with self.lock:
            done = dict(self.ota_done)
            progress = self.ota_progress
        good = {g: t for g, (t, j) in done.items() if j.get("ok") and j.get("health_check") == "passed"}
        bad = [j for _, j in done.values() if not (j.get("ok") and j.get("health_check") == "passed")]
        lat = [t - t0 for t in good.values()]
        same_pid = sum(1 for g in ids if self.procs[g].poll() is None and self.procs[g].pid == pids[g])
        on_v2 = 0
        for g in ids:
            try:
                on_v2 += os.readlink(f"/proc/{pids[g]}/exe").endswith("/versions/2.0/fieldbridge")
            except OSError:
                pass
        with self.srv.lock:
            http = {"requests": self.srv.requests, "range_requests": self.srv.ranges, "bytes": self.srv.bytes}
        # what each gateway itself says (independent of the MQTT reports)
        side = {"current_2.0": 0, "results": {}}
        for g in ids:
            d = os.path.join(self.dir, g)
            try:
                side["current_2.0"] += os.readlink(os.path.join(d, "install", "current")) == "versions/2.0"
                with open(os.path.join(d, "state", "ota", "result.json"), encoding="utf-8") as f:
                    r = json.load(f)
                key = "kept" if r.get("ok") else r.get("error", "?")
            except (OSError, ValueError):
                key = "no result.json"
            side["results"][key] = side["results"].get(key, 0) + 1
        mems = [proc_mem(p.pid) for p in self.procs.values()]
        return {"package_bytes": len(data), "sent": len(ids), "wave": wave, "complete": ok, "succeeded": len(good),
                "failed": len(bad), "failed_examples": bad[:3],
                "failed_reasons": {r: sum(1 for j in bad if j.get("error") == r) for r in {j.get("error") for j in bad}},
                "alive_after": sum(1 for g in ids if self.procs[g].poll() is None),
                "gateway_side": side,
                "no_report_from": sorted(g for g in ids if g not in done)[:20],
                "cloud_client_disconnects": self.cloud_disconnects, "publish_s": round(t_pub - t0, 3),
                "all_succeeded_s": round(max(lat), 2) if lat and len(good) == len(ids) else None,
                "success_p50_s": round(pct(lat, 50), 2) if lat else None,
                "success_p99_s": round(pct(lat, 99), 2) if lat else None,
                "health_check_s": a.ota_health_check, "progress_messages": progress,
                "http": http, "http_bytes_per_gateway": round(http["bytes"] / len(ids)),
                "same_pid_after": same_pid, "running_version_2": on_v2,
                "rss_per_gateway_mb_after": round(statistics.mean(m[0] for m in mems) / 1048576, 2),
                "pss_per_gateway_mb_after": round(statistics.mean(m[1] for m in mems) / 1048576, 2)}

    def prepare_ota(self):
        """The signing key, version 1.0 (a copy of the binary every gateway's
        install_dir links to), the signed 2.0 package and its server."""
        openssl("genpkey", "-algorithm", "ed25519", "-out", "signing.key", cwd=self.dir)
        openssl("pkey", "-in", "signing.key", "-pubout", "-out", "signing.pub", cwd=self.dir)
        self.pub = os.path.join(self.dir, "signing.pub")
        self.v1 = os.path.join(self.dir, "fieldbridge-1.0")
        shutil.copy2(self.args.bin, self.v1)
        with open(self.v1, "rb") as f:
            self.pkg = f.read()
        openssl("pkeyutl", "-sign", "-inkey", "signing.key", "-rawin", "-in", self.v1, "-out", "pkg.sig",
                cwd=self.dir)
        with open(os.path.join(self.dir, "pkg.sig"), "rb") as f:
            self.sig = base64.b64encode(f.read()).decode()
        self.srv = PackageServer(self.pkg)

    def run(self):
        a = self.args
        res = {"n": a.n, "poll_s": a.poll, "status_interval_s": a.status_interval, "health_check_s": a.health_check,
               "tcp_nodelay": a.tcp_nodelay, "load_avg_before": os.getloadavg()[0]}
        raise_nofile(a.n * 4 + 256)
        if not a.no_ota:
            self.prepare_ota()
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
        # device shadow
        self.start_cloud()
        if not a.no_shadow:
            res["shadow"] = self.shadow_phase()
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
        # OTA fan-out
        if not a.no_ota:
            res["ota"] = self.ota_phase()
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
    ap.add_argument("--report-interval", type=float, default=1.0, help="shadow.report_interval (s)")
    ap.add_argument("--shadow-window", type=float, default=10.0, help="closed-loop shadow updates (s)")
    ap.add_argument("--ota-health-check", type=int, default=5)
    ap.add_argument("--ota-timeout", type=float, default=600.0)
    ap.add_argument("--ota-wave", type=int, default=0, help="notify this many gateways at a time (0: all at once)")
    ap.add_argument("--no-shadow", action="store_true")
    ap.add_argument("--tcp-nodelay", action="store_true",
                    help="Mosquitto set_tcp_nodelay true and TCP_NODELAY on the cloud client (Nagle off)")
    ap.add_argument("--no-ota", action="store_true")
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
    if "shadow" in res:
        sh = res["shadow"]
        bad = bad or not sh["burst"]["complete"] or sh["burst"]["rejected"] or sh["closed_loop"]["rejected"] \
            or sh["reported_last_desired_s"] is None
    if "ota" in res:
        bad = bad or res["ota"]["failed"] or res["ota"]["all_succeeded_s"] is None
    return 1 if bad else 0


if __name__ == "__main__":
    sys.exit(main())
